#!/usr/bin/env python3
"""A control corpus for scaling runs: the same sentences with the vocabulary folded onto its K
most frequent words (the word of frequency rank r >= K becomes the word of rank r mod K;
words under min_count stay as they are, so the trainer drops them as before).

Every sentence keeps its length and every token stays a token, so a trainer does the same
updates per word, but on a K-word model: with K = 512 and 100 dimensions both weight
matrices take 400 KB, inside one core's L2. Trained with `tools/scaling_ab.py --modes
1,2i`, it shows what N processes of the kernel get from the machine when nothing they touch
leaves their own core's caches; the real corpus in the same rounds shows what the shared
cache and memory add (see docs/benchmarks.md, "Hot rows: why they exist and how they are
sized").

usage: python tools/fold_vocab.py CORPUS OUT K [--min-count 5]
"""
import argparse
import collections
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine.text.corpus import CorpusSource  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus")
    ap.add_argument("out")
    ap.add_argument("k", type=int)
    ap.add_argument("--min-count", type=int, default=5)
    args = ap.parse_args()
    if args.k < 1:
        raise SystemExit(f"K = {args.k}: expected an integer >= 1")
    src = CorpusSource(args.corpus)
    counts = collections.Counter()
    for sentence in src:
        counts.update(sentence)
    ranked = [w for w, n in counts.most_common() if n >= args.min_count]
    fold = {w: ranked[i % args.k] for i, w in enumerate(ranked)}
    tmp = args.out + ".part"
    with open(tmp, "w", encoding="utf-8") as out:
        for sentence in src:
            out.write(" ".join(fold.get(w, w) for w in sentence) + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, args.out)
    print(f"{args.out}: {sum(counts.values()):,} tokens, {len(ranked):,} words folded onto "
          f"{min(args.k, len(ranked)):,}")


if __name__ == "__main__":
    main()
