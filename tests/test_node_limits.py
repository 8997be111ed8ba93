"""A node's job against the limits and races of the exchange: a job that cannot open leaves
nothing, table shapes whose size overflows are refused before any segment, the weights
cannot change after the tables were checked, and a node that answers wrongly is dropped
(not the job) and taken back a bounded number of times."""
import glob
import os
import tempfile
import threading

import numpy as np
import pytest
from conftest import in_process_worker, segments_of
from test_cluster import KEY, _exact, _job, _train, workers  # noqa: F401 (the fixture)

from engine.cluster import transport
from engine.cluster.node import _SCRATCH_PREFIX, NodeJob
from engine.cluster.protocol import JobSpec, encode_job_spec, pack_array
from engine.cluster.service import WorkerService
from engine.config import ClusterConfig
from engine.word2vec.schedule import KernelSettings


def _spec(**tables):
    shapes = {"syn0": ((4, 3), "<f4"), "syn1neg": ((4, 3), "<f4"), "syn1": ((0, 3), "<f4"),
              "keep": ((4,), "<u4"), "noise": ((8,), "<u8"), "codes": ((1, 1), "|u1"),
              "points": ((1, 1), "<i4"), "code_lens": ((1,), "<i4")}
    for name, shape in tables.items():
        shapes[name] = (shape, shapes[name][1])
    return encode_job_spec(JobSpec(
        job="j1", member="n1", dim=3, vocab=4, settings=KernelSettings(1, 0, 5, 5, 1),
        products="loops", max_chunk_ids=10, timeout_seconds=5.0, peer_timeout=5.0, workers=1,
        hot_rows=2, local_hot=None, shapes=shapes))


def _scratch_dirs():
    return set(glob.glob(os.path.join(tempfile.gettempdir(),
                                      f"{_SCRATCH_PREFIX}{os.getpid()}-*")))


def test_a_job_that_cannot_open_leaves_nothing(monkeypatch):
    import engine.cluster.node as node

    def fail(count):
        raise RuntimeError("no process could start")

    before = (segments_of(), _scratch_dirs())
    monkeypatch.setattr(node, "Standby", fail)
    with pytest.raises(RuntimeError, match="no process"):
        NodeJob(_spec(), workers=1)
    assert (segments_of(), _scratch_dirs()) == before


def test_table_sizes_that_overflow_are_refused_before_any_segment():
    before = segments_of()
    # 2**33 x 2**33 entries: np.prod wraps to 0 in int64, which would pass the room checks
    with pytest.raises(MemoryError, match="MB"):
        NodeJob(_spec(noise=(1 << 33, 1 << 33)), workers=1)
    assert segments_of() == before


def test_weights_cannot_land_after_start_checked_the_tables(monkeypatch):
    job = NodeJob(_spec(), workers=1)
    checking, go_on = threading.Event(), threading.Event()
    real_check = job._check_tables

    def slow_check():
        checking.set()
        assert go_on.wait(10)
        real_check()

    job.shared["keep"][...] = np.uint32(0xFFFFFFFF)     # valid tables
    job.shared["noise"][...] = np.arange(8, dtype=np.uint64) % 4
    monkeypatch.setattr(job, "_check_tables", slow_check)
    started = threading.Thread(target=job.start)
    try:
        started.start()
        assert checking.wait(10)
        got = []

        def put():
            try:
                job.put_array("syn0", 0, pack_array(np.full((4, 3), 7, np.float32)))
                got.append("written")
            except ValueError as exc:
                got.append(str(exc))

        putter = threading.Thread(target=put)
        putter.start()
        putter.join(0.5)                          # it waits for start, not writes beside it
        assert got == []
        go_on.set()
        started.join(10)
        putter.join(10)
        assert got and "has started" in got[0]
        assert not (job.shared["syn0"] == 7).any()
    finally:
        go_on.set()
        started.join(10)
        job.close()


class _WrongExchange(WorkerService):
    """A worker whose exchange replies name a kind of exchange that was not asked for."""

    @transport.expose
    def exchange(self, job_id, tasks, chunks, round_words, wait_seconds, cold, band) -> dict:
        reply = super().exchange(job_id, tasks, chunks, round_words, wait_seconds, cold, band)
        return dict(reply, flushed=1 if cold != 1 else 0)


