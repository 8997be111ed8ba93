"""LDA speed and quality: engine's LdaModel against gensim's, on the same bag-of-words.

    python tools/lda_bench.py --docs $DOCS --peer-python peers/bin/python \
        [--topics 100] [--passes 1] [--chunksize 2000] [--rounds 2] \
        [--seeds] [--coherence-texts 1000]

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
alternate the order; the table gives the median and worst of the training times. With
--seeds, round r trains with random_state r (else 1 in every round) and the table adds
each tool's own per-word bound on the held-out documents (its log_perplexity) and, judged
by gensim's CoherenceModel under the peer's Python, the u_mass and c_v coherence of its
topics' 10 top words (u_mass on the training documents; c_v's sliding windows over the
first --coherence-texts training documents; every model's topics in one CoherenceModel,
so every tool is judged on the same counts): the mean and spread over the seeds.
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
    held = csr(d.doc2bow(t) for t in docs[cut:])
    first, second = split_halves(held)
    np.savez(out, **{f"{name}_{part}": getattr(m, part) for name, m in
                     (("train", train), ("first", first), ("second", second), ("held", held))
                     for part in ("data", "indices", "indptr")},
             shape=np.array([train.shape[0], first.shape[0], len(d)]),
             tokens=np.array([d[i] for i in range(len(d))]))
    return {"train_docs": train.shape[0], "held_out": first.shape[0], "terms": len(d),
            "train_words": int(train.sum())}


def load_bows(z, name: str, n_docs: int) -> list:
    data, indices, indptr = (z[f"{name}_{p}"] for p in ("data", "indices", "indptr"))
    return [list(zip(indices[indptr[r]:indptr[r + 1]].tolist(),
                     data[indptr[r]:indptr[r + 1]].astype(int).tolist()))
            for r in range(n_docs)]


def run_one(tool: str, data: str, out: str, topics: int, passes: int, chunksize: int,
            workers: int, seed: int = 1) -> None:
    """Train one tool and write its topics, its held-out mixes, its own per-word bound on
    the held-out documents and its time."""
    z = np.load(data)
    n_train, n_held, n_terms = z["shape"].tolist()
    train, first = load_bows(z, "train", n_train), load_bows(z, "first", n_held)
    id2word = {i: str(i) for i in range(n_terms)}
    kw = {"num_topics": topics, "id2word": id2word, "passes": passes,
          "chunksize": chunksize, "random_state": seed, "eval_every": None}
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
    bound = model.log_perplexity(load_bows(z, "held", n_held), total_docs=n_train)
    np.savez(out, topics=model.get_topics().astype(np.float64), theta=theta,
             seconds=np.array(seconds), bound=np.array(bound))


def judge(data: str, runs: str, out: str, texts_n: int) -> None:
    """Under gensim: u_mass and c_v of every run's topics (10 top words each), all in one
    CoherenceModel per measure, so that every model is scored on the same counts."""
    from gensim.corpora import Dictionary
    from gensim.models import CoherenceModel

    z = np.load(data)
    tokens = z["tokens"].tolist()
    n_train = int(z["shape"][0])
    train = load_bows(z, "train", n_train)
    # each training document's tokens, repeated by count (a bag is all c_v and u_mass see)
    texts = [[tokens[i] for i, c in doc for _ in range(c)] for doc in train]
    d = Dictionary([tokens])
    corpus = [d.doc2bow(t) for t in texts]
    paths = runs.split(",")
    tops = []
    for p in paths:
        with np.load(p) as r:
            tops += [[tokens[i] for i in np.argsort(-t)[:10]] for t in r["topics"]]
    per = {}
    for measure, kw in (("u_mass", {"corpus": corpus}),
                        ("c_v", {"texts": texts[:texts_n]})):
        cm = CoherenceModel(topics=tops, dictionary=d, coherence=measure, processes=1,
                            **kw)
        per[measure] = np.array(cm.get_coherence_per_topic(), np.float64)
    k = len(tops) // len(paths)
    # a topic whose words never meet in the texts has no c_v (nan): left out of its mean
    np.savez(out, **{m: np.nanmean(v.reshape(len(paths), k), axis=1) for m, v in per.items()})


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
    ap.add_argument("--seeds", action="store_true",
                    help="round r trains with random_state r; add bounds and coherence")
    ap.add_argument("--coherence-texts", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--judge", default="", help=argparse.SUPPRESS)
    ap.add_argument("--run", default="", help=argparse.SUPPRESS)
    ap.add_argument("--data", default="", help=argparse.SUPPRESS)
    ap.add_argument("--out", default="", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.run:
        run_one(a.run, a.data, a.out, a.topics, a.passes, a.chunksize, a.workers, a.seed)
        return
    if a.judge:
        judge(a.data, a.judge, a.out, a.coherence_texts)
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
        outs: dict[str, list] = {t: [] for t in tools}
        for rnd in range(a.rounds):
            for tool in tools if rnd % 2 == 0 else tools[::-1]:
                py = sys.executable if tool.startswith("engine") else a.peer_python
                out = os.path.join(tmp, f"{tool}-{rnd}.npz")
                subprocess.run([py, os.path.abspath(__file__), "--run", tool, "--data", data,
                                "--out", out, "--topics", str(a.topics), "--passes",
                                str(a.passes), "--chunksize", str(a.chunksize),
                                "--workers", str(a.workers),
                                "--seed", str(rnd + 1 if a.seeds else 1)], check=True)
                with np.load(out) as res:
                    results[tool].append((float(res["seconds"]),
                                          completion_perplexity(res, z), float(res["bound"])))
                outs[tool].append(out)
        scores = {}
        if a.seeds and a.peer_python:
            paths = [p for t in tools for p in outs[t]]
            judged = os.path.join(tmp, "judged.npz")
            subprocess.run([a.peer_python, os.path.abspath(__file__), "--judge",
                            ",".join(paths), "--data", data, "--out", judged,
                            "--coherence-texts", str(a.coherence_texts)], check=True)
            with np.load(judged) as j:
                at = 0
                for t in tools:
                    n = len(outs[t])
                    scores[t] = {m: j[m][at:at + n] for m in ("u_mass", "c_v")}
                    at += n
        base = float(np.median([r[0] for r in results["gensim"]])) if a.peer_python else None

        def spread(v) -> str:
            v = np.asarray(v, np.float64)
            return f"{v.mean():.4f} ± {v.std():.4f}" if a.seeds else f"{np.median(v):.1f}"

        head = "| tool | train s, median (worst) | docs/s | speed vs gensim LdaModel " \
               "| held-out perplexity |"
        if a.seeds:
            head += " own per-word bound | u_mass | c_v |"
        print(head)
        print("|---" * (head.count("|") - 1) + "|")
        for tool, rows in results.items():
            secs = [r[0] for r in rows]
            med = float(np.median(secs))
            ppl = [r[1] for r in rows]
            line = (f"| {tool} | {med:.2f} ({max(secs):.2f}) | "
                    f"{info['train_docs'] * a.passes / med:,.0f} | "
                    f"{f'{base / med:.2f}x' if base else '-'} | "
                    f"{(f'{np.mean(ppl):.1f} ± {np.std(ppl):.1f}') if a.seeds else f'{np.median(ppl):.1f}'} |")
            if a.seeds:
                line += f" {spread([r[2] for r in rows])} |"
                sc = scores.get(tool)
                line += (f" {spread(sc['u_mass'])} | {spread(sc['c_v'])} |" if sc else " | |")
            print(line)


if __name__ == "__main__":
    main()
