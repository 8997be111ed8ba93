"""Are this machine's cores' vector units their own? 2 processes of single-threaded
float32 192x192 matmuls (vector FMA bound), each timed against the same loop alone, beside
the same for a plain Python loop (what `engine bench`'s CPU check runs). On two hyperthreads
of one core the matmuls would read well under 2 while the Python loop still reads ~2.

    python tools/vector_check.py        # three readings of each
"""
import time
from multiprocessing import get_context

def _fma(n):
    from threadpoolctl import threadpool_limits
    import numpy as np
    with threadpool_limits(1):
        a = np.random.default_rng(0).standard_normal((192, 192)).astype(np.float32)
        b = a.copy()
        t0 = time.perf_counter()
        for _ in range(n):
            b = a @ b
            b *= 0.01
        return time.perf_counter() - t0

def _spin(n):
    t0 = time.perf_counter(); x = 1.0
    for _ in range(n): x = x * 1.0000001 + 1e-9
    return time.perf_counter() - t0

def cap(fn, n, p=2):
    with get_context("spawn").Pool(p) as pool:
        pool.map(fn, [3] * p)
        solo = min(pool.apply(fn, (n,)) for _ in range(2))
        together = pool.map(fn, [n] * p)
    return round(sum(solo / t for t in together), 2), solo

if __name__ == "__main__":
    for _ in range(3):
        print("fma", cap(_fma, 3000), "spin", cap(_spin, 2_000_000), flush=True)
