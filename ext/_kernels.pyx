# cython: language_level=3
"""Training kernels: one chunk of the id stream through skip-gram / CBOW with negative
sampling and/or hierarchical softmax, lock-free on shared weight matrices (Hogwild).

The loops run without the GIL over raw pointers; the vector arithmetic lives in vecmath.h
(compiled per instruction set). Thin `def` wrappers exist so the tests can check each
piece against a numpy reference.
"""
import numpy as np

from libc.math cimport exp
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

cdef extern from "vecmath.h" nogil:
    int EW_EXP_TABLE_SIZE
    float EW_MAX_EXP
    void ew_axpy(int dim, float a, const float *x, float *y)
    void ew_context_sum(int dim, const float *syn0, const int32_t *ctx, int n, int mean,
                        float *neu1)
    void ew_update(int dim, float *h, float *syn1neg, const int32_t *targets, int n,
                   float *syn1, const int32_t *points, const uint8_t *codes, int codelen,
                   float alpha, float *neu1e, const float *table, int apply_to_h)

cdef float EXP_TABLE[1001]       # EW_EXP_TABLE_SIZE + 1 (see ew_table_index)
cdef uint64_t ONE32 = (<uint64_t>1) << 32


cdef void _fill_table() noexcept:
    cdef int i
    cdef double e
    for i in range(EW_EXP_TABLE_SIZE + 1):
        e = exp((i / <double>EW_EXP_TABLE_SIZE * 2.0 - 1.0) * EW_MAX_EXP)
        EXP_TABLE[i] = <float>(e / (e + 1.0))


_fill_table()


cdef inline uint64_t splitmix64(uint64_t *state) noexcept nogil:
    """SplitMix64: tiny, fast, every output bit usable; one state word per chunk."""
    state[0] += <uint64_t>0x9E3779B97F4A7C15
    cdef uint64_t z = state[0]
    z = (z ^ (z >> 30)) * <uint64_t>0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * <uint64_t>0x94D049BB133111EB
    return z ^ (z >> 31)


cdef struct Params:
    float *syn0
    float *syn1neg
    float *syn1
    int dim
    int window
    int negative
    int hs
    int sg
    int cbow_mean
    uint64_t vocab_size
    const uint64_t *sample_thr   # keep word w if (r >> 32) < sample_thr[w]; >= 2**32: always
    const uint64_t *alias_prob   # noise sampler (Walker/Vose alias): bucket keeps itself if
    const int32_t *alias_idx     # (r & 0xffffffff) < alias_prob[bucket], else alias_idx
    const uint8_t *codes         # [vocab, max_code] Huffman bits
    const int32_t *points        # [vocab, max_code] inner-node rows of syn1
    const int32_t *code_lens
    int max_code


cdef struct Work:
    int32_t *sent      # kept words of the current sentence
    int32_t *targets   # positive + negatives of one update
    int32_t *ctx       # context words of one CBOW update
    float *neu1
    float *neu1e


cdef inline int draw_targets(const Params *p, int32_t word, uint64_t *rng,
                             int32_t *targets) noexcept nogil:
    cdef int n = 1, k
    cdef uint64_t r, bucket
    cdef int32_t t
    targets[0] = word
    for k in range(p.negative):
        r = splitmix64(rng)
        bucket = ((r >> 32) * p.vocab_size) >> 32
        if (r & <uint64_t>0xFFFFFFFF) < p.alias_prob[bucket]:
            t = <int32_t>bucket
        else:
            t = p.alias_idx[bucket]
        if t != word:
            targets[n] = t
            n += 1
    return n


cdef inline void output_step(const Params *p, int32_t word, float *h, float alpha,
                             uint64_t *rng, Work *w, int apply_to_h) noexcept nogil:
    """Both output layers for one (input vector h, predicted word): grads into w.neu1e,
    added to h too when apply_to_h (skip-gram)."""
    cdef int n = 0, codelen = 0
    if p.negative:
        n = draw_targets(p, word, rng, w.targets)
    if p.hs:
        codelen = p.code_lens[word]
    ew_update(p.dim, h, p.syn1neg, w.targets, n, p.syn1,
              p.points + <size_t>word * p.max_code, p.codes + <size_t>word * p.max_code,
              codelen, alpha, w.neu1e, EXP_TABLE, apply_to_h)


