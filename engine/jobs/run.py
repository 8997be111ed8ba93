"""One job end to end: corpus -> vocabulary -> id stream -> LocalEngine -> vectors ->
saved outputs, evaluations and report.json. The CLI and the Python API both call this."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time

import numpy as np

from ..runtime.atomic import atomic_file, fsync_dir
from ..runtime.blas import blas_line, blas_summary
from ..config import ClusterConfig, CorpusConfig, EngineConfig, JobConfig, ModelConfig
from ..word2vec.checkpoint import Checkpointer, job_identity, parse_every, refuse_other_job
from ..word2vec.checkpoint import latest as latest_checkpoint
from ..text.corpus import CorpusSource
from ..errors import ConfigError, EngineError, ResourceError
from ..word2vec.idstream import IdStream
from ..runtime.blas import blas_products
from ..local.kernel import WEIGHTS, choose_kernel, measure_products
from ..local.engine import LocalEngine
from ..local.workers import Standby
from ..local.hotrows import choose_hot_rows, hot_draw_shares
from ..local.sources import plan_tasks
from ..word2vec.schedule import KernelSettings, TrainStats, by_epoch
from ..runtime.shm import sweep_temp_dirs
from ..runtime.memory import PeakMemory, self_peak_rss_mb
from ..word2vec.prepare import (build_vocab, build_vocab_iterable, encode_corpus, encode_iterable,
                                prepare_corpus)
from ..word2vec.state import ModelState
from ..word2vec.vocab import Vocab

log = logging.getLogger("engine")
IDS_PREFIX = "engine-ids-"


def corpus_source(cfg: CorpusConfig) -> CorpusSource:
    path = cfg.path
    if not path:
        from ..text.sample import sample_corpus_path

        path = sample_corpus_path()
        log.info("corpus: the bundled sample (King James Bible) at %s", path)
    return CorpusSource(path, cfg.format, cfg.encoding_errors)


def make_vocab(corpus, model: ModelConfig, engine: EngineConfig) -> Vocab:
    """Pass 1 over a CorpusSource (parallel) or an iterable of token lists."""
    if isinstance(corpus, CorpusSource):
        return build_vocab(corpus, model.min_count, model.max_final_vocab, model.max_vocab_size,
                           engine.processes, engine.block_bytes)
    return build_vocab_iterable(corpus, model.min_count, model.max_final_vocab,
                                model.max_vocab_size)


def make_stream(corpus, vocab: Vocab, folder: str, engine: EngineConfig) -> IdStream:
    """Pass 2: encode the corpus once into an id stream in `folder`."""
    if isinstance(corpus, CorpusSource):
        return encode_corpus(corpus, vocab, folder, engine.chunk_words, engine.processes,
                             engine.block_bytes)
    return encode_iterable(corpus, vocab, folder, engine.chunk_words)


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
        if isinstance(runner, LocalEngine):
            stats = runner.train(state.kernel_arrays(), settings, stream, tasks,
                                 checkpoint=checkpoint, on_epoch_end=on_epoch_end)
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
        stats = runner.train(arrays, settings, stream, tasks, checkpoint=checkpoint)
        if on_epoch_end is not None:
            for epoch in sorted(stats.epochs):
                on_epoch_end(epoch, stats, None)          # None: after the fact
        return stats
    total = TrainStats()
    for group in by_epoch(tasks):
        part = runner.train(arrays, settings, stream, group, checkpoint=checkpoint)
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


class scratch_folder:
    """The id-stream folder: the configured cache_dir (kept) or a temp folder (removed)."""

    def __init__(self, configured: str = ""):
        self.configured = configured

    def __enter__(self) -> str:
        if self.configured:
            check_writable(self.configured, "[engine] cache_dir")
            return self.configured
        sweep_temp_dirs(IDS_PREFIX)           # left by runs that were killed
        try:
            self.tmp = tempfile.mkdtemp(prefix=f"{IDS_PREFIX}{os.getpid()}-")
        except OSError as exc:
            raise EngineError(f"{tempfile.gettempdir()}: cannot make a folder for the id "
                              f"stream there ({exc.strerror or exc}); set [engine] "
                              f"cache_dir") from None
        return self.tmp

    def __exit__(self, *exc):
        if not self.configured:
            shutil.rmtree(self.tmp, ignore_errors=True)


def stream_for(source: CorpusSource, vocab: Vocab, folder: str, e: EngineConfig,
               reuse: bool) -> tuple[IdStream, dict]:
    """The id stream of the corpus in this vocabulary: the one in `folder` if it was encoded
    with exactly these words (a kept cache_dir), else encoded again."""
    t0 = time.perf_counter()
    if reuse:
        try:
            if Vocab.load(folder).words == vocab.words:
                stream = IdStream(folder)
                log.info("id stream reused from %s", folder)
                return stream, {"vocab_seconds": 0.0, "encode_seconds": 0.0}
        except (OSError, ValueError, KeyError, EngineError):
            pass
    stream = encode_corpus(source, vocab, folder, e.chunk_words, e.processes, e.block_bytes)
    return stream, {"vocab_seconds": 0.0, "encode_seconds": time.perf_counter() - t0}


def retrained_words(stream: IdStream, running: list) -> int:
    """Words of the tasks that were running when the checkpoint's weights were copied:
    their partial updates are in those weights, and they train again."""
    raw = stream.chunks[:, 2]
    return int(sum(int(raw[t % len(raw)]) for t in running))


def check_output(out: str) -> None:
    """The output folder can be created and written: found before any work, not after."""
    check_writable(out, "[output] dir")


def check_writable(folder: str, setting: str) -> None:
    """`folder` exists or can be made, and a file can be written in it; else one
    EngineError line naming the setting and the folder."""
    try:
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".engine-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise EngineError(f"{setting} {folder}: cannot write there ({exc.strerror or exc})"
                          ) from None


def check_output_room(out: str, words: int, model: ModelConfig, text_vectors: bool) -> None:
    """Enough disk for the outputs (estimated from the vocabulary), before training. The
    outputs are written beside the earlier ones before replacing them, so the room they
    need is all of theirs."""
    d = model.vector_size
    matrices = 1 + (1 if model.negative else 0) + (1 if model.hs else 0)
    need = words * (4 * d * (matrices + 1) + 64)            # model folder + vectors.bin
    need += 64 << 10                                        # model.json, report.json...
    if text_vectors:
        need += words * (13 * d + 32)
    free = shutil.disk_usage(out).free
    if need > free:
        raise ResourceError(f"[output] dir {out}: {_mb(free)} MB free on its disk, the "
                            f"outputs need about {_mb(need)} MB")


def _mb(n: int) -> str:
    """Bytes as MB for a message, with the decimals a small number needs."""
    mb = n / 2**20
    return f"{mb:,.0f}" if mb >= 100 else f"{mb:.1f}" if mb >= 1 else f"{mb:.3f}"


def check_evaluate_files(cfg) -> None:
    """Every [evaluate] file can be opened: found before the corpus is read, not after
    training."""
    for key in ("analogies", "similarity"):
        for path in getattr(cfg, key):
            try:
                with open(path, "rb") as fh:
                    fh.read(1)
            except FileNotFoundError:
                raise ConfigError(f"[evaluate] {key}: {path}: file not found") from None
            except OSError as exc:
                raise ConfigError(f"[evaluate] {key}: {path}: cannot read "
                                  f"({exc.strerror or exc})") from None


def write_outputs(kv, state: ModelState, out: str, text_vectors: bool) -> None:
    """vectors.bin (and .txt) and the model folder, all or nothing: the vectors are staged
    under hidden names, the model folder replaces the earlier one atomically, then the
    staged files are renamed into place (which takes no room). A disk that fills up is an
    EngineError naming the path, and leaves the earlier outputs as they were."""
    os.makedirs(out, exist_ok=True)
    staged: list[tuple[str, str]] = []
    try:
        for name, binary in [("vectors.bin", True)] + ([("vectors.txt", False)]
                                                        if text_vectors else []):
            tmp = os.path.join(out, f".{name}.staged")
            with _output_errors(out, name):
                kv.save_word2vec_format(tmp, binary=binary)
            staged.append((tmp, os.path.join(out, name)))
        with _output_errors(out, "model"):
            state.save(os.path.join(out, "model"))
        while staged:
            os.replace(*staged.pop())
        fsync_dir(out)
    finally:
        for tmp, _ in staged:
            os.unlink(tmp)


class _output_errors:
    """An OSError writing output `name` -> one EngineError line naming it."""

    def __init__(self, out: str, name: str):
        self.out, self.name = out, name

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if isinstance(exc, OSError):
            raise EngineError(f"[output] dir {self.out}: cannot write {self.name} "
                              f"({exc.strerror or exc}); the earlier outputs there are "
                              f"unchanged") from None
        return False


def evaluate(kv, cfg, report: dict) -> None:
    """Run the configured evaluations into report['evaluation']. A file that cannot be
    scored (no question in the vocabulary, too few pairs) is recorded with the reason and
    logged: the trained model and the other figures are not lost over it."""
    ev = report.setdefault("evaluation", {})
    for path in cfg.analogies:
        try:
            acc, sections = kv.evaluate_word_analogies(path, restrict_vocab=cfg.restrict_vocab)
        except EngineError as exc:
            ev.setdefault("analogies", {})[path] = {"accuracy": None, "error": str(exc)}
            log.warning("analogies %s: not scored: %s", path, exc)
            continue
        total = sections[-1]
        n = len(total["correct"]) + len(total["incorrect"])
        ev.setdefault("analogies", {})[path] = {
            "accuracy": round(acc, 4), "evaluated": n,
            "sections": {s["section"]: round(len(s["correct"]) / max(
                len(s["correct"]) + len(s["incorrect"]), 1), 4) for s in sections[:-1]}}
        log.info("analogies %s: %.4f over %d questions", path, acc, n)
    for path in cfg.similarity:
        try:
            p, s, oov = kv.evaluate_word_pairs(path)
        except EngineError as exc:
            ev.setdefault("similarity", {})[path] = {"spearman": None, "error": str(exc)}
            log.warning("word pairs %s: not scored: %s", path, exc)
            continue
        ev.setdefault("similarity", {})[path] = {
            "spearman": round(s.statistic, 4), "pearson": round(p.statistic, 4),
            "oov_pct": round(oov, 2)}
        log.info("word pairs %s: spearman %.4f pearson %.4f (oov %.1f%%)", path, s.statistic,
                 p.statistic, oov)


def epoch_scores(kv, cfg) -> dict:
    """The first analogy file's accuracy and the first word-pair file's Spearman (a curve
    point); the full figures are report['evaluation'], after training."""
    report: dict = {}
    evaluate(kv, dataclasses.replace(cfg, analogies=cfg.analogies[:1],
                                     similarity=cfg.similarity[:1]), report)
    ev = report.get("evaluation", {})
    acc = next(iter(ev.get("analogies", {}).values()), {}).get("accuracy")
    rho = next(iter(ev.get("similarity", {}).values()), {}).get("spearman")
    return {"analogy": acc, "similarity": rho}


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


def neighbours(kv, cfg) -> dict:
    out = {}
    for word in cfg.neighbours:
        if word in kv:
            out[word] = [(w, round(s, 3)) for w, s in kv.most_similar(word, topn=cfg.topn)]
    return out


def run_lsi(job: JobConfig) -> dict:
    """An [lsi] job: document vectors of [corpus] path into [output] dir (engine.documents)."""
    from ..documents import LsiConfig, run_lsi_job

    s = job.lsi
    path = job.corpus.path
    if not path:
        raise ConfigError("[corpus] path: an [lsi] job needs a documents corpus")
    cfg = LsiConfig(path=path, output=job.output.dir, num_topics=s.num_topics,
                    no_below=s.no_below, no_above=s.no_above, keep_n=s.keep_n or None,
                    chunksize=s.chunksize, power_iters=s.power_iters,
                    extra_samples=s.extra_samples, method=s.method, processes=s.processes,
                    blas_threads=s.blas_threads, dtype=s.dtype, smartirs=s.smartirs or None,
                    ids=s.ids, encoding_errors=job.corpus.encoding_errors,
                    triplets=s.triplets or None, topic_words=s.topic_words,
                    seed=job.model.seed)
    decompose = None
    if job.cluster.enabled:
        from ..cluster import ClusterLsi, check_reachable, read_key

        check_reachable(job.cluster)        # before the corpus is read: fail in seconds
        decompose = ClusterLsi(job.cluster, read_key(job.cluster.key_file),
                               shares=s.shares).decompose
    report = run_lsi_job(cfg, decompose)
    report["model"] = "lsi"
    return report


def run_job(job: JobConfig, show_progress: bool = True, resume: bool = False) -> dict:
    """Train, save and evaluate one job; returns the report (also in OUT/report.json).
    With `resume`, continue from the job's latest checkpoint (OUT/checkpoints). A job with
    an [lsi] section builds document vectors instead (run_lsi)."""
    if job.lsi is not None:
        if resume:
            raise ConfigError("--resume: an [lsi] job has no checkpoints; run it again")
        return run_lsi(job)
    started = time.time()
    m, e = job.model, job.engine
    every = parse_every(job.output.checkpoint_every)
    if every and job.cluster.enabled and job.evaluate.every_epoch:
        raise ConfigError("[output] checkpoint_every: not with [evaluate] every_epoch on a "
                          "cluster (each epoch is its own job there, and a checkpoint would "
                          "record only its epoch); drop one of them")
    ckpt_dir = os.path.join(job.output.dir, "checkpoints")
    if job.cluster.enabled:
        log.info("engine: cluster job (%s); %s", ", ".join(job.cluster.nodes) or
                 f"name server {job.cluster.nameserver}", blas_line())
    else:
        log.info("engine: %d training process(es); %s", e.processes, blas_line())
    check_output(job.output.dir)
    check_evaluate_files(job.evaluate)
    source = corpus_source(job.corpus)
    report: dict = {"corpus": source.path, "files": len(source.files), "workers": e.processes}
    if job.cluster.enabled:
        from ..cluster import check_reachable

        check_reachable(job.cluster)       # before the corpus is read: fail in seconds
    identity = job_identity(m, e.chunk_words, source.files)
    resumed, skip, words_before = None, None, 0
    if resume:
        ckpt_path, progress = latest_checkpoint(ckpt_dir)
        refuse_other_job(progress, identity, ckpt_path)
    # the training processes start now and wait while the corpus is counted and encoded
    local_procs = e.processes if e.processes > 1 and not job.cluster.enabled else 0
    with PeakMemory() as mem, scratch_folder(e.cache_dir) as folder, \
            Standby(local_procs) as standby:
        if resume:
            state = ModelState.load(os.path.join(ckpt_path, "model"))
            vocab = state.vocab
            stream, times = stream_for(source, vocab, folder, e, reuse=bool(e.cache_dir))
            if len(stream.chunks) != progress["plan"]["chunks"]:
                raise EngineError(f"{ckpt_path}: the corpus now cuts into {len(stream.chunks)} "
                                  f"chunks, the checkpoint's plan has "
                                  f"{progress['plan']['chunks']}")
            skip, words_before = set(progress["done_tasks"]), int(progress["words_done"])
            resumed = {"from": ckpt_path, "words_done_before": words_before,
                       "tasks_done_before": len(skip)}
            log.info("resuming from %s: %d words (%d tasks) done before", ckpt_path,
                     words_before, len(skip))
        else:
            vocab, stream, times = prepare_corpus(
                source, folder, m.min_count, m.max_final_vocab, m.max_vocab_size,
                e.processes, e.block_bytes, e.chunk_words)
            state = ModelState(m, vocab)
        log.info("vocabulary: %d words (min_count %d) from %d corpus words in %.1f s",
                 len(vocab), m.min_count, vocab.raw_words, times["vocab_seconds"])
        log.info("id stream: %d ids in %d chunks, %.1f s", stream.n_ids, len(stream.chunks),
                 times["encode_seconds"])
        check_output_room(job.output.dir, len(vocab), m, job.output.text_vectors)
        plan = {"epochs": m.epochs, "alpha": m.alpha, "min_alpha": m.min_alpha,
                "seed": m.seed, "chunks": len(stream.chunks),
                "first_epoch": state.epochs_trained}
        if resumed is not None:
            resumed["retrained_words"] = retrained_words(stream,
                                                         progress.get("running_tasks", []))
        checkpointer = (Checkpointer(ckpt_dir, every, state, plan, identity, words_before)
                        if every else None)
        # training memory is steady: sample less often and leave the cores to the trainers
        prep_peak = mem.new_phase(interval=1.0)
        ev = job.evaluate
        curve = EpochCurve(mem, (lambda w: epoch_scores(state.keyed_vectors(w["syn0"]), ev))
                           if ev.every_epoch else None)
        train_window = [time.time()]
        stats = train_state(state, stream, e, m.epochs, m.alpha, m.min_alpha,
                            job.output.progress_seconds, show_progress, job.cluster,
                            checkpoint=checkpointer, skip=skip, on_epoch_end=curve,
                            watch=lambda runner: mem.start_timeline(
                                live_probe(runner), job.output.progress_seconds),
                            standby=standby)
        train_window.append(time.time())
        mem.probe = None
        train_peak = mem.new_phase()
        log.info("trained %d corpus words in %.1f s: %.0f words/s (%d processes)",
                 stats.raw_words, stats.seconds, stats.words_per_sec, stats.workers)
    kv = state.keyed_vectors()
    out = job.output.dir
    write_outputs(kv, state, out, job.output.text_vectors)
    if checkpointer is not None or resumed is not None:     # the model is whole: done with them
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    report.update({
        "corpus_words": vocab.raw_words, "sentences": stream.sentences,
        "vocab_size": len(vocab), "epochs": m.epochs,
        "vocab_seconds": round(times["vocab_seconds"], 3),
        "encode_seconds": round(times["encode_seconds"], 3),
        "training_seconds": round(stats.seconds, 3),
        # when training began and ended (seconds since the epoch, this machine's clock): runs
        # side by side (engine bench --share-nothing) are timed over the union of theirs
        "training_window": [round(t, 3) for t in train_window],
        "words_per_sec": round(stats.words_per_sec, 1),
        "effective_words_per_sec": round(stats.effective_words / max(stats.seconds, 1e-9), 1),
        "trained_words": stats.raw_words, "effective_words": stats.effective_words,
        "peak_rss_mb": round(mem.peak_mb, 1),
        "train_peak_rss_mb": round(train_peak, 1),
        "prepare_peak_rss_mb": round(prep_peak, 1),
        "parent_max_rss_mb": round(self_peak_rss_mb(), 1),
        "lost_workers": stats.lost_workers,
        "hot_rows": stats.hot_rows,
        "kernel": stats.kernel,
        "trained_words_total": words_before + stats.raw_words,
    })
    report["loss"] = {"total": stats.loss, "examples": stats.examples,
                      "per_example": stats.loss / stats.examples if stats.examples else None,
                      "computed": bool(m.compute_loss)}
    report["curve"] = curve.rows
    report["timeline"] = mem.timeline
    if checkpointer is not None:
        report["checkpoints"] = checkpointer.written
    if resumed is not None:
        report["resumed"] = resumed
    if stats.cluster is not None:
        report["workers"] = stats.workers
        report["cluster"] = stats.cluster
    evaluate(kv, job.evaluate, report)
    report["neighbours"] = neighbours(kv, job.evaluate)
    report["settings"] = {"model": dataclasses.asdict(m), "engine": dataclasses.asdict(e),
                          "corpus": dataclasses.asdict(job.corpus),
                          "cluster": dataclasses.asdict(job.cluster),
                          "evaluate": dataclasses.asdict(job.evaluate),
                          "output": dataclasses.asdict(job.output)}
    report["machine"] = {"python": sys.version.split()[0], "platform": platform.platform(),
                         "cpu_count": os.cpu_count(), "blas": blas_summary()}
    report["wall_seconds"] = round(time.time() - started, 2)
    try:
        with atomic_file(os.path.join(out, "report.json"), "w") as fh:
            json.dump(report, fh, indent=2)
    except OSError as exc:
        raise EngineError(f"[output] dir {out}: cannot write report.json "
                          f"({exc.strerror or exc})") from None
    return report
