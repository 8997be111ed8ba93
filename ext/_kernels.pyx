# cython: language_level=3
"""Training kernels: one chunk of the id stream through skip-gram / CBOW with negative
sampling and/or hierarchical softmax, lock-free on shared weight matrices (Hogwild).

The loops run without the GIL over raw pointers; the vector arithmetic lives in vecmath.h
(compiled per instruction set). Thin `def` wrappers exist so the tests can check each
piece against a numpy reference.
"""
import numpy as np

from libc.math cimport exp, log
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset
from cpython.pycapsule cimport PyCapsule_GetName, PyCapsule_GetPointer

cdef extern from "vecmath.h" nogil:
    int EW_EXP_TABLE_SIZE
    float EW_MAX_EXP
    void ew_axpy(int dim, float a, const float *x, float *y)
    void ew_context_sum(int dim, float **rows, int n, int mean, float *neu1)
    void ew_prefetch_rows(int dim, float **rows, int n)
    void ew_scatter(int dim, const float *x, float **rows, int n)
    void ew_update(int dim, float *h, float **outs, int n, float **nodes, const uint8_t *codes,
                   int codelen, float alpha, float *neu1e, const float *table, int apply_to_h,
                   const float *nll, double *loss)
    void ew_sync_rows(size_t count, float *shared, float *local, float *base)
    float *ew_pick_row(float *shared, float *hot, int64_t w, int64_t hot_words, int64_t dim)
    void ew_update_ns(int dim, float *h, float **outs, int n, float alpha, float *neu1e,
                      const float *table, int apply_to_h, const float *nll, double *loss,
                      float *g)
    void ew_update_batch(int dim, float **ins, int nin, float **outs, int nout, float alpha,
                         float *g, float *e, const float *table, const float *nll,
                         double *loss)
    ctypedef void (*ew_sgemm_fn)(const char *transa, const char *transb, const int *m,
                                 const int *n, const int *k, const float *alpha,
                                 const float *a, const int *lda, const float *b,
                                 const int *ldb, const float *beta, float *c, const int *ldc)
    void ew_update_batch_blas(int dim, float **ins, int nin, float **outs, int nout,
                              float alpha, float *g, float *e, float *c, float *t,
                              const float *table, const float *nll, double *loss,
                              ew_sgemm_fn sgemm)
    void ew_cbow_hidden(int dim, int nb, float **rows, int first, const int *lo,
                        const int *hi, const int *ctr, int mean, float *H)
    void ew_update_cbow_batch(int dim, int nb, const float *H, float **pos,
                              const int32_t *words, float **negs, const int32_t *negw,
                              int nneg, float alpha, const int *div, float *E, float *g,
                              const float *table, const float *nll, double *loss)
    void ew_cbow_scatter(int dim, int nb, float **rows, int first, int last, const int *lo,
                         const int *hi, const int *ctr, const float *E, float *acc)
    int64_t ew_pingpong(int64_t *line, int role, int64_t rounds, int64_t patience)
    float ew_absmax(int dim, const float *x)
    float ew_to_int8(int dim, const float *x, float m, signed char *q)
    float ew_to_levels(int dim, const float *x, float m, float levels, signed char *q)
    float ew_quantize_delta(int dim, const float *live, float *snap, signed char *q, float *buf,
                            float levels)
    void ew_pack4(int dim, const signed char *q, unsigned char *p)
    void ew_unpack4(int dim, const unsigned char *p, signed char *q)
    void ew_add_int8(int dim, float s, const signed char *q, float *y)
    void ew_add_int8_pair(int dim, float s, const signed char *q, float *y, float *z)
    void ew_rebase_int8(int dim, float s, const signed char *q, float *live, float *snap)
    int ew_row_moved(int dim, const float *live, const float *snap, float t2)
    int64_t ew_delta_block(int dim, int64_t n, const float *live, float *snap, float levels,
                           int width, int32_t *rows, unsigned char *q, float *scale,
                           float *buf, int64_t first, int64_t step)

cdef float EXP_TABLE[1001]       # EW_EXP_TABLE_SIZE + 1 (see ew_table_index)
cdef float NLL_TABLE[2002]       # per entry: -log(1 - sigmoid), -log(sigmoid) (the loss)
cdef uint32_t KEEP_ALWAYS = 0xFFFFFFFF
DEF AHEAD = 2                    # default: prefetch the rows of the update this many ahead
DEF CB_MAX = 16                  # CBOW batched: at most this many centers per batch
DEF CB_DEFAULT = 4               # ... and by default this many


cdef void _fill_table() noexcept:
    cdef int i
    cdef double e
    for i in range(EW_EXP_TABLE_SIZE + 1):
        e = exp((i / <double>EW_EXP_TABLE_SIZE * 2.0 - 1.0) * EW_MAX_EXP)
        EXP_TABLE[i] = <float>(e / (e + 1.0))
        NLL_TABLE[2 * i] = <float>(-log(1.0 - <double>EXP_TABLE[i]))
        NLL_TABLE[2 * i + 1] = <float>(-log(<double>EXP_TABLE[i]))


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
    int shrink_windows           # window of each position drawn from 1..window (else window)
    const float *nll             # NLL_TABLE when the loss is computed, else NULL
    int ahead                    # prefetch this many updates ahead (0: no prefetch)
    int batched                  # NS: SG, one set of noise words per center (ew_update_batch);
                                 # CBOW, one per cbow_batch consecutive centers
    int cbow_batch               # (ew_update_cbow_batch)
    int two_pass                 # classic CBOW-NS: every score, then every update (ew_update_ns)
    ew_sgemm_fn sgemm            # batched SG: its products through BLAS (NULL: the loops)
    uint64_t vocab_size
    const uint32_t *keep         # keep word w if (r >> 32) < keep[w]; KEEP_ALWAYS: no draw
    const uint64_t *noise        # noise sampler (Walker/Vose alias), one word per bucket: the
                                 # bucket keeps itself if (r & 0xffffffff) < its low half,
                                 # else gives its high half
    const uint8_t *codes         # [vocab, max_code] Huffman bits
    const int32_t *points        # [vocab, max_code] inner-node rows of syn1
    const int32_t *code_lens
    int max_code


