# cython: language_level=3
"""Text to tokens at C speed: a compact hash table of byte-string tokens (counts while
counting words, ids while encoding), fed straight from corpus bytes.

Tokens are split on the same ASCII whitespace as Python's str.split() (plus NUL); text with
Unicode whitespace takes the Python path in engine.word2vec.prepare, so both agree. Entries keep
first-seen order. About 30 bytes per distinct token, against ~100 in a Python dict, and no
Python object per token: counting memory grows little with the corpus.

Also bag-of-words documents ([(term id, weight)] lists, gensim's format) flattened into
one array without a Python object per pair (`flatten_bows`).
"""
import numpy as np

from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcmp, memcpy
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_AsDouble, PyFloat_CheckExact
from cpython.long cimport PyLong_AsDouble, PyLong_CheckExact
from cpython.ref cimport PyObject
from cpython.sequence cimport PySequence_Fast, PySequence_Fast_GET_SIZE
from cpython.tuple cimport PyTuple_CheckExact, PyTuple_GET_ITEM, PyTuple_GET_SIZE

cdef extern from "Python.h":
    PyObject *PySequence_Fast_GET_ITEM(object o, Py_ssize_t i)


cdef inline bint is_space(unsigned char c) noexcept nogil:
    return c == 32 or (9 <= c <= 13) or (28 <= c <= 31) or c == 0


cdef inline uint64_t fnv1a(const unsigned char *p, Py_ssize_t n) noexcept nogil:
    cdef uint64_t h = 14695981039346656037ULL
    cdef Py_ssize_t i
    for i in range(n):
        h = (h ^ p[i]) * 1099511628211ULL
    return h ^ (h >> 29)


