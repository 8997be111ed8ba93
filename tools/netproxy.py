#!/usr/bin/env python3
"""User-space TCP proxy that adds a one-way delay and throttles each direction.

Stands in for `tc netem` (absent on this kernel): put one proxy map between the
dispatcher and each worker to measure a cluster at e.g. 50 ms round trip and
125 MB/s (1 Gbit/s) per link.

usage: python tools/netproxy.py --map LISTEN_PORT:TARGET_HOST:TARGET_PORT [--map ...]
           [--listen-host 127.0.0.1] --rtt-ms 50 --rate-mbytes 125 [--max-seconds 3600]

Link model, per connection and per direction (each direction is independent,
full duplex): a chunk of n bytes read at time t occupies the link from
start = max(t + rtt/2, free) to free = start + n/rate, and is written to the
other side at that end time. Bytes keep their order; rate 0 means unlimited.
A direction holds at most ~2 * rate * rtt bytes (>= 1 MiB) before it stops
reading, so a fast sender is back-pressured as a TCP window would do.
EOF is forwarded as a half-close (write_eof) after the pending data; a
connection is closed when both directions are done, or at once on an error.

The proxy only connects to the targets given, refuses non-loopback targets
unless --allow-nonloopback, and stops after --max-seconds or on SIGINT/SIGTERM.
From Python: `stop, ports = start_in_thread([(0, "127.0.0.1", 9000)], 50, 125)`.
Caveat: the TCP handshake to the target is not delayed (only data is).
"""
import argparse
import asyncio
import collections
import contextlib
import ipaddress
import signal
import sys
import threading

CHUNK = 64 * 1024


