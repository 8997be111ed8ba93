/* ldamath.h: the inner loops of LDA's E-step (ext/_lda.pyx), over one document's words.
 *
 * Compiled per x86-64 feature level as vecmath.h's loops are; a float and a double version
 * of each.
 */
#ifndef ENGINE_LDAMATH_H
#define ENGINE_LDAMATH_H

#include <string.h>

#include "vecmath.h"

/* log, exp and digamma in plain arithmetic (no library call), so that a loop over topics
 * or terms compiles to vector instructions; the E-step's exp(E[log theta]) and the M-step's
 * exp(E[log beta]) are made of them. Double precision throughout: log and exp within a few
 * units in the last place, digamma within 1e-11 of max(1, |psi|) (the tests hold them to scipy). */
EW_INLINE double lda_bits_double(int64_t b) { double d; memcpy(&d, &b, 8); return d; }
EW_INLINE int64_t lda_double_bits(double d) { int64_t b; memcpy(&b, &d, 8); return b; }

/* Integers move between doubles and their bits by the 1.5 * 2^52 shift (the integer sits
 * in the low bits of the mantissa): 64-bit adds, subtracts and logical shifts only, which
 * AVX2 has (it has no 64-bit conversions or arithmetic shifts). */
#define LDA_SHIFT 6755399441055744.0

/* Valid ranges (all the kernels use): lda_log for finite normal x > 0, lda_exp for finite
 * x <= 709 (below -745 it gives 0), lda_digamma for finite x > 0; outside them the results
 * are not defined (no NaN or inf passes through). */

/* log x for finite x > 0 (normal): x = 2^e m, m in [sqrt(1/2), sqrt(2)); with
 * s = (m - 1) / (m + 1), log m = 2 atanh s = 2 (s + s^3 / 3 + s^5 / 5 + ...), |s| < 0.172 */
EW_INLINE double lda_log(double x) {
    int64_t b = lda_double_bits(x);
    double ef = lda_bits_double((int64_t)((uint64_t)b >> 52) + lda_double_bits(LDA_SHIFT))
                - LDA_SHIFT - 1023.0;
    double m = lda_bits_double((b & 0x000fffffffffffffLL) | 0x3ff0000000000000LL);
    int big = m > 1.4142135623730951;
    m = big ? 0.5 * m : m;
    ef = big ? ef + 1.0 : ef;
    double s = (m - 1.0) / (m + 1.0), z = s * s;
    double p = 1.0 / 21 + z * (1.0 / 23 + z * (1.0 / 25));
    p = 1.0 / 13 + z * (1.0 / 15 + z * (1.0 / 17 + z * (1.0 / 19 + z * p)));
    p = 1.0 / 3 + z * (1.0 / 5 + z * (1.0 / 7 + z * (1.0 / 9 + z * (1.0 / 11 + z * p))));
    return ef * 6.93147180369123816490e-01 + (2.0 * s + (2.0 * s * z * p
                                                       + ef * 1.90821492927058770002e-10));
}

/* 2^n for an integer-valued double n in [-1022, 1023] */
EW_INLINE double lda_pow2(double n) {
    return lda_bits_double((lda_double_bits(n + LDA_SHIFT) - lda_double_bits(LDA_SHIFT)
                            + 1023) << 52);
}

/* exp x: x = n ln 2 + r, |r| <= ln 2 / 2, e^r by its Taylor series to r^13, times 2^n in
 * two factors (so that results down to the smallest subnormal come out, and below it 0) */
