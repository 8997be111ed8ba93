/* vecmath.h: the vector arithmetic at the bottom of every word2vec update.
 *
 * Each function is compiled once per x86-64 feature level (v4: AVX-512; v3: AVX2+FMA;
 * baseline) with GCC's `target_clones`; the loader picks the best the running CPU supports,
 * so a build for the baseline still runs its inner loops with the widest vectors there.
 * Feature levels, not CPU names: a clone for "arch=haswell" is chosen only on a CPU that
 * *is* a Haswell (GCC dispatches it with __builtin_cpu_is), so AMD's Zen, which has every
 * Haswell feature, got the baseline clone until we switched (seen with perf: ew_update.default).
 * GCC 11 and older do not dispatch on levels: they get a feature clone (AVX2, no FMA).
 * Everything works on raw float32 pointers; the Cython loops in _kernels.pyx call these.
 */
#ifndef ENGINE_VECMATH_H
#define ENGINE_VECMATH_H

#include <math.h>
#include <stdint.h>
#include <stddef.h>

#define EW_EXP_TABLE_SIZE 1000
#define EW_MAX_EXP 6.0f

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__) && !defined(ENGINE_NO_CLONES)
#if __GNUC__ >= 12
#define EW_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define EW_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#endif
#else
#define EW_CLONES
#endif

/* Helpers the cloned functions call: always inlined, so each clone compiles them for its own
 * instruction set (a helper GCC chose to call instead would be built for the baseline). */
#if defined(__GNUC__)
#define EW_INLINE static inline __attribute__((always_inline))
#else
#define EW_INLINE static inline
#endif

#if defined(__GNUC__)
#define EW_PREFETCH(p) __builtin_prefetch((p), 1, 3)
#else
#define EW_PREFETCH(p) ((void)0)
#endif

#if defined(_MSC_VER)
#define EW_RESTRICT __restrict
#define EW_SIMD
#define EW_SIMD_SUM(var)
#define EW_SIMD_SUM2(a, b)
#define EW_SIMD_SUM4(a, b, c, d)
#define EW_SIMD_MAX(var)
#else
#define EW_RESTRICT __restrict__
#define EW_PRAGMA(x) _Pragma(#x)
#define EW_SIMD EW_PRAGMA(omp simd)
#define EW_SIMD_SUM(var) EW_PRAGMA(omp simd reduction(+:var))
#define EW_SIMD_SUM2(a, b) EW_PRAGMA(omp simd reduction(+:a, b))
#define EW_SIMD_SUM4(a, b, c, d) EW_PRAGMA(omp simd reduction(+:a, b, c, d))
#define EW_SIMD_MAX(var) EW_PRAGMA(omp simd reduction(max:var))
#endif

/* Index of f in the sigmoid table, f in (-MAX_EXP, MAX_EXP). In float arithmetic f just
 * below MAX_EXP can round to index EXP_TABLE_SIZE itself, so the table has one more entry
 * (as the C tool's has). */
EW_INLINE int ew_table_index(float f) {
    return (int)((f + EW_MAX_EXP) * ((float)EW_EXP_TABLE_SIZE / EW_MAX_EXP / 2.0f));
}

/* y += a * x */
static EW_CLONES void ew_axpy(int dim, float a, const float *EW_RESTRICT x, float *EW_RESTRICT y) {
    EW_SIMD
    for (int i = 0; i < dim; i++) y[i] += a * x[i];
}

/* neu1 = sum (or mean) of the n input rows. */
static EW_CLONES void ew_context_sum(int dim, float *const *rows, int n, int mean,
                                     float *EW_RESTRICT neu1) {
    for (int i = 0; i < dim; i++) neu1[i] = 0.0f;
    int c = 0;
    for (; c + 4 <= n; c += 4) {                 /* four rows a pass over neu1 */
        const float *EW_RESTRICT r0 = rows[c];
        const float *EW_RESTRICT r1 = rows[c + 1];
        const float *EW_RESTRICT r2 = rows[c + 2];
        const float *EW_RESTRICT r3 = rows[c + 3];
        EW_SIMD
        for (int i = 0; i < dim; i++) neu1[i] += (r0[i] + r1[i]) + (r2[i] + r3[i]);
    }
    if (c + 2 <= n) {                            /* then two, then one */
        const float *EW_RESTRICT r0 = rows[c];
        const float *EW_RESTRICT r1 = rows[c + 1];
        EW_SIMD
        for (int i = 0; i < dim; i++) neu1[i] += r0[i] + r1[i];
        c += 2;
    }
    for (; c < n; c++) {
        const float *EW_RESTRICT row = rows[c];
        EW_SIMD
        for (int i = 0; i < dim; i++) neu1[i] += row[i];
    }
    if (mean && n > 0) {
        float inv = 1.0f / (float)n;
        EW_SIMD
        for (int i = 0; i < dim; i++) neu1[i] *= inv;
    }
}

/* Four row pointers, no two the same (a block of rows that may be stepped in one pass). */
EW_INLINE int ew_distinct4(float *const *r) {
    return r[0] != r[1] && r[0] != r[2] && r[0] != r[3] && r[1] != r[2] && r[1] != r[3] &&
           r[2] != r[3];
}

/* r0..r3 += x (four distinct rows). */
EW_INLINE void ew_add4(int dim, const float *EW_RESTRICT x, float *EW_RESTRICT r0,
                       float *EW_RESTRICT r1, float *EW_RESTRICT r2, float *EW_RESTRICT r3) {
    EW_SIMD
    for (int i = 0; i < dim; i++) {
        float v = x[i];
        r0[i] += v;
        r1[i] += v;
        r2[i] += v;
        r3[i] += v;
    }
}

/* rows[c] += x for every c < n (CBOW: the input gradient onto each context row), four
 * distinct rows a pass (x loaded once for four); from a block with a repeated row on, one by
 * one. */
