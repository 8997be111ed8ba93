#!/usr/bin/env python3
"""Where each training kernel stands against this machine's limits (a roofline).

For each kernel (skip-gram and CBOW, classic and batched, batched skip-gram with its products in
loops and through BLAS, CBOW two-pass; negative sampling) it
trains one epoch of CORPUS in this process and reports, per trained word:
  - updates (examples) per word, counted by the kernel itself (compute_loss's tally);
  - flops per word: per update the dot products, gradient and row updates the kernel does
    (2*d per dot product and per axpy);
  - bytes per word: distinct 4*d-byte rows each update reads and writes (rows reused within
    one batched update counted once), x2 for read + write;
and from the measured words/s: GFLOP/s and GB/s, against this machine's peaks measured here:
one-thread float32 matrix product (BLAS) for compute, a large array copy for memory bandwidth,
and a random 400-byte-row gather for the rate of cache-missing row accesses.

usage: python tools/roofline.py CORPUS [--dim 100] [--window 5] [--negative 5]
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dataclasses  # noqa: E402

import numpy as np  # noqa: E402

from engine.config import ModelConfig  # noqa: E402
from engine.local.kernel import make_trainer
from engine.local.sources import plan_tasks
from engine.word2vec.state import ModelState  # noqa: E402
from encoded import encoded  # noqa: E402


def peak_flops() -> float:
    """float32 FLOP/s of a 1-thread 1024^3 matrix product (the BLAS the machine has)."""
    from threadpoolctl import threadpool_limits

    a = np.random.default_rng(0).random((1024, 1024), dtype=np.float32)
    with threadpool_limits(1):
        a @ a
        t0 = time.perf_counter()
        for _ in range(4):
            a @ a
        secs = time.perf_counter() - t0
    return 4 * 2 * 1024 ** 3 / secs


def peak_bandwidth() -> float:
    """Bytes/s of copying 256 MB (read + write counted)."""
    src = np.ones(64 << 20, np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    t0 = time.perf_counter()
    for _ in range(4):
        np.copyto(dst, src)
    return 4 * 2 * src.nbytes / (time.perf_counter() - t0)


def random_rows(dim: int) -> float:
    """Random row read-modify-writes per second over a 64 MB matrix (cache-missing)."""
    a = np.ones(((64 << 20) // (4 * dim), dim), np.float32)
    idx = np.random.default_rng(1).integers(0, len(a), size=(200, 4096))
    t0 = time.perf_counter()
    for rows in idx:
        a[rows] += np.float32(1e-7)
    return idx.size / (time.perf_counter() - t0)


def per_update(kind: str, d: int, n: int, ctx: float, batch: int = 8) -> tuple[float, float]:
    """(flops, distinct rows touched) of one update; ctx = mean context rows per center;
    batch: centers per batched CBOW update."""
    outs = n + 1
    if kind == "sg-classic":        # one input row against n + 1 output rows
        return outs * 6 * d + 2 * d, 1 + outs
    if kind.startswith("sg-batched"):   # ctx input rows against one set of n + 1 output rows
        # (through BLAS the rows are also copied into blocks and back: not counted)
        return outs * 6 * d + 2 * d, 1 + outs / ctx
    if kind == "cbow-batched":      # batch centers: their windows' union of input rows (about
        # batch + ctx positions), their own words' rows and one shared set of n noise rows;
        # the input gradients summed per position (at most ctx adds each) and written once
        return (ctx * d + outs * 6 * d + ctx * d + (batch + ctx) / batch * d,
                (batch + ctx) / batch + (batch + n) / batch)
    # CBOW: sum of ctx rows, n + 1 dot/gradient/updates, the gradient added to ctx rows
    return ctx * d + outs * 6 * d + ctx * 2 * d, ctx + outs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus")
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--window", type=int, default=5)
    ap.add_argument("--negative", type=int, default=5)
    args = ap.parse_args()
    base = ModelConfig(vector_size=args.dim, window=args.window, negative=args.negative,
                       compute_loss=True)
    flops_peak, bw_peak, rows_peak = peak_flops(), peak_bandwidth(), random_rows(args.dim)
    print(f"machine: {flops_peak / 1e9:.1f} GFLOP/s (1-thread float32 matmul), "
          f"{bw_peak / 1e9:.1f} GB/s (copy), {rows_peak / 1e6:.1f} M random rows/s "
          f"({4 * args.dim} B each)")
    print(f"{'kernel':<15} {'words/s':>10} {'upd/word':>8} {'flop/word':>9} {'B/word':>7} "
          f"{'GFLOP/s':>8} {'%peak':>6} {'GB/s':>6} {'%bw':>5} {'Mrows/s':>8} {'x rand':>6}")
    with encoded(args.corpus, base.min_count) as (vocab, stream, chunks):
        ctx = 1.0
        for kind in ("sg-classic", "sg-batched", "sg-batched-blas", "cbow", "cbow-2pass",
                     "cbow-batched"):
            cfg = dataclasses.replace(base, sg=int(kind.startswith("sg")))
            state = ModelState(cfg, vocab)
            settings = dataclasses.replace(state.kernel_settings,
                                           batched=int("batched" in kind),
                                           two_pass=int(kind == "cbow-2pass"),
                                           blas=int(kind.endswith("blas")))
            trainer = make_trainer(state.kernel_arrays(), settings)
            words = examples = trained = 0
            t0 = time.perf_counter()
            for t in plan_tasks(stream, 1, cfg.alpha, cfg.min_alpha, cfg.seed):
                trained += trainer.train(chunks[t.chunk], t.seed, t.alpha0, t.alpha1)
                examples += trainer.last_examples
                words += t.raw_words
            secs = time.perf_counter() - t0
            if kind.startswith("sg"):   # SG: one update per context row, so the mean context
                ctx = examples / max(trained, 1)             # rows per kept word
            flops, rows = per_update(kind, args.dim, args.negative, ctx, settings.cbow_batch)
            upd_per_raw = examples / words
            f_word, rows_word = flops * upd_per_raw, rows * upd_per_raw
            b_word = rows_word * 4 * args.dim * 2
            rate = words / secs
            print(f"{kind:<15} {rate:>10,.0f} {upd_per_raw:>8.2f} {f_word:>9,.0f} "
                  f"{b_word:>7,.0f} {rate * f_word / 1e9:>8.2f} "
                  f"{100 * rate * f_word / flops_peak:>5.1f}% {rate * b_word / 1e9:>6.2f} "
                  f"{100 * rate * b_word / bw_peak:>4.1f}% {rate * rows_word / 1e6:>8.1f} "
                  f"{rate * rows_word / rows_peak:>6.2f}")
    print("per raw corpus word. GB/s counts every touched row as if it came from memory; "
          "'x rand': rows touched per second over the rate of random (cache-missing) row "
          "updates alone: above 1, most touches hit cache (frequent words' rows)")


if __name__ == "__main__":
    main()
