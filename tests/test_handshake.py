"""Nothing from the network is decoded but msgpack, on the dialling side too.

A fake worker or name server (a real TCP server on loopback) answers the Pyro4 handshake
with a frame that names pickle's serializer and carries a payload that would create a file
if it were ever unpickled: the caller refuses it and nothing is created, with and without a
key (a key only proves that the other side holds it). Without a key, nothing but loopback is
dialled and the name server is never looked for by broadcast: refused before any traffic.
"""
import pickle
import socket
import threading

import Pyro4
import Pyro4.errors
import Pyro4.message
import Pyro4.naming
import Pyro4.socketutil
import Pyro4.util
import pytest

from engine.cluster import transport
from engine.errors import ClusterError, ConfigError

KEY = b"test-handshake-key"


class _Creates:
    """Unpickling this creates the file at `path` (open(path, "w"))."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


class FakeServer:
    """Accepts connections on 127.0.0.1 and answers each one's handshake with `reply_type`
    carrying `payload` under `serializer_id`, HMAC'd with `key` when given."""

    def __init__(self, payload: bytes, serializer_id: int, reply_type: int, key: bytes | None):
        self.payload, self.serializer_id, self.reply_type, self.key = \
            payload, serializer_id, reply_type, key
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.answered = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                csock, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with csock:
                csock.settimeout(5)
                conn = Pyro4.socketutil.SocketConnection(csock)
                try:
                    msg = Pyro4.message.Message.recv(conn, [Pyro4.message.MSG_CONNECT],
                                                     hmac_key=self.key)
                    reply = Pyro4.message.Message(self.reply_type, self.payload,
                                                  self.serializer_id, 0, msg.seq,
                                                  hmac_key=self.key)
                    self.answered += 1          # before the send: the caller may raise
                    csock.sendall(reply.to_bytes())   # as soon as the reply reaches it
                except (OSError, Pyro4.errors.PyroError):
                    pass

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


def test_only_msgpack_is_registered():
    ids = set(Pyro4.util._serializers_by_id)
    assert set(Pyro4.util._serializers) == {"msgpack"}
    assert ids == {Pyro4.util.MsgpackSerializer.serializer_id}
    assert Pyro4.util.PickleSerializer.serializer_id not in ids
    with pytest.raises(Pyro4.errors.SerializeError):
        Pyro4.util.get_serializer("pickle")


@pytest.mark.parametrize("keyed", [True, False], ids=["keyed", "keyless"])
@pytest.mark.parametrize("reply", ["CONNECTOK", "CONNECTFAIL"])
@pytest.mark.parametrize("dial", ["worker", "nameserver"])
def test_a_pickle_handshake_reply_is_refused_and_never_decoded(tmp_path, keyed, reply, dial):
    target = tmp_path / "created-by-unpickling"
    payload = pickle.dumps(_Creates(target), protocol=2)
    reply_type = getattr(Pyro4.message, "MSG_" + reply)
    key = KEY if keyed else None
    server = FakeServer(payload, Pyro4.util.PickleSerializer.serializer_id, reply_type, key)
    try:
        if dial == "worker":
            proxy = transport.connect(f"127.0.0.1:{server.port}", key, 5)
            try:
                with pytest.raises(Pyro4.errors.CommunicationError):
                    proxy._pyroBind()
            finally:
                transport.release(proxy)
        else:
            with pytest.raises(ClusterError):
                transport.discover(f"127.0.0.1:{server.port}", key)
        assert server.answered >= 1, "the fake server never answered: nothing was tested"
    finally:
        server.close()
    assert not target.exists(), "a pickle from the network was decoded"


@pytest.fixture
def no_traffic(monkeypatch):
    """Any socket Pyro4 would open, or any broadcast, fails the test instead."""
    def refuse(*args, **kwargs):
        raise AssertionError("dialled the network")

    monkeypatch.setattr(Pyro4.socketutil, "createSocket", refuse)
    monkeypatch.setattr(Pyro4.socketutil, "createBroadcastSocket", refuse)
    monkeypatch.setattr(Pyro4, "locateNS", refuse)
    monkeypatch.setattr(Pyro4.naming, "locateNS", refuse)


