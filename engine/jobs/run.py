"""One job end to end: corpus -> vocabulary -> id stream -> training -> vectors, saved
outputs, evaluations and report.json (or an [lsi] job's document vectors). The CLI and
the Python API both call run_job."""
from __future__ import annotations

import dataclasses
import logging
import os
import platform
import shutil
import sys
import time

from ..config import JobConfig
from ..errors import ConfigError, EngineError
from ..local.workers import Standby
from ..runtime.blas import blas_line, blas_summary
from ..runtime.memory import PeakMemory, self_peak_rss_mb
from ..word2vec.checkpoint import (
    Checkpointer,
    job_identity,
    parse_every,
    refuse_other_job,
    resume_point,
)
from ..word2vec.prepare import prepare_corpus
from ..word2vec.state import ModelState
from .corpus import corpus_source, retrained_words, scratch_folder, stream_for
from .outputs import (
    check_evaluate_files,
    check_output,
    check_output_room,
    epoch_scores,
    evaluate,
    neighbours,
    write_outputs,
    write_report,
)
from .train import EpochCurve, live_probe, train_state

log = logging.getLogger("engine")


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


def run_lda(job: JobConfig) -> dict:
    """An [lda] job: topics of [corpus] path into [output] dir (engine.documents)."""
    from ..documents.lda_job import LdaConfig, run_lda_job

    s = job.lda
    if not job.corpus.path:
        raise ConfigError("[corpus] path: an [lda] job needs a documents corpus")
    cfg = LdaConfig(path=job.corpus.path, output=job.output.dir, num_topics=s.num_topics,
                    no_below=s.no_below, no_above=s.no_above, keep_n=s.keep_n or None,
                    chunksize=s.chunksize, passes=s.passes, update_every=s.update_every,
                    alpha=s.alpha, eta=s.eta, decay=s.decay, offset=s.offset,
                    iterations=s.iterations, gamma_threshold=s.gamma_threshold,
                    workers=s.workers, processes=s.processes, dtype=s.dtype, ids=s.ids,
                    encoding_errors=job.corpus.encoding_errors, held_out=s.held_out,
                    topic_words=s.topic_words, coherence_words=s.coherence_words,
                    seed=s.seed)
    remote = None
    if job.cluster.enabled:
        from ..cluster import ClusterLda, check_reachable, read_key

        check_reachable(job.cluster)        # before the corpus is read: fail in seconds
        remote = ClusterLda(job.cluster, read_key(job.cluster.key_file))
    return run_lda_job(cfg, remote)


def run_job(job: JobConfig, show_progress: bool = True, resume: bool = False) -> dict:
    """Train, save and evaluate one job; returns the report (also in OUT/report.json).
    With `resume`, continue from the job's latest checkpoint (OUT/checkpoints). A job with
    an [lsi] section builds document vectors instead (run_lsi)."""
    if job.lsi is not None:
        if resume:
            raise ConfigError("--resume: an [lsi] job has no checkpoints; run it again")
        return run_lsi(job)
    if job.lda is not None:
        if resume:
            raise ConfigError("--resume: an [lda] job has no checkpoints; run it again")
        return run_lda(job)
    started = time.time()
    m, e = job.model, job.engine
    every = _check_job(job)
    source = corpus_source(job.corpus)
    if job.cluster.enabled:
        from ..cluster import check_reachable

        check_reachable(job.cluster)       # before the corpus is read: fail in seconds
    ckpt_dir = os.path.join(job.output.dir, "checkpoints")
    identity = job_identity(m, e.chunk_words, source.files)
    resume_from = None
    if resume:
        # the newest checkpoint that reads back whole (a damaged one is skipped, logged)
        resume_from = resume_point(ckpt_dir, ModelState.load)
        refuse_other_job(resume_from[1], identity, resume_from[0])
    # the training processes start now and wait while the corpus is counted and encoded
    local_procs = e.processes if e.processes > 1 and not job.cluster.enabled else 0
    with PeakMemory() as mem:
        with scratch_folder(e.cache_dir) as folder, Standby(local_procs) as standby:
            state, stream, times, resumed = _prepare(job, source, folder, resume_from)
            check_output_room(job.output.dir, len(state.vocab), m, job.output.text_vectors)
            plan = {"epochs": m.epochs, "alpha": m.alpha, "min_alpha": m.min_alpha,
                    "seed": m.seed, "chunks": len(stream.chunks),
                    "first_epoch": state.epochs_trained}
            words_before = resumed["words_done_before"] if resumed else 0
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
                                checkpoint=checkpointer,
                                skip=set(resumed["skip"]) if resumed else None,
                                on_epoch_end=curve,
                                watch=lambda runner: mem.start_timeline(
                                    live_probe(runner), job.output.progress_seconds),
                                standby=standby)
            train_window.append(time.time())
            mem.probe = None
            train_peak = mem.new_phase(interval=0.1)
            log.info("trained %d corpus words in %.1f s: %.0f words/s (%d processes)",
                     stats.raw_words, stats.seconds, stats.words_per_sec, stats.workers)
        kv = state.keyed_vectors()
        write_outputs(kv, state, job.output.dir, job.output.text_vectors)
        save_peak = mem.new_phase()
        if checkpointer is not None or resumed is not None:   # the model is whole: done with them
            shutil.rmtree(ckpt_dir, ignore_errors=True)
        report = {"corpus": source.path, "files": len(source.files), "workers": e.processes}
        report.update(_training_report(state, stream, times, stats, words_before))
        # when training began and ended (seconds since the epoch, this machine's clock): runs
        # side by side (engine bench --share-nothing) are timed over the union of theirs
        report["training_window"] = [round(t, 3) for t in train_window]
        report["curve"] = curve.rows
        report["timeline"] = mem.timeline
        if checkpointer is not None:
            report["checkpoints"] = checkpointer.written
        if resumed is not None:
            report["resumed"] = {k: v for k, v in resumed.items() if k != "skip"}
        if stats.cluster is not None:
            report["workers"] = stats.workers
            report["cluster"] = stats.cluster
        evaluate(kv, job.evaluate, report)
        report["neighbours"] = neighbours(kv, job.evaluate)
        evaluate_peak = mem.new_phase()
    # each phase's peak: the PSS of this process and its children, shared memory once
    report.update({
        "peak_rss_mb": round(mem.peak_mb, 1),
        "prepare_peak_rss_mb": round(prep_peak, 1),
        "train_peak_rss_mb": round(train_peak, 1),
        "save_peak_rss_mb": round(save_peak, 1),
        "evaluate_peak_rss_mb": round(evaluate_peak, 1),
        "parent_max_rss_mb": round(self_peak_rss_mb(), 1)})
    report["settings"] = {name: dataclasses.asdict(getattr(job, name)) for name in
                          ("model", "engine", "corpus", "cluster", "evaluate", "output")}
    report["machine"] = {"python": sys.version.split()[0], "platform": platform.platform(),
                         "cpu_count": os.cpu_count(), "blas": blas_summary()}
    report["wall_seconds"] = round(time.time() - started, 2)
    write_report(job.output.dir, report)
    return report


