"""`engine bench` on an [lda] job: the LDA job once per thread count, with gensim's
LdaModel, LdaMulticore (at each count) and distributed LDA (its own Pyro4 dispatcher and
workers on loopback) on the same documents and settings, in interleaved rounds.

Every run is its own process (`engine run`, or peers_runner.py under the peer's Python).
The figure compared is the training time (engine's train phase; gensim's model
constructor) and documents per second, beside each tool's whole job; quality is one
estimator for all (held-out document completion on the same held-out documents:
engine.documents.lda.completion_perplexity on the halves each tool's dictionary gives,
which are the same terms).
"""
from __future__ import annotations

import copy
import dataclasses
import os
import sys

import numpy as np
import scipy.sparse

from ..errors import ConfigError
from .common import (LocalWorkers, choose_peers, median_run, parse_threads, print_rows,
                     run_job_process)
from .lsi import run_peer

LDA_PEERS = {"gensim": "gensim-lda", "gensim-multicore": "gensim-lda-multicore",
             "gensim-distributed": "gensim-lda-distributed"}


def run_lda_engine(job: dict, out: str, workers: int, nodes: list[str] | None = None
                   ) -> dict:
    """One `engine run` of the LDA job in a fresh process (on `nodes` when given: each
    node's E-steps on its own threads); its row from report.json."""
    os.makedirs(out, exist_ok=True)
    job = copy.deepcopy(job)
    job["output"] = dict(job.get("output", {}), dir=os.path.join(out, "out"))
    job["lda"]["workers"] = workers
    if nodes:
        job["cluster"] = dict(job.get("cluster") or {}, nodes=nodes)
    rep = run_job_process(job, out, f"engine run of the LDA job in {out}")
    last = rep["passes"][-1] if rep["passes"] else {}
    c = rep.get("cluster")
    return {"tool": "engine" if not nodes else f"engine, {len(nodes)} node(s)",
            "split": f"{rep['workers']} thread(s)" if not nodes else
            f"{len(nodes)} nodes x {c['per_node'][0]['threads']} thread(s)",
            "bytes": None if not c else c["bytes_to_nodes"] + c["bytes_from_nodes"],
            "train_seconds": rep["seconds"]["train"], "job_seconds": rep["seconds"]["total"],
            "peak_mb": rep["peak_memory_mb"], "documents": rep["documents"],
            "held_out": rep["held_out"], "terms": rep["terms"],
            "perplexity": last.get("held_out_perplexity")}


def run_lda_peer(python: str, peer: str, corpus: str, settings: dict, workers: int,
                 folder: str) -> dict:
    """One peer run; its topics and held-out mixes scored here, as engine's are."""
    from ..documents.lda import completion_perplexity

    os.makedirs(folder, exist_ok=True)
    out = os.path.join(folder, "peer.npz")
    r = run_peer(python, peer, LDA_PEERS[peer], corpus, settings, workers, out,
                 "lda" if peer == "gensim-distributed" else None)
    perplexity = None
    with np.load(out) as z:
        if z["theta"].shape[0]:
            second = scipy.sparse.csr_matrix((z["data"], z["indices"], z["indptr"]),
                                             shape=(z["theta"].shape[0], r["terms"]))
            perplexity = completion_perplexity(z["topics"], z["theta"], second)
    name = peer if peer == "gensim" else f"{peer}, {workers} worker(s)"
    return {"tool": name, "split": "-" if peer == "gensim" else f"{workers} worker(s)",
            "train_seconds": r["training_seconds"],
            "job_seconds": r["prepare_seconds"] + r["training_seconds"],
            "peak_mb": r["max_rss_mb"], "documents": r["documents"], "terms": r["terms"],
            "held_out": r["held_out"], "perplexity": perplexity}


