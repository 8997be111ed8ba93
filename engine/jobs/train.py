"""Training a model's state on an id stream: the runner (the local engine or the
cluster's dispatcher) with its hot rows and kernel, epoch by epoch, with checkpoints and
per-epoch evaluation; what `engine run` and Word2Vec.train both call."""
from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np

from ..config import ClusterConfig, EngineConfig
from ..local.engine import LocalEngine
from ..local.hotrows import choose_hot_rows, hot_draw_shares
from ..local.kernel import WEIGHTS, choose_kernel, measure_products
from ..local.sources import plan_tasks
from ..local.workers import Standby
from ..runtime.blas import blas_products
from ..word2vec.idstream import IdStream
from ..word2vec.schedule import KernelSettings, TrainStats, by_epoch
from ..word2vec.state import ModelState

log = logging.getLogger("engine")


def make_runner(engine: EngineConfig, cluster: ClusterConfig | None = None,
                progress_seconds: float = 5.0, show_progress: bool = True, counts=None,
                hot: tuple | None = None, node_hot: dict | None = None,
                standby: Standby | None = None):
    """The engine that trains: local (every core here) or the cluster (the job's nodes).
    Both take train(arrays, settings, stream, tasks) -> TrainStats. Pyro4 is imported only
    for a cluster. `standby`: the local engine's processes, started earlier."""
    if cluster is not None and cluster.enabled:
        from ..cluster import ClusterEngine, read_key

        return ClusterEngine(cluster, read_key(cluster.key_file), progress_seconds,
                             show_progress, counts=counts, node_hot=node_hot,
                             products=engine.products)
    words, sync, tiers = hot or (0, 1024, 0)
    if words:
        log.info("hot rows: the %d most frequent words' rows trained on each process's own "
                 "copy, merged every %d trained words%s", words, sync,
                 f" (the first 1/{1 << tiers} of them; all every {sync << tiers})"
                 if tiers else "")
    return LocalEngine(engine.processes, progress_seconds, show_progress,
                       hot_words=words, sync_words=sync, stall_seconds=engine.stall_seconds,
                       hot_tiers=tiers, standby=standby)


def hot_rows(engine: EngineConfig, state: ModelState) -> tuple[int, int, int]:
    """The local engine's hot rows: (words, sync_words, tiers); none for one process.
    "auto" sizes them from the vocabulary and the process count (choose_hot_rows)."""
    c, procs = state.config, engine.processes
    if procs < 2:
        return 0, 1024, 0
    return choose_hot_rows(hot_rows_spec(engine, state), procs, len(state.vocab),
                           c.vector_size, state.vocab.raw_words, c)


def hot_rows_spec(engine: EngineConfig, state: ModelState) -> dict:
    """The job's hot-row settings as engine.local.hotrows.choose_hot_rows takes them: the engine's
    sizes, and for "auto" the vocabulary's cumulative row-draw shares. A cluster node gets
    this too and chooses for its own process count, which it knows only when it opens the
    job."""
    c = state.config
    spec = {"sync_words": int(engine.sync_words),
            "tiers": -1 if engine.hot_tiers == "auto" else int(engine.hot_tiers)}
    if engine.hot_words != "auto":
        spec["words"] = int(engine.hot_words)
        return spec
    keep = np.minimum(state.vocab.sample_thresholds(c.sample) / float(1 << 32), 1.0)
    spec["shares"] = hot_draw_shares(state.vocab.counts, keep, c.negative,
                                     c.ns_exponent).astype(np.float32)
    return spec


def kernel_settings(state: ModelState, engine: EngineConfig,
                    clustered: bool = False) -> KernelSettings:
    """The model's kernel settings with the engine's choice of kernel (choose_kernel). For a
    cluster, products = "auto" is left to each node to measure."""
    c = state.config
    return choose_kernel(state.kernel_settings, engine.kernel, engine.products,
                         engine.cbow_batch, c.vector_size, len(state.vocab), here=not clustered)


def train_state(state: ModelState, stream: IdStream, engine: EngineConfig, epochs: int,
                alpha: float, min_alpha: float, progress_seconds: float = 5.0,
                show_progress: bool = True, cluster: ClusterConfig | None = None,
                checkpoint=None, skip: set | None = None, on_epoch_end=None,
                watch=None, standby: Standby | None = None) -> TrainStats:
    """Train `state` in place for `epochs` more epochs over the id stream (less the tasks
    in `skip`: done before the checkpoint a run resumes from). `on_epoch_end(epoch, stats,
    weights)` runs after each epoch (True: stop there); `watch(runner)` is told the runner
    (whose `.stats` is the live TrainStats) before training starts; `standby`: training
    processes started while the corpus was prepared (engine.local.workers.Standby)."""
    tasks = plan_tasks(stream, epochs, alpha, min_alpha, state.config.seed,
                       first_epoch=state.epochs_trained)
    if skip:
        tasks = [t for t in tasks if t.task_id not in skip]
    clustered = cluster is not None and cluster.enabled
    runner = make_runner(engine, cluster, progress_seconds, show_progress,
                         counts=state.vocab.counts, hot=hot_rows(engine, state),
                         node_hot=hot_rows_spec(engine, state) if clustered else None,
                         standby=standby)
    if watch is not None:
        watch(runner)
    settings = kernel_settings(state, engine, clustered)
    try:
        if isinstance(runner, LocalEngine) and runner.workers > 1:
            state.share()                        # the processes train the model's own arrays
        else:
            state.make_writable()
        if isinstance(runner, LocalEngine):
            stats = runner.train(state.kernel_arrays(), settings, stream, tasks,
                                 checkpoint=checkpoint, on_epoch_end=on_epoch_end,
                                 weights=state.segments)
        else:
            stats = _train_by_epoch(runner, state, stream, tasks, checkpoint, on_epoch_end,
                                    settings)
    finally:
        if checkpoint is not None:
            checkpoint.close()
    stats.kernel = dataclasses.asdict(settings)
    if (settings.batched and settings.sg and engine.products == "auto" and not clustered
            and blas_products()):
        loops, blas = measure_products(settings, state.config.vector_size,
                                       len(state.vocab))   # the rates that chose (remembered)
        stats.kernel["products_measured"] = {"loops": round(loops), "blas": round(blas)}
    trained_epochs = len(stats.epochs) if stats.stopped_early else epochs
    state.epochs_trained += trained_epochs
    state.words_trained += stats.raw_words
    return stats