def _check_job(job: JobConfig) -> int:
    """What can be checked before anything is read: the settings that go together, the
    output folder, the evaluation files. Returns the checkpoint interval (0: none)."""
    every = parse_every(job.output.checkpoint_every)
    if every and job.cluster.enabled and job.evaluate.every_epoch:
        raise ConfigError("[output] checkpoint_every: not with [evaluate] every_epoch on a "
                          "cluster (each epoch is its own job there, and a checkpoint would "
                          "record only its epoch); drop one of them")
    if job.cluster.enabled:
        log.info("engine: cluster job (%s); %s", ", ".join(job.cluster.nodes) or
                 f"name server {job.cluster.nameserver}", blas_line())
    else:
        log.info("engine: %d training process(es); %s", job.engine.processes, blas_line())
    check_output(job.output.dir)
    check_evaluate_files(job.evaluate)
    return every


def _prepare(job: JobConfig, source, folder: str, resume_from):
    """(state, stream, times, resumed): a new model's vocabulary and id stream from the
    corpus, or the checkpoint's model (`resume_from`: resume_point's) with the
    corpus encoded in its vocabulary; `resumed` says what was done before (None: new)."""
    m, e = job.model, job.engine
    resumed = None
    if resume_from is not None:
        ckpt_path, progress, state, skipped = resume_from
        vocab = state.vocab
        stream, times = stream_for(source, state.vocab, folder, e, reuse=bool(e.cache_dir))
        if len(stream.chunks) != progress["plan"]["chunks"]:
            raise EngineError(f"{ckpt_path}: the corpus now cuts into {len(stream.chunks)} "
                              f"chunks, the checkpoint's plan has "
                              f"{progress['plan']['chunks']}")
        resumed = {"from": ckpt_path, "skipped": skipped,
                   "words_done_before": int(progress["words_done"]),
                   "tasks_done_before": len(progress["done_tasks"]),
                   "skip": progress["done_tasks"],
                   "retrained_words": retrained_words(stream,
                                                      progress.get("running_tasks", []))}
        log.info("resuming from %s: %d words (%d tasks) done before", ckpt_path,
                 resumed["words_done_before"], resumed["tasks_done_before"])
    else:
        vocab, stream, times = prepare_corpus(
            source, folder, m.min_count, m.max_final_vocab, m.max_vocab_size,
            e.processes, e.block_bytes, e.chunk_words)
    log.info("vocabulary: %d words (min_count %d) from %d corpus words in %.1f s",
             len(vocab), m.min_count, vocab.raw_words, times["vocab_seconds"])
    log.info("id stream: %d ids in %d chunks, %.1f s", stream.n_ids, len(stream.chunks),
             times["encode_seconds"])
    if not resumed:
        # trained by processes here: the weights are made in shared memory, once
        state = ModelState(m, vocab, shared=e.processes > 1 and not job.cluster.enabled)
        log.info("model: %d x %d weights made%s", len(vocab), m.vector_size,
                 " in shared memory" if state.segments is not None else "")
    return state, stream, times, resumed


def _training_report(state: ModelState, stream, times: dict, stats, words_before: int) -> dict:
    """report.json's figures of the corpus and the training."""
    m = state.config
    return {
        "corpus_words": state.vocab.raw_words, "sentences": stream.sentences,
        "vocab_size": len(state.vocab), "epochs": m.epochs,
        "vocab_seconds": round(times["vocab_seconds"], 3),
        "encode_seconds": round(times["encode_seconds"], 3),
        "training_seconds": round(stats.seconds, 3),
        "words_per_sec": round(stats.words_per_sec, 1),
        "effective_words_per_sec": round(stats.effective_words / max(stats.seconds, 1e-9), 1),
        "trained_words": stats.raw_words, "effective_words": stats.effective_words,
        "lost_workers": stats.lost_workers,
        # the parent's thread handing tasks to the training processes and taking their
        # results, its ticks (progress, checkpoints) included; a cluster's: cluster.cpu
        "dispatch_cpu_seconds": None if stats.cluster else round(stats.dispatch_seconds, 3),
        "hot_rows": stats.hot_rows,
        "kernel": stats.kernel,
        "trained_words_total": words_before + stats.raw_words,
        "loss": {"total": stats.loss, "examples": stats.examples,
                 "per_example": stats.loss / stats.examples if stats.examples else None,
                 "computed": bool(m.compute_loss)}}