cdef struct Hot:
    # Process-local copies of the most contended rows (multi-process runs only): words
    # [0, words) of syn0 and syn1neg (the vocabulary is sorted by count, so these are the
    # most frequent words) and inner nodes [node_lo, vocab - 1) of syn1 (the top of the
    # Huffman tree, which every hierarchical-softmax update walks). Updates go to the copies
    # and reach the shared rows every `every` trained words (counted across chunks) and when
    # the owner calls Trainer.sync(). With `tiers` = L > 0 the rows are merged in tiers: the
    # first `first` = ceil(words / 2^L) rows (the most frequent) at every merge, then twice
    # as many at every second merge, ... all of them at every 2^L-th (a rarer row collects
    # about as many updates between its merges as a frequent one does between its own, at
    # a fraction of the cost of merging every row every time). `merges` counts the merges
    # done, `syncs` the full ones (those that carry every row's updates).
    int words
    int node_lo
    int nodes
    int every
    int since
    int tiers
    int first
    int64_t merges
    int64_t syncs
    float *syn0
    float *syn0_base
    float *syn1neg
    float *syn1neg_base
    float *syn1
    float *syn1_base


cdef struct Plan:
    # Everything one center position needs, drawn from the RNG in the original order (window,
    # then the noise words of each update), so the rows of the next update can be prefetched
    # while the current one computes.
    int32_t word
    int nin          # input rows: SG, one update per row; CBOW, the context of one update
    int nupd         # updates planned: SG nin; CBOW 1 (0 without context)
    int codelen
    float **ins      # [2 * window]
    float **outs     # [2 * window * (negative + 1)]: update q's rows at q * (negative + 1)
    int *nouts       # [2 * window]
    float **nodes    # [max_code]
    const uint8_t *codes


cdef struct CPlan:
    # CBOW batched: up to cbow_batch consecutive centers of a sentence (those with context),
    # their windows, and the noise words they share, drawn in order (each center's window,
    # then the batch's `negative` noise words).
    int nb                 # centers
    int first, last        # the positions their windows cover, [first, last)
    int lo[CB_MAX]         # center b's window [lo, hi), without ctr
    int hi[CB_MAX]
    int ctr[CB_MAX]
    int nin[CB_MAX]        # context size
    int32_t words[CB_MAX]
    float *pos[CB_MAX]     # output row of each center's word
    int nneg
    float **negs           # [negative] noise rows
    int32_t *negw          # [negative] noise words
    float **rows           # [CB_MAX + 2 * window]: input row of position first + i


cdef struct Work:
    int32_t *sent      # kept words of the current sentence
    float *neu1
    float *neu1e
    float *gbuf        # batched: [2 * window, negative + 1] gradients
    float *ebuf        # batched: [max(2 * window, CB_MAX), dim] input gradients
    float *hbuf        # CBOW batched: [CB_MAX, dim] hidden vectors
    float *cbuf        # batched SG through BLAS: [2 * window, dim] gathered context rows
    float *tbuf        # and [negative + 1, dim] gathered output rows
    double loss        # summed negative log-likelihood of this chunk's predictions
    int64_t examples   # updates made (SG: center-context pairs; CBOW: centers with context)
    Plan plan[2]
    CPlan cplan[2]


cdef inline float *in_row(const Params *p, const Hot *hot, int32_t w) noexcept nogil:
    return ew_pick_row(p.syn0, hot.syn0, w, hot.words, p.dim)


cdef inline float *out_row(const Params *p, const Hot *hot, int32_t w) noexcept nogil:
    return ew_pick_row(p.syn1neg, hot.syn1neg, w, hot.words, p.dim)


cdef inline float *node_row(const Params *p, const Hot *hot, int32_t node) noexcept nogil:
    if node >= hot.node_lo:
        return hot.syn1 + <size_t>(node - hot.node_lo) * p.dim
    return p.syn1 + <size_t>node * p.dim


cdef inline int32_t draw_noise(const Params *p, uint64_t *rng) noexcept nogil:
    """One noise word (one RNG draw)."""
    cdef uint64_t r = splitmix64(rng)
    cdef uint64_t bucket = ((r >> 32) * p.vocab_size) >> 32
    cdef uint64_t entry = p.noise[bucket]
    if (r & <uint64_t>0xFFFFFFFF) < (entry & <uint64_t>0xFFFFFFFF):
        return <int32_t>bucket
    return <int32_t>(entry >> 32)


cdef inline int draw_targets(const Params *p, const Hot *hot, int32_t word, uint64_t *rng,
                             float **outs) noexcept nogil:
    """Rows of the true word and of `negative` noise words (a draw equal to the word is
    dropped). Returns how many."""
    cdef int n = 1, k
    cdef int32_t t
    outs[0] = out_row(p, hot, word)
    for k in range(p.negative):
        t = draw_noise(p, rng)
        if t != word:
            outs[n] = out_row(p, hot, t)
            n += 1
    return n


cdef void plan_position(const Params *p, const Hot *hot, const int32_t *sent, int slen,
                        int pos, uint64_t *rng, Plan *pl) noexcept nogil:
    cdef int span = p.window
    if p.shrink_windows:
        span = p.window - <int>(splitmix64(rng) % <uint64_t>p.window)
    cdef int lo = pos - span if pos > span else 0
    cdef int hi = pos + span + 1 if pos + span + 1 < slen else slen
    cdef int j, q, c
    cdef int stride = p.negative + 1
    cdef const int32_t *pts
    pl.word = sent[pos]
    pl.nin = 0
    for j in range(lo, hi):
        if j != pos:
            pl.ins[pl.nin] = in_row(p, hot, sent[j])
            pl.nin += 1
    pl.nupd = pl.nin if (p.sg and not p.batched) else (1 if pl.nin > 0 else 0)
    for q in range(pl.nupd):
        pl.nouts[q] = draw_targets(p, hot, pl.word, rng, pl.outs + q * stride) if p.negative else 0
    pl.codelen = 0
    if p.hs and pl.nupd > 0:
        pl.codelen = p.code_lens[pl.word]
        pl.codes = p.codes + <size_t>pl.word * p.max_code
        pts = p.points + <size_t>pl.word * p.max_code
        for c in range(pl.codelen):
            pl.nodes[c] = node_row(p, hot, pts[c])