EW_INLINE double lda_exp(double x) {
    x = x < -760.0 ? -760.0 : (x > 709.0 ? 709.0 : x);
    double n = (x * 1.4426950408889634 + LDA_SHIFT) - LDA_SHIFT;
    double r = (x - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10;
    double p = 1.0 / 6227020800.0;
    p = 1.0 / 479001600.0 + r * p;
    p = 1.0 / 39916800.0 + r * p;
    p = 1.0 / 3628800.0 + r * p;
    p = 1.0 / 362880.0 + r * p;
    p = 1.0 / 40320.0 + r * p;
    p = 1.0 / 5040.0 + r * p;
    p = 1.0 / 720.0 + r * p;
    p = 1.0 / 120.0 + r * p;
    p = 1.0 / 24.0 + r * p;
    p = 1.0 / 6.0 + r * p;
    p = 0.5 + r * p;
    p = 1.0 + r * p;
    p = 1.0 + r * p;
    double n1 = (0.5 * n + LDA_SHIFT) - LDA_SHIFT;        /* n / 2 rounded: n1 + n2 = n */
    return p * lda_pow2(n1) * lda_pow2(n - n1);
}

/* psi(x) for x > 0: below 6, psi(x + 6) less the six reciprocals, added as one fraction
 * (one division, not six); from 6 on, the asymptotic series. Both branches are computed
 * and one chosen, so that the loops over it vectorize. */
EW_INLINE double lda_digamma(double x) {
    int small = x < 6.0;
    double y = small ? x : 1.0;                           /* no overflow in the fraction */
    double a = y * (y + 1.0), b = (y + 2.0) * (y + 3.0), c = (y + 4.0) * (y + 5.0);
    double p = (2.0 * y + 1.0) * b * c + (2.0 * y + 5.0) * a * c + (2.0 * y + 9.0) * a * b;
    double q = -p / (a * b * c);
    double r = small ? q : 0.0;
    x = small ? x + 6.0 : x;
    double inv = 1.0 / x, f = inv * inv;
    return r + lda_log(x) - 0.5 * inv - f * (1.0 / 12 - f * (1.0 / 120 - f * (
        1.0 / 252 - f * (1.0 / 240 - f * (1.0 / 132)))));
}

EW_INLINE double lda_digamma_sum(int k, const double *g) {
    double total = 0;
    for (int t = 0; t < k; t++) total += g[t];
    return lda_digamma(total);
}

/* out = psi(x) (which 0), log x (1) or exp x (2), element by element: the tests' access */
static EW_CLONES void lda_math_array(int which, int n, const double *EW_RESTRICT x,
                                     double *EW_RESTRICT out) {
    if (which == 0) {
        EW_SIMD
        for (int i = 0; i < n; i++) out[i] = lda_digamma(x[i]);
    } else if (which == 1) {
        EW_SIMD
        for (int i = 0; i < n; i++) out[i] = lda_log(x[i]);
    } else {
        EW_SIMD
        for (int i = 0; i < n; i++) out[i] = lda_exp(x[i]);
    }
}

/* A document's rows of exp(E[log beta]) are gathered once into tiles of W words: tile b
 * holds topics x W (bt[(b * k + t) * W + i] = eb[ids[b * W + i] * k + t]), the last one
 * padded with ones (their counts are zero). One iteration is then one pass over the tiles:
 * each tile's normalisers (theta . beta_w for its W words: K vector multiply-adds, four
 * running sums so that they do not wait on each other), its ratios r = cts / norm, and its
 * words' shares of every topic (added into a topics x W scratch, summed once at the end),
 * while the tile is still in the first-level cache: the rows are read once per iteration. */
#define LDA_LOOPS(T, SUFFIX, W)                                                              \
static void lda_tiles_##SUFFIX(int k, int n, const int *EW_RESTRICT ids,                      \
                               const T *EW_RESTRICT eb, T *EW_RESTRICT bt) {                  \
    const T *rows[W];                                                                         \
    for (int j0 = 0, b = 0; j0 < n; j0 += W, b++) {                                           \
        int m = n - j0 < W ? n - j0 : W;                                                      \
        for (int i = 0; i < m; i++) rows[i] = eb + (size_t)ids[j0 + i] * k;                   \
        T *tile = bt + (size_t)b * k * W;                                                     \
        for (int t = 0; t < k; t++) {                                                         \
            for (int i = 0; i < m; i++) tile[t * W + i] = rows[i][t];                         \
            for (int i = m; i < W; i++) tile[t * W + i] = (T)1;                               \
        }                                                                                     \
    }                                                                                         \
}                                                                                             \
/* r[j] = cts[j] / (sum_t theta[t] beta[t, j] + eps) for every word (cts: zero past the     \
 * document's words, to a whole tile), and with acc, acc[t] = sum_j beta[t, j] r[j]. Topics  \
 * whose theta is exactly zero (a topic the document has left: exp(E[log theta]) under the   \
 * type's smallest value) add exactly nothing to a normaliser, and their share is only ever  \
 * multiplied by that zero, so they are skipped (acc 0): a document that keeps a few of     \
 * many topics costs a few. live: k ints of scratch. */                                      \