class _WrongInfo(WorkerService):
    @transport.expose
    def info(self):
        return ["not", "a", "dict"]


class _FailsWeights(WorkerService):
    """A worker that takes the job and its tables, then fails the weights' upload."""

    @transport.expose
    def seed_array(self, job_id, name, seed, crc) -> bool:
        raise ValueError("no room for the weights")

    @transport.expose
    def put_array(self, job_id, name, start, packed) -> None:
        if name in ("syn0", "syn1", "syn1neg"):
            raise ValueError("no room for the weights")
        super().put_array(job_id, name, start, packed)


def test_a_node_whose_opening_fails_late_leaves_nothing_at_the_merge_point(tmp_path, workers):
    """A node that fails after the dispatcher gave it a slot at the merge point (while its
    weights upload) is struck and tried again a bounded number of times; each failed
    opening frees its slot, so the master keeps versions for the nodes in use only."""
    from engine.cluster import ClusterEngine, read_key
    from engine.local.sources import plan_tasks

    (good,) = workers(1)
    with in_process_worker(_FailsWeights, "fails-weights", KEY.encode()) as bad:
        _, state, stream = _job(tmp_path, epochs=EPOCHS)
        cluster = ClusterConfig(nodes=[good.address, bad], round_words=3000,
                                round_seconds=1, rejoin_seconds=0.1, queue_seconds=0.05,
                                merge_at="dispatcher")
        tasks = plan_tasks(stream, EPOCHS, state.config.alpha, state.config.min_alpha,
                           state.config.seed)
        engine = ClusterEngine(cluster, read_key(), show_progress=False)
        stats = engine.train(state.kernel_arrays(), state.kernel_settings, stream, tasks)
    _exact(stats, stream, EPOCHS)
    assert engine.strikes.get(bad, 0) >= 2           # opened and failed more than once
    assert len(engine.master.synced) == 2            # the good node's slot, one reused
    assert sum(held is not None for held in engine.master.synced) == 1


def test_nodes_that_answer_wrongly_are_dropped_and_taken_back_a_bounded_number_of_times(
        tmp_path, workers, monkeypatch):
    from engine.cluster.dispatcher import MAX_STRIKES

    (good,) = workers(1)
    key = KEY.encode()
    before = segments_of()
    with in_process_worker(_WrongExchange, "wrong-exchange", key) as wrong_exchange, \
            in_process_worker(_WrongInfo, "wrong-info", key) as wrong_info:
        _, state, stream = _job(tmp_path, epochs=EPOCHS)
        cluster = ClusterConfig(nodes=[good.address, wrong_exchange, wrong_info],
                                round_words=3000, round_seconds=1, rejoin_seconds=0.1,
                                queue_seconds=0.05)
        stats = _train(state, stream, cluster)
        _exact(stats, stream, EPOCHS)             # the job ends, every chunk once
        dropped = [d["address"] for d in stats.cluster["dropped"]]
        # taken back after each drop, but not more than MAX_STRIKES times
        assert 1 <= dropped.count(wrong_exchange) <= MAX_STRIKES, dropped
        assert wrong_info not in dropped          # never opened: its info was refused
    assert segments_of() == before


EPOCHS = 120


def _announcing_header(size: int) -> bytes:
    """A Pyro4 CONNECT header announcing `size` bytes of message (none of them follow)."""
    import struct

    import Pyro4.constants
    import Pyro4.message as pm

    msg_type, ver, ser, flags, seq, anns = pm.MSG_CONNECT, Pyro4.constants.PROTOCOL_VERSION, 0, \
        0, 1, 0
    checksum = (msg_type + ver + size + anns + flags + ser + seq + pm.Message.checksum_magic) \
        & 0xffff
    return struct.pack(pm.Message.header_format, b"PYRO", ver, msg_type, flags, seq, size,
                       ser, anns, 0, checksum)


