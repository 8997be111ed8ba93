"""Triplet accuracy of document vectors: for lines `anchor<TAB>positive<TAB>negative`
(paragraphs as plain tokens), the share where the anchor's cosine similarity to the
positive beats (strictly) its similarity to the negative. Paragraphs are folded in as the
model sees documents: tokens -> dictionary ids -> TF-IDF -> (optionally) a transform."""
from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import scipy.sparse

from ..errors import FormatError, MissingFileError
from .blocks import bows_to_csr

BATCH = 1024


def read_triplets(path: str) -> Iterator[list[tuple[list[str], list[str], list[str]]]]:
    """Batches of (anchor, positive, negative) token lists; a line without exactly three
    tab-separated fields is an error naming the file and line."""
    batch = []
    try:
        fh = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise MissingFileError(f"{path}: triplets file not found") from None
    with fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 3:
                raise FormatError(f"{path}: line {lineno}: {len(parts)} tab-separated "
                                  f"field(s); expected anchor, positive, negative")
            batch.append(tuple(p.split() for p in parts))
            if len(batch) == BATCH:
                yield batch
                batch = []
    if batch:
        yield batch


def _unit_rows(v) -> np.ndarray | scipy.sparse.csr_matrix:
    """Rows scaled to unit length (zero rows stay zero)."""
    if scipy.sparse.issparse(v):
        norms = np.sqrt(np.asarray(v.multiply(v).sum(axis=1))).ravel()
        norms[norms == 0] = 1
        return scipy.sparse.diags(1 / norms) @ v
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    norms[norms == 0] = 1
    return v / norms


def _cosines(a, b) -> np.ndarray:
    if scipy.sparse.issparse(a):
        return np.asarray(a.multiply(b).sum(axis=1)).ravel()
    return np.einsum("ij,ij->i", a, b)


def triplet_accuracy(path: str, dictionary, tfidf, transform: Callable | None) -> dict:
    """{accuracy, triplets, ties} of the TF-IDF vectors (transform None) or of
    transform(TF-IDF CSR block) -> dense vectors."""
    hits = ties = total = 0
    for batch in read_triplets(path):
        n = len(batch)
        docs = [dictionary.doc2bow(p) for triple in zip(*batch) for p in triple]
        m = tfidf.weigh(bows_to_csr(docs, len(dictionary)))
        v = _unit_rows(m if transform is None else transform(m))
        anchor, pos, neg = v[:n], v[n:2 * n], v[2 * n:]
        sp, sn = _cosines(anchor, pos), _cosines(anchor, neg)
        hits += int(np.sum(sp > sn))
        ties += int(np.sum(sp == sn))
        total += n
    return {"accuracy": hits / total if total else 0.0, "triplets": total, "ties": ties}
