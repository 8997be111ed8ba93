#!/usr/bin/env python3
"""Nanoseconds per value of the cluster exchange's compiled loops (engine.cluster.rows):
choosing the changed rows, rounding a delta or master values to int8, adding int8 rows
into a master and rebasing a node onto them. Each timed alone on fresh copies, the median
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
    loops = {
        "changed_rows": lambda snap: R.changed_rows(live, snap, 0.0),
        "quantize_delta": lambda snap: R.quantize_delta(live, snap, idx),
        "quantize_values": lambda snap: R.quantize_values(snap, idx),
        "add_into (int8)": lambda snap: R.add_into(snap, idx, values),
        "rebase (int8)": lambda snap: R.rebase(live.copy(), snap, idx, values),
    }
    print(f"{a.rows} rows x {a.dim}, median of {a.repeat}")
    for name, fn in loops.items():
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
        print(f"  {name:16s} {statistics.median(times) / live.size * 1e9:6.2f} ns per value")


if __name__ == "__main__":
    main()
