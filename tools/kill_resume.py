#!/usr/bin/env python3
"""Kill a whole run at a given point and resume it: what a resume keeps and retrains.

Runs `engine run JOB` with checkpoints, SIGKILLs its process group once a progress line
passes PERCENT, then runs `engine run JOB --resume`; the resumed report's `resumed` section
and `trained_words_total` say what was done before, what was retrained and the total.

usage: python tools/kill_resume.py ENGINE JOB OUT_DIR [--at 60] [--every 8500000] [--workers 2]
"""
import argparse
import os
import re
import signal
import subprocess
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("engine")
    ap.add_argument("job")
    ap.add_argument("out")
    ap.add_argument("--at", type=float, default=60.0, help="kill past this %% of training")
    ap.add_argument("--every", default="8500000", help="[output] checkpoint_every")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    sets = ["--set", f"engine.workers={a.workers}",
            "--set", f'output.checkpoint_every="{a.every}"',
            "--set", f'output.dir="{a.out}"', "--set", "output.progress_seconds=1"]
    with open(a.out + ".killed.log", "w") as log:
        p = subprocess.Popen([a.engine, "run", a.job] + sets, stderr=subprocess.PIPE,
                             stdout=log, text=True, start_new_session=True)
        for line in p.stderr:
            log.write(line)
            m = re.search(r"training\s+([\d.]+)%", line)
            if m and float(m.group(1)) >= a.at:
                os.killpg(p.pid, signal.SIGKILL)
                log.write(f"KILLED at {m.group(1)}% {time.strftime('%T')}\n")
                print(f"killed at {m.group(1)}%")
                break
        p.wait()
    r = subprocess.run([a.engine, "run", a.job, "--resume"] + sets, capture_output=True,
                       text=True)
    with open(a.out + ".resumed.log", "w") as fh:
        fh.write(r.stdout + r.stderr)
    print("resume exit", r.returncode, "; report:", os.path.join(a.out, "report.json"))


if __name__ == "__main__":
    main()
