#!/usr/bin/env python3
"""gensim's Word2Vec on a text file (one sentence per line), each phase announced on its
own line ("phase: vocab", "phase: train", "phase: save", "phase: done") so that
tools/tree_memory.py can measure each phase's peak memory. Run it with a Python that has
gensim (a separate environment: gensim is a peer, not a dependency).

usage: PEER_PYTHON tools/gensim_w2v_phases.py CORPUS OUT.bin [--size 300] [--min-count 1]
           [--epochs 1] [--workers 2] [--sg 1] [--negative 5] [--window 5]
"""
import argparse
import logging
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus")
    ap.add_argument("out")
    ap.add_argument("--size", type=int, default=300)
    ap.add_argument("--min-count", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--sg", type=int, default=1)
    ap.add_argument("--negative", type=int, default=5)
    ap.add_argument("--window", type=int, default=5)
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from gensim.models import Word2Vec

    def phase(name):
        print(f"phase: {name}", flush=True)

    model = Word2Vec(vector_size=a.size, min_count=a.min_count, sg=a.sg, negative=a.negative,
                     window=a.window, workers=a.workers, epochs=a.epochs)
    phase("vocab")
    model.build_vocab(corpus_file=a.corpus)
    phase("train")
    model.train(corpus_file=a.corpus, total_examples=model.corpus_count,
                total_words=model.corpus_total_words, epochs=a.epochs)
    phase("save")
    model.wv.save_word2vec_format(a.out, binary=True)
    phase("done")
    print(f"vocabulary {len(model.wv)} words, {a.size} dims", file=sys.stderr)


if __name__ == "__main__":
    main()
