"""What BLAS is loaded and with how many threads (threadpoolctl), for the startup log."""
from __future__ import annotations


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