static EW_CLONES void ew_scatter(int dim, const float *EW_RESTRICT x, float *const *rows, int n) {
    int c = 0;
    for (; c + 4 <= n; c += 4) {
        if (!ew_distinct4(rows + c))
            break;                               /* the rest one by one */
        ew_add4(dim, x, rows[c], rows[c + 1], rows[c + 2], rows[c + 3]);
    }
    if (c + 2 <= n && rows[c] != rows[c + 1]) {  /* two distinct rows, then one by one */
        float *EW_RESTRICT r0 = rows[c];
        float *EW_RESTRICT r1 = rows[c + 1];
        EW_SIMD
        for (int i = 0; i < dim; i++) {
            float v = x[i];
            r0[i] += v;
            r1[i] += v;
        }
        c += 2;
    }
    for (; c < n; c++) {
        float *EW_RESTRICT r = rows[c];
        EW_SIMD
        for (int i = 0; i < dim; i++) r[i] += x[i];
    }
}

/* Ask for the n rows (dim floats each) to be brought into cache, for writing. */
static inline void ew_prefetch_rows(int dim, float *const *rows, int n) {
    for (int k = 0; k < n; k++) {
        const char *row = (const char *)rows[k];
        for (int b = 0; b < dim * 4; b += 64) EW_PREFETCH(row + b);
        EW_PREFETCH(row + dim * 4 - 1);     /* rows need not start on a cache line */
    }
}

/* The loss of a saturated score, computed exactly (see ew_update). */
EW_INLINE double ew_nll_exact(float f, int label) {
    double x = label ? (double)f : -(double)f;       /* -log sigma(x) */
    return log1p(exp(-fabs(x))) + (x < 0 ? -x : 0.0);
}

/* The gradient factor of one score f towards label (1: the true word, 0: a noise word):
 * (label - sigmoid(f)) * alpha, 0 for a saturated score; its loss added to *acc (nll). */
EW_INLINE float ew_grad(float f, int label, float alpha, const float *table,
                        const float *nll, double *acc) {
    if (f > -EW_MAX_EXP && f < EW_MAX_EXP) {
        int idx = ew_table_index(f);
        if (nll) *acc += nll[2 * idx + label];
        return ((label ? 1.0f : 0.0f) - table[idx]) * alpha;
    }
    if (nll && f == f) *acc += ew_nll_exact(f, label);
    return 0.0f;
}

/* One output row's step of an update: neu1e += g * row, then row += g * h. */
EW_INLINE void ew_step_row(int dim, float g, float *EW_RESTRICT row,
                           const float *EW_RESTRICT h, float *EW_RESTRICT neu1e) {
    EW_SIMD
    for (int i = 0; i < dim; i++) {
        neu1e[i] += g * row[i];
        row[i] += g * h[i];
    }
}

/* ew_step_row for four distinct rows at once (neu1e loaded and stored once for four): the
 * same sums, in the same order, as four calls. */
EW_INLINE void ew_step_rows4(int dim, const float *g, float *EW_RESTRICT r0,
                             float *EW_RESTRICT r1, float *EW_RESTRICT r2,
                             float *EW_RESTRICT r3, const float *EW_RESTRICT h,
                             float *EW_RESTRICT neu1e) {
    float g0 = g[0], g1 = g[1], g2 = g[2], g3 = g[3];
    EW_SIMD
    for (int i = 0; i < dim; i++) {
        float x = h[i];
        neu1e[i] = (((neu1e[i] + g0 * r0[i]) + g1 * r1[i]) + g2 * r2[i]) + g3 * r3[i];
        r0[i] += g0 * x;
        r1[i] += g1 * x;
        r2[i] += g2 * x;
        r3[i] += g3 * x;
    }
}

/* ew_step_row for two distinct rows at once, in the order of two calls. */
EW_INLINE void ew_step_rows2(int dim, float g0, float g1, float *EW_RESTRICT r0,
                             float *EW_RESTRICT r1, const float *EW_RESTRICT h,
                             float *EW_RESTRICT neu1e) {
    EW_SIMD
    for (int i = 0; i < dim; i++) {
        float x = h[i];
        neu1e[i] = (neu1e[i] + g0 * r0[i]) + g1 * r1[i];
        r0[i] += g0 * x;
        r1[i] += g1 * x;
    }
}

/* The steps of rows k..n-1 from k on (the tail after the blocks of four): two distinct rows
 * a pass where both scores give a step, else one by one, in order (g 0: not written). */
EW_INLINE void ew_step_tail(int dim, const float *g, float *const *rows, int k, int n,
                            const float *EW_RESTRICT h, float *EW_RESTRICT neu1e) {
    for (; k < n; k++) {
        if (k + 2 <= n && rows[k] != rows[k + 1] && g[k] != 0.0f && g[k + 1] != 0.0f) {
            ew_step_rows2(dim, g[k], g[k + 1], rows[k], rows[k + 1], h, neu1e);
            k++;
        } else if (g[k] != 0.0f) {
            ew_step_row(dim, g[k], rows[k], h, neu1e);
        }
    }
}

/* The steps of four distinct rows: in one pass, or, where a score saturated (g 0: that row
 * is not written), as ew_step_tail takes them. */
EW_INLINE void ew_step_block4(int dim, const float *g, float *const *rows,
                              const float *EW_RESTRICT h, float *EW_RESTRICT neu1e) {
    if (g[0] != 0.0f && g[1] != 0.0f && g[2] != 0.0f && g[3] != 0.0f)
        ew_step_rows4(dim, g, rows[0], rows[1], rows[2], rows[3], h, neu1e);
    else
        ew_step_tail(dim, g, rows, 0, 4, h, neu1e);
}

