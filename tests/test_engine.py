"""Lifecycle of the multi-process engine: normal end, a failing worker, a killed worker,
Ctrl-C and SIGTERM. After each: no orphan processes, no segment left in /dev/shm."""
import dataclasses
import os
import random
import signal
import subprocess
import time

import numpy as np
import psutil
import pytest
from conftest import segments_of

from engine.config import ModelConfig
from engine.errors import WorkerError
from engine.local.engine import LocalEngine
from engine.local.sources import plan_tasks
from engine.local.workers import Standby
from engine.runtime.procs import engine_command
from engine.word2vec.idstream import ChunkReader
from engine.word2vec.prepare import build_vocab_iterable, encode_iterable
from engine.word2vec.state import ModelState


def _segments(*pids):
    """This test process's segments, and those of the processes it started (`pids`)."""
    return segments_of(os.getpid(), *pids)


def _trainers(proc=None):
    """Live training processes (spawned children) of `proc` (default: this process)."""
    out = []
    for k in (proc or psutil.Process()).children():
        try:
            if k.status() != psutil.STATUS_ZOMBIE and "spawn_main" in " ".join(k.cmdline()):
                out.append(k)
        except psutil.Error:
            pass
    return out


def _no_children():
    """No process of ours is left but multiprocessing's resource tracker (it lives as long
    as this test process, by design)."""
    kids = psutil.Process().children(recursive=True)
    left = []
    for k in kids:
        try:
            if "resource_tracker" not in " ".join(k.cmdline()):
                left.append(k)
        except psutil.Error:
            pass
    return left == []


def _setup(tmp_path, planted, epochs=3):
    _, sents = planted
    cfg = ModelConfig(sg=1, vector_size=16, min_count=1, epochs=epochs)
    vocab = build_vocab_iterable(sents, min_count=1)
    stream = encode_iterable(sents, vocab, str(tmp_path / "ids"), chunk_words=1500)
    state = ModelState(cfg, vocab)
    tasks = plan_tasks(stream, epochs, cfg.alpha, cfg.min_alpha, cfg.seed)
    return state, stream, tasks


def test_normal_run_trains_every_chunk_once(tmp_path, planted):
    before = _segments()
    state, stream, tasks = _setup(tmp_path, planted)
    syn0 = state.syn0.copy()
    stats = LocalEngine(workers=2, show_progress=False).train(
        state.kernel_arrays(), state.kernel_settings, stream, tasks)
    assert stats.raw_words == 3 * stream.raw_words
    assert not (state.syn0 == syn0).all()              # weights copied back from shm
    assert 0 < stats.dispatch_seconds < stats.seconds   # the parent's dispatching thread
    assert _segments() == before and _no_children()


def test_the_processes_train_the_models_own_shared_arrays_with_no_copy(tmp_path, planted):
    """A state made in shared memory: the session copies in only the tables, the processes
    train the very arrays the model holds (they learn), nothing is copied back, and the
    model keeps its arrays after training; their names go when the state does."""
    import gc

    from conftest import topic_separation
    from engine.config import EngineConfig
    from engine.jobs.train import train_state
    from engine.local.kernel import TABLES

    before = _segments()
    _, sents = planted
    topics, _ = planted
    cfg = ModelConfig(sg=1, vector_size=16, min_count=1, epochs=3)
    vocab = build_vocab_iterable(sents, min_count=1)
    stream = encode_iterable(sents, vocab, str(tmp_path / "ids"), chunk_words=1500)
    state = ModelState(cfg, vocab, shared=True)
    names = {name for name, _, _ in state.segments.spec.values()}
    assert state.syn0 is state.segments["syn0"] and state.syn1neg is state.segments["syn1neg"]
    ref = np.empty_like(state.syn0)
    from engine.word2vec.state import init_vectors
    init_vectors(ref, cfg.seed)
    assert np.array_equal(state.syn0, ref)            # the same start as an unshared model
    syn0, start = state.syn0, state.syn0.copy()
    made = []
    from engine.local import session as session_module
    real = session_module.SharedArrays.create

    def create(arrays):
        made.append(sorted(arrays))
        return real(arrays)

    session_module.SharedArrays.create = create
    try:
        train_state(state, stream, dataclasses.replace(EngineConfig(), workers=2), 3,
                    cfg.alpha, cfg.min_alpha, show_progress=False)
    finally:
        session_module.SharedArrays.create = real
    assert made == [sorted(TABLES)]                    # the tables only: no weights copied
    assert state.syn0 is syn0 and not np.array_equal(state.syn0, start)   # trained in place
    assert topic_separation(state.keyed_vectors(), topics) > 0.2        # and learned
    assert _no_children()
    left = {os.path.basename(p) for p in _segments() - before}
    assert left == {n.lstrip("/") for n in names}      # the model's own, while it lives
    kept = state.syn0
    del state, syn0
    gc.collect()
    assert _segments() == before                       # names gone with the state ...
    assert np.isfinite(kept).all()                     # ... the memory with its last view


def test_share_moves_a_models_weights_into_shared_memory_once():
    vocab = build_vocab_iterable([["a", "b", "c"]] * 5, min_count=1)
    state = ModelState(ModelConfig(vector_size=8, min_count=1), vocab)
    assert state.segments is None
    values = state.syn0.copy()
    spec = state.share()
    assert set(spec) == {"syn0", "syn1neg", "syn1"}
    assert state.syn0 is state.segments["syn0"] and np.array_equal(state.syn0, values)
    assert state.share() is spec                       # once
    state.segments.unlink()


