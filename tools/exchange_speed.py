#!/usr/bin/env python3
"""Nanoseconds per value of the cluster exchange's compiled loops (engine.cluster.rows):
choosing the changed rows, rounding a delta (int8 or four bits) or master values to int8,
choosing and rounding in one pass, adding int8 or four-bit rows into a master and rebasing
a node onto them. Each timed alone on fresh copies, the median
of `--repeat` runs.

usage: python tools/exchange_speed.py [--rows 36000] [--dim 100] [--repeat 7]
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine.cluster import rows as R  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=36000)
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    live = rng.standard_normal((a.rows, a.dim)).astype(np.float32)
    snap0 = live + 0.01 * rng.standard_normal(live.shape).astype(np.float32)
    idx = np.arange(a.rows, dtype=np.int32)
    values = R.quantize_values(live, idx)
    four = R.quantize_delta(live, snap0.copy(), idx, "|u1")      # (every build has it)
    loops = {
        "changed_rows": lambda snap: R.changed_rows(live, snap, 0.0),
        "quantize_delta": lambda snap: R.quantize_delta(live, snap, idx),
        "quantize_delta (four bits)": lambda snap: R.quantize_delta(live, snap, idx, "|u1"),
        "changed_delta (four bits: choosing and rounding in one pass)":
            lambda snap: R.changed_delta(live, snap, "|u1"),
        "changed_delta (float32: a last flush)": lambda snap: R.changed_delta(live, snap, "<f4"),
        "quantize_values": lambda snap: R.quantize_values(snap, idx),
        "add_into (int8)": lambda snap: R.add_into(snap, idx, values),
        "add_into (four bits)": lambda snap: R.add_into(snap, idx, four),
        "rebase (int8)": lambda snap: R.rebase(live.copy(), snap, idx, values),
    }
    print(f"{a.rows} rows x {a.dim}, median of {a.repeat}")
    for name, fn in loops.items():
        try:
            fn(snap0.copy())
        except AttributeError:               # an older build (run it there to compare)
            print(f"  {name:60s}   (not in this build)")
            continue
        times = []
        for _ in range(a.repeat):
            snap = snap0.copy()
            extra = 0.0
            if name.startswith("rebase"):          # its live copy is not the loop's
                t = time.perf_counter()
                live.copy()
                extra = time.perf_counter() - t
            t = time.perf_counter()
            fn(snap)
            times.append(time.perf_counter() - t - extra)
        print(f"  {name:60s} {statistics.median(times) / live.size * 1e9:6.2f} ns per value")


if __name__ == "__main__":
    main()
