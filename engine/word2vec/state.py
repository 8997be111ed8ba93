"""ModelState: everything a model is (settings, vocabulary, weights, training so far) and
its native save format, a folder that loads back and trains on."""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
from numpy.lib import format as npformat

from ..config import ModelConfig, make_section
from ..errors import EngineError
from ..runtime.atomic import atomic_dir, leftover_dirs
from ..runtime.integrity import check_file, file_record, read_manifest, seal
from ..runtime.shm import SharedArrays, check_memory
from ..vectors.keyedvectors import KeyedVectors
from .schedule import KernelSettings
from .vocab import Vocab

FORMAT_VERSION = 2                   # 2: model.json lists every file's size and checksum
WEIGHT_FILES = ("syn0", "syn1neg", "syn1")
_NPY_MIN_BYTES = 16                   # magic, version, header length, the shortest header
_CHECKED_FILES = ("vocab.tsv", "vocab.json") + tuple(f"{n}.npy" for n in WEIGHT_FILES)


INIT_ROWS = 8192                      # rows drawn at a time: no full-size temporaries


def init_vectors(out: np.ndarray, seed: int) -> None:
    """Fill `out` (words x dims, float32) in place with the initial word vectors: uniform in
    [-1, 1) / dims, as gensim 4 (the C tool uses half that), drawn in blocks of rows (the
    same numbers as one draw of the whole matrix)."""
    rng = np.random.default_rng(seed)
    for a in range(0, out.shape[0], INIT_ROWS):
        _init_block(rng, out[a:a + INIT_ROWS], out.shape[1])


def _init_block(rng, block: np.ndarray, d: int) -> None:
    rng.random(block.shape, dtype=np.float32, out=block)
    block *= 2
    block -= 1
    block /= d


def is_initial(arr: np.ndarray, seed: int) -> bool:
    """Whether `arr` holds exactly what init_vectors(seed) draws (compared a block of rows
    at a time: no second matrix)."""
    rng = np.random.default_rng(seed)
    block = np.empty((min(INIT_ROWS, arr.shape[0]), arr.shape[1]), np.float32)
    for a in range(0, arr.shape[0], INIT_ROWS):
        part = arr[a:a + INIT_ROWS]
        mine = block[:part.shape[0]]
        _init_block(rng, mine, arr.shape[1])
        if not np.array_equal(mine, part):
            return False
    return True


