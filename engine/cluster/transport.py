"""The one module that talks Pyro4 (so Pyro5 or another RPC could replace it). Nothing from
the network is decoded but msgpack, on either side: loading this module leaves msgpack alone
in Pyro4's serializer registries (Pyro4's client decodes a server's handshake reply with
whatever serializer the reply names, so a registered pickle would let a fake worker or name
server run code here). Every daemon and proxy uses Pyro4's HMAC key (`ENGINE_CLUSTER_KEY` or
a key file; never the command line); without a key only loopback addresses are served or
dialled, and the name server is never looked for by broadcast. A handshake checks the engine
and protocol versions before any call. Arrays travel as raw bytes with their dtype and shape
beside them, checked on arrival (`unpack_array`), in pieces far below Pyro4's 2 GB message
limit. Refused connections are logged on the worker's side too.

No message can be replayed: a worker answers each handshake with a fresh random nonce for
that connection, and every call then carries the nonce and a sequence number one higher
than the last, in an annotation the HMAC covers; the worker refuses a call with another
connection's nonce or a number it has seen (a captured `open_job`, `push_rows` or
`close_job` sent again, on a new connection or the same one), and echoes both in its
reply, which the caller checks (an old reply cannot stand in for a new one).
"""
from __future__ import annotations

import functools
import ipaddress
import logging
import os
import secrets
import socket
import threading
import time

import Pyro4
import Pyro4.errors
import Pyro4.message
import Pyro4.naming
import Pyro4.socketutil
import Pyro4.util

from ..errors import ClusterError, ConfigError, InvalidArgumentError
from ..version import __version__

log = logging.getLogger("engine")

PROTOCOL = 15       # 2: done items carry the loss and examples; 3: replies carry wire and cpu;
                    # 4: int8 rows, the last flush (cold 2) and `flushed` in replies;
                    # 5: a connection's nonce and each call's sequence number (no replay);
                    # 6: shards' owners send hot rows as deltas ("delta" in a piece);
                    # 7: chunks' ids as varints, a node's syn0 drawn from the job's seed;
                    # 8: a node pauses past `pause_words` without an exchange;
                    # 9: rows' indices as varint gaps, merged values in four bits;
                    # 10: shard_put takes a list of pieces, shard_sync's reply carries rows;
                    # 11: row scales as bfloat16
                    # 12: a node's CPU in three: exchange, training, dispatch
                    # 13: a cold exchange's band (cold_tiers)
                    # 14: LDA statistics as sparse rows
                    # 15: LDA parts taken as nodes free up, rows sent once a round
OBJECT_ID = "engine.worker"
NS_PREFIX = "engine.worker."
DEFAULT_PORT = 9877
MAX_MESSAGE_BYTES = 256 << 20           # a daemon refuses anything larger
SERVER_IDLE_SECONDS = 120.0             # a worker closes a connection silent this long
# before a caller has proven it holds the key (its handshake), it gets little: a few
# seconds (a moment when many wait), and a small message, so that connections that never
# authenticate cannot hold the server threads the dispatcher and the other nodes need
HANDSHAKE_SECONDS = 5.0
CROWDED_HANDSHAKE_SECONDS = 0.5
MAX_HANDSHAKE_BYTES = 64 << 10
MAX_PENDING_HANDSHAKES = 32

Pyro4.config.SERIALIZER = "msgpack"
Pyro4.config.SERIALIZERS_ACCEPTED = {"msgpack"}
Pyro4.config.REQUIRE_EXPOSE = True
Pyro4.config.MAX_MESSAGE_SIZE = MAX_MESSAGE_BYTES
Pyro4.config.SOCK_NODELAY = True
# a connection holds a server thread while open: the dispatcher's, a few short control
# ones, and one from each other node when merging is spread over the nodes
Pyro4.config.THREADPOOL_SIZE = 256