def test_a_flood_that_never_authenticates_leaves_the_job_and_new_callers_served(
        tmp_path, workers):
    """300 connections that never send their handshake and 5 that announce a 200 MB one,
    against a node while a 2-node job runs: a new caller with the key is still served
    within seconds, and the job ends with every chunk trained once."""
    import socket
    import time

    from engine.cluster import read_key

    ws = workers(2)
    _, state, stream = _job(tmp_path, epochs=40)
    cluster = ClusterConfig(nodes=[w.address for w in ws], round_words=4000,
                            round_seconds=1, rejoin_seconds=600)
    out = {}
    job = threading.Thread(target=lambda: out.update(stats=_train(state, stream, cluster)))
    flood = []
    host, port = ws[0].address.rsplit(":", 1)
    try:
        job.start()
        for i in range(305):
            s = socket.create_connection((host, int(port)), timeout=5)
            if i >= 300:
                s.sendall(_announcing_header(200 << 20))
            flood.append(s)
        t0 = time.monotonic()
        proxy = transport.connect(ws[0].address, read_key(), 10)
        try:
            assert proxy.info()["name"]               # handshake and a call, while flooded
        finally:
            transport.release(proxy)
        assert time.monotonic() - t0 < 10
        job.join(120)
        assert not job.is_alive(), "the job did not end"
    finally:
        for s in flood:
            s.close()
        job.join(120)
    _exact(out["stats"], stream, 40)
    assert out["stats"].cluster["dropped"] == []


def test_a_nodes_own_shard_acknowledges_the_version_its_rows_were_chosen_at():
    """Merging at the nodes, a node's own client acknowledges the version at which its
    shard chose the rows it handed it, not the shard's version when it looks again: a
    merge by another node in between is still due to it, and reaches it next time."""
    from engine.cluster.protocol import encode_rows

    job = NodeJob(_spec(), workers=1)
    try:
        job.own_shard(0, 1, 0)
        job.merge_nodes = 2
        sync = job.shard_sync

        def with_another_merge_meanwhile(*args, **kwargs):
            out = sync(*args, **kwargs)
            # another node's delta lands on row 3 while this node applies its rows
            rows, values = encode_rows(np.array([3], np.int32), np.full((1, 3), 0.5, np.float32))
            job.shard_put(0, "n2", [["syn0", rows, values]])
            sync(0, "n2", 1, 2, None)
            return out

        job.shard_sync = with_another_merge_meanwhile
        job._sync_one(0, [], 1)
        job.shard_sync = sync
        assert not job.snapshot["syn0"][3].any()        # not seen yet
        job._sync_one(0, [], 1)
        assert np.allclose(job.snapshot["syn0"][3], 0.5)
        assert np.allclose(job.shared["syn0"][3], 0.5)
    finally:
        job.close()


def test_a_shards_owner_takes_pieces_in_one_call_and_replies_with_what_fits(monkeypatch):
    """shard_put takes a list of pieces, all checked before any is kept; shard_sync's reply
    carries the merged rows' first pieces up to SHARD_CALL_BYTES, the rest are pulled; together
    they are every due row, in order."""
    import engine.cluster.node as node
    from engine.cluster.protocol import decode_piece, encode_rows

    job = NodeJob(_spec(syn0=(40, 3), syn1neg=(40, 3), keep=(40,)), workers=1)
    try:
        job.own_shard(0, 1, 0)
        job.merge_nodes = 2
        good = [["syn0", *encode_rows(np.arange(0, 40, 2, dtype=np.int32),
                                      np.full((20, 3), 0.5, np.float32))],
                ["syn1neg", *encode_rows(np.array([1, 3], np.int32),
                                         np.ones((2, 3), np.float32))]]
        with pytest.raises(ValueError, match="outside"):     # one bad piece: none kept
            job.shard_put(0, "n2", good + [["syn0", *encode_rows(np.array([99], np.int32),
                                                                 np.ones((1, 3), np.float32))]])
        for bad in ([], [["syn9", *good[0][1:]]], "pieces", [good[0][:2]]):
            with pytest.raises(ValueError, match="shard_put"):
                job.shard_put(0, "n2", bad)
        job.shard_put(0, "n3", good)
        job.shard_sync(0, "n3", 1, 2, None)                  # merged: n3's delta, summed
        monkeypatch.setattr(node, "SHARD_CALL_BYTES", 3 * 16)   # three float32 rows a piece
        reply = job.shard_sync(0, "n2", 1, 2, None)          # n2 is due every row n3 changed
        rows = [decode_piece(p, job.weight_shapes) for p in reply["rows"]]
        assert 0 < len(rows) < reply["pieces"]
        rows += [decode_piece(job.shard_pull(0, "n2", i), job.weight_shapes)
                 for i in range(len(rows), reply["pieces"])]
        got = {n: np.concatenate([r for name, r, _ in rows if name == n])
               for n in ("syn0", "syn1neg")}
        assert got["syn0"].tolist() == list(range(0, 40, 2))
        assert got["syn1neg"].tolist() == [1, 3]
        assert all(np.allclose(v, 0.5 if name == "syn0" else 1.0) for name, _, v in rows)
    finally:
        job.close()


