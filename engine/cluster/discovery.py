"""Finding a job's nodes (the ones it lists and those a name server knows, asked with a
deadline), opening a documents job on each, and closing a job on a node whatever state it
is in: shared by the word2vec dispatcher and distributed LSI and LDA."""
from __future__ import annotations

import logging
import threading

from ..errors import ClusterError
from . import transport
from .protocol import check_int
from .transport import CommError

# what a node may answer with that makes it unusable (not a bug here)
NODE_FAILURES = (CommError, OSError, ValueError, RuntimeError, MemoryError, KeyError,
                 TypeError)

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


def open_nodes(cfg, key: bytes | None, spec: dict, make_node) -> list:
    """Open the job `spec` on every node found that answers: `make_node(address, name)`
    gives the dispatcher's object for a node, which gets `proxy` and `workers` (the
    node's threads). A node listed twice (the same worker id) or failing is left out and
    logged; none usable is a ClusterError naming why for each."""
    nodes, why, seen = [], [], {}
    for name, address in find_nodes(cfg, key).items():
        node = make_node(address, name)
        try:
            node.proxy = transport.connect(address, key, cfg.timeout_seconds)
            info = node.proxy.info()
            if not isinstance(info, dict):
                raise ValueError("info: expected a dict")
            wid = str(info.get("worker_id") or address)
            if wid in seen:
                raise ValueError(f"the same worker as {seen[wid]} (listed twice)")
            seen[wid] = address
            reply = node.proxy.open_job(spec)
            if not isinstance(reply, dict):
                raise ValueError("open_job: expected a dict")
            node.workers = check_int(reply.get("workers"), 1, 1 << 16, "open_job workers")
            nodes.append(node)
            log.info("node %s (%s): %d thread(s), %s MB free", name, address,
                     node.workers, info.get("free_mb"))
        except NODE_FAILURES as exc:
            why.append(f"{address}: {type(exc).__name__}: {exc}")
            log.warning("node %s not used: %s", address, why[-1])
            transport.release(node.proxy)
    if not nodes:
        raise ClusterError("no node could be used: " + ("; ".join(why) or
                           "the job lists none and the name server knows none"))
    return nodes


SLOWEST_OPS = 1e8      # multiply-adds a second no node is slower than: a hundredth of
                       # what one core does


def running_limit(rate: float, amount: float, cfg, ops: float) -> float:
    """How long a node's piece of work may run (a node that answers "running" longer is
    dropped, its work given to another): ten times the slowest finished piece's seconds
    per unit (`rate`) times its units; before any has finished, its `ops` multiply-adds at
    SLOWEST_OPS a second. Never under the call timeout plus two rounds."""
    seconds = 10 * rate * amount if rate else ops / SLOWEST_OPS
    return max(seconds, cfg.timeout_seconds + 2 * cfg.round_seconds)


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