/* An update's end: skip-gram adds the summed input gradient to h; the loss is handed on. */
EW_INLINE void ew_finish_update(int dim, int apply_to_h, float *EW_RESTRICT h,
                                const float *EW_RESTRICT neu1e, const float *nll,
                                double *loss, double acc) {
    if (apply_to_h) {
        EW_SIMD
        for (int i = 0; i < dim; i++) h[i] += neu1e[i];
    }
    if (nll) *loss += acc;
}

/* f[k] = h . rows[k] for k < n, four rows at a time (h is loaded once for four). */
EW_INLINE void ew_scores(int dim, const float *EW_RESTRICT h, float *const *rows, int n,
                         float *EW_RESTRICT f) {
    int k = 0;
    for (; k + 4 <= n; k += 4) {
        const float *EW_RESTRICT r0 = rows[k];
        const float *EW_RESTRICT r1 = rows[k + 1];
        const float *EW_RESTRICT r2 = rows[k + 2];
        const float *EW_RESTRICT r3 = rows[k + 3];
        float f0 = 0.0f, f1 = 0.0f, f2 = 0.0f, f3 = 0.0f;
        EW_SIMD_SUM4(f0, f1, f2, f3)
        for (int i = 0; i < dim; i++) {
            float x = h[i];
            f0 += x * r0[i];
            f1 += x * r1[i];
            f2 += x * r2[i];
            f3 += x * r3[i];
        }
        f[k] = f0;
        f[k + 1] = f1;
        f[k + 2] = f2;
        f[k + 3] = f3;
    }
    if (k + 2 <= n) {                            /* then two, then one */
        const float *EW_RESTRICT r0 = rows[k];
        const float *EW_RESTRICT r1 = rows[k + 1];
        float f0 = 0.0f, f1 = 0.0f;
        EW_SIMD_SUM2(f0, f1)
        for (int i = 0; i < dim; i++) {
            float x = h[i];
            f0 += x * r0[i];
            f1 += x * r1[i];
        }
        f[k] = f0;
        f[k + 1] = f1;
        k += 2;
    }
    for (; k < n; k++) {
        const float *EW_RESTRICT r = rows[k];
        float s = 0.0f;
        EW_SIMD_SUM(s)
        for (int i = 0; i < dim; i++) s += h[i] * r[i];
        f[k] = s;
    }
}

/* y += sum_k c[k * stride] * rows[k] for k < n, four rows a pass (y loaded and stored once
 * for four); rows of a zero coefficient (a saturated score) are skipped singly, and a block
 * of four zeros altogether. The rows are only read; they may repeat, and must not be y. */
EW_INLINE void ew_combine(int dim, float *EW_RESTRICT y, float *const *rows,
                          const float *c, int stride, int n) {
    int k = 0;
    for (; k + 4 <= n; k += 4) {
        float c0 = c[k * stride], c1 = c[(k + 1) * stride];
        float c2 = c[(k + 2) * stride], c3 = c[(k + 3) * stride];
        if (c0 == 0.0f && c1 == 0.0f && c2 == 0.0f && c3 == 0.0f) continue;
        const float *EW_RESTRICT r0 = rows[k];
        const float *EW_RESTRICT r1 = rows[k + 1];
        const float *EW_RESTRICT r2 = rows[k + 2];
        const float *EW_RESTRICT r3 = rows[k + 3];
        EW_SIMD
        for (int i = 0; i < dim; i++)
            y[i] += (c0 * r0[i] + c1 * r1[i]) + (c2 * r2[i] + c3 * r3[i]);
    }
    if (k + 2 <= n) {                            /* then two, then one */
        float c0 = c[k * stride], c1 = c[(k + 1) * stride];
        const float *EW_RESTRICT r0 = rows[k];
        const float *EW_RESTRICT r1 = rows[k + 1];
        k += 2;
        if (c0 != 0.0f || c1 != 0.0f) {
            EW_SIMD
            for (int i = 0; i < dim; i++) y[i] += c0 * r0[i] + c1 * r1[i];
        }
    }
    for (; k < n; k++) {
        float ck = c[k * stride];
        if (ck == 0.0f) continue;
        const float *EW_RESTRICT r = rows[k];
        EW_SIMD
        for (int i = 0; i < dim; i++) y[i] += ck * r[i];
    }
}

/* The steps of one update towards n target rows, four a pass: labels 1 - codes[k] (a Huffman
 * path) or, with codes NULL, 1 for rows[0] and 0 for the rest (noise words). The scores read
 * h, which changes only at the end of the update, and rows the block's own steps do not
 * touch, so this is the sequential update exactly; from a block in which a row repeats on,
 * the rows go one by one, in order. Loss into *acc (see ew_update). */
EW_INLINE void ew_targets(int dim, const float *EW_RESTRICT h, float *const *rows, int n,
                          const uint8_t *codes, float alpha, float *EW_RESTRICT neu1e,
                          const float *table, const float *nll, double *acc) {
    float f[4], g[4];
    int k = 0;
    for (; k + 4 <= n; k += 4) {
        if (!ew_distinct4(rows + k))
            break;
        ew_scores(dim, h, rows + k, 4, f);
        for (int q = 0; q < 4; q++)
            g[q] = ew_grad(f[q], codes ? 1 - codes[k + q] : k + q == 0, alpha, table, nll, acc);
        ew_step_block4(dim, g, rows + k, h, neu1e);
    }
    if (k + 2 <= n && rows[k] != rows[k + 1]) {  /* two distinct rows, then one by one */
        ew_scores(dim, h, rows + k, 2, f);
        for (int q = 0; q < 2; q++)
            g[q] = ew_grad(f[q], codes ? 1 - codes[k + q] : k + q == 0, alpha, table, nll, acc);
        ew_step_tail(dim, g, rows + k, 0, 2, h, neu1e);
        k += 2;
    }
    for (; k < n; k++) {
        ew_scores(dim, h, rows + k, 1, f);
        g[0] = ew_grad(f[0], codes ? 1 - codes[k] : k == 0, alpha, table, nll, acc);
        if (g[0] != 0.0f) ew_step_row(dim, g[0], rows[k], h, neu1e);
    }
}

