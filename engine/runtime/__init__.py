"""Runtime utilities every layer may use: atomic writes, integrity checks, starting and
stopping processes, shared memory, memory measurement, progress lines, BLAS discovery,
signals."""
