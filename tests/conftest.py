import contextlib
import glob
import gzip
import os
import random
import signal

import numpy as np
import pytest

HERE = os.path.dirname(__file__)


def segments_of(*pids):
    """Shared-memory segments created by these processes (engine names each after its
    creator's pid; default: this test process). A test checks the segments of the processes
    it started, never the whole machine's: other engine jobs may run beside the tests."""
    from engine.runtime.shm import PREFIX

    return {path for pid in (pids or (os.getpid(),))
            for path in glob.glob(f"/dev/shm/{PREFIX}{int(pid)}_*")}


@contextlib.contextmanager
def in_process_worker(service_class, name: str, key: bytes):
    """An `engine worker` served from this process (a WorkerService subclass that answers
    some calls wrongly, say): yields its address; stopped, its job closed, on exit."""
    from engine.cluster import transport

    service = service_class(1, name, key)
    server = transport.Server(service, "127.0.0.1", 0, key)
    server.start()
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        server.close()
        service.shutdown()


def pytest_configure(config):
    """A test run ended by SIGTERM (a timeout, `kill`) stops as Ctrl-C does, so fixtures'
    teardown still stops the `engine worker`s and name servers the tests started: they run
    in their own sessions, as servers, and would otherwise outlive the run."""
    def stop(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)     # a second one spares the teardown
        raise KeyboardInterrupt(f"signal {signum}")

    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, stop)


def planted_corpus(n_topics=4, words_per_topic=12, sentences=3000, length=12, seed=0,
                   shared_words=6):
    """Sentences each drawn from one topic's words (plus a few shared filler words): words of
    a topic must end up closer to each other than to other topics' words."""
    rnd = random.Random(seed)
    topics = [[f"t{t}w{i}" for i in range(words_per_topic)] for t in range(n_topics)]
    filler = [f"the{i}" for i in range(shared_words)]
    out = []
    for _ in range(sentences):
        topic = topics[rnd.randrange(n_topics)]
        out.append([rnd.choice(topic) if rnd.random() < 0.8 else rnd.choice(filler)
                    for _ in range(length)])
    return topics, out


def topic_separation(kv, topics):
    """Mean cosine within topics minus mean cosine across topics."""
    within, across = [], []
    for a, ta in enumerate(topics):
        for b, tb in enumerate(topics):
            for wa in ta:
                for wb in tb:
                    if wa == wb:
                        continue
                    (within if a == b else across).append(kv.similarity(wa, wb))
    return float(np.mean(within) - np.mean(across))


def topic_precision(kv, topics, topn=5):
    """Share of each word's topn neighbours (among topic words) that share its topic."""
    hits = total = 0
    topic_of = {w: t for t, ws in enumerate(topics) for w in ws}
    for w, t in topic_of.items():
        near = [x for x, _ in kv.most_similar(w, topn=50) if x in topic_of][:topn]
        hits += sum(topic_of[x] == t for x in near)
        total += len(near)
    return hits / total


def decode_stream(stream, words):
    """The sentences (lists of words) an id stream holds."""
    ids = np.fromfile(stream.path, dtype=np.int32)
    sentences, cur = [], []
    for i in ids.tolist():
        if i < 0:
            sentences.append(cur)
            cur = []
        else:
            cur.append(words[i])
    return sentences


@pytest.fixture(scope="session")
def planted():
    return planted_corpus()


@pytest.fixture
def planted_file(tmp_path, planted):
    topics, sents = planted
    path = tmp_path / "planted.txt.gz"
    with gzip.open(path, "wt") as fh:
        for s in sents:
            fh.write(" ".join(s) + "\n")
    return topics, str(path)