/* One whole update for an input vector h predicting a word: hierarchical softmax along its
 * Huffman path (nodes = the inner-node rows, codes = bits; if codelen > 0), then negative
 * sampling against the output rows outs (outs[0] the true word's, label 1; the rest noise
 * words', label 0; if n > 0). Output rows are updated; the input-side gradient is summed in
 * neu1e and, with apply_to_h (skip-gram), added to h at the end. A score beyond +-MAX_EXP
 * (or NaN) gets no update, as in gensim (the C tool applies a full-size step to saturated
 * noise words). Rows come as pointers, so the caller decides where each lives (shared
 * weights or a process-local copy of a hot row) and can prefetch the next update's rows
 * while this one computes.
 *
 * With nll != NULL the negative log-likelihood of every prediction made is added to *loss
 * (in double): -log sigma(f) for a target the update pushes towards 1, -log(1 - sigma(f))
 * for one pushed towards 0, taken from the same sigmoid table entry the gradient uses
 * (nll[2 * index + label]); a saturated score, which gets no update, still counts, computed
 * exactly. */
static EW_CLONES void ew_update(int dim, float *EW_RESTRICT h, float *const *outs, int n,
                                float *const *nodes, const uint8_t *codes, int codelen,
                                float alpha, float *EW_RESTRICT neu1e, const float *table,
                                int apply_to_h, const float *nll, double *loss) {
    double acc = 0.0;
    for (int i = 0; i < dim; i++) neu1e[i] = 0.0f;
    ew_targets(dim, h, nodes, codelen, codes, alpha, neu1e, table, nll, &acc);
    ew_targets(dim, h, outs, n, NULL, alpha, neu1e, table, nll, &acc);
    ew_finish_update(dim, apply_to_h, h, neu1e, nll, loss, acc);
}

/* rows[k] += block[k] for k < n (block: n rows of dim floats, one after another), in order:
 * a row that repeats gets each of its block rows. */
EW_INLINE void ew_add_rows(int dim, float *const *rows, int n, const float *EW_RESTRICT block) {
    for (int k = 0; k < n; k++) {
        float *EW_RESTRICT row = rows[k];
        const float *EW_RESTRICT b = block + (size_t)k * dim;
        EW_SIMD
        for (int i = 0; i < dim; i++) row[i] += b[i];
    }
}

/* block[k] = rows[k] for k < n (into n rows of dim floats, one after another). */
EW_INLINE void ew_gather_rows(int dim, float *const *rows, int n, float *EW_RESTRICT block) {
    for (int k = 0; k < n; k++) {
        const float *EW_RESTRICT row = rows[k];
        float *EW_RESTRICT b = block + (size_t)k * dim;
        EW_SIMD
        for (int i = 0; i < dim; i++) b[i] = row[i];
    }
}

/* The minibatched skip-gram update of one center word (HogBatch, Ji et al. 2016): its nin
 * context rows `ins` against ONE set of output rows `outs` (outs[0] the center word's, label
 * 1; the rest noise words', label 0), shared by every context row instead of drawn for each.
 * With G[j][o] = (label_o - sigmoid(ins[j] . outs[o])) * alpha (0 for a saturated score):
 * every ins[j] += sum_o G[j][o] outs[o] and every outs[o] += sum_j G[j][o] ins[j], both from
 * the rows as they were before this update. One output row serves every context row while
 * it is in cache: per center word the kernel touches n + 1 output rows, not nin * (n + 1).
 * g: nin * nout floats, e: nin * dim floats (scratch). Loss as in ew_update. */
static EW_CLONES void ew_update_batch(int dim, float *const *ins, int nin, float *const *outs,
                                      int nout, float alpha, float *EW_RESTRICT g,
                                      float *EW_RESTRICT e, const float *table,
                                      const float *nll, double *loss) {
    double acc = 0.0;
    for (int j = 0; j < nin; j++) {
        const float *EW_RESTRICT h = ins[j];
        float *gj = g + (size_t)j * nout;
        ew_scores(dim, h, outs, nout, gj);
        for (int o = 0; o < nout; o++) gj[o] = ew_grad(gj[o], o == 0, alpha, table, nll, &acc);
    }
    for (int j = 0; j < nin; j++) {              /* input gradients, from the old outputs */
        float *EW_RESTRICT ej = e + (size_t)j * dim;
        for (int i = 0; i < dim; i++) ej[i] = 0.0f;
        ew_combine(dim, ej, outs, g + (size_t)j * nout, 1, nout);
    }
    for (int o = 0; o < nout; o++)               /* outputs, from the old inputs */
        ew_combine(dim, outs[o], ins, g + o, nout, nin);
    ew_add_rows(dim, ins, nin, e);
    if (nll) *loss += acc;
}

/* Fortran BLAS sgemm, as scipy.linalg.cython_blas exports it (every argument by pointer). */
typedef void (*ew_sgemm_fn)(const char *transa, const char *transb, const int *m,
                            const int *n, const int *k, const float *alpha, const float *a,
                            const int *lda, const float *b, const int *ldb, const float *beta,
                            float *c, const int *ldc);

/* ew_update_batch with its three products through BLAS sgemm: the alternative to the
 * register-blocked loops, faster on some processors and slower on others, so the engine
 * measures both at the job's shape (see docs/benchmarks.md, "BLAS or loops"). The rows are gathered into
 * contiguous row-major blocks C (nin x dim) and T (nout x dim), which BLAS sees column-major
 * as C^T and T^T: S = C T^T (nin x nout, into g), G from S in place, E = G T (into e), then
 * D = G^T C into T's block (T is not read again), and D[o] is added to outs[o], E[j] to
 * ins[j]: a noise word drawn twice gets both its steps, as in the loops. c: nin * dim,
 * t: nout * dim floats of scratch; the rest as ew_update_batch. */
