"""Word vectors: `KeyedVectors` (gensim 4's API: lookups, similarity queries, the standard
evaluations, the word2vec text and binary formats, save / load) and the correlations the
word-pair evaluation reports. The code is split into keyedvectors.py (the class),
w2vformat.py (the file format), kveval.py (evaluations) and correlation.py."""
from .correlation import Correlation, pearson, spearman
from .keyedvectors import KeyedVectors

__all__ = ["KeyedVectors", "Correlation", "pearson", "spearman"]