cdef void plan_cbow(const Params *p, const Hot *hot, const int32_t *sent, int slen, int pos0,
                    uint64_t *rng, CPlan *cp) noexcept nogil:
    """The batch of CBOW centers from pos0: each one's window (one draw each with
    shrink_windows), then the batch's noise words (if any center has context)."""
    cdef int nb = p.cbow_batch if pos0 + p.cbow_batch <= slen else slen - pos0
    cdef int b, k, j, pos, span, lo, hi
    cdef int first = slen, last = 0
    cp.nb = 0
    cp.nneg = 0
    for b in range(nb):
        pos = pos0 + b
        span = p.window
        if p.shrink_windows:
            span = p.window - <int>(splitmix64(rng) % <uint64_t>p.window)
        lo = pos - span if pos > span else 0
        hi = pos + span + 1 if pos + span + 1 < slen else slen
        if hi - lo <= 1:
            continue                 # no context (a one-word sentence)
        k = cp.nb
        cp.lo[k] = lo
        cp.hi[k] = hi
        cp.ctr[k] = pos
        cp.nin[k] = hi - lo - 1
        cp.words[k] = sent[pos]
        cp.pos[k] = out_row(p, hot, sent[pos])
        if lo < first:
            first = lo
        if hi > last:
            last = hi
        cp.nb += 1
    if cp.nb == 0:
        return
    cp.first = first
    cp.last = last
    for j in range(first, last):
        cp.rows[j - first] = in_row(p, hot, sent[j])
    cp.nneg = p.negative
    for k in range(p.negative):
        cp.negw[k] = draw_noise(p, rng)
        cp.negs[k] = out_row(p, hot, cp.negw[k])


cdef inline void prefetch_cbow(const Params *p, const CPlan *cp, int done) noexcept nogil:
    """Start loading the rows batch cp will touch (but input rows of positions before
    `done`, which the batch before it has just used)."""
    if cp.nb == 0:
        return
    cdef int skip = done - cp.first
    if skip < 0:
        skip = 0
    if skip < cp.last - cp.first:
        ew_prefetch_rows(p.dim, cp.rows + skip, cp.last - cp.first - skip)
    ew_prefetch_rows(p.dim, <float **>cp.pos, cp.nb)
    ew_prefetch_rows(p.dim, cp.negs, cp.nneg)


cdef void run_cbow(const Params *p, CPlan *cp, float alpha, Work *w) noexcept nogil:
    """One batch of CBOW centers: hidden vectors, the shared-noise update, the input
    gradients onto the context rows."""
    if cp.nb == 0:
        return
    w.examples += cp.nb
    ew_cbow_hidden(p.dim, cp.nb, cp.rows, cp.first, cp.lo, cp.hi, cp.ctr, p.cbow_mean,
                   w.hbuf)
    ew_update_cbow_batch(p.dim, cp.nb, w.hbuf, cp.pos, cp.words, cp.negs, cp.negw, cp.nneg,
                         alpha, NULL if p.cbow_mean else cp.nin, w.ebuf, w.gbuf, EXP_TABLE,
                         p.nll, &w.loss)
    ew_cbow_scatter(p.dim, cp.nb, cp.rows, cp.first, cp.last, cp.lo, cp.hi, cp.ctr, w.ebuf,
                    w.neu1)


cdef inline void prefetch_update(const Params *p, const Plan *pl, int q) noexcept nogil:
    """Start loading the rows update q of plan pl will touch (its Huffman nodes once, with its
    first update)."""
    if q >= pl.nupd:
        return
    if p.sg and not p.batched:
        ew_prefetch_rows(p.dim, pl.ins + q, 1)
    else:
        ew_prefetch_rows(p.dim, pl.ins, pl.nin)
    ew_prefetch_rows(p.dim, pl.outs + q * (p.negative + 1), pl.nouts[q])
    if q == 0 and pl.codelen:
        ew_prefetch_rows(p.dim, pl.nodes, pl.codelen)


cdef void hot_sync(const Params *p, Hot *hot, int full) noexcept nogil:
    """Merge the hot rows: all of them (`full`, or every 2^tiers-th periodic merge), else
    the tier prefix this periodic merge is due for."""
    cdef int level = 0, rows = hot.words, nodes = hot.nodes
    cdef int64_t step
    hot.since = 0
    hot.merges += 1
    if not full and hot.tiers:
        step = hot.merges
        while level < hot.tiers and (step & 1) == 0:
            step >>= 1
            level += 1
        if level < hot.tiers:
            rows = min(hot.words, hot.first << level)
            nodes = min(hot.nodes, hot.first << level)
    if rows == hot.words and nodes == hot.nodes:
        hot.syncs += 1
    if rows:
        ew_sync_rows(<size_t>rows * p.dim, p.syn0, hot.syn0, hot.syn0_base)
        if p.negative:
            ew_sync_rows(<size_t>rows * p.dim, p.syn1neg, hot.syn1neg, hot.syn1neg_base)
    if nodes:
        # the top nodes are the last rows: merge the last `nodes` of the copies
        ew_sync_rows(<size_t>nodes * p.dim,
                     p.syn1 + <size_t>(hot.node_lo + hot.nodes - nodes) * p.dim,
                     hot.syn1 + <size_t>(hot.nodes - nodes) * p.dim,
                     hot.syn1_base + <size_t>(hot.nodes - nodes) * p.dim)


