"""The training schedule, shared by the local engine and the cluster: every chunk of every
epoch as a Task with its own RNG seed and learning-rate range, and the run's statistics."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

_MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class KernelSettings:
    sg: int
    hs: int
    negative: int
    window: int
    cbow_mean: int
    compute_loss: int = 0
    shrink_windows: int = 1
    prefetch_ahead: int = 2          # rows prefetched this many updates ahead (0: none)
    batched: int = 0                 # NS: one noise set per SG center word / per CBOW batch
    cbow_batch: int = 4              # CBOW batched: consecutive centers sharing one noise set
    two_pass: int = 0                # classic CBOW-NS: every score first, then every update
    blas: int = 0                    # batched SG: the products through BLAS sgemm, not loops


@dataclass(frozen=True)
class Task:
    """One chunk of one epoch: ids [start, end), its raw words, RNG seed, alpha range.
    `chunk` is the chunk's index in the id stream (the same in every epoch)."""
    task_id: int
    start: int
    end: int
    raw_words: int
    seed: int
    alpha0: float
    alpha1: float
    chunk: int = -1
    epoch: int = 0


@dataclass
class EpochStats:
    """What one epoch's finished tasks added up to (loss summed in double precision)."""
    epoch: int
    raw_words: int = 0
    effective_words: int = 0
    loss: float = 0.0
    examples: int = 0
    tasks: int = 0

    @property
    def loss_per_example(self) -> float | None:
        return self.loss / self.examples if self.examples else None


@dataclass
class TrainStats:
    raw_words: int = 0              # corpus words (all epochs) trained
    effective_words: int = 0        # after subsampling
    seconds: float = 0.0
    workers: int = 1
    lost_workers: list = field(default_factory=list)
    cluster: dict | None = None     # the cluster's own accounting (engine.cluster)
    loss: float = 0.0               # summed over every finished task (compute_loss)
    examples: int = 0
    epochs: dict = field(default_factory=dict)      # epoch -> EpochStats
    stopped_early: bool = False     # a callback asked to stop
    hook_seconds: float = 0.0       # spent in epoch-end callbacks (not in `seconds`)
    dispatch_seconds: float = 0.0   # CPU of the thread handing tasks to training processes
    hot_rows: dict | None = None    # local engine, several processes: the hot-row choice
    kernel: dict | None = None      # the kernel settings the run trained with (train_state)

    @property
    def words_per_sec(self) -> float:
        return self.raw_words / self.seconds if self.seconds > 0 else 0.0

    def absorb(self, part: "TrainStats") -> None:
        """Add the figures of a later run over other tasks (a run made of several calls)."""
        self.raw_words += part.raw_words
        self.effective_words += part.effective_words
        self.loss += part.loss
        self.examples += part.examples
        self.seconds += part.seconds
        self.dispatch_seconds += part.dispatch_seconds
        self.workers = part.workers
        self.lost_workers += part.lost_workers
        self.epochs.update(part.epochs)

    def add(self, task: Task, effective: int, loss: float = 0.0, examples: int = 0) -> None:
        """Count one finished task (each task is counted once, by whoever finished it)."""
        self.raw_words += task.raw_words
        self.effective_words += int(effective)
        self.loss += float(loss)
        self.examples += int(examples)
        ep = self.epochs.get(task.epoch)
        if ep is None:
            ep = self.epochs[task.epoch] = EpochStats(task.epoch)
        ep.raw_words += task.raw_words
        ep.effective_words += int(effective)
        ep.loss += float(loss)
        ep.examples += int(examples)
        ep.tasks += 1


def chunk_seed(seed: int, epoch: int, chunk: int) -> int:
    """A distinct RNG start for each (seed, epoch, chunk): results do not depend on which
    process (or node) trains a chunk."""
    return (seed * 0x9E3779B97F4A7C15 + (epoch + 1) * 0xC2B2AE3D27D4EB4F
            + (chunk + 1) * 0x165667B19E3779F9) & _MASK64


def plan_tasks(chunks: np.ndarray, raw_words: int, epochs: int, alpha: float,
               min_alpha: float, seed: int, first_epoch: int = 0,
               total_epochs: int | None = None) -> list[Task]:
    """Every chunk (rows of (start, end, raw words)) of every epoch, in order, with alpha
    decaying linearly from `alpha` to `min_alpha` over all planned raw words."""
    total_epochs = total_epochs or (first_epoch + epochs)
    raw = chunks[:, 2]
    starts = np.concatenate([[0], np.cumsum(raw)[:-1]])
    total = float(max(raw_words * (total_epochs - first_epoch), 1))
    tasks = []
    for epoch in range(first_epoch, first_epoch + epochs):
        done_before = (epoch - first_epoch) * raw_words
        for k, (s, e, r) in enumerate(chunks.tolist()):
            p0 = (done_before + starts[k]) / total
            p1 = (done_before + starts[k] + r) / total
            tasks.append(Task(len(tasks), s, e, r, chunk_seed(seed, epoch, k),
                              alpha - (alpha - min_alpha) * p0,
                              alpha - (alpha - min_alpha) * p1, k, epoch))
    return tasks


def by_epoch(tasks: list[Task]) -> list[list[Task]]:
    """The tasks grouped by epoch, in order."""
    groups: dict[int, list[Task]] = {}
    for t in tasks:
        groups.setdefault(t.epoch, []).append(t)
    return [groups[e] for e in sorted(groups)]
