"""Document models: latent semantic indexing (LSI) of a streamed documents corpus, and
latent Dirichlet allocation (LDA, online variational Bayes).

gensim's names: Dictionary, TfidfModel, LsiModel, LdaModel, LdaMulticore; DocumentSource (a documents file or
folder, streamed); and a job entry point, LsiConfig + run_lsi_job, that goes from a corpus
to topics and document vectors on every core.
"""
from .corpus import DocumentSource
from .dictionary import Dictionary
from .job import LsiConfig, run_lsi_job
from .lda import LdaModel, LdaMulticore
from .lsi import LsiModel
from .tfidf import TfidfModel

__all__ = ["Dictionary", "DocumentSource", "LdaModel", "LdaMulticore", "LsiConfig", "LsiModel",
           "TfidfModel", "run_lsi_job"]