def test_a_node_draws_syn0_from_the_seed_only_when_it_matches_the_dispatchers():
    """seed_array fills syn0 (and its snapshot) with local training's draw when the checksum
    agrees; otherwise it leaves zeros behind, so that an upload starts from a clean array."""
    import zlib

    from engine.word2vec.state import init_vectors, is_initial

    job = NodeJob(_spec(), workers=1)
    try:
        want = np.empty_like(job.shared["syn0"])
        init_vectors(want, 11)
        assert is_initial(want, 11) and not is_initial(want, 12)
        crc = zlib.crc32(memoryview(want).cast("B"))
        assert job.seed_array("syn0", 12, crc) is False
        assert not job.shared["syn0"].any() and not job.snapshot["syn0"].any()
        assert job.seed_array("syn0", 11, crc) is True
        assert np.array_equal(job.shared["syn0"], want)
        assert np.array_equal(job.snapshot["syn0"], want)
        with pytest.raises(ValueError, match="only syn0"):
            job.seed_array("syn1neg", 11, crc)
    finally:
        job.close()


def test_a_node_past_its_pause_words_trains_no_more_until_its_next_exchange():
    """A node whose exchanges fall behind its training (a slow link) hands its training
    processes no task once it has trained `pause_words` since its last exchange; taking
    the delta opens the gate again. The job's pause is pause_rounds rounds, never under
    one; 0 never pauses."""
    assert ClusterConfig(round_words=200, pause_rounds=1.5).pause_words == 300
    assert ClusterConfig(round_words=400, pause_rounds=0.5).pause_words == 400  # a round
    assert ClusterConfig(round_words=200, pause_rounds=0).pause_words == 0
    assert ClusterConfig(round_words=1 << 50, pause_rounds=1000).pause_words == 1 << 52
    job = NodeJob(dict(_spec(), pause_words=300), workers=1)
    try:
        job.feed.feed(["t1", "t2", "t3"])
        assert job.feed.take() == "t1"
        job.trained_words = 300
        assert job.feed.take() is None                   # paused: nothing handed out
        job.trained_words = 299
        assert job.feed.take() == "t2"
        job.trained_words = 300
        job.take_delta(0)                                # the exchange takes the delta
        assert job.trained_words == 0 and job.feed.take() == "t3"
    finally:
        job.close()
    job = NodeJob(_spec(), workers=1)                    # pause_words 0
    try:
        job.feed.feed(["t1"])
        job.trained_words = 10 ** 9
        assert job.feed.take() == "t1"
    finally:
        job.close()


def test_a_worker_keeps_freed_memory_for_its_next_round():
    """keep_freed_memory (glibc): a large block freed and allocated again comes back from
    the heap without the kernel faulting in (and zeroing) fresh pages; by default the
    second round still faults. Each in its own process, as `engine worker` calls it."""
    import subprocess
    import sys

    code = """if True:
        import resource, sys
        import numpy as np
        from engine.runtime.memory import keep_freed_memory
        took = keep_freed_memory() if sys.argv[1] == "1" else True
        counts = []
        for _ in range(3):
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            b = np.ones(1 << 20, np.float32)          # 4 MB, every page touched
            del b
            counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
        print(int(took), *counts)
    """
    runs = {}
    for keep in ("0", "1"):
        out = subprocess.run([sys.executable, "-c", code, keep], capture_output=True,
                             text=True, timeout=60, check=True).stdout.split()
        runs[keep] = [int(x) for x in out]
    if not runs["1"][0]:
        pytest.skip("not glibc's malloc: keep_freed_memory changes nothing here")
    assert runs["0"][1] > 0 and runs["1"][1] > 0         # the first round faults pages in
    assert runs["0"][2] > 0                              # by default the second does again
    assert runs["1"][2] <= runs["0"][2] // 10            # kept: it reuses them


