"""Where the merging happens when it is spread over the nodes (merge_at "nodes"): the
dispatcher's side. Shard j (rows r % n == j) is merged on one node, its owner; every node
is told the owners (`set_peers`); an owner that cannot be reached is dropped, and another
node rebuilds its shard from its own copy of those rows; at the end the merged weights are
read back from the owners. A mixin of ClusterEngine, which holds the state it uses."""
from __future__ import annotations

import logging

from ..errors import ClusterError
from ..local.kernel import WEIGHTS
from . import transport
from .protocol import row_pieces, unpack_array
from .transport import CommError

log = logging.getLogger("engine")

# what a node's failure looks like from here (it is dropped; anything else is a bug)
FAILURES = (CommError, OSError, ValueError, RuntimeError, MemoryError)


class ShardPlacement:
    def _place_shards(self, nodes: list, first: bool) -> list:
        """Shard j (rows r % n == j) is merged on the j-th node that opened (or on another,
        if that one fails now). Returns the nodes still usable."""
        self.n_shards = n = len(nodes)
        usable = list(nodes)
        for j in range(n):
            for node in [nodes[j]] + usable:
                if node not in usable:
                    continue
                try:
                    node.proxy.own_shard(self.job_id, j, n, 0)
                except FAILURES as exc:
                    usable.remove(node)
                    self._not_used(node, exc, first)
                    continue
                self.owners[j] = node
                break
            else:
                raise ClusterError("no node could take a shard of the weights: " +
                                   self._why_none())
        log.info("cluster: merging spread over %d nodes (each owns every %d-th row)",
                 self.n_shards, self.n_shards)
        return usable

    def _send_peers(self, node) -> None:
        with self.shard_lock:
            version = self.peers_version
            peers = [[j, self.owners[j].address] for j in range(self.n_shards)]
        node.proxy.set_peers(self.job_id, peers, max(1, len(self._active())))
        node.peers_version = version

    def _suspect(self, j, address: str, reporter, why: str) -> None:
        """A node could not reach the owner of shard j: drop whichever does not answer."""
        with self.shard_lock:
            owner = self.owners.get(int(j)) if str(j).isdigit() else None
        if owner is None or not owner.active or owner.address != address:
            return                               # gone already, or moved since: told next time
        proxy = None
        try:
            proxy = self._control(owner)
            proxy.ping()
        except FAILURES as exc:
            self._drop(owner, f"shard owner unreachable from {reporter.name} ({why}); "
                              f"{type(exc).__name__}: {exc}")
            return
        finally:
            transport.release(proxy)
        raise CommError(f"cannot reach shard {j}'s owner {owner.name}, which answers here "
                        f"({why})")

    def _move_shard(self, j: int, why: str) -> None:
        """Shard j's owner is gone: another node rebuilds it from its own last view of
        those rows (the merges it had not received yet are lost: at most a round of hot
        rows, `cold_every` rounds of the others (times 2^cold_tiers for the rarest), of
        1/n of the rows)."""
        old = self.owners.get(j)
        self.generation += 1
        for node in sorted(self._active(), key=lambda n: sum(o is n for o in self.owners.values())):
            proxy = None
            try:
                proxy = self._control(node)
                proxy.own_shard(self.job_id, j, self.n_shards, self.generation)
            except FAILURES as exc:
                log.warning("node %s could not take shard %d (%s)", node.name, j, exc)
                continue
            finally:
                transport.release(proxy)
            self.owners[j] = node
            self.peers_version += 1
            self.shard_moves.append({"shard": j, "from": old.name if old else "",
                                     "to": node.name, "why": why})
            log.warning("shard %d moved from %s to %s (rebuilt from its copy)", j,
                        old.name if old else "?", node.name)
            return
        self.failure = ClusterError(f"shard {j} was lost and no node could take it")

    def _collect(self) -> None:
        """The merged weights from the shards' owners into the master arrays."""
        n = self.n_shards
        for j in range(n):
            for attempt in range(3):
                with self.shard_lock:
                    owner = self.owners[j]
                proxy = None
                try:
                    proxy = self._control(owner)
                    for name in WEIGHTS:
                        view = self.arrays[name][j::n]
                        row_bytes = 4 * view.shape[1]
                        for a, b in row_pieces(view.shape[0], row_bytes):
                            if a == b:
                                continue
                            msg = proxy.shard_read(self.job_id, j, name, a, b - a)
                            view[a:b] = unpack_array(msg, "<f4", 2, (b - a, view.shape[1]),
                                                     f"shard {j} {name}")
                            self.bytes_in += (b - a) * row_bytes
                    break
                except FAILURES as exc:
                    self._drop(owner, f"{type(exc).__name__}: {exc}")
                    if self.failure is not None:
                        raise self.failure
                finally:
                    transport.release(proxy)
            else:
                raise ClusterError(f"could not read shard {j} from any node")
