"""An LSI job end to end: documents corpus -> dictionary -> TF-IDF -> SVD -> outputs.

`run_lsi_job(LsiConfig(...))` writes into the output folder, as a whole and atomically
(a crash leaves the old folder or the new one):

    topics.txt            the top words of each topic, one topic a line
    singular_values.npy   s (topics)
    u.npy                 the projection U (terms x topics); fold a TF-IDF vector x in as
                          U^T x (gensim's lsi[bow])
    doc_vectors.npy       U^T x of every corpus document (documents x topics, float32)
    doc_ids.txt           their ids, one a line, in the same order
    dictionary.json       the filtered dictionary (engine.documents.Dictionary.load)
    report.json           sizes, timings, peak memory, the processes x threads chosen and
                          why, and the triplet accuracy when a triplets file is given
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import numpy as np

from ..runtime.atomic import atomic_dir
from ..errors import ConfigError
from ..runtime.memory import PeakMemory
from ..runtime.procs import ProcessPool
from .blocks import BlockCache
from .corpus import ID_MODES, DocumentSource
from .evaluate import triplet_accuracy
from .lsi import LsiModel, SvdSettings, train_decomposition
from .parallel import LocalPasses, cpu_count, free_cores, plan_pieces
from .stream import build_cache, local_map
from .svd import Decomposition, one_blas_thread
from .tfidf import TfidfModel, resolve_smartirs

log = logging.getLogger("engine")

TEXT_BYTES_PER_PROCESS = 16 << 20     # below this much corpus (on disk) per extra
                                      # process, spawning costs more than it saves


@dataclass(frozen=True)
class DocumentsJob:
    """What every documents job (LSI, LDA) reads its corpus with: the text passes'
    settings (processes 0 = chosen from the corpus and the free cores), the dictionary's
    filters (keep_n None = no limit), blocks of `chunksize` documents, the output."""
    path: str
    output: str = "out"
    no_below: int = 5
    no_above: float = 0.5
    keep_n: int | None = 100_000
    chunksize: int = 2_000
    processes: int = 0
    dtype: str = "float32"
    ids: str = "auto"
    encoding_errors: str = "strict"
    topic_words: int = 10
    seed: int = 1

    def validate_text(self) -> None:
        """One ConfigError naming the first bad field of these settings."""
        if not self.path:
            raise ConfigError("path: no documents corpus given")
        if not self.output:
            raise ConfigError("output: no output folder given")
        for name in ("no_below", "processes"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: {getattr(self, name)}; must be 0 or more")
        for name in ("chunksize", "topic_words"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: {getattr(self, name)}; must be at least 1")
        if not 0 <= self.no_above <= 1:
            raise ConfigError(f"no_above: {self.no_above}; must be a share in [0, 1]")
        if self.keep_n is not None and self.keep_n < 1:
            raise ConfigError(f"keep_n: {self.keep_n}; must be at least 1 (or none)")
        if self.ids not in ID_MODES:
            raise ConfigError(f"ids: {self.ids!r} is not one of {', '.join(ID_MODES)}")
        if self.encoding_errors not in ("strict", "replace", "ignore"):
            raise ConfigError(f"encoding_errors: {self.encoding_errors!r} is not one of "
                              f"strict, replace, ignore")


@dataclass(frozen=True)
class LsiConfig(DocumentsJob):
    """An LSI job. processes / blas_threads 0 = chosen from the problem and the free cores
    (logged, and in report.json); chunksize: documents per block and per SVD piece (memory
    per thread grows with it, not with the corpus); triplets: an optional
    anchor<TAB>positive<TAB>negative file to score the document vectors on. dtype float32:
    the same triplet accuracy as float64 for less time and memory (docs/benchmarks.md,
    "What was tried and rejected")."""
    output: str = "lsi"
    num_topics: int = 200
    power_iters: int = 2
    extra_samples: int = 100
    method: str = "auto"
    blas_threads: int = 0
    smartirs: str | None = None
    triplets: str | None = None

    def validate(self) -> None:
        """One ConfigError naming the first bad field."""
        self.validate_text()
        if self.smartirs is not None:
            try:
                resolve_smartirs(self.smartirs)
            except Exception as exc:                    # one line naming the field
                raise ConfigError(str(exc)) from None
        if self.triplets is not None and not os.path.isfile(self.triplets):
            raise ConfigError(f"triplets: {self.triplets}: file not found")
        self.svd_settings().check()

    def svd_settings(self) -> SvdSettings:
        return SvdSettings(self.num_topics, self.chunksize, 1.0, self.power_iters,
                           self.extra_samples, self.dtype, self.seed, self.method,
                           self.processes, self.blas_threads)


def text_processes(cfg: DocumentsJob, corpus_bytes: int, cores: int) -> tuple[int, str]:
    """Processes for the text passes (tokenizing holds the GIL, so only processes help):
    the configured number, else one per free core when the corpus is big enough to repay
    starting them (about a second each)."""
    if cfg.processes:
        return cfg.processes, "set in the configuration"
    useful = 1 + corpus_bytes // TEXT_BYTES_PER_PROCESS
    if useful == 1 or cores == 1:
        return 1, f"{corpus_bytes / 2**20:.1f} MB of corpus on disk: not worth a pool"
    free = free_cores(cores)
    n = max(1, min(free, useful))
    return n, (f"{corpus_bytes / 2**20:.0f} MB of corpus on disk, {free} of {cores} "
               f"core(s) free")


def open_corpus(cfg: DocumentsJob) -> tuple[DocumentSource, int, int, str]:
    """The job's corpus, the cores, and the processes for its text passes (and why)."""
    source = DocumentSource(cfg.path, ids=cfg.ids, encoding_errors=cfg.encoding_errors,
                            max_docs=cfg.chunksize)
    corpus_bytes = sum(os.path.getsize(f) for f in source.files)
    cores = cpu_count()
    n_text, why_text = text_processes(cfg, corpus_bytes, cores)
    log.info("text passes: %d process(es): %s", n_text, why_text)
    return source, cores, n_text, why_text


