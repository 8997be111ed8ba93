"""gensim-compatible classes: Word2Vec, LsiModel (with distributed=True), CallbackAny2Vec."""
