"""LocalEngine: train the weights on an id stream, epoch by epoch, on every core of this
machine (in-process with one)."""
from __future__ import annotations

import time

from ..runtime.progress import Progress
from ..runtime.shm import SharedArrays
from ..runtime.signals import signals_as_interrupt
from ..word2vec.checks import check_arrays, check_stream
from ..word2vec.idstream import ChunkReader, IdStream
from ..word2vec.schedule import KernelSettings, Task, TrainStats, by_epoch
from .kernel import WEIGHTS, limit_blas, make_trainer
from .session import LocalSession
from .sources import ListSource
from .workers import Standby


class LocalEngine:
    """Trains the weights in `arrays` (numpy, updated in place) on an id stream."""

    def __init__(self, workers: int = 1, progress_seconds: float = 5.0, show_progress=True,
                 on_tick=None, hot_words: int = 0, sync_words: int = 1024,
                 stall_seconds: float = 120.0, hot_tiers: int = 0,
                 standby: Standby | None = None):
        self.workers = max(1, int(workers))
        self.stall_seconds = stall_seconds
        self.standby = standby          # processes started earlier, taken by the session
        self.hot_words = hot_words
        self.sync_words = sync_words
        self.hot_tiers = hot_tiers
        self.progress_seconds = progress_seconds
        self.show_progress = show_progress
        self.on_tick = on_tick
        self.stats: TrainStats | None = None     # the run in progress (read by samplers)

    def train(self, arrays: dict, settings: KernelSettings, stream: IdStream,
              tasks: list[Task], checkpoint=None, on_epoch_end=None,
              weights: SharedArrays | None = None) -> TrainStats:
        """Train the tasks epoch by epoch (an epoch's tasks all finish before the next
        epoch's start). `checkpoint` (an engine.word2vec.checkpoint.Checkpointer) is handed
        the weights being trained (no copy) and the finished task ids whenever it says one
        is due. After
        each epoch `on_epoch_end(epoch, stats, weights)` is called, `weights` the current
        weights (views of the matrices being trained, valid during the call: nothing trains
        meanwhile); it returns True to stop training there. `self.stats` is the run's live
        TrainStats. `weights`: the arrays' weights are these shared-memory segments (the
        processes then train them in place: no copy in, none out)."""
        check_stream(stream, check_arrays(arrays, settings))   # before any kernel runs
        total = sum(t.raw_words for t in tasks)
        progress = Progress(total, self.progress_seconds, enabled=self.show_progress)
        stats = self.stats = TrainStats(workers=self.workers)
        finished: set[int] = set()
        live = {"weights": arrays, "epoch": []}   # the weights being trained; this epoch

        def done(task, trained, loss=0.0, examples=0):
            stats.add(task, trained, loss, examples)
            finished.add(task.task_id)
            progress.update(stats.raw_words, task.alpha1)

        def tick():
            if self.on_tick:
                self.on_tick()
            if checkpoint is not None and checkpoint.due(stats.raw_words):
                # written from the weights being trained, no copy of them: in-process between
                # tasks (training waits for it), else while the processes train on (rows are
                # written as they are then; tasks not finished now are trained again on resume)
                weights = {k: live["weights"][k] for k in WEIGHTS}
                waiting = {t.task_id for t in source.pending}
                running = (set() if self.workers == 1 else   # in-process: between tasks
                           {t.task_id for t in live["epoch"]} - waiting - finished)
                checkpoint.save(weights, set(finished), stats.raw_words, 0.0, running,
                                wait=self.workers == 1)

        def epoch_over(epoch_tasks, weights) -> bool:
            if on_epoch_end is None:
                return False
            h0 = time.perf_counter()
            try:
                return bool(on_epoch_end(epoch_tasks[0].epoch, stats,
                                         {k: weights[k] for k in WEIGHTS}))
            finally:                     # training time excludes the callbacks' own time
                stats.hook_seconds += time.perf_counter() - h0

        source = ListSource([])
        t0 = time.perf_counter()
        with signals_as_interrupt():
            if self.workers == 1:
                trainer = make_trainer(arrays, settings)
                for epoch_tasks in by_epoch(tasks):
                    live["epoch"] = epoch_tasks
                    self._train_inprocess(trainer, stream, epoch_tasks, done, tick,
                                          arrays["syn0"].shape[0])
                    if epoch_over(epoch_tasks, arrays):
                        stats.stopped_early = True
                        break
            else:
                if weights is not None and any(arrays[k] is not weights[k] for k in WEIGHTS):
                    raise ValueError("train: `weights` must be the arrays' own segments")
                with LocalSession(arrays, settings, stream.path, stream.max_chunk_ids,
                                  self.workers, self.hot_words, self.sync_words,
                                  self.hot_tiers, stall_seconds=self.stall_seconds,
                                  standby=self.standby, weights=weights) as session:
                    live["weights"] = session.shared
                    try:
                        for epoch_tasks in by_epoch(tasks):
                            live["epoch"] = epoch_tasks
                            source = ListSource(epoch_tasks)
                            c0 = time.thread_time()
                            session.run(source, done, tick)
                            stats.dispatch_seconds += time.thread_time() - c0
                            if epoch_over(epoch_tasks, session.shared):
                                stats.stopped_early = True
                                break
                    finally:
                        stats.lost_workers = session.lost_workers
                        stats.hot_rows = {"words": self.hot_words, "sync_words":
                                          self.sync_words if self.hot_words else 0,
                                          "tiers": self.hot_tiers if self.hot_words else 0}
                    if weights is None:          # trained on a copy: bring it back
                        for k in WEIGHTS:
                            arrays[k][...] = session.shared[k]
        stats.seconds = time.perf_counter() - t0 - stats.hook_seconds
        progress.finish()
        return stats

    @staticmethod
    def _train_inprocess(trainer, stream, tasks, done, tick, vocab: int):
        reader = ChunkReader(stream.path, stream.max_chunk_ids, vocab=vocab)
        try:
            with limit_blas():
                for task in tasks:
                    ids = reader.read(task.start, task.end)
                    trained = trainer.train(ids, task.seed, task.alpha0, task.alpha1)
                    done(task, trained, trainer.last_loss, trainer.last_examples)
                    tick()
        finally:
            reader.close()

