"""Errors a user can act on: each one message, one line, naming the file or field."""


class EngineError(Exception):
    """Base of every error engine reports to the user (the CLI prints it and exits 2)."""


class ConfigError(EngineError):
    """A job file, a --set override or a keyword argument is wrong."""


class CorpusError(EngineError):
    """The corpus cannot be read or yields nothing to train on."""


class WorkerError(EngineError):
    """A training process failed; the message carries its traceback."""


class Interrupted(EngineError):
    """Training stopped by Ctrl-C or SIGTERM (everything was cleaned up); `exit_code` is the
    shell convention, 128 + signal number."""

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code


class ClusterError(EngineError):
    """The cluster cannot run the job: no node reachable, a name server missing, every node
    lost, a key refused."""


class ResourceError(EngineError, MemoryError):
    """The job cannot fit: not enough RAM, shared memory or disk (the message has the
    numbers); found before training starts."""