def test_a_threads_cpu_is_read_from_another_thread_and_kept_when_it_ends():
    """ThreadCpu (a node's dispatch thread, reported apart from its exchange CPU): a busy
    thread's seconds, read while it runs and after it ends; an idle thread's stay ~0."""
    import threading
    import time

    from engine.runtime.cpu import ThreadCpu

    busy, idle = ThreadCpu(), ThreadCpu()
    assert busy.read() == 0.0
    go = threading.Event()

    def spin(cpu, work):
        cpu.begin()
        try:
            end = time.perf_counter() + 0.3
            while time.perf_counter() < end:
                if work:
                    sum(range(1000))
                else:
                    go.wait(0.01)
        finally:
            cpu.end()

    threads = [threading.Thread(target=spin, args=(busy, True)),
               threading.Thread(target=spin, args=(idle, False))]
    for t in threads:
        t.start()
    time.sleep(0.15)
    mid = busy.read()
    for t in threads:
        t.join()
    assert 0.0 < mid < busy.read()
    assert busy.read() >= 0.1                 # ~0.3 s of work, less whatever else ran
    assert idle.read() < 0.05
    assert busy.read() == busy.read()          # ended: its total is kept


def test_a_cold_exchange_with_a_band_takes_its_rows_and_leaves_the_rest_for_the_next():
    """take_delta(1, band=B): the hot rows and the B most frequent of each matrix (rows
    0..B-1; syn1 would count from its last row); every other change stays in live -
    snapshot for a cold exchange without a band, which takes all of it and nothing twice."""
    from engine.cluster.protocol import decode_piece

    shapes = {"syn0": ((16, 3), "<f4"), "syn1neg": ((16, 3), "<f4"), "syn1": ((0, 3), "<f4"),
              "keep": ((16,), "<u4"), "noise": ((8,), "<u8"), "codes": ((1, 1), "|u1"),
              "points": ((1, 1), "<i4"), "code_lens": ((1,), "<i4")}
    spec = encode_job_spec(JobSpec(
        job="j1", member="n1", dim=3, vocab=16, settings=KernelSettings(1, 0, 5, 5, 1),
        products="loops", max_chunk_ids=10, timeout_seconds=5.0, peer_timeout=5.0, workers=1,
        hot_rows=2, local_hot=None, shapes=shapes))
    job = NodeJob(spec, workers=1)
    try:
        def rows_sent(cold, band):
            reply = job.take_delta(cold, band=band)
            got = {}
            for p in job.out_pieces[:reply["pieces"]]:
                name, idx, vals = decode_piece(p, job.weight_shapes)
                got.setdefault(name, []).extend(idx.tolist())
            return got

        for k in ("syn0", "syn1neg"):
            job.shared[k][:] += np.arange(1, 17, dtype=np.float32)[:, None]
        assert rows_sent(1, 6) == {"syn0": list(range(6)), "syn1neg": list(range(6))}
        assert rows_sent(0, 0) == {}                     # nothing new in the hot rows
        assert rows_sent(1, 0) == {"syn0": list(range(6, 16)),
                                   "syn1neg": list(range(6, 16))}
        assert rows_sent(1, 0) == {}
        for k in ("syn0", "syn1neg"):
            assert np.array_equal(job.snapshot[k], job.shared[k])
    finally:
        job.close()


def test_an_exchange_waiting_for_its_round_is_woken_once_the_round_is_trained():
    """wait_round returns as soon as the node has trained its round (or finished what it
    was fed), and the tasks finished before that do not wake it: each wake-up would be a
    context switch on the cores that train."""
    import time
    from types import SimpleNamespace

    job = NodeJob(_spec(), workers=1)
    try:
        wakes = []
        notify = job.wake.notify_all
        job.wake.notify_all = lambda: (wakes.append(job.trained_words), notify())
        job.fed = 10
        waiter = threading.Thread(target=job.wait_round, args=(100, 20.0))
        waiter.start()
        time.sleep(0.2)
        for i in range(3):
            job._task_done(SimpleNamespace(task_id=i, raw_words=30), 30)
        time.sleep(0.2)
        assert waiter.is_alive() and wakes == []        # 90 of 100 words: not woken
        t0 = time.monotonic()
        job._task_done(SimpleNamespace(task_id=3, raw_words=30), 30)
        waiter.join(5)
        assert not waiter.is_alive() and time.monotonic() - t0 < 0.5
        assert wakes == [120] and job.round_wanted == 0
        assert len(job.done) == 4
    finally:
        job.close()