def text_passes(cfg: DocumentsJob, source: DocumentSource, cache: BlockCache, processes: int,
                smartirs: str | None):
    """Both text passes into `cache` (weighted by `smartirs`; "nnn": raw counts), on
    `processes` processes: (dictionary, doc ids file, statistics)."""
    with ProcessPool(processes, name="engine-docs") if processes > 1 else nullcontext() as pool:
        return build_cache(source, cache, pool.map if pool is not None else local_map,
                           cfg.no_below, cfg.no_above, cfg.keep_n, smartirs, cfg.dtype)


def run_lsi_job(cfg: LsiConfig, decompose=None) -> dict:
    """Run the job; returns the report (also written to report.json). `decompose(blocks,
    n_terms, settings) -> (Decomposition, TrainReport)` replaces the local SVD (the
    cluster's, engine.cluster.lsi); the text passes and the outputs stay here."""
    cfg.validate()
    start = time.perf_counter()
    source, cores, n_text, why_text = open_corpus(cfg)
    report: dict = {"config": asdict(cfg), "cores": cores,
                    "text_processes": {"processes": n_text, "reason": why_text}}
    with PeakMemory(interval=0.05) as peak, BlockCache() as cache:
        phases = {}
        dictionary, ids_path, stats = text_passes(cfg, source, cache, n_text, cfg.smartirs)
        phases["text"] = peak.new_phase()
        if not len(dictionary) or not sum(b.nnz for b in cache.blocks):
            raise ConfigError(f"no_below / no_above / keep_n: no term of {cfg.path} is left "
                              f"after filtering ({stats.documents} documents, "
                              f"{stats.raw_tokens} distinct tokens)")
        decomposition, svd = (decompose or train_decomposition)(
            cache.blocks, len(dictionary), cfg.svd_settings())
        phases["svd"] = peak.new_phase()
        model = _model(cfg, dictionary, decomposition, stats.documents)
        with atomic_dir(cfg.output) as out:
            t = time.perf_counter()
            _write_doc_vectors(cache, len(dictionary), decomposition,
                               min(svd.split.lanes, cores),
                               os.path.join(out, "doc_vectors.npy"))
            vectors_s = time.perf_counter() - t
            shutil.copyfile(ids_path, os.path.join(out, "doc_ids.txt"))
            _write_model_files(out, model, dictionary, cfg.topic_words)
            evaluation = _evaluate(cfg, dictionary, model)
            report.update(_summary(cfg, stats, svd, len(dictionary), decomposition,
                                   vectors_s, evaluation, start))
            write_report(out, report, peak, phases)
    log.info("LSI job done in %.1f s, peak memory %.0f MB: %s", report["seconds"]["total"],
             report["peak_memory_mb"], cfg.output)
    return report