def test_worker_exception_reaches_user_with_traceback(tmp_path, planted, monkeypatch):
    before = _segments()
    state, stream, tasks = _setup(tmp_path, planted)
    os.truncate(stream.path, 100)                       # workers will hit a short read
    from engine.errors import EngineError

    with pytest.raises(EngineError, match="the id stream is damaged"):     # found up front
        LocalEngine(workers=2, show_progress=False).train(
            state.kernel_arrays(), state.kernel_settings, stream, tasks)
    # past that check (damage done while training runs), the workers' error reaches the user
    monkeypatch.setattr("engine.local.engine.check_stream", lambda *a: None)
    with pytest.raises(WorkerError, match=r"(?s)training process \d failed:.*Traceback.*"
                                          r"id stream truncated"):
        LocalEngine(workers=2, show_progress=False).train(
            state.kernel_arrays(), state.kernel_settings, stream, tasks)
    assert _segments() == before and _no_children()


@pytest.mark.parametrize("workers", [1, 2])
def test_ids_outside_the_vocabulary_never_reach_the_kernel(tmp_path, planted, monkeypatch,
                                                          workers):
    """The id stream rewritten under a running job (another job on the same cache folder):
    each chunk is checked where it is read, so the kernels never index past the weights."""
    state, stream, tasks = _setup(tmp_path, planted, epochs=1)
    ids = np.fromfile(stream.path, dtype=np.int32)
    ids[ids >= 0] = len(state.vocab) + 7                  # a bigger vocabulary's ids
    ids.tofile(stream.path)
    monkeypatch.setattr("engine.local.engine.check_stream", lambda *a: None)  # (up front)
    error = ValueError if workers == 1 else WorkerError
    with pytest.raises(error, match=r"outside \[-1, \d+\).*cache_dir"):
        LocalEngine(workers=workers, show_progress=False).train(
            state.kernel_arrays(), state.kernel_settings, stream, tasks)
    assert _no_children()


def test_killed_worker_its_chunks_go_to_another(tmp_path, planted, caplog):
    before = _segments()
    state, stream, tasks = _setup(tmp_path, planted, epochs=20)
    killed = []

    def kill_one():
        kids = _trainers()
        if not killed and len(kids) == 2:      # the first tick with both processes up
            killed.append(kids[0].pid)
            os.kill(kids[0].pid, signal.SIGKILL)

    engine = LocalEngine(workers=2, show_progress=False, on_tick=kill_one)
    stats = engine.train(state.kernel_arrays(), state.kernel_settings, stream, tasks)
    assert killed, "the run ended before a worker could be killed"
    assert stats.raw_words == 20 * stream.raw_words     # every chunk counted exactly once
    assert len(stats.lost_workers) == 1 and stats.lost_workers[0]["exit"] == -signal.SIGKILL
    assert "died with signal 9" in caplog.text
    assert _segments() == before and _no_children()


def test_standby_processes_train_and_a_dead_one_is_replaced(tmp_path, planted):
    """Processes started before the work is known (engine.local.workers.Standby) are the ones that
    train; one that died while waiting is replaced by a fresh process; every chunk is
    trained once; nothing is left afterwards."""
    before = _segments()
    state, stream, tasks = _setup(tmp_path, planted)
    with Standby(2) as standby:
        waiting = [proc.pid for proc, _ in standby.waiting]
        # (alive, by the processes Standby holds: a child just forked may not show its
        # command line yet)
        assert len(waiting) == 2 and all(proc.is_alive() for proc, _ in standby.waiting)
        seen = set()
        stats = LocalEngine(workers=2, show_progress=False, standby=standby,
                            on_tick=lambda: seen.update(k.pid for k in _trainers())).train(
            state.kernel_arrays(), state.kernel_settings, stream, tasks)
        assert standby.waiting == []
    assert stats.raw_words == 3 * stream.raw_words and not stats.lost_workers
    assert seen == set(waiting)                    # no other process was started
    assert _segments() == before and _no_children()

    with Standby(2) as standby:
        dead = standby.waiting[0][0]
        dead.kill()
        dead.join()
        seen = set()
        syn0 = state.syn0.copy()
        stats = LocalEngine(workers=2, show_progress=False, standby=standby,
                            on_tick=lambda: seen.update(k.pid for k in _trainers())).train(
            state.kernel_arrays(), state.kernel_settings, stream, tasks)
    assert stats.raw_words == 3 * stream.raw_words and not stats.lost_workers
    assert not (state.syn0 == syn0).all()
    assert standby.waiting == [] and dead.pid not in seen and len(seen) == 2
    assert _segments() == before and _no_children()


