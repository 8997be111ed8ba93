#!/usr/bin/env python3
"""Why can two training processes run slower than one? Controlled A/B of the ways the
same chunks can be trained, in interleaved rounds:

  1      one trainer in this process
  Np     N spawned processes on shared-memory weights (the local engine's LocalSession;
         processes started and ready before the clock starts), e.g. 2p, 16p
  Nt     N threads of this process, each with its own Trainer on the same weights (the
         kernels run without the GIL): no /dev/shm, no second address space
  Ni     N spawned processes, each training its own copy of the weights on 1/N of the
         chunks: nothing shared at all (the control for sharing: if Ni slows down in the same
         rounds as Np, the cause is the machine, not the rows the processes share)
  Nc     N spawned processes, each training its own copy in its own memory, with no session
         (as `engine run` trains with one process): Ni without the local engine's machinery
         (the variant key copies_shm=1 puts each copy in shared memory, as a session's are)

The variant key shm_huge="never" | "always" remounts /dev/shm with that `huge=` option
before the run, and variants without it run on the mount's own option (root only; put
back at a normal end or an exception, not after SIGTERM or SIGKILL): whether the
shared weights live on transparent huge pages (2 MiB) or on 4 KiB pages.

each under the variants given ([model] keys such as `compute_loss=false`, or the kernel's own
`prefetch_ahead=0`, `batched=1`, the session's `hot_words=256` / `hot_words="auto"` (sized
as `engine run` sizes them) and `sync_words=N`). Every round trains a fresh model on the same
id stream for one epoch, so rates are comparable within the run. Before every two-way run
the time of a moved cache line is measured (engine.bench.machine.line_transfer_ns).

usage: python tools/scaling_ab.py CORPUS [--rounds 8] [--modes 1,2p,2t,2i,16p,16i] [--one-first]
                                  [--variants base prefetch_ahead=0 hot_words=256] [--json F]
"""
import argparse
import json
import os
import statistics
import sys
import threading
import time
import tomllib

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dataclasses  # noqa: E402

from engine.bench.machine import line_transfer_ns, machine_checks  # noqa: E402
from engine.config import ModelConfig  # noqa: E402
from engine.local.sources import ListSource, plan_tasks
from engine.local.session import LocalSession
from engine.local.kernel import make_trainer
from engine.word2vec.state import ModelState  # noqa: E402
from encoded import encoded  # noqa: E402


def variant(text: str) -> dict:
    """'base' -> {}; 'prefetch_ahead=0,hot_words=256' -> {...} (TOML values)."""
    return {} if text == "base" else tomllib.loads("\n".join(text.split(",")))


MODEL_KEYS = {f.name for f in dataclasses.fields(ModelConfig)}
SESSION_KEYS = ("hot_words", "sync_words", "hot_tiers", "copies_shm", "shm_huge")


def shm_huge_mode() -> str:
    """/dev/shm's tmpfs `huge=` mount option (never when not given)."""
    with open("/proc/mounts") as fh:
        for line in fh:
            dev, where, kind, opts = line.split()[:4]
            if where == "/dev/shm":
                return next((o[5:] for o in opts.split(",") if o.startswith("huge=")), "never")
    return "never"


def set_shm_huge(mode: str) -> None:
    """Remount /dev/shm with huge=MODE (root; a host setting, restored at the end): the
    variant key shm_huge="always" gives the shared weights 2 MiB pages, "never" 4 KiB ones
    (as most hosts do)."""
    import subprocess

    if shm_huge_mode() != mode:
        subprocess.run(["mount", "-o", f"remount,huge={mode}", "/dev/shm"], check=True)


def hot(over: dict, state=None, processes: int = 2) -> tuple:
    """The variant's hot-row settings (hot words, sync every, tiers), as make_trainer and
    LocalSession take them after their other arguments. hot_words = "auto" sizes them as
    `engine run` does (engine.jobs.run.hot_rows) for `processes` processes."""
    words, sync = over.get("hot_words", 0), over.get("sync_words", 1024)
    tiers = over.get("hot_tiers", 0)
    if words == "auto":
        from engine.config import EngineConfig
        from engine.jobs.train import hot_rows

        words, sync, tiers = hot_rows(EngineConfig(
            workers=processes, hot_words="auto", sync_words=over.get("sync_words", 0),
            hot_tiers=over.get("hot_tiers", "auto")), state)
    return words, sync, tiers


