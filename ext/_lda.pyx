# The E-step of online LDA (variational Bayes): for each document, the topic mix gamma that
# the current topics explain its words best with, and the sufficient statistics the M-step
# needs. engine.documents.lda.estep_numpy is the same computation in numpy (the tests hold
# this one to it). Released from the GIL: threads may run chunks side by side.
from libc.math cimport fabs
from libc.stdlib cimport malloc, free

cimport cython
from cython cimport floating


cdef extern from "ldamath.h" nogil:
    void lda_math_array(int which, int n, const double *x, double *out)
    void lda_exp_elog_f(int k, const double *g, double *work, float *out)
    void lda_exp_elog_d(int k, const double *g, double *work, double *out)
    void lda_eb_rows_f(int v, int k, int w0, int w1, const float *lam, const double *eta,
                       int eta_rows, const double *base, float *eb_t)
    void lda_eb_rows_d(int v, int k, int w0, int w1, const double *lam, const double *eta,
                       int eta_rows, const double *base, double *eb_t)
    int LDA_TILE_F
    int LDA_TILE_D
    void lda_tiles_f(int k, int n, const int *ids, const float *eb, float *bt)
    void lda_tiles_d(int k, int n, const int *ids, const double *eb, double *bt)
    void lda_pass_f(int k, int n, const float *bt, const float *theta, const float *cts,
                    float eps, float *r, float *accw, float *acc, int *live)
    void lda_pass_d(int k, int n, const double *bt, const double *theta, const double *cts,
                    double eps, double *r, double *accw, double *acc, int *live)
    void lda_collect_f(int k, int n, const int *ids, const float *r, const float *theta,
                       float *sstats)
    void lda_collect_d(int k, int n, const int *ids, const double *r, const double *theta,
                       double *sstats)


cdef inline void exp_elog(const double *g, double *work, floating *out, int k) noexcept nogil:
    """exp(E[log theta]) of a Dirichlet with parameters g (work: k doubles of scratch)."""
    if floating is float:
        lda_exp_elog_f(k, g, work, out)
    else:
        lda_exp_elog_d(k, g, work, out)


def math_array(int which, const double[::1] x, double[::1] out):
    """psi (which 0), log (1) or exp (2) of every value, as the kernels compute them (the
    tests' access): for finite x > 0 (psi, log) and finite x <= 709 (exp) only."""
    if out.shape[0] != x.shape[0] or not 0 <= which <= 2:
        raise ValueError("math_array: x and out differ in length, or which is not 0, 1, 2")
    with nogil:
        lda_math_array(which, x.shape[0], &x[0] if x.shape[0] else NULL,
                       &out[0] if out.shape[0] else NULL)


def digamma_array(const double[::1] x, double[::1] out):
    """psi of every value (the one the E-step uses)."""
    math_array(0, x, out)


def exp_elog_rows(const floating[:, ::1] lam, const double[::1] eta, bint eta_rows,
                  const double[::1] base, floating[:, ::1] eb_t, int w0, int w1):
    """exp(E[log beta]) of terms w0..w1 into those rows of eb_t (terms x topics): lam the
    statistics (topics x terms) without the prior eta (a value per term, or with eta_rows
    one per topic and term), base[t] psi of topic t's row sum with its prior."""
    cdef int k = lam.shape[0], v = lam.shape[1]
    if eb_t.shape[0] != v or eb_t.shape[1] != k or base.shape[0] != k or not \
            0 <= w0 <= w1 <= v:
        raise ValueError("exp_elog_rows: eb_t must be terms x topics, base one per topic, "
                         "0 <= w0 <= w1 <= terms")
    if eta.shape[0] != (<Py_ssize_t> k * v if eta_rows else v):
        raise ValueError("exp_elog_rows: eta must have a value per term (per topic and term "
                         "with eta_rows)")
    if w0 == w1 or k == 0:
        return
    with nogil:
        if floating is float:
            lda_eb_rows_f(v, k, w0, w1, &lam[0, 0], &eta[0], eta_rows, &base[0], &eb_t[0, 0])
        else:
            lda_eb_rows_d(v, k, w0, w1, &lam[0, 0], &eta[0], eta_rows, &base[0], &eb_t[0, 0])


