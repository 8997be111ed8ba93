import multiprocessing as mp
import os
import signal

import numpy as np

from conftest import segments_of
from engine.runtime.shm import SharedArrays


def _child(spec, mode):
    sa = SharedArrays.attach(spec)
    sa["a"][0] = 42
    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    sa.close()


def _leftovers():
    return segments_of()          # this process's: the parent creates, children attach


def test_child_exit_or_death_never_unlinks_parents_segment():
    before = set(_leftovers())
    ctx = mp.get_context("spawn")
    with SharedArrays.create({"a": np.zeros(4, np.float32)}) as sa:
        for mode in ("exit", "kill"):
            p = ctx.Process(target=_child, args=(sa.spec, mode))
            p.start()
            p.join()
            again = SharedArrays.attach(sa.spec)       # still there
            assert again["a"][0] == 42
            again.close()
            sa["a"][0] = 0
    assert set(_leftovers()) == before                 # the parent unlinked it