cdef void run_plan(const Params *p, const Plan *pl, const Plan *nxt, float alpha,
                   Work *w) noexcept nogil:
    """The updates of one center position, prefetching each next update's rows."""
    cdef int q, j, k
    cdef float **outs
    cdef int ahead = p.ahead
    for q in range(pl.nupd):
        if ahead == 0:
            pass
        elif q + ahead < pl.nupd:
            prefetch_update(p, pl, q + ahead)
        elif nxt != NULL:
            k = q + ahead - pl.nupd
            if q == 0 and k > 0:
                # a plan shorter than `ahead` (CBOW has one update per plan) also starts the
                # next plan's first updates, which no earlier step reached
                for j in range(k):
                    prefetch_update(p, nxt, j)
            prefetch_update(p, nxt, k)
        outs = pl.outs + q * (p.negative + 1)
        if p.batched:
            w.examples += pl.nin
            if p.sgemm != NULL:
                ew_update_batch_blas(p.dim, pl.ins, pl.nin, outs, pl.nouts[0], alpha, w.gbuf,
                                     w.ebuf, w.cbuf, w.tbuf, EXP_TABLE, p.nll, &w.loss,
                                     p.sgemm)
            else:
                ew_update_batch(p.dim, pl.ins, pl.nin, outs, pl.nouts[0], alpha, w.gbuf,
                                w.ebuf, EXP_TABLE, p.nll, &w.loss)
            continue
        w.examples += 1
        if p.sg:
            ew_update(p.dim, pl.ins[q], outs, pl.nouts[q], pl.nodes, pl.codes,
                      pl.codelen, alpha, w.neu1e, EXP_TABLE, 1, p.nll, &w.loss)
        else:
            ew_context_sum(p.dim, pl.ins, pl.nin, p.cbow_mean, w.neu1)
            if p.two_pass and not p.hs:
                ew_update_ns(p.dim, w.neu1, outs, pl.nouts[q], alpha, w.neu1e, EXP_TABLE, 0,
                             p.nll, &w.loss, w.gbuf)
            else:
                ew_update(p.dim, w.neu1, outs, pl.nouts[q], pl.nodes, pl.codes, pl.codelen,
                          alpha, w.neu1e, EXP_TABLE, 0, p.nll, &w.loss)
            if not p.cbow_mean:
                for j in range(p.dim):
                    w.neu1e[j] /= pl.nin
            ew_scatter(p.dim, w.neu1e, pl.ins, pl.nin)


cdef int64_t train_ids(const Params *p, Hot *hot, const int32_t *ids, Py_ssize_t n,
                       uint64_t *rng, float alpha0, float alpha1, Work *w) noexcept nogil:
    """Train on n ids (sentences separated by -1, ending with one); returns words trained.

    alpha goes linearly from alpha0 to alpha1 across the chunk (updated per sentence)."""
    cdef Py_ssize_t i = 0
    cdef int slen, pos, cur = 0
    cdef int32_t word
    cdef uint32_t thr
    cdef float alpha
    cdef int64_t trained = 0
    while i < n:
        alpha = alpha0 + (alpha1 - alpha0) * (<float>i / <float>n)
        slen = 0
        while i < n and ids[i] >= 0:
            word = ids[i]
            i += 1
            thr = p.keep[word]
            if thr != KEEP_ALWAYS and (splitmix64(rng) >> 32) >= thr:
                continue
            w.sent[slen] = word
            slen += 1
        i += 1
        trained += slen
        if slen == 0:
            continue
        if p.batched and not p.sg:
            plan_cbow(p, hot, w.sent, slen, 0, rng, &w.cplan[cur])
            if p.ahead:
                prefetch_cbow(p, &w.cplan[cur], 0)
            pos = 0
            while pos < slen:
                if pos + p.cbow_batch < slen:
                    plan_cbow(p, hot, w.sent, slen, pos + p.cbow_batch, rng, &w.cplan[1 - cur])
                    if p.ahead:
                        prefetch_cbow(p, &w.cplan[1 - cur], w.cplan[cur].last)
                run_cbow(p, &w.cplan[cur], alpha, w)
                cur = 1 - cur
                pos += p.cbow_batch
                if hot.every:
                    hot.since += p.cbow_batch
                    if hot.since >= hot.every:
                        hot_sync(p, hot, 0)
            continue
        plan_position(p, hot, w.sent, slen, 0, rng, &w.plan[cur])
        for pos in range(p.ahead):
            prefetch_update(p, &w.plan[cur], pos)
        for pos in range(slen):
            if pos + 1 < slen:
                plan_position(p, hot, w.sent, slen, pos + 1, rng, &w.plan[1 - cur])
                run_plan(p, &w.plan[cur], &w.plan[1 - cur], alpha, w)
            else:
                run_plan(p, &w.plan[cur], NULL, alpha, w)
            cur = 1 - cur
            if hot.every:
                hot.since += 1
                if hot.since >= hot.every:
                    hot_sync(p, hot, 0)
    return trained


cdef ew_sgemm_fn _sgemm(object cap) except NULL:
    """BLAS sgemm from its capsule (as scipy's Cython BLAS exports it, named by its C
    signature): the caller finds it, so building the kernels needs no scipy."""
    return <ew_sgemm_fn>PyCapsule_GetPointer(cap, PyCapsule_GetName(cap))


cdef float *_fptr(float[:, ::1] a):
    return &a[0, 0] if a.shape[0] > 0 else NULL


cdef float *_alloc_copy(const float *src, size_t count):
    cdef float *out = <float *>malloc(count * sizeof(float) if count else 1)
    if out == NULL:
        raise MemoryError()
    if count:
        memcpy(out, src, count * sizeof(float))
    return out


