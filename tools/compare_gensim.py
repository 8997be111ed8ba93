#!/usr/bin/env python3
"""Single-process speed, peak memory and quality of engine against gensim 4.4 (workers=1)
on the same corpus and settings, both run here in one go, one after the other.

usage: python tools/compare_gensim.py $CORPUS --peer-python $PEER_PYTHON
           [--analogies $QUESTIONS] [--similarity $WORDSIM] [--judge SCRIPT]
           [--configs sg,cbow] [--threads 1] [--out results.json] [--set model.key=value ...]

Quality is scored the same way for both tools: with --judge SCRIPT (default $ENGINE_JUDGE),
`PEER_PYTHON SCRIPT VECTORS` for each model, which prints a JSON object with
analogy_accuracy and wordsim353_spearman as its last line (a script that runs gensim's own
evaluators, say); without one, with engine's own evaluators on --analogies and --similarity
(figures without a file are left out). gensim gets the corpus uncompressed (decompressed
once to a temp file if needed); engine reads the same file.
"""
import argparse
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from engine.bench.word2vec import judge, run_engine, run_peer
from engine.bench.common import plain_corpus

RESTRICT_VOCAB = 30_000                 # engine's [evaluate] restrict_vocab default

CONFIGS = {
    "sg": {"sg": 1, "alpha": 0.025},
    "cbow": {"sg": 0, "alpha": 0.025},
}


def own_scores(vectors: str, analogies: str, similarity: str) -> dict:
    """analogy_accuracy and wordsim353_spearman by engine's evaluators, on the files given
    (None for a figure without its file)."""
    from engine.vectors.keyedvectors import KeyedVectors

    kv = KeyedVectors.load_word2vec_format(vectors, binary=True)
    out = {"analogy_accuracy": None, "wordsim353_spearman": None}
    if analogies:
        out["analogy_accuracy"] = round(
            kv.evaluate_word_analogies(analogies, restrict_vocab=RESTRICT_VOCAB)[0], 4)
    if similarity:
        out["wordsim353_spearman"] = round(
            float(kv.evaluate_word_pairs(similarity, restrict_vocab=RESTRICT_VOCAB)[1][0]), 4)
    return out


def _fmt(x) -> str:
    return "" if x is None else f"{x:.4f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("corpus")
    ap.add_argument("--peer-python", required=True)
    ap.add_argument("--configs", default="sg,cbow")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--peers", default="gensim")
    ap.add_argument("--out", default="compare.json")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--judge", default=os.environ.get("ENGINE_JUDGE", ""), metavar="SCRIPT",
                    help="judge script run under --peer-python (default $ENGINE_JUDGE)")
    ap.add_argument("--analogies", default="", metavar="FILE",
                    help="analogy questions for engine's evaluators (without --judge)")
    ap.add_argument("--similarity", default="", metavar="FILE",
                    help="word pairs with human scores for engine's evaluators (without --judge)")
    args = ap.parse_args()
    for flag, path in (("--judge", args.judge), ("--analogies", args.analogies),
                       ("--similarity", args.similarity)):
        if path and not os.path.isfile(path):       # before any training, not after it
            ap.error(f"{flag} {path}: file not found")
    if not (args.judge or args.analogies or args.similarity):
        print("no judge script and no evaluation files: no quality figures; give --judge "
              "SCRIPT, or --analogies FILE and --similarity FILE", flush=True)

    def score(vectors: str) -> dict:
        if args.judge:
            return judge(args.peer_python, vectors, args.judge)
        return own_scores(vectors, args.analogies, args.similarity)

    base = {"vector_size": 100, "window": 5, "negative": 5, "hs": 0, "sample": 1e-3,
            "min_count": 5, "epochs": 5, "min_alpha": 0.0001, "cbow_mean": 1,
            "ns_exponent": 0.75, "max_final_vocab": 0, "seed": 1}
    rows = []
    with tempfile.TemporaryDirectory(prefix="compare-") as tmp:
        corpus = plain_corpus(args.corpus, tmp)
        for name in args.configs.split(","):
            settings = dict(base, **CONFIGS[name])
            for extra in args.set:
                key, val = extra.split("=", 1)
                settings[key.split(".", 1)[1]] = json.loads(val)
            out = os.path.join(tmp, f"engine-{name}")
            r = run_engine(corpus, settings, args.threads, out)
            r["words_per_sec"] = float(r["words_per_sec"])
            r.update(score(os.path.join(out, "vectors.bin")), config=name)
            rows.append(r)
            print(json.dumps(r), flush=True)
            for peer in args.peers.split(","):
                vec = os.path.join(tmp, f"{peer}-{name}.bin")
                p = run_peer(args.peer_python, peer, corpus, settings, args.threads, vec)
                p.update(score(vec), config=name)
                rows.append(p)
                print(json.dumps(p), flush=True)
    with open(args.out, "w") as fh:
        json.dump(rows, fh, indent=2)
    print()
    print("| config | tool | threads | train s | words/s | ratio | peak MB | analogy | WS353 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.configs.split(","):
        ours = next(r for r in rows if r["config"] == name and r["tool"] == "engine")
        for r in (x for x in rows if x["config"] == name):
            ratio = ours["words_per_sec"] / r["words_per_sec"]
            print(f"| {name} | {r['tool']} | {r['threads']} | {r['training_seconds']:.1f} | "
                  f"{r['words_per_sec']:,.0f} | {'' if r is ours else f'{ratio:.2f}x'} | "
                  f"{r['peak_mb']:.0f} | {_fmt(r.get('analogy_accuracy'))} | "
                  f"{_fmt(r.get('wordsim353_spearman'))} |")


if __name__ == "__main__":
    main()
