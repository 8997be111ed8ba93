#!/usr/bin/env python3
"""Words/s of the training kernel alone, in this process (no spawn, no I/O in the loop):
encode a corpus once, then time `epochs` passes of Trainer.train over its chunks.

usage: python tools/kernel_speed.py CORPUS [--sg 1] [--epochs 1] [--repeat 3] [--shm]
Use it to compare kernel variants on the same machine in one sitting (ratios, not absolutes).
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


from engine.config import ModelConfig  # noqa: E402
from engine.local.kernel import make_trainer
from engine.local.sources import plan_tasks
from engine.runtime.shm import SharedArrays  # noqa: E402
from engine.word2vec.state import ModelState  # noqa: E402
from encoded import encoded  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus")
    ap.add_argument("--sg", type=int, default=1)
    ap.add_argument("--hs", type=int, default=0)
    ap.add_argument("--negative", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--shm", action="store_true",
                    help="train on weights in multiprocessing.shared_memory (as the worker "
                         "processes do) instead of private numpy arrays")
    args = ap.parse_args()
    cfg = ModelConfig(sg=args.sg, hs=args.hs, negative=args.negative)
    with encoded(args.corpus, cfg.min_count) as (vocab, stream, chunks):
        best = 0.0
        for _ in range(args.repeat):
            state = ModelState(cfg, vocab)
            arrays = state.kernel_arrays()
            shared = None
            if args.shm:
                shared = SharedArrays.create(arrays)
                arrays = shared.arrays
            trainer = make_trainer(arrays, state.kernel_settings)
            tasks = plan_tasks(stream, args.epochs, cfg.alpha, cfg.min_alpha, cfg.seed)
            t0 = time.perf_counter()
            for t in tasks:
                trainer.train(chunks[t.task_id % len(chunks)], t.seed, t.alpha0, t.alpha1)
            secs = time.perf_counter() - t0
            del trainer, arrays
            if shared is not None:
                shared.unlink()
            rate = stream.raw_words * args.epochs / secs
            best = max(best, rate)
            print(f"{rate:,.0f} words/s ({secs:.2f} s)", flush=True)
        print(f"best {best:,.0f} words/s; vocab {len(vocab)}; sg={args.sg} hs={args.hs} "
              f"negative={args.negative}")


if __name__ == "__main__":
    main()