def _msgpack_only() -> None:
    """Leave msgpack alone in Pyro4's registries, so that no reply, handshake or request
    can name another serializer (pickle, marshal, dill, cloudpickle, serpent, json) and
    have it decoded: an unknown serializer id is a SerializeError, a CommunicationError."""
    registry, by_id = Pyro4.util._serializers, Pyro4.util._serializers_by_id
    msgpack_ser = registry.get("msgpack") or by_id.get(Pyro4.util.MsgpackSerializer.serializer_id)
    if msgpack_ser is None:                      # Pyro4 found no msgpack module
        raise ImportError("engine's cluster needs msgpack (pip install msgpack)")
    registry.clear()
    registry["msgpack"] = msgpack_ser
    by_id.clear()
    by_id[msgpack_ser.serializer_id] = msgpack_ser
    # A daemon answers a handshake it could not read (wrong key, full thread pool) in the
    # serializer whose id Pyro4 reads from MarshalSerializer.serializer_id: make that
    # msgpack's, so the refusal is still sent, in msgpack.
    Pyro4.util.MarshalSerializer.serializer_id = msgpack_ser.serializer_id


_msgpack_only()


class WireCount:
    """Bytes this process sent and received through Pyro4's sockets: every frame, header
    and payload, of every connection (calls, replies, handshakes, node to node)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sent = 0
        self.received = 0

    def snapshot(self) -> tuple[int, int]:
        with self.lock:
            return self.sent, self.received


WIRE = WireCount()


def _count_socket_bytes() -> None:
    """Count at the transport: wrap Pyro4's socket connection's send and receive once."""
    conn = Pyro4.socketutil.SocketConnection
    if getattr(conn, "_engine_counted", False):
        return
    send, recv = conn.send, conn.recv

    def counted_send(self, data):
        send(self, data)
        with WIRE.lock:
            WIRE.sent += len(data)

    def counted_recv(self, size):
        data = recv(self, size)
        with WIRE.lock:
            WIRE.received += len(data)
        return data

    conn.send, conn.recv = counted_send, counted_recv
    conn._engine_counted = True


_count_socket_bytes()

CommError = Pyro4.errors.CommunicationError       # lost, refused, timed out, closed
TimeoutError_ = Pyro4.errors.TimeoutError


# ---- no replay -------------------------------------------------------------------------
# a call's annotation: the connection's nonce (NONCE_BYTES) and the call's number (8 bytes,
# big-endian), covered by the message's HMAC (Pyro4 signs annotation values with the data)
FRESH = "ENCS"
NONCE_BYTES = 16


class ReplayError(Pyro4.errors.SecurityError):
    """A call (or reply) that is not the next one of its connection."""


def _check_fresh() -> None:
    """On the worker, before an exposed method runs: the call carries its connection's nonce
    and a number above every one seen on that connection. Echoed in the reply."""
    ctx = Pyro4.current_context
    if _checked(ctx):
        return                         # this call, checked already (a method calling its base)
    conn = getattr(ctx, "client", None)
    nonce = getattr(conn, "engine_nonce", None)
    tag = ctx.annotations.get(FRESH) if isinstance(ctx.annotations, dict) else None
    if nonce is None or tag is None or len(tag) != NONCE_BYTES + 8:
        raise ReplayError("a call without its connection's nonce and sequence number")
    tag = bytes(tag)
    number = int.from_bytes(tag[NONCE_BYTES:], "big")
    if not secrets.compare_digest(tag[:NONCE_BYTES], nonce) or number <= conn.engine_seq:
        raise ReplayError("a replayed call (another connection's nonce, or a sequence "
                          "number already used) refused")
    conn.engine_seq = number
    ctx.engine_checked, ctx.engine_tag = ctx.annotations, tag    # echoed by _Daemon.annotations


def _checked(ctx) -> bool:
    """Whether the call being served (its annotations) passed `_check_fresh`."""
    return getattr(ctx, "engine_checked", None) is ctx.annotations


def expose(method):
    """Pyro4's expose, and the call refused unless it is fresh (`_check_fresh`)."""
    @functools.wraps(method)
    def fresh(*args, **kwargs):
        _check_fresh()
        return method(*args, **kwargs)
    return Pyro4.expose(fresh)


def engine_version() -> str:
    return __version__


def handshake_data() -> dict:
    return {"engine": engine_version(), "protocol": PROTOCOL}


# ---- keys ------------------------------------------------------------------------------

