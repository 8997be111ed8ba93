"""Word2Vec: the gensim-like Python API over the same pipeline as `engine run`.

    model = Word2Vec(corpus_file="text.txt.gz", sg=1, workers=4)
    model = Word2Vec(sentences=[["a", "b"], ...], vector_size=50, min_count=1)
    model.wv.most_similar("king");  model.save("m");  Word2Vec.load("m").train(corpus_file=...)
    model = Word2Vec(corpus_file="big.txt", nodes=["10.0.0.2:9877", "10.0.0.3:9877"])  # cluster
"""
from __future__ import annotations

import dataclasses

from .config import ClusterConfig, EngineConfig, ModelConfig, check_value, make_section
from .corpus import CorpusSource
from .errors import ConfigError
from .schedule import TrainStats
from .state import ModelState
from .train import make_stream, make_vocab, scratch_folder, train_state
from .vectors import KeyedVectors

MODEL_KEYS = {f.name for f in dataclasses.fields(ModelConfig)}


class Word2Vec:
    def __init__(self, sentences=None, corpus_file: str | None = None, workers: int = 0,
                 corpus_format: str = "auto", encoding_errors: str = "strict",
                 chunk_words: int = 20_000, show_progress: bool = False, nodes=None,
                 nameserver: str = "", cluster: dict | None = None, **model_kwargs):
        unknown = set(model_kwargs) - MODEL_KEYS
        if unknown:
            raise ConfigError(f"Word2Vec: unknown argument(s) {', '.join(sorted(unknown))} "
                              f"(known: {', '.join(sorted(MODEL_KEYS))})")
        self.config = make_section(ModelConfig, model_kwargs, "Word2Vec")
        self.engine = make_section(EngineConfig, {"workers": workers, "chunk_words": chunk_words},
                                   "Word2Vec")
        # nodes / nameserver (or a whole [cluster] dict): train on `engine worker`s
        self.cluster = make_section(ClusterConfig, dict(cluster or {}, **(
            {"nodes": list(nodes)} if nodes else {}), **(
            {"nameserver": nameserver} if nameserver else {})), "Word2Vec cluster")
        self.corpus_format = corpus_format
        self.encoding_errors = encoding_errors
        self.show_progress = show_progress
        self.state: ModelState | None = None
        self.last_stats: TrainStats | None = None
        if sentences is not None or corpus_file is not None:
            self.build_vocab(sentences, corpus_file)
            self.train(sentences, corpus_file)

    # ---- gensim-like attributes --------------------------------------------------------
    def __getattr__(self, name):
        if name in MODEL_KEYS:
            return getattr(self.__dict__["config"], name)
        raise AttributeError(name)

    @property
    def workers(self) -> int:
        return self.engine.processes

    @property
    def wv(self) -> KeyedVectors:
        self._need_state()
        return self.state.keyed_vectors()

    @property
    def syn1neg(self):
        self._need_state()
        return self.state.syn1neg

    @property
    def syn1(self):
        self._need_state()
        return self.state.syn1

    @property
    def corpus_total_words(self) -> int:
        self._need_state()
        return self.state.vocab.raw_words

    def _need_state(self):
        if self.state is None:
            raise ConfigError("Word2Vec: no vocabulary yet; call build_vocab() or pass a corpus")

    def _corpus(self, sentences, corpus_file):
        if (sentences is None) == (corpus_file is None):
            raise ConfigError("Word2Vec: give exactly one of sentences= or corpus_file=")
        if corpus_file is not None:
            return CorpusSource(corpus_file, self.corpus_format, self.encoding_errors)
        if isinstance(sentences, str):
            raise ConfigError("Word2Vec: sentences must be an iterable of token lists "
                              "(use corpus_file= for a path)")
        return sentences

    # ---- training -----------------------------------------------------------------------
    def build_vocab(self, sentences=None, corpus_file: str | None = None) -> "Word2Vec":
        """Count the corpus and start a fresh model (random input vectors, zero outputs)."""
        vocab = make_vocab(self._corpus(sentences, corpus_file), self.config, self.engine)
        self.state = ModelState(self.config, vocab)
        return self

    def train(self, sentences=None, corpus_file: str | None = None, epochs: int | None = None,
              start_alpha: float | None = None, end_alpha: float | None = None,
              **_gensim_compat) -> TrainStats:
        """Train `epochs` (default: the model's) passes; words outside the vocabulary are
        skipped. Extra gensim arguments (total_examples, total_words) are accepted."""
        self._need_state()
        corpus = self._corpus(sentences, corpus_file)
        epochs = check_value("Word2Vec.train epochs", epochs or self.config.epochs,
                             {"kind": int, "lo": 1, "hi": None, "choices": None,
                              "lo_open": False})
        alpha = self.config.alpha if start_alpha is None else start_alpha
        min_alpha = self.config.min_alpha if end_alpha is None else end_alpha
        with scratch_folder(self.engine.cache_dir) as folder:
            stream = make_stream(corpus, self.state.vocab, folder, self.engine)
            self.last_stats = train_state(self.state, stream, self.engine, epochs, alpha,
                                          min_alpha, show_progress=self.show_progress,
                                          cluster=self.cluster)
        return self.last_stats

    # ---- persistence ----------------------------------------------------------------------
    def save(self, folder: str) -> None:
        """Native full model (vectors, output weights, vocabulary with counts, settings)."""
        self._need_state()
        self.state.save(folder)

    @classmethod
    def load(cls, folder: str, workers: int = 0, **kwargs) -> "Word2Vec":
        state = ModelState.load(folder)
        model = cls(workers=workers, **kwargs, **dataclasses.asdict(state.config))
        model.state = state
        return model
