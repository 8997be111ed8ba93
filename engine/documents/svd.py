"""Truncated SVD of a streamed terms x documents matrix: the pure numerical core.

The matrix X (terms x documents) arrives as *chunks*: CSR matrices of documents x terms
(row d of a chunk is column d of X). Nothing here knows where chunks come from or how many
processes share the work: a `passes` object runs the three streamed products

    sketch(width, seed)  Y = X @ Omega       (Omega: a Gaussian documents x width matrix,
                                              see `omega`)
    power(q)             Y = X @ (X.T @ q)   (one power iteration, before orthonormalizing)
    gram(q)              G = (X.T @ q).T @ (X.T @ q)   (width x width, in float64)

and everything dense and small enough to sit in one place is done here:

* `stochastic_svd`: the randomized range finder of Halko, Martinsson and Tropp (2011,
  "Finding structure with randomness", algorithms 4.3/4.4 and 5.1), streamed: one sketch
  pass, `power_iters` power passes, one Gram pass; Q^T X is never formed, its Gram is.
* `merge(a, b)`: the rank-k SVD of [U_a S_a, U_b S_b], i.e. of two parts' decompositions
  put side by side (Rehurek 2011, "Fast and faster", the merge step). A pure function of
  two (U, S) pairs, so a cluster can call it on results from different machines.
* `merge_all`: a stream of partial decompositions folded pairwise in a fixed binary tree.

Orthonormalization is Cholesky QR (a Gram product and a triangular multiply, split by rows
over our threads), repeated where R's condition calls for it (CholeskyQR2), Householder QR
where Cholesky breaks down: on a tall, thin basis Cholesky QR is the faster of the two, its
work being matrix products that split by rows.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterable
from typing import NamedTuple, Protocol

import numpy as np
import scipy.linalg
import scipy.linalg.lapack
from threadpoolctl import threadpool_limits

log = logging.getLogger("engine")

OMEGA_ROWS = 1024            # the Gaussian sketch is drawn in groups of this many documents


class Decomposition(NamedTuple):
    """Left singular vectors `u` (terms x r, orthonormal columns) and singular values `s`
    (r, descending) of a matrix or a part of one."""
    u: np.ndarray
    s: np.ndarray


class Passes(Protocol):
    """The streamed products over X (see the module's note)."""

    n_terms: int
    n_docs: int

    def sketch(self, width: int, seed: int) -> np.ndarray: ...

    def power(self, q: np.ndarray) -> np.ndarray: ...

    def gram(self, q: np.ndarray) -> np.ndarray: ...


def sketch_width(k: int, extra_samples: int, n_terms: int, n_docs: int) -> int:
    """Columns of the random sketch: k + extra_samples, at most the matrix's smaller side."""
    return max(1, min(k + extra_samples, n_terms, n_docs))


def omega(seed: int, first_doc: int, n_docs: int, width: int, dtype) -> np.ndarray:
    """Rows first_doc.. of the Gaussian test matrix (documents x width), drawn in groups
    of OMEGA_ROWS documents each seeded by (seed, group number): the same whatever piece
    of the corpus, process or thread asks, so any split of the work gives one sketch."""
    if n_docs <= 0:
        return np.zeros((0, width), dtype=dtype)
    g0, g1 = first_doc // OMEGA_ROWS, (first_doc + n_docs - 1) // OMEGA_ROWS
    groups = [np.random.default_rng([seed, g]).standard_normal((OMEGA_ROWS, width),
                                                               dtype=np.dtype(dtype))
              for g in range(g0, g1 + 1)]
    rows = groups[0] if len(groups) == 1 else np.concatenate(groups)
    start = first_doc - g0 * OMEGA_ROWS
    return rows[start:start + n_docs]


# ---- tall-skinny products on our own threads ------------------------------------------------

ROW_BLOCK_MIN = 4096           # rows below which a product is not worth splitting


def _row_parts(n_rows: int, threads: int) -> list[slice]:
    parts = max(1, min(threads, n_rows // ROW_BLOCK_MIN))
    bounds = np.linspace(0, n_rows, parts + 1).astype(int)
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


def _in_row_blocks(n_rows: int, threads: int, fn) -> list:
    """fn(rows) for row ranges covering 0..n_rows, on `threads` threads, each with
    single-threaded BLAS. Splitting a terms x width product by rows ourselves, rather
    than letting BLAS thread it, keeps working when another process holds a core: BLAS
    threads then spin on each other and run slower than one thread would."""
    parts = _row_parts(n_rows, threads)
    if len(parts) == 1:
        return [fn(parts[0])]
    with one_blas_thread(), ThreadPoolExecutor(len(parts), thread_name_prefix="lsi-rows") as ex:
        return list(ex.map(fn, parts))


def cross(a: np.ndarray, b: np.ndarray, threads: int = 1) -> np.ndarray:
    """a.T @ b for tall a, b (same rows), summed over row blocks."""
    parts = _in_row_blocks(a.shape[0], threads, lambda r: a[r].T @ b[r])
    return sum(parts[1:], parts[0])


def times(y: np.ndarray, m: np.ndarray, threads: int = 1) -> np.ndarray:
    """y @ m for tall y and small m, by row blocks."""
    out = np.empty((y.shape[0], m.shape[1]), dtype=np.result_type(y, m))
    _in_row_blocks(y.shape[0], threads, lambda r: np.matmul(y[r], m, out=out[r]))
    return out


# ---- orthonormalizing --------------------------------------------------------------------------

def _cholesky_qr(y: np.ndarray, threads: int) -> tuple[np.ndarray, float] | None:
    """(Q, cond(R)) of one Cholesky QR step (Q = Y R^-1), None where the Gram matrix is
    not positive definite to working precision."""
    gram = cross(y, y, threads)
    try:
        with one_blas_thread():
            r = scipy.linalg.cholesky(gram, lower=False, check_finite=False)
            rcond = _triangular_rcond(r) if np.all(np.isfinite(r)) else 0.0
            r_inv = scipy.linalg.lapack.get_lapack_funcs("trtri", (r,))(r, lower=0)[0]
    except (np.linalg.LinAlgError, scipy.linalg.LinAlgError):
        return None
    if rcond <= 0 or not np.all(np.isfinite(r_inv)):
        return None
    return times(y, np.triu(r_inv).astype(y.dtype), threads), 1.0 / rcond


def _triangular_rcond(r: np.ndarray) -> float:
    """LAPACK's estimate of 1 / cond(R) for an upper triangular R, in O(n^2)."""
    trcon = scipy.linalg.lapack.get_lapack_funcs("trcon", (r,))
    rcond, info = trcon(r, norm="1", uplo="U", diag="N")
    return float(rcond) if info == 0 else 0.0


def one_blas_thread():
    """BLAS on one thread inside the block. All of the LSI's parallelism is its own
    threads' and processes': threaded BLAS spins on a core another process holds, so on a
    shared machine even a small dense step can take far longer on contended BLAS threads
    than on one."""
    return threadpool_limits(limits=1, user_api="blas")


def orthonormalize(y: np.ndarray, threads: int = 1) -> np.ndarray:
    """An orthonormal basis of the columns of y (same shape). Cholesky QR, repeated once
    where R's condition says the first step left the columns short of orthonormal (its
    error grows as cond^2 eps: "CholeskyQR2", Yamamoto et al. 2015); Householder QR for a
    rank-deficient or very ill-conditioned y."""
    eps = float(np.finfo(y.dtype).eps)
    first = _cholesky_qr(y, threads)
    if first is not None:
        q, cond = first
        if cond * cond * eps <= 1e-3 * eps ** 0.5:
            return q
        if cond * cond * eps < 0.1:
            second = _cholesky_qr(q, threads)
            if second is not None:
                return second[0]
    q = scipy.linalg.qr(y, mode="economic", check_finite=False)[0]
    return np.ascontiguousarray(q, dtype=y.dtype)


def rank_tolerance(dtype) -> float:
    """Eigenvalues of a Gram matrix below this share of the largest are rounding noise."""
    return 100 * float(np.finfo(np.dtype(dtype)).eps)


def canonical_signs(u: np.ndarray) -> np.ndarray:
    """Flip columns so each one's entry of largest magnitude is positive (an SVD fixes
    them only up to sign); in place, returns u."""
    if u.size:
        flip = -u.min(axis=0) > u.max(axis=0)
        u[:, flip] *= -1
    return u


def _top_eigen(gram: np.ndarray, k: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """The k largest eigenpairs of a symmetric PSD matrix, descending; pairs below the
    rank tolerance dropped."""
    with one_blas_thread():
        w, v = scipy.linalg.eigh(gram, check_finite=False)
    w, v = w[::-1], v[:, ::-1]
    keep = int(np.sum(w > max(w[0], 0) * rank_tolerance(dtype))) if len(w) else 0
    keep = min(k, keep)
    return w[:keep], v[:, :keep]


def finish(q: np.ndarray, gram: np.ndarray, k: int, threads: int = 1) -> Decomposition:
    """From an orthonormal range basis q (terms x l) and G = (Q^T X)(Q^T X)^T: the top k
    singular triplets' (u, s) of X."""
    w, v = _top_eigen(gram, k, q.dtype)
    u = times(q, v.astype(q.dtype), threads)
    return Decomposition(canonical_signs(u), np.sqrt(w).astype(q.dtype))


def stochastic_svd(passes: Passes, k: int, extra_samples: int = 100, power_iters: int = 2,
                   seed: int = 0, dtype=np.float64, threads: int = 1) -> Decomposition:
    """Randomized rank-k SVD of the streamed matrix behind `passes`, in 2 + power_iters
    passes; the dense steps between them on `threads` threads. Fewer than k factors come
    back when the matrix has lower rank."""
    width = sketch_width(k, extra_samples, passes.n_terms, passes.n_docs)
    clock = _Clock()
    y = clock("sketch pass", passes.sketch, width, seed)
    q = clock("orthonormalize", orthonormalize, y, threads)
    del y
    for i in range(power_iters):
        y = clock(f"power pass {i + 1}", passes.power, q)
        q = clock("orthonormalize", orthonormalize, y, threads)
        del y
    gram = clock("gram pass", passes.gram, q)
    return clock("small eigenproblem", finish, q, gram, k, threads)


class _Clock:
    """Calls a step and logs (debug) how long it took."""

    def __call__(self, what: str, fn, *args):
        t = time.perf_counter()
        result = fn(*args)
        log.debug("LSI: %s %.2f s", what, time.perf_counter() - t)
        return result


def merge(a: Decomposition, b: Decomposition, k: int, decay: float = 1.0,
          threads: int = 1) -> Decomposition:
    """The rank-k decomposition of two parts' decompositions side by side: SVD of
    M = [U_a (decay S_a), U_b S_b]. Both u's must have orthonormal columns over the same
    terms. Computed through the eigendecomposition of M^T M, which needs only
    C = U_a^T U_b (the rest is small): cheaper than the QR form of Rehurek's merge, which
    factors a terms x k matrix, at equal accuracy. A pure function: inputs are not
    modified."""
    if a.u.shape[0] != b.u.shape[0]:
        raise ValueError(f"merge: parts over different terms ({a.u.shape[0]} vs "
                         f"{b.u.shape[0]})")
    if not len(a.s):
        return Decomposition(b.u.copy(), b.s.copy())
    if not len(b.s):
        return Decomposition(a.u.copy(), (decay * a.s).astype(a.s.dtype))
    dtype = np.result_type(a.u.dtype, b.u.dtype)
    sa = decay * a.s.astype(np.float64)
    sb = b.s.astype(np.float64)
    c = cross(a.u, b.u, threads).astype(np.float64)
    off = sa[:, None] * c * sb[None, :]
    gram = np.block([[np.diag(sa * sa), off], [off.T, np.diag(sb * sb)]])
    w, v = _top_eigen(gram, k, dtype)
    s = np.sqrt(w)
    na = len(sa)
    wa = (v[:na] * sa[:, None] / s).astype(dtype)
    wb = (v[na:] * sb[:, None] / s).astype(dtype)
    u = times(a.u, wa, threads)
    u += times(b.u, wb, threads)
    return Decomposition(canonical_signs(u), s.astype(dtype))


def merge_all(parts: Iterable[Decomposition], k: int, decay: float = 1.0,
              threads: int = 1) -> Decomposition | None:
    """Fold a stream of partial decompositions in a fixed binary tree (a binary counter:
    at most log2(n) partials held at once). The tree depends only on the parts' order,
    so the result does not depend on how many processes produced them. With decay < 1
    each part weighs decay**(number of parts after it), as in a left-to-right fold."""
    stack: list[tuple[int, Decomposition]] = []      # (number of parts covered, partial)
    for part in parts:
        size = 1
        while stack and stack[-1][0] == size:
            _, left = stack.pop()
            part = merge(left, part, k, decay ** size, threads)
            size *= 2
        stack.append((size, part))
    if not stack:
        return None
    size, result = stack.pop()
    while stack:
        left_size, left = stack.pop()
        result = merge(left, result, k, decay ** size, threads)
        size += left_size
    return result