def read_key(key_file: str = "") -> bytes | None:
    """The shared secret: the file's content (stripped) if a file is named, else
    $ENGINE_CLUSTER_KEY, else None."""
    if key_file:
        try:
            with open(key_file, "rb") as fh:
                key = fh.read().strip()
        except OSError as exc:
            raise ConfigError(f"{key_file}: cannot read the cluster key ({exc.strerror})") from None
        if not key:
            raise ConfigError(f"{key_file}: the cluster key file is empty")
        return key
    key = os.environ.get("ENGINE_CLUSTER_KEY", "")
    return key.encode() if key else None


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(a[4][0]).is_loopback
                       for a in socket.getaddrinfo(host, None))
        except OSError:
            return False


def require_key(host: str, key: bytes | None, what: str) -> None:
    """Without a key only loopback addresses may be dialled: anything on the network could
    answer as a worker or a name server."""
    if key is None and not is_loopback(host):
        raise InvalidArgumentError(
            f"refusing {what} {host} without a key: set ENGINE_CLUSTER_KEY (or "
            f"[cluster] key_file) to the key the workers were started with")


def check_keyed(nodes, nameserver: str, key: bytes | None) -> None:
    """Before any work: a keyless job names only loopback nodes and name servers, and does
    not look for the name server by broadcast."""
    if key is not None:
        return
    if nameserver == "auto":
        raise InvalidArgumentError(
            "refusing to find the name server by broadcast without a key (anything on the "
            "network could answer): set ENGINE_CLUSTER_KEY, or name the name server's "
            "address on this machine")
    if nameserver:
        require_key(parse_address(nameserver, Pyro4.config.NS_PORT)[0], key,
                    "to use the name server at")
    for address in nodes:
        require_key(address_host(address), key, "to connect to the node at")


def address_host(address: str) -> str:
    """The host of 'host:port' or of a PYRO: URI ('localhost' for a Unix socket)."""
    if address.startswith("PYRO:"):
        try:
            uri = Pyro4.core.URI(address)
        except Pyro4.errors.PyroError as exc:
            raise InvalidArgumentError(f"{address!r}: {exc}") from None
        return "localhost" if uri.sockname else uri.host
    return parse_address(address)[0]


