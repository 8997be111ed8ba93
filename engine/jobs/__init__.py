"""One job end to end, for the CLI and the Python API alike."""