def test_an_unused_standby_and_a_failing_preparation_leave_no_process(tmp_path, monkeypatch):
    """engine run starts its training processes before reading the corpus: a corpus that
    fails while being counted still leaves no process behind."""
    with Standby(2) as standby:
        started = [proc for proc, _ in standby.waiting]
        assert len(started) == 2 and all(proc.is_alive() for proc in started)
    assert standby.waiting == [] and not any(proc.is_alive() for proc in started)
    assert _no_children()
    from engine.config import load_job
    from engine.errors import CorpusError
    from engine.jobs.run import run_job

    corpus = tmp_path / "c.txt"
    corpus.write_bytes(b"fine words here\n" * 500 + b"bad \xff byte\n")
    job = tmp_path / "job.toml"
    job.write_text(f'[corpus]\npath = "{corpus}"\n[model]\nmin_count = 1\n'
                   f'[engine]\nworkers = 2\n[output]\ndir = "{tmp_path / "out"}"\n')
    started = []

    class Recorded(Standby):
        def __init__(self, workers):
            super().__init__(workers)
            started.append([p.pid for p, _ in self.waiting])

    import engine.jobs.run

    monkeypatch.setattr(engine.jobs.run, "Standby", Recorded)
    with pytest.raises(CorpusError, match="invalid UTF-8"):
        run_job(load_job(str(job)), show_progress=False)
    assert len(started) == 1 and len(started[0]) == 2    # they were up while counting
    assert _no_children()


