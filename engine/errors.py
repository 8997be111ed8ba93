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


# ---- errors that are also the built-in gensim raises, so `except ValueError:` (and the
# ---- like) written for gensim keeps working with engine's KeyedVectors ---------------------

class FormatError(EngineError, ValueError):
    """A file is not what it should be (corrupted, another format, a bad line): the message
    names the file and the line or byte offset. Also a ValueError, as gensim raises."""


class TruncatedFileError(FormatError, EOFError):
    """A file ends before the data it declares (a cut download, a full disk): the message
    names the file and where it ends. Also an EOFError, as gensim raises."""


class UnknownKeyError(EngineError, KeyError):
    """A key (word) that is not in the vectors. Also a KeyError, as gensim raises."""


class MissingFileError(EngineError, FileNotFoundError):
    """A file to read does not exist. Also a FileNotFoundError, as gensim raises."""


class FileAccessError(EngineError, OSError):
    """A file exists but cannot be read or written (permissions, a folder, a full disk)."""


class InvalidArgumentError(ConfigError, ValueError):
    """A call's argument has a value it cannot use. Also a ValueError, as gensim raises."""


class EmptyInputError(InvalidArgumentError, ZeroDivisionError):
    """A call got an empty list where it divides by its length (gensim's n_similarity
    raises ZeroDivisionError there)."""


class InvalidTypeError(ConfigError, TypeError):
    """An argument or value of the wrong type. Also a TypeError, as gensim raises."""


class NotSupportedError(EngineError, NotImplementedError):
    """A combination of options the format cannot do (gensim: NotImplementedError)."""


class MissingDependencyError(EngineError, ImportError):
    """An optional package a feature needs is not installed; the message says what to
    install. Also an ImportError, as gensim raises."""
