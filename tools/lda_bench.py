"""LDA speed and quality: engine's LdaModel against gensim's, on the same bag-of-words.

    python tools/lda_bench.py --docs $DOCS --peer-python peers/bin/python \
        [--topics 100] [--passes 1] [--chunksize 2000] [--rounds 2]

The documents (`ID<TAB>text`, one per line, .xz or plain) are split: the last tenth is
held out. Both tools train on the same bag-of-words (whitespace tokens through the
dictionary filters gensim uses by default, no_below=5, no_above=0.5), given as gensim
users give it (a list of (id, count) documents), with the same settings, each in its own
process. Quality is one estimator applied to both (held-out document completion): each
held-out document's tokens are dealt into two halves (alternately, in term order:
engine.documents.lda.split_halves), its topic mix is inferred from the first by each
tool's own inference, and the second half is scored:
perplexity = exp(-sum(log p(w)) / words), p(w) = theta . topics[:, w]. Rows: engine's
LdaModel on every core and on one thread, gensim's LdaModel and LdaMulticore. Rounds
alternate the order; the table gives the median and worst of the training times.
"""
from __future__ import annotations

import argparse
import json
import lzma
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def read_docs(path: str) -> list[list[str]]:
    opener = lzma.open if path.endswith(".xz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [line.rstrip("\n").split("\t", 1)[-1].split() for line in fh if line.strip()]


def prepare(docs_path: str, out: str) -> dict:
    """The shared bag-of-words: train CSR, held-out halves CSR, the vocabulary size."""
    sys.path.insert(0, os.path.dirname(HERE))
    import scipy.sparse

    from engine import Dictionary

    docs = read_docs(docs_path)
    cut = len(docs) - len(docs) // 10
    d = Dictionary(docs[:cut])
    d.filter_extremes(no_below=5, no_above=0.5)

    def csr(bows):
        bows, rows, cols, vals = list(bows), [], [], []
        for r, bow in enumerate(bows):
            for i, c in bow:
                rows.append(r), cols.append(i), vals.append(c)
        return scipy.sparse.csr_matrix((vals, (rows, cols)), shape=(len(bows), len(d)))

    from engine.documents.lda import split_halves

    train = csr(d.doc2bow(t) for t in docs[:cut])
    first, second = split_halves(csr(d.doc2bow(t) for t in docs[cut:]))
    np.savez(out, **{f"{name}_{part}": getattr(m, part) for name, m in
                     (("train", train), ("first", first), ("second", second))
                     for part in ("data", "indices", "indptr")},
             shape=np.array([train.shape[0], first.shape[0], len(d)]))
    return {"train_docs": train.shape[0], "held_out": first.shape[0], "terms": len(d),
            "train_words": int(train.sum())}


def load_bows(z, name: str, n_docs: int) -> list:
    data, indices, indptr = (z[f"{name}_{p}"] for p in ("data", "indices", "indptr"))
    return [list(zip(indices[indptr[r]:indptr[r + 1]].tolist(),
                     data[indptr[r]:indptr[r + 1]].astype(int).tolist()))
            for r in range(n_docs)]


def run_one(tool: str, data: str, out: str, topics: int, passes: int, chunksize: int,
            workers: int) -> None:
    """Train one tool and write its topics, its held-out mixes and its time."""
    z = np.load(data)
    n_train, n_held, n_terms = z["shape"].tolist()
    train, first = load_bows(z, "train", n_train), load_bows(z, "first", n_held)
    id2word = {i: str(i) for i in range(n_terms)}
    kw = {"num_topics": topics, "id2word": id2word, "passes": passes,
          "chunksize": chunksize, "random_state": 1, "eval_every": None}
    if tool.startswith("engine"):
        sys.path.insert(0, os.path.dirname(HERE))
        from engine import LdaModel
        kw["workers"] = 1 if tool == "engine-1" else 0
    elif tool == "gensim-multicore":
        from gensim.models import LdaMulticore as LdaModel
        kw["workers"] = workers or None
    else:
        from gensim.models import LdaModel
    t0 = time.perf_counter()
    model = LdaModel(train, **kw)
    seconds = time.perf_counter() - t0
    gamma, _ = model.inference(first)
    theta = gamma / gamma.sum(axis=1, keepdims=True)
    np.savez(out, topics=model.get_topics().astype(np.float64), theta=theta,
             seconds=np.array(seconds))


def completion_perplexity(res, z) -> float:
    import scipy.sparse

    from engine.documents.lda import completion_perplexity as score

    n_held, n_terms = z["shape"].tolist()[1:]
    second = scipy.sparse.csr_matrix(
        tuple(z[f"second_{p}"] for p in ("data", "indices", "indptr")), shape=(n_held, n_terms))
    return score(res["topics"], res["theta"], second)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", default="")
    ap.add_argument("--peer-python", default="")
    ap.add_argument("--topics", type=int, default=100)
    ap.add_argument("--passes", type=int, default=1)
    ap.add_argument("--chunksize", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=0,
                    help="gensim LdaMulticore's workers (0: its default, cores - 1)")
    ap.add_argument("--run", default="", help=argparse.SUPPRESS)
    ap.add_argument("--data", default="", help=argparse.SUPPRESS)
    ap.add_argument("--out", default="", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.run:
        run_one(a.run, a.data, a.out, a.topics, a.passes, a.chunksize, a.workers)
        return
    if not a.docs:
        ap.error("--docs is required")
    tools = ["engine", "engine-1"] + (["gensim", "gensim-multicore"] if a.peer_python else [])
    with tempfile.TemporaryDirectory(prefix="lda-bench-") as tmp:
        data = os.path.join(tmp, "bow.npz")
        info = prepare(a.docs, data)
        print(json.dumps(info))
        z = np.load(data)
        results: dict[str, list] = {t: [] for t in tools}
        for rnd in range(a.rounds):
            for tool in tools if rnd % 2 == 0 else tools[::-1]:
                py = sys.executable if tool.startswith("engine") else a.peer_python
                out = os.path.join(tmp, f"{tool}-{rnd}.npz")
                subprocess.run([py, os.path.abspath(__file__), "--run", tool, "--data", data,
                                "--out", out, "--topics", str(a.topics), "--passes",
                                str(a.passes), "--chunksize", str(a.chunksize),
                                "--workers", str(a.workers)], check=True)
                with np.load(out) as res:
                    results[tool].append((float(res["seconds"]),
                                          completion_perplexity(res, z)))
        base = float(np.median([s for s, _ in results["gensim"]])) if a.peer_python else None
        print("| tool | train s, median (worst) | docs/s | speed vs gensim LdaModel "
              "| held-out perplexity |")
        print("|---|---|---|---|---|")
        for tool, rows in results.items():
            secs = [s for s, _ in rows]
            med = float(np.median(secs))
            print(f"| {tool} | {med:.2f} ({max(secs):.2f}) | "
                  f"{info['train_docs'] * a.passes / med:,.0f} | "
                  f"{f'{base / med:.2f}x' if base else '-'} | "
                  f"{np.median([p for _, p in rows]):.1f} |")


if __name__ == "__main__":
    main()