cdef class TokenTable:
    """token bytes -> int64 value (a count, or an id), insertion-ordered."""
    cdef int32_t *slots          # entry + 1; 0 = empty
    cdef int64_t *offs
    cdef int32_t *lens
    cdef int64_t *values
    cdef char *arena
    cdef Py_ssize_t n, cap, nslots, arena_len, arena_cap

    def __cinit__(self):
        self.n = 0
        self.cap = 0
        self.nslots = 0
        self.arena_len = 0
        self.arena_cap = 0
        self.slots = NULL
        self.offs = NULL
        self.lens = NULL
        self.values = NULL
        self.arena = NULL
        self._grow_slots(1024)

    def __dealloc__(self):
        free(self.slots)
        free(self.offs)
        free(self.lens)
        free(self.values)
        free(self.arena)

    def __len__(self):
        return self.n

    cdef int _grow_slots(self, Py_ssize_t nslots) except -1:
        cdef int32_t *s = <int32_t *>malloc(nslots * sizeof(int32_t))
        cdef Py_ssize_t i, j, mask = nslots - 1
        if s == NULL:
            raise MemoryError()
        for i in range(nslots):
            s[i] = 0
        for i in range(self.n):
            j = fnv1a(<const unsigned char *>(self.arena + self.offs[i]), self.lens[i]) & mask
            while s[j]:
                j = (j + 1) & mask
            s[j] = <int32_t>(i + 1)
        free(self.slots)
        self.slots = s
        self.nslots = nslots
        return 0

    cdef int _reserve(self, Py_ssize_t extra_bytes) except -1:
        cdef Py_ssize_t cap
        cdef void *p
        if self.n == self.cap:
            cap = max(1024, self.cap + self.cap // 2)
            p = realloc(self.offs, cap * sizeof(int64_t))
            if p == NULL:
                raise MemoryError()
            self.offs = <int64_t *>p
            p = realloc(self.lens, cap * sizeof(int32_t))
            if p == NULL:
                raise MemoryError()
            self.lens = <int32_t *>p
            p = realloc(self.values, cap * sizeof(int64_t))
            if p == NULL:
                raise MemoryError()
            self.values = <int64_t *>p
            self.cap = cap
        if self.arena_len + extra_bytes > self.arena_cap:
            cap = max(self.arena_cap + self.arena_cap // 2, self.arena_len + extra_bytes, 1 << 16)
            p = realloc(self.arena, cap)
            if p == NULL:
                raise MemoryError()
            self.arena = <char *>p
            self.arena_cap = cap
        if 5 * (self.n + 1) > 3 * self.nslots:         # load factor <= 0.6
            self._grow_slots(self.nslots * 2)
        return 0

    cdef Py_ssize_t _find(self, const unsigned char *p, Py_ssize_t n, uint64_t h) noexcept nogil:
        """Entry index of the token, or -1-slot where it would go."""
        cdef Py_ssize_t mask = self.nslots - 1
        cdef Py_ssize_t j = h & mask
        cdef int32_t e
        while True:
            e = self.slots[j]
            if e == 0:
                return -1 - j
            e -= 1
            if self.lens[e] == n and memcmp(self.arena + self.offs[e], p, n) == 0:
                return e
            j = (j + 1) & mask

    cdef Py_ssize_t _add(self, const unsigned char *p, Py_ssize_t n, int64_t value) except -1:
        """Add `value` to the token's entry (created with `value` if new); returns it."""
        cdef uint64_t h = fnv1a(p, n)
        cdef Py_ssize_t e = self._find(p, n, h)
        if e >= 0:
            self.values[e] += value
            return e
        self._reserve(n)
        e = self._find(p, n, h)                     # slots may have been rebuilt
        self.slots[-1 - e] = <int32_t>(self.n + 1)
        e = self.n
        self.offs[e] = self.arena_len
        self.lens[e] = <int32_t>n
        self.values[e] = value
        memcpy(self.arena + self.arena_len, p, n)
        self.arena_len += n
        self.n += 1
        return e

    # ---- counting -------------------------------------------------------------------------
    def count_bytes(self, const unsigned char[::1] data):
        """Count every token of `data`; returns the number of tokens."""
        cdef Py_ssize_t i = 0, start, n = data.shape[0]
        cdef int64_t tokens = 0
        if n == 0:
            return 0
        while i < n:
            while i < n and is_space(data[i]):
                i += 1
            start = i
            while i < n and not is_space(data[i]):
                i += 1
            if i > start:
                self._add(&data[start], i - start, 1)
                tokens += 1
        return tokens

    def add(self, token: bytes, int64_t value=1):
        cdef const unsigned char[::1] b = token
        if len(token) == 0:
            return
        self._add(&b[0], b.shape[0], value)

    def get(self, token: bytes, int64_t default=-1):
        cdef const unsigned char[::1] b = token
        if len(token) == 0:
            return default
        cdef Py_ssize_t e = self._find(&b[0], b.shape[0], fnv1a(&b[0], b.shape[0]))
        return self.values[e] if e >= 0 else default

    # ---- encoding -------------------------------------------------------------------------
    def encode_bytes(self, const unsigned char[::1] data, bint lines, int32_t oov, int32_t eos):
        """ids (the values) of the tokens of `data`, `oov` for unknown ones, and `eos` for
        every newline when `lines`."""
        cdef Py_ssize_t i = 0, start, k = 0, n = data.shape[0]
        cdef Py_ssize_t e
        out = np.empty(n + 1, dtype=np.int32)
        cdef int32_t[::1] o = out
        if n == 0:
            return out[:0]
        with nogil:
            while i < n:
                while i < n and is_space(data[i]):
                    if lines and data[i] == 10:
                        o[k] = eos
                        k += 1
                    i += 1
                start = i
                while i < n and not is_space(data[i]):
                    i += 1
                if i > start:
                    e = self._find(&data[start], i - start, fnv1a(&data[start], i - start))
                    o[k] = <int32_t>self.values[e] if e >= 0 else oov
                    k += 1
        return out[:k].copy()

    # ---- whole-table operations ---------------------------------------------------------
    def export(self):
        """(arena bytes, offsets int64, lengths int32, values int64) in insertion order."""
        arena = (<char *>self.arena)[:self.arena_len] if self.arena_len else b""
        offs = np.empty(self.n, dtype=np.int64)
        lens = np.empty(self.n, dtype=np.int32)
        vals = np.empty(self.n, dtype=np.int64)
        cdef Py_ssize_t i
        cdef int64_t[::1] of = offs
        cdef int32_t[::1] le = lens
        cdef int64_t[::1] va = vals
        for i in range(self.n):
            of[i] = self.offs[i]
            le[i] = self.lens[i]
            va[i] = self.values[i]
        return arena, offs, lens, vals

    def merge(self, exported):
        """Add another table's export (values summed), keeping first-seen order."""
        arena, offs, lens, vals = exported
        cdef const unsigned char[::1] a = arena if len(arena) else b"\0"
        cdef const int64_t[::1] of = offs
        cdef const int32_t[::1] le = lens
        cdef const int64_t[::1] va = vals
        cdef Py_ssize_t i
        for i in range(of.shape[0]):
            self._add(&a[of[i]], le[i], va[i])

    def values_array(self):
        vals = np.empty(self.n, dtype=np.int64)
        cdef int64_t[::1] va = vals
        cdef Py_ssize_t i
        for i in range(self.n):
            va[i] = self.values[i]
        return vals

    def keys(self, indices=None):
        """Tokens (str, UTF-8) of the given entries (default: all), in that order."""
        cdef Py_ssize_t i
        if indices is None:
            indices = range(self.n)
        out = []
        for i in indices:
            if i < 0 or i >= self.n:
                raise IndexError(i)
            out.append((<char *>self.arena)[self.offs[i]:self.offs[i] + self.lens[i]]
                       .decode("utf-8", "surrogateescape"))
        return out

    def pruned(self, int64_t min_reduce):
        """A new table without the entries whose value is <= min_reduce."""
        cdef TokenTable t = TokenTable()
        cdef Py_ssize_t i
        for i in range(self.n):
            if self.values[i] > min_reduce:
                t._add(<const unsigned char *>(self.arena + self.offs[i]), self.lens[i],
                       self.values[i])
        return t

    @staticmethod
    def from_words(words):
        """Table of word -> its index in `words`."""
        cdef TokenTable t = TokenTable()
        cdef Py_ssize_t i, e
        cdef bytes b
        for i, w in enumerate(words):
            b = w.encode("utf-8", "surrogateescape")
            if len(b):
                e = t._add(<const unsigned char *>(<char *>b), len(b), 0)
                t.values[e] = i
        return t

    def nbytes(self):
        """Memory held, in bytes."""
        return (self.nslots * 4 + self.cap * (8 + 4 + 8) + self.arena_cap)


cdef inline double _number(object o) except? -1.0:
    if PyFloat_CheckExact(o):
        return PyFloat_AS_DOUBLE(o)
    if PyLong_CheckExact(o):
        return PyLong_AsDouble(o)
    return PyFloat_AsDouble(o)             # numpy scalars and other numbers (__float__)


def flatten_bows(docs, double[::1] out, Py_ssize_t first_doc=0):
    """The (term id, weight) pairs of a sequence of bag-of-words documents, in order, into
    out as id, weight, id, weight, ...; returns the number of pairs. A pair that is not
    two numbers, or more pairs than out holds, is a ValueError naming the document (its
    index in docs plus first_doc). Lists are read in place, so a size is checked again
    before every read (a number's __float__ could change them)."""
    cdef Py_ssize_t i = 0, j, k = 0, cap = out.shape[0] // 2
    cdef object seq, doc, pairs, pair, two, a, b
    seq = PySequence_Fast(docs, "documents must be a sequence")
    while i < PySequence_Fast_GET_SIZE(seq):
        doc = <object>PySequence_Fast_GET_ITEM(seq, i)
        try:
            pairs = PySequence_Fast(doc, "not a sequence of (term id, weight) pairs")
        except TypeError as e:
            raise ValueError(f"document {first_doc + i}: {e}") from None
        j = 0
        while j < PySequence_Fast_GET_SIZE(pairs):
            if k >= cap:
                raise ValueError(f"document {first_doc + i}: more pairs than the "
                                 f"documents' lengths said")
            pair = <object>PySequence_Fast_GET_ITEM(pairs, j)
            try:
                if PyTuple_CheckExact(pair) and PyTuple_GET_SIZE(pair) == 2:
                    a = <object>PyTuple_GET_ITEM(pair, 0)
                    b = <object>PyTuple_GET_ITEM(pair, 1)
                else:
                    two = PySequence_Fast(pair, "not a (term id, weight) pair")
                    if PySequence_Fast_GET_SIZE(two) != 2:
                        raise TypeError("not a (term id, weight) pair")
                    a = <object>PySequence_Fast_GET_ITEM(two, 0)
                    b = <object>PySequence_Fast_GET_ITEM(two, 1)
                out[2 * k] = _number(a)
                out[2 * k + 1] = _number(b)
            except (TypeError, OverflowError) as e:
                raise ValueError(f"document {first_doc + i}: pair {j} {pair!r}: {e}") from None
            k += 1
            j += 1
        i += 1
    return k