def fresh(cfg, vocab, over: dict, with_state: bool = False):
    """A fresh model's arrays and kernel settings under a variant: [model] keys (window,
    compute_loss, ...) change the model, kernel-only keys (batched, prefetch_ahead) the
    settings; hot_words and sync_words are the session's."""
    model = {k: v for k, v in over.items() if k in MODEL_KEYS}
    state = ModelState(dataclasses.replace(cfg, **model), vocab)
    settings = dataclasses.replace(state.kernel_settings, **{
        k: v for k, v in over.items() if k not in MODEL_KEYS and k not in SESSION_KEYS})
    if with_state:
        return state.kernel_arrays(), settings, state
    return state.kernel_arrays(), settings


def run_one(cfg, vocab, stream, chunks, tasks, over) -> float:
    arrays, settings, state = fresh(cfg, vocab, over, with_state=True)
    trainer = make_trainer(arrays, settings, *hot(over, state, 1))
    t0 = time.perf_counter()
    for t in tasks:
        trainer.train(chunks[t.chunk], t.seed, t.alpha0, t.alpha1)
    trainer.sync()                          # hot rows: the last merge
    return time.perf_counter() - t0


def run_threads(cfg, vocab, stream, chunks, tasks, over, n=2) -> float:
    arrays, settings, state = fresh(cfg, vocab, over, with_state=True)
    trainers = [make_trainer(arrays, settings, *hot(over, state, n)) for _ in range(n)]
    lock = threading.Lock()
    todo = list(reversed(tasks))

    def work(trainer):
        while True:
            with lock:
                if not todo:
                    break
                t = todo.pop()
            trainer.train(chunks[t.chunk], t.seed, t.alpha0, t.alpha1)
        trainer.sync()

    return timed_threads([threading.Thread(target=work, args=(tr,)) for tr in trainers])


def timed_threads(threads) -> float:
    """Seconds from starting the threads to the last one's end."""
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return time.perf_counter() - t0


class UntilReady(ListSource):
    """A source that hands out `tasks` and ends only once every process of the session has
    said it is ready (so the clock starts with all N running, not with the first few)."""

    def __init__(self, session, tasks):
        super().__init__(tasks)
        self.session = session

    def exhausted(self) -> bool:       # (a process that died is no longer waited for)
        return not self.pending and self.session.alive <= self.session.ready


def run_procs(cfg, vocab, stream, chunks, tasks, over, n=2) -> float:
    arrays, settings, state = fresh(cfg, vocab, over, with_state=True)
    with LocalSession(arrays, settings, stream.path, stream.max_chunk_ids, n,
                      *hot(over, state, n)) as session:
        session.run(UntilReady(session, tasks[:n]))   # all started and ready: not timed
        t0 = time.perf_counter()
        session.run(ListSource(tasks[n:]))
        return time.perf_counter() - t0


def run_independent(cfg, vocab, stream, chunks, tasks, over, n=2) -> float:
    sessions = []
    try:
        for _ in range(n):
            arrays, settings, state = fresh(cfg, vocab, over, with_state=True)
            sessions.append(LocalSession(arrays, settings, stream.path, stream.max_chunk_ids,
                                         1, *hot(over, state, 1)))
        for i, session in enumerate(sessions):
            session.run(UntilReady(session, tasks[i:i + 1]))   # started, ready: not timed
        return timed_threads([threading.Thread(target=session.run,
                                               args=(ListSource(tasks[n + i::n]),))
                              for i, session in enumerate(sessions)])
    finally:
        for session in sessions:
            session.close()


def _copy_main(cfg, vocab, over, ids_path, max_ids, tasks, go, ready) -> None:
    """One of run_copies' processes: its own model, trained in this process as `engine run`
    trains with one process (no session, no shared memory), once `go` is set."""
    from engine.word2vec.idstream import ChunkReader

    arrays, settings = fresh(cfg, vocab, over)
    shared = None
    if over.get("copies_shm"):          # the same copy, but in shared memory as a session's
        from engine.local.kernel import TABLES, WEIGHTS
        from engine.runtime.shm import SharedArrays

        shared = SharedArrays.create({k: arrays[k] for k in WEIGHTS + TABLES})
        arrays = dict(arrays, **{k: shared[k] for k in WEIGHTS + TABLES})
    trainer = make_trainer(arrays, settings)
    reader = ChunkReader(ids_path, max_ids)
    ready.release()
    go.wait()
    for t in tasks:
        trainer.train(reader.read(t.start, t.end), t.seed, t.alpha0, t.alpha1)
    reader.close()
    if shared is not None:
        del trainer, arrays
        shared.unlink()


