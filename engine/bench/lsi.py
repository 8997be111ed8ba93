"""`engine bench` on an [lsi] job: the LSI job once per processes x BLAS-threads split and
per node count, with gensim's LsiModel (serial, and distributed over its own Pyro4
dispatcher and workers) on the same documents and settings, in interleaved rounds.

Every run is its own process (`engine run`, or peers_runner.py under the peer's Python).
The figure compared is the decomposition's time (engine's SVD phase; gensim's LsiModel
constructor), beside each tool's whole job; peak memory is the job's (engine: PSS of its
process tree, the dispatcher's when on nodes; gensim: the client's peak RSS).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time

from .common import (KEYED, RUNNER, LocalWorkers, choose_peers, median_run, parse_threads,
                     print_rows, run_job_process)
from ..errors import ConfigError, EngineError

LSI_PEERS = {"gensim": "gensim-lsi", "gensim-distributed": "gensim-lsi-distributed"}
PYRO_ENV = {"PYRO_SERIALIZERS_ACCEPTED": "pickle", "PYRO_SERIALIZER": "pickle"}


def run_lsi_engine(job: dict, out: str, split: tuple[int, int] | None,
                   nodes: list[str] | None = None) -> dict:
    """One `engine run` of the LSI job in a fresh process; its row from report.json."""
    os.makedirs(out, exist_ok=True)
    job = copy.deepcopy(job)
    job["output"] = dict(job.get("output", {}), dir=os.path.join(out, "out"))
    if split is not None:
        job["lsi"]["processes"], job["lsi"]["blas_threads"] = split
    if nodes:
        job["cluster"] = dict(job.get("cluster") or {}, nodes=nodes)
    rep = run_job_process(job, out, f"engine run of the LSI job in {out}")
    sp = rep["svd_split"]
    row = {"tool": "engine" if not nodes else f"engine, {len(nodes)} node(s)",
           "split": f"{sp['processes']}x{sp['threads']}" if not nodes else f"{len(nodes)} nodes",
           "svd_seconds": rep["seconds"]["svd"], "job_seconds": rep["seconds"]["total"],
           "peak_mb": rep["peak_memory_mb"], "method": rep["method"],
           "terms": rep["terms"], "documents": rep["documents"],
           "accuracy": (rep.get("triplets") or {}).get("lsi", {}).get("accuracy")}
    if rep.get("cluster"):
        c = rep["cluster"]
        row["cluster"] = {k: c[k] for k in ("shares", "share_rank", "dropped", "recomputed",
                                             "bytes_to_nodes", "bytes_from_nodes")}
    return row


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GensimCluster:
    """gensim's distributed LSI (or, kind "lda", LDA) on loopback: a Pyro4 name server, `n`
    lsi_worker (lda_worker) processes and the dispatcher, under the peer's Python (pickle, as gensim needs: only ever on
    loopback here, and every message under a random HMAC key made for this run, so that
    no other local user can send these processes a pickle). Everything it starts is stopped
    by close(); `command` runs a peer program keyed the same way."""

    def __init__(self, python: str, n: int, kind: str = "lsi"):
        self.kind = kind
        self.port = _free_port()
        self.python = python
        # one BLAS thread per process: workers each running threaded BLAS on the same cores
        # spin on each other (see docs/benchmarks.md, "What was tried and rejected", LSI)
        self.env = dict(os.environ, PYRO_NS_HOST="127.0.0.1", PYRO_NS_PORT=str(self.port),
                        PYRO_HOST="127.0.0.1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
                        MKL_NUM_THREADS="1", ENGINE_PEER_PYRO_KEY=secrets.token_hex(32),
                        **PYRO_ENV)
        self.procs: list[subprocess.Popen] = []
        try:
            self._start(self.command("-m", "Pyro4.naming", "-n", "127.0.0.1", "-p",
                                     str(self.port)))
            self._wait_ns(python)
            for _ in range(n):
                self._start(self.command("-m", f"gensim.models.{kind}_worker"))
            self._start(self.command("-m", f"gensim.models.{kind}_dispatcher"))
            self._wait_names(python, n)
        except BaseException:
            self.close()
            raise

    def command(self, *args: str) -> list[str]:
        """The peer's Python running `args` (a script, or -m MODULE) with the run's key."""
        return [self.python, KEYED, *args]

    def _start(self, cmd: list[str]) -> None:
        self.procs.append(subprocess.Popen(cmd, env=self.env, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL, start_new_session=True))

    def _names(self, python: str) -> list[str]:
        code = ("import Pyro4, json; ns = Pyro4.locateNS(); "
                f"print(json.dumps(sorted(ns.list(prefix='gensim.{self.kind}_'))))")
        out = subprocess.run(self.command("-c", code), env=self.env, capture_output=True,
                             text=True, timeout=30)
        return json.loads(out.stdout) if out.returncode == 0 else []

    def _wait_ns(self, python: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.2)
        raise EngineError("gensim's Pyro4 name server did not start")

    def _wait_names(self, python: str, n: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            names = self._names(python)
            if f"gensim.{self.kind}_dispatcher" in names and \
                    sum(x.startswith(f"gensim.{self.kind}_worker") for x in names) >= n:
                return
            time.sleep(0.5)
        raise EngineError(f"gensim's {self.kind.upper()} dispatcher and {n} worker(s) did "
                          "not register")

    def close(self) -> None:
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.procs = []


def run_peer(python: str, peer: str, tool: str, corpus: str, settings: dict, workers: int,
             out: str, cluster_kind: str | None) -> dict:
    """peers_runner.py's `tool` under the peer's Python (with `cluster_kind`, "lsi" or
    "lda", over gensim's own dispatcher and `workers` workers started for it); its JSON
    line."""
    env, cmd, cluster = dict(os.environ), [python, RUNNER], None
    try:
        if cluster_kind:
            cluster = GensimCluster(python, workers, kind=cluster_kind)
            env, cmd = cluster.env, cluster.command(RUNNER)
            print(f"gensim's distributed {cluster_kind.upper()}: {workers} worker(s), a name "
                  f"server and a dispatcher on 127.0.0.1, pickle on the wire (gensim needs "
                  f"it; engine's processes never decode it) under a random HMAC key made for "
                  f"this run", flush=True)
        proc = subprocess.run(cmd + [tool, corpus, json.dumps(settings), str(workers or 1),
                                     out], capture_output=True, text=True, env=env)
    finally:
        if cluster is not None:
            cluster.close()
    if proc.returncode != 0:
        raise EngineError(f"peer {peer} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_lsi_peer(python: str, peer: str, corpus: str, settings: dict, workers: int = 0
                 ) -> dict:
    r = run_peer(python, peer, LSI_PEERS[peer], corpus, settings, workers, os.devnull,
                 "lsi" if peer == "gensim-distributed" else None)
    return {"tool": peer if not workers else f"{peer}, {workers} workers",
            "split": "BLAS" if not workers else f"{workers} workers",
            "svd_seconds": r["training_seconds"],
            "job_seconds": r["prepare_seconds"] + r["training_seconds"],
            "peak_mb": r["max_rss_mb"], "accuracy": r["accuracy"], "terms": r["terms"]}


def format_table(rows: list[dict]) -> str:
    base = [r for r in rows if r["tool"] == "gensim"]
    lines = ["| tool | split | SVD s (median) | worst | vs gensim serial | job s | peak MB | "
             "triplets | runs |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        vs = f"{base[0]['svd_seconds'] / r['svd_seconds']:.2f}x" if base else "-"
        acc = "" if r.get("accuracy") is None else f"{100 * r['accuracy']:.2f}%"
        lines.append(f"| {r['tool']} | {r['split']} | {r['svd_seconds']:.2f} | "
                     f"{r['worst_svd_seconds']:.2f} | {vs} | {r['job_seconds']:.1f} | "
                     f"{r['peak_mb']:.0f} | {acc} | {len(r['runs_svd_seconds'])} |")
    return "\n".join(lines)


def splits(counts: list[int]) -> list[tuple[int, int]]:
    """1 x T for every count T, and P x 1 for every count P > 1."""
    out = [(1, t) for t in counts]
    out += [(p, 1) for p in counts if p > 1]
    return out


def run_lsi_bench(args, job, keep: str, cores: int) -> int:
    counts = parse_threads(args.threads)
    node_counts = parse_threads(args.nodes) if args.nodes else []
    if not job.corpus.path:
        raise ConfigError("[corpus] path: an [lsi] bench needs a documents corpus")
    lsi = dataclasses.asdict(job.lsi)
    base = {"corpus": dataclasses.asdict(job.corpus), "lsi": lsi}
    python = args.peer_python or sys.executable
    peers, notes = choose_peers(args.peers, LSI_PEERS, "LSI", python)
    peer_settings = dict(lsi, triplets=lsi["triplets"] or "", keep_n=lsi["keep_n"] or None)
    runs: dict[tuple, list[dict]] = {}
    workers = LocalWorkers(max(node_counts), args.node_workers) if node_counts else None
    try:
        for rnd in range(args.repeat):
            tag = f"-r{rnd + 1}"
            for split in splits(counts):
                row = run_lsi_engine(base, os.path.join(keep, f"lsi-{split[0]}x{split[1]}{tag}"),
                                     split)
                runs.setdefault((row["tool"], split), []).append(row)
                print(f"engine {split[0]} x {split[1]}: SVD {row['svd_seconds']:.2f} s, job "
                      f"{row['job_seconds']:.1f} s, peak {row['peak_mb']:.0f} MB", flush=True)
            for n in node_counts:
                row = run_lsi_engine(base, os.path.join(keep, f"lsi-nodes{n}{tag}"), None,
                                     workers.addresses[:n])
                runs.setdefault((row["tool"], n), []).append(row)
                print(f"engine on {n} node(s): SVD {row['svd_seconds']:.2f} s, job "
                      f"{row['job_seconds']:.1f} s", flush=True)
            for peer in peers:
                sizes = [0] if peer == "gensim" else (node_counts or [2])
                for n in sizes:
                    row = run_lsi_peer(python, peer, job.corpus.path, peer_settings, n)
                    runs.setdefault((row["tool"], n), []).append(row)
                    print(f"{row['tool']}: LsiModel {row['svd_seconds']:.2f} s, job "
                          f"{row['job_seconds']:.1f} s", flush=True)
    finally:
        if workers is not None:
            workers.close()
    rows = [median_run(r, "svd_seconds") for r in runs.values()]
    rows.sort(key=lambda r: (not r["tool"].startswith("gensim"), r["tool"]))
    return print_rows(
        f"corpus: {job.corpus.path}; {cores} CPU(s); {lsi['num_topics']} topics, dtype "
        f"{lsi['dtype']}, {args.repeat} interleaved round(s)", format_table(rows), notes,
        args.json, {"rows": rows, "cores": cores, "lsi": lsi, "repeat": args.repeat})