def estep(const int[::1] indptr, const int[::1] indices, const floating[::1] counts,
          const floating[:, ::1] exp_elog_beta_t, const double[::1] alpha,
          double[:, ::1] gamma, floating[:, ::1] sstats_t, int iterations,
          double gamma_threshold, double eps, ratios=None):
    """Documents indptr/indices/counts (CSR rows, term ids into the rows of
    exp_elog_beta_t, terms x topics); gamma (documents x topics) holds each document's
    starting values and takes its result; sstats_t (terms x topics, or an empty array)
    accumulates sum over documents of counts / (phinorm + eps) * exp(E[log theta]), which
    the caller multiplies by exp(E[log beta]). With `ratios` (one value per nonzero, the
    counts' type) each word's last counts / (phinorm + eps) is kept there instead, for
    `collect` to add later. Returns how many documents converged (mean change of gamma
    under gamma_threshold) within `iterations`."""
    cdef int n_docs = gamma.shape[0], k = gamma.shape[1]
    cdef bint collect = sstats_t.shape[0] > 0
    cdef int d, j, t, it, n, start, longest = 1, converged = 0, width, padded
    cdef double change, g
    cdef floating *theta
    cdef floating *acc
    cdef floating *cts
    cdef floating *r
    cdef floating *bt
    cdef floating *accw
    cdef double *work
    cdef int *live
    cdef const floating *eb = &exp_elog_beta_t[0, 0] if exp_elog_beta_t.shape[0] else NULL
    cdef floating[::1] kept
    cdef bint keep = ratios is not None
    if keep:
        kept = ratios
        if kept.shape[0] != counts.shape[0]:
            raise ValueError("estep: ratios must have one value per nonzero")
    if exp_elog_beta_t.shape[1] != k or alpha.shape[0] != k:
        raise ValueError("estep: topics differ between gamma, alpha and the topics' table")
    if collect and (sstats_t.shape[1] != k or sstats_t.shape[0] != exp_elog_beta_t.shape[0]):
        raise ValueError("estep: sstats must be terms x topics")
    if indptr.shape[0] != n_docs + 1:
        raise ValueError("estep: indptr must have one more entry than gamma has rows")
    if indptr[0] < 0 or indptr[n_docs] > counts.shape[0] or indptr[n_docs] > indices.shape[0]:
        raise ValueError("estep: indptr runs outside the counts and indices")
    for d in range(n_docs):
        longest = max(longest, indptr[d + 1] - indptr[d])
    width = LDA_TILE_F if floating is float else LDA_TILE_D
    padded = (longest + width - 1) // width * width        # words, to whole tiles
    theta = <floating *> malloc(k * sizeof(floating))
    acc = <floating *> malloc(k * sizeof(floating))
    accw = <floating *> malloc(<size_t> k * width * sizeof(floating))
    work = <double *> malloc(k * sizeof(double))
    live = <int *> malloc(k * sizeof(int))
    cts = <floating *> malloc(padded * sizeof(floating))
    r = <floating *> malloc(padded * sizeof(floating))
    bt = <floating *> malloc(<size_t> padded * k * sizeof(floating))
    if not (theta and acc and accw and work and live and cts and r and bt):
        free(theta); free(acc); free(accw); free(work); free(live); free(cts); free(r)
        free(bt)
        raise MemoryError()
    try:
        with nogil:
            for d in range(n_docs):
                start = indptr[d]
                n = indptr[d + 1] - start
                for j in range(n):
                    cts[j] = counts[start + j]
                for j in range(n, (n + width - 1) // width * width):
                    cts[j] = 0
                if floating is float:
                    lda_tiles_f(k, n, &indices[start], eb, bt)
                else:
                    lda_tiles_d(k, n, &indices[start], eb, bt)
                exp_elog(&gamma[d, 0], work, theta, k)
                for it in range(iterations):
                    if floating is float:
                        lda_pass_f(k, n, bt, theta, cts, <float> eps, r, accw, acc, live)
                    else:
                        lda_pass_d(k, n, bt, theta, cts, eps, r, accw, acc, live)
                    change = 0.0
                    for t in range(k):
                        g = alpha[t] + theta[t] * acc[t]
                        change += fabs(g - gamma[d, t])
                        gamma[d, t] = g
                    exp_elog(&gamma[d, 0], work, theta, k)
                    if change / k < gamma_threshold:
                        converged += 1
                        break
                if collect or keep:
                    if floating is float:
                        lda_pass_f(k, n, bt, theta, cts, <float> eps, r, NULL, NULL, live)
                    else:
                        lda_pass_d(k, n, bt, theta, cts, eps, r, NULL, NULL, live)
                if keep:
                    for j in range(n):
                        kept[start + j] = r[j]
                elif collect:
                    if floating is float:
                        lda_collect_f(k, n, &indices[start], r, theta, &sstats_t[0, 0])
                    else:
                        lda_collect_d(k, n, &indices[start], r, theta, &sstats_t[0, 0])
    finally:
        free(theta); free(acc); free(accw); free(work); free(live); free(cts); free(r)
        free(bt)
    return converged


def collect(const int[::1] indptr, const int[::1] indices, const floating[::1] ratios,
            const double[:, ::1] gamma, floating[:, ::1] sstats_t):
    """The statistics of documents whose E-step kept its ratios (estep's `ratios`): adds
    into sstats_t what estep would have, from each document's gamma and ratios."""
    cdef int n_docs = gamma.shape[0], k = gamma.shape[1], d, start, n
    cdef floating *theta
    cdef double *work
    if indptr.shape[0] != n_docs + 1 or ratios.shape[0] != indices.shape[0] or \
            sstats_t.shape[1] != k:
        raise ValueError("collect: indptr, ratios, gamma and sstats_t do not agree")
    if indptr[0] < 0 or indptr[n_docs] > indices.shape[0]:
        raise ValueError("collect: indptr runs outside the indices")
    for d in range(n_docs):
        if indptr[d + 1] < indptr[d]:
            raise ValueError("collect: indptr must not decrease")
    for d in range(indptr[0], indptr[n_docs]):
        if not 0 <= indices[d] < sstats_t.shape[0]:
            raise ValueError("collect: a term id outside sstats_t's rows")
    theta = <floating *> malloc(k * sizeof(floating))
    work = <double *> malloc(k * sizeof(double))
    if not (theta and work):
        free(theta); free(work)
        raise MemoryError()
    try:
        with nogil:
            for d in range(n_docs):
                start = indptr[d]
                n = indptr[d + 1] - start
                if n <= 0:
                    continue
                exp_elog(&gamma[d, 0], work, theta, k)
                if floating is float:
                    lda_collect_f(k, n, &indices[start], &ratios[start], theta,
                                  &sstats_t[0, 0])
                else:
                    lda_collect_d(k, n, &indices[start], &ratios[start], theta,
                                  &sstats_t[0, 0])
    finally:
        free(theta); free(work)


# ---- statistics on the wire: nonzero entries only ------------------------------------------
# A row of statistics goes as a bit per topic (set where the entry is not 0, most significant
# bit first, each row padded to whole bytes: numpy's packbits along the row) and then the
# entries that are not 0, row after row.

def pack_product_rows(const floating[:, ::1] a, const floating[:, ::1] b,
                      const int[::1] ids, unsigned char[:, ::1] mask,
                      floating[::1] values) -> int:
    """Rows ids of a * b (element-wise) in that form: `mask` (len(ids) x bytes per row,
    zeroed by the caller) and `values` (room for every entry) filled; returns how many
    values."""
    cdef Py_ssize_t n = ids.shape[0], k = a.shape[1], r, c, j = 0, row
    cdef floating v
    cdef int nz, bits
    if b.shape[0] != a.shape[0] or b.shape[1] != k or mask.shape[0] != n or \
            mask.shape[1] != (k + 7) // 8 or values.shape[0] < n * k:
        raise ValueError("pack_product_rows: a and b differ, or mask or values too small")
    for r in range(n):
        if not 0 <= ids[r] < a.shape[0]:
            raise ValueError("pack_product_rows: a row id outside a")
    with nogil:
        for r in range(n):                   # branch-free: zeros are written, not kept
            row = ids[r]
            bits = 0
            for c in range(k):
                v = a[row, c] * b[row, c]
                values[j] = v
                nz = v != 0
                j += nz
                bits |= nz << (7 - (c & 7))
                if c & 7 == 7 or c == k - 1:
                    mask[r, c >> 3] = bits
                    bits = 0
    return j


def check_sparse_rows(const unsigned char[:, ::1] mask, const floating[::1] values, int k):
    """Rows in that form, of k topics, checked: the mask's width, no bit past the last
    topic, as many values as bits set, every value finite."""
    cdef Py_ssize_t n = mask.shape[0], width = (k + 7) // 8, r, c, bits = 0
    cdef unsigned char pad = <unsigned char> ((0xFF >> (k & 7)) if k & 7 else 0)
    if mask.shape[1] != width:
        raise ValueError(f"the mask is not {width} bytes a row")
    for r in range(n):
        if width and mask[r, width - 1] & pad:
            raise ValueError("a bit set past the last topic")
        for c in range(width):
            bits += _popcount(mask[r, c])
    if bits != values.shape[0]:
        raise ValueError(f"{values.shape[0]} values for {bits} bits set")
    for c in range(values.shape[0]):
        if not (fabs(values[c]) <= 1e300):
            raise ValueError("a value that is not finite")


def add_sparse_rows(const unsigned char[:, ::1] mask, const floating[::1] values,
                    const int[::1] targets, floating[:, ::1] out, bint transposed=False,
                    bint checked=False):
    """Add rows in that form into rows `targets` of out (rows x topics), or with
    `transposed` into its columns `targets` (out: topics x rows, a row's values down a
    column). Everything is checked before anything is added: every target inside out,
    and check_sparse_rows unless the caller says it has run it on these (`checked`)."""
    cdef Py_ssize_t n = targets.shape[0], r, c, j = 0, t
    cdef Py_ssize_t k = out.shape[0] if transposed else out.shape[1]
    cdef Py_ssize_t width = (k + 7) // 8, limit = out.shape[1] if transposed else out.shape[0]
    cdef unsigned int x
    cdef int b
    if mask.shape[0] != n:
        raise ValueError(f"the mask has {mask.shape[0]} rows, expected {n}")
    for r in range(n):
        if not 0 <= targets[r] < limit:
            raise ValueError("a row outside the statistics")
    if not checked:
        check_sparse_rows(mask, values, k)
    elif mask.shape[1] != width:
        raise ValueError(f"the mask is not {width} bytes a row")
    if n == 0 or k == 0:
        return
    with nogil:
        for r in range(n):
            t = targets[r]
            for c in range(width):           # the bits set only, first topic first
                x = mask[r, c]
                while x:
                    b = __builtin_clz(x) - 24
                    if transposed:
                        out[8 * c + b, t] += values[j]
                    else:
                        out[t, 8 * c + b] += values[j]
                    j += 1
                    x &= ~(0x80u >> b)


cdef extern from *:
    int __builtin_clz(unsigned int x) nogil
    int __builtin_popcount(unsigned int x) nogil


cdef inline int _popcount(unsigned char x) noexcept nogil:
    return __builtin_popcount(x)