def _big_corpus(path, words=400_000):
    rnd = random.Random(0)
    vocab = [f"w{i}" for i in range(2000)]
    with open(path, "w") as fh:
        for _ in range(words // 20):
            fh.write(" ".join(rnd.choice(vocab) for _ in range(20)) + "\n")


def _sigint_default():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("how", ["sigint-group", "sigterm"])
def test_interrupt_stops_cleanly(tmp_path, how):
    before = _segments()
    corpus = tmp_path / "c.txt"
    _big_corpus(corpus)
    job = tmp_path / "job.toml"
    job.write_text(f'[corpus]\npath = "{corpus}"\n[model]\nepochs = 200\nsg = 1\n'
                   f'[engine]\nworkers = 2\n[output]\ndir = "{tmp_path / "out"}"\n')
    cmd, env = engine_command()
    # a foreground job in a terminal: SIGINT at its default, whatever this test run
    # inherited (a shell's background job starts with SIGINT ignored, and so would the run)
    proc = subprocess.Popen(cmd + ["run", str(job)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, env=env,
                            preexec_fn=_sigint_default)
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:                 # wait until training processes run
        kids = _trainers(parent)                       # pool or training processes
        try:
            if len(kids) >= 2 and all(k.cpu_percent(0.2) > 10 for k in kids):
                break
        except psutil.Error:
            pass
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("training never started")
    group = [parent] + parent.children(recursive=True)
    t0 = time.monotonic()
    if how == "sigint-group":                          # Ctrl-C: the whole foreground group
        os.killpg(proc.pid, signal.SIGINT)
    else:
        os.kill(proc.pid, signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:             # not stopped: fail, leaving nothing behind
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    took = time.monotonic() - t0
    assert proc.returncode == (130 if how == "sigint-group" else 143), err
    assert took < 8
    assert "stopped" in err and "Traceback" not in err
    gone, alive = psutil.wait_procs(group, timeout=5)
    assert not alive, f"orphans: {alive}"
    assert _segments(proc.pid) == before
    assert not (tmp_path / "out" / "vectors.bin").exists()       # nothing half-written


def _hang_after_one_task(conn):
    """A stand-in training process that takes a task and never answers (a deadlock)."""
    conn.send(("ready", 0, os.getpid()))
    conn.recv()
    open(os.environ["ENGINE_TEST_FLAG"], "w").close()     # now it holds a task
    time.sleep(3600)


def _do_every_task(conn):
    """Ready once the other process holds a task; then does every task it gets."""
    while not os.path.exists(os.environ["ENGINE_TEST_FLAG"]):
        time.sleep(0.01)
    conn.send(("ready", 0, os.getpid()))
    while (task := conn.recv()) is not None:
        conn.send(("done", task.task_id, 7))


def test_a_hung_training_process_is_killed_and_its_chunks_go_to_another(tmp_path, planted,
                                                                         monkeypatch):
    """A process that holds chunks and sends nothing for stall_seconds is killed; the chunks
    it held are trained by the other, each exactly once."""
    from engine.local.sources import ListSource

    _, _, tasks = _setup(tmp_path, planted)
    monkeypatch.setenv("ENGINE_TEST_FLAG", str(tmp_path / "holds-a-task"))
    s = _session_with(_hang_after_one_task, _do_every_task)
    s.stall_seconds = 1.0
    hung_pid = s.procs[0].pid
    got = []
    try:
        s.run(ListSource(tasks), lambda task, n, *_: got.append(task.task_id))
    finally:
        s.close()
    assert sorted(got) == sorted(t.task_id for t in tasks)
    (lost,) = s.lost_workers
    assert lost["pid"] == hung_pid and lost["exit"] == -signal.SIGKILL
    assert _no_children()


def _done_then_exit(conn):
    """A stand-in training process: ready, one task done, and exit at once."""
    conn.send(("ready", 0, os.getpid()))
    task = conn.recv()
    conn.send(("done", task.task_id, 7))


def _error_then_exit(conn):
    conn.send(("ready", 0, os.getpid()))
    conn.recv()
    conn.send(("error", 0, "Traceback (most recent call last):\nValueError: the real cause"))
    raise SystemExit(1)


def _session_with(*targets):
    """A LocalSession whose processes run `targets` (the run loop is what is tested)."""
    from collections import deque
    from multiprocessing import get_context

    from engine.local.session import LocalSession

    ctx = get_context("spawn")
    s = LocalSession.__new__(LocalSession)
    s.workers, s.stall_seconds, s.shared, s.own, s.slowest = len(targets), 60.0, None, None, 0.0
    s.ahead_words = 0
    s.procs, s.conns, s.lost_workers = {}, {}, []
    for slot, target in enumerate(targets):
        parent, child = ctx.Pipe(duplex=True)
        proc = ctx.Process(target=target, args=(child,), daemon=True)
        proc.start()
        child.close()
        s.procs[slot], s.conns[slot] = proc, parent
    s.alive, s.ready, s.by_id = set(s.procs), set(), {}
    s.held = {slot: deque() for slot in s.procs}
    s.heard = {slot: time.monotonic() for slot in s.procs}
    return s


def test_a_done_sent_just_before_exit_is_not_trained_again(tmp_path, planted):
    from engine.local.sources import ListSource

    _, _, tasks = _setup(tmp_path, planted)
    s = _session_with(_done_then_exit)
    got = []
    try:
        s.run(ListSource(tasks[:1]), lambda task, n, *_: got.append((task.task_id, n)))
    finally:
        s.close()
    assert got == [(tasks[0].task_id, 7)] and s.lost_workers == []


def test_an_error_sent_just_before_exit_reaches_the_user(tmp_path, planted):
    from engine.local.sources import ListSource

    _, _, tasks = _setup(tmp_path, planted)
    s = _session_with(_error_then_exit)
    try:
        with pytest.raises(WorkerError, match="the real cause"):
            s.run(ListSource(tasks[:1]))
    finally:
        s.close()


def test_a_trainer_that_fails_to_build_shows_its_own_error(tmp_path, planted):
    from engine.local.session import LocalSession
    from engine.local.sources import ListSource
    from engine.word2vec.schedule import KernelSettings

    state, stream, tasks = _setup(tmp_path, planted)
    bad = KernelSettings(sg=1, hs=0, negative=0, window=5, cbow_mean=1)
    with LocalSession(state.kernel_arrays(), bad, stream.path, stream.max_chunk_ids, 2) as s:
        with pytest.raises(WorkerError, match="need negative > 0 or hs = 1"):
            s.run(ListSource(tasks))


def test_only_engines_own_children_start_without_main():
    """Inside sigint_ignored_in_children (this thread) spawn's preparation leaves the
    parent's __main__ out; anywhere else (another thread at the same moment) it is kept."""
    import multiprocessing.spawn as mp_spawn
    import threading

    from engine.runtime.procs import sigint_ignored_in_children

    keys = ("init_main_from_path", "init_main_from_name")
    outside = mp_spawn.get_preparation_data("x")
    assert any(k in outside for k in keys)           # pytest's own script is __main__
    seen = {}
    with sigint_ignored_in_children():
        inside = mp_spawn.get_preparation_data("x")
        t = threading.Thread(target=lambda: seen.update(mp_spawn.get_preparation_data("y")))
        t.start()
        t.join()
    assert not any(k in inside for k in keys)
    assert any(k in seen for k in keys)


def _report_sigint_mask(conn):
    import signal as _signal

    conn.send(_signal.SIGINT in _signal.pthread_sigmask(_signal.SIG_BLOCK, []))


def test_a_ctrl_c_while_children_start_is_held_not_lost():
    """While engine starts its children, a Ctrl-C is neither lost (as it was while SIGINT
    was ignored for the children's sake) nor raised halfway through a start: it is raised
    when the block ends. The children start with SIGINT blocked, so a Ctrl-C to the whole
    group does not reach them."""
    import multiprocessing as mp

    from engine.runtime.procs import sigint_ignored_in_children

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    started_after = []
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)   # as a terminal's
    try:
        with pytest.raises(KeyboardInterrupt):
            with sigint_ignored_in_children():
                proc = ctx.Process(target=_report_sigint_mask, args=(child,))
                proc.start()
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.2)                  # would have been raised by now
                started_after.append(True)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, inherited)
    assert started_after == [True]               # the block ran to its end
    assert parent.recv() is True                 # blocked in the child from birth
    proc.join(10)
    assert proc.exitcode == 0
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])


