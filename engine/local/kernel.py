"""The kernel a job trains with: the Trainer built from the settings and the weights, and
the measurement that picks BLAS sgemm or register-blocked loops for batched skip-gram's
small products."""
from __future__ import annotations

import logging
import time

import numpy as np

from ..runtime.blas import sgemm_capsule
from ..word2vec.schedule import KernelSettings

log = logging.getLogger("engine")

WEIGHTS = ("syn0", "syn1neg", "syn1")
TABLES = ("keep", "noise", "codes", "points", "code_lens")


def make_trainer(arrays: dict, settings: KernelSettings, hot_words: int = 0,
                 sync_every: int = 1024, hot_tiers: int = 0):
    from .._kernels import Trainer

    return Trainer(arrays["syn0"], arrays["syn1neg"], arrays["syn1"], arrays["keep"],
                   arrays["noise"], arrays["codes"], arrays["points"],
                   arrays["code_lens"], settings.sg, settings.hs, settings.negative,
                   settings.window, settings.cbow_mean, hot_words, sync_every,
                   settings.compute_loss, settings.shrink_windows, settings.prefetch_ahead,
                   settings.batched, settings.cbow_batch, hot_tiers, settings.two_pass,
                   _sgemm(settings.blas))


def _sgemm(blas: int):
    """BLAS sgemm's capsule for the kernel when the settings ask for BLAS products."""
    if not blas:
        return None
    cap = sgemm_capsule()
    if cap is None:
        raise ValueError("blas products need scipy's BLAS (scipy.linalg.cython_blas with "
                         "sgemm), which does not load here")
    return cap


_PRODUCT_RATES: dict = {}


def measure_products(settings: KernelSettings, vector_size: int, vocab_words: int,
                     words: int = 0, rounds: int = 3) -> tuple[float, float]:
    """Words/s of batched skip-gram on this machine with its small products in
    register-blocked loops and through BLAS sgemm: (loops, blas), each the best of `rounds`
    interleaved trials (after one untimed) on one synthetic chunk of `words` ids (0: 20,000
    at 100 dims, window 5 and negative 5, fewer for more work a word) drawn Zipf-like from
    at most 20,000 words (fewer above 100 dims), sentences of 20, at the job's vector_size,
    window, negative and loss setting; in this process, BLAS held to one thread as in
    training. Which is faster depends on the host: OpenBLAS has a fast path for small
    matrices on some processors only (README, "BLAS products": BLAS 1.04-1.28x the loops on
    one VM, under half their rate on another). Remembered per process for the same shape
    (whatever `settings.blas` says)."""
    import dataclasses
    from collections import Counter

    from ..word2vec.vocab import Vocab

    d = max(1, int(vector_size))
    v = max(2, min(int(vocab_words), 20_000, 2_000_000 // d))        # at most 8 MB a matrix
    # about the work of 20,000 words at 100 dims, window 5, negative 5 (0.02-0.05 s a trial)
    work = d * (settings.window + 1) * (settings.negative + 1)
    words = int(words) or int(min(20_000, max(500, 72_000_000 // work)))
    trial = dataclasses.replace(settings, sg=1, hs=0, batched=1, blas=0)
    key = (dataclasses.astuple(trial), d, v, words)
    if key in _PRODUCT_RATES:
        return _PRODUCT_RATES[key]
    counts = Counter({f"w{i}": max(1, int(1e7 / (i + 1))) for i in range(v)})
    vocab = Vocab.build(counts, sum(counts.values()), min_count=1)
    rng = np.random.default_rng(0)
    p = 1.0 / np.arange(1, v + 1)
    ids = rng.choice(v, size=words, p=p / p.sum()).astype(np.int32)
    ids[19::20] = -1                                   # sentence ends
    syn0 = ((rng.random((v, d), dtype=np.float32) * 2 - 1) / d).astype(np.float32)
    arrays = {"syn0": syn0, "syn1neg": np.zeros((v, d), np.float32),
              "syn1": np.zeros((0, d), np.float32), "keep": vocab.keep_table(1e-3),
              "noise": vocab.noise_table(0.75), "codes": np.zeros((1, 1), np.uint8),
              "points": np.zeros((1, 1), np.int32), "code_lens": np.zeros(1, np.int32)}
    trainers = [make_trainer(arrays, dataclasses.replace(trial, blas=blas)) for blas in (0, 1)]
    best = [float("inf"), float("inf")]
    with limit_blas():
        for r in range(rounds + 1):                    # the first round warms up, untimed
            for k in ((0, 1) if r % 2 else (1, 0)):
                t0 = time.perf_counter()
                trainers[k].train(ids, r + 1, 0.025, 0.025)
                if r:
                    best[k] = min(best[k], time.perf_counter() - t0)
    rates = (words / best[0], words / best[1])
    _PRODUCT_RATES[key] = rates
    return rates


def products_by_measure(settings: KernelSettings, vector_size: int, vocab_words: int,
                        lib: str | None, who: str) -> bool:
    """products = "auto": whether batched skip-gram's products go through BLAS here, that is
    whether scipy's BLAS (`lib`, from blas_products) measures faster than the loops on this
    machine (measure_products); the choice and both rates are logged under `who`. The
    local engine and each cluster node decide with it."""
    if lib is None:
        log.info("%s: loops (auto; scipy's BLAS sgemm does not load here)", who)
        return False
    loops, blas = measure_products(settings, vector_size, vocab_words)
    log.info("%s: %s (auto, measured here: loops %s words/s, BLAS (%s) %s)", who,
             "BLAS sgemm" if blas > loops else "loops", f"{loops:,.0f}", lib, f"{blas:,.0f}")
    return blas > loops


def limit_blas():
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)