def format_table(rows: list[dict], passes: int) -> str:
    base = [r for r in rows if r["tool"] == "gensim"]
    lines = ["| tool | split | training s (median) | worst | documents/s | vs gensim "
             "LdaModel | job s | peak MB | held-out perplexity | runs |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        secs = max(r["train_seconds"], 1e-3)              # a tiny job rounds to 0
        vs = f"{base[0]['train_seconds'] / secs:.2f}x" if base else "-"
        trained = (r["documents"] - r["held_out"]) * passes
        ppl = "" if r.get("perplexity") is None else f"{r['perplexity']:.1f}"
        lines.append(f"| {r['tool']} | {r['split']} | {r['train_seconds']:.2f} | "
                     f"{r['worst_train_seconds']:.2f} | {trained / secs:,.0f} | "
                     f"{vs} | {r['job_seconds']:.1f} | {r['peak_mb']:.0f} | {ppl} | "
                     f"{len(r['runs_train_seconds'])} |")
    return "\n".join(lines)


def run_lda_bench(args, job, keep: str, cores: int) -> int:
    counts = parse_threads(args.threads)
    if not job.corpus.path:
        raise ConfigError("[corpus] path: an [lda] bench needs a documents corpus")
    node_counts = parse_threads(args.nodes) if args.nodes else []
    lda = dataclasses.asdict(job.lda)
    base = {"corpus": dataclasses.asdict(job.corpus), "lda": lda}
    python = args.peer_python or sys.executable
    peers, notes = choose_peers(args.peers, LDA_PEERS, "LDA", python)
    peer_settings = dict(lda, keep_n=lda["keep_n"] or None)
    runs: dict[tuple, list[dict]] = {}
    workers = LocalWorkers(max(node_counts), args.node_workers) if node_counts else None
    try:
        for rnd in range(args.repeat):
            _lda_round(args, base, keep, f"-r{rnd + 1}", counts, node_counts, workers, peers,
                       python, job.corpus.path, peer_settings, runs)
    finally:
        if workers is not None:
            workers.close()
    rows = [median_run(r, "train_seconds") for r in runs.values()]
    rows.sort(key=lambda r: (not r["tool"].startswith("gensim"), r["tool"]))
    return print_rows(
        f"corpus: {job.corpus.path}; {cores} CPU(s); {lda['num_topics']} topics, "
        f"{lda['passes']} pass(es), chunksize {lda['chunksize']}, {args.repeat} "
        f"interleaved round(s)", format_table(rows, lda["passes"]), notes, args.json,
        {"rows": rows, "cores": cores, "lda": lda, "repeat": args.repeat})


def _lda_round(args, base, keep, tag, counts, node_counts, workers, peers, python, corpus,
               peer_settings, runs) -> None:
    """One interleaved round: engine at each thread count and node count, then each peer."""
    for n in counts:
        row = run_lda_engine(base, os.path.join(keep, f"lda-{n}{tag}"), n)
        runs.setdefault((row["tool"], n), []).append(row)
        print(f"engine, {n} thread(s): training {row['train_seconds']:.2f} s, job "
              f"{row['job_seconds']:.1f} s, held-out perplexity {row['perplexity']}",
              flush=True)
    for n in node_counts:
        row = run_lda_engine(base, os.path.join(keep, f"lda-nodes{n}{tag}"), 0,
                             workers.addresses[:n])
        runs.setdefault((row["tool"], n), []).append(row)
        print(f"engine on {n} node(s): training {row['train_seconds']:.2f} s, job "
              f"{row['job_seconds']:.1f} s, held-out perplexity {row['perplexity']}, "
              f"{row['bytes'] / 1e6:.1f} MB of arrays to and from the nodes", flush=True)
    for peer in peers:
        sizes = [0] if peer == "gensim" else counts
        for n in sizes:
            if peer == "gensim-distributed" and n < 1:
                continue
            row = run_lda_peer(python, peer, corpus, peer_settings, n,
                               os.path.join(keep, f"{peer}-{n}{tag}"))
            runs.setdefault((row["tool"], n), []).append(row)
            print(f"{row['tool']}: training {row['train_seconds']:.2f} s, job "
                  f"{row['job_seconds']:.1f} s, held-out perplexity "
                  f"{row['perplexity']}", flush=True)