def write_report(out: str, report: dict, peak: PeakMemory, phases: dict) -> None:
    """The job's last phase closed, its peaks put in the report, report.json written."""
    phases["outputs"] = peak.new_phase()
    report["peak_memory_mb"] = round(peak.peak_mb, 1)
    report["phase_peak_memory_mb"] = {k: round(v, 1) for k, v in phases.items()}
    with open(os.path.join(out, "report.json"), "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2)


def _model(cfg: LsiConfig, dictionary, decomposition: Decomposition, n_docs: int) -> LsiModel:
    model = LsiModel(None, cfg.num_topics, dictionary, cfg.chunksize,
                     power_iters=cfg.power_iters, extra_samples=cfg.extra_samples,
                     dtype=np.dtype(cfg.dtype), random_seed=cfg.seed, method=cfg.method)
    model.absorb(decomposition, n_docs)
    return model


def _write_doc_vectors(cache: BlockCache, n_terms: int, d: Decomposition, threads: int,
                       path: str) -> None:
    """U^T x of every document, written straight into the .npy file (never in memory),
    on `threads` threads (one pass over the cache: a fraction of the SVD's time)."""
    n_docs = sum(b.n_docs for b in cache.blocks)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32,
                                    shape=(n_docs, len(d.s)))
    with one_blas_thread():
        LocalPasses(plan_pieces(cache.blocks, 2_000, threads), n_terms, d.u.dtype,
                    threads).project(d.u, out)
    out.flush()
    del out


def _write_model_files(out: str, model: LsiModel, dictionary, topic_words: int) -> None:
    np.save(os.path.join(out, "singular_values.npy"), model.projection.s)
    np.save(os.path.join(out, "u.npy"), model.projection.u)
    dictionary.save(os.path.join(out, "dictionary.json"))
    with open(os.path.join(out, "topics.txt"), "w", encoding="utf-8") as fh:
        for i, words in model.show_topics(-1, topic_words):
            fh.write(f"{i}\t{model.projection.s[i]:.4f}\t{words}\n")


def _evaluate(cfg: LsiConfig, dictionary, model: LsiModel) -> dict | None:
    if cfg.triplets is None:
        return None
    tfidf = TfidfModel(dictionary=dictionary, smartirs=cfg.smartirs)
    t = time.perf_counter()
    result = {"lsi": triplet_accuracy(cfg.triplets, dictionary, tfidf,
                                      lambda m: np.asarray(m @ model.projection.u)),
              "tfidf": triplet_accuracy(cfg.triplets, dictionary, tfidf, None)}
    result["seconds"] = round(time.perf_counter() - t, 2)
    log.info("LSI triplets: accuracy %.2f%% (TF-IDF alone %.2f%%)",
             100 * result["lsi"]["accuracy"], 100 * result["tfidf"]["accuracy"])
    return result


def _summary(cfg, stats, svd, n_terms, d: Decomposition, vectors_s, evaluation, start) -> dict:
    return {
        "documents": stats.documents, "positions": stats.positions,
        "distinct_tokens": stats.raw_tokens, "terms": n_terms, "units": stats.units,
        "nonzeros": svd.nnz, "topics": int(len(d.s)), "method": svd.method,
        "svd_split": {"processes": svd.split.processes, "threads": svd.split.threads,
                      "reason": svd.split.reason},
        "seconds": {"count": round(stats.seconds["count"], 2),
                    "tfidf": round(stats.seconds["tfidf"], 2),
                    "svd": round(svd.seconds, 2), "doc_vectors": round(vectors_s, 2),
                    "total": round(time.perf_counter() - start, 2)},
        "triplets": evaluation,
        **({"cluster": svd.cluster} if svd.cluster is not None else {}),
    }
