#!/usr/bin/env python3
"""Peak memory of a command's whole process tree, per phase, measured from outside.

Runs COMMAND, samples the proportional set size (PSS: a shared page split between the
processes that map it, so shared memory counts once) of its process and every descendant
every --interval seconds, and keeps the peak of the sum. The command's output lines (stdout
and stderr, passed through) mark the phases: each --phase NAME=REGEX starts phase NAME at
the first line that matches REGEX (in the order given; the first phase, "start", runs from
launch). Both engine and gensim are measured this way, so their figures compare.

usage: python tools/tree_memory.py [--interval 0.05] [--phase NAME=REGEX ...]
           [--weights-mb MB] [--json OUT] -- COMMAND [ARGS...]

Prints one line per phase (peak PSS, seconds) and the whole run's peak; with --weights-mb,
the peak over the model's weights too. Exits with the command's exit code.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time

import psutil

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from engine.runtime.memory import tree_pss_mb  # noqa: E402  (PSS of a tree, shared once)


class Phases:
    def __init__(self, marks: list[tuple[str, re.Pattern]]):
        self.marks = marks
        self.lock = threading.Lock()
        self.t0 = time.monotonic()
        self.rows = [{"phase": "start", "peak_mb": 0.0, "began": 0.0}]

    def line(self, text: str) -> None:
        with self.lock:
            while self.marks and self.marks[0][1].search(text):
                name, _ = self.marks.pop(0)
                self.rows.append({"phase": name, "peak_mb": 0.0,
                                  "began": round(time.monotonic() - self.t0, 2)})

    def sample(self, mb: float) -> None:
        with self.lock:
            row = self.rows[-1]
            row["peak_mb"] = max(row["peak_mb"], round(mb, 1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--interval", type=float, default=0.05)
    ap.add_argument("--phase", action="append", default=[], metavar="NAME=REGEX")
    ap.add_argument("--weights-mb", type=float, default=0.0)
    ap.add_argument("--json", default="")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not cmd:
        ap.error("no command given (put it after --)")
    marks = []
    for spec in a.phase:
        name, sep, rx = spec.partition("=")
        if not sep or not name:
            ap.error(f"--phase {spec!r}: expected NAME=REGEX")
        marks.append((name, re.compile(rx)))
    phases = Phases(marks)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    root = psutil.Process(proc.pid)
    done = threading.Event()

    def sampler():
        while not done.is_set():
            phases.sample(tree_pss_mb(root))
            done.wait(a.interval)

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    for text in proc.stdout:
        sys.stdout.write(text)
        phases.line(text)
    code = proc.wait()
    done.set()
    thread.join()
    seconds = round(time.monotonic() - phases.t0, 2)
    peak = max(r["peak_mb"] for r in phases.rows)
    print(f"\n{'phase':<12} {'from s':>8} {'peak PSS MB':>12}", file=sys.stderr)
    for r in phases.rows:
        print(f"{r['phase']:<12} {r['began']:>8} {r['peak_mb']:>12,.1f}", file=sys.stderr)
    over = f" ({peak - a.weights_mb:+,.1f} over the weights)" if a.weights_mb else ""
    print(f"{'whole run':<12} {seconds:>8} {peak:>12,.1f}{over}", file=sys.stderr)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"command": cmd, "exit": code, "seconds": seconds, "peak_mb": peak,
                       "weights_mb": a.weights_mb or None, "phases": phases.rows}, fh,
                      indent=2)
    sys.exit(code)


if __name__ == "__main__":
    main()
