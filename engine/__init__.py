"""engine: word2vec (skip-gram / CBOW, negative sampling / hierarchical softmax) trained by
Cython nogil kernels on every core of a machine.

Public API (gensim 4's names): Word2Vec, KeyedVectors, LineSentence, Text8Corpus,
PathLineSentences, CallbackAny2Vec; and CorpusSource (streamed corpus), run_job, load_job.
"""
import importlib as _importlib

from .errors import ConfigError, CorpusError, EngineError, Interrupted, WorkerError

from .version import __version__

# The public names, each imported from its module when first asked for (`from engine import
# Word2Vec` as well): a training process imports engine.local.workers, and with it this package,
# without the model, the evaluators and the configuration it never uses (0.3 s of imports
# that every spawned process paid before it could train).
_LAZY = {"CallbackAny2Vec": ".api.callbacks", "JobConfig": ".config", "ModelConfig": ".config",
         "load_job": ".config", "CorpusSource": ".text.corpus", "Word2Vec": ".api.word2vec",
         "LineSentence": ".text.readers", "PathLineSentences": ".text.readers",
         "Text8Corpus": ".text.readers", "KeyedVectors": ".vectors.keyedvectors",
         # the document models; LsiModel with gensim's distributed=True (the cluster)
         "LsiModel": ".api.lsi", "Dictionary": ".documents", "TfidfModel": ".documents",
         "LdaModel": ".api.lda", "LdaMulticore": ".api.lda"}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(_importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'engine' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


def run_job(job, show_progress: bool = True, resume: bool = False):
    """Train, save and evaluate a job (a JobConfig or the path of a job TOML file); with
    resume, continue from its latest checkpoint."""
    from .config import load_job
    from .jobs.run import run_job as _run

    if isinstance(job, str):
        job = load_job(job)
    return _run(job, show_progress, resume)


__all__ = ["__version__", "Word2Vec", "KeyedVectors", "LineSentence", "Text8Corpus",
           "PathLineSentences", "CallbackAny2Vec", "CorpusSource", "JobConfig", "ModelConfig",
           "load_job", "run_job", "EngineError", "ConfigError", "CorpusError", "WorkerError",
           "Interrupted"]
