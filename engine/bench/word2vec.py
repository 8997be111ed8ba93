"""`engine bench`: train one job once per process count and print the table users know from
the word2vec literature (words/s, speedup, efficiency, peak RAM, analogy accuracy), with
peers (gensim, gensim corpus_file, fastText) trained on the same settings in the same run.

Each run is a fresh subprocess (`engine run`, or peers_runner.py under the peer's Python), so
timings and peak memory of one run do not leak into the next.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from ..config import load_job, job_from_dict
from ..errors import ConfigError, EngineError
from .common import (LocalWorkers, RUNNER, SHARE_NOTHING, engine_job, job_command, parse_threads,
                     peer_available, plain_corpus, run_job_process)
from .machine import machine_checks
from .table import _capacity, _record_checks, check_plot_path, format_table, plot, ratios

def add_arguments(p) -> None:
    p.add_argument("job", nargs="?", default=None,
                   help="job file (default: the built-in default job on the bundled sample)")
    p.add_argument("--threads", default="1..2", metavar="A..B|A,B,C",
                   help="process counts to run, e.g. 1..8 or 1,2,4 (default 1..2)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--peers", default="", help="comma list: gensim, gensim-corpusfile, fasttext")
    p.add_argument("--peer-python", default=os.environ.get("ENGINE_PEER_PYTHON", ""),
                   help="Python with the peers installed (default: $ENGINE_PEER_PYTHON, "
                        "else this Python)")
    p.add_argument("--json", default="", metavar="F", help="write all rows as JSON")
    p.add_argument("--plot", default="", metavar="F.png",
                   help="words/s and speedup against processes (.png, .svg or .pdf; needs "
                        "matplotlib)")
    p.add_argument("--keep", default="", metavar="DIR", help="keep each run's outputs here")
    p.add_argument("--nodes", default="", metavar="A..B|A,B,C",
                   help="also train on a cluster of 1..N `engine worker`s started on this "
                        "machine (loopback), beside the local rows: what the cluster costs")
    p.add_argument("--node-workers", type=int, default=1, metavar="P",
                   help="training processes per node with --nodes (default 1)")
    p.add_argument("--share-nothing", action="store_true",
                   help="also run, for every process count P >= 2, P one-process `engine run`s "
                        "at once, each training its own model on the whole corpus: what the "
                        "machine gives P copies of the kernel that share nothing. engine's "
                        "P-process row over it is what sharing the weights (and starting P "
                        "training processes) costs")
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="run every row N times, in N interleaved rounds (so a slow spell of a "
                        "shared machine hits all rows alike); the table gives each row's "
                        "median and worst run; all runs' words/s go to --json (default 1)")



def run_engine(corpus: str, model: dict, workers: int, out: str, evaluate: dict | None = None,
               engine: dict | None = None, cluster: dict | None = None) -> dict:
    """One `engine run` in a fresh process; returns the row (from its report.json)."""
    os.makedirs(out, exist_ok=True)
    job = engine_job(corpus, model, workers, out, evaluate, engine, cluster)
    rep = run_job_process(job, out, f"engine run with {workers} process(es)")
    row = {"tool": "engine", "threads": workers, "training_seconds": rep["training_seconds"],
           "words_per_sec": rep["words_per_sec"], "peak_mb": rep["peak_rss_mb"],
           "train_peak_mb": rep["train_peak_rss_mb"], "vocab_size": rep["vocab_size"],
           "corpus_words": rep["corpus_words"], "prepare_seconds":
               rep["vocab_seconds"] + rep["encode_seconds"], "vectors": os.path.join(out, "vectors.bin")}
    if rep.get("cluster"):
        c = rep["cluster"]
        row["cluster"] = {k: c[k] for k in ("nodes_used", "exchanges", "bytes_to_nodes",
                                             "bytes_from_nodes", "dropped", "hot_rows")}
        row["threads"] = rep["workers"]
    if rep.get("hot_rows"):
        row["hot_rows"] = rep["hot_rows"]
    for f, r in rep.get("evaluation", {}).get("analogies", {}).items():
        row["analogy_accuracy"] = r["accuracy"]
    for f, r in rep.get("evaluation", {}).get("similarity", {}).items():
        row["wordsim_spearman"] = r["spearman"]
    return row




def run_share_nothing(corpus: str, model: dict, p: int, out: str,
                      engine: dict | None = None) -> dict:
    """p one-process `engine run`s started at once, each on its own model and the whole
    corpus; the row's words/s are all their trained words over the union of their training
    windows (report.json's training_window), so a run that trains while another still
    prepares makes the figure lower, never higher. (With the job's own [engine] cache_dir
    the copies share it; engine's p-process row, run just before, has filled it.)"""
    procs, logs = [], []
    try:
        for i in range(p):
            folder = os.path.join(out, f"copy-{i + 1}")
            os.makedirs(folder, exist_ok=True)
            cmd, env = job_command(engine_job(corpus, model, 1, folder, {}, engine), folder)
            logs.append(open(os.path.join(folder, "stderr.log"), "w+"))
            procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=logs[-1],
                                          env=env))
        while any(proc.poll() is None for proc in procs):
            if any(proc.returncode for proc in procs):   # one failed: do not wait for the rest
                break
            time.sleep(0.2)
        for i, proc in enumerate(procs):
            if proc.returncode:
                logs[i].seek(0)
                raise EngineError(f"{SHARE_NOTHING}, {p} runs: run {i + 1} failed:\n"
                                  f"{logs[i].read()[-3000:]}")
        reports = []
        for i in range(p):
            with open(os.path.join(out, f"copy-{i + 1}", "report.json")) as fh:
                reports.append(json.load(fh))
    finally:
        for proc in procs:                         # ask, then make them stop
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in logs:
            log.close()
    windows = [r["training_window"] for r in reports]
    span = max(end for _, end in windows) - min(start for start, _ in windows)
    overlap = min(end for _, end in windows) - max(start for start, _ in windows)
    return {"tool": SHARE_NOTHING, "threads": p, "training_seconds": span,
            "words_per_sec": sum(r["trained_words"] for r in reports) / max(span, 1e-9),
            "peak_mb": sum(r["peak_rss_mb"] for r in reports),
            "overlap": round(max(overlap, 0.0) / max(span, 1e-9), 3),
            "corpus_words": reports[0]["corpus_words"]}



