"""An LDA job end to end: documents corpus -> dictionary -> bag-of-words -> topics.

`run_lda_job(LdaConfig(...))` writes into the output folder, as a whole and atomically
(a crash leaves the old folder or the new one):

    topics.txt        each topic's top words with their probabilities, one topic a line
    model.npz         the LdaModel (LdaModel.load), no pickle
    doc_topics.npy    every document's topic mix (documents x topics, float32)
    doc_ids.txt       their ids, one a line, in the same order
    dictionary.json   the filtered dictionary (engine.documents.Dictionary.load)
    report.json       sizes, timings, peak memory, and per pass: the held-out perplexity
                      (document completion), the per-word bound, the training seconds so
                      far (scoring the passes is timed apart, as "evaluation"); the
                      topics' u_mass coherence at the end

The text passes are the LSI job's (tokens counted once, then each unit turned into a CSR
block of raw counts in a cache on disk), so memory holds blocks, never the corpus.
`held_out` documents, spread evenly over the corpus, are kept out of training and score
each pass.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse

from ..errors import ConfigError
from ..runtime.atomic import atomic_dir
from ..runtime.memory import PeakMemory
from .blocks import BlockCache, read_block
from .job import DocumentsJob, open_corpus, text_passes, write_report
from .lda import CsrCorpus, LdaModel, completion_perplexity, split_halves

log = logging.getLogger("engine")

PRIORS = ("symmetric", "asymmetric", "auto")


@dataclass(frozen=True)
class LdaConfig(DocumentsJob):
    """An LDA job: the text settings of every documents job, LdaModel's settings (gensim's
    defaults but the number of topics; workers 0 = every core), the held-out documents
    and the coherence's top words."""
    output: str = "lda"
    num_topics: int = 100
    passes: int = 1
    update_every: int = 1
    alpha: str = "symmetric"
    eta: str = "symmetric"
    decay: float = 0.5
    offset: float = 1.0
    iterations: int = 50
    gamma_threshold: float = 0.001
    workers: int = 0
    held_out: int = 1_000
    coherence_words: int = 20

    def validate(self) -> None:
        """One ConfigError naming the first bad field."""
        self.validate_text()
        for name in ("num_topics", "passes", "iterations", "coherence_words"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: {getattr(self, name)}; must be at least 1")
        for name in ("update_every", "workers", "held_out"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: {getattr(self, name)}; must be 0 or more")
        if self.alpha not in PRIORS:
            raise ConfigError(f"alpha: {self.alpha!r} is not one of {', '.join(PRIORS)}")
        if self.eta not in ("symmetric", "auto"):
            raise ConfigError(f"eta: {self.eta!r} is not one of symmetric, auto")


def _held_out_rows(n_docs: int, held_out: int) -> np.ndarray:
    """Which documents are held out: `held_out` of them spread evenly (none when the
    corpus has fewer than twice as many)."""
    if held_out <= 0 or n_docs < 2 * held_out:
        return np.zeros(0, np.int64)
    return np.linspace(0, n_docs - 1, held_out).round().astype(np.int64)


def run_lda_job(cfg: LdaConfig, remote=None) -> dict:
    """Run the job; returns the report (also written to report.json). `remote`: the E-steps
    on a cluster (engine.cluster.ClusterLda), as LdaModel's."""
    cfg.validate()
    start = time.perf_counter()
    source, cores, n_text, why_text = open_corpus(cfg)
    report: dict = {"model": "lda", "config": asdict(cfg), "cores": cores,
                    "text_processes": {"processes": n_text, "reason": why_text}}
    with PeakMemory(interval=0.05) as peak, BlockCache() as cache:
        phases = {}
        dictionary, ids_path, stats = text_passes(cfg, source, cache, n_text, "nnn")  # counts
        phases["text"] = peak.new_phase()
        n_terms, blocks = len(dictionary), list(cache.blocks)
        n_docs = sum(b.n_docs for b in blocks)
        if not n_terms or not sum(b.nnz for b in blocks):
            raise ConfigError(f"no_below / no_above / keep_n: no term of {cfg.path} is left "
                              f"after filtering ({stats.documents} documents)")
        if cfg.num_topics > n_terms:
            raise ConfigError(f"num_topics: {cfg.num_topics} topics for the {n_terms} terms of "
                              f"{cfg.path} left after filtering; at most {n_terms}")
        held = _held_out_rows(n_docs, cfg.held_out)

        def parts(train: bool):
            """The cached blocks, without (train) or only (not train) the held-out rows."""
            first = 0
            for b in blocks:
                m = read_block(b.path, n_terms)
                inside = held[(held >= first) & (held < first + m.shape[0])] - first
                first += m.shape[0]
                keep = np.ones(m.shape[0], bool)
                keep[inside] = False
                yield m[keep] if train else m[~keep]

        corpus = CsrCorpus(lambda: parts(True), n_docs - len(held))
        first_half = second_half = None
        if len(held):
            first_half, second_half = split_halves(scipy.sparse.vstack(list(parts(False)),
                                                                       format="csr"))
        model = LdaModel(None, cfg.num_topics, dictionary, chunksize=cfg.chunksize,
                         passes=cfg.passes, update_every=cfg.update_every, alpha=cfg.alpha,
                         eta=None if cfg.eta == "symmetric" else cfg.eta, decay=cfg.decay,
                         offset=cfg.offset, eval_every=None, iterations=cfg.iterations,
                         gamma_threshold=cfg.gamma_threshold, random_state=cfg.seed,
                         dtype=np.dtype(cfg.dtype), workers=cfg.workers,
                         distributed=remote is not None, remote=remote)
        curve: list[dict] = []
        t_train = time.perf_counter()
        evaluating = [0.0]                      # seconds spent scoring, left out of training

        def after_pass(pass_: int) -> None:
            t_eval = time.perf_counter()
            row = {"pass": pass_ + 1,
                   "seconds": round(t_eval - t_train - evaluating[0], 3)}
            if first_half is not None:
                gamma, _ = model.inference(first_half)
                theta = gamma / gamma.sum(axis=1, keepdims=True)
                row["held_out_perplexity"] = round(
                    completion_perplexity(model.get_topics(), theta, second_half), 3)
                # gensim's log_perplexity: the held-out documents standing for the corpus
                row["per_word_bound"] = round(model.log_perplexity(
                    first_half + second_half, total_docs=n_docs - len(held)), 5)
            curve.append(row)
            log.info("LDA pass %d: %s", pass_ + 1, ", ".join(f"{k} {v}" for k, v in
                                                            row.items() if k != "pass"))
            evaluating[0] += time.perf_counter() - t_eval

        model.pass_hook = after_pass
        model.update(corpus)
        train_s = time.perf_counter() - t_train - evaluating[0]
        phases["train"] = peak.new_phase()
        tops = model.top_topics(corpus, topn=cfg.coherence_words)
        coherence = float(np.mean([c for _, c in tops]))
        with atomic_dir(cfg.output) as out:
            t = time.perf_counter()
            _write_doc_topics(model, blocks, n_terms, n_docs,
                              os.path.join(out, "doc_topics.npy"))
            doc_s = time.perf_counter() - t
            shutil.copyfile(ids_path, os.path.join(out, "doc_ids.txt"))
            model.save(os.path.join(out, "model.npz"))
            dictionary.save(os.path.join(out, "dictionary.json"))
            with open(os.path.join(out, "topics.txt"), "w", encoding="utf-8") as fh:
                for i, words in model.show_topics(-1, cfg.topic_words):
                    fh.write(f"{i}\t{model.alpha[i]:.4f}\t{words}\n")
            report.update({
                "documents": n_docs, "held_out": int(len(held)), "terms": n_terms,
                "nonzeros": int(sum(b.nnz for b in blocks)), "topics": cfg.num_topics,
                "workers": model.workers, "passes": curve,
                **({"cluster": remote.report()} if remote is not None else {}),
                "coherence_u_mass": round(coherence, 5),
                "documents_per_second": round((n_docs - len(held)) * cfg.passes
                                              / max(train_s, 1e-9), 1),
                "seconds": {"count": round(stats.seconds["count"], 2),
                            "bag_of_words": round(stats.seconds["tfidf"], 2),
                            "train": round(train_s, 3),
                            "evaluation": round(evaluating[0], 2), "doc_topics": round(doc_s, 2),
                            "total": round(time.perf_counter() - start, 2)}})
            write_report(out, report, peak, phases)
    log.info("LDA job done in %.1f s, peak memory %.0f MB: %s", report["seconds"]["total"],
             report["peak_memory_mb"], cfg.output)
    return report


def _write_doc_topics(model: LdaModel, blocks, n_terms: int, n_docs: int, path: str) -> None:
    """Every document's topic mix, appended block by block to the .npy file (written, not
    mapped: a mapping's dirty pages would count in the job's memory until written back)."""
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(
            fh, {"descr": "<f4", "fortran_order": False, "shape": (n_docs, model.num_topics)})
        for b in blocks:
            m = read_block(b.path, n_terms)
            gamma, _ = model.inference(m)
            fh.write((gamma / gamma.sum(axis=1, keepdims=True)).astype("<f4").tobytes())