class ModelState:
    def __init__(self, config: ModelConfig, vocab: Vocab, syn0=None, syn1neg=None, syn1=None,
                 epochs_trained: int = 0, words_trained: int = 0, where: str = "model",
                 shared: bool = False):
        """`shared`: the weights live in shared memory from the start (see share())."""
        self.config = config
        self.vocab = vocab
        self.segments: SharedArrays | None = None   # the weights' segments, once shared
        v, d = len(vocab), config.vector_size
        shapes = {"syn0": (v, d), "syn1neg": (v if config.negative else 0, d),
                  "syn1": (v if config.hs else 0, d)}     # syn1: one row per word, as gensim
        if shared and syn0 is None and syn1neg is None and syn1 is None:   # made in place
            self.segments = SharedArrays.create_empty(      # (checks the room first)
                {n: (shape, np.float32) for n, shape in shapes.items()})
        elif syn0 is None:
            check_memory(4 * sum(a * b for a, b in shapes.values()), "the model's weights")

        def fresh(name):                         # a matrix not given: zeros, made here
            if self.segments is not None:
                return self.segments[name]
            return np.zeros(shapes[name], np.float32)

        if syn0 is None:
            syn0 = fresh("syn0")
            init_vectors(syn0, config.seed)
        if syn1neg is None:
            syn1neg = fresh("syn1neg")
        if syn1 is None:
            syn1 = fresh("syn1")
        elif config.hs and syn1.shape == (v - 1, d):         # saved before that
            syn1 = np.concatenate([syn1, np.zeros((1, d), syn1.dtype)])
        self.syn0 = np.ascontiguousarray(syn0, dtype=np.float32)
        self.syn1neg = np.ascontiguousarray(syn1neg, dtype=np.float32)
        self.syn1 = np.ascontiguousarray(syn1, dtype=np.float32)
        want = {"syn0": (v, d), "syn1neg": (v, d) if config.negative else None,
                "syn1": (v, d) if config.hs else None}
        for name, shape in want.items():
            got = getattr(self, name).shape
            if shape is not None and got != shape:
                raise EngineError(f"{where}: {name} has shape {got}, expected {shape} "
                                  f"({v} words, vector_size {d})")
        self.epochs_trained = epochs_trained
        self.words_trained = words_trained
        if shared:
            self.share()

    def make_writable(self) -> None:
        """Weights mapped read-only from files (load(mmap="r")) are read into memory, one
        matrix at a time, before anything writes them."""
        for name in WEIGHT_FILES:
            a = getattr(self, name)
            if not a.flags.writeable:
                setattr(self, name, np.array(a, dtype=np.float32))

    def share(self) -> dict:
        """Move the weights into shared memory, where processes train them in place, and
        keep them there: afterwards the model's arrays are those segments (no copy beside
        them). One matrix is copied at a time, its old memory freed as it is replaced
        (unless something else still holds it). Returns the segments' spec (what a
        training process attaches); a no-op once shared."""
        if self.segments is not None and all(
                getattr(self, n) is self.segments[n] for n in WEIGHT_FILES):
            return self.segments.spec
        current = {n: getattr(self, n) for n in WEIGHT_FILES}
        segments = SharedArrays.create_empty({n: (a.shape, np.float32)
                                              for n, a in current.items()})
        del current
        for name in WEIGHT_FILES:
            segments[name][...] = getattr(self, name)
            setattr(self, name, segments[name])  # the old array goes unless held elsewhere
        self.segments = segments
        return segments.spec

    @property
    def kernel_settings(self) -> KernelSettings:
        c = self.config
        return KernelSettings(c.sg, c.hs, c.negative, c.window, c.cbow_mean,
                              int(c.compute_loss), int(c.shrink_windows))

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

    def keyed_vectors(self, syn0=None) -> KeyedVectors:
        """The word vectors (of `syn0` if given: e.g. weights being trained)."""
        return KeyedVectors.from_arrays(self.vocab.words, self.syn0 if syn0 is None else syn0,
                                        self.vocab.counts)

    # ---- native format ------------------------------------------------------------------
    def save(self, folder: str) -> None:
        """Write the model folder atomically: model.json (settings, progress, and the size
        and SHA-256 of every other file, sealed: see engine.runtime.integrity), the vocabulary,
        the weights as .npy."""
        with atomic_dir(folder) as tmp:
            self.vocab.save(tmp)
            for name in WEIGHT_FILES:
                np.save(os.path.join(tmp, f"{name}.npy"), getattr(self, name))
            files = {f: file_record(os.path.join(tmp, f)) for f in _CHECKED_FILES}
            meta = seal({"format": FORMAT_VERSION, "model": dataclasses.asdict(self.config),
                         "epochs_trained": self.epochs_trained,
                         "words_trained": self.words_trained, "files": files})
            with open(os.path.join(tmp, "model.json"), "w") as fh:
                json.dump(meta, fh, indent=2)

    @classmethod
    def load(cls, folder: str, mmap: str | None = None) -> "ModelState":
        """The model saved in `folder`, whole: a missing, truncated or corrupted file is
        an EngineError naming it and what is wrong, never a partial model. (Models saved
        before checksums, format 1, are checked for shapes and sizes only.) `mmap` ("r",
        "r+", "c"): the weights are mapped from their files, not read into memory (numpy's
        mmap_mode; training such a model first moves them into memory it can write)."""
        if mmap not in (None, "r", "r+", "c"):
            raise ValueError(f"mmap: expected None, 'r', 'r+' or 'c', got {mmap!r}")
        path = os.path.join(folder, "model.json")
        try:
            meta, sealed = read_manifest(path)
        except FileNotFoundError:
            left = leftover_dirs(folder)
            hint = f"; a save interrupted by a crash left {left[-1]}" if left else ""
            raise EngineError(f"{folder}: not a saved model (no model.json){hint}") from None
        except OSError as exc:
            raise EngineError(f"{path}: cannot read ({exc.strerror or exc})") from None
        version = meta.get("format")
        if version not in (1, FORMAT_VERSION) or (version == FORMAT_VERSION) != sealed:
            raise EngineError(f"{path}: unsupported model format {version!r}"
                              + ("" if version in (1, FORMAT_VERSION) else
                                 " (written by a newer engine?)"))
        files = meta.get("files")
        if sealed and not isinstance(files, dict):
            raise EngineError(f"{path}: no file list: the file is damaged")
        config = make_section(ModelConfig, meta.get("model"), f"{path} [model]")
        progress = {}
        for key in ("epochs_trained", "words_trained"):
            value = meta.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise EngineError(f"{path}: {key} is {value!r}, expected a count")
            progress[key] = value
        # what is wrong in the plainest terms first (a file missing, cut short, of another
        # shape), then whether every byte is the one written
        arrays = {n: _load_weights(os.path.join(folder, f"{n}.npy"), mmap)
                  for n in WEIGHT_FILES}
        state = cls(config, Vocab.load(folder), where=folder, **progress, **arrays)
        if sealed:
            for name in _CHECKED_FILES:
                check_file(os.path.join(folder, name), files.get(name), path)
        return state


def _load_weights(path: str, mmap: str | None = None) -> np.ndarray:
    """A float32 matrix from a .npy file whose header and size agree (a truncated file or
    a damaged header is refused before anything is allocated); mapped with `mmap`."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < _NPY_MIN_BYTES:
                raise EngineError(f"{path}: truncated: {size:,} bytes, not even a .npy header")
            version = npformat.read_magic(fh)
            read_header = (npformat.read_array_header_1_0 if version == (1, 0)
                           else npformat.read_array_header_2_0)
            shape, fortran, dtype = read_header(fh)
            if dtype != np.float32 or len(shape) != 2 or fortran:
                raise EngineError(f"{path}: holds a {dtype} array of shape {shape}, expected "
                                  f"a float32 matrix")
            want = fh.tell() + shape[0] * shape[1] * 4
            if size != want:
                raise EngineError(f"{path}: {'truncated: ' if size < want else ''}{size:,} "
                                  f"bytes, expected {want:,} for a {shape} matrix")
            if mmap is not None:
                return np.load(path, mmap_mode=mmap, allow_pickle=False)
            fh.seek(0)
            return np.load(fh, allow_pickle=False)
    except FileNotFoundError:
        raise EngineError(f"{path}: missing (the model's weights)") from None
    except OSError as exc:
        raise EngineError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except EngineError:
        raise
    except Exception as exc:                 # numpy parsing a damaged header: any error
        raise EngineError(f"{path}: not a valid .npy matrix ({type(exc).__name__}: "
                          f"{str(exc)[:80]})") from None
