"""What every `engine bench` runner shares: jobs written as TOML and run in fresh processes,
peers found, thread lists parsed, loopback workers."""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess

from ..text.corpus import CorpusSource, open_binary
from ..runtime.procs import engine_command
from ..errors import ConfigError, EngineError

RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers_runner.py")
KEYED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "keyed_pyro.py")
SHARE_NOTHING = "engine, nothing shared"
PEER_MODULES = {"gensim": "gensim", "gensim-corpusfile": "gensim", "fasttext": "fasttext"}


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



def peer_available(python: str, peer: str) -> str:
    """'' if `peer` can run under `python`, else the reason it cannot."""
    module = PEER_MODULES.get(peer)
    if module is None:
        return f"unknown peer {peer!r} (known: {', '.join(PEER_MODULES)})"
    if not python or not os.path.exists(python):
        return f"no peer Python at {python!r}"
    ok = subprocess.run([python, "-c", f"import {module}"], capture_output=True)
    return "" if ok.returncode == 0 else f"{module} is not installed for {python}"



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


def choose_peers(names: str, known: dict, what: str, python: str) -> tuple[list[str], list[str]]:
    """The peers of a documents bench (`--peers a,b`) that can run: (peers, notes), a
    note printed for each one skipped (unknown, or gensim missing under `python`)."""
    peers, notes = [], []
    for peer in (x.strip() for x in names.split(",") if x.strip()):
        why = "" if peer in known else \
            f"unknown {what} peer {peer!r} (known: {', '.join(known)})"
        why = why or peer_available(python, "gensim")
        if why:
            notes.append(f"peer {peer} skipped: {why}")
            print(notes[-1], flush=True)
        else:
            peers.append(peer)
    return peers, notes


def median_run(runs: list[dict], key: str) -> dict:
    """A row from its runs: the median run by `key` (seconds), with every run's figure
    (runs_KEY) and the worst (worst_KEY)."""
    ordered = sorted(runs, key=lambda r: r[key])
    row = dict(ordered[(len(ordered) - 1) // 2])
    times = [r[key] for r in runs]
    row[f"runs_{key}"] = times
    row[key] = statistics.median(times)
    row[f"worst_{key}"] = max(times)
    return row


def print_rows(header: str, table: str, notes: list[str], json_path: str | None,
               saved: dict) -> int:
    """A documents bench's end: its header, table and notes printed; `saved` (with the
    notes) written to --json when asked."""
    print()
    print(header)
    print(table)
    for line in notes:
        print(line)
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(dict(saved, notes=notes), fh, indent=2)
    return 0