cdef class Trainer:
    """One process's handle on the model: pointers into (shared) weights and tables, plus
    private scratch buffers. `train(ids, seed, alpha0, alpha1)` runs one chunk nogil.

    hot_words > 0 (for processes sharing the weights): the input and output rows of the
    hot_words most frequent words, and as many top Huffman nodes, are trained on
    process-local copies merged into the shared weights every `sync_every` trained words
    (counted across chunks) and whenever `sync()` is called, so the processes do not fight
    over the same cache lines on every update (the rows every update touches). The owner
    must call `sync()` before the shared weights are read as trained on a chunk: `syncs`
    counts the full merges, so a chunk finished when it read k is in the shared weights once
    it reads more than k. hot_tiers = L > 0 merges the rows in tiers (see Hot): the most
    frequent ceil(hot_words / 2^L) every sync_every words, all of them every 2^L * sync_every.
    With hot_words = 0 the shared rows are
    updated directly, and one process with a given seed gives one exact result.

    compute_loss: each chunk also sums the negative log-likelihood of every prediction it
    makes (double precision), read after train() as `last_loss` with `last_examples`, the
    updates it made. shrink_windows = 0 uses the full window at every position.
    prefetch_ahead: how many updates ahead rows are prefetched (0: none; for measurements).
    batched (negative sampling without hs): the minibatched update (HogBatch). Skip-gram:
    one set of noise words per center word shared by its whole window. CBOW: one set per
    cbow_batch (1..16) consecutive centers of a sentence, each center's hidden vector (its
    window's sum or mean) scored against its own word and the shared noise words.
    two_pass (CBOW, negative sampling without hs): the classic update with every score of a
    center's n + 1 targets taken before any of its output rows is updated (ew_update_ns).
    sgemm (batched skip-gram): the capsule of a BLAS sgemm with the Fortran interface
    (scipy.linalg.cython_blas's), through which the update's three products run on its rows
    gathered into blocks (ew_update_batch_blas); None: register-blocked loops."""
    cdef Params p
    cdef Hot hot
    cdef Work w
    cdef object _refs
    cdef Py_ssize_t sent_cap

    def __cinit__(self, float[:, ::1] syn0, float[:, ::1] syn1neg, float[:, ::1] syn1,
                  const uint32_t[::1] keep, const uint64_t[::1] noise,
                  const uint8_t[:, ::1] codes,
                  const int32_t[:, ::1] points, const int32_t[::1] code_lens, *,
                  int sg, int hs, int negative, int window, int cbow_mean,
                  int hot_words=0, int sync_every=1024, int compute_loss=0,
                  int shrink_windows=1, int prefetch_ahead=AHEAD, int batched=0,
                  int cbow_batch=CB_DEFAULT, int hot_tiers=0, int two_pass=0, object sgemm=None):
        cdef int k
        memset(&self.hot, 0, sizeof(Hot))
        memset(&self.w, 0, sizeof(Work))
        if window < 1:
            raise ValueError("window must be >= 1")
        if negative < 0 or (negative == 0 and not hs):
            raise ValueError("need negative > 0 or hs = 1")
        if negative and syn1neg.shape[0] != syn0.shape[0]:
            raise ValueError("syn1neg must have one row per word")
        if hs and syn1.shape[0] < syn0.shape[0] - 1:
            raise ValueError("syn1 must have vocab-1 rows")
        if hot_words < 0 or sync_every < 1 or hot_tiers < 0 or hot_tiers > 16:
            raise ValueError("need hot_words >= 0, sync_every >= 1 and hot_tiers in 0..16")
        if keep.shape[0] != syn0.shape[0] or (negative and noise.shape[0] != syn0.shape[0]):
            raise ValueError("keep (and noise, with negative > 0) need one entry per word")
        self._refs = (syn0, syn1neg, syn1, keep, noise, codes, points, code_lens, sgemm)
        self.p.syn0 = _fptr(syn0)
        self.p.syn1neg = _fptr(syn1neg)
        self.p.syn1 = _fptr(syn1)
        self.p.dim = syn0.shape[1]
        self.p.window = window
        self.p.negative = negative
        self.p.hs = hs
        self.p.sg = sg
        self.p.cbow_mean = cbow_mean
        self.p.shrink_windows = 1 if shrink_windows else 0
        self.p.nll = NLL_TABLE if compute_loss else NULL
        if prefetch_ahead < 0 or prefetch_ahead > 8:
            raise ValueError("prefetch_ahead must be in 0..8")
        self.p.ahead = prefetch_ahead
        if batched and not (negative and not hs):
            raise ValueError("the batched kernel is negative sampling only "
                             "(hs=0, negative > 0; skip-gram or CBOW)")
        if cbow_batch < 1 or cbow_batch > CB_MAX:
            raise ValueError(f"cbow_batch must be in 1..{CB_MAX}")
        self.p.batched = 1 if batched else 0
        self.p.cbow_batch = cbow_batch
        self.p.two_pass = 1 if two_pass else 0
        if sgemm is not None and not (batched and sg):
            raise ValueError("blas products are the batched skip-gram kernel's only "
                             "(batched=1, sg=1)")
        self.p.sgemm = _sgemm(sgemm) if sgemm is not None else NULL
        self.p.vocab_size = syn0.shape[0]
        self.p.keep = &keep[0]
        self.p.noise = &noise[0] if negative else NULL
        self.p.max_code = codes.shape[1] if hs else 0
        self.p.codes = &codes[0, 0] if hs else NULL
        self.p.points = &points[0, 0] if hs else NULL
        self.p.code_lens = &code_lens[0] if hs else NULL
        for k in range(2):
            self.w.plan[k].ins = <float **>malloc(2 * window * sizeof(float *))
            self.w.plan[k].outs = <float **>malloc(2 * window * (negative + 1) * sizeof(float *))
            self.w.plan[k].nouts = <int *>malloc(2 * window * sizeof(int))
            self.w.plan[k].nodes = <float **>malloc((self.p.max_code + 1) * sizeof(float *))
            if not (self.w.plan[k].ins and self.w.plan[k].outs and self.w.plan[k].nouts
                    and self.w.plan[k].nodes):
                raise MemoryError()
            self.w.cplan[k].negs = <float **>malloc((negative + 1) * sizeof(float *))
            self.w.cplan[k].negw = <int32_t *>malloc((negative + 1) * sizeof(int32_t))
            self.w.cplan[k].rows = <float **>malloc((CB_MAX + 2 * window) * sizeof(float *))
            if not (self.w.cplan[k].negs and self.w.cplan[k].negw and self.w.cplan[k].rows):
                raise MemoryError()
        self.w.neu1 = <float *>malloc(self.p.dim * sizeof(float))
        self.w.neu1e = <float *>malloc(self.p.dim * sizeof(float))
        k = max(2 * window, CB_MAX)
        self.w.gbuf = <float *>malloc(k * (negative + 1) * sizeof(float))
        self.w.ebuf = <float *>malloc(k * self.p.dim * sizeof(float))
        self.w.hbuf = <float *>malloc(CB_MAX * self.p.dim * sizeof(float))
        self.w.cbuf = <float *>malloc(2 * window * self.p.dim * sizeof(float))
        self.w.tbuf = <float *>malloc((negative + 1) * self.p.dim * sizeof(float))
        if not (self.w.neu1 and self.w.neu1e and self.w.gbuf and self.w.ebuf and self.w.hbuf
                and self.w.cbuf and self.w.tbuf):
            raise MemoryError()
        self.hot.node_lo = 1 << 30
        if hot_words:
            self._init_hot(min(hot_words, syn0.shape[0]), sync_every,
                           min(syn1.shape[0], syn0.shape[0] - 1) if hs else 0, hot_tiers)

    cdef _init_hot(self, int words, int every, int inner, int tiers):
        cdef size_t n = <size_t>words * self.p.dim
        self.hot.every = every
        self.hot.words = words
        self.hot.tiers = tiers
        self.hot.first = (words + (1 << tiers) - 1) >> tiers
        self.hot.syn0 = _alloc_copy(self.p.syn0, n)
        self.hot.syn0_base = _alloc_copy(self.p.syn0, n)
        if self.p.negative:
            self.hot.syn1neg = _alloc_copy(self.p.syn1neg, n)
            self.hot.syn1neg_base = _alloc_copy(self.p.syn1neg, n)
        if inner:
            self.hot.nodes = min(words, inner)
            self.hot.node_lo = inner - self.hot.nodes
            n = <size_t>self.hot.nodes * self.p.dim
            self.hot.syn1 = _alloc_copy(self.p.syn1 + <size_t>self.hot.node_lo * self.p.dim, n)
            self.hot.syn1_base = _alloc_copy(self.p.syn1 + <size_t>self.hot.node_lo * self.p.dim, n)

    def __dealloc__(self):
        cdef int k
        for k in range(2):
            free(self.w.plan[k].ins)
            free(self.w.plan[k].outs)
            free(self.w.plan[k].nouts)
            free(self.w.plan[k].nodes)
            free(self.w.cplan[k].negs)
            free(self.w.cplan[k].negw)
            free(self.w.cplan[k].rows)
        free(self.w.neu1)
        free(self.w.neu1e)
        free(self.w.gbuf)
        free(self.w.ebuf)
        free(self.w.hbuf)
        free(self.w.cbuf)
        free(self.w.tbuf)
        free(self.w.sent)
        free(self.hot.syn0)
        free(self.hot.syn0_base)
        free(self.hot.syn1neg)
        free(self.hot.syn1neg_base)
        free(self.hot.syn1)
        free(self.hot.syn1_base)

    @property
    def hot_words(self):
        return self.hot.words

    @property
    def last_loss(self):
        """The summed loss of the last train() call (0.0 without compute_loss)."""
        return self.w.loss

    @property
    def last_examples(self):
        return self.w.examples

    def sync(self):
        """Merge the local copies of the hot rows into the shared weights and refresh them
        (train() does this every sync_every trained words, not at the end of a chunk)."""
        if self.hot.every:
            with nogil:
                hot_sync(&self.p, &self.hot, 1)

    @property
    def syncs(self):
        """Full merges of the hot rows done so far, sync() included (0 without hot rows):
        a chunk finished when this read k is in the shared weights once it reads more."""
        return self.hot.syncs

    @property
    def merges(self):
        """Merges of the hot rows done so far, full or of the first tiers only."""
        return self.hot.merges

    @property
    def hot_tiers(self):
        return self.hot.tiers

    def train(self, const int32_t[::1] ids, uint64_t seed, float alpha0, float alpha1):
        """Train on one chunk of ids (sentences end with -1). Returns words trained
        (after subsampling). The same (ids, seed, alphas, weights) give the same result."""
        cdef Py_ssize_t n = ids.shape[0]
        cdef uint64_t rng = seed
        cdef int64_t trained
        self.w.loss = 0.0
        self.w.examples = 0
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
            trained = train_ids(&self.p, &self.hot, &ids[0], n, &rng, alpha0, alpha1, &self.w)
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


