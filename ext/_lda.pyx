# The E-step of online LDA (variational Bayes): for each document, the topic mix gamma that
# the current topics explain its words best with, and the sufficient statistics the M-step
# needs. engine.documents.lda.estep_numpy is the same computation in numpy (the tests hold
# this one to it). Released from the GIL: threads may run chunks side by side.
from libc.math cimport exp, log, fabs
from libc.stdlib cimport malloc, free

cimport cython
from cython cimport floating


cdef inline double digamma(double x) noexcept nogil:
    """psi(x) for x > 0 (error < 1e-12): below 6, psi(x + 6) less the six reciprocals,
    added as one fraction (one division, not six); from 6 on, the asymptotic series."""
    cdef double r = 0.0, f, a, b, c, p, q
    if x < 6.0:
        # 1/x + ... + 1/(x+5) = sum of the pairs' (2y + 1) / (y (y + 1)), over one denominator
        a = x * (x + 1.0)
        b = (x + 2.0) * (x + 3.0)
        c = (x + 4.0) * (x + 5.0)
        p = (2.0 * x + 1.0) * b * c + (2.0 * x + 5.0) * a * c + (2.0 * x + 9.0) * a * b
        q = a * b * c
        r = -p / q
        x += 6.0
    f = 1.0 / (x * x)
    return r + log(x) - 0.5 / x - f * (1.0 / 12 - f * (1.0 / 120 - f * (
        1.0 / 252 - f * (1.0 / 240 - f * (1.0 / 132)))))


def digamma_array(const double[::1] x, double[::1] out):
    """psi of every value (a test's access to the one the E-step uses)."""
    cdef Py_ssize_t i
    with nogil:
        for i in range(x.shape[0]):
            out[i] = digamma(x[i])


cdef extern from "ldamath.h" nogil:
    void lda_gather_f(int k, int n, const int *ids, const float *eb, float *bt)
    void lda_gather_d(int k, int n, const int *ids, const double *eb, double *bt)
    void lda_ratios_f(int k, int n, const float *bt, const float *theta, const float *cts,
                      float eps, float *r)
    void lda_ratios_d(int k, int n, const double *bt, const double *theta, const double *cts,
                      double eps, double *r)
    void lda_shares_f(int k, int n, const float *bt, const float *r, float *acc)
    void lda_shares_d(int k, int n, const double *bt, const double *r, double *acc)
    void lda_collect_f(int k, int n, const int *ids, const float *r, const float *theta,
                       float *sstats)
    void lda_collect_d(int k, int n, const int *ids, const double *r, const double *theta,
                       double *sstats)


cdef inline void exp_elog(const double *g, floating *out, int k) noexcept nogil:
    """exp(E[log theta]) of a Dirichlet with parameters g."""
    cdef double total = 0.0, base
    cdef int t
    for t in range(k):
        total += g[t]
    base = digamma(total)
    for t in range(k):
        out[t] = <floating> exp(digamma(g[t]) - base)


def estep(const int[::1] indptr, const int[::1] indices, const floating[::1] counts,
          const floating[:, ::1] exp_elog_beta_t, const double[::1] alpha,
          double[:, ::1] gamma, floating[:, ::1] sstats_t, int iterations,
          double gamma_threshold, double eps):
    """Documents indptr/indices/counts (CSR rows, term ids into the rows of
    exp_elog_beta_t, terms x topics); gamma (documents x topics) holds each document's
    starting values and takes its result; sstats_t (terms x topics, or an empty array)
    accumulates sum over documents of counts / (phinorm + eps) * exp(E[log theta]), which
    the caller multiplies by exp(E[log beta]). Returns how many documents converged (mean
    change of gamma under gamma_threshold) within `iterations`."""
    cdef int n_docs = gamma.shape[0], k = gamma.shape[1]
    cdef bint collect = sstats_t.shape[0] > 0
    cdef int d, j, t, it, n, start, longest = 1, converged = 0
    cdef double change, g
    cdef floating *theta
    cdef floating *acc
    cdef floating *cts
    cdef floating *r
    cdef floating *bt
    cdef const floating *eb = &exp_elog_beta_t[0, 0] if exp_elog_beta_t.shape[0] else NULL
    if exp_elog_beta_t.shape[1] != k or alpha.shape[0] != k:
        raise ValueError("estep: topics differ between gamma, alpha and the topics' table")
    if collect and (sstats_t.shape[1] != k or sstats_t.shape[0] != exp_elog_beta_t.shape[0]):
        raise ValueError("estep: sstats must be terms x topics")
    if indptr.shape[0] != n_docs + 1:
        raise ValueError("estep: indptr must have one more entry than gamma has rows")
    for d in range(n_docs):
        longest = max(longest, indptr[d + 1] - indptr[d])
    theta = <floating *> malloc(k * sizeof(floating))
    acc = <floating *> malloc(k * sizeof(floating))
    cts = <floating *> malloc(longest * sizeof(floating))
    r = <floating *> malloc(longest * sizeof(floating))
    bt = <floating *> malloc(<size_t> longest * k * sizeof(floating))
    if not (theta and acc and cts and r and bt):
        free(theta); free(acc); free(cts); free(r); free(bt)
        raise MemoryError()
    try:
        with nogil:
            for d in range(n_docs):
                start = indptr[d]
                n = indptr[d + 1] - start
                for j in range(n):
                    cts[j] = counts[start + j]
                if floating is float:
                    lda_gather_f(k, n, &indices[start], eb, bt)
                else:
                    lda_gather_d(k, n, &indices[start], eb, bt)
                exp_elog(&gamma[d, 0], theta, k)
                for it in range(iterations):
                    if floating is float:
                        lda_ratios_f(k, n, bt, theta, cts, <float> eps, r)
                        lda_shares_f(k, n, bt, r, acc)
                    else:
                        lda_ratios_d(k, n, bt, theta, cts, eps, r)
                        lda_shares_d(k, n, bt, r, acc)
                    change = 0.0
                    for t in range(k):
                        g = alpha[t] + theta[t] * acc[t]
                        change += fabs(g - gamma[d, t])
                        gamma[d, t] = g
                    exp_elog(&gamma[d, 0], theta, k)
                    if change / k < gamma_threshold:
                        converged += 1
                        break
                if collect:
                    if floating is float:
                        lda_ratios_f(k, n, bt, theta, cts, <float> eps, r)
                        lda_collect_f(k, n, &indices[start], r, theta, &sstats_t[0, 0])
                    else:
                        lda_ratios_d(k, n, bt, theta, cts, eps, r)
                        lda_collect_d(k, n, &indices[start], r, theta, &sstats_t[0, 0])
    finally:
        free(theta); free(acc); free(cts); free(r); free(bt)
    return converged