cdef int64_t train_ids(const Params *p, const int32_t *ids, Py_ssize_t n, uint64_t *rng,
                       float alpha0, float alpha1, Work *w) noexcept nogil:
    """Train on n ids (sentences separated by -1, ending with one); returns words trained.

    alpha goes linearly from alpha0 to alpha1 across the chunk (updated per sentence)."""
    cdef Py_ssize_t i = 0, start
    cdef int slen, pos, j, lo, hi, span, nctx
    cdef int32_t word
    cdef uint64_t thr
    cdef float alpha
    cdef int64_t trained = 0
    cdef float *l1
    while i < n:
        alpha = alpha0 + (alpha1 - alpha0) * (<float>i / <float>n)
        slen = 0
        while i < n and ids[i] >= 0:
            word = ids[i]
            i += 1
            thr = p.sample_thr[word]
            if thr < ONE32 and (splitmix64(rng) >> 32) >= thr:
                continue
            w.sent[slen] = word
            slen += 1
        i += 1
        trained += slen
        for pos in range(slen):
            span = p.window - <int>(splitmix64(rng) % <uint64_t>p.window)
            lo = pos - span if pos > span else 0
            hi = pos + span + 1 if pos + span + 1 < slen else slen
            if p.sg:
                for j in range(lo, hi):
                    if j == pos:
                        continue
                    l1 = p.syn0 + <size_t>w.sent[j] * p.dim
                    output_step(p, w.sent[pos], l1, alpha, rng, w, 1)
            else:
                nctx = 0
                for j in range(lo, hi):
                    if j != pos:
                        w.ctx[nctx] = w.sent[j]
                        nctx += 1
                if nctx == 0:
                    continue
                ew_context_sum(p.dim, p.syn0, w.ctx, nctx, p.cbow_mean, w.neu1)
                output_step(p, w.sent[pos], w.neu1, alpha, rng, w, 0)
                if not p.cbow_mean:
                    for j in range(p.dim):
                        w.neu1e[j] /= nctx
                for j in range(nctx):
                    ew_axpy(p.dim, 1.0, w.neu1e, p.syn0 + <size_t>w.ctx[j] * p.dim)
    return trained


cdef float *_fptr(float[:, ::1] a):
    return &a[0, 0] if a.shape[0] > 0 else NULL