def parse_address(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """'host:port' or 'host' -> (host, port); '[::1]:9000' for IPv6."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":") or str(default_port)
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, str(default_port)
    try:
        port_n = int(port)
    except ValueError:
        raise ConfigError(f"{text!r}: expected host:port with a numeric port") from None
    if not host or not 0 <= port_n < 65536:
        raise ConfigError(f"{text!r}: expected host:port")
    return host, port_n


# ---- the worker's side ----------------------------------------------------------------------

class _RefusalLog(logging.Handler):
    """Pyro4 logs refused handshakes (wrong key, wrong version) at debug level only: raise
    them to warnings on the engine's log."""

    def emit(self, record):
        if record.getMessage().startswith("handshake failed") and record.exc_info:
            log.warning("refused a connection: %s", record.exc_info[1])


_pyro_log = logging.getLogger("Pyro4.core")
_pyro_log.addHandler(_RefusalLog())
_pyro_log.setLevel(logging.DEBUG)
_pyro_log.propagate = False


class _Daemon(Pyro4.Daemon):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._refused_logged = 0.0

    def _handshake(self, conn, denied_reason=None):
        """Pyro4's handshake, bounded before authentication: HANDSHAKE_SECONDS to send it
        (CROWDED_HANDSHAKE_SECONDS while MAX_PENDING_HANDSHAKES others wait), and a message
        of at most MAX_HANDSHAKE_BYTES (its size read from the header before any of it)."""
        if denied_reason:         # Pyro4's pool is full: closed at once, never read (this
            self._refused(denied_reason)     # runs in the thread that accepts connections)
            return False
        with self._pending_lock:
            crowded = self._pending >= MAX_PENDING_HANDSHAKES
            self._pending += 1
        before = conn.timeout
        try:
            # a caller with the key sends its handshake as soon as it connects: when many
            # others wait, one that does not within a moment is closed
            conn.timeout = CROWDED_HANDSHAKE_SECONDS if crowded else HANDSHAKE_SECONDS
            size = self._announced_size(conn)
            if size is None or size > MAX_HANDSHAKE_BYTES:
                self._refused(f"a handshake of {size} bytes (at most {MAX_HANDSHAKE_BYTES})"
                              if size else "no handshake in time")
                return False
            return super()._handshake(conn, denied_reason)
        finally:
            conn.timeout = before
            with self._pending_lock:
                self._pending -= 1

    @staticmethod
    def _announced_size(conn) -> int | None:
        """The size the first message's header announces (peeked: the message stays
        unread), or None when no header came in time or it is not Pyro's."""
        n = Pyro4.message.Message.header_size
        try:
            head = conn.sock.recv(n, socket.MSG_PEEK | socket.MSG_WAITALL)
            msg = Pyro4.message.Message.from_header(head)
        except (OSError, Pyro4.errors.ProtocolError):
            return None
        return msg.data_size + msg.annotations_size

    def _refused(self, why: str) -> None:
        now = time.monotonic()                   # at most one line every 10 s
        if now - self._refused_logged >= 10.0:
            self._refused_logged = now
            log.warning("worker: a connection refused before its handshake (%s)", why)

    def annotations(self):
        """Every reply to a call, its exceptions included, echoes the call's nonce and number
        once `_check_fresh` has accepted them."""
        ctx = Pyro4.current_context
        if _checked(ctx):
            return {FRESH: ctx.engine_tag}
        return {}

    def validateHandshake(self, conn, data):
        want = handshake_data()
        if not isinstance(data, dict) or data.get("protocol") != PROTOCOL:
            raise Pyro4.errors.SecurityError(
                f"protocol mismatch: worker speaks {PROTOCOL}, caller sent {data!r}")
        if data.get("engine") != want["engine"]:
            raise Pyro4.errors.SecurityError(
                f"engine version mismatch: worker {want['engine']}, caller {data.get('engine')}")
        conn.engine_nonce = secrets.token_bytes(NONCE_BYTES)   # this connection's calls
        conn.engine_seq = 0                                      # carry it, numbered
        return dict(want, nonce=conn.engine_nonce)


class Server:
    """A Pyro4 daemon serving one object under OBJECT_ID, its loop in a thread."""

    def __init__(self, obj, host: str, port: int, key: bytes | None):
        if key is None and not is_loopback(host):
            raise ConfigError(f"refusing to listen on {host} without a key: set "
                              f"ENGINE_CLUSTER_KEY (or --key-file) on every node")
        # a caller that connects and then sends nothing holds a server thread: not for long
        Pyro4.config.COMMTIMEOUT = SERVER_IDLE_SECONDS
        try:
            self.daemon = _Daemon(host=host, port=port)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self.daemon._pyroHmacKey = key
        self.uri = self.daemon.register(obj, OBJECT_ID)
        self.host, self.port = self.daemon.locationStr.rsplit(":", 1)[0], self.uri.port
        self._thread = threading.Thread(target=self.daemon.requestLoop, name="pyro-daemon",
                                        daemon=True)
        self._ns_name = None
        self._ns = None

    def start(self) -> None:
        self._thread.start()

    def register(self, nameserver: str, name: str, key: bytes | None) -> None:
        """Register in a Pyro4 name server ('host[:port]', or 'auto' to find it by
        broadcast) as engine.worker.NAME."""
        self._ns = locate_ns(nameserver, key)
        self._ns_name = NS_PREFIX + name
        self._ns.register(self._ns_name, self.uri, safe=False)

    def close(self) -> None:
        if self._ns_name:
            try:
                ns = self._ns
                ns._pyroTimeout = 3
                ns.remove(self._ns_name)
                ns._pyroRelease()
            except Exception:
                pass
        self.daemon.shutdown()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.daemon.close()


# ---- the dispatcher's side -------------------------------------------------------------------

class _Proxy(Pyro4.Proxy):
    """A proxy whose calls carry the connection's nonce (from the worker's handshake reply)
    and a rising number, and which takes only the reply that echoes them."""

    _engine_nonce = None
    _engine_seq = 0
    _engine_sent = None

    def _pyroValidateHandshake(self, response):
        nonce = response.get("nonce") if isinstance(response, dict) else None
        if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
            raise Pyro4.errors.ProtocolError(
                f"the worker's handshake reply carries no nonce (protocol {PROTOCOL} "
                f"expected): {response!r:.200}")
        self._set(_engine_nonce=nonce, _engine_seq=0)

    def _set(self, **values):                   # Pyro4's __setattr__ would look for
        for name, value in values.items():      # a remote attribute
            object.__setattr__(self, name, value)

    def _pyroAnnotations(self):
        if self._engine_nonce is None:           # the handshake itself
            return {}
        seq = self._engine_seq + 1
        self._set(_engine_seq=seq, _engine_sent=self._engine_nonce + seq.to_bytes(8, "big"))
        return {FRESH: self._engine_sent}

    def _pyroResponseAnnotations(self, annotations, msgtype):
        echoed = bytes(annotations.get(FRESH, b""))
        if msgtype == Pyro4.message.MSG_RESULT and (
                self._engine_sent is None or echoed != self._engine_sent):
            raise Pyro4.errors.ProtocolError("a reply that does not answer this call (replayed "
                                             "or out of order) refused")


def connect(address: str, key: bytes | None, timeout: float) -> Pyro4.Proxy:
    """A proxy to the worker at 'host:port' (or a PYRO: URI), calls bounded by `timeout`."""
    require_key(address_host(address), key, "to connect to the node at")
    uri = address if address.startswith("PYRO:") else \
        "PYRO:%s@%s:%d" % ((OBJECT_ID,) + parse_address(address))
    proxy = _Proxy(uri)
    proxy._pyroHmacKey = key
    proxy._pyroHandshake = handshake_data()
    proxy._pyroTimeout = timeout
    return proxy


def set_timeout(proxy, seconds: float) -> None:
    proxy._pyroTimeout = seconds


def release(proxy) -> None:
    try:
        proxy._pyroRelease()
    except Exception:
        pass


def locate_ns(nameserver: str, key: bytes | None, timeout: float = 10.0):
    """The name server at 'host[:port]', or found by broadcast for 'auto' (keyed only);
    connecting and every call bounded by `timeout` (a stopped name server that still accepts
    connections must not hang the caller)."""
    check_keyed((), nameserver or "auto", key)
    try:
        if nameserver in ("", "auto"):
            found = Pyro4.locateNS(hmac_key=key)    # the broadcast has its own timeout
            uri = found._pyroUri
            found._pyroRelease()
        else:
            host, port = parse_address(nameserver, Pyro4.config.NS_PORT)
            uri = f"PYRO:{Pyro4.constants.NAMESERVER_NAME}@{host}:{port}"
        ns = Pyro4.core.Proxy(uri)
        ns._pyroHmacKey = key
        ns._pyroTimeout = timeout
        ns._pyroBind()
        return ns
    except Pyro4.errors.PyroError as exc:
        raise ClusterError(f"name server {nameserver or 'auto'}: {exc}") from None


def discover(nameserver: str, key: bytes | None, timeout: float = 10.0) -> dict[str, str]:
    """Workers registered in the name server: {name: PYRO URI}."""
    ns = locate_ns(nameserver, key, timeout)
    try:
        found = ns.list(prefix=NS_PREFIX)
    except Pyro4.errors.PyroError as exc:
        raise ClusterError(f"name server {nameserver or 'auto'}: {exc}") from None
    finally:
        release(ns)
    return {name[len(NS_PREFIX):]: str(uri) for name, uri in sorted(found.items())}


def start_nameserver(host: str, port: int, key: bytes | None, broadcast: bool = True):
    """Start Pyro4's own name server (msgpack, the cluster key) and serve it until the
    process ends. Blocks."""
    if key is None and not is_loopback(host):
        raise ConfigError(f"refusing to serve a name server on {host} without a key: set "
                          f"ENGINE_CLUSTER_KEY")
    Pyro4.naming.startNSloop(host=host, port=port, enableBroadcast=broadcast, hmac=key)