def run_peer(python: str, peer: str, corpus: str, model: dict, threads: int, vectors: str,
             corpus_words: int | None = None) -> dict:
    proc = subprocess.run([python, RUNNER, peer, corpus, json.dumps(model), str(threads), vectors],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise EngineError(f"peer {peer} failed:\n{proc.stderr[-3000:]}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    words = corpus_words or r["corpus_words"]
    return {"tool": peer, "threads": threads, "training_seconds": r["training_seconds"],
            "words_per_sec": words * model["epochs"] / r["training_seconds"],
            "peak_mb": r["max_rss_mb"], "vocab_size": r["vocab_size"], "vectors": vectors,
            "prepare_seconds": r["vocab_seconds"]}


def judge(python: str, vectors: str, script: str = "") -> dict:
    """Score vectors with a judge script the user names (`script`, else $ENGINE_JUDGE) under
    `python`: `python SCRIPT VECTORS` prints a JSON object as its last line (e.g. gensim's
    evaluators' analogy_accuracy and wordsim353_spearman)."""
    script = script or os.environ.get("ENGINE_JUDGE", "")
    if not script:
        raise ConfigError("no judge script: name one with --judge SCRIPT or $ENGINE_JUDGE")
    if not os.path.isfile(script):
        raise ConfigError(f"{script}: judge script not found")
    proc = subprocess.run([python, script, vectors], capture_output=True, text=True)
    if proc.returncode != 0:
        raise EngineError(f"judge failed on {vectors}:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def evaluate_vectors(path: str, analogies: list[str], restrict: int) -> float | None:
    from ..vectors.keyedvectors import KeyedVectors

    if not analogies:
        return None
    kv = KeyedVectors.load_word2vec_format(path, binary=True)
    return round(kv.evaluate_word_analogies(analogies[0], restrict_vocab=restrict)[0], 4)


def summary_run(runs: list[dict]) -> dict:
    """A row from its runs: the median run (its memory, accuracy, checks), with the median
    and the worst words/s of all runs and every run's figure beside it."""
    ordered = sorted(runs, key=lambda r: r["words_per_sec"])
    row = dict(ordered[(len(ordered) - 1) // 2])
    rates = [r["words_per_sec"] for r in runs]
    row["runs_words_per_sec"] = [round(x, 1) for x in rates]
    row["words_per_sec"] = statistics.median(rates)
    row["worst_words_per_sec"] = min(rates)
    return row



def run_bench(args) -> int:
    import psutil

    counts = parse_threads(args.threads)
    if args.plot:
        check_plot_path(args.plot)
    job = load_job(args.job, args.set) if args.job else job_from_dict({}, args.set, "bench")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else psutil.cpu_count()
    model = dataclasses.asdict(job.model)
    evaluate = dataclasses.asdict(job.evaluate)
    evaluate["neighbours"] = []
    engine = {k: v for k, v in dataclasses.asdict(job.engine).items() if k != "workers"}
    notes: list[str] = []
    runs: dict[tuple, list[dict]] = {}
    if args.repeat < 1:
        raise ConfigError(f"--repeat {args.repeat}: expected an integer >= 1")
    if args.share_nothing and (job.lsi is not None or job.lda is not None):
        raise ConfigError("--share-nothing: word2vec jobs only (an [lsi] job's bench times "
                          "its own splits of processes and BLAS threads)")
    keep = args.keep or tempfile.mkdtemp(prefix="engine-bench-")
    if job.lda is not None:                    # topics: engine.bench.lda
        from .lda import run_lda_bench

        try:
            return run_lda_bench(args, job, keep, cores)
        finally:
            if not args.keep:
                shutil.rmtree(keep, ignore_errors=True)
    if job.lsi is not None:                    # document vectors: engine.bench.lsi
        from .lsi import run_lsi_bench

        try:
            return run_lsi_bench(args, job, keep, cores)
        finally:
            if not args.keep:
                shutil.rmtree(keep, ignore_errors=True)
    if not job.evaluate.analogies:
        notes.append("analogy: no analogy file given, so no analogy column; give one with "
                     "--set 'evaluate.analogies=[\"FILE\"]' (e.g. word2vec's "
                     "questions-words.txt)")
    node_counts, workers = [], None
    try:
        corpus = job.corpus.path
        if not corpus:
            from ..text.sample import sample_corpus_path

            corpus = sample_corpus_path()
        python = args.peer_python or sys.executable
        peers = []
        for peer in (x.strip() for x in args.peers.split(",") if x.strip()):
            why = peer_available(python, peer)
            if why:
                notes.append(f"peer {peer} skipped: {why}")
                print(notes[-1], flush=True)
            else:
                peers.append(peer)
        plain, words = None, None
        node_counts = parse_threads(args.nodes) if args.nodes else []
        workers = LocalWorkers(max(node_counts), args.node_workers) if node_counts else None
        for rnd in range(args.repeat):
            tag = f"-r{rnd + 1}" if args.repeat > 1 else ""
            for p in counts:
                before = machine_checks(p)
                row = run_engine(corpus, model, p, os.path.join(keep, f"engine-{p}{tag}"),
                                 evaluate, engine)
                _record_checks(row, before, machine_checks(p))
                runs.setdefault(("engine", p), []).append(row)
                words = row["corpus_words"]
                print(f"engine, {p} process(es): {row['words_per_sec']:,.0f} words/s, peak "
                      f"{row['peak_mb']:.0f} MB; CPU check {_capacity(row)}", flush=True)
                if args.share_nothing and p >= 2:
                    before = machine_checks(p)
                    row = run_share_nothing(corpus, model, p,
                                            os.path.join(keep, f"alone-{p}{tag}"), engine)
                    _record_checks(row, before, machine_checks(p))
                    runs.setdefault((SHARE_NOTHING, p), []).append(row)
                    print(f"{SHARE_NOTHING}, {p} copies: {row['words_per_sec']:,.0f} words/s "
                          f"(training overlapped {row['overlap']:.0%}); CPU check "
                          f"{_capacity(row)}", flush=True)
            for n in node_counts:
                p = n * args.node_workers
                before = machine_checks(p)
                row = run_engine(corpus, model, 1, os.path.join(keep, f"cluster-{n}{tag}"),
                                 evaluate, engine, {"nodes": workers.addresses[:n]})
                row["tool"] = f"engine cluster ({args.node_workers}/node)"
                _record_checks(row, before, machine_checks(p))
                runs.setdefault((row["tool"], p), []).append(row)
                print(f"engine cluster, {n} node(s) x {args.node_workers}: "
                      f"{row['words_per_sec']:,.0f} words/s, dispatcher peak "
                      f"{row['peak_mb']:.0f} MB; CPU check {_capacity(row)}", flush=True)
            if peers and plain is None:
                tmp = os.path.join(keep, "peer-corpus")
                os.makedirs(tmp, exist_ok=True)
                plain = plain_corpus(corpus, tmp)
            for peer in peers:
                for p in counts:
                    vec = os.path.join(keep, f"{peer}-{p}{tag}.bin")
                    before = machine_checks(p)
                    row = run_peer(python, peer, plain, model, p, vec, words)
                    _record_checks(row, before, machine_checks(p))
                    row["analogy_accuracy"] = evaluate_vectors(vec, job.evaluate.analogies,
                                                               job.evaluate.restrict_vocab)
                    runs.setdefault((peer, p), []).append(row)
                    print(f"{peer}, {p} thread(s): {row['words_per_sec']:,.0f} words/s, peak "
                          f"{row['peak_mb']:.0f} MB; CPU check {_capacity(row)}", flush=True)
    finally:
        if workers is not None:
            workers.close()
        if not args.keep:
            shutil.rmtree(keep, ignore_errors=True)
    rows = [summary_run(r) for r in runs.values()]
    settings = ", ".join(f"{k}={model[k]}" for k in ("sg", "hs", "negative", "vector_size",
                                                      "window", "sample", "epochs", "alpha"))
    print()
    print(f"corpus: {corpus}; {cores} CPU(s) available; model: {settings}")
    print(format_table(rows, cores))
    for line in ratios(rows) + notes:
        print(line)
    if args.plot:
        size = f" ({words:,} words)" if words else ""
        title = f"engine bench: {os.path.basename(corpus)}{size}, {cores} CPU(s)\n{settings}"
        print(plot(rows, args.plot, title, cores))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "notes": notes, "cores": cores, "model": model,
                       "repeat": args.repeat}, fh, indent=2)
    return 0