static EW_CLONES void lda_pass_##SUFFIX(int k, int n, const T *EW_RESTRICT bt,                \
                                        const T *EW_RESTRICT theta,                           \
                                        const T *EW_RESTRICT cts, T eps,                      \
                                        T *EW_RESTRICT r, T *EW_RESTRICT accw,                \
                                        T *EW_RESTRICT acc, int *EW_RESTRICT live) {          \
    int nb = (n + W - 1) / W, nl = 0;                                                         \
    for (int t = 0; t < k; t++)                                                               \
        if (theta[t] != 0) live[nl++] = t;                                                    \
    if (acc) {                                                                                \
        for (int t = 0; t < k; t++) acc[t] = 0;                                               \
        EW_SIMD                                                                               \
        for (int i = 0; i < nl * W; i++) accw[i] = 0;                                         \
    }                                                                                         \
    for (int b = 0; b < nb; b++) {                                                            \
        const T *tile = bt + (size_t)b * k * W;                                               \
        T s0[W], s1[W], s2[W], s3[W];                                                         \
        EW_SIMD                                                                               \
        for (int i = 0; i < W; i++) { s0[i] = eps; s1[i] = 0; s2[i] = 0; s3[i] = 0; }         \
        int l = 0;                                                                            \
        for (; l + 4 <= nl; l += 4) {                                                         \
            T a = theta[live[l]], c = theta[live[l + 1]];                                     \
            T d = theta[live[l + 2]], e = theta[live[l + 3]];                                 \
            const T *x0 = tile + live[l] * W, *x1 = tile + live[l + 1] * W;                   \
            const T *x2 = tile + live[l + 2] * W, *x3 = tile + live[l + 3] * W;               \
            EW_SIMD                                                                           \
            for (int i = 0; i < W; i++) {                                                     \
                s0[i] += a * x0[i]; s1[i] += c * x1[i];                                       \
                s2[i] += d * x2[i]; s3[i] += e * x3[i];                                       \
            }                                                                                 \
        }                                                                                     \
        for (; l < nl; l++) {                                                                 \
            T a = theta[live[l]];                                                             \
            const T *x = tile + live[l] * W;                                                  \
            EW_SIMD                                                                           \
            for (int i = 0; i < W; i++) s0[i] += a * x[i];                                    \
        }                                                                                     \
        T *rb = r + (size_t)b * W;                                                            \
        const T *cb = cts + (size_t)b * W;                                                    \
        EW_SIMD                                                                               \
        for (int i = 0; i < W; i++) rb[i] = cb[i] / ((s0[i] + s1[i]) + (s2[i] + s3[i]));      \
        if (!acc) continue;                                                                   \
        for (l = 0; l < nl; l++) {                                                            \
            const T *x = tile + live[l] * W;                                                  \
            T *o = accw + l * W;                                                              \
            EW_SIMD                                                                           \
            for (int i = 0; i < W; i++) o[i] += x[i] * rb[i];                                 \
        }                                                                                     \
    }                                                                                         \
    if (!acc) return;                                                                         \
    for (int l = 0; l < nl; l++) {                                                            \
        T s = 0;                                                                              \
        EW_SIMD_SUM(s)                                                                        \
        for (int i = 0; i < W; i++) s += accw[l * W + i];                                     \
        acc[live[l]] = s;                                                                     \
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
}                                                                                             \
/* out[t] = exp(E[log theta_t]) of a Dirichlet with parameters g (k of them; work: k     \
 * doubles of scratch, the loop's own type, so that it vectorizes) */                        \
static EW_CLONES void lda_exp_elog_##SUFFIX(int k, const double *EW_RESTRICT g,               \
                                            double *EW_RESTRICT work, T *EW_RESTRICT out) {   \
    double base = lda_digamma_sum(k, g);                                                      \
    EW_SIMD                                                                                   \
    for (int t = 0; t < k; t++) work[t] = lda_exp(lda_digamma(g[t]) - base);                  \
    for (int t = 0; t < k; t++) out[t] = (T)work[t];                                          \
}                                                                                             \
/* exp(E[log beta]) of terms w0..w1 (lam: topics x v, the prior not yet added: eta[w] for   \
 * every topic, or eta[t * v + w] with eta_rows; base[t]: psi of topic t's whole row with   \
 * its prior), written terms x topics into eb_t (row stride k) */                             \
static EW_CLONES void lda_eb_rows_##SUFFIX(int v, int k, int w0, int w1,                      \
                                           const T *EW_RESTRICT lam,                          \
                                           const double *EW_RESTRICT eta, int eta_rows,       \
                                           const double *EW_RESTRICT base,                    \
                                           T *EW_RESTRICT eb_t) {                             \
    double buf[64];                                                                           \
    for (int a = w0; a < w1; a += 64) {                                                       \
        int m = w1 - a < 64 ? w1 - a : 64;                                                    \
        for (int t = 0; t < k; t++) {                                                         \
            const T *row = lam + (size_t)t * v + a;                                           \
            const double *e = eta + (eta_rows ? (size_t)t * v : 0) + a;                       \
            double bt = base[t];                                                              \
            EW_SIMD                                                                           \
            for (int i = 0; i < m; i++)                                                       \
                buf[i] = lda_exp(lda_digamma((double)row[i] + e[i]) - bt);                    \
            T *out = eb_t + (size_t)a * k + t;                                                \
            for (int i = 0; i < m; i++) out[(size_t)i * k] = (T)buf[i];                       \
        }                                                                                     \
    }                                                                                         \
}

#define LDA_TILE_F 16
#define LDA_TILE_D 8

LDA_LOOPS(float, f, LDA_TILE_F)
LDA_LOOPS(double, d, LDA_TILE_D)

#endif
