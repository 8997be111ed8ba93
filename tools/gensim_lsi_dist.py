"""gensim's own distributed LSI (Pyro4, all on loopback) on lsi_bench.py's prepared data.

    $PEER_PYTHON tools/gensim_lsi_dist.py --data FOLDER [--workers 2] [--topics 200]
        [--chunksize 20000] [--maxsize 10] [--blas-threads N] [--serial] [--docs N]
        [--timeout 1800] [--logs DIR]

FOLDER is what tools/lsi_bench.py's prepare() writes (tfidf.npz, dictionary.json,
anchor.npz, positive.npz, negative.npz), e.g.

    .venv/bin/python -c "import sys; sys.path.insert(0, 'tools'); import lsi_bench; \\
        lsi_bench.prepare('$DOCS', '$TRIPLETS', 'OUT_DIR')"

It needs gensim, Pyro4 and psutil, not engine (run it with the peers' virtualenv).

Distributed mode: starts a Pyro4 name server on a free loopback port (no broadcast server),
N `gensim.models.lsi_worker` processes and one `gensim.models.lsi_dispatcher`, each in its
own process group with the pickle serializer, waits until they are all registered, then
trains `LsiModel(corpus, id2word=..., num_topics=..., chunksize=..., distributed=True)` on
the same TF-IDF bag-of-words as lsi_bench.py's "gensim" row and scores the triplets the
same way (fold in, cosine, share where the anchor is nearer its positive). Every process
it started is killed at the end, also on error, Ctrl-C or SIGTERM (and, through
PR_SET_PDEATHSIG, if this process itself is killed).

--serial trains gensim's serial LsiModel with the same chunksize instead (no Pyro), with
the same measurements, for a like-for-like row.

The dispatcher hands out one job per `chunksize` documents: with chunksize >= the number
of documents there is one job and only one worker does anything. gensim issue #2317: if a
worker dies the dispatcher waits for it forever; here a watchdog aborts the run when any
Pyro process exits during training or after --timeout seconds.

Prints one JSON line: training seconds (the LsiModel constructor) apart from the start-up of
the Pyro processes; the CPU seconds of each process during training; the client's peak RSS
(ru_maxrss) and the growth of PSS during training of the client plus all the Pyro
processes ("train_mb", as lsi_bench.py's train MB: the process and its children); per
process the sampled peak RSS and PSS (psutil, every --interval s) and the kernel's peak
RSS (VmHWM); the jobs each worker did (from the Pyro processes' logs); the triplet
accuracy; the first singular values; the 1-minute load average before and after training
(the machine may be shared: a high load means a noisy time).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

PYRO_ENV = {"PYRO_SERIALIZERS_ACCEPTED": "pickle", "PYRO_SERIALIZER": "pickle"}


# ---- data (lsi_bench.py's prepare() format, read without engine) ---------------------------

def load_id2word(folder: str) -> dict:
    with open(os.path.join(folder, "dictionary.json"), encoding="utf-8") as fh:
        doc = json.load(fh)
    return dict(zip(doc["ids"], doc["tokens"]))


def load_bows(folder: str, name: str, limit: int | None = None) -> list:
    """As lsi_bench._bows (engine's csr_to_bows): CSR rows -> [[(term id, weight)]]."""
    import scipy.sparse

    m = scipy.sparse.load_npz(os.path.join(folder, f"{name}.npz")).tocsr()
    if limit is not None:
        m = m[:limit]
    ids, vals, bounds = m.indices.tolist(), m.data.tolist(), m.indptr.tolist()
    return [list(zip(ids[a:b], vals[a:b])) for a, b in zip(bounds, bounds[1:])]


def accuracy(vectors: dict) -> float:
    """As lsi_bench._accuracy."""
    import numpy as np

    def unit(v):
        n = np.linalg.norm(v, axis=1, keepdims=True)
        n[n == 0] = 1
        return v / n
    a, p, n = (unit(vectors[k]) for k in ("anchor", "positive", "negative"))
    return float(np.mean(np.einsum("ij,ij->i", a, p) > np.einsum("ij,ij->i", a, n)))


# ---- memory ------------------------------------------------------------------------------

def _pss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
            for line in fh:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _hwm_mb(pid: int) -> float | None:
    """The kernel's peak RSS of a live process (VmHWM)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class Sampler:
    """Samples RSS (psutil) and PSS of named processes every `interval` s; keeps peaks, and
    the peak of their PSS total from `mark()` on."""

    def __init__(self, interval: float):
        import psutil

        self.interval = interval
        self.procs = {"client": psutil.Process()}
        self.peak_rss = {}
        self.peak_pss = {}
        self.total_pss_peak = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="sampler")

    def add(self, name: str, pid: int) -> None:
        import psutil

        with self._lock:
            self.procs[name] = psutil.Process(pid)

    def sample(self) -> float:
        import psutil

        total = 0.0
        with self._lock:
            items = list(self.procs.items())
        for name, proc in items:
            try:
                rss = proc.memory_info().rss / 2**20
            except psutil.Error:
                continue
            pss = _pss_mb(proc.pid)
            pss = rss if pss is None else pss
            self.peak_rss[name] = max(self.peak_rss.get(name, 0.0), rss)
            self.peak_pss[name] = max(self.peak_pss.get(name, 0.0), pss)
            total += pss
        self.total_pss_peak = max(self.total_pss_peak, total)
        return total

    def mark(self) -> float:
        """Start a new phase: returns the current PSS total and resets its peak; CPU time
        is counted from here."""
        now = self.sample()
        self.total_pss_peak = now
        self.cpu0 = self._cpu()
        return now

    def _cpu(self) -> dict:
        import psutil

        out = {}
        with self._lock:
            items = list(self.procs.items())
        for name, proc in items:
            try:
                t = proc.cpu_times()
                out[name] = t.user + t.system
            except psutil.Error:
                pass
        return out

    def cpu_since_mark(self) -> dict:
        """CPU seconds (user + system) of each process since mark()."""
        now, base = self._cpu(), getattr(self, "cpu0", {})
        return {k: round(v - base.get(k, 0.0), 2) for k, v in now.items()}

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self):
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()

    def report(self) -> dict:
        out = {}
        with self._lock:
            items = list(self.procs.items())
        for name, proc in items:
            hwm = _hwm_mb(proc.pid)
            out[name] = {"peak_rss_mb": round(self.peak_rss.get(name, 0.0), 1),
                         "peak_pss_mb": round(self.peak_pss.get(name, 0.0), 1),
                         "vmhwm_mb": None if hwm is None else round(hwm, 1)}
        return out


# ---- the Pyro processes ------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the parent dies (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Cluster:
    """Name server + workers + dispatcher, each its own process group; stop() kills them."""

    def __init__(self, workers: int, maxsize: int, port: int, logs: str, env: dict):
        self.n, self.maxsize, self.port, self.logs, self.env = workers, maxsize, port, logs, env
        self.procs: dict[str, subprocess.Popen] = {}
        self._files = []

    def _start(self, name: str, args: list) -> subprocess.Popen:
        log = open(os.path.join(self.logs, f"{name}.log"), "wb")
        self._files.append(log)
        p = subprocess.Popen([sys.executable] + args, stdin=subprocess.DEVNULL, stdout=log,
                             stderr=subprocess.STDOUT, env=self.env, start_new_session=True,
                             preexec_fn=_die_with_parent)
        self.procs[name] = p
        return p

    def _wait(self, what: str, ready, timeout: float = 60.0) -> None:
        t = time.monotonic() + timeout
        while time.monotonic() < t:
            self.check_alive()
            try:
                if ready():
                    return
            except Exception:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"timed out waiting for {what}")

    def dead(self) -> list:
        return [(n, p.returncode) for n, p in self.procs.items() if p.poll() is not None]

    def check_alive(self) -> None:
        dead = self.dead()
        if dead:
            raise RuntimeError("Pyro process(es) exited: " + ", ".join(
                f"{n} (rc {rc}; see {os.path.join(self.logs, n + '.log')})" for n, rc in dead))

    def start(self, sampler: Sampler | None = None) -> None:
        import Pyro4

        def ns_list(prefix):
            with Pyro4.locateNS(host="127.0.0.1", port=self.port, broadcast=False) as ns:
                return ns.list(prefix=prefix)

        self._start("nameserver", ["-m", "Pyro4.naming", "-n", "127.0.0.1", "-p",
                                   str(self.port), "-x"])
        self._wait("the name server", lambda: ns_list("") is not None)
        for i in range(self.n):
            self._start(f"worker{i}", ["-m", "gensim.models.lsi_worker"])
        self._wait(f"{self.n} workers to register",
                   lambda: len(ns_list("gensim.lsi_worker")) >= self.n)
        self._start("dispatcher", ["-m", "gensim.models.lsi_dispatcher", str(self.maxsize)])
        self._wait("the dispatcher to register",
                   lambda: "gensim.lsi_dispatcher" in ns_list("gensim.lsi_dispatcher"))
        if sampler is not None:
            for name, p in self.procs.items():
                sampler.add(name, p.pid)

    def stop(self) -> list:
        """Kill every process group started (TERM, then KILL); returns the pids still alive."""
        for p in self.procs.values():
            if p.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGTERM)
        t = time.monotonic() + 5
        for p in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(max(0.1, t - time.monotonic()))
        for p in self.procs.values():
            if p.poll() is not None:               # reaped: its pid may not be ours now
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)   # the group: anything they forked too
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(5)
        for f in self._files:
            f.close()
        return [p.pid for p in self.procs.values() if p.poll() is None]

    def jobs_per_worker(self) -> dict:
        """Per worker process: the id the dispatcher gave it and the jobs it did (its log's
        'initializing worker #i' and 'received job' lines); "dispatcher" is the total of
        the dispatcher's 'finished job' lines."""
        out: dict = {}
        for name in self.procs:
            if not name.startswith("worker"):
                continue
            with contextlib.suppress(OSError):
                with open(os.path.join(self.logs, f"{name}.log"), errors="replace") as fh:
                    text = fh.read()
                ids = re.findall(r"initializing worker #(\d+)", text)
                out[name] = {"id": int(ids[-1]) if ids else None,
                             "jobs": len(re.findall(r"received job #\d+", text))}
        with contextlib.suppress(OSError):
            with open(os.path.join(self.logs, "dispatcher.log"), errors="replace") as fh:
                out["dispatcher_total"] = len(re.findall(r"finished job #\d+", fh.read()))
        return out


class Watchdog:
    """During training: if a Pyro process exits (gensim #2317: the dispatcher would then
    wait forever) or time runs out, kill the cluster so the client's blocked call fails."""

    def __init__(self, cluster: Cluster, timeout: float):
        self.cluster, self.timeout, self.reason = cluster, timeout, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="watchdog")

    def _run(self) -> None:
        end = time.monotonic() + self.timeout
        while not self._stop.wait(0.5):
            dead = self.cluster.dead()
            if dead:
                self.reason = f"Pyro process(es) exited during training: {dead}"
            elif time.monotonic() > end:
                self.reason = f"training ran past --timeout {self.timeout:.0f} s"
            if self.reason:
                print(f"watchdog: {self.reason}; killing the cluster", file=sys.stderr,
                      flush=True)
                self.cluster.stop()
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# ---- the run -----------------------------------------------------------------------------