def run_copies(cfg, vocab, stream, chunks, tasks, over, n=2) -> float:
    """n spawned processes, each training its own copy of the weights in its own memory on
    1/n of the chunks (as Ni, but without the local engine's session and shared memory):
    seconds from all of them ready to the last one done."""
    from multiprocessing import get_context

    ctx = get_context("spawn")
    go, ready = ctx.Event(), ctx.Semaphore(0)
    procs = [ctx.Process(target=_copy_main, args=(cfg, vocab, over, stream.path,
                                                  stream.max_chunk_ids, tasks[n + i::n], go,
                                                  ready)) for i in range(n)]
    try:
        for proc in procs:
            proc.start()
        for _ in procs:
            ready.acquire()
        t0 = time.perf_counter()
        go.set()
        for proc in procs:
            proc.join()
        return time.perf_counter() - t0
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join()


KINDS = {"t": run_threads, "p": run_procs, "i": run_independent, "c": run_copies}


def parse_mode(mode: str) -> tuple:
    """'1' -> (run_one, 1); 'Np' / 'Nt' / 'Ni' -> (that runner, N)."""
    if mode == "1":
        return run_one, 1
    n, kind = mode[:-1], mode[-1:]
    if kind not in KINDS or not n.isdigit() or int(n) < 1:
        raise SystemExit(f"--modes: {mode!r} is not 1, Np, Nt or Ni (N processes/threads)")
    return KINDS[kind], int(n)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus")
    ap.add_argument("--sg", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--modes", default="1,2p,2t")
    ap.add_argument("--variants", nargs="*", default=["base"])
    ap.add_argument("--json")
    ap.add_argument("--one-first", action="store_true",
                    help="run mode 1 for the first variant only (variants that change only "
                         "what processes share), the ratios all against it")
    args = ap.parse_args()
    cfg = ModelConfig(sg=args.sg)
    modes = args.modes.split(",")
    runners = {m: parse_mode(m) for m in modes}
    rows = {(m, v): [] for v in args.variants for m in modes}
    checks = []
    lines = {}
    huge_before = None
    if any("shm_huge" in variant(v) for v in args.variants):
        import atexit

        huge_before = shm_huge_mode()                       # each variant runs on its own
        atexit.register(set_shm_huge, huge_before)          # option; the mount's, after
    with encoded(args.corpus, cfg.min_count) as (vocab, stream, chunks):
        tasks = plan_tasks(stream, 1, cfg.alpha, cfg.min_alpha, cfg.seed)
        # Np, Ni and Nc leave the first N chunks out (Np, Ni: trained untimed, every process
        # started and ready)
        words = {m: sum(t.raw_words for t in
                        (tasks[n:] if runners[m][0] in (run_procs, run_independent, run_copies)
                         else tasks))
                 for m, (_, n) in runners.items()}
        most = max(n for _, n in runners.values())
        for r in range(args.rounds):
            cpu, mem, _ = machine_checks(max(2, most))
            checks.append((cpu, mem))
            print(f"round {r + 1} machine: CPU check {cpu:.2f} of {max(2, most)}, memory check "
                  f"{mem:.2f} of {max(2, most)}", flush=True)
            for v in args.variants:
                for m in modes:
                    if args.one_first and m == "1" and v != args.variants[0]:
                        continue
                    if huge_before is not None:
                        set_shm_huge(variant(v).get("shm_huge", huge_before))
                    line = line_transfer_ns() if m != "1" else float("nan")
                    run, n = runners[m]
                    secs = (run(cfg, vocab, stream, chunks, tasks, variant(v)) if run is run_one
                            else run(cfg, vocab, stream, chunks, tasks, variant(v), n))
                    rate = words[m] / secs
                    rows[(m, v)].append(rate)
                    lines.setdefault((m, v), []).append(line)
                    print(f"round {r + 1} {v:>18} {m:>3}: {rate:>12,.0f} words/s"
                          + (f"  (a moved line: {line:.0f} ns just before)" if m != "1" else ""),
                          flush=True)
    print(f"\n{'variant':>18} {'mode':>4} {'median':>12} {'worst':>12} {'x one (median)':>15} "
          f"{'x one (worst)':>14}")
    for v in args.variants:
        one = rows.get(("1", v)) or rows[(modes[0], v)]
        if args.one_first:
            one = rows.get(("1", args.variants[0])) or one
        for m in modes:
            got = rows[(m, v)]
            if not got:
                continue
            print(f"{v:>18} {m:>4} {statistics.median(got):>12,.0f} {min(got):>12,.0f} "
                  f"{statistics.median(got) / statistics.median(one):>15.2f} "
                  f"{min(got) / min(one):>14.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rates": {f"{m} {v}": r for (m, v), r in rows.items()},
                       "machine_checks": checks,
                       "line_ns": {f"{m} {v}": x for (m, v), x in lines.items()}}, fh, indent=1)


if __name__ == "__main__":
    main()