cdef float **_row_ptrs(float[:, ::1] m, const int32_t[::1] idx):
    cdef float **rows = <float **>malloc((idx.shape[0] + 1) * sizeof(float *))
    cdef Py_ssize_t k
    if rows == NULL:
        raise MemoryError()
    for k in range(idx.shape[0]):
        rows[k] = &m[idx[k], 0]
    return rows


def out_ns(const float[::1] h, float[:, ::1] syn1neg, const int32_t[::1] targets, float alpha):
    """One negative-sampling step; updates syn1neg in place, returns neu1e."""
    neu1e = np.zeros(h.shape[0], dtype=np.float32)
    cdef float[::1] e = neu1e
    cdef float **rows = _row_ptrs(syn1neg, targets)
    ew_update(h.shape[0], <float *>&h[0], rows, targets.shape[0], NULL, NULL, 0, alpha, &e[0],
              EXP_TABLE, 0, NULL, NULL)
    free(rows)
    return neu1e


def out_hs(const float[::1] h, float[:, ::1] syn1, const int32_t[::1] points,
           const uint8_t[::1] codes, float alpha):
    """One hierarchical-softmax step; updates syn1 in place, returns neu1e."""
    neu1e = np.zeros(h.shape[0], dtype=np.float32)
    cdef float[::1] e = neu1e
    cdef float **rows = _row_ptrs(syn1, points)
    ew_update(h.shape[0], <float *>&h[0], NULL, 0, rows, &codes[0], points.shape[0], alpha,
              &e[0], EXP_TABLE, 0, NULL, NULL)
    free(rows)
    return neu1e