@pytest.mark.parametrize("address", ["192.0.2.7:9877", "PYRO:engine.worker@192.0.2.7:9877"])
def test_keyless_connections_beyond_loopback_are_refused(no_traffic, address):
    with pytest.raises(ConfigError, match="without a key.*ENGINE_CLUSTER_KEY"):
        transport.connect(address, None, 5)


def test_keyless_name_server_discovery_is_refused(no_traffic):
    for nameserver in ("auto", "", "192.0.2.7:9090"):
        with pytest.raises(ConfigError, match="without a key"):
            transport.discover(nameserver, None)
        with pytest.raises(ConfigError, match="without a key"):
            transport.check_keyed([], nameserver or "auto", None)
    with pytest.raises(ConfigError, match="192.0.2.7"):
        transport.check_keyed(["127.0.0.1:9877", "192.0.2.7:9877"], "", None)
    transport.check_keyed(["127.0.0.1:9877", "localhost:1", "[::1]:9"], "127.0.0.1:9090", None)
    transport.check_keyed(["192.0.2.7:9877"], "auto", KEY)     # a key: anything goes


def test_a_keyless_worker_does_not_register_by_broadcast(monkeypatch):
    class Obj:
        pass

    def refuse(*args, **kwargs):
        raise AssertionError("looked for the name server")

    monkeypatch.setattr(Pyro4, "locateNS", refuse)
    monkeypatch.setattr(Pyro4.naming, "locateNS", refuse)
    monkeypatch.setattr(Pyro4.socketutil, "createBroadcastSocket", refuse)
    server = transport.Server(Obj(), "127.0.0.1", 0, None)
    try:
        with pytest.raises(ConfigError, match="broadcast without a key"):
            server.register("auto", "w1", None)
    finally:
        server.close()


def test_gensim_style_distributed_lsi_without_a_key_is_refused(no_traffic, monkeypatch):
    from engine import LsiModel

    monkeypatch.delenv("ENGINE_CLUSTER_KEY", raising=False)
    with pytest.raises(ConfigError, match="broadcast without a key"):
        LsiModel([[(0, 1.0), (1, 2.0)], [(1, 1.0)]], num_topics=1, distributed=True)


_ECHO = """
import json, time, Pyro4.message
from engine.cluster import transport

class Echo:
    @transport.expose
    def echo(self, data):
        return data

key = b"k"
server = transport.Server(Echo(), "127.0.0.1", 0, key)
server.start()
proxy = transport.connect(f"127.0.0.1:{server.port}", key, 5)
proxy._pyroBind()
sent0, received0 = transport.WIRE.snapshot()
ok = proxy.echo(b"x" * 100_000) == b"x" * 100_000
deadline = time.monotonic() + 5
while time.monotonic() < deadline:    # the server thread counts its reply once it is sent
    sent, received = transport.WIRE.snapshot()
    if min(sent - sent0, received - received0) >= 200_000:
        break
    time.sleep(0.01)
transport.release(proxy)
server.close()
print(json.dumps([ok, sent - sent0, received - received0, Pyro4.message.Message.header_size]))
"""


