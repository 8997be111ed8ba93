"""The cluster: `engine worker` nodes (node.py), the dispatcher inside `engine run`
(dispatcher.py), and the one module that talks Pyro4 (transport.py). Above the local
engine; the local engine never imports this package."""
from __future__ import annotations

import time

from ..errors import ClusterError
from .dispatcher import ClusterEngine
from .lda import ClusterLda
from .lsi import ClusterLsi
from .transport import CommError, read_key

__all__ = ["ClusterEngine", "ClusterLda", "ClusterLsi", "read_key", "probe_nodes", "check_reachable"]


def probe_nodes(cfg, key: bytes | None = None, timeout: float = 5.0) -> list[dict]:
    """Each node the job would use: engine version, cores, free memory and round-trip
    time, or why it cannot be reached."""
    from . import transport

    key = key if key is not None else read_key(cfg.key_file)
    transport.check_keyed(cfg.nodes, cfg.nameserver, key)      # before anything is dialled
    found = {a: a for a in cfg.nodes}
    rows = []
    if cfg.nameserver:
        try:
            found.update(transport.discover(cfg.nameserver, key, timeout))
        except ClusterError as exc:
            rows.append({"name": f"name server {cfg.nameserver}", "address": cfg.nameserver,
                         "ok": False, "why": str(exc)})
    for name, address in found.items():
        row = {"name": name, "address": address, "ok": False}
        proxy = None
        try:
            proxy = transport.connect(address, key, timeout)
            t0 = time.perf_counter()
            proxy._pyroBind()
            info = proxy.info()
            t1 = time.perf_counter()
            proxy.ping()
            rtt = time.perf_counter() - t1
            row.update(info, ok=True, rtt_ms=round(1000 * rtt, 2),
                       connect_ms=round(1000 * (t1 - t0), 1))
            if info.get("busy"):
                row["why"] = f"busy with {info['busy']}"
        except (CommError, OSError, ValueError) as exc:
            row["why"] = f"{type(exc).__name__}: {exc}"
        finally:
            if proxy is not None:
                transport.release(proxy)
        rows.append(row)
    return rows


def check_reachable(cfg) -> list[dict]:
    """Before any work: at least one node answers, else a ClusterError naming each."""
    rows = probe_nodes(cfg)
    if not any(r["ok"] for r in rows):
        raise ClusterError("no node could be reached: " + "; ".join(
            f"{r['address']}: {r.get('why', '?')}" for r in rows) if rows else
            "no node could be reached: the job lists none and the name server knows none")
    return rows