def context_sum(float[:, ::1] syn0, const int32_t[::1] ctx, int mean):
    neu1 = np.empty(syn0.shape[1], dtype=np.float32)
    cdef float[::1] o = neu1
    cdef float **rows = _row_ptrs(syn0, ctx)
    ew_context_sum(syn0.shape[1], rows, ctx.shape[0], mean, &o[0])
    free(rows)
    return neu1


def sync_rows(float[::1] shared, float[::1] local, float[::1] base):
    """shared += local - base; local = base = shared (the hot-row merge)."""
    ew_sync_rows(shared.shape[0], &shared[0], &local[0], &base[0])


def pingpong(int64_t[::1] line, int role, int64_t rounds, int64_t patience=1 << 32):
    """Take `rounds` turns with another process writing line[0] (shared memory; role 0 or
    1, the line starting at 0). Returns the turns done (fewer if the other side stopped)."""
    if role not in (0, 1) or rounds < 0:
        raise ValueError("role must be 0 or 1 and rounds >= 0")
    cdef int64_t done
    with nogil:
        done = ew_pingpong(&line[0], role, rounds, patience)
    return done


# ---- the cluster's exchange: choosing, quantizing and applying rows -------------------------
# One pass over the weights each, without the GIL, so that an exchange costs a node a few
# milliseconds, not the seconds numpy's temporaries take. Each has a numpy twin in the tests.

def changed_rows(const float[:, ::1] live, const float[:, ::1] snap, float theta,
                 int32_t[::1] out):
    """Rows whose change (live - snap) is nonzero and, with theta > 0, at least theta times
    the row's norm in snap; their indices go to out. Returns how many."""
    cdef Py_ssize_t n = live.shape[0], r
    cdef int count = 0, dim = live.shape[1]
    cdef float t2 = theta * theta
    with nogil:
        for r in range(n):
            if ew_row_moved(dim, &live[r, 0], &snap[r, 0], t2):
                out[count] = <int32_t>r
                count += 1
    return count


def delta_block(const float[:, ::1] live, float[:, ::1] snap, float levels,
                int32_t[::1] rows, unsigned char[:, ::1] q, float[::1] scale,
                int64_t first=0, int64_t step=1):
    """changed_rows (theta 0) and quantize_delta (levels 127) or quantize_delta4 (levels 7)
    in one pass over a block: the changed rows' indices go to rows, their rounded deltas to
    q (int8 viewed as bytes, or four bits packed) and scale; with levels 0 the deltas
    themselves, float32 viewed as bytes (scale 1). snap takes what is sent. Returns how
    many rows changed. Only rows first, first + step, ... are looked at (one shard's rows
    of the block)."""
    cdef int dim = live.shape[1]
    cdef int64_t n = live.shape[0], count
    if first < 0 or step < 1:
        raise ValueError("delta_block: first >= 0 and step >= 1")
    cdef int64_t most = (n - first + step - 1) // step if first < n else 0
    if snap.shape[0] != n or snap.shape[1] != dim or rows.shape[0] < most or \
            q.shape[0] < most or scale.shape[0] < most:
        raise ValueError("delta_block: shapes differ")
    cdef Py_ssize_t width = (dim + 1) // 2 if levels == 7.0 else (
        dim if levels == 127.0 else 4 * dim)
    if levels != 0.0 and levels != 7.0 and levels != 127.0:
        raise ValueError("delta_block: levels must be 0, 7 or 127")
    if q.shape[1] != width:
        raise ValueError("delta_block: q's width does not fit the levels")
    if most == 0:
        return 0
    cdef float *buf = <float *>malloc(dim * sizeof(float) + dim)
    if buf == NULL:
        raise MemoryError()
    try:
        with nogil:
            count = ew_delta_block(dim, n, &live[0, 0], &snap[0, 0], levels, q.shape[1],
                                   &rows[0], &q[0, 0], &scale[0], buf, first, step)
    finally:
        free(buf)
    return count


def quantize_delta(const float[:, ::1] live, float[:, ::1] snap, const int32_t[::1] rows,
                   signed char[:, ::1] q, float[::1] scale):
    """The delta (live - snap) of each row in rows as int8 times a per-row scale (its largest
    magnitude / 127, rounded to nearest); snap takes what is sent, so the rounding stays in
    live - snap and goes with a later delta."""
    cdef Py_ssize_t k
    cdef int dim = live.shape[1]
    cdef float *buf = <float *>malloc(dim * sizeof(float))
    if buf == NULL:
        raise MemoryError()
    try:
        with nogil:
            for k in range(rows.shape[0]):
                scale[k] = ew_quantize_delta(dim, &live[rows[k], 0], &snap[rows[k], 0],
                                             &q[k, 0], buf, 127.0)
    finally:
        free(buf)


def quantize_delta4(const float[:, ::1] live, float[:, ::1] snap, const int32_t[::1] rows,
                    unsigned char[:, ::1] p, float[::1] scale):
    """As quantize_delta, in four bits a value (-7..7 times a per-row scale, the largest
    magnitude / 7), two values a byte (ew_pack4): snap takes what is sent."""
    cdef Py_ssize_t k
    cdef int dim = live.shape[1]
    cdef float *buf = <float *>malloc(dim * sizeof(float) + dim)
    if buf == NULL:
        raise MemoryError()
    cdef signed char *q = <signed char *>(buf + dim)
    try:
        with nogil:
            for k in range(rows.shape[0]):
                scale[k] = ew_quantize_delta(dim, &live[rows[k], 0], &snap[rows[k], 0],
                                             q, buf, 7.0)
                ew_pack4(dim, q, &p[k, 0])
    finally:
        free(buf)