@pytest.mark.parametrize("sg,hs,kernel,want", [
    (1, 0, "auto", "batched"), (1, 0, "batched", "batched"), (1, 0, "classic", "classic"),
    (0, 0, "auto", "two-pass"), (0, 0, "batched", "batched"), (0, 0, "classic", "classic"),
    (0, 0, "two-pass", "two-pass"), (0, 1, "auto", "classic"), (1, 1, "auto", "classic"),
    (0, 1, "batched", None), (1, 1, "batched", None), (1, 0, "two-pass", None),
    (0, 1, "two-pass", None),
])
def test_kernel_choice(sg, hs, kernel, want, caplog):
    """auto: batched skip-gram NS, two-pass CBOW NS (batched CBOW only when asked for),
    classic with hs; batched with hs, two-pass but for CBOW NS, are refused; the choice is
    logged."""
    import dataclasses
    import logging

    import numpy as np

    from engine.config import EngineConfig
    from engine.errors import ConfigError
    from engine.jobs.train import kernel_settings
    from engine.word2vec.vocab import Vocab

    counts = np.array([5, 4, 3, 2], np.int64)
    state = ModelState(ModelConfig(sg=sg, hs=hs, negative=5),
                       Vocab(["a", "b", "c", "d"], counts, counts.sum()))
    engine = dataclasses.replace(EngineConfig(), kernel=kernel, cbow_batch=6)
    if want is None:
        with pytest.raises(ConfigError, match="negative sampling only"):
            kernel_settings(state, engine)
        return
    with caplog.at_level(logging.INFO, logger="engine"):
        s = kernel_settings(state, engine)
    assert s.batched == (want == "batched") and s.cbow_batch == 6
    assert s.two_pass == (want == "two-pass")
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("kernel:")]
    assert said[-1].startswith({"classic": "kernel: classic",
                                "two-pass": "kernel: two-pass CBOW",
                                "batched": "kernel: batched skip-gram" if sg else
                                "kernel: batched CBOW (one noise set per 6 "}[want])


FASTER_BLAS, FASTER_LOOPS = (1e6, 2e6), (2e6, 1e6)       # (loops, BLAS) words/s


@pytest.mark.parametrize("sg,products,lib,rates,want", [
    (1, "auto", "scipy-openblas", FASTER_BLAS, 1), (1, "auto", "scipy-openblas", FASTER_LOOPS, 0),
    (1, "auto", "mkl", FASTER_BLAS, 1), (1, "auto", None, FASTER_BLAS, 0),
    (1, "blas", "mkl", FASTER_LOOPS, 1), (1, "blas", None, FASTER_BLAS, None),
    (1, "loops", "scipy-openblas", FASTER_BLAS, 0),
    (0, "auto", "scipy-openblas", FASTER_BLAS, 0), (0, "blas", "scipy-openblas", FASTER_BLAS, 0),
])
def test_batched_skipgram_products_choice(sg, products, lib, rates, want, monkeypatch, caplog):
    """Batched skip-gram's products go through BLAS where they measure faster than the loops
    on this machine (auto) or when asked for (refused where scipy's BLAS does not load),
    else loops; CBOW kernels have no BLAS path. The choice is logged with both rates."""
    import dataclasses
    import logging

    import engine.jobs.train as train
    from engine.config import EngineConfig
    from engine.errors import ConfigError
    from engine.word2vec.vocab import Vocab

    monkeypatch.setattr("engine.local.kernel.blas_products", lambda: lib)
    asked = []
    monkeypatch.setattr("engine.local.kernel.measure_products",
                        lambda settings, dim, vocab: asked.append((dim, vocab)) or rates)
    counts = np.array([5, 4, 3, 2], np.int64)
    state = ModelState(ModelConfig(sg=sg, negative=5, vector_size=24),
                       Vocab(["a", "b", "c", "d"], counts, counts.sum()))
    engine = dataclasses.replace(EngineConfig(), products=products)
    if want is None:
        with pytest.raises(ConfigError, match="products"):
            train.kernel_settings(state, engine)
        return
    with caplog.at_level(logging.INFO, logger="engine"):
        s = train.kernel_settings(state, engine)
    assert s.blas == want and s.batched == sg
    said = " ".join(r.getMessage() for r in caplog.records)
    if sg:
        assert ("through BLAS sgemm" if want else "through register-blocked loops") in said
    measures = bool(sg and products == "auto" and lib)
    assert asked == ([(24, 4)] if measures else [])          # the job's shape
    if measures:
        assert (f"measured here: loops {rates[0]:,.0f} words/s, BLAS ({lib}) "
                f"{rates[1]:,.0f}") in said
    elif sg and products == "auto":
        assert "does not load here" in said


def test_scipy_exports_sgemm_for_the_batched_kernel(tmp_path):
    import subprocess
    import sys

    from engine.runtime.blas import blas_products

    assert isinstance(blas_products(), str)        # scipy is a core dependency
    # a training process takes sgemm without importing scipy.linalg (LAPACK and all), and
    # scipy.linalg still imports and finds the same module afterwards
    code = ("import sys; from engine.runtime.blas import sgemm_capsule; assert sgemm_capsule(); "
            "assert 'scipy.linalg' not in sys.modules, 'scipy.linalg loaded'; "
            "m = sys.modules['scipy.linalg.cython_blas']; "
            "from scipy.linalg import cython_blas; assert cython_blas is m; "
            "import scipy.linalg; scipy.linalg.blas.sgemm(1.0, [[1.0]], [[2.0]])")
    # (from elsewhere than the checkout, whose engine/ has no compiled modules in CI)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)


