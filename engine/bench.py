"""`engine bench`: train one job once per process count and print the table users know from
the word2vec literature (words/s, speedup, efficiency, peak RAM, analogy accuracy), with
peers (gensim, gensim corpus_file, fastText) trained on the same settings in the same run.

Each run is a fresh subprocess (`engine run`, or peers_runner.py under the peer's Python), so
timings and peak memory of one run do not leak into the next.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from .config import load_job, job_from_dict
from .corpus import CorpusSource, open_binary
from .errors import ConfigError, EngineError

RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers_runner.py")
PEER_MODULES = {"gensim": "gensim", "gensim-corpusfile": "gensim", "fasttext": "fasttext"}


def add_arguments(p) -> None:
    p.add_argument("job", nargs="?", default=None,
                   help="job file (default: the built-in default job on the bundled sample)")
    p.add_argument("--threads", default="1..2", metavar="A..B|A,B,C",
                   help="process counts to run, e.g. 1..8 or 1,2,4 (default 1..2)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--peers", default="", help="comma list: gensim, gensim-corpusfile, fasttext")
    p.add_argument("--peer-python", default=os.environ.get("ENGINE_PEER_PYTHON", ""),
                   help="Python with the peers installed (default: $ENGINE_PEER_PYTHON, "
                        "else this Python)")
    p.add_argument("--json", default="", metavar="F", help="write all rows as JSON")
    p.add_argument("--plot", default="", metavar="F.png",
                   help="words/s and speedup against processes (.png, .svg or .pdf; needs "
                        "matplotlib)")
    p.add_argument("--keep", default="", metavar="DIR", help="keep each run's outputs here")
    p.add_argument("--nodes", default="", metavar="A..B|A,B,C",
                   help="also train on a cluster of 1..N `engine worker`s started on this "
                        "machine (loopback), beside the local rows: what the cluster costs")
    p.add_argument("--node-workers", type=int, default=1, metavar="P",
                   help="training processes per node with --nodes (default 1)")
    p.add_argument("--share-nothing", action="store_true",
                   help="also run, for every process count P >= 2, P one-process `engine run`s "
                        "at once, each training its own model on the whole corpus: what the "
                        "machine gives P copies of the kernel that share nothing. engine's "
                        "P-process row over it is what sharing the weights (and starting P "
                        "training processes) costs")
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="run every row N times, in N interleaved rounds (so a slow spell of a "
                        "shared machine hits all rows alike); the table gives each row's "
                        "median and worst run; all runs' words/s go to --json (default 1)")


def parse_threads(text: str) -> list[int]:
    try:
        if ".." in text:
            a, b = (int(x) for x in text.split("..", 1))
            counts = list(range(a, b + 1))
        else:
            counts = [int(x) for x in text.split(",")]
    except ValueError:
        raise ConfigError(f"--threads {text}: expected A..B or a comma list of integers") from None
    if not counts or min(counts) < 1:
        raise ConfigError(f"--threads {text}: expected counts >= 1")
    return counts


def plain_corpus(path: str, tmp: str) -> str:
    """A single uncompressed file with the corpus (peers' corpus_file mode needs one)."""
    source = CorpusSource(path)
    if len(source.files) == 1 and os.path.splitext(path)[1].lower() not in (".gz", ".bz2", ".xz"):
        return path
    out = os.path.join(tmp, "corpus.txt")
    with open(out, "wb") as dst:
        for f in source.files:
            with open_binary(f) as src:
                shutil.copyfileobj(src, dst, 1 << 20)
            dst.write(b"\n")
    return out


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


def write_job(job: dict, path: str) -> None:
    with open(path, "w") as fh:
        for section, values in job.items():
            fh.write(f"[{section}]\n")
            for k, v in values.items():
                fh.write(f"{k} = {_toml_value(v)}\n")


def engine_command() -> tuple[list[str], dict]:
    """Command and environment that run `engine` from this very package in a subprocess,
    whatever the current folder holds (-P: the cwd is not put on sys.path)."""
    import engine

    env = dict(os.environ)
    here = os.path.dirname(os.path.dirname(os.path.abspath(engine.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH", "")) if p)
    return [sys.executable, "-P", "-m", "engine"], env


def job_command(job: dict, folder: str) -> tuple[list[str], dict]:
    """The job written to folder/job.toml, and the command and environment of its `engine
    run` in a fresh process."""
    path = os.path.join(folder, "job.toml")
    write_job(job, path)
    cmd, env = engine_command()
    return cmd + ["run", path, "--quiet"], env


def engine_job(corpus: str, model: dict, workers: int, out: str, evaluate: dict | None = None,
               engine: dict | None = None, cluster: dict | None = None) -> dict:
    """A bench row's job: the corpus, the model, the engine settings with `workers`."""
    job = {"corpus": {"path": corpus}, "model": dict(model),
           "engine": dict(engine or {}, workers=workers), "output": {"dir": out},
           "evaluate": dict(evaluate or {})}
    if cluster:
        job["cluster"] = dict(cluster)
    return job


def run_job_process(job: dict, folder: str, what: str) -> dict:
    """`engine run` of the job (written to folder/job.toml) in a fresh process; its
    report.json (from the job's [output] dir)."""
    cmd, env = job_command(job, folder)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise EngineError(f"{what} failed:\n{proc.stderr[-3000:]}")
    with open(os.path.join(job["output"]["dir"], "report.json")) as fh:
        return json.load(fh)


def run_engine(corpus: str, model: dict, workers: int, out: str, evaluate: dict | None = None,
               engine: dict | None = None, cluster: dict | None = None) -> dict:
    """One `engine run` in a fresh process; returns the row (from its report.json)."""
    os.makedirs(out, exist_ok=True)
    job = engine_job(corpus, model, workers, out, evaluate, engine, cluster)
    rep = run_job_process(job, out, f"engine run with {workers} process(es)")
    row = {"tool": "engine", "threads": workers, "training_seconds": rep["training_seconds"],
           "words_per_sec": rep["words_per_sec"], "peak_mb": rep["peak_rss_mb"],
           "train_peak_mb": rep["train_peak_rss_mb"], "vocab_size": rep["vocab_size"],
           "corpus_words": rep["corpus_words"], "prepare_seconds":
               rep["vocab_seconds"] + rep["encode_seconds"], "vectors": os.path.join(out, "vectors.bin")}
    if rep.get("cluster"):
        c = rep["cluster"]
        row["cluster"] = {k: c[k] for k in ("nodes_used", "exchanges", "bytes_to_nodes",
                                             "bytes_from_nodes", "dropped", "hot_rows")}
        row["threads"] = rep["workers"]
    if rep.get("hot_rows"):
        row["hot_rows"] = rep["hot_rows"]
    for f, r in rep.get("evaluation", {}).get("analogies", {}).items():
        row["analogy_accuracy"] = r["accuracy"]
    for f, r in rep.get("evaluation", {}).get("similarity", {}).items():
        row["wordsim_spearman"] = r["spearman"]
    return row


SHARE_NOTHING = "engine, nothing shared"


def run_share_nothing(corpus: str, model: dict, p: int, out: str,
                      engine: dict | None = None) -> dict:
    """p one-process `engine run`s started at once, each on its own model and the whole
    corpus; the row's words/s are all their trained words over the union of their training
    windows (report.json's training_window), so a run that trains while another still
    prepares makes the figure lower, never higher. (With the job's own [engine] cache_dir
    the copies share it; engine's p-process row, run just before, has filled it.)"""
    procs, logs = [], []
    try:
        for i in range(p):
            folder = os.path.join(out, f"copy-{i + 1}")
            os.makedirs(folder, exist_ok=True)
            cmd, env = job_command(engine_job(corpus, model, 1, folder, {}, engine), folder)
            logs.append(open(os.path.join(folder, "stderr.log"), "w+"))
            procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=logs[-1],
                                          env=env))
        while any(proc.poll() is None for proc in procs):
            if any(proc.returncode for proc in procs):   # one failed: do not wait for the rest
                break
            time.sleep(0.2)
        for i, proc in enumerate(procs):
            if proc.returncode:
                logs[i].seek(0)
                raise EngineError(f"{SHARE_NOTHING}, {p} runs: run {i + 1} failed:\n"
                                  f"{logs[i].read()[-3000:]}")
        reports = []
        for i in range(p):
            with open(os.path.join(out, f"copy-{i + 1}", "report.json")) as fh:
                reports.append(json.load(fh))
    finally:
        for proc in procs:                         # ask, then make them stop
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in logs:
            log.close()
    windows = [r["training_window"] for r in reports]
    span = max(end for _, end in windows) - min(start for start, _ in windows)
    overlap = min(end for _, end in windows) - max(start for start, _ in windows)
    return {"tool": SHARE_NOTHING, "threads": p, "training_seconds": span,
            "words_per_sec": sum(r["trained_words"] for r in reports) / max(span, 1e-9),
            "peak_mb": sum(r["peak_rss_mb"] for r in reports),
            "overlap": round(max(overlap, 0.0) / max(span, 1e-9), 3),
            "corpus_words": reports[0]["corpus_words"]}


def peer_available(python: str, peer: str) -> str:
    """'' if `peer` can run under `python`, else the reason it cannot."""
    module = PEER_MODULES.get(peer)
    if module is None:
        return f"unknown peer {peer!r} (known: {', '.join(PEER_MODULES)})"
    if not python or not os.path.exists(python):
        return f"no peer Python at {python!r}"
    ok = subprocess.run([python, "-c", f"import {module}"], capture_output=True)
    return "" if ok.returncode == 0 else f"{module} is not installed for {python}"


def run_peer(python: str, peer: str, corpus: str, model: dict, threads: int, vectors: str,
             corpus_words: int | None = None) -> dict:
    proc = subprocess.run([python, RUNNER, peer, corpus, json.dumps(model), str(threads), vectors],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise EngineError(f"peer {peer} failed:\n{proc.stderr[-3000:]}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    words = corpus_words or r["corpus_words"]
    return {"tool": peer, "threads": threads, "training_seconds": r["training_seconds"],
            "words_per_sec": words * model["epochs"] / r["training_seconds"],
            "peak_mb": r["max_rss_mb"], "vocab_size": r["vocab_size"], "vectors": vectors,
            "prepare_seconds": r["vocab_seconds"]}


def judge(python: str, vectors: str) -> dict:
    """Score vectors with ../shared/tools/judge.py (gensim's evaluators) under `python`."""
    script = os.environ.get("ENGINE_JUDGE") or os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "tools",
        "judge.py")
    proc = subprocess.run([python, script, vectors], capture_output=True, text=True)
    if proc.returncode != 0:
        raise EngineError(f"judge failed on {vectors}:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def evaluate_vectors(path: str, analogies: list[str], restrict: int) -> float | None:
    from .vectors import KeyedVectors

    if not analogies:
        return None
    kv = KeyedVectors.load_word2vec_format(path, binary=True)
    return round(kv.evaluate_word_analogies(analogies[0], restrict_vocab=restrict)[0], 4)


def summary_run(runs: list[dict]) -> dict:
    """A row from its runs: the median run (its memory, accuracy, checks), with the median
    and the worst words/s of all runs and every run's figure beside it."""
    ordered = sorted(runs, key=lambda r: r["words_per_sec"])
    row = dict(ordered[(len(ordered) - 1) // 2])
    rates = [r["words_per_sec"] for r in runs]
    row["runs_words_per_sec"] = [round(x, 1) for x in rates]
    row["words_per_sec"] = statistics.median(rates)
    row["worst_words_per_sec"] = min(rates)
    return row


def _spin(n: int) -> float:
    t0 = time.perf_counter()
    x = 1.0
    for _ in range(n):
        x = x * 1.0000001 + 1e-9
    return time.perf_counter() - t0


def cpu_capacity(p: int, n: int = 2_000_000) -> float:
    """How many cores' worth of pure arithmetic p processes get right now: p equal loops run
    at once, each timed against the same loop run alone. On a quiet machine with p free
    cores it reads about p; on a shared VM whose host is busy it reads less, and a row
    measured then is slower for reasons that are not ours (or the peer's)."""
    from multiprocessing import get_context

    if p < 2:
        return 1.0                                           # one loop against itself
    with get_context("spawn").Pool(p) as pool:
        pool.map(_spin, [1000] * p, chunksize=1)             # every worker up and warm
        solo = min(pool.apply(_spin, (n,)) for _ in range(2))
        together = pool.map(_spin, [n] * p, chunksize=1)
    return round(sum(solo / t for t in together), 2)


def _rows(n: int, seed: int = 0) -> float:
    """n read-modify-writes of 1024 random 400-byte rows of a 64 MB matrix: past every cache,
    as the kernels' accesses to the weights are."""
    import numpy as np

    rng = np.random.default_rng(seed + os.getpid())
    a = np.ones((160_000, 100), np.float32)
    idx = rng.integers(0, a.shape[0], size=(n, 1024))
    t0 = time.perf_counter()
    for rows in idx:
        a[rows] += np.float32(1e-7)
    return time.perf_counter() - t0


def memory_capacity(p: int, n: int = 400) -> float:
    """How many processes' worth of random row updates p processes get at once, against one
    alone (as cpu_capacity, for memory): a machine whose memory system is shared with busy
    neighbours reads well under p here while the CPU check reads p, and memory-bound work
    (ours: the weights are tens of MB read at random) then cannot scale."""
    from multiprocessing import get_context

    if p < 2:
        return 1.0
    with get_context("spawn").Pool(p) as pool:
        pool.map(_rows, [2] * p, chunksize=1)
        solo = min(pool.apply(_rows, (n,)) for _ in range(2))
        together = pool.map(_rows, [n] * p, chunksize=1)
    return round(sum(solo / t for t in together), 2)


def _pingpong(spec: dict, role: int, cpu, rounds: int) -> float:
    """One side of line_transfer_ns (in a spawned process): seconds for `rounds` turns."""
    from ._kernels import pingpong
    from .shm import SharedArrays

    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    with SharedArrays.attach(spec) as shared:
        line = shared["line"]
        warm = 2000
        if pingpong(line, role, warm, 1 << 31) < warm:
            return float("nan")
        t0 = time.perf_counter()
        done = pingpong(line[8:], role, rounds, 1 << 31)      # a fresh line, both warm
        secs = time.perf_counter() - t0
        del line
        return secs if done == rounds else float("nan")


def line_transfer_ns(rounds: int = 200_000) -> float:
    """Nanoseconds to move one written cache line from one core to another, right now: two
    processes, on two different CPUs where the affinity allows, take turns writing one line
    of shared memory. What rows shared by training processes cost per write that the other
    process reads next: tens of ns between cores that share a cache, a hundred and more
    between dies or sockets (or a VM whose host moved its vCPUs apart). NaN if one side
    stalled."""
    from multiprocessing import get_context

    import numpy as np

    from .shm import SharedArrays

    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:                                   # not Linux: no pinning
        cpus = []
    pins = cpus[:2] if len(cpus) >= 2 else [None, None]
    with SharedArrays.create_empty({"line": ((16,), np.int64)}) as shared:
        with get_context("spawn").Pool(2) as pool:
            pool.map(_spin, [1000] * 2, chunksize=1)         # both workers up first
            secs = pool.starmap(_pingpong, [(shared.spec, role, pins[role], rounds)
                                            for role in (0, 1)], chunksize=1)
    return round(max(secs) / (2 * rounds) * 1e9, 1)


def machine_checks(p: int) -> tuple[float, float, float | None]:
    """(cpu_capacity, memory_capacity, line_transfer_ns) for p processes, right now (the
    line only for p >= 2: what a row written by one process costs the next)."""
    return cpu_capacity(p), memory_capacity(p), line_transfer_ns() if p >= 2 else None


def format_table(rows: list[dict], cores: int) -> str:
    lines = ["| tool | processes | words/s (median) | worst | speedup (median) | worst | "
             "efficiency | peak RAM MB | analogy | runs | CPU check | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for tool in dict.fromkeys(r["tool"] for r in rows):
        mine = [r for r in rows if r["tool"] == tool]
        base = _base_row(rows, tool)
        for r in mine:
            # speedup over the tool's base row (_base_row), per process of that row
            speed = r["words_per_sec"] / base["words_per_sec"] * base["threads"]
            worst = r.get("worst_words_per_sec", r["words_per_sec"])
            worst_speed = worst / base.get("worst_words_per_sec",
                                           base["words_per_sec"]) * base["threads"]
            acc = r.get("analogy_accuracy")
            note = "oversubscribed" if r["threads"] > cores else ""
            lines.append(f"| {tool} | {r['threads']} | {r['words_per_sec']:,.0f} | "
                         f"{worst:,.0f} | {speed:.2f}x | {worst_speed:.2f}x | "
                         f"{speed / r['threads']:.2f} | {r['peak_mb']:.0f} | "
                         f"{'' if acc is None else f'{acc:.4f}'} | {_spread(r)} | "
                         f"{_capacity(r)} | {note} |")
    return "\n".join(lines)


def _base_row(rows: list[dict], tool: str) -> dict:
    """The row a tool's speedups are over: its fewest-process row; for the nothing-shared
    copies, engine's (the same kernel in one process)."""
    mine = [r for r in rows if r["tool"] == tool]
    if tool == SHARE_NOTHING:
        mine = [r for r in rows if r["tool"] == "engine"] or mine
    return min(mine, key=lambda r: r["threads"])


def _record_checks(row: dict, before, after) -> None:
    row["cpu_capacity"] = [before[0], after[0]]
    row["memory_capacity"] = [before[1], after[1]]
    if before[2] is not None:
        row["line_ns"] = [before[2], after[2]]


def _capacity(row: dict) -> str:
    cap, mem = row.get("cpu_capacity"), row.get("memory_capacity")
    text = f"{cap[0]:.2f}/{cap[1]:.2f} of {row['threads']}" if cap else ""
    if mem:
        text += f" (memory {mem[0]:.2f}/{mem[1]:.2f})"
    line = row.get("line_ns")
    if line:
        text += f" (moved line {line[0]:.0f}/{line[1]:.0f} ns)"
    return text


def _spread(row: dict) -> str:
    runs = row.get("runs_words_per_sec") or [row["words_per_sec"]]
    if len(runs) == 1:
        return "1"
    return f"{len(runs)} ({min(runs) / max(runs):.2f}-1.00)"


def ratios(rows: list[dict]) -> list[str]:
    out = []
    ours = {r["threads"]: r for r in rows if r["tool"] == "engine"}
    for r in rows:
        if r["tool"] == SHARE_NOTHING and r["threads"] in ours:
            out.append(f"engine / {SHARE_NOTHING} at {r['threads']} process(es): "
                       f"{ours[r['threads']]['words_per_sec'] / r['words_per_sec']:.2f}x words/s "
                       f"(what sharing the weights and starting {r['threads']} training processes "
                       f"cost or give; the copies' training overlapped {r['overlap']:.0%} of "
                       f"their span)")
        elif r["tool"] != "engine" and r["threads"] in ours:
            out.append(f"engine / {r['tool']} at {r['threads']} process(es): "
                       f"{ours[r['threads']]['words_per_sec'] / r['words_per_sec']:.2f}x words/s")
    return out


PLOT_FORMATS = ("png", "svg", "pdf")


def check_plot_path(path: str) -> None:
    """Before any run: --plot names a format we write and matplotlib is there to draw it
    (found after an hour of benchmarks, either would lose the picture)."""
    from .report import check_matplotlib

    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if ext not in PLOT_FORMATS:
        raise ConfigError(f"--plot {path}: expected a file name ending in "
                          + ", ".join(f".{f}" for f in PLOT_FORMATS))
    check_matplotlib()


def scaling_lines(rows: list[dict]) -> dict[str, dict]:
    """Per tool, its rows by process count: processes, words/s, speedup over the tool's
    base row (_base_row: its fewest-process row, engine's for the nothing-shared copies;
    per process of that row, as in the table) and the ideal words/s of linear scaling from
    that row."""
    out = {}
    for tool in dict.fromkeys(r["tool"] for r in rows):
        mine = sorted((r for r in rows if r["tool"] == tool), key=lambda r: r["threads"])
        first = _base_row(rows, tool)
        base = first["words_per_sec"] / first["threads"]
        out[tool] = {"processes": [r["threads"] for r in mine],
                     "words_per_sec": [r["words_per_sec"] for r in mine],
                     "speedup": [r["words_per_sec"] / base for r in mine],
                     "ideal": [base * r["threads"] for r in mine]}
    return out


def bench_figure(rows: list[dict], title: str, cores: int | None = None):
    """Words/s (left) and speedup (right) against processes, both axes from 0, with every
    tool's ideal linear scaling dashed and the cores available marked."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    from .report import legend_below, new_figure, short_number, style_axis

    fig, (speed, gain) = new_figure(2, width=11, height=4.8)
    lines = scaling_lines(rows)
    top = max(max(r["processes"]) for r in lines.values())
    for i, (tool, line) in enumerate(lines.items()):
        colour = f"C{i % 10}"
        speed.plot(line["processes"], line["words_per_sec"], "o-", color=colour, label=tool)
        speed.plot([0] + line["processes"], [0] + line["ideal"], "--", color=colour, alpha=0.6,
                   linewidth=1)
        gain.plot(line["processes"], line["speedup"], "o-", color=colour, label=tool)
        gain.annotate(f"{line['speedup'][-1]:.2f}x", (line["processes"][-1],
                      line["speedup"][-1]), xytext=(5, -12), textcoords="offset points",
                      fontsize="small", color=colour,         # the headline: most processes
                      bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none"})
    gain.plot([0, top], [0, top], "--", color="0.4", linewidth=1)
    style_axis(speed, "processes / threads", "words/s (raw corpus words)",
               "Training speed", yfmt=short_number)
    style_axis(gain, "processes / threads", "speedup (x the rate of 1 process)", "Speedup")
    for ax in (speed, gain):
        if cores:
            ax.axvline(cores, color="0.6", linestyle=":", linewidth=1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(0, top + 0.5)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.05)
    extra = [Line2D([], [], color="0.4", linestyle="--", linewidth=1,
                    label="dashed: ideal linear scaling")]
    if cores:
        extra.append(Line2D([], [], color="0.6", linestyle=":", label=f"{cores} CPU(s) here"))
    legend_below(fig, speed.get_legend_handles_labels()[0] + extra)
    fig.suptitle(title, fontsize="medium")
    return fig


def plot(rows: list[dict], path: str, title: str = "", cores: int | None = None) -> str:
    """Draw the bench figure into `path` (written whole or not at all)."""
    from .atomic import atomic_file

    fig = bench_figure(rows, title, cores)
    with atomic_file(path, "wb") as fh:
        fig.savefig(fh, format=os.path.splitext(path)[1].lower().lstrip("."), dpi=110)
    return f"plot written to {path}"


class LocalWorkers:
    """`engine worker` processes on this machine (loopback), for `bench --nodes`."""

    def __init__(self, n: int, processes: int):
        cmd, env = engine_command()
        self.procs, self.addresses = [], []
        try:
            for i in range(n):
                proc = subprocess.Popen(cmd + ["worker", "--port", "0", "--workers",
                                               str(processes), "--name", f"bench{i + 1}"],
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        text=True, env=env, start_new_session=True)
                self.procs.append(proc)
                line = proc.stdout.readline()
                if "ready on" not in line:
                    raise EngineError(f"engine worker {i + 1} did not start")
                self.addresses.append(line.rsplit(" ", 1)[1].strip())
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()


def run_bench(args) -> int:
    import psutil

    counts = parse_threads(args.threads)
    if args.plot:
        check_plot_path(args.plot)
    job = load_job(args.job, args.set) if args.job else job_from_dict({}, args.set, "bench")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else psutil.cpu_count()
    model = dataclasses.asdict(job.model)
    evaluate = dataclasses.asdict(job.evaluate)
    evaluate["neighbours"] = []
    engine = {k: v for k, v in dataclasses.asdict(job.engine).items() if k != "workers"}
    notes: list[str] = []
    runs: dict[tuple, list[dict]] = {}
    if args.repeat < 1:
        raise ConfigError(f"--repeat {args.repeat}: expected an integer >= 1")
    if args.share_nothing and job.lsi is not None:
        raise ConfigError("--share-nothing: word2vec jobs only (an [lsi] job's bench times "
                          "its own splits of processes and BLAS threads)")
    keep = args.keep or tempfile.mkdtemp(prefix="engine-bench-")
    if job.lsi is not None:                    # document vectors: engine.bench_lsi
        from .bench_lsi import run_lsi_bench

        try:
            return run_lsi_bench(args, job, keep, cores)
        finally:
            if not args.keep:
                shutil.rmtree(keep, ignore_errors=True)
    node_counts, workers = [], None
    try:
        corpus = job.corpus.path
        if not corpus:
            from .sample import sample_corpus_path

            corpus = sample_corpus_path()
        python = args.peer_python or sys.executable
        peers = []
        for peer in (x.strip() for x in args.peers.split(",") if x.strip()):
            why = peer_available(python, peer)
            if why:
                notes.append(f"peer {peer} skipped: {why}")
                print(notes[-1], flush=True)
            else:
                peers.append(peer)
        plain, words = None, None
        node_counts = parse_threads(args.nodes) if args.nodes else []
        workers = LocalWorkers(max(node_counts), args.node_workers) if node_counts else None
        for rnd in range(args.repeat):
            tag = f"-r{rnd + 1}" if args.repeat > 1 else ""
            for p in counts:
                before = machine_checks(p)
                row = run_engine(corpus, model, p, os.path.join(keep, f"engine-{p}{tag}"),
                                 evaluate, engine)
                _record_checks(row, before, machine_checks(p))
                runs.setdefault(("engine", p), []).append(row)
                words = row["corpus_words"]
                print(f"engine, {p} process(es): {row['words_per_sec']:,.0f} words/s, peak "
                      f"{row['peak_mb']:.0f} MB; CPU check {_capacity(row)}", flush=True)
                if args.share_nothing and p >= 2:
                    before = machine_checks(p)
                    row = run_share_nothing(corpus, model, p,
                                            os.path.join(keep, f"alone-{p}{tag}"), engine)
                    _record_checks(row, before, machine_checks(p))
                    runs.setdefault((SHARE_NOTHING, p), []).append(row)
                    print(f"{SHARE_NOTHING}, {p} copies: {row['words_per_sec']:,.0f} words/s "
                          f"(training overlapped {row['overlap']:.0%}); CPU check "
                          f"{_capacity(row)}", flush=True)
            for n in node_counts:
                p = n * args.node_workers
                before = machine_checks(p)
                row = run_engine(corpus, model, 1, os.path.join(keep, f"cluster-{n}{tag}"),
                                 evaluate, engine, {"nodes": workers.addresses[:n]})
                row["tool"] = f"engine cluster ({args.node_workers}/node)"
                _record_checks(row, before, machine_checks(p))
                runs.setdefault((row["tool"], p), []).append(row)
                print(f"engine cluster, {n} node(s) x {args.node_workers}: "
                      f"{row['words_per_sec']:,.0f} words/s, dispatcher peak "
                      f"{row['peak_mb']:.0f} MB; CPU check {_capacity(row)}", flush=True)
            if peers and plain is None:
                tmp = os.path.join(keep, "peer-corpus")
                os.makedirs(tmp, exist_ok=True)
                plain = plain_corpus(corpus, tmp)
            for peer in peers:
                for p in counts:
                    vec = os.path.join(keep, f"{peer}-{p}{tag}.bin")
                    before = machine_checks(p)
                    row = run_peer(python, peer, plain, model, p, vec, words)
                    _record_checks(row, before, machine_checks(p))
                    row["analogy_accuracy"] = evaluate_vectors(vec, job.evaluate.analogies,
                                                               job.evaluate.restrict_vocab)
                    runs.setdefault((peer, p), []).append(row)
                    print(f"{peer}, {p} thread(s): {row['words_per_sec']:,.0f} words/s, peak "
                          f"{row['peak_mb']:.0f} MB; CPU check {_capacity(row)}", flush=True)
    finally:
        if workers is not None:
            workers.close()
        if not args.keep:
            shutil.rmtree(keep, ignore_errors=True)
    rows = [summary_run(r) for r in runs.values()]
    settings = ", ".join(f"{k}={model[k]}" for k in ("sg", "hs", "negative", "vector_size",
                                                      "window", "sample", "epochs", "alpha"))
    print()
    print(f"corpus: {corpus}; {cores} CPU(s) available; model: {settings}")
    print(format_table(rows, cores))
    for line in ratios(rows) + notes:
        print(line)
    if args.plot:
        size = f" ({words:,} words)" if words else ""
        title = f"engine bench: {os.path.basename(corpus)}{size}, {cores} CPU(s)\n{settings}"
        print(plot(rows, args.plot, title, cores))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "notes": notes, "cores": cores, "model": model,
                       "repeat": args.repeat}, fh, indent=2)
    return 0