cdef int _apply4(float[:, ::1] dst, const int32_t[::1] rows, const unsigned char[:, ::1] p,
                 const float[::1] scale, float factor, float[:, ::1] other,
                 int mode) except -1:
    """Four-bit rows, each unpacked once: mode 0 dst[rows] += factor * scale * q; 1 the
    same into `other` too; 2 values v = scale * q rebased onto: dst (live) += v - other
    (snap), other = v."""
    cdef Py_ssize_t k
    cdef int dim = dst.shape[1]
    if p.shape[1] != (dim + 1) // 2:
        raise ValueError("four-bit rows of another width")
    if mode and (other is None or other.shape[0] != dst.shape[0] or other.shape[1] != dim):
        raise ValueError("four-bit rows: the second array is not of the first's shape")
    cdef signed char *q = <signed char *>malloc(dim)
    if q == NULL:
        raise MemoryError()
    try:
        with nogil:
            for k in range(rows.shape[0]):
                ew_unpack4(dim, &p[k, 0], q)
                if mode == 2:
                    ew_rebase_int8(dim, scale[k], q, &dst[rows[k], 0], &other[rows[k], 0])
                elif mode == 1:
                    ew_add_int8_pair(dim, factor * scale[k], q, &dst[rows[k], 0],
                                     &other[rows[k], 0])
                else:
                    ew_add_int8(dim, factor * scale[k], q, &dst[rows[k], 0])
    finally:
        free(q)
    return 0


def add_quantized4(float[:, ::1] dst, const int32_t[::1] rows, const unsigned char[:, ::1] p,
                   const float[::1] scale, float factor, float[:, ::1] also=None):
    """dst[rows] += factor * scale * q, q four bits a value (quantize_delta4); with `also`
    (dst's shape), also[rows] too, each row unpacked once (a delta that a node's weights
    and its snapshot both take)."""
    _apply4(dst, rows, p, scale, factor, also, 0 if also is None else 1)


def quantize_values(const float[:, ::1] src, const int32_t[::1] rows, signed char[:, ::1] q,
                    float[::1] scale):
    """src's rows as int8 times a per-row scale (largest magnitude / 127, nearest)."""
    cdef Py_ssize_t k
    cdef int dim = src.shape[1]
    with nogil:
        for k in range(rows.shape[0]):
            scale[k] = ew_to_int8(dim, &src[rows[k], 0], ew_absmax(dim, &src[rows[k], 0]),
                                  &q[k, 0])


def quantize_values4(const float[:, ::1] src, const int32_t[::1] rows,
                     unsigned char[:, ::1] p, float[::1] scale):
    """src's rows in four bits a value (-7..7 times a per-row scale, the largest magnitude
    / 7, nearest), two values a byte (ew_pack4)."""
    cdef Py_ssize_t k
    cdef int dim = src.shape[1]
    if p.shape[0] < rows.shape[0] or p.shape[1] != (dim + 1) // 2 or \
            scale.shape[0] < rows.shape[0]:
        raise ValueError("quantize_values4: shapes differ")
    cdef signed char[::1] q = np.empty(max(dim, 1), np.int8)       # one row, unpacked
    with nogil:
        for k in range(rows.shape[0]):
            scale[k] = ew_to_levels(dim, &src[rows[k], 0],
                                    ew_absmax(dim, &src[rows[k], 0]), 7.0, &q[0])
            ew_pack4(dim, &q[0], &p[k, 0])


def add_quantized(float[:, ::1] dst, const int32_t[::1] rows, const signed char[:, ::1] q,
                  const float[::1] scale, float factor):
    """dst[rows] += factor * scale * q (rows already checked to lie inside dst)."""
    cdef Py_ssize_t k
    cdef int dim = dst.shape[1]
    with nogil:
        for k in range(rows.shape[0]):
            ew_add_int8(dim, factor * scale[k], &q[k, 0], &dst[rows[k], 0])


def rebase_quantized(float[:, ::1] live, float[:, ::1] snap, const int32_t[::1] rows,
                     const signed char[:, ::1] q, const float[::1] scale):
    """Merged rows arrive as int8 values v = scale * q: live += v - snap, snap = v, row by
    row (the node's own unsent changes, live - snap, are kept)."""
    cdef Py_ssize_t k
    cdef int dim = live.shape[1]
    with nogil:
        for k in range(rows.shape[0]):
            ew_rebase_int8(dim, scale[k], &q[k, 0], &live[rows[k], 0], &snap[rows[k], 0])


def rebase_quantized4(float[:, ::1] live, float[:, ::1] snap, const int32_t[::1] rows,
                      const unsigned char[:, ::1] p, const float[::1] scale):
    """rebase_quantized for values in four bits (quantize_values4), each row unpacked
    once."""
    _apply4(live, rows, p, scale, 1.0, snap, 2)


# ---- a chunk's ids on the wire: id + 1 in base 128, low digits first, the high bit set on
# every byte but a value's last (ids are ranked by frequency: most take one or two bytes)

def varint_encode(const int32_t[::1] ids, uint8_t[::1] out):
    """ids (each >= -1 and below 2**28 - 1, checked by the caller) into out (at least 4
    bytes an id); returns the bytes written."""
    cdef Py_ssize_t i, n = ids.shape[0], at = 0
    cdef uint32_t v
    with nogil:
        for i in range(n):
            v = <uint32_t>(ids[i] + 1)
            while v >= 128:
                out[at] = <uint8_t>((v & 127) | 128)
                v >>= 7
                at += 1
            out[at] = <uint8_t>v
            at += 1
    return at


def varint_decode(const uint8_t[::1] data, int32_t[::1] out, int max_bytes):
    """varint_encode's inverse into out; returns how many ids, or -1 when the bytes do not
    end with a complete value, an id takes more than max_bytes, or out is too short."""
    cdef Py_ssize_t i, n = data.shape[0], count = 0, cap = out.shape[0]
    cdef uint32_t v = 0
    cdef int shift = 0, width = 0, bad = 0
    with nogil:
        for i in range(n):
            v |= <uint32_t>(data[i] & 127) << shift
            shift += 7
            width += 1
            if width > max_bytes:
                bad = 1
                break
            if not (data[i] & 128):
                if count >= cap:
                    bad = 1
                    break
                out[count] = <int32_t>v - 1
                count += 1
                v = 0
                shift = 0
                width = 0
    if bad or width:
        return -1
    return count
