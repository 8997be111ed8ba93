"""ModelState: everything a model is (settings, vocabulary, weights, training so far) and
its native save format, a folder that loads back and trains on."""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from .atomic import atomic_dir, leftover_dirs
from .config import ModelConfig, make_section
from .errors import EngineError
from .schedule import KernelSettings
from .vectors import KeyedVectors
from .vocab import Vocab

FORMAT_VERSION = 1


class ModelState:
    def __init__(self, config: ModelConfig, vocab: Vocab, syn0=None, syn1neg=None, syn1=None,
                 epochs_trained: int = 0, words_trained: int = 0, where: str = "model"):
        self.config = config
        self.vocab = vocab
        v, d = len(vocab), config.vector_size
        if syn0 is None:
            rng = np.random.default_rng(config.seed)
            # uniform in [-1, 1) / vector_size, as gensim 4 (the C tool uses half that)
            syn0 = ((rng.random((v, d), dtype=np.float32) * 2 - 1) / d).astype(np.float32)
        self.syn0 = np.ascontiguousarray(syn0, dtype=np.float32)
        if syn1neg is None:
            syn1neg = np.zeros((v if config.negative else 0, d), dtype=np.float32)
        if syn1 is None:
            syn1 = np.zeros((max(v - 1, 1) if config.hs else 0, d), dtype=np.float32)
        self.syn1neg = np.ascontiguousarray(syn1neg, dtype=np.float32)
        self.syn1 = np.ascontiguousarray(syn1, dtype=np.float32)
        want = {"syn0": (v, d), "syn1neg": (v, d) if config.negative else None,
                "syn1": (max(v - 1, 1), d) if config.hs else None}
        for name, shape in want.items():
            got = getattr(self, name).shape
            if shape is not None and got != shape:
                raise EngineError(f"{where}: {name} has shape {got}, expected {shape} "
                                  f"({v} words, vector_size {d})")
        self.epochs_trained = epochs_trained
        self.words_trained = words_trained

    @property
    def kernel_settings(self) -> KernelSettings:
        c = self.config
        return KernelSettings(c.sg, c.hs, c.negative, c.window, c.cbow_mean)

    def kernel_arrays(self) -> dict:
        """Weights (updated in place by training) and the sampling tables."""
        c = self.config
        arrays = {"syn0": self.syn0, "syn1neg": self.syn1neg, "syn1": self.syn1,
                  "keep": self.vocab.keep_table(c.sample),
                  "noise": (self.vocab.noise_table(c.ns_exponent) if c.negative
                            else np.zeros(1, np.uint64))}
        if c.hs:
            arrays["codes"], arrays["points"], arrays["code_lens"] = self.vocab.huffman()
        else:
            arrays["codes"] = np.zeros((1, 1), np.uint8)
            arrays["points"] = np.zeros((1, 1), np.int32)
            arrays["code_lens"] = np.zeros(1, np.int32)
        return arrays

    def keyed_vectors(self) -> KeyedVectors:
        return KeyedVectors(self.vocab.words, self.syn0, self.vocab.counts)

    # ---- native format ------------------------------------------------------------------
    def save(self, folder: str) -> None:
        """Write the model folder atomically (config.json, vocab, weights as .npy)."""
        with atomic_dir(folder) as tmp:
            with open(os.path.join(tmp, "model.json"), "w") as fh:
                json.dump({"format": FORMAT_VERSION, "model": dataclasses.asdict(self.config),
                           "epochs_trained": self.epochs_trained,
                           "words_trained": self.words_trained}, fh, indent=2)
            self.vocab.save(tmp)
            for name in ("syn0", "syn1neg", "syn1"):
                np.save(os.path.join(tmp, f"{name}.npy"), getattr(self, name))

    @classmethod
    def load(cls, folder: str) -> "ModelState":
        path = os.path.join(folder, "model.json")
        try:
            with open(path) as fh:
                meta = json.load(fh)
        except FileNotFoundError:
            left = leftover_dirs(folder)
            hint = f"; a save interrupted by a crash left {left[-1]}" if left else ""
            raise EngineError(f"{folder}: not a saved model (no model.json){hint}") from None
        if meta.get("format") != FORMAT_VERSION:
            raise EngineError(f"{path}: unsupported model format {meta.get('format')!r}")
        config = make_section(ModelConfig, meta["model"], f"{path} [model]")
        arrays = {n: np.load(os.path.join(folder, f"{n}.npy")) for n in ("syn0", "syn1neg", "syn1")}
        return cls(config, Vocab.load(folder), epochs_trained=meta["epochs_trained"],
                   words_trained=meta["words_trained"], where=folder, **arrays)