def _train_by_epoch(runner, state, stream, tasks, checkpoint, on_epoch_end,
                    settings) -> TrainStats:
    """A runner without epoch hooks (the cluster): one call for all tasks, the hook called
    afterwards for each epoch if it needs no barrier (`hook.needs_barrier` false: it only
    reads the figures), else one call per epoch (the job reopened on the nodes each time)
    and the hook between."""
    arrays = state.kernel_arrays()
    if on_epoch_end is None or not getattr(on_epoch_end, "needs_barrier", True):
        stats = runner.train(arrays, settings, stream, tasks, checkpoint=checkpoint,
                             init_seed=state.config.seed)
        if on_epoch_end is not None:
            for epoch in sorted(stats.epochs):
                on_epoch_end(epoch, stats, None)          # None: after the fact
        return stats
    total = TrainStats()
    for group in by_epoch(tasks):
        part = runner.train(arrays, settings, stream, group, checkpoint=checkpoint,
                            init_seed=state.config.seed)
        total.absorb(part)
        dropped = (total.cluster or {}).get("dropped", [])
        total.cluster = part.cluster
        if total.cluster is not None:
            total.cluster["dropped"] = dropped + list(total.cluster.get("dropped", []))
        h0 = time.perf_counter()
        stop = on_epoch_end(group[0].epoch, total, {k: arrays[k] for k in WEIGHTS})
        total.hook_seconds += time.perf_counter() - h0
        if stop:
            total.stopped_early = True
            break
    return total


class EpochCurve:
    """The per-epoch curve of a run (report.json's "curve"): loss, words/s, memory and,
    with `evaluate_fn(weights)`, evaluation scores after every epoch."""

    def __init__(self, mem=None, evaluate_fn=None):
        self.rows: list[dict] = []
        self.mem = mem
        self.evaluate_fn = evaluate_fn
        # without evaluations the rows can be made after training from its per-epoch
        # figures (a cluster then trains all epochs in one job; no per-epoch timing)
        self.needs_barrier = evaluate_fn is not None
        self.train_seconds = 0.0
        self.last = time.perf_counter()

    def __call__(self, epoch: int, stats: TrainStats, weights: dict | None) -> bool:
        """One row; `weights` None: called after training (no timing, no evaluation)."""
        now = time.perf_counter()
        live = weights is not None
        if live:
            self.train_seconds += now - self.last
        ep = stats.epochs.get(epoch)
        words = sum(e.raw_words for k, e in stats.epochs.items() if k <= epoch)
        row = {"epoch": epoch + 1, "words": words,
               "seconds": round(self.train_seconds, 3) if live else None,
               "loss": ep.loss if ep else None, "examples": ep.examples if ep else 0,
               "loss_per_example": ep.loss_per_example if ep else None,
               "words_per_sec": round(ep.raw_words / max(now - self.last, 1e-9), 1)
               if ep and live else None,
               "rss_mb": round(self.mem.peak_mb, 1) if self.mem else None,
               "analogy": None, "similarity": None}
        if self.evaluate_fn is not None and live:
            row.update(self.evaluate_fn(weights))
        self.rows.append(row)
        self.last = time.perf_counter()          # the evaluation is not training time
        return False


def live_probe(runner):
    """A timeline probe: words trained so far, and since the last sample the rate and the
    loss per example."""
    last = {"t": time.perf_counter(), "words": 0, "loss": 0.0, "examples": 0}

    def probe():
        stats = getattr(runner, "stats", None)
        if stats is None:
            return None
        t, words, loss, examples = (time.perf_counter(), stats.raw_words, stats.loss,
                                    stats.examples)
        rate = (words - last["words"]) / max(t - last["t"], 1e-9)
        new = examples - last["examples"]
        recent = (loss - last["loss"]) / new if new > 0 else None
        last.update(t=t, words=words, loss=loss, examples=examples)
        return {"words": words, "words_per_sec": round(rate, 1), "loss_per_example": recent}

    return probe
