"""Runs one of a peer's Pyro4 programs (gensim's name server, LSI workers and dispatcher, or
the bench's own runner) with every Pyro4 daemon and proxy in it using the HMAC key in
$ENGINE_PEER_PYRO_KEY:

    python keyed_pyro.py -m MODULE [ARGS...]
    python keyed_pyro.py -c CODE
    python keyed_pyro.py SCRIPT [ARGS...]

gensim's distributed mode needs pickle on the wire. On loopback, without a key, any local
user could send those processes a pickle and run code as the user running the bench; with a
random key per run (`engine bench` makes one), a message without it is refused before it is
decoded. Run under the peer's Python; it imports nothing of engine. The key travels in the
environment, never on a command line."""
import os
import runpy
import sys


def use_key(key: bytes) -> None:
    """Pyro4 4.x has no configuration item for the key: every Daemon and Proxy (the name
    server's, gensim's, locateNS's) reads it through this property; what the programs set
    (None, where they take no key) is ignored."""
    import Pyro4.core

    keyed = property(lambda self: key, lambda self, value: None)
    Pyro4.core.Proxy._pyroHmacKey = keyed
    Pyro4.core.Daemon._pyroHmacKey = keyed


if __name__ == "__main__":
    use_key(os.environ["ENGINE_PEER_PYRO_KEY"].encode())
    if len(sys.argv) < 2:
        sys.exit("usage: keyed_pyro.py -m MODULE [ARGS...] | -c CODE | SCRIPT [ARGS...]")
    if sys.argv[1] == "-m":
        module, sys.argv = sys.argv[2], sys.argv[2:]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    elif sys.argv[1] == "-c":
        code, sys.argv = sys.argv[2], ["-c"]
        exec(compile(code, "<string>", "exec"), {"__name__": "__main__"})
    else:
        sys.argv = sys.argv[1:]
        runpy.run_path(sys.argv[0], run_name="__main__")