def test_hot_rows_take_every_row_a_process_draws_often_between_merges():
    """Past the share rule: a row one process draws HOT_TOUCHES times or more between two
    merges is hot too (a small vocabulary's every row), and the rows after the busy ones are
    left shared; where the share rule covers more, its choice stands."""
    from engine.local.hotrows import (
        HOT_TOUCHES,
        SYNC_WORDS,
        hot_draw_shares,
        row_draws,
        size_hot_rows,
    )

    assert row_draws(1, 5, 1, 5) == 7 and row_draws(0, 5, 1, 5) == 12     # SG 2, CBOW 1 + 6
    assert row_draws(0, 5, 0, 0) == 11 and row_draws(1, 3, 1, 0) == 2
    for n, sg, expect in ((512, 0, "all"), (512, 1, "all"), (3000, 0, "busy"),
                          (3000, 1, "all"), (10_000, 0, "share"), (10_000, 1, "busy")):
        counts = (1e6 / np.arange(1, n + 1)).astype(np.int64)       # Zipf
        shares = hot_draw_shares(counts, np.ones(n), 5, 0.75)
        upw, draws = (6.0, row_draws(1, 5, 1, 5)) if sg else (1.0, row_draws(0, 5, 1, 5))
        by_share = int(np.searchsorted(shares, 0.75) + 1)
        per_merge = np.diff(shares, prepend=0.0) * SYNC_WORDS * upw * draws
        words, sync, _ = size_hot_rows(shares, n, 2, 100, 0, upw, None, draws)
        assert sync == SYNC_WORDS
        if expect == "share":          # the busy rows are fewer than the share rule's
            assert words == by_share and per_merge[by_share - 1] < HOT_TOUCHES
            continue
        assert words > by_share and (per_merge[:words] >= HOT_TOUCHES).all()
        assert words == n if expect == "all" else per_merge[words] < HOT_TOUCHES