static EW_CLONES void ew_update_batch_blas(int dim, float *const *ins, int nin,
                                           float *const *outs, int nout, float alpha,
                                           float *EW_RESTRICT g, float *EW_RESTRICT e,
                                           float *EW_RESTRICT c, float *EW_RESTRICT t,
                                           const float *table, const float *nll,
                                           double *loss, ew_sgemm_fn sgemm) {
    const float one = 1.0f, zero = 0.0f;
    double acc = 0.0;
    ew_gather_rows(dim, ins, nin, c);
    ew_gather_rows(dim, outs, nout, t);
    /* column-major: g (nout x nin) = (T^T)^T C^T, so g[j * nout + o] = ins[j] . outs[o] */
    sgemm("T", "N", &nout, &nin, &dim, &one, t, &dim, c, &dim, &zero, g, &nout);
    for (int j = 0; j < nin; j++)
        for (int o = 0; o < nout; o++) {
            float *gjo = g + (size_t)j * nout + o;
            *gjo = ew_grad(*gjo, o == 0, alpha, table, nll, &acc);
        }
    /* E^T (dim x nin) = T^T (dim x nout) G^T (nout x nin) */
    sgemm("N", "N", &dim, &nin, &nout, &one, t, &dim, g, &nout, &zero, e, &dim);
    /* D^T (dim x nout) = C^T (dim x nin) G (nin x nout), over T's block */
    sgemm("N", "T", &dim, &nout, &nin, &one, c, &dim, g, &nout, &zero, t, &dim);
    ew_add_rows(dim, outs, nout, t);
    ew_add_rows(dim, ins, nin, e);
    if (nll) *loss += acc;
}

/* Negative sampling alone, as ew_update's second half, in two passes: every score first, from
 * the rows as they are, then every update (neu1e += g * row, row += g * h, in order). The
 * scores no longer wait on the updates before them, so they overlap; the result differs from
 * ew_update only where a noise word repeats within the set (its second score then sees the
 * row before the first update). g: n floats of scratch. */
static EW_CLONES void ew_update_ns(int dim, float *EW_RESTRICT h, float *const *outs, int n,
                                   float alpha, float *EW_RESTRICT neu1e, const float *table,
                                   int apply_to_h, const float *nll, double *loss,
                                   float *EW_RESTRICT g) {
    double acc = 0.0;
    ew_scores(dim, h, outs, n, g);
    for (int k = 0; k < n; k++) g[k] = ew_grad(g[k], k == 0, alpha, table, nll, &acc);
    for (int i = 0; i < dim; i++) neu1e[i] = 0.0f;
    int k = 0;
    for (; k + 4 <= n && ew_distinct4(outs + k); k += 4)   /* four rows a pass over neu1e */
        ew_step_block4(dim, g + k, outs + k, h, neu1e);
    ew_step_tail(dim, g, outs, k, n, h, neu1e);   /* from a repeated row on, in order */
    ew_finish_update(dim, apply_to_h, h, neu1e, nll, loss, acc);
}

/* CBOW batched, step 1: the hidden vector of each of nb centers, H[b] (dim floats each) =
 * the sum (mean) of the rows of positions j in [lo[b], hi[b]), j != ctr[b], in order;
 * rows[j - first] is position j's input row. */
static EW_CLONES void ew_cbow_hidden(int dim, int nb, float *const *rows, int first,
                                     const int *lo, const int *hi, const int *ctr, int mean,
                                     float *EW_RESTRICT H) {
    for (int b = 0; b < nb; b++) {
        float *EW_RESTRICT h = H + (size_t)b * dim;
        for (int i = 0; i < dim; i++) h[i] = 0.0f;
        int n = 0;
        for (int j = lo[b]; j < hi[b]; j++) {
            if (j == ctr[b]) continue;
            const float *EW_RESTRICT row = rows[j - first];
            EW_SIMD
            for (int i = 0; i < dim; i++) h[i] += row[i];
            n++;
        }
        if (mean && n > 0) {
            float inv = 1.0f / (float)n;
            EW_SIMD
            for (int i = 0; i < dim; i++) h[i] *= inv;
        }
    }
}

/* CBOW batched, step 2 (HogBatch for CBOW): nb consecutive centers of a sentence, hidden
 * vectors H (nb x dim), each predicting its own word (output row pos[b], word words[b],
 * label 1) against ONE set of nneg noise rows negs (words negw, label 0) shared by the
 * whole batch; a noise word equal to center b's word is no negative for b (no gradient, no
 * loss), as the classic kernel drops such a draw. With G[b][o] = (label - sigmoid(H[b] .
 * out_o)) * alpha (0 when saturated), all from the rows as they were before this update:
 * E[b] = sum_o G[b][o] out_o (divided by div[b] when div != NULL: cbow_mean = 0), and every
 * output row += sum_b G[b][o] H[b]. Per batch the noise rows are read and written once, not
 * once per center. The dot products and row updates take the centers four at a time, so
 * one pass over a noise row serves four hidden vectors from registers.
 * E: nb * dim floats (out), g: nb * (nneg + 1) floats (scratch). Loss as in ew_update. */
