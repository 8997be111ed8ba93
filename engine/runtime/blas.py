"""What BLAS is loaded and with how many threads (threadpoolctl), for the startup log; and
BLAS sgemm for the batched skip-gram kernel, from scipy's Cython BLAS."""
from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys

_CYTHON_BLAS = "scipy.linalg.cython_blas"


def cython_blas():
    """scipy's Cython BLAS module, or None where it does not load. Loaded on its own where
    it can be: `import scipy.linalg` would also load all of LAPACK and scipy.linalg's Python
    (0.23 s and 27 MB a process here), and every training process takes this; the module is
    registered under its own name, so a later `from scipy.linalg import cython_blas` finds
    it."""
    mod = sys.modules.get(_CYTHON_BLAS)
    if mod is not None:
        return mod
    try:
        spec = importlib.util.find_spec("scipy")
        if spec and spec.origin:
            here = os.path.join(os.path.dirname(spec.origin), "linalg")
            for suffix in importlib.machinery.EXTENSION_SUFFIXES:     # this Python's first
                path = os.path.join(here, "cython_blas" + suffix)
                if os.path.isfile(path):
                    one = importlib.util.spec_from_file_location(_CYTHON_BLAS, path)
                    mod = importlib.util.module_from_spec(one)
                    one.loader.exec_module(mod)
                    sys.modules[_CYTHON_BLAS] = mod
                    return mod
    except Exception:       # a layout this does not know (DLL paths set up by scipy, ...)
        sys.modules.pop(_CYTHON_BLAS, None)
    try:
        from scipy.linalg import cython_blas as mod  # the usual way
        return mod
    except Exception:                 # no scipy, or a build without its Cython BLAS
        return None


def sgemm_capsule():
    """The capsule of scipy's Cython BLAS sgemm (its name is the C signature), or None."""
    mod = cython_blas()
    return getattr(mod, "__pyx_capi__", {}).get("sgemm") if mod is not None else None


def blas_products() -> str | None:
    """The BLAS scipy was built with ("scipy-openblas", "openblas", "mkl", ...; "unknown"
    where scipy does not say) if its Cython BLAS exports sgemm for the batched skip-gram
    kernel, else None."""
    if sgemm_capsule() is None:
        return None
    try:
        import scipy

        return str(scipy.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"])
    except Exception:          # scipy < 1.11 has no dicts; an odd build may leave keys out
        return "unknown"


def blas_summary() -> list[dict]:
    try:
        import numpy  # noqa: F401  (loads numpy's BLAS so it is listed)
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [{"library": i.get("internal_api"), "version": i.get("version"),
             "threads": i.get("num_threads"), "arch": i.get("architecture"),
             "file": i.get("filepath", "").rsplit("/", 1)[-1]}
            for i in threadpool_info() if i.get("user_api") == "blas"]


def blas_line() -> str:
    items = blas_summary()
    if not items:
        return "BLAS: none found by threadpoolctl"
    return "BLAS: " + "; ".join(
        f"{i['library']} {i['version']} ({i['arch']}, {i['threads']} threads)" for i in items)