def test_auto_hot_rows_sizes_from_the_vocabulary_and_process_count():
    from engine.local.hotrows import HOT_TIERS, SYNC_WORDS, auto_hot_rows

    counts = (1e6 / np.arange(1, 50_001)).astype(np.int64) + 5        # Zipf, 50k words
    keep = np.ones(counts.size)
    assert auto_hot_rows(counts, keep, 5, 0.75, 1, 100) == (0, 0, 0)   # nothing is shared
    sizes = [auto_hot_rows(counts, keep, 5, 0.75, p, 100, updates_per_word=16)
             for p in (2, 4, 16)]
    words = [w for w, _, _ in sizes]
    assert 256 <= words[0] < words[1] <= words[2] <= 16384            # more processes, more rows
    draws = counts ** 0.75                     # the chosen rows draw at least 1 - 1/2P of them
    share = (2 * counts / counts.sum() + 5 * draws / draws.sum()) / 7
    assert share[:words[0]].sum() >= 0.75 > share[:words[0] - 1].sum()
    assert all(sync == SYNC_WORDS and tiers == HOT_TIERS for _, sync, tiers in sizes)
    assert auto_hot_rows(counts[:100], keep[:100], 5, 0.75, 2, 100)[0] == 100   # small vocab
    assert auto_hot_rows(counts, keep, 5, 0.75, 2, 100_000)[0] == 256  # the fewest
    from engine.local.hotrows import HOT_BYTES
    wide = auto_hot_rows(counts, keep, 5, 0.75, 16, 300, updates_per_word=16)[0]
    assert 16 * 300 * wide <= HOT_BYTES < 16 * 300 * (wide + 1)   # copies and bases: bounded
    # a fast kernel (CBOW: one update a word) merges fewer rows: a merge moves at most 1/8
    # row an update on average, first * (1 + L/2) rows with L tiers
    for tiers in (0, 1, 3):
        w, sync, got = auto_hot_rows(counts, keep, 5, 0.75, 2, 100, updates_per_word=1,
                                     tiers=tiers)
        first = -(-w // (1 << tiers))
        assert got == tiers and first * (1 + tiers / 2) <= sync / 8 < (first + 1) * (1 + tiers / 2)
        assert w < words[0]
    assert auto_hot_rows(counts, keep, 5, 0.75, 2, 100, updates_per_word=1)[0] == 6552
    # a small corpus merges at least 32 times an epoch per process, all rows at least 8 times
    assert auto_hot_rows(counts, keep, 5, 0.75, 2, 100, epoch_words=640_000)[1:] == (10_000, 2)
    assert auto_hot_rows(counts, keep, 5, 0.75, 2, 100, epoch_words=10 ** 9)[1:] == \
        (SYNC_WORDS, HOT_TIERS)
    assert auto_hot_rows(counts, keep, 5, 0.75, 2, 100, epoch_words=10_000)[1:] == (1024, 0)


def test_hot_rows_a_chunk_counts_once_merged_and_a_killed_process_loses_none(tmp_path,
                                                                            planted):
    # every row hot, merged only when a process runs out of work: chunks are reported once
    # their updates are in the shared weights, so a killed process's unmerged chunks are
    # trained again by the other and every chunk is counted exactly once
    before = _segments()
    state, stream, tasks = _setup(tmp_path, planted, epochs=20)
    killed = []

    def kill_one():
        kids = _trainers()
        if not killed and len(kids) == 2:
            killed.append(kids[0].pid)
            os.kill(kids[0].pid, signal.SIGKILL)

    syn0 = state.syn0.copy()
    engine = LocalEngine(workers=2, show_progress=False, on_tick=kill_one,
                         hot_words=len(syn0), sync_words=1 << 30)
    stats = engine.train(state.kernel_arrays(), state.kernel_settings, stream, tasks)
    assert killed and len(stats.lost_workers) == 1
    assert stats.raw_words == 20 * stream.raw_words
    assert stats.hot_rows["words"] == len(syn0)
    assert np.abs(state.syn0 - syn0).max() > 0.05       # trained, through the merges alone
    assert _segments() == before and _no_children()


def test_hot_rows_by_default_with_several_processes_only(planted):
    from engine.config import EngineConfig
    from engine.jobs.train import hot_rows

    _, sents = planted
    vocab = build_vocab_iterable(sents, min_count=1)
    state = ModelState(ModelConfig(sg=1, vector_size=16, min_count=1), vocab)
    assert hot_rows(EngineConfig(workers=1), state)[0] == 0            # nothing shared
    words, sync, tiers = hot_rows(EngineConfig(workers=2), state)      # "auto"
    assert 0 < words <= len(vocab)
    assert sync == max(1024, vocab.raw_words // 64)      # 32 merges an epoch per process
    assert sync << tiers <= max(sync, vocab.raw_words // 16)     # all rows 8 times an epoch
    assert hot_rows(EngineConfig(workers=2, hot_tiers=0), state)[2] == 0
    assert hot_rows(EngineConfig(workers=2, hot_words=0), state)[0] == 0
    assert hot_rows(EngineConfig(workers=4, hot_words=7, sync_words=99), state) == (7, 99, 0)
    assert hot_rows(EngineConfig(workers=4, hot_words=7, sync_words=99, hot_tiers=2),
                    state) == (7, 99, 2)


@pytest.mark.parametrize("lib,rates,products,want", [
    ("scipy-openblas", (1e6, 2e6), "auto", 1), ("scipy-openblas", (2e6, 1e6), "auto", 0),
    ("mkl", (1e6, 2e6), "auto", 1), (None, (1e6, 2e6), "auto", 0),
    ("scipy-openblas", (2e6, 1e6), "blas", 1), (None, (1e6, 2e6), "blas", 0)])
def test_a_cluster_node_takes_blas_products_where_they_measure_faster_there(
        lib, rates, products, want, monkeypatch, caplog):
    """A job that takes BLAS (blas 1) gets it on a node where BLAS measures faster there
    (products "auto"), or wherever it loads (products "blas"); else the loops, logged."""
    import logging

    from engine.cluster.protocol import decode_settings
    from engine.local.kernel import settle_products

    def node_settings(spec, job, dim, vocab):      # as a node settles a job's settings
        return settle_products(*decode_settings(spec), dim, vocab, f"job {job} products",
                               strict=False)

    monkeypatch.setattr("engine.local.kernel.blas_products", lambda: lib)
    asked = []
    monkeypatch.setattr("engine.local.kernel.measure_products",
                        lambda settings, dim, vocab: asked.append((dim, vocab)) or rates)
    spec = {"sg": 1, "hs": 0, "negative": 5, "window": 5, "cbow_mean": 1, "batched": 1,
            "blas": 1, "products": products}
    with caplog.at_level(logging.INFO, logger="engine"):
        assert node_settings(spec, "j1", 100, 5000).blas == want
    assert ("run in loops" in caplog.text or "products: loops" in caplog.text) == (not want)
    assert asked == ([(100, 5000)] if lib and products == "auto" else [])   # the job's shape
    assert node_settings(dict(spec, blas=0), "j1", 100, 5000).blas == 0
    for bad in (dict(spec, batched=0), dict(spec, sg=0), dict(spec, blas=2),
                dict(spec, products="fast")):
        with pytest.raises(ValueError, match="blas|products"):
            node_settings(bad, "j1", 100, 5000)


def test_a_cluster_job_leaves_products_auto_to_its_nodes(monkeypatch):
    """On a cluster the head does not measure (its machine is not the nodes'): "auto" goes
    out as blas 1 with products "auto", and each node measures."""
    import engine.jobs.train as train
    from engine.config import EngineConfig
    from engine.word2vec.vocab import Vocab

    monkeypatch.setattr("engine.local.kernel.measure_products",
                        lambda *a: pytest.fail("the head measured"))
    counts = np.array([5, 4, 3, 2], np.int64)
    state = ModelState(ModelConfig(sg=1, negative=5),
                       Vocab(["a", "b", "c", "d"], counts, counts.sum()))
    assert train.kernel_settings(state, EngineConfig(), clustered=True).blas == 1
    assert train.kernel_settings(state, EngineConfig(products="loops"),
                                 clustered=True).blas == 0


def test_measure_products_times_both_ways_once(monkeypatch):
    """The measurement behind products = "auto": one trainer in loops and one through BLAS
    really train (finite, positive rates, in that order), and a second ask for the same
    shape is remembered, not measured again."""
    import engine.local.kernel as local
    from engine.runtime.blas import blas_products
    from engine.word2vec.schedule import KernelSettings

    if blas_products() is None:
        pytest.skip("scipy's BLAS sgemm does not load here")
    made = []
    real = local.make_trainer
    monkeypatch.setattr(local, "make_trainer",
                        lambda arrays, settings: made.append(settings) or real(arrays, settings))
    settings = KernelSettings(1, 0, 5, 5, 1, 1, 1)
    rates = local.measure_products(settings, 24, 300, words=3000)
    assert [(m.blas, m.batched, m.sg) for m in made] == [(0, 1, 1), (1, 1, 1)]
    assert len(rates) == 2 and all(np.isfinite(r) and r > 1e4 for r in rates)
    assert local.measure_products(settings, 24, 300, words=3000) is rates
    import dataclasses  # the chosen settings (blas set) find the same
    assert local.measure_products(dataclasses.replace(settings, batched=1, blas=1), 24, 300,
                                  words=3000) is rates     # rates: what report.json records
    assert len(made) == 2


def test_a_cluster_node_sizes_hot_rows_as_the_local_engine_would(planted):
    # the dispatcher sends the vocabulary's draw shares and the engine's settings; each node
    # sizes its processes' hot rows for its own process count, as a local run of that many
    # processes over the node's share of an epoch would (both choose with
    # engine.local.hotrows.choose_hot_rows: this checks what travels, the float32 shares packed for
    # the wire, the epoch share, and the node's checks of a hostile spec)
    from engine.cluster.node import _local_hot
    from engine.cluster.protocol import pack_array
    from engine.config import EngineConfig
    from engine.jobs.train import hot_rows, hot_rows_spec
    from engine.word2vec.vocab import Vocab

    counts = (1e6 / np.arange(1, 30_001)).astype(np.int64) + 5        # Zipf, 30k words
    words = [f"w{i}" for i in range(counts.size)]
    raw = int(counts.sum())
    vocab, third = Vocab(words, counts, raw), Vocab(words, counts, raw // 3)
    sizes = set()
    for sg in (0, 1):
        state = ModelState(ModelConfig(sg=sg, vector_size=50, min_count=1), vocab)
        settings = state.kernel_settings
        for engine in (EngineConfig(), EngineConfig(hot_tiers=1), EngineConfig(sync_words=999),
                       EngineConfig(hot_words=77, hot_tiers=2), EngineConfig(hot_words=0)):
            spec = hot_rows_spec(engine, state)
            if "shares" in spec:
                spec["shares"] = pack_array(spec["shares"])
            spec["epoch_words"] = raw // 3                          # one of three nodes
            for procs in (1, 2, 6):
                got = _local_hot(spec, procs, len(vocab), 50, settings)
                want = hot_rows(dataclasses.replace(engine, workers=procs),
                                ModelState(state.config, third))
                assert got == want, (sg, engine, procs)
                sizes.add(got)
    assert len(sizes) >= 8 and (0, 1024, 0) in sizes        # the cases differ
    spec = hot_rows_spec(EngineConfig(), state)
    bad = [dict(spec, shares=pack_array(spec["shares"][::-1].copy())),       # decreasing
           dict(spec, shares=pack_array(np.full(3, 2.0, np.float32))),       # above 1
           dict(spec, shares=pack_array(spec["shares"].astype(np.float64))),  # wrong dtype
           dict(spec, tiers=9), dict(spec, sync_words=-1), "auto"]
    for b in bad:
        with pytest.raises(ValueError, match="local_hot"):
            _local_hot(b, 2, len(vocab), 50, settings)


@pytest.mark.parametrize("sync_words,tiers", [(1 << 30, 0), (1024, 8)])
def test_hot_rows_a_chunk_is_in_the_shared_weights_when_it_is_reported(tmp_path, planted,
                                                                        sync_words, tiers):
    # every row hot and no full merge due within the run (with tiers the most frequent rows
    # are merged every 1,024 words, but all 54 only every 64 merges, past the run's end):
    # the training process must merge them all before it reports a chunk done, so the
    # shared weights hold each reported chunk's updates (a report sent before, or after a
    # merge of the first tiers only, would find rows it trained untouched); one process
    # trains in order, so the end result is the direct training's, up to rounding
    from engine.local.kernel import make_trainer
    from engine.local.session import LocalSession
    from engine.local.sources import ListSource

    state, stream, tasks = _setup(tmp_path, planted, epochs=1)
    arrays, settings = state.kernel_arrays(), state.kernel_settings
    direct = {k: v.copy() for k, v in arrays.items()}
    snaps = []
    with LocalSession(arrays, settings, stream.path, stream.max_chunk_ids, 1,
                      hot_words=len(direct["syn0"]), sync_words=sync_words,
                      hot_tiers=tiers) as session:
        def done(task, *_):
            snaps.append(session.shared["syn0"].copy())

        session.run(ListSource(tasks[:1]), done)
        between = session.shared["syn0"].copy()
        session.run(ListSource(tasks[1:]), done)        # chunks queued ahead
        got = {k: session.shared[k].copy() for k in ("syn0", "syn1neg")}
    assert len(snaps) == len(tasks)
    trainer = make_trainer(direct, settings)
    reader = ChunkReader(stream.path, stream.max_chunk_ids)
    after = []
    try:
        for t in tasks:
            trainer.train(reader.read(t.start, t.end), t.seed, t.alpha0, t.alpha1)
            after.append(direct["syn0"].copy())
    finally:
        reader.close()
    np.testing.assert_allclose(snaps[0], after[0], rtol=1e-4, atol=1e-5)
    trained = (after[1] != after[0]).any(axis=1)        # the rows the second chunk trained
    assert trained.sum() > 10
    assert (snaps[1][trained] != between[trained]).any(axis=1).all()
    for k in ("syn0", "syn1neg"):
        np.testing.assert_allclose(got[k], direct[k], rtol=1e-4, atol=1e-5, err_msg=k)