static EW_CLONES void ew_update_cbow_batch(int dim, int nb, const float *EW_RESTRICT H,
                                           float *const *pos, const int32_t *words,
                                           float *const *negs, const int32_t *negw, int nneg,
                                           float alpha, const int *div,
                                           float *EW_RESTRICT E, float *EW_RESTRICT g,
                                           const float *table, const float *nll,
                                           double *loss) {
    double acc = 0.0;
    const int s = nneg + 1;        /* g[b * s]: center b's own word; g[b * s + 1 + k]: noise k */
    for (int b = 0; b < nb; b++) {
        const float *EW_RESTRICT h = H + (size_t)b * dim;
        const float *EW_RESTRICT l2 = pos[b];
        float f = 0.0f;
        EW_SIMD_SUM(f)
        for (int i = 0; i < dim; i++) f += h[i] * l2[i];
        g[b * s] = ew_grad(f, 1, alpha, table, nll, &acc);
    }
    for (int k = 0; k < nneg; k++) {
        const float *EW_RESTRICT l2 = negs[k];
        int32_t t = negw[k];
        int b = 0;
        for (; b + 4 <= nb; b += 4) {
            const float *EW_RESTRICT h0 = H + (size_t)b * dim;
            const float *EW_RESTRICT h1 = h0 + dim;
            const float *EW_RESTRICT h2 = h1 + dim;
            const float *EW_RESTRICT h3 = h2 + dim;
            float f0 = 0.0f, f1 = 0.0f, f2 = 0.0f, f3 = 0.0f;
            EW_SIMD_SUM4(f0, f1, f2, f3)
            for (int i = 0; i < dim; i++) {
                float l = l2[i];
                f0 += h0[i] * l;
                f1 += h1[i] * l;
                f2 += h2[i] * l;
                f3 += h3[i] * l;
            }
            g[b * s + 1 + k] = t == words[b] ? 0.0f : ew_grad(f0, 0, alpha, table, nll, &acc);
            g[(b + 1) * s + 1 + k] =
                t == words[b + 1] ? 0.0f : ew_grad(f1, 0, alpha, table, nll, &acc);
            g[(b + 2) * s + 1 + k] =
                t == words[b + 2] ? 0.0f : ew_grad(f2, 0, alpha, table, nll, &acc);
            g[(b + 3) * s + 1 + k] =
                t == words[b + 3] ? 0.0f : ew_grad(f3, 0, alpha, table, nll, &acc);
        }
        for (; b < nb; b++) {
            const float *EW_RESTRICT h = H + (size_t)b * dim;
            float f = 0.0f;
            EW_SIMD_SUM(f)
            for (int i = 0; i < dim; i++) f += h[i] * l2[i];
            g[b * s + 1 + k] = t == words[b] ? 0.0f : ew_grad(f, 0, alpha, table, nll, &acc);
        }
    }
    /* input gradients, from the old output rows */
    for (int b = 0; b < nb; b++) {
        float *EW_RESTRICT e = E + (size_t)b * dim;
        const float *EW_RESTRICT l2 = pos[b];
        float gb = g[b * s];
        EW_SIMD
        for (int i = 0; i < dim; i++) e[i] = gb * l2[i];
    }
    for (int k = 0; k < nneg; k++) {
        const float *EW_RESTRICT l2 = negs[k];
        int b = 0;
        for (; b + 4 <= nb; b += 4) {
            float *EW_RESTRICT e0 = E + (size_t)b * dim;
            float *EW_RESTRICT e1 = e0 + dim;
            float *EW_RESTRICT e2 = e1 + dim;
            float *EW_RESTRICT e3 = e2 + dim;
            float g0 = g[b * s + 1 + k], g1 = g[(b + 1) * s + 1 + k];
            float g2 = g[(b + 2) * s + 1 + k], g3 = g[(b + 3) * s + 1 + k];
            EW_SIMD
            for (int i = 0; i < dim; i++) {
                float l = l2[i];
                e0[i] += g0 * l;
                e1[i] += g1 * l;
                e2[i] += g2 * l;
                e3[i] += g3 * l;
            }
        }
        for (; b < nb; b++) {
            float *EW_RESTRICT e = E + (size_t)b * dim;
            float gb = g[b * s + 1 + k];
            EW_SIMD
            for (int i = 0; i < dim; i++) e[i] += gb * l2[i];
        }
    }
    if (div) {
        for (int b = 0; b < nb; b++) {
            float *EW_RESTRICT e = E + (size_t)b * dim;
            float d = (float)div[b];
            EW_SIMD
            for (int i = 0; i < dim; i++) e[i] /= d;
        }
    }
    /* output rows, from the hidden vectors (rows shared by several targets add up) */
    for (int b = 0; b < nb; b++) {
        float *EW_RESTRICT l2 = pos[b];
        const float *EW_RESTRICT h = H + (size_t)b * dim;
        float gb = g[b * s];
        if (gb == 0.0f) continue;
        EW_SIMD
        for (int i = 0; i < dim; i++) l2[i] += gb * h[i];
    }
    for (int k = 0; k < nneg; k++) {
        float *EW_RESTRICT l2 = negs[k];
        int b = 0;
        for (; b + 4 <= nb; b += 4) {
            const float *EW_RESTRICT h0 = H + (size_t)b * dim;
            const float *EW_RESTRICT h1 = h0 + dim;
            const float *EW_RESTRICT h2 = h1 + dim;
            const float *EW_RESTRICT h3 = h2 + dim;
            float g0 = g[b * s + 1 + k], g1 = g[(b + 1) * s + 1 + k];
            float g2 = g[(b + 2) * s + 1 + k], g3 = g[(b + 3) * s + 1 + k];
            EW_SIMD
            for (int i = 0; i < dim; i++)
                l2[i] += g0 * h0[i] + g1 * h1[i] + g2 * h2[i] + g3 * h3[i];
        }
        for (; b < nb; b++) {
            const float *EW_RESTRICT h = H + (size_t)b * dim;
            float gb = g[b * s + 1 + k];
            EW_SIMD
            for (int i = 0; i < dim; i++) l2[i] += gb * h[i];
        }
    }
    if (nll) *loss += acc;
}