def _terminate(signum, frame):
    raise SystemExit(128 + signum)


def run(args) -> dict:
    from gensim.matutils import corpus2dense
    from gensim.models import LsiModel

    id2word = load_id2word(args.data)
    corpus = load_bows(args.data, "tfidf", args.docs)
    ndocs = len(corpus)
    out = {"mode": "serial" if args.serial else "distributed", "documents": ndocs,
           "terms": 1 + max(id2word), "topics": args.topics, "chunksize": args.chunksize,
           "jobs": math.ceil(ndocs / args.chunksize)}
    if not args.serial:
        out.update(workers=args.workers, maxsize=args.maxsize)
    out["blas_threads"] = args.blas_threads or "default"
    logs = args.logs or tempfile.mkdtemp(prefix="gensim-lsi-dist-")
    os.makedirs(logs, exist_ok=True)
    env = dict(os.environ, **PYRO_ENV, PYRO_NS_HOST="127.0.0.1", PYRO_HOST="127.0.0.1")
    cluster = None
    try:
        with Sampler(args.interval) as sampler:
            if not args.serial:
                port = free_port()
                env["PYRO_NS_PORT"] = str(port)
                os.environ.update(PYRO_ENV, PYRO_NS_HOST="127.0.0.1", PYRO_HOST="127.0.0.1",
                                  PYRO_NS_PORT=str(port))
                import Pyro4
                Pyro4.config.reset()              # re-read the PYRO_ environment
                out["ns_port"] = port
                cluster = Cluster(args.workers, args.maxsize, port, logs, env)
                t = time.perf_counter()
                cluster.start(sampler)
                out["startup_seconds"] = round(time.perf_counter() - t, 2)
            held = sampler.mark()
            load0 = round(os.getloadavg()[0], 2)
            t = time.perf_counter()
            if args.serial:
                model = LsiModel(corpus, num_topics=args.topics, id2word=id2word,
                                 chunksize=args.chunksize)
            else:
                with Watchdog(cluster, args.timeout) as dog:
                    try:
                        model = LsiModel(corpus, num_topics=args.topics, id2word=id2word,
                                         chunksize=args.chunksize, distributed=True)
                    except BaseException:
                        if dog.reason:
                            raise RuntimeError(dog.reason) from None
                        raise
            out["seconds"] = round(time.perf_counter() - t, 3)
            out["cpu_seconds"] = sampler.cpu_since_mark()
            out["loadavg_1min"] = [load0, round(os.getloadavg()[0], 2)]
            sampler.sample()
            out["held_mb"] = round(held, 1)
            out["train_mb"] = round(sampler.total_pss_peak - held, 1)
            out["memory"] = sampler.report()
        if cluster is not None:
            out["jobs_per_worker"] = cluster.jobs_per_worker()
            model.dispatcher = None               # folding in is local (projection.u)
        del corpus
        vectors = {}
        for name in ("anchor", "positive", "negative"):
            bows = load_bows(args.data, name)
            vectors[name] = corpus2dense(model[bows], len(model.projection.s)).T
        out["accuracy"] = accuracy(vectors)
        out["triplets"] = len(vectors["anchor"])
        out["s"] = [float(x) for x in model.projection.s[:3]]
        out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    finally:
        if cluster is not None:
            left = cluster.stop()
            out["left_running"] = left
            if left:
                print(f"could not kill pids {left}", file=sys.stderr)
        if not args.logs:
            shutil.rmtree(logs, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[1:]))
    ap.add_argument("--data", required=True, help="folder written by lsi_bench.prepare()")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--topics", type=int, default=200)
    ap.add_argument("--chunksize", type=int, default=20000, help="gensim's default 20000")
    ap.add_argument("--maxsize", type=int, default=10,
                    help="the dispatcher's job queue size (its default 10)")
    ap.add_argument("--blas-threads", type=int, default=0,
                    help="OMP/OPENBLAS/MKL threads for every process (default: unset)")
    ap.add_argument("--serial", action="store_true",
                    help="gensim's serial LsiModel with the same chunksize (no Pyro)")
    ap.add_argument("--docs", type=int, default=None, help="first N documents only (testing)")
    ap.add_argument("--timeout", type=float, default=1800, help="training time limit, s")
    ap.add_argument("--interval", type=float, default=0.05, help="memory sampling, s")
    ap.add_argument("--logs", help="keep the Pyro processes' logs in this folder")
    args = ap.parse_args()
    if args.blas_threads:      # before numpy loads; inherited by the Pyro processes
        for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[k] = str(args.blas_threads)
    signal.signal(signal.SIGTERM, _terminate)
    print(json.dumps(run(args)), flush=True)


if __name__ == "__main__":
    main()