cdef class Trainer:
    """One process's handle on the model: pointers into (shared) weights and tables, plus
    private scratch buffers. `train(ids, seed, alpha0, alpha1)` runs one chunk nogil."""
    cdef Params p
    cdef Work w
    cdef object _refs
    cdef Py_ssize_t sent_cap

    def __cinit__(self, float[:, ::1] syn0, float[:, ::1] syn1neg, float[:, ::1] syn1,
                  const uint64_t[::1] sample_thr, const uint64_t[::1] alias_prob,
                  const int32_t[::1] alias_idx, const uint8_t[:, ::1] codes,
                  const int32_t[:, ::1] points, const int32_t[::1] code_lens,
                  int sg, int hs, int negative, int window, int cbow_mean):
        if window < 1:
            raise ValueError("window must be >= 1")
        if negative < 0 or (negative == 0 and not hs):
            raise ValueError("need negative > 0 or hs = 1")
        if negative and syn1neg.shape[0] != syn0.shape[0]:
            raise ValueError("syn1neg must have one row per word")
        if hs and syn1.shape[0] < syn0.shape[0] - 1:
            raise ValueError("syn1 must have vocab-1 rows")
        self._refs = (syn0, syn1neg, syn1, sample_thr, alias_prob, alias_idx, codes, points,
                      code_lens)
        self.p.syn0 = _fptr(syn0)
        self.p.syn1neg = _fptr(syn1neg)
        self.p.syn1 = _fptr(syn1)
        self.p.dim = syn0.shape[1]
        self.p.window = window
        self.p.negative = negative
        self.p.hs = hs
        self.p.sg = sg
        self.p.cbow_mean = cbow_mean
        self.p.vocab_size = syn0.shape[0]
        self.p.sample_thr = &sample_thr[0]
        self.p.alias_prob = &alias_prob[0] if negative else NULL
        self.p.alias_idx = &alias_idx[0] if negative else NULL
        self.p.max_code = codes.shape[1] if hs else 0
        self.p.codes = &codes[0, 0] if hs else NULL
        self.p.points = &points[0, 0] if hs else NULL
        self.p.code_lens = &code_lens[0] if hs else NULL
        self.w.targets = <int32_t *>malloc((negative + 1) * sizeof(int32_t))
        self.w.ctx = <int32_t *>malloc((2 * window + 1) * sizeof(int32_t))
        self.w.neu1 = <float *>malloc(self.p.dim * sizeof(float))
        self.w.neu1e = <float *>malloc(self.p.dim * sizeof(float))
        self.w.sent = NULL
        self.sent_cap = 0
        if not (self.w.targets and self.w.ctx and self.w.neu1 and self.w.neu1e):
            raise MemoryError()

    def __dealloc__(self):
        free(self.w.targets)
        free(self.w.ctx)
        free(self.w.neu1)
        free(self.w.neu1e)
        free(self.w.sent)

    def train(self, const int32_t[::1] ids, uint64_t seed, float alpha0, float alpha1):
        """Train on one chunk of ids (sentences end with -1). Returns words trained
        (after subsampling). The same (ids, seed, alphas, weights) give the same result."""
        cdef Py_ssize_t n = ids.shape[0]
        cdef uint64_t rng = seed
        cdef int64_t trained
        if n == 0:
            return 0
        if n > self.sent_cap:
            free(self.w.sent)
            self.w.sent = <int32_t *>malloc(n * sizeof(int32_t))
            if self.w.sent == NULL:
                self.sent_cap = 0
                raise MemoryError()
            self.sent_cap = n
        with nogil:
            trained = train_ids(&self.p, &ids[0], n, &rng, alpha0, alpha1, &self.w)
        return trained


# ---- thin wrappers over single steps, for the tests ---------------------------------------

def exp_table():
    """The sigmoid table the kernels use (float32, EW_EXP_TABLE_SIZE + 1 entries)."""
    return np.asarray(<float[:EW_EXP_TABLE_SIZE + 1]>EXP_TABLE).copy()


def max_exp():
    return EW_MAX_EXP


def splitmix_draws(uint64_t seed, int n):
    """The first n outputs of the kernels' RNG started from `seed`."""
    out = np.empty(n, dtype=np.uint64)
    cdef uint64_t[::1] o = out
    cdef uint64_t s = seed
    cdef int i
    for i in range(n):
        o[i] = splitmix64(&s)
    return out


def out_ns(const float[::1] h, float[:, ::1] syn1neg, const int32_t[::1] targets, float alpha):
    """One negative-sampling step; updates syn1neg in place, returns neu1e."""
    neu1e = np.zeros(h.shape[0], dtype=np.float32)
    cdef float[::1] e = neu1e
    ew_update(h.shape[0], <float *>&h[0], &syn1neg[0, 0], &targets[0], targets.shape[0], NULL,
              NULL, NULL, 0, alpha, &e[0], EXP_TABLE, 0)
    return neu1e


def out_hs(const float[::1] h, float[:, ::1] syn1, const int32_t[::1] points,
           const uint8_t[::1] codes, float alpha):
    """One hierarchical-softmax step; updates syn1 in place, returns neu1e."""
    neu1e = np.zeros(h.shape[0], dtype=np.float32)
    cdef float[::1] e = neu1e
    ew_update(h.shape[0], <float *>&h[0], NULL, NULL, 0, &syn1[0, 0], &points[0], &codes[0],
              points.shape[0], alpha, &e[0], EXP_TABLE, 0)
    return neu1e


def context_sum(const float[:, ::1] syn0, const int32_t[::1] ctx, int mean):
    neu1 = np.empty(syn0.shape[1], dtype=np.float32)
    cdef float[::1] o = neu1
    ew_context_sum(syn0.shape[1], &syn0[0, 0], &ctx[0], ctx.shape[0], mean, &o[0])
    return neu1
