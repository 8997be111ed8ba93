"""engine's version: the package's, and what a cluster handshake compares."""
__version__ = "0.1.0"