def test_every_byte_through_the_sockets_is_counted(tmp_path):
    """Counted at the transport: a call and its reply, frames and payload, both ways: with
    both ends in one process, the request and the reply are each counted once as sent and
    once as received. (In a process of its own: the count is per process.)"""
    import json
    import subprocess
    import sys

    # -P, and away from the checkout: the engine this test imports, not the source folder
    proc = subprocess.run([sys.executable, "-P", "-c", _ECHO], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ok, sent, received, header = json.loads(proc.stdout.strip().splitlines()[-1])
    assert ok
    for counted in (sent, received):                      # both ends are in that process
        assert 2 * (100_000 + header) <= counted < 2 * 100_000 + 4096   # frames, no copies


def test_a_name_server_that_never_answers_does_not_hang_the_caller():
    """A name server that accepts connections and then says nothing (stopped, or a squatted
    port): asking it fails within its timeout, it does not block `engine run`, `engine
    nodes` or a rejoin forever."""
    import socket
    import threading
    import time

    from engine.errors import ClusterError

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    out = []

    def ask():
        t0 = time.monotonic()
        try:
            transport.discover(f"127.0.0.1:{port}", None, timeout=1.0)
            out.append("answered")
        except ClusterError as exc:
            out.append((time.monotonic() - t0, str(exc)))

    t = threading.Thread(target=ask, daemon=True)
    try:
        t.start()
        t.join(20)
        assert out, "the caller still waits on a silent name server"
        seconds, why = out[0]
        assert seconds < 10 and f"127.0.0.1:{port}" in why
    finally:
        silent.close()


class _Counter:
    """A served object whose every call leaves a mark: a replay that got through shows."""

    def __init__(self):
        self.calls = []

    @transport.expose
    def add(self, item):
        self.calls.append(item)
        return len(self.calls)


class _StubJob:
    def __init__(self, job_id):
        self.job_id, self.closed, self.last_call, self.total_words = job_id, False, 0.0, 7

    def close(self):
        self.closed = True

    def wire(self):
        return [0, 0]

    def cpu(self):
        return 0.0


def _read_reply(conn):
    return Pyro4.message.Message.recv(conn, [Pyro4.message.MSG_RESULT, Pyro4.message.MSG_CONNECTOK,
                                             Pyro4.message.MSG_CONNECTFAIL], hmac_key=KEY)


def _recorded(monkeypatch):
    """Every frame sent through a Pyro4 socket of this process: (connection, bytes)."""
    frames = []
    send = Pyro4.socketutil.SocketConnection.send

    def recording(self, data):
        frames.append((self, bytes(data)))
        return send(self, data)

    monkeypatch.setattr(Pyro4.socketutil.SocketConnection, "send", recording)
    return frames


def _replay_on_a_new_connection(port, handshake, call):
    """What someone who captured the frames can do without the key: open a connection, send
    the captured handshake (accepted: it proves nothing and gets a fresh nonce), then the
    captured call. Returns the reply to the call, or None if the connection was closed."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    conn = Pyro4.socketutil.SocketConnection(sock)
    try:
        conn.send(handshake)
        assert _read_reply(conn).type == Pyro4.message.MSG_CONNECTOK
        conn.send(call)
        try:
            return _read_reply(conn)
        except Pyro4.errors.ConnectionClosedError:
            return None
    finally:
        conn.close()


def _refused(reply) -> bool:
    return reply is None or bool(reply.flags & Pyro4.message.FLAGS_EXCEPTION)


def test_a_captured_call_replayed_is_refused_on_a_new_connection_and_on_its_own(monkeypatch):
    """Calls carry their connection's nonce (the worker's, from the handshake) and a rising
    number under the HMAC: a captured call sent again, on a new connection or duplicated in
    its own stream, is refused and has no effect; the next genuine call still works."""
    counter = _Counter()
    server = transport.Server(counter, "127.0.0.1", 0, KEY)
    server.start()
    frames = _recorded(monkeypatch)
    proxy = transport.connect(f"127.0.0.1:{server.port}", KEY, 5)
    try:
        assert proxy.add("first") == 1
        mine = [data for conn, data in frames if conn is proxy._pyroConnection]
        assert len(mine) == 2, "expected the handshake and one call"
        handshake, call = mine

        for _ in range(2):
            assert _refused(_replay_on_a_new_connection(server.port, handshake, call))
        # duplicated in its own connection (a man in the middle repeating a frame)
        proxy._pyroConnection.send(call)
        assert _refused(_read_reply(proxy._pyroConnection))
        assert counter.calls == ["first"], "a replayed call ran"
        transport.release(proxy)
        assert proxy.add("second") == 2          # a new connection, a new nonce: works
        assert counter.calls == ["first", "second"]
    finally:
        transport.release(proxy)
        server.close()


def test_a_replayed_close_job_leaves_the_workers_job_open(monkeypatch):
    """The worker's own methods are checked: a captured `close_job` sent again, once the
    dispatcher has opened another job of the same id, does not close it."""
    from engine.cluster.service import WorkerService

    service = WorkerService(1, "replayed", KEY)
    server = transport.Server(service, "127.0.0.1", 0, KEY)
    server.start()
    frames = _recorded(monkeypatch)
    proxy = transport.connect(f"127.0.0.1:{server.port}", KEY, 5)
    try:
        first = service.job = _StubJob("job-1")
        assert proxy.close_job("job-1")["trained_words"] == 7
        assert first.closed and service.job is None
        handshake, call = [data for conn, data in frames if conn is proxy._pyroConnection][:2]
        second = service.job = _StubJob("job-1")
        assert _refused(_replay_on_a_new_connection(server.port, handshake, call))
        assert not second.closed and service.job is second
        for name in ("open_job", "put_array", "seed_array", "start", "push_rows", "exchange",
                     "close_job", "shard_put", "shard_sync", "lsi_put", "info", "ping"):
            assert getattr(WorkerService, name).__wrapped__, f"{name} is not checked"
    finally:
        service.job = None
        transport.release(proxy)
        server.close()
        service.shutdown()


def test_a_reply_that_does_not_echo_its_call_is_refused():
    """The caller takes only the reply that echoes its call's nonce and number: an old reply
    (a man in the middle answering with a recorded one) is refused."""
    proxy = transport._Proxy("PYRO:x@127.0.0.1:1")
    proxy._pyroValidateHandshake({"nonce": b"n" * transport.NONCE_BYTES})
    sent = proxy._pyroAnnotations()[transport.FRESH]
    proxy._pyroResponseAnnotations({transport.FRESH: sent}, Pyro4.message.MSG_RESULT)
    older = sent
    sent = proxy._pyroAnnotations()[transport.FRESH]
    assert sent != older
    for annotations in ({transport.FRESH: older}, {}):
        with pytest.raises(Pyro4.errors.ProtocolError, match="does not answer this call"):
            proxy._pyroResponseAnnotations(annotations, Pyro4.message.MSG_RESULT)
    with pytest.raises(Pyro4.errors.ProtocolError, match="no nonce"):
        proxy._pyroValidateHandshake({"engine": "x"})


def test_the_bench_runs_gensims_pickle_cluster_under_a_random_key():
    """gensim's distributed LSI needs pickle: `engine bench` runs its name server, worker and
    dispatcher on loopback under an HMAC key made for the run, so a local caller without
    the key is refused before anything it sends is decoded; the bench's own calls work."""
    import subprocess
    import sys

    pytest.importorskip("gensim")
    from engine.bench.lsi import GensimCluster

    code = "import Pyro4; print(sorted(Pyro4.locateNS().list(prefix='gensim.')))"
    cluster = GensimCluster(sys.executable, 1)
    try:
        key = cluster.env["ENGINE_PEER_PYRO_KEY"]
        assert len(key) >= 32
        keyed = subprocess.run(cluster.command("-c", code), env=cluster.env,
                               capture_output=True, text=True, timeout=60)
        assert keyed.returncode == 0 and "gensim.lsi_dispatcher" in keyed.stdout, keyed.stderr
        keyless = subprocess.run([sys.executable, "-c", code], env=cluster.env,
                                 capture_output=True, text=True, timeout=60)
        assert keyless.returncode != 0 and "gensim" not in keyless.stdout
    finally:
        cluster.close()
