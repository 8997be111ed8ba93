#!/usr/bin/env python3
"""Words/s of the training kernel alone, in this process (no spawn, no I/O in the loop):
encode a corpus once, then time `epochs` passes of Trainer.train over its chunks.

usage: python tools/kernel_speed.py CORPUS [--sg 1] [--epochs 1] [--repeat 3] [--shm]
                                     [--variants KEY=VALUE[,KEY=VALUE] ...]
Use it to compare kernel variants on the same machine in one sitting (ratios, not absolutes):
with --variants (e.g. `compute_loss=false compute_loss=true`) the variants run in interleaved
rounds and each one's median, worst and ratio to the first are printed.
"""
import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
import tomllib

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


from engine.config import ModelConfig  # noqa: E402
from engine.corpus import CorpusSource  # noqa: E402
from engine.idstream import ChunkReader  # noqa: E402
from engine.local import make_trainer, plan_tasks  # noqa: E402
from engine.prepare import build_vocab, encode_corpus  # noqa: E402
from engine.shm import SharedArrays  # noqa: E402
from engine.state import ModelState  # noqa: E402


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
    ap.add_argument("--variants", nargs="*", default=[],
                    help="[model] settings per variant, e.g. compute_loss=false cbow_mean=0")
    args = ap.parse_args()
    src = CorpusSource(args.corpus)
    cfg = ModelConfig(sg=args.sg, hs=args.hs, negative=args.negative)
    variants = [(v, dataclasses.replace(cfg, **_settings(v))) for v in args.variants] or \
        [("as given", cfg)]
    vocab = build_vocab(src, cfg.min_count, workers=2)
    with tempfile.TemporaryDirectory() as tmp:
        stream = encode_corpus(src, vocab, tmp, 20_000, workers=2)
        reader = ChunkReader(stream.path, stream.max_chunk_ids)
        chunks = [reader.read(s, e).copy() for s, e, _ in stream.chunks]
        rates = {name: [] for name, _ in variants}
        for _ in range(args.repeat):
            for name, variant in variants:
                rate = _time_once(variant, vocab, stream, chunks, args)
                rates[name].append(rate)
                print(f"{name}: {rate:,.0f} words/s", flush=True)
        first = statistics.median(rates[variants[0][0]])
        for name, got in rates.items():
            med = statistics.median(got)
            print(f"{name}: median {med:,.0f}  worst {min(got):,.0f}  best {max(got):,.0f} "
                  f"words/s  ({med / first:.3f}x the first)")
        print(f"vocab {len(vocab)}; sg={args.sg} hs={args.hs} negative={args.negative}; "
              f"{args.repeat} interleaved rounds")


def _time_once(cfg, vocab, stream, chunks, args) -> float:
    """Words/s of one fresh model trained `args.epochs` epochs over the chunks."""
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
    return stream.raw_words * args.epochs / secs


def _settings(text: str) -> dict:
    """'compute_loss=false,window=10' -> {'compute_loss': False, 'window': 10} (TOML values)"""
    return tomllib.loads("\n".join(text.split(",")))


if __name__ == "__main__":
    main()
