"""The id stream: the corpus encoded once as int32 word ids, -1 ending each sentence,
cut into chunks (work units) that end on sentence ends.

Training reads chunks with pread into a small buffer, never maps the whole file, so a
process's memory does not grow with the corpus. Each chunk records its raw corpus words
(out-of-vocabulary words included), which drive the learning-rate schedule and words/s.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from ..text.corpus import MAX_SENTENCE_WORDS

OOV = -2            # marker from the encoders: a word not in the vocabulary
EOS = -1            # sentence end
IDS_FILE = "ids.i32"
CHUNKS_FILE = "chunks.npy"
META_FILE = "idstream.json"


class IdStreamWriter:
    """Append encoded blocks (ids, OOV and EOS markers); cut sentences longer than
    MAX_SENTENCE_WORDS raw words; drop OOV; record chunks of >= chunk_words ids."""

    def __init__(self, folder: str, chunk_words: int):
        os.makedirs(folder, exist_ok=True)
        self.folder = folder
        self.chunk_words = chunk_words
        self._fh = open(os.path.join(folder, IDS_FILE), "wb")
        self._written = 0          # ids written (incl. EOS)
        self._chunk_start = 0
        self._chunk_raw = 0        # raw words in closed sentences of the open chunk
        self._open_raw = 0         # raw words of the sentence still open
        self._chunks: list[tuple[int, int, int]] = []
        self.raw_words = 0
        self.sentences = 0
        self._last_eos = True
        self.min_id, self.max_id = 0, -1

    def add(self, arr: np.ndarray) -> None:
        """arr: int32 ids with OOV for unknown words and EOS where a line ended."""
        if arr.size == 0:
            return
        arr = self._cut_long(arr)
        is_end = arr == EOS
        ends = np.flatnonzero(is_end)
        # raw words (everything but EOS) before each end, within this block
        raw_before = np.cumsum(~is_end)
        kept_mask = arr != OOV
        kept = arr[kept_mask]
        kept_pos = np.cumsum(kept_mask) - 1          # index in `kept` of each element
        self._fh.write(kept.astype(np.int32, copy=False).tobytes())
        if kept.size:
            self.min_id = min(self.min_id, int(kept.min()))
            self.max_id = max(self.max_id, int(kept.max()))
        base = self._written
        prev_raw = 0
        for e in ends:
            raw = int(raw_before[e]) - prev_raw
            prev_raw = int(raw_before[e])
            self._chunk_raw += self._open_raw + raw
            self._open_raw = 0
            self.sentences += 1
            end_id = base + int(kept_pos[e]) + 1
            if end_id - self._chunk_start >= self.chunk_words:
                self._close_chunk(end_id)
        self._open_raw += int(raw_before[-1]) - prev_raw
        self.raw_words += int(raw_before[-1])
        self._written += kept.size
        if kept.size:
            self._last_eos = bool(kept[-1] == EOS)

    def _cut_long(self, arr: np.ndarray) -> np.ndarray:
        """Insert EOS so no sentence exceeds MAX_SENTENCE_WORDS raw words; the count of the
        sentence left open by earlier blocks carries over."""
        is_end = arr == EOS
        starts = np.flatnonzero(np.r_[True, is_end[:-1]])
        line_no = np.cumsum(is_end) - is_end
        first_offset = np.zeros(len(starts), dtype=np.int64)
        first_offset[0] = self._open_raw
        pos = np.arange(arr.size) - starts[line_no] + first_offset[line_no]
        cut = (~is_end) & (pos > 0) & (pos % MAX_SENTENCE_WORDS == 0)
        if cut.any():
            arr = np.insert(arr, np.flatnonzero(cut), EOS)
        return arr

    def _close_chunk(self, end_id: int) -> None:
        self._chunks.append((self._chunk_start, end_id, self._chunk_raw))
        self._chunk_start = end_id
        self._chunk_raw = 0

    def end_file(self) -> None:
        """A file ended: close its last sentence."""
        if self._open_raw or not self._last_eos:
            self.add(np.array([EOS], dtype=np.int32))

    def close(self) -> "IdStream":
        self.end_file()
        if self._written > self._chunk_start:
            self._close_chunk(self._written)
        self._fh.close()
        chunks = np.array(self._chunks, dtype=np.int64).reshape(-1, 3)
        np.save(os.path.join(self.folder, CHUNKS_FILE), chunks)
        with open(os.path.join(self.folder, META_FILE), "w") as fh:
            json.dump({"raw_words": self.raw_words, "ids": self._written,
                       "sentences": self.sentences, "min_id": self.min_id,
                       "max_id": self.max_id}, fh)
        return IdStream(self.folder)


@dataclass
class IdStream:
    """Read side: chunk table plus pread access to the ids file."""
    folder: str

    def __post_init__(self):
        self.path = os.path.join(self.folder, IDS_FILE)
        self.chunks = np.load(os.path.join(self.folder, CHUNKS_FILE))
        with open(os.path.join(self.folder, META_FILE)) as fh:
            meta = json.load(fh)
        self.raw_words = int(meta["raw_words"])
        self.n_ids = int(meta["ids"])
        self.sentences = int(meta["sentences"])
        if "max_id" in meta:
            self.min_id, self.max_id = int(meta["min_id"]), int(meta["max_id"])
        else:                                    # a stream written before ids were recorded
            self.min_id, self.max_id = self._scan_ids()

    def _scan_ids(self) -> tuple[int, int]:
        lo, hi = 0, -1
        with open(self.path, "rb") as fh:
            while True:
                block = np.frombuffer(fh.read(1 << 24), dtype=np.int32)
                if block.size == 0:
                    return lo, hi
                lo, hi = min(lo, int(block.min())), max(hi, int(block.max()))

    @property
    def max_chunk_ids(self) -> int:
        return int((self.chunks[:, 1] - self.chunks[:, 0]).max()) if len(self.chunks) else 0


class ChunkReader:
    """Reads chunks of an id stream into one reusable buffer (one per process). With
    `vocab`, every chunk's ids are checked to lie in [-1, vocab) before anyone sees them:
    the kernels index the weights with them unchecked, and the file can change under a
    running job (another job writing the same cache folder, a damaged disk)."""

    def __init__(self, path: str, max_ids: int, vocab: int | None = None):
        self._fd = os.open(path, os.O_RDONLY)
        self._buf = np.empty(max(max_ids, 1), dtype=np.int32)
        self.path, self.vocab = path, vocab

    def read(self, start: int, end: int) -> np.ndarray:
        n = end - start
        view = self._buf[:n]
        got = os.preadv(self._fd, [memoryview(view).cast("B")], start * 4)
        if got != n * 4:
            raise OSError(f"id stream truncated: wanted {n * 4} bytes at {start * 4}, got {got}")
        if self.vocab is not None and n and (view.min() < EOS or view.max() >= self.vocab):
            raise ValueError(f"{self.path}: ids {start}..{end} hold values outside "
                             f"[-1, {self.vocab}), the vocabulary this job trains; the id "
                             f"stream changed under the job (another job writing the same "
                             f"[engine] cache_dir?)")
        return view

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
