"""engine.LsiModel: engine.documents.LsiModel plus gensim's `distributed=True`, which spreads the
decomposition over the cluster's `engine worker`s (engine.cluster.lsi). Here, above both
the document models and the cluster, so neither imports the other."""
from __future__ import annotations

import numpy as np

from ..config import ClusterConfig, make_section
from ..documents import lsi as _lsi


class LsiModel(_lsi.LsiModel):
    """gensim's LsiModel signature; with distributed=True the nodes come from `nodes`
    (["host:port", ...]), `nameserver` ("host[:port]"; default "auto": found by
    broadcast, as gensim finds its dispatcher) or a whole [cluster] dict `cluster`; the
    key from $ENGINE_CLUSTER_KEY or cluster's key_file."""

    def __init__(self, corpus=None, num_topics: int = 200, id2word=None,
                 chunksize: int = 20_000, decay: float = 1.0, distributed: bool = False,
                 onepass: bool = True, power_iters: int = 2, extra_samples: int = 100,
                 dtype=np.float32, random_seed: int | None = None, method: str = "auto",
                 processes: int = 0, blas_threads: int = 0, cache_dir: str | None = None,
                 nodes=None, nameserver: str = "", cluster: dict | None = None,
                 shares: int = 0):
        if distributed:
            from ..cluster import ClusterLsi, read_key

            settings = dict(cluster or {})
            if nodes:
                settings["nodes"] = list(nodes)
            if nameserver or not settings.get("nodes"):
                settings["nameserver"] = nameserver or settings.get("nameserver") or "auto"
            cfg = make_section(ClusterConfig, settings, "LsiModel cluster")
            self.decomposer = ClusterLsi(cfg, read_key(cfg.key_file), shares).decompose
        super().__init__(corpus, num_topics, id2word, chunksize, decay, distributed, onepass,
                         power_iters, extra_samples, dtype, random_seed, method, processes,
                         blas_threads, cache_dir)
