"""engine.LdaModel: engine.documents.LdaModel plus gensim's `distributed=True`, which runs
the E-steps on the cluster's `engine worker`s (engine.cluster.lda). Here, above both the
document models and the cluster, so neither imports the other."""
from __future__ import annotations

import numpy as np

from ..config import ClusterConfig, make_section
from ..documents import lda as _lda


def _remote(nodes, nameserver: str, cluster: dict | None):
    from ..cluster import ClusterLda, read_key
    from ..cluster.transport import check_keyed

    settings = dict(cluster or {})
    if nodes:
        settings["nodes"] = list(nodes)
    if nameserver or not settings.get("nodes"):
        settings["nameserver"] = nameserver or settings.get("nameserver") or "auto"
    cfg = make_section(ClusterConfig, settings, "LdaModel cluster")
    key = read_key(cfg.key_file)
    check_keyed(cfg.nodes, cfg.nameserver, key)   # before any training: one clear line
    return ClusterLda(cfg, key)


class LdaModel(_lda.LdaModel):
    """gensim's LdaModel signature; with distributed=True the E-steps run on the nodes
    from `nodes` (["host:port", ...]), `nameserver` ("host[:port]"; default "auto": found
    by broadcast, as gensim finds its dispatcher) or a whole [cluster] dict `cluster`; the
    key from $ENGINE_CLUSTER_KEY or cluster's key_file."""

    def __init__(self, corpus=None, num_topics: int = 100, id2word=None,
                 distributed: bool = False, chunksize: int = 2000, passes: int = 1,
                 update_every: int = 1, alpha="symmetric", eta=None, decay: float = 0.5,
                 offset: float = 1.0, eval_every: int | None = 10, iterations: int = 50,
                 gamma_threshold: float = 0.001, minimum_probability: float = 0.01,
                 random_state=None, ns_conf=None, minimum_phi_value: float = 0.01,
                 per_word_topics: bool = False, callbacks=None, dtype=np.float32,
                 workers: int = 0, nodes=None, nameserver: str = "",
                 cluster: dict | None = None):
        remote = None
        if distributed:
            if ns_conf and not nameserver:      # gensim's {"host": ..., "port": ...}
                host, port = ns_conf.get("host"), ns_conf.get("port")
                nameserver = f"{host}:{port}" if host and port else (host or "")
            remote = _remote(nodes, nameserver, cluster)
        super().__init__(corpus, num_topics, id2word, distributed, chunksize, passes,
                         update_every, alpha, eta, decay, offset, eval_every, iterations,
                         gamma_threshold, minimum_probability, random_state, ns_conf,
                         minimum_phi_value, per_word_topics, callbacks, dtype, workers,
                         remote)


LdaMulticore = _lda.LdaMulticore        # one machine's cores (gensim's LdaMulticore)
