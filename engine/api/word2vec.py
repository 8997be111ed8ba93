"""Word2Vec: gensim 4's `Word2Vec` (names, defaults, return values, exceptions) over the same
pipeline as `engine run`, so a gensim script runs with only its import changed.

    model = Word2Vec(sentences, vector_size=100, window=5, min_count=1, workers=4)
    model = Word2Vec(corpus_file="text.txt.gz", sg=1)           # any engine corpus, compressed too
    model.wv.most_similar("king");  model.save("m");  Word2Vec.load("m").train(...)
    model = Word2Vec(corpus_file="big.txt", nodes=["10.0.0.2:9877", "10.0.0.3:9877"])  # cluster

Where engine differs from gensim on purpose (docs/usage.md, "Coming from gensim"): `workers=0`
(the default) means every physical core; the training loss is computed by default, exactly
and per epoch; a corpus is encoded once, so `train()` may take a generator; parameters that
have no effect here (hashfxn, null_word, sorted_vocab=0, batch_words) are accepted and said
so once in the log.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from types import GeneratorType

import numpy as np

from ..config import ClusterConfig, EngineConfig, ModelConfig, make_section
from ..text.corpus import CorpusSource
from ..errors import CorpusError
from ..word2vec.schedule import TrainStats
from ..word2vec.state import ModelState
from ..local.workers import Standby
from ..jobs.corpus import make_stream, make_vocab, scratch_folder
from ..jobs.train import train_state
from ..word2vec.vocab import Vocab

log = logging.getLogger("engine")

MODEL_KEYS = {f.name for f in dataclasses.fields(ModelConfig)}
RULE_DEFAULT, RULE_DISCARD, RULE_KEEP = 0, 1, 2          # gensim.utils' trim_rule results
_NO_EFFECT = {   # gensim parameter -> (its default, why it has no effect here)
    "hashfxn": (hash, "vectors are initialised from `seed` alone"),
    "null_word": (0, "engine's CBOW sums or averages its context, never concatenates"),
    "sorted_vocab": (1, "the vocabulary is always sorted by count"),
    "batch_words": (10000, "work units are `chunk_words` ids of the encoded corpus"),
}
_said: set[str] = set()


def _say_once(name: str, why: str) -> None:
    if name not in _said:
        _said.add(name)
        log.warning("Word2Vec: %s has no effect in engine (%s)", name, why)


def keep_word(word: str, count: int, min_count: int, trim_rule=None) -> bool:
    """gensim's rule: trim_rule(word, count, min_count) may keep or discard a word; by
    default a word stays when count >= min_count."""
    if trim_rule is not None:
        verdict = trim_rule(word, count, min_count)
        if verdict == RULE_DISCARD:
            return False
        if verdict == RULE_KEEP:
            return True
    return count >= min_count


class Word2Vec:
    def __init__(self, sentences=None, corpus_file=None, vector_size=100, alpha=0.025,
                 window=5, min_count=5, max_vocab_size=None, sample=1e-3, seed=1, workers=0,
                 min_alpha=0.0001, sg=0, hs=0, negative=5, ns_exponent=0.75, cbow_mean=1,
                 hashfxn=hash, epochs=5, null_word=0, trim_rule=None, sorted_vocab=1,
                 batch_words=10000, compute_loss=None, callbacks=(), comment=None,
                 max_final_vocab=None, shrink_windows=True, *, corpus_iterable=None,
                 corpus_format: str = "auto", encoding_errors: str = "strict",
                 chunk_words: int = 20_000, show_progress: bool = False, nodes=None,
                 nameserver: str = "", cluster: dict | None = None):
        for name, value in (("hashfxn", hashfxn), ("null_word", null_word),
                            ("sorted_vocab", sorted_vocab), ("batch_words", batch_words)):
            if value != _NO_EFFECT[name][0]:
                _say_once(name, _NO_EFFECT[name][1])
        model = {"vector_size": vector_size, "alpha": alpha, "window": window,
                 "min_count": max(int(min_count), 1) if _is_int(min_count) else min_count,
                 "max_vocab_size": max_vocab_size or 0, "sample": sample, "seed": seed,
                 "min_alpha": min_alpha, "sg": sg, "hs": hs, "negative": negative,
                 "ns_exponent": ns_exponent, "cbow_mean": cbow_mean, "epochs": epochs,
                 "max_final_vocab": max_final_vocab or 0,
                 "shrink_windows": bool(shrink_windows)}
        if compute_loss is not None:
            model["compute_loss"] = bool(compute_loss)
        model = {k: int(v) if isinstance(v, bool) and k not in ("shrink_windows",
                                                                  "compute_loss") else v
                 for k, v in model.items()}
        d = self.__dict__
        d["config"] = make_section(ModelConfig, model, "Word2Vec")
        d["engine"] = make_section(EngineConfig, {"workers": workers,
                                                  "chunk_words": chunk_words}, "Word2Vec")
        # nodes / nameserver (or a whole [cluster] dict): train on `engine worker`s
        d["cluster"] = make_section(ClusterConfig, dict(cluster or {}, **(
            {"nodes": list(nodes)} if nodes else {}), **(
            {"nameserver": nameserver} if nameserver else {})), "Word2Vec cluster")
        d["corpus_format"] = corpus_format
        d["encoding_errors"] = encoding_errors
        d["show_progress"] = show_progress
        d["trim_rule"] = trim_rule
        d["callbacks"] = tuple(callbacks or ())
        d["comment"] = comment
        d["hashfxn"], d["null_word"] = hashfxn, null_word
        d["sorted_vocab"], d["batch_words"] = sorted_vocab, batch_words
        d["state"] = None
        d["_wv"] = None
        d["last_stats"] = None
        d["running_training_loss"] = 0.0
        d["stop_training"] = False
        d["train_count"] = 0
        d["total_train_time"] = 0.0
        d["min_alpha_yet_reached"] = float(alpha)
        d["raw_vocab"] = None
        if sentences is not None and corpus_iterable is not None:
            raise TypeError("Word2Vec: give sentences= or corpus_iterable=, not both")
        corpus_iterable = sentences if sentences is not None else corpus_iterable
        if corpus_iterable is not None or corpus_file is not None:
            if isinstance(corpus_iterable, GeneratorType):
                raise TypeError(f"Using a generator as corpus_iterable can't support "
                                f"{self.epochs + 1} passes. Try a re-iterable sequence.")
            self.build_vocab(corpus_iterable, corpus_file, trim_rule=trim_rule)
            self.train(corpus_iterable, corpus_file, total_examples=self.corpus_count,
                       total_words=self.corpus_total_words, epochs=self.epochs,
                       compute_loss=compute_loss, callbacks=callbacks)

    # ---- gensim's attributes ----------------------------------------------------------
    def __getattr__(self, name):
        if name in MODEL_KEYS:
            return getattr(self.__dict__["config"], name)
        raise AttributeError(f"'Word2Vec' object has no attribute '{name}'")

    def __setattr__(self, name, value):
        """`model.alpha = 0.01`, `model.epochs = 10` and the like change the settings the
        next train() uses, as in gensim."""
        if name in MODEL_KEYS:
            if isinstance(value, bool) and name not in ("shrink_windows", "compute_loss"):
                value = int(value)
            fields = dataclasses.asdict(self.config)
            fields[name] = value
            self.__dict__["config"] = make_section(ModelConfig, fields, "Word2Vec")
        else:
            object.__setattr__(self, name, value)

    @property
    def workers(self) -> int:
        return self.engine.processes

    @property
    def wv(self):
        """The word vectors: one object (its vectors are the model's own input weights),
        whose cached norms are refreshed whenever training changes the weights."""
        self._need_state()
        if self._wv is None:
            self.__dict__["_wv"] = self.state.keyed_vectors()
        return self._wv

    @wv.setter
    def wv(self, kv) -> None:
        self._need_state()
        vectors = np.ascontiguousarray(kv.vectors, dtype=np.float32)
        if list(kv.index_to_key) != self.state.vocab.words or \
                vectors.shape != self.state.syn0.shape:
            raise ValueError("Word2Vec.wv: the new KeyedVectors must have the model's keys, in "
                             f"its order, and vectors of shape {self.state.syn0.shape}")
        self.state.syn0 = vectors
        self.__dict__["_wv"] = kv

    @property
    def syn1neg(self):
        self._need_state()
        if not self.negative:
            raise AttributeError("'Word2Vec' object has no attribute 'syn1neg' (negative=0)")
        return self.state.syn1neg

    @property
    def syn1(self):
        self._need_state()
        if not self.hs:
            raise AttributeError("'Word2Vec' object has no attribute 'syn1' (hs=0)")
        return self.state.syn1

    @property
    def corpus_total_words(self) -> int:
        return self.state.vocab.raw_words if self.state is not None else 0

    @property
    def corpus_count(self) -> int:
        return self.state.vocab.sentences if self.state is not None else 0

    @property
    def epochs_trained(self) -> int:
        return self.state.epochs_trained if self.state is not None else 0

    def _need_state(self):
        if self.state is None:
            raise RuntimeError("you must first build vocabulary before training the model")

    def _refresh(self) -> None:
        """The weights changed: the word vectors' cached norms are stale."""
        kv = self.__dict__.get("_wv")
        if kv is not None:
            if kv.vectors is not self.state.syn0:
                kv.vectors = self.state.syn0
            kv.norms = None

    # ---- corpora --------------------------------------------------------------------------
    def _corpus(self, corpus_iterable, corpus_file, what: str):
        if corpus_iterable is None and corpus_file is None:
            raise TypeError("Either one of corpus_file or corpus_iterable value must be provided")
        if corpus_iterable is not None and corpus_file is not None:
            raise TypeError("Both corpus_file and corpus_iterable must not be provided at the "
                            "same time")
        if corpus_file is not None:
            return CorpusSource(str(corpus_file), self.corpus_format, self.encoding_errors)
        if isinstance(corpus_iterable, (str, bytes)):
            raise TypeError(f"Word2Vec.{what}: sentences must be an iterable of token lists "
                            f"(use corpus_file= for a path)")
        fast = getattr(corpus_iterable, "corpus_source", None)
        if callable(fast):                       # engine.text.readers: the parallel encoder
            source = fast()
            if source is not None:
                return source
        if not hasattr(corpus_iterable, "__iter__"):
            raise TypeError(f"The corpus_iterable must be an iterable of lists of strings, got "
                            f"{corpus_iterable!r} instead")
        return corpus_iterable

    # ---- vocabulary ---------------------------------------------------------------------
    def build_vocab(self, corpus_iterable=None, corpus_file=None, update=False,
                    progress_per=10000, keep_raw_vocab=False, trim_rule=None, *,
                    min_count=None, sample=None, dry_run=False) -> None:
        """Count the corpus; a fresh model (random input vectors, zero output weights), or
        with update=True the trained model's vocabulary grown by the new words."""
        if min_count is not None:
            self.min_count = max(int(min_count), 1)
        if sample is not None:
            self.sample = sample
        trim_rule = trim_rule if trim_rule is not None else self.trim_rule
        corpus = self._corpus(corpus_iterable, corpus_file, "build_vocab")
        if trim_rule is None and not update and not keep_raw_vocab:
            vocab = make_vocab(corpus, self.config, self.engine)
        else:                                    # every count, then gensim's rules
            everything = dataclasses.replace(self.config, min_count=1, max_final_vocab=0)
            raw = make_vocab(corpus, everything, self.engine)
            if keep_raw_vocab:
                self.raw_vocab = dict(zip(raw.words, raw.counts.tolist()))
            vocab = self._select(raw, trim_rule, update)
        if dry_run:
            return
        self._install_vocab(vocab, update)

    def build_vocab_from_freq(self, word_freq: dict, keep_raw_vocab=False, corpus_count=None,
                              trim_rule=None, update=False) -> None:
        """The vocabulary from a {word: count} dict instead of a corpus."""
        counts = Counter({str(w): int(c) for w, c in word_freq.items()})
        if not counts:
            raise ValueError("build_vocab_from_freq: word_freq is empty")
        if keep_raw_vocab:
            self.raw_vocab = dict(counts)
        raw = Vocab.build(counts, sum(counts.values()), 1, 0, int(corpus_count or 0),
                          "word_freq")
        self._install_vocab(self._select(raw, trim_rule or self.trim_rule, update), update)

    def _select(self, raw: Vocab, trim_rule, update: bool) -> Vocab:
        """gensim's keep rule over all counts, then max_final_vocab."""
        mc = self.config.min_count
        counts = Counter()
        for word, count in zip(raw.words, raw.counts.tolist()):
            if keep_word(word, count, mc, trim_rule):
                counts[word] = count
        if not counts:
            raise CorpusError(f"no word kept (min_count={mc}{', trim_rule' if trim_rule else ''})")
        return Vocab.build(counts, raw.raw_words, 1,
                           0 if update else self.config.max_final_vocab, raw.sentences)

    def _install_vocab(self, vocab: Vocab, update: bool) -> None:
        if not update or self.state is None:
            if update:
                raise RuntimeError("You cannot do an online vocabulary-update of a model "
                                   "which has no prior vocabulary. First build the vocabulary "
                                   "of your model with a corpus before doing an online update.")
            # trained by processes here: the weights are made in shared memory, once
            local = self.cluster is None or not self.cluster.enabled
            self.state = ModelState(self.config, vocab,
                                    shared=local and self.engine.processes > 1)
            self.__dict__["_wv"] = None
        else:
            self.state = grow(self.state, vocab, self.config)
            kv = self.__dict__.get("_wv")
            if kv is not None:                   # the same object, grown (as gensim's)
                kv.__dict__.update(self.state.keyed_vectors().__dict__)

    # ---- training -----------------------------------------------------------------------
    def train(self, corpus_iterable=None, corpus_file=None, total_examples=None,
              total_words=None, epochs=None, start_alpha=None, end_alpha=None, word_count=0,
              queue_factor=2, report_delay=1.0, compute_loss=None, callbacks=None):
        """Train `epochs` passes (default: the model's) over the corpus; words outside the
        vocabulary are skipped. Returns gensim's (effective words, raw words). The corpus
        is encoded once, so any iterable works, a generator too. total_examples and
        total_words are accepted: engine knows the corpus exactly once it is encoded."""
        self._need_state()
        if epochs is not None and (not _is_int(epochs) or epochs <= 0):
            raise ValueError("You must specify an explicit epochs count. The usual value is "
                             "epochs=model.epochs.")
        epochs = self.epochs if epochs is None else int(epochs)
        if compute_loss is not None:
            self.compute_loss = bool(compute_loss)
        if callbacks is not None:
            self.callbacks = tuple(callbacks)
        corpus = self._corpus(corpus_iterable, corpus_file, "train")
        alpha = self.alpha if start_alpha is None else float(start_alpha)
        min_alpha = self.min_alpha if end_alpha is None else float(end_alpha)
        self.state.config = self.config
        self.running_training_loss = 0.0
        self.stop_training = False
        t0 = time.perf_counter()
        for cb in self.callbacks:
            _call(cb, "on_train_begin", self)
        local = self.cluster is None or not self.cluster.enabled
        # the training processes start while the corpus is encoded (engine.local.workers.Standby)
        with scratch_folder(self.engine.cache_dir) as folder, \
                Standby(self.engine.processes if local and self.engine.processes > 1
                        else 0) as standby:
            stream = make_stream(corpus, self.state.vocab, folder, self.engine)
            if stream.n_ids == 0 or stream.raw_words == 0:
                raise CorpusError("Word2Vec.train: the corpus yielded no words (a generator "
                                  "already used up by build_vocab?)")
            if self.callbacks:
                for cb in self.callbacks:
                    _call(cb, "on_epoch_begin", self)
            stats = train_state(self.state, stream, self.engine, epochs, alpha, min_alpha,
                                show_progress=self.show_progress, cluster=self.cluster,
                                on_epoch_end=self._epoch_end(epochs), standby=standby)
        self.last_stats = stats
        self.running_training_loss = stats.loss
        self.train_count += 1
        self.total_train_time += time.perf_counter() - t0
        self.min_alpha_yet_reached = min_alpha
        self._refresh()
        for cb in self.callbacks:
            _call(cb, "on_train_end", self)
        return stats.effective_words, stats.raw_words

    def _epoch_end(self, epochs: int):
        """The hook between epochs: the model's weights brought up to date (only when a
        callback will look at them), gensim's callbacks, and the stop flag."""
        first = self.state.epochs_trained

        def hook(epoch: int, stats: TrainStats, weights: dict | None) -> bool:
            self.running_training_loss = stats.loss
            if not self.callbacks or weights is None:
                return False
            for name in ("syn0", "syn1neg", "syn1"):
                target = getattr(self.state, name)
                if weights[name] is not target and target.size:
                    target[...] = weights[name]
            self._refresh()
            for cb in self.callbacks:             # their return value means nothing, as
                _call(cb, "on_epoch_end", self)    # in gensim
            stop = bool(self.stop_training)
            if not stop and epoch + 1 < first + epochs:
                for cb in self.callbacks:
                    _call(cb, "on_epoch_begin", self)
            return stop

        hook.needs_barrier = bool(self.callbacks)   # the cluster: one job unless callbacks
        return hook

    def get_latest_training_loss(self) -> float:
        """The summed loss of the current (or last) train() call so far, as gensim's; per
        epoch figures are in `model.last_stats.epochs` (and `report.json`'s curve)."""
        return float(self.running_training_loss)

    def predict_output_word(self, context_words_list, topn=10):
        """The center word's distribution given context words (CBOW-style, through the
        negative-sampling weights), as gensim: [(word, probability)] or None."""
        if not self.negative:
            raise RuntimeError("We have currently only implemented predict_output_word for the "
                               "negative sampling scheme, so you need to have run word2vec "
                               "with negative > 0 for this to work.")
        self._need_state()
        index = self.state.vocab.index
        rows = [index[w] for w in context_words_list if w in index]
        if not rows:
            log.warning("All the input context words are out-of-vocabulary for the current "
                        "model.")
            return None
        h = self.state.syn0[rows].sum(axis=0)
        if self.cbow_mean:
            h /= len(rows)
        scores = self.state.syn1neg @ h
        p = np.exp(scores - scores.max())
        p /= p.sum()
        top = np.argsort(-p, kind="stable")[:topn]
        words = self.state.vocab.words
        return [(words[i], float(p[i])) for i in top]

    # ---- persistence ----------------------------------------------------------------------
    def save(self, fname: str, *args, **kwargs) -> None:
        """The whole model (vectors, output weights, vocabulary with counts, settings) in
        engine's native format: a folder at `fname`, written atomically."""
        self._need_state()
        self.state.config = self.config
        self.state.save(str(fname))

    @classmethod
    def load(cls, fname: str, mmap=None, **overrides) -> "Word2Vec":
        """A model saved by `save` (or a checkpoint's `model` folder); `overrides` are
        engine's own settings (workers=..., show_progress=..., nodes=...). mmap="r": the
        weights stay in their files, mapped read-only (as gensim's), until the model trains
        (training moves them into memory it writes)."""
        state = ModelState.load(str(fname), mmap=mmap)
        model = cls(**{**dataclasses.asdict(state.config), **overrides})
        model.state = state
        return model

    def __str__(self) -> str:
        words = len(self.state.vocab) if self.state is not None else 0
        return (f"Word2Vec<vocab={words}, vector_size={self.vector_size}, "
                f"alpha={self.alpha}>")


def grow(state: ModelState, new: Vocab, config: ModelConfig) -> ModelState:
    """gensim's online vocabulary update: words already known keep their rows and add the
    new counts; words not known are appended (most frequent first) with fresh random vectors
    and zero output rows."""
    old = state.vocab
    counts = old.counts.copy()
    added, added_counts = [], []
    for word, count in zip(new.words, new.counts.tolist()):
        i = old.index.get(word)
        if i is None:
            added.append(word)
            added_counts.append(count)
        else:
            counts[i] += count
    vocab = Vocab(old.words + added, np.concatenate([counts, np.asarray(added_counts,
                                                                          np.int64)]),
                  old.raw_words + new.raw_words, old.sentences + new.sentences)
    fresh = ModelState(dataclasses.replace(config, seed=config.seed + state.epochs_trained + 1),
                       Vocab(added or ["_"], added_counts or [1], 1))
    d = config.vector_size
    syn0 = np.concatenate([state.syn0, fresh.syn0[:len(added)]])
    syn1neg = (np.concatenate([state.syn1neg, np.zeros((len(added), d), np.float32)])
               if config.negative else None)
    # the Huffman tree is rebuilt for the new counts: its inner nodes change meaning
    syn1 = None if not config.hs else np.zeros((len(vocab), d), np.float32)
    if config.hs:
        log.info("vocabulary update: hierarchical-softmax weights restart (new Huffman tree)")
    return ModelState(config, vocab, syn0, syn1neg, syn1, state.epochs_trained,
                      state.words_trained)


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _call(cb, hook: str, model):
    fn = getattr(cb, hook, None)
    return fn(model) if callable(fn) else None
