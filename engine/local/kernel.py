"""The kernel a job trains with, decided in one place: which update (classic, batched,
two-pass) from the job's `[engine] kernel`, whether batched skip-gram's small products go
through BLAS sgemm or register-blocked loops on this machine (measured, for "auto"), and
the Trainer built from those settings and the weights. The job (engine.jobs.run), the local
engine and every cluster node call it."""
from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np

from ..errors import ConfigError
from ..runtime.blas import blas_products, sgemm_capsule
from ..word2vec.schedule import KernelSettings

log = logging.getLogger("engine")

WEIGHTS = ("syn0", "syn1neg", "syn1")
TABLES = ("keep", "noise", "codes", "points", "code_lens")
KERNELS = ("auto", "classic", "batched", "two-pass")
PRODUCTS = ("auto", "blas", "loops")


def choose_kernel(base: KernelSettings, kernel: str = "auto", products: str = "auto",
                  cbow_batch: int = 4, vector_size: int = 100, vocab_words: int = 0,
                  here: bool = True) -> KernelSettings:
    """The kernel settings a job trains with: `base` (the model's settings) with the update
    `kernel` names ("auto": batched skip-gram, two-pass CBOW, classic for hierarchical
    softmax) and, for batched skip-gram, BLAS products unless `products` is "loops". With
    `here`, the products are settled for this machine (settle_products); a cluster job
    leaves that to each node (blas 1 then means "BLAS where it is faster there"). The
    choice is logged. A kernel the model cannot use is a ConfigError."""
    if kernel not in KERNELS:
        raise ConfigError(f"[engine] kernel: expected one of {', '.join(KERNELS)}")
    if products not in PRODUCTS:
        raise ConfigError(f"[engine] products: expected one of {', '.join(PRODUCTS)}")
    fits = bool(base.negative and not base.hs)
    if kernel == "batched" and not fits:
        raise ConfigError("[engine] kernel: \"batched\" is negative sampling only (hs = 0, "
                          "negative > 0; skip-gram or CBOW)")
    if kernel == "two-pass" and not (fits and not base.sg):
        raise ConfigError("[engine] kernel: \"two-pass\" is CBOW with negative sampling only "
                          "(sg = 0, hs = 0, negative > 0)")
    # auto: batched skip-gram (as good or better), two-pass CBOW (as good, faster); not
    # batched CBOW, whose noise words shared between centers cost analogy accuracy
    batched = fits and (kernel == "batched" or (kernel == "auto" and base.sg))
    two_pass = fits and not base.sg and kernel in ("two-pass", "auto")
    blas = batched and base.sg and products != "loops"
    if products == "blas" and not (batched and base.sg):
        log.warning("[engine] products = \"blas\" is for the batched skip-gram kernel only; "
                    "this job's kernel runs its loops")
    settings = dataclasses.replace(base, batched=int(batched), cbow_batch=int(cbow_batch),
                                   two_pass=int(two_pass), blas=int(blas))
    if here:
        settings = settle_products(settings, products, vector_size, vocab_words, "products",
                                   strict=True)
    if two_pass:
        log.info("kernel: two-pass CBOW (every score of an update, then its rows)%s",
                 " (auto; [engine] kernel = \"batched\" picks batched CBOW: faster, a "
                 "little less accurate)" if kernel == "auto" else "")
    elif not batched:
        log.info("kernel: classic")
    elif base.sg:
        log.info("kernel: batched skip-gram (one noise set per center word), its products "
                 "through %s", "register-blocked loops" if not settings.blas else
                 "BLAS sgemm" if here else
                 "BLAS sgemm where it measures faster on the node" if products == "auto"
                 else "BLAS sgemm on every node where it loads")
    else:
        log.info("kernel: batched CBOW (one noise set per %d consecutive centers)",
                 settings.cbow_batch)
    return settings


def settle_products(settings: KernelSettings, products: str, vector_size: int,
                    vocab_words: int, who: str, strict: bool) -> KernelSettings:
    """Batched skip-gram's products on this machine: BLAS sgemm when `products` is "blas"
    and scipy's BLAS loads, or "auto" and it measures faster than the loops here
    (products_by_measure); else the same arithmetic in loops. "blas" where it does not
    load is a ConfigError with `strict` (the user's own machine), else a warning (a
    cluster node follows the job as far as it can)."""
    if not settings.blas:
        return settings
    lib = blas_products()
    if products == "blas" and lib is not None:
        return settings
    if products == "blas":
        if strict:
            raise ConfigError("[engine] products: \"blas\" needs scipy's BLAS "
                              "(scipy.linalg.cython_blas with sgemm), which does not load here")
        log.warning("%s: products = \"blas\", but scipy's BLAS sgemm does not load here; "
                    "the products run in loops", who)
        return dataclasses.replace(settings, blas=0)
    if products_by_measure(settings, vector_size, vocab_words, lib, who):
        return settings
    return dataclasses.replace(settings, blas=0)


def make_trainer(arrays: dict, settings: KernelSettings, hot_words: int = 0,
                 sync_every: int = 1024, hot_tiers: int = 0):
    from .._kernels import Trainer

    return Trainer(arrays["syn0"], arrays["syn1neg"], arrays["syn1"], arrays["keep"],
                   arrays["noise"], arrays["codes"], arrays["points"], arrays["code_lens"],
                   sg=settings.sg, hs=settings.hs, negative=settings.negative,
                   window=settings.window, cbow_mean=settings.cbow_mean,
                   hot_words=hot_words, sync_every=sync_every,
                   compute_loss=settings.compute_loss, shrink_windows=settings.shrink_windows,
                   prefetch_ahead=settings.prefetch_ahead, batched=settings.batched,
                   cbow_batch=settings.cbow_batch, hot_tiers=hot_tiers,
                   two_pass=settings.two_pass, sgemm=_sgemm(settings.blas))


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
    matrices on some processors only (docs/benchmarks.md, "BLAS or loops"). Remembered per process for the same shape
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