/* CBOW batched, step 3: each center's input gradient E[b] added to the rows of its context
 * (positions [lo[b], hi[b]) but ctr[b]); a position in several windows gets their sum in
 * one write (acc: dim floats of scratch). rows[j - first]: position j's row, j in
 * [first, last). */
static EW_CLONES void ew_cbow_scatter(int dim, int nb, float *const *rows, int first,
                                      int last, const int *lo, const int *hi, const int *ctr,
                                      const float *EW_RESTRICT E, float *EW_RESTRICT acc) {
    for (int j = first; j < last; j++) {
        int n = 0, only = -1;
        for (int b = 0; b < nb; b++) {
            if (j < lo[b] || j >= hi[b] || j == ctr[b]) continue;
            const float *EW_RESTRICT e = E + (size_t)b * dim;
            if (n == 0) {
                only = b;
            } else if (n == 1) {
                const float *EW_RESTRICT e0 = E + (size_t)only * dim;
                EW_SIMD
                for (int i = 0; i < dim; i++) acc[i] = e0[i] + e[i];
            } else {
                EW_SIMD
                for (int i = 0; i < dim; i++) acc[i] += e[i];
            }
            n++;
        }
        if (n == 0) continue;
        float *EW_RESTRICT row = rows[j - first];
        const float *EW_RESTRICT src = n == 1 ? E + (size_t)only * dim : acc;
        EW_SIMD
        for (int i = 0; i < dim; i++) row[i] += src[i];
    }
}

/* Publish a process-local copy of rows and refresh it: shared += local - base (the updates
 * made here since the last sync), then local = base = shared (picking up the other
 * processes' updates). Lock-free like every other write to the shared weights. */
static EW_CLONES void ew_sync_rows(size_t count, float *shared, float *EW_RESTRICT local,
                                   float *EW_RESTRICT base) {
    EW_SIMD
    for (size_t i = 0; i < count; i++) {
        float v = shared[i] + (local[i] - base[i]);
        shared[i] = v;
        local[i] = v;
        base[i] = v;
    }
}

/* Row w of a matrix whose first `hot_words` rows live in a process's own copy `hot` (may
 * be NULL when hot_words is 0) and the rest in the shared `shared`: chosen without a branch,
 * since whether a drawn word is hot is a coin toss the branch predictor loses often. */
static inline float *ew_pick_row(float *shared, float *hot, int64_t w, int64_t hot_words,
                                 int64_t dim) {
    uintptr_t m = (uintptr_t)0 - (uintptr_t)(w < hot_words);
    uintptr_t base = ((uintptr_t)shared & ~m) | ((uintptr_t)hot & m);
    return (float *)base + w * dim;
}

/* Two processes take turns writing one cache line: the side of `role` r waits until the
 * line holds 2i + r, then writes 2i + r + 1, for i < rounds. Every turn moves the line from
 * one core's cache to the other's, so the time per turn is what the machine charges for a
 * moved line now (the price of the rows that training processes share). Returns the turns
 * done: fewer than `rounds` if a wait spun `patience` times (the other side is gone). */
static int64_t ew_pingpong(int64_t *line, int role, int64_t rounds, int64_t patience) {
    for (int64_t i = 0; i < rounds; i++) {
        int64_t want = 2 * i + role;
        int64_t spins = 0;
        while (__atomic_load_n(line, __ATOMIC_ACQUIRE) != want) {
            if (++spins > patience)
                return i;
        }
        __atomic_store_n(line, want + 1, __ATOMIC_RELEASE);
    }
    return rounds;
}

/* ---- the cluster's exchange: rows as int8 times a per-row scale (largest magnitude / 127) */

/* The largest |x[j]|. */
static EW_CLONES float ew_absmax(int dim, const float *EW_RESTRICT x) {
    float m = 0.0f;
    EW_SIMD_MAX(m)
    for (int j = 0; j < dim; j++) {
        float a = x[j] < 0.0f ? -x[j] : x[j];
        m = a > m ? a : m;
    }
    return m;
}

/* d = live - snap, returning the largest |d[j]| (one read of live: what it is now). */
static EW_CLONES float ew_diff_absmax(int dim, const float *EW_RESTRICT live,
                                     const float *EW_RESTRICT snap, float *EW_RESTRICT d) {
    float m = 0.0f;
    EW_SIMD_MAX(m)
    for (int j = 0; j < dim; j++) {
        float x = live[j] - snap[j];
        float a = x < 0.0f ? -x : x;
        d[j] = x;
        m = a > m ? a : m;
    }
    return m;
}

/* A scale rounded up to the next bfloat16 (a float32 whose low 16 bits are 0), so that it
 * travels in two bytes; s >= 0 and finite (an infinity or NaN is left as it is). */
EW_INLINE float ew_bf16_up(float s) {
    union { float f; uint32_t u; } v;
    v.f = s;
    if ((v.u & 0x7F800000u) != 0x7F800000u && (v.u & 0xFFFFu))
        v.u = (v.u | 0xFFFFu) + 1u;
    return v.f;
}

/* q = x / s rounded to nearest, s the scale m / levels rounded up to a bfloat16 (|x| <= m,
 * so |q| <= levels <= 127); returns s. Adding and taking away 1.5 * 2**23 rounds a float
 * of magnitude below 2**22 to an integer. */
static EW_CLONES float ew_to_levels(int dim, const float *EW_RESTRICT x, float m,
                                    float levels, int8_t *EW_RESTRICT q) {
    const float s = ew_bf16_up(m / levels), inv = m > 0.0f ? 1.0f / s : 0.0f,
                magic = 12582912.0f;
    for (int j = 0; j < dim; j++)
        q[j] = (int8_t)(int32_t)((x[j] * inv + magic) - magic);
    return s;
}

