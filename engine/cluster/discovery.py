"""Finding a job's nodes (the ones it lists and those a name server knows, asked with a
deadline) and closing a job on a node whatever state it is in: shared by the word2vec
dispatcher and distributed LSI."""
from __future__ import annotations

import logging
import threading

from ..errors import ClusterError
from . import transport

log = logging.getLogger("engine")


def find_nodes(cfg, key: bytes | None) -> dict[str, str]:
    """{name: address} of the nodes the job lists or the name server knows (asked in a
    thread with a deadline: a name server that stops answering cannot hang the job)."""
    found = {a: a for a in cfg.nodes}
    if cfg.nameserver:
        box: list = []

        def ask():
            try:
                box.append(transport.discover(cfg.nameserver, key, cfg.timeout_seconds))
            except BaseException as exc:     # noqa: BLE001 (handed to the caller)
                box.append(exc)

        asker = threading.Thread(target=ask, name="ns-discover", daemon=True)
        asker.start()
        asker.join(cfg.timeout_seconds)
        if not box:
            raise ClusterError(f"name server {cfg.nameserver}: no answer in "
                               f"{cfg.timeout_seconds:.0f} s")
        if isinstance(box[0], BaseException):
            raise box[0]
        found.update(box[0])
    return found


def close_remote_job(proxy, job_id: str, timeout: float, name: str) -> dict | None:
    """Close the job on a node still in use (None: a dropped node, only released) and
    return its reply; the job is over either way, so a failure is logged, not raised."""
    reply = None
    if proxy is not None:
        try:
            transport.set_timeout(proxy, min(timeout, 10))
            reply = proxy.close_job(job_id)
        except Exception as exc:                 # noqa: BLE001 (the job is over anyway)
            log.warning("node %s: close failed (%s)", name, exc)
    transport.release(proxy)
    return reply if isinstance(reply, dict) else None
