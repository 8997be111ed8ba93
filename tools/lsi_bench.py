"""LSI speed, memory and quality: engine against gensim's serial LsiModel.

    python tools/lsi_bench.py --docs $DOCS --triplets $TRIPLETS [--topics 200]

Both train on the same TF-IDF bag-of-words: the documents corpus through the dictionary
filters gensim uses by default (no_below=5, no_above=0.5, keep_n=100000) and gensim's
default TF-IDF (engine's Dictionary and TfidfModel give the same ids and weights; see
tests/test_lsi.py). Every run is its own process, so its peak memory is its own: the
table shows the training wall time, the speed-up over gensim, the peak RSS of the
process, the growth of memory during training (PSS of the process and its children, less
what the process held before), and the triplet accuracy (each triplet paragraph folded in:
TF-IDF, then U^T x; cosine; share where the anchor is nearer its positive).

Two more rows run engine's whole job from the compressed file (dictionary, TF-IDF, SVD,
document vectors), on the whole corpus and on its first tenth with the same number of
terms and topics: memory should not grow with the corpus. The cluster rows run the same
job with its SVD on two `engine worker`s started on loopback (shares decomposed on the nodes,
merged here), once with one node SIGKILLed as soon as it holds a share.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import scipy.sparse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

# (label, kind, options): kinds "gensim", "engine" (LsiModel on the same bag-of-words),
# "job" (the whole pipeline from the file)
RUNS = [
    ("gensim LsiModel (serial, float64)", "gensim", {}),
    ("engine LsiModel float64, auto", "engine", {"dtype": "float64"}),
    ("engine LsiModel float64, 1 proc x 1 thread", "engine",
     {"dtype": "float64", "processes": 1, "blas_threads": 1}),
    ("engine LsiModel float64, 1 proc x 2 threads", "engine",
     {"dtype": "float64", "processes": 1, "blas_threads": 2}),
    ("engine LsiModel float64, 2 procs x 1 thread", "engine",
     {"dtype": "float64", "processes": 2, "blas_threads": 1}),
    ("engine LsiModel float32, auto", "engine", {"dtype": "float32"}),
    ("engine merge (one pass, 5 chunks) float64", "engine",
     {"dtype": "float64", "method": "merge", "chunksize": 1000}),
    ("engine job, whole corpus (float32), auto", "job", {"part": "full"}),
    ("engine job, whole corpus (float32), 1 x 2", "job",
     {"part": "full", "processes": 1, "blas_threads": 2}),
    ("engine job, first tenth (float32), 1 x 2", "job",
     {"part": "tenth", "processes": 1, "blas_threads": 2}),
    ("engine job, whole corpus, 2 nodes x 1 thread", "cluster", {"nodes": 2}),
    ("engine job, 2 nodes, one SIGKILLed in its share", "cluster", {"nodes": 2, "kill": True}),
]


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---- preparing the shared input -------------------------------------------------------------

def prepare(docs: str, triplets: str, folder: str) -> dict:
    """The TF-IDF matrix and dictionary both trainers get, the triplets' TF-IDF, and the
    first tenth of the corpus as a file of its own."""
    from engine.documents.blocks import BlockCache, read_block
    from engine.documents.corpus import DocumentSource
    from engine.documents.evaluate import read_triplets
    from engine.documents.stream import build_cache, local_map
    from engine.documents.tfidf import TfidfModel
    from engine.documents.blocks import bows_to_csr

    t = time.perf_counter()
    with BlockCache() as cache:
        d, _, stats = build_cache(DocumentSource(docs), cache, local_map)
        m = scipy.sparse.vstack([read_block(b.path) for b in cache.blocks], format="csr")
    scipy.sparse.save_npz(os.path.join(folder, "tfidf.npz"), m)
    d.save(os.path.join(folder, "dictionary.json"))
    tfidf = TfidfModel(dictionary=d)
    parts = [[], [], []]
    for batch in read_triplets(triplets):
        for i, column in enumerate(zip(*batch)):
            parts[i].extend(d.doc2bow(p) for p in column)
    for name, bows in zip(("anchor", "positive", "negative"), parts):
        scipy.sparse.save_npz(os.path.join(folder, f"{name}.npz"),
                              tfidf.weigh(bows_to_csr(bows, len(d))))
    _first_tenth(docs, os.path.join(folder, "tenth.tsv"), stats.documents // 10)
    return {"documents": stats.documents, "terms": len(d), "nonzeros": int(m.nnz),
            "seconds": round(time.perf_counter() - t, 1)}


def _first_tenth(docs: str, out: str, n: int) -> None:
    from engine.text.corpus import open_binary

    with open_binary(docs) as src, open(out, "wb") as dst:
        for i, line in enumerate(src):
            if i >= n:
                break
            dst.write(line)


# ---- one run (in its own process) ---------------------------------------------------------------

def _bows(folder: str, name: str) -> list:
    from engine.documents.blocks import csr_to_bows

    return csr_to_bows(scipy.sparse.load_npz(os.path.join(folder, f"{name}.npz")).tocsr())


def _accuracy(vectors: dict) -> float:
    def unit(v):
        n = np.linalg.norm(v, axis=1, keepdims=True)
        n[n == 0] = 1
        return v / n
    a, p, n = (unit(vectors[k]) for k in ("anchor", "positive", "negative"))
    return float(np.mean(np.einsum("ij,ij->i", a, p) > np.einsum("ij,ij->i", a, n)))


def run_one(kind: str, options: dict, folder: str, docs: str, triplets: str,
            topics: int) -> dict:
    from engine.runtime.memory import PeakMemory

    from engine.documents import Dictionary

    if kind == "job":
        return _run_job(options, folder, docs, triplets, topics)
    if kind == "cluster":
        return _run_cluster(options, folder, docs, triplets, topics)
    dictionary = Dictionary.load(os.path.join(folder, "dictionary.json"))
    corpus = _bows(folder, "tfidf")
    held = rss_mb()
    with PeakMemory(interval=0.05) as peak:
        base = peak.sample()
        t = time.perf_counter()
        if kind == "gensim":
            from gensim.models import LsiModel

            model = LsiModel(corpus, num_topics=topics, id2word=dictionary)
        else:
            from engine.documents import LsiModel

            model = LsiModel(corpus, num_topics=topics, id2word=dictionary, random_seed=1,
                             **options)
        seconds = time.perf_counter() - t
    del corpus
    vectors = {}
    for name in ("anchor", "positive", "negative"):
        bows = _bows(folder, name)
        if kind == "gensim":
            from gensim.matutils import corpus2dense

            vectors[name] = corpus2dense(model[bows], len(model.projection.s)).T
        else:
            vectors[name] = model.transform(bows)
    split = getattr(model, "last_report", None)
    return {"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "held_mb": held,
            "train_mb": peak.peak_mb - base, "accuracy": _accuracy(vectors),
            "split": f"{split.split.processes}x{split.split.threads}" if split else "BLAS",
            "s": [float(x) for x in model.projection.s[:3]]}


def _run_job(options: dict, folder: str, docs: str, triplets: str, topics: int) -> dict:
    from engine.documents import Dictionary
    from engine.documents.job import LsiConfig, run_lsi_job

    out = os.path.join(folder, f"job-{options['part']}")
    split = {k: options[k] for k in ("processes", "blas_threads") if k in options}
    if options["part"] == "full":
        cfg = LsiConfig(path=docs, output=out, num_topics=topics, triplets=triplets,
                        dtype="float32", **split)
    else:                       # the same number of terms: keep the tenth's top df ones
        terms = len(Dictionary.load(os.path.join(folder, "dictionary.json")))
        cfg = LsiConfig(path=os.path.join(folder, "tenth.tsv"), output=out,
                        num_topics=topics, no_below=1, keep_n=terms, triplets=triplets,
                        dtype="float32", **split)
    t = time.perf_counter()
    report = run_lsi_job(cfg)
    split = report["svd_split"]
    return {"seconds": time.perf_counter() - t, "peak_rss_mb": peak_rss_mb(),
            "held_mb": 0.0, "train_mb": report["peak_memory_mb"],
            "accuracy": report["triplets"]["lsi"]["accuracy"],
            "split": f"{split['processes']}x{split['threads']}",
            "terms": report["terms"], "documents": report["documents"],
            "svd_seconds": report["seconds"]["svd"], "phases": report["seconds"]}


def _run_cluster(options: dict, folder: str, docs: str, triplets: str, topics: int) -> dict:
    """The whole job with its SVD on `nodes` `engine worker`s (1 thread each) started here
    on loopback; with "kill", the second node is SIGKILLed as soon as it has been sent
    its first share (which the other node then computes too)."""
    import signal
    import threading

    import psutil

    from engine.runtime.procs import engine_command
    from engine.cluster import ClusterLsi
    from engine.config import ClusterConfig
    from engine.documents.job import LsiConfig, run_lsi_job

    key = "lsi-bench"
    cmd, env = engine_command()
    env = dict(env, ENGINE_CLUSTER_KEY=key)
    procs, addresses = [], []           # worker pids (not our children: see below)
    peaks: dict[int, float] = {}
    try:
        for i in range(options["nodes"]):
            # started through a shell that exits, so the workers are not in this process'
            # tree and the job's peak memory (PSS of its tree) is the dispatcher's alone
            worker = " ".join(cmd + ["worker", "--port", "0", "--workers", "1", "--name",
                                     f"b{i}"])
            sh = subprocess.Popen(["sh", "-c", f"setsid {worker} 2>/dev/null & echo $!"],
                                  stdout=subprocess.PIPE, text=True, env=env)
            procs.append(int(sh.stdout.readline()))
            while True:
                line = sh.stdout.readline()
                if "ready on" in line:
                    addresses.append(line.rsplit(" ", 1)[1].strip())
                    break
                if not line:
                    raise RuntimeError("a worker did not start")
        done = threading.Event()

        def sample():
            while not done.wait(0.1):
                for pid in procs:
                    try:
                        peaks[pid] = max(peaks.get(pid, 0.0),
                                         psutil.Process(pid).memory_info().rss / 2**20)
                    except psutil.Error:
                        pass

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        killed = []

        def on_event(what, node, share):
            if options.get("kill") and what == "sent" and node.address == addresses[1] \
                    and not killed:
                killed.append(share)
                os.kill(procs[1], signal.SIGKILL)

        cluster = ClusterConfig(nodes=addresses, timeout_seconds=10, round_seconds=1)
        decompose = ClusterLsi(cluster, key.encode(), on_event=on_event).decompose
        out = os.path.join(folder, "job-cluster-kill" if options.get("kill") else "job-cluster")
        cfg = LsiConfig(path=docs, output=out,
                        num_topics=topics, triplets=triplets, dtype="float32")
        t = time.perf_counter()
        report = run_lsi_job(cfg, decompose)
        seconds = time.perf_counter() - t
        done.set()
    finally:
        for pid in procs:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        gone = [psutil.Process(pid) for pid in procs if psutil.pid_exists(pid)]
        psutil.wait_procs(gone, timeout=30)
    c = report["cluster"]
    return {"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "held_mb": 0.0,
            "train_mb": report["peak_memory_mb"],
            "accuracy": report["triplets"]["lsi"]["accuracy"],
            "split": f"{c['nodes_used']}n", "terms": report["terms"],
            "documents": report["documents"], "svd_seconds": report["seconds"]["svd"],
            "phases": report["seconds"], "node_peak_mb": sorted(round(v) for v in peaks.values()),
            "cluster": {k: c[k] for k in ("shares", "share_rank", "recomputed", "dropped",
                                          "done_by", "bytes_to_nodes", "bytes_from_nodes")},
            "s": [float(x) for x in np.load(os.path.join(out, "singular_values.npy"))[:3]]}


# ---- the driver ---------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", required=True, help="the documents corpus (ID<TAB>text lines)")
    ap.add_argument("--triplets", required=True,
                    help="anchor<TAB>positive<TAB>negative paragraphs")
    ap.add_argument("--topics", type=int, default=200)
    ap.add_argument("--only", default="", help="comma-separated row numbers to run (1-based)")
    ap.add_argument("--one", help=argparse.SUPPRESS)           # internal: run one row
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one is not None:
        label, kind, options = RUNS[int(args.one)]
        print(json.dumps(run_one(kind, options, args.data, args.docs, args.triplets,
                                 args.topics)))
        return
    rows = [int(x) - 1 for x in args.only.split(",") if x] or range(len(RUNS))
    with tempfile.TemporaryDirectory(prefix="lsi-bench-") as folder:
        info = prepare(args.docs, args.triplets, folder)
        print(f"input: {info['documents']:,} documents, {info['terms']:,} terms, "
              f"{info['nonzeros']:,} nonzeros (prepared in {info['seconds']} s); "
              f"{args.topics} topics; {os.cpu_count()} cores", flush=True)
        results = {}
        for i in rows:
            label = RUNS[i][0]
            out = subprocess.run([sys.executable, __file__, "--one", str(i), "--data", folder,
                                  "--docs", args.docs, "--triplets", args.triplets,
                                  "--topics", str(args.topics)],
                                 capture_output=True, text=True)
            if out.returncode:
                print(f"{label}: failed\n{out.stderr[-2000:]}", flush=True)
                continue
            results[i] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"  done: {label} ({results[i]['seconds']:.1f} s)", flush=True)
        _same_topics(folder)
    _table(results)


def _same_topics(folder: str) -> None:
    """The killed-node run against the undisturbed 2-node run: the same shares, so the
    same decomposition up to sign and floating point."""
    a, b = (os.path.join(folder, n) for n in ("job-cluster", "job-cluster-kill"))
    if not (os.path.isdir(a) and os.path.isdir(b)):
        return
    sa, sb = (np.load(os.path.join(x, "singular_values.npy")) for x in (a, b))
    ua, ub = (np.load(os.path.join(x, "u.npy")).astype(np.float64) for x in (a, b))
    cos = np.abs(np.einsum("ij,ij->j", ua, ub))
    print(f"\nkilled-node run vs 2-node run: singular values max relative difference "
          f"{np.max(np.abs(sa - sb) / sa):.2e}; topics |cos| between matching columns: "
          f"min {cos.min():.6f}, median {np.median(cos):.6f}", flush=True)


def _table(results: dict) -> None:
    base = results.get(0, {}).get("seconds")
    print()
    print(f"| {'run':46} | split | train s | vs gensim | peak RSS MB | train MB | triplets |")
    print(f"|{'-' * 48}|-------|---------|-----------|-------------|----------|----------|")
    for i, r in sorted(results.items()):
        speed = f"{base / r['seconds']:.2f}x" if base else "-"
        if RUNS[i][1] in ("job", "cluster"):
            speed = f"(svd {r['svd_seconds']:.1f} s)"
        print(f"| {RUNS[i][0]:46} | {r['split']:5} | {r['seconds']:7.1f} | {speed:>9} | "
              f"{r['peak_rss_mb']:11.0f} | {r['train_mb']:8.0f} | {100 * r['accuracy']:7.2f}% |")
    jobs = {RUNS[i][2].get("part"): r for i, r in results.items()
            if RUNS[i][1] == "job" and "processes" in RUNS[i][2]}
    if len(jobs) == 2:
        full, tenth = jobs["full"], jobs["tenth"]
        print(f"\njob memory (PSS, all processes, both 1 x 2): whole corpus "
              f"{full['train_mb']:.0f} MB ({full['documents']:,} documents, "
              f"{full['terms']:,} terms), first tenth "
              f"{tenth['train_mb']:.0f} MB ({tenth['documents']:,} documents, "
              f"{tenth['terms']:,} terms): ratio {full['train_mb'] / tenth['train_mb']:.3f}")
    for i, r in sorted(results.items()):
        if RUNS[i][1] in ("job", "cluster"):
            print(f"{RUNS[i][0]} phases (s): " + json.dumps(r["phases"]))
        if RUNS[i][1] == "cluster":
            print(f"  nodes' peak RSS MB {r['node_peak_mb']}; " + json.dumps(r["cluster"]))
    print("train MB: memory growth while training (PSS of the process and its children); "
          "for the job rows, the job's whole peak PSS")


if __name__ == "__main__":
    main()