def is_loopback(host):
    """True for 'localhost' and addresses in 127.0.0.0/8 or ::1."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_map(text):
    """'LISTEN_PORT:HOST:PORT' -> (listen_port, host, port); host may be [::1]."""
    lport, rest = text.split(":", 1)
    host, port = rest.rsplit(":", 1)
    return int(lport), host.strip("[]"), int(port)


async def _direction(src, dst, delay, rate, limit):
    """Forward src -> dst with the delay/throttle model; returns at EOF."""
    loop = asyncio.get_running_loop()
    queue = collections.deque()        # (arrival time, bytes or None for EOF)
    have_item = asyncio.Event()
    has_room = asyncio.Event()
    has_room.set()
    buffered = 0

    async def read_side():
        nonlocal buffered
        while True:
            await has_room.wait()
            try:
                data = await src.read(CHUNK)
            except (ConnectionError, OSError):
                data = b""
            queue.append((loop.time(), data or None))
            have_item.set()
            if not data:
                return
            buffered += len(data)
            if buffered >= limit:
                has_room.clear()

    async def send_side():
        nonlocal buffered
        free = 0.0                      # time the link becomes free
        while True:
            while not queue:
                have_item.clear()
                await have_item.wait()
            arrival, data = queue.popleft()
            n = len(data) if data else 0
            start = max(arrival + delay, free)
            free = start + (n / rate if rate > 0 else 0.0)
            wait = free - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if data is None:
                if dst.can_write_eof():
                    dst.write_eof()
                else:
                    dst.close()
                return
            dst.write(data)
            await dst.drain()
            buffered -= n
            if buffered < limit:
                has_room.set()

    reader = asyncio.ensure_future(read_side())
    try:
        await send_side()
    finally:
        reader.cancel()
        with contextlib.suppress(BaseException):
            await reader


async def _handle(client_r, client_w, target, delay, rate, limit, conns):
    """One accepted connection: connect to target, run both directions."""
    task = asyncio.current_task()
    conns.add(task)
    up_w = None
    try:
        try:
            up_r, up_w = await asyncio.open_connection(target[0], target[1])
        except OSError as exc:
            print(f"netproxy: connect {target[0]}:{target[1]} failed: {exc}",
                  file=sys.stderr, flush=True)
            return
        dirs = [asyncio.ensure_future(_direction(client_r, up_w, delay, rate, limit)),
                asyncio.ensure_future(_direction(up_r, client_w, delay, rate, limit))]
        try:
            done, pending = await asyncio.wait(dirs, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for d in dirs:
                d.cancel()
        if pending or any(d.exception() for d in done if not d.cancelled()):
            for w in (client_w, up_w):          # error: drop both sides now
                w.transport.abort()
    except asyncio.CancelledError:
        pass
    except Exception as exc:                     # never let one connection stop the proxy
        print(f"netproxy: connection error: {exc!r}", file=sys.stderr, flush=True)
    finally:
        for w in (client_w, up_w):
            if w is not None:
                w.close()
                with contextlib.suppress(Exception):
                    await w.wait_closed()
        conns.discard(task)


async def serve(maps, rtt_ms, rate_mbytes, listen_host="127.0.0.1", max_seconds=3600.0,
                stop_event=None, on_ready=None, allow_nonloopback=False):
    """Run the proxy until stop_event is set or max_seconds pass.

    maps: list of (listen_port, target_host, target_port); port 0 picks a free one.
    on_ready(ports) is called once every listening socket is open.
    """
    for _, host, _ in maps:
        if not allow_nonloopback and not is_loopback(host):
            raise ValueError(f"target host {host!r} is not loopback (use --allow-nonloopback)")
    delay = rtt_ms / 2000.0
    rate = rate_mbytes * 1e6
    limit = max(1 << 20, int(2 * rate * rtt_ms / 1000.0)) if rate > 0 else 16 << 20
    stop_event = stop_event or asyncio.Event()
    conns = set()
    servers, ports = [], []
    try:
        for lport, host, tport in maps:
            def cb(r, w, target=(host, tport)):
                return _handle(r, w, target, delay, rate, limit, conns)
            srv = await asyncio.start_server(cb, listen_host, lport)
            servers.append(srv)
            ports.append(srv.sockets[0].getsockname()[1])
        if on_ready:
            on_ready(ports)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop_event.wait(), max_seconds)
    finally:
        for srv in servers:
            srv.close()
        for task in list(conns):
            task.cancel()
        if conns:
            await asyncio.wait(list(conns), timeout=2.0)
    return ports


def start_in_thread(maps, rtt_ms, rate_mbytes, listen_host="127.0.0.1",
                    max_seconds=3600.0, allow_nonloopback=False):
    """Run the proxy in a daemon thread; returns (stop, ports).

    stop() ends the proxy and waits for its thread (idempotent).
    ports: the actual listening ports, in the order of maps.
    """
    ready = threading.Event()
    box = {}

    def run():
        loop = asyncio.new_event_loop()
        box["loop"] = loop
        box["stop"] = asyncio.Event()

        def on_ready(ports):
            box["ports"] = ports
            ready.set()
        try:
            loop.run_until_complete(serve(maps, rtt_ms, rate_mbytes, listen_host, max_seconds,
                                          box["stop"], on_ready, allow_nonloopback))
        except BaseException as exc:  # report start-up errors to the caller
            box["error"] = exc
        finally:
            ready.set()
            loop.close()

    thread = threading.Thread(target=run, name="netproxy", daemon=True)
    thread.start()
    ready.wait()
    if "error" in box:
        raise box["error"]

    def stop():
        loop = box["loop"]
        if not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(box["stop"].set)
        thread.join(timeout=5.0)

    return stop, box["ports"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--map", action="append", required=True, type=parse_map,
                    metavar="LISTEN_PORT:TARGET_HOST:TARGET_PORT")
    ap.add_argument("--listen-host", default="127.0.0.1")
    ap.add_argument("--rtt-ms", type=float, required=True)
    ap.add_argument("--rate-mbytes", type=float, required=True, help="MB/s (1e6 bytes), 0 = unlimited")
    ap.add_argument("--max-seconds", type=float, default=3600.0)
    ap.add_argument("--allow-nonloopback", action="store_true")
    args = ap.parse_args(argv)

    async def run():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        def on_ready(ports):
            for port, (_, host, tport) in zip(ports, args.map):
                print(f"proxy {args.listen_host}:{port} -> {host}:{tport} "
                      f"rtt {args.rtt_ms:g} ms rate {args.rate_mbytes:g} MB/s", flush=True)
        await serve(args.map, args.rtt_ms, args.rate_mbytes, args.listen_host,
                    args.max_seconds, stop, on_ready, args.allow_nonloopback)
    try:
        asyncio.run(run())
    except ValueError as exc:
        ap.error(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
