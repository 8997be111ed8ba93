"""engine: word2vec (skip-gram / CBOW, negative sampling / hierarchical softmax) trained by
Cython nogil kernels on every core of a machine.

Public API (gensim 4's names): Word2Vec, KeyedVectors, LineSentence, Text8Corpus,
PathLineSentences, CallbackAny2Vec; and CorpusSource (streamed corpus), run_job, load_job.
"""
from .callbacks import CallbackAny2Vec
from .config import JobConfig, ModelConfig, load_job
from .corpus import CorpusSource
from .errors import ConfigError, CorpusError, EngineError, Interrupted, WorkerError
from .model import Word2Vec
from .readers import LineSentence, PathLineSentences, Text8Corpus
from .vectors import KeyedVectors

__version__ = "0.1.0"


def __getattr__(name):
    """engine.Dictionary, engine.TfidfModel, engine.LsiModel: the document models
    (engine.docs), imported when first asked for."""
    if name == "LsiModel":                  # with gensim's distributed=True (the cluster)
        from .doc_models import LsiModel

        return LsiModel
    if name in ("Dictionary", "TfidfModel"):
        from . import docs

        return getattr(docs, name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")


def run_job(job, show_progress: bool = True, resume: bool = False):
    """Train, save and evaluate a job (a JobConfig or the path of a job TOML file); with
    resume, continue from its latest checkpoint."""
    from .train import run_job as _run

    if isinstance(job, str):
        job = load_job(job)
    return _run(job, show_progress, resume)


__all__ = ["Word2Vec", "KeyedVectors", "LineSentence", "Text8Corpus", "PathLineSentences",
           "CallbackAny2Vec", "CorpusSource", "JobConfig", "ModelConfig", "load_job",
           "run_job", "EngineError", "ConfigError", "CorpusError", "WorkerError", "Interrupted"]
