/* ldamath.h: the inner loops of LDA's E-step (ext/_lda.pyx), over one document's words.
 *
 * A document's rows of exp(E[log beta]) are gathered once into a topics x words block
 * (bt, row stride n), so that each iteration is two passes over contiguous memory with no
 * per-word reductions: every word's normaliser theta . beta_w is K vector multiply-adds
 * across the words, and each topic's share sum_w cts_w / norm_w * beta_tw one dot
 * product per topic. Compiled per x86-64 feature level as vecmath.h's loops are; a float
 * and a double version of each.
 */
#ifndef ENGINE_LDAMATH_H
#define ENGINE_LDAMATH_H

#include "vecmath.h"

#define LDA_LOOPS(T, SUFFIX)                                                                 \
/* bt[t * n + j] = eb[ids[j] * k + t]: the document's rows, topics x words */                 \
static void lda_gather_##SUFFIX(int k, int n, const int *EW_RESTRICT ids,                     \
                                const T *EW_RESTRICT eb, T *EW_RESTRICT bt) {                 \
    const T *rows[16];                                                                        \
    for (int j0 = 0; j0 < n; j0 += 16) {      /* 16 words at a time: contiguous writes */     \
        int m = n - j0 < 16 ? n - j0 : 16;                                                    \
        for (int i = 0; i < m; i++) rows[i] = eb + (size_t)ids[j0 + i] * k;                   \
        for (int t = 0; t < k; t++) {                                                         \
            T *out = bt + (size_t)t * n + j0;                                                 \
            for (int i = 0; i < m; i++) out[i] = rows[i][t];                                  \
        }                                                                                     \
    }                                                                                         \
}                                                                                             \
/* r[j] = cts[j] / (sum_t theta[t] bt[t, j] + eps) */                                         \
static EW_CLONES void lda_ratios_##SUFFIX(int k, int n, const T *EW_RESTRICT bt,              \
                                          const T *EW_RESTRICT theta,                         \
                                          const T *EW_RESTRICT cts, T eps,                    \
                                          T *EW_RESTRICT r) {                                 \
    EW_SIMD                                                                                   \
    for (int j = 0; j < n; j++) r[j] = eps;                                                   \
    for (int t = 0; t < k; t++) {                                                             \
        const T *b = bt + (size_t)t * n;                                                      \
        T th = theta[t];                                                                      \
        EW_SIMD                                                                               \
        for (int j = 0; j < n; j++) r[j] += th * b[j];                                        \
    }                                                                                         \
    EW_SIMD                                                                                   \
    for (int j = 0; j < n; j++) r[j] = cts[j] / r[j];                                         \
}                                                                                             \
/* acc[t] = sum_j bt[t, j] r[j] */                                                            \
static EW_CLONES void lda_shares_##SUFFIX(int k, int n, const T *EW_RESTRICT bt,              \
                                          const T *EW_RESTRICT r, T *EW_RESTRICT acc) {       \
    for (int t = 0; t < k; t++) {                                                             \
        const T *b = bt + (size_t)t * n;                                                      \
        T s = 0;                                                                              \
        EW_SIMD_SUM(s)                                                                        \
        for (int j = 0; j < n; j++) s += b[j] * r[j];                                         \
        acc[t] = s;                                                                           \
    }                                                                                         \
}                                                                                             \
/* sstats[ids[j], t] += r[j] * theta[t]: the document's statistics */                         \
static EW_CLONES void lda_collect_##SUFFIX(int k, int n, const int *EW_RESTRICT ids,          \
                                           const T *EW_RESTRICT r,                            \
                                           const T *EW_RESTRICT theta,                        \
                                           T *EW_RESTRICT sstats) {                           \
    for (int j = 0; j < n; j++) {                                                             \
        T *out = sstats + (size_t)ids[j] * k;                                                 \
        T rj = r[j];                                                                          \
        EW_SIMD                                                                               \
        for (int t = 0; t < k; t++) out[t] += rj * theta[t];                                  \
    }                                                                                         \
}

LDA_LOOPS(float, f)
LDA_LOOPS(double, d)

#endif
