/* vecmath.h: the vector arithmetic at the bottom of every word2vec update.
 *
 * Each function is compiled once per instruction set (AVX-512, AVX2+FMA, baseline x86-64)
 * with GCC/Clang `target_clones`; the loader picks the best for the running CPU, so a wheel
 * built for the baseline still runs its inner loops with the widest vectors available.
 * Everything works on raw float32 pointers; the Cython loops in _kernels.pyx call these.
 */
#ifndef ENGINE_VECMATH_H
#define ENGINE_VECMATH_H

#include <stdint.h>
#include <stddef.h>

#define EW_EXP_TABLE_SIZE 1000
#define EW_MAX_EXP 6.0f

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && !defined(__clang__) \
    && !defined(ENGINE_NO_CLONES)
#define EW_CLONES __attribute__((target_clones("arch=skylake-avx512", "arch=haswell", "default")))
#else
#define EW_CLONES
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
#else
#define EW_RESTRICT __restrict__
#define EW_PRAGMA(x) _Pragma(#x)
#define EW_SIMD EW_PRAGMA(omp simd)
#define EW_SIMD_SUM(var) EW_PRAGMA(omp simd reduction(+:var))
#endif

/* Index of f in the sigmoid table, f in (-MAX_EXP, MAX_EXP). In float arithmetic f just
 * below MAX_EXP can round to index EXP_TABLE_SIZE itself, so the table has one more entry
 * (as the C tool's has). */
static inline int ew_table_index(float f) {
    return (int)((f + EW_MAX_EXP) * ((float)EW_EXP_TABLE_SIZE / EW_MAX_EXP / 2.0f));
}

/* y += a * x */
static EW_CLONES void ew_axpy(int dim, float a, const float *EW_RESTRICT x, float *EW_RESTRICT y) {
    EW_SIMD
    for (int i = 0; i < dim; i++) y[i] += a * x[i];
}

/* neu1 = sum (or mean) of the input rows of the n context words. */
static EW_CLONES void ew_context_sum(int dim, const float *EW_RESTRICT syn0, const int32_t *ctx,
                                     int n, int mean, float *EW_RESTRICT neu1) {
    for (int i = 0; i < dim; i++) neu1[i] = 0.0f;
    for (int c = 0; c < n; c++) {
        const float *row = syn0 + (size_t)ctx[c] * dim;
        EW_SIMD
        for (int i = 0; i < dim; i++) neu1[i] += row[i];
    }
    if (mean && n > 0) {
        float inv = 1.0f / (float)n;
        EW_SIMD
        for (int i = 0; i < dim; i++) neu1[i] *= inv;
    }
}

/* One whole update for an input vector h predicting a word: hierarchical softmax along its
 * Huffman path (points = inner nodes, codes = bits; if codelen > 0), then negative sampling
 * against targets (targets[0] the true word, label 1; the rest noise words, label 0; if
 * n > 0). Output rows are updated; the input-side gradient is summed in neu1e and, with
 * apply_to_h (skip-gram), added to h at the end. A score beyond +-MAX_EXP (or NaN) gets no
 * update, as in gensim (the C tool applies a full-size step to saturated noise words). One call per (input, output word) pair keeps the per-pair overhead to a single
 * indirect call; the output rows are prefetched first, since they are the cache misses. */
static EW_CLONES void ew_update(int dim, float *EW_RESTRICT h, float *syn1neg,
                                const int32_t *targets, int n, float *syn1,
                                const int32_t *points, const uint8_t *codes, int codelen,
                                float alpha, float *EW_RESTRICT neu1e, const float *table,
                                int apply_to_h) {
    for (int k = 0; k < n; k++) {
        const char *row = (const char *)(syn1neg + (size_t)targets[k] * dim);
        for (int b = 0; b < dim * 4; b += 64) EW_PREFETCH(row + b);
    }
    for (int i = 0; i < dim; i++) neu1e[i] = 0.0f;
    for (int k = 0; k < codelen; k++) {
        float *EW_RESTRICT l2 = syn1 + (size_t)points[k] * dim;
        float f = 0.0f;
        EW_SIMD_SUM(f)
        for (int i = 0; i < dim; i++) f += h[i] * l2[i];
        if (!(f > -EW_MAX_EXP && f < EW_MAX_EXP)) continue;
        float g = (1.0f - (float)codes[k] - table[ew_table_index(f)]) * alpha;
        EW_SIMD
        for (int i = 0; i < dim; i++) {
            neu1e[i] += g * l2[i];
            l2[i] += g * h[i];
        }
    }
    for (int k = 0; k < n; k++) {
        float *EW_RESTRICT l2 = syn1neg + (size_t)targets[k] * dim;
        float label = (k == 0) ? 1.0f : 0.0f;
        float f = 0.0f;
        EW_SIMD_SUM(f)
        for (int i = 0; i < dim; i++) f += h[i] * l2[i];
        if (!(f > -EW_MAX_EXP && f < EW_MAX_EXP)) continue;
        float g = (label - table[ew_table_index(f)]) * alpha;
        EW_SIMD
        for (int i = 0; i < dim; i++) {
            neu1e[i] += g * l2[i];
            l2[i] += g * h[i];
        }
    }
    if (apply_to_h) {
        EW_SIMD
        for (int i = 0; i < dim; i++) h[i] += neu1e[i];
    }
}

#endif