/* int8: q = x / s, s = m / 127 rounded up to a bfloat16; returns s */
static EW_CLONES float ew_to_int8(int dim, const float *EW_RESTRICT x, float m,
                                  int8_t *EW_RESTRICT q) {
    return ew_to_levels(dim, x, m, 127.0f, q);
}

/* One row's delta (live - snap) as integers of at most `levels` in magnitude (127: int8,
 * 7: four bits), buf: dim floats of scratch; snap += what is sent, so the rounding stays
 * in live - snap. Returns the scale. */
static EW_CLONES float ew_quantize_delta(int dim, const float *EW_RESTRICT live,
                                         float *EW_RESTRICT snap, int8_t *EW_RESTRICT q,
                                         float *EW_RESTRICT buf, float levels) {
    float s = ew_to_levels(dim, buf, ew_diff_absmax(dim, live, snap, buf), levels, q);
    EW_SIMD
    for (int j = 0; j < dim; j++)
        snap[j] += s * (float)q[j];
    return s;
}

/* Four bits a value (-7..7, two's complement), two a byte: value 2j in byte j's low
 * nibble, 2j + 1 in its high one (an odd dim leaves the last high nibble 0). */
static EW_CLONES void ew_pack4(int dim, const int8_t *EW_RESTRICT q, uint8_t *EW_RESTRICT p) {
    int half = dim / 2;
    for (int j = 0; j < half; j++)
        p[j] = (uint8_t)(((uint8_t)q[2 * j] & 15u) | ((uint8_t)q[2 * j + 1] << 4));
    if (dim & 1)
        p[half] = (uint8_t)((uint8_t)q[dim - 1] & 15u);
}

static EW_CLONES void ew_unpack4(int dim, const uint8_t *EW_RESTRICT p, int8_t *EW_RESTRICT q) {
    int half = dim / 2;
    for (int j = 0; j < half; j++) {
        q[2 * j] = (int8_t)((int8_t)(uint8_t)(p[j] << 4) >> 4);    /* sign from bit 3 */
        q[2 * j + 1] = (int8_t)((int8_t)p[j] >> 4);
    }
    if (dim & 1)
        q[dim - 1] = (int8_t)((int8_t)(uint8_t)(p[half] << 4) >> 4);
}

/* y += s * q */
static EW_CLONES void ew_add_int8(int dim, float s, const int8_t *EW_RESTRICT q,
                                  float *EW_RESTRICT y) {
    for (int j = 0; j < dim; j++)
        y[j] += s * (float)q[j];
}

/* y += s * q and z += s * q (a delta that both a node's weights and its snapshot take) */
static EW_CLONES void ew_add_int8_pair(int dim, float s, const int8_t *EW_RESTRICT q,
                                       float *EW_RESTRICT y, float *EW_RESTRICT z) {
    EW_SIMD
    for (int j = 0; j < dim; j++) {
        float v = s * (float)q[j];
        y[j] += v;
        z[j] += v;
    }
}

/* Merged values v = s * q arrive: live += v - snap; snap = v. */
static EW_CLONES void ew_rebase_int8(int dim, float s, const int8_t *EW_RESTRICT q,
                                     float *EW_RESTRICT live, float *EW_RESTRICT snap) {
    for (int j = 0; j < dim; j++) {
        float v = s * (float)q[j];
        live[j] += v - snap[j];
        snap[j] = v;
    }
}

/* |live - snap|^2 >= t2 * |snap|^2 and nonzero */
static EW_CLONES int ew_row_moved(int dim, const float *EW_RESTRICT live,
                                  const float *EW_RESTRICT snap, float t2) {
    float c = 0.0f, n = 0.0f;
    for (int j = 0; j < dim; j++) {
        float d = live[j] - snap[j];
        c += d * d;
        n += snap[j] * snap[j];
    }
    return c > 0.0f && c >= t2 * n;
}

/* The rows of [0, n) of a block (row r at live + r * dim) that changed (live != snap),
 * each as integers of at most `levels` times a scale (q: `width` bytes a row; four bits,
 * packed two a byte, when levels is 7), or with levels 0 as float32 (scale 1), snap taking
 * what is sent: choosing and rounding in one pass over the block. rows[k] gets the k-th
 * changed row's index; returns how many. buf: dim floats and dim bytes of scratch. */
static EW_CLONES int64_t ew_delta_block(int dim, int64_t n, const float *EW_RESTRICT live,
                                        float *EW_RESTRICT snap, float levels, int width,
                                        int32_t *EW_RESTRICT rows, uint8_t *EW_RESTRICT q,
                                        float *EW_RESTRICT scale, float *EW_RESTRICT buf,
                                        int64_t first, int64_t step) {
    const int four = levels <= 7.0f;
    int64_t count = 0;
    for (int64_t r = first; r < n; r += step) {       /* rows first, first + step, ... */
        const float *l = live + r * (int64_t)dim;
        float *sn = snap + r * (int64_t)dim;
        float m = ew_diff_absmax(dim, l, sn, buf);
        if (!(m > 0.0f))
            continue;                    /* unchanged (or not a number: left for the checks) */
        uint8_t *out = q + count * (int64_t)width;
        if (levels == 0.0f) {            /* exact: the difference itself */
            float *f = (float *)out;
            EW_SIMD
            for (int j = 0; j < dim; j++) {
                f[j] = buf[j];
                sn[j] += buf[j];
            }
            rows[count] = (int32_t)r;
            scale[count] = 1.0f;
            count++;
            continue;
        }
        int8_t *qq = four ? (int8_t *)(buf + dim) : (int8_t *)out;
        float s = ew_to_levels(dim, buf, m, levels, qq);
        if (four)
            ew_pack4(dim, qq, out);
        EW_SIMD
        for (int j = 0; j < dim; j++)
            sn[j] += s * (float)qq[j];
        rows[count] = (int32_t)r;
        scale[count] = s;
        count++;
    }
    return count;
}

#endif
