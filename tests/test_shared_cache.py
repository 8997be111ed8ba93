"""Jobs that share an [engine] cache_dir: one at a time. The folder is locked (fcntl) for
the job that uses it; a second job is refused in one line naming the holder, and a holder
that is SIGKILLed leaves nothing locked."""
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import planted_corpus
from engine.errors import ConfigError
from engine.jobs.corpus import LOCK_FILE, lock_folder, scratch_folder
from engine.runtime.procs import engine_command


def _corpus(path, sentences):
    _, sents = planted_corpus(sentences=sentences)
    path.write_text("\n".join(" ".join(s) for s in sents) + "\n")


def _job(tmp_path, name, corpus, cache, min_count, epochs):
    job = tmp_path / f"{name}.toml"
    job.write_text(f'[corpus]\npath = "{corpus}"\n[model]\nmin_count = {min_count}\n'
                   f'epochs = {epochs}\nvector_size = 16\n[engine]\nworkers = 1\n'
                   f'cache_dir = "{cache}"\n[output]\ndir = "{tmp_path / name}"\n')
    return job


def _wait_for_holder(cache, pid, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if f"process {pid} " in (cache / LOCK_FILE).read_text():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError("the first job never locked the cache folder")


def test_a_folder_is_held_by_one_holder_at_a_time(tmp_path):
    with scratch_folder(str(tmp_path)) as folder:
        assert folder == str(tmp_path)
        with pytest.raises(ConfigError, match=rf"cache_dir {tmp_path} is in use by the job "
                                              rf"of process {os.getpid()} "):
            scratch_folder(str(tmp_path)).__enter__()
    with scratch_folder(str(tmp_path)):          # released at the end of the block
        pass


def test_two_jobs_on_one_cache_dir_with_different_vocabularies(tmp_path):
    corpus, cache = tmp_path / "c.txt", tmp_path / "cache"
    _corpus(corpus, 20000)
    cache.mkdir()
    cmd, env = engine_command()
    first = subprocess.Popen(cmd + ["run", str(_job(tmp_path, "a", corpus, cache, 1, 60)),
                                    "--quiet"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    try:
        _wait_for_holder(cache, first.pid)
        second = subprocess.run(cmd + ["run", str(_job(tmp_path, "b", corpus, cache, 5, 1)),
                                       "--quiet"], capture_output=True, text=True, env=env,
                                timeout=120)
        out, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert second.returncode != 0
    lines = [ln for ln in second.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"in use by the job of process {first.pid}" in lines[0], \
        second.stderr
    assert not (tmp_path / "b" / "vectors.bin").exists()
    assert first.returncode == 0, err                      # the first job was not disturbed
    assert (tmp_path / "a" / "vectors.bin").exists()


def test_a_killed_holder_leaves_the_folder_free(tmp_path):
    code = ("import sys, time; from engine.jobs.corpus import lock_folder; "
            "lock_folder(sys.argv[1], 'cache'); print('held', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=f"process {holder.pid} "):
            lock_folder(str(tmp_path), "cache")
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(30)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    os.close(lock_folder(str(tmp_path), "cache"))          # the kernel freed it
