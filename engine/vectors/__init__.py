"""Word vectors: `KeyedVectors` (gensim 4's API: lookups, similarity queries, the standard
evaluations, the word2vec text and binary formats, save / load) and the correlations the
word-pair evaluation reports. keyedvectors.py (the class),
w2vformat.py (the file format), evaluate.py (evaluations) and correlation.py."""
