"""Document blocks: sparse documents x terms matrices (scipy CSR), on disk and in memory.

A streamed job writes each block once into a BlockCache (a temporary folder; one file per
block) and every later pass, in any process, reads it back by path: nothing large is
pickled to a worker, and the page cache shares the bytes between processes. Consecutive
blocks are grouped into *chunks* of at most `chunksize` documents, the unit of the SVD's
products (memory is about one chunk per thread whatever the corpus size).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse

from ..errors import FileAccessError, InvalidArgumentError
from ..runtime.shm import sweep_temp_dirs

CACHE_PREFIX = "engine-lsi-"


def bows_to_csr(docs: Sequence, n_terms: int, dtype=np.float64, first_doc: int = 0
                ) -> scipy.sparse.csr_matrix:
    """Documents in gensim's bag-of-words format ([(term id, weight)]) -> CSR documents x
    n_terms, canonical (sorted ids, duplicates summed). An id outside 0..n_terms-1 is an
    error naming the document (its number counts from first_doc)."""
    lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
    indptr = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    nnz = int(indptr[-1])
    flat = np.empty(2 * nnz, dtype=np.float64)
    from .._text import flatten_bows
    try:
        pairs = flatten_bows(docs, flat, first_doc)
    except ValueError as e:
        raise InvalidArgumentError(f"{e}; expected (term id, weight) pairs") from None
    if pairs != nnz:
        raise InvalidArgumentError(f"documents {first_doc}..{first_doc + len(docs) - 1}: "
                                   f"{pairs} (term id, weight) pairs where their lengths "
                                   f"say {nnz}")
    ids = flat[0::2]
    bad = np.flatnonzero((ids < 0) | (ids >= n_terms) | (ids != np.floor(ids)))
    if len(bad):
        doc = int(np.searchsorted(indptr, bad[0], side="right")) - 1
        raise InvalidArgumentError(
            f"document {first_doc + doc}: term id {ids[bad[0]]:g} is not in 0..{n_terms - 1} "
            f"(num_terms = {n_terms}: the dictionary the model was built with)")
    m = scipy.sparse.csr_matrix((flat[1::2].astype(dtype), ids.astype(np.int32), indptr),
                                shape=(len(docs), n_terms))
    m.sum_duplicates()
    return m


def csr_to_bows(m: scipy.sparse.csr_matrix) -> list[list[tuple[int, float]]]:
    """CSR documents x terms -> [[(term id, weight)]] (one list per row)."""
    ids, vals = m.indices.tolist(), m.data.tolist()
    bounds = m.indptr.tolist()
    return [list(zip(ids[a:b], vals[a:b])) for a, b in zip(bounds, bounds[1:])]


def write_block(path: str, m: scipy.sparse.csr_matrix) -> None:
    """One block file: shape, indptr, indices, data (four .npy records in a row)."""
    with open(path, "wb") as fh:
        np.save(fh, np.array(m.shape, dtype=np.int64))
        np.save(fh, m.indptr.astype(np.int64, copy=False))
        np.save(fh, m.indices.astype(np.int32, copy=False))
        np.save(fh, m.data)


def read_block(path: str, n_terms: int | None = None) -> scipy.sparse.csr_matrix:
    """A block file as CSR; with n_terms, that many columns (blocks written while the
    number of terms was still growing are narrower)."""
    with open(path, "rb") as fh:
        shape = np.load(fh)
        indptr, indices, data = np.load(fh), np.load(fh), np.load(fh)
    rows, cols = shape.tolist()
    return scipy.sparse.csr_matrix((data, indices, indptr),
                                   shape=(rows, cols if n_terms is None else n_terms))


def row_runs(m: scipy.sparse.csr_matrix, max_rows: int | None = None,
             max_nnz: int | None = None):
    """(start, stop) runs of consecutive rows of m covering it in order: at most max_rows
    rows and max_nnz nonzeros each (a row with more is a run by itself)."""
    start, n = 0, m.shape[0]
    while start < n:
        stop = n if max_rows is None else min(start + max_rows, n)
        if max_nnz is not None:
            limit = int(np.searchsorted(m.indptr, m.indptr[start] + max_nnz, side="right")) - 1
            stop = max(start + 1, min(stop, limit))
        yield start, stop
        start = stop


@dataclass(frozen=True)
class BlockInfo:
    """A block written to the cache: where, and how big."""
    path: str
    n_docs: int
    nnz: int


@dataclass(frozen=True)
class Chunk:
    """Consecutive cached blocks taken together: documents first_doc.. of the corpus."""
    first_doc: int
    n_docs: int
    nnz: int
    paths: tuple[str, ...]

    def load(self, n_terms: int, dtype=None) -> scipy.sparse.csr_matrix:
        """The chunk as one CSR matrix of n_terms columns (blocks written while the number
        of terms was still growing are narrower)."""
        parts = [read_block(p, n_terms) for p in self.paths]
        m = parts[0] if len(parts) == 1 else scipy.sparse.vstack(parts, format="csr")
        return m if dtype is None or m.dtype == dtype else m.astype(dtype)


def group_chunks(blocks: Iterable[BlockInfo], chunksize: int,
                 max_nnz: int | None = None, first_doc: int = 0) -> list[Chunk]:
    """Consecutive blocks as chunks of at most chunksize documents (and max_nnz
    nonzeros); a block bigger than that is a chunk by itself. The first block's first
    document is number first_doc."""
    chunks: list[Chunk] = []
    paths: list[str] = []
    first, docs, nnz = first_doc, 0, 0
    for b in blocks:
        if paths and (docs + b.n_docs > chunksize or
                      (max_nnz is not None and nnz + b.nnz > max_nnz)):
            chunks.append(Chunk(first, docs, nnz, tuple(paths)))
            first, docs, nnz, paths = first + docs, 0, 0, []
        paths.append(b.path)
        docs += b.n_docs
        nnz += b.nnz
    if paths:
        chunks.append(Chunk(first, docs, nnz, tuple(paths)))
    return chunks


def split_even(chunks: Sequence, parts: int) -> list[list]:
    """Chunks cut into at most `parts` contiguous runs of about equal nonzeros (work)."""
    total = sum(c.nnz for c in chunks) or 1
    runs: list[list] = [[] for _ in range(max(1, min(parts, len(chunks))))]
    done = 0
    for c in chunks:
        runs[min(len(runs) - 1, int(done * len(runs) / total))].append(c)
        done += c.nnz
    return [r for r in runs if r]


class BlockCache:
    """A temporary folder of block files, removed on close (and, if its process was
    killed, by the next cache created: see shm.sweep_temp_dirs)."""

    def __init__(self, parent: str | None = None):
        sweep_temp_dirs(CACHE_PREFIX)
        self.folder = tempfile.mkdtemp(prefix=f"{CACHE_PREFIX}{os.getpid()}-", dir=parent)
        self.blocks: list[BlockInfo] = []

    def path(self, name: str) -> str:
        return os.path.join(self.folder, name)

    def next_path(self) -> str:
        """Where the next block goes."""
        return self.path(f"b{len(self.blocks):07d}.npy")

    def add(self, m: scipy.sparse.csr_matrix) -> BlockInfo:
        """Write a block (in order) and remember it."""
        info = BlockInfo(self.next_path(), m.shape[0], m.nnz)
        write_block(info.path, m)
        self.blocks.append(info)
        return info

    def add_matrix(self, m: scipy.sparse.spmatrix, block_docs: int,
                   block_nnz: int | None = None) -> None:
        """A whole documents x terms matrix, in blocks of at most block_docs rows (and
        about block_nnz nonzeros)."""
        m = scipy.sparse.csr_matrix(m)
        for start, stop in row_runs(m, block_docs, block_nnz):
            self.add(m[start:stop])

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def map_npz_member(fname: str, name: str, mode: str) -> np.memmap:
    """Member `name` of an uncompressed .npz file as a memory map of the file (np.load maps
    only .npy files)."""
    import zipfile

    with zipfile.ZipFile(fname) as zf:
        info = zf.getinfo(f"{name}.npy")
        if info.compress_type != zipfile.ZIP_STORED:
            raise FileAccessError(f"{fname}: {name} is compressed in the file; it cannot be "
                                  f"mapped (load it with mmap=None)")
    with open(fname, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)                    # the member's local header: its own lengths
        if local[:4] != b"PK\x03\x04":
            raise ValueError(f"{name}: a damaged zip member")
        skip = int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little")
        fh.seek(info.header_offset + 30 + skip)
        version = np.lib.format.read_magic(fh)
        read = {(1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read is None:
            raise ValueError(f"{name}: .npy format version {version}")
        shape, fortran, dtype = read(fh)
        offset = fh.tell()
    return np.memmap(fname, dtype=dtype, mode=mode, offset=offset, shape=shape,
                     order="F" if fortran else "C")
