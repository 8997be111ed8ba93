"""The cluster's messages, defined once: each one an encode function for the side that
sends it and a decode function for the side that receives it, which checks everything
(types, ranges, shapes, ids inside the vocabulary) before anything is used. Only plain
values travel (msgpack: ints, floats, str, bytes, lists, dicts); arrays go as raw bytes with
their dtype and shape beside them. transport.py carries the messages; this module knows
nothing of the network.

word2vec's exchange, dispatcher -> node: the job spec (`open_job`), the sampling tables and
weights in row pieces (`put_array`), id-stream chunks and tasks (`exchange`), merged rows
(`push_rows`); node -> dispatcher: the finished tasks and the delta's row pieces (`pull`).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from ..local.hotrows import HOT_MAX
from ..local.kernel import PRODUCTS, WEIGHTS
from ..word2vec.schedule import KernelSettings, Task
from .merge import MERGES
from .rows import WIRE_DTYPES, Payload, Quantized, q_width

PIECE_BYTES = 8 << 20           # arrays are sent in pieces of at most this (each is copied
                                # a few times on its way: keep them small)
MAX_DIM = 100_000
# a job's silence limit as the dispatcher sends it: [cluster] timeout_seconds + round_seconds
# + 30 at their largest (config.py), so that no valid job is refused by its nodes
MAX_JOB_TIMEOUT = 86_400 + 600 + 30
MAX_ROUND_WORDS = 1 << 50       # [cluster] round_words at its largest
TABLE_DTYPES = {"keep": "<u4", "noise": "<u8", "codes": "|u1", "points": "<i4",
                "code_lens": "<i4"}
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,80}$")


# ---- scalars -------------------------------------------------------------------------------

def check_int(value, lo, hi, what):
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(f"{what}: expected an integer in [{lo}, {hi}], got {value!r}")
    return value


def check_num(value, lo, hi, what):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(f"{what}: expected a number in [{lo}, {hi}], got {value!r}")
    return float(value)


def is_name(value) -> bool:
    """A job id, member or client name: short, letters, digits and _.:-"""
    return isinstance(value, str) and bool(_ID.match(value))


def check_cold(value) -> int:
    """An exchange's kind: 0 hot rows, 1 every row (cold), 2 the last flush."""
    return check_int(value, 0, 2, "cold")


def check_band(value) -> int:
    """A cold exchange's band: how many of each matrix's most frequent rows it takes (0:
    every row)."""
    return check_int(value, 0, 1 << 62, "band")


def check_name(value, what: str) -> str:
    if not is_name(value):
        raise ValueError(f"{what}: expected a short name")
    return value


# ---- arrays --------------------------------------------------------------------------------

def pack_array(arr: np.ndarray) -> dict:
    arr = np.ascontiguousarray(arr)
    return {"dtype": arr.dtype.str, "shape": list(arr.shape), "data": arr.tobytes()}


def pack_product_compact(a: np.ndarray, b: np.ndarray, ids: np.ndarray) -> dict:
    """Rows `ids` of a * b (element-wise), in the smaller of two forms: {"rows": the
    array packed}, or {"sparse": a bit per entry, set where it is not 0 (numpy's packbits
    along each row), then the entries that are not 0, in row order}. LDA's statistics
    are mostly exact zeros (a term's topics that none of its documents keeps), so the
    sparse form is the usual one; one compiled pass forms it without the product array."""
    from .._lda import pack_product_rows
    ids = np.ascontiguousarray(ids, np.int32)
    n, k = len(ids), a.shape[1]
    width = (k + 7) // 8
    mask = np.zeros((n, width), np.uint8)
    values = np.empty(n * k, a.dtype)
    count = pack_product_rows(a, b, ids, mask, values)
    if n * width + count * a.itemsize < n * k * a.itemsize:
        return {"sparse": {"shape": [n, k], "mask": mask.tobytes(),
                           "values": pack_array(values[:count])}}
    return {"rows": pack_array(a[ids] * b[ids])}


def check_rows_compact(msg, dtype: str, n_rows: int, n_cols: int, what: str = "rows"
                       ) -> tuple[tuple, int]:
    """pack_product_compact's rows checked (n_rows x n_cols, every value finite) without
    forming the array: (what add_rows_compact adds, the bytes of data they came in)."""
    from .._lda import check_sparse_rows
    if isinstance(msg, dict) and "sparse" in msg:
        sparse = msg["sparse"]
        if not isinstance(sparse, dict) or set(sparse) != {"shape", "mask", "values"}:
            raise ValueError(f"{what}: expected sparse rows")
        width = (n_cols + 7) // 8
        mask = sparse["mask"]
        if sparse["shape"] != [n_rows, n_cols] or not isinstance(mask, bytes) or \
                len(mask) != n_rows * width:
            raise ValueError(f"{what}: expected {n_rows} x {n_cols} sparse rows")
        bits = np.frombuffer(mask, np.uint8).reshape(n_rows, width)
        values = unpack_array(sparse["values"], dtype, 1, None, f"{what} values")
        try:
            check_sparse_rows(bits, values, n_cols)
        except ValueError as exc:
            raise ValueError(f"{what}: {exc}") from None
        return ("sparse", bits, values), len(mask) + values.nbytes
    if not isinstance(msg, dict) or "rows" not in msg:
        raise ValueError(f"{what}: expected rows")
    arr = unpack_array(msg["rows"], dtype, 2, (n_rows, n_cols), what)
    if not np.isfinite(arr).all():
        raise ValueError(f"{what}: a value that is not finite")
    return ("rows", arr), arr.nbytes


def add_rows_compact(checked: tuple, targets: np.ndarray, out: np.ndarray,
                     transposed: bool = False) -> None:
    """Add check_rows_compact's rows into rows `targets` (distinct) of out, or with
    `transposed` into those columns of out (each row down its column)."""
    from .._lda import add_sparse_rows
    if checked[0] == "sparse":
        add_sparse_rows(checked[1], checked[2], np.ascontiguousarray(targets, np.int32), out,
                        transposed, True)       # check_rows_compact checked them
    elif transposed:
        out[:, targets] += checked[1].T
    else:
        out[targets] += checked[1]


def unpack_array(msg, dtype: str, ndim: int | None = None, shape=None,
                 what: str = "array") -> np.ndarray:
    """Check a packed array against what is expected (dtype, rank or shape, byte size)."""
    if not isinstance(msg, dict) or set(msg) != {"dtype", "shape", "data"}:
        raise ValueError(f"{what}: expected a packed array")
    if msg["dtype"] != np.dtype(dtype).str:
        raise ValueError(f"{what}: expected dtype {np.dtype(dtype).str}, got {msg['dtype']!r}")
    got_shape = msg["shape"]
    if (not isinstance(got_shape, (list, tuple)) or
            not all(isinstance(n, int) and n >= 0 for n in got_shape)):
        raise ValueError(f"{what}: bad shape {got_shape!r}")
    if ndim is not None and len(got_shape) != ndim:
        raise ValueError(f"{what}: expected {ndim} dimensions, got {len(got_shape)}")
    if shape is not None and any(want is not None and want != n
                                 for want, n in zip(shape, got_shape)):
        raise ValueError(f"{what}: expected shape {shape}, got {got_shape}")
    data = msg["data"]
    itemsize = np.dtype(dtype).itemsize
    if not isinstance(data, bytes) or len(data) != math.prod(got_shape) * itemsize:
        raise ValueError(f"{what}: {len(data) if isinstance(data, bytes) else '?'} bytes do not "
                         f"match shape {got_shape}")
    return np.frombuffer(data, dtype=dtype).reshape(got_shape)


def row_pieces(n_rows: int, row_bytes: int, piece_bytes: int = PIECE_BYTES):
    """(start, end) row ranges of at most piece_bytes each."""
    step = max(1, piece_bytes // max(row_bytes, 1))
    return [(a, min(a + step, n_rows)) for a in range(0, n_rows, step)] or [(0, 0)]


# ---- kernel settings ---------------------------------------------------------------------

def encode_settings(s: KernelSettings, products: str) -> dict:
    return {"sg": s.sg, "hs": s.hs, "negative": s.negative, "window": s.window,
            "cbow_mean": s.cbow_mean, "compute_loss": s.compute_loss,
            "shrink_windows": s.shrink_windows, "batched": s.batched,
            "two_pass": s.two_pass, "blas": s.blas, "products": products,
            "cbow_batch": s.cbow_batch}


def decode_settings(s) -> tuple[KernelSettings, str]:
    """(settings, products): blas 1 asks for BLAS products, which the receiving node then
    settles for itself (products "auto": where they measure faster there)."""
    if not isinstance(s, dict):
        raise ValueError("settings: expected a dict")
    settings = KernelSettings(check_int(s["sg"], 0, 1, "sg"), check_int(s["hs"], 0, 1, "hs"),
                              check_int(s["negative"], 0, 1000, "negative"),
                              check_int(s["window"], 1, 1000, "window"),
                              check_int(s["cbow_mean"], 0, 1, "cbow_mean"),
                              check_int(s.get("compute_loss", 0), 0, 1, "compute_loss"),
                              check_int(s.get("shrink_windows", 1), 0, 1, "shrink_windows"),
                              batched=check_int(s.get("batched", 0), 0, 1, "batched"),
                              cbow_batch=check_int(s.get("cbow_batch", 4), 1, 16, "cbow_batch"),
                              two_pass=check_int(s.get("two_pass", 0), 0, 1, "two_pass"),
                              blas=check_int(s.get("blas", 0), 0, 1, "blas"))
    if settings.blas and not (settings.batched and settings.sg):
        raise ValueError("settings.blas: expected 0 unless batched skip-gram")
    products = s.get("products", "auto")
    if products not in PRODUCTS:
        raise ValueError("settings.products: expected auto, blas or loops")
    return settings, products


# ---- the job spec (open_job) -------------------------------------------------------------

@dataclass(frozen=True)
class JobSpec:
    """What a node needs to open a word2vec job, checked."""
    job: str
    member: str                     # this node's name in the job (its shard client id)
    dim: int
    vocab: int
    settings: KernelSettings        # as sent: blas 1 still to be settled on the node
    products: str
    max_chunk_ids: int
    timeout_seconds: float
    peer_timeout: float
    workers: int                    # processes asked for (0: the worker's own count)
    hot_rows: int                   # rows of each matrix exchanged every round
    local_hot: dict | None          # the job's hot-row settings for the node's processes
    shapes: dict                    # array name -> (shape, dtype): weights and tables
    delta_threshold: float = 0.0    # rows changed by less (relative to their norm) wait
    delta_dtype: str = "<f4"        # rows on the wire: "<f4", "<f2", "|i1" (int8), "|u1" (4 bits)
    merge: str = "sum"              # how the shards' owners merge (MergeRule)
    tiers: int = 0                  # hot rows in tiers (see NodeJob.hot_now)
    merge_rate: float = 0.1
    per_round: np.ndarray | None = None     # updates of each word per round (for "damped")
    pause_words: int = 0            # words trained since the last exchange that pause it


def encode_job_spec(spec: JobSpec) -> dict:
    out = {"job": spec.job, "member": spec.member, "dim": spec.dim, "vocab": spec.vocab,
           "settings": encode_settings(spec.settings, spec.products),
           "max_chunk_ids": spec.max_chunk_ids, "timeout_seconds": spec.timeout_seconds,
           "peer_timeout": spec.peer_timeout, "workers": spec.workers,
           "hot_rows": spec.hot_rows, "tiers": spec.tiers,
           "delta_threshold": spec.delta_threshold,
           "delta_dtype": spec.delta_dtype, "merge": spec.merge, "merge_rate": spec.merge_rate,
           "pause_words": spec.pause_words,
           "weights": {k: int(spec.shapes[k][0][0]) for k in WEIGHTS},
           "tables": {k: list(spec.shapes[k][0]) for k in TABLE_DTYPES}}
    if spec.per_round is not None:
        out["per_round"] = pack_array(np.asarray(spec.per_round, "<f4"))
    if spec.local_hot is not None:
        local = {k: v for k, v in spec.local_hot.items() if k != "shares"}
        if "shares" in spec.local_hot:
            local["shares"] = pack_array(np.asarray(spec.local_hot["shares"], "<f4"))
        out["local_hot"] = local
    return out


def decode_job_spec(spec) -> JobSpec:
    if not isinstance(spec, dict):
        raise ValueError("open_job: expected a dict")
    job = check_name(spec.get("job"), "job")
    dim = check_int(spec["dim"], 1, MAX_DIM, "dim")
    shapes = {}
    for name in WEIGHTS:
        rows = check_int(spec["weights"][name], 0, (1 << 31) - 1, f"weights {name}")
        shapes[name] = ((rows, dim), "<f4")
    for name, dtype in TABLE_DTYPES.items():
        shape = spec["tables"][name]
        if not isinstance(shape, (list, tuple)) or not 1 <= len(shape) <= 2:
            raise ValueError(f"tables {name}: bad shape {shape!r}")
        shapes[name] = (tuple(check_int(n, 1, 1 << 34, f"tables {name}") for n in shape),
                        dtype)
    settings, products = decode_settings(spec["settings"])
    local_hot = spec.get("local_hot")
    if local_hot is not None and not isinstance(local_hot, dict):
        raise ValueError("local_hot: expected a dict")
    return JobSpec(
        job=job, member=check_name(spec.get("member") or "node", "member"), dim=dim,
        vocab=check_int(spec["vocab"], 1, (1 << 31) - 1, "vocab"), settings=settings,
        products=products,
        max_chunk_ids=check_int(spec["max_chunk_ids"], 1, 1 << 28, "max_chunk_ids"),
        timeout_seconds=check_num(spec["timeout_seconds"], 0.5, MAX_JOB_TIMEOUT,
                                  "timeout_seconds"),
        peer_timeout=check_num(spec.get("peer_timeout", 30.0), 0.5, 86400, "peer_timeout"),
        workers=check_int(spec.get("workers") or 0, 0, 4096, "workers"),
        hot_rows=check_int(spec.get("hot_rows", 0), 0, (1 << 31) - 1, "hot_rows"),
        tiers=check_int(spec.get("tiers", 0), 0, 8, "tiers"),
        local_hot=local_hot, shapes=shapes,
        delta_threshold=check_num(spec.get("delta_threshold", 0.0), 0.0, 10.0,
                                  "delta_threshold"),
        delta_dtype=_delta_dtype(spec.get("delta_dtype", "<f4")),
        merge=_merge(spec.get("merge", "sum")),
        merge_rate=check_num(spec.get("merge_rate", 0.1), 0.0, 1000.0, "merge_rate"),
        per_round=_per_round(spec.get("per_round"), spec["vocab"]),
        pause_words=check_int(spec.get("pause_words", 0), 0, 1 << 52, "pause_words"))


def _merge(value) -> str:
    if value not in MERGES:
        raise ValueError(f"merge: expected one of {', '.join(MERGES)}")
    return value


def _per_round(value, vocab) -> np.ndarray | None:
    """Each word's updates per round: one finite number >= 0 per word, or none."""
    if value is None:
        return None
    per_round = unpack_array(value, "<f4", 1, (vocab,), "per_round")
    if per_round.size and not (np.isfinite(per_round).all() and per_round.min() >= 0):
        raise ValueError("per_round: expected finite numbers >= 0")
    return per_round


DELTA_DTYPES = tuple(WIRE_DTYPES.values())


def _delta_dtype(value) -> str:
    if value not in DELTA_DTYPES:
        raise ValueError(f"delta_dtype: expected one of {', '.join(DELTA_DTYPES)}")
    return value


def decode_local_hot(spec, vocab: int) -> tuple[dict, int] | None:
    """The job's hot-row settings for a node's own processes (as choose_hot_rows takes
    them) and the words of an epoch per node, checked; None when the job sent none."""
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise ValueError("local_hot: expected a dict")
    checked = {"sync_words": check_int(spec.get("sync_words", 0), 0, 1 << 30,
                                       "local_hot sync_words"),
               "tiers": check_int(spec.get("tiers", -1), -1, 8, "local_hot tiers")}
    epoch_words = check_int(spec.get("epoch_words", 0), 0, 1 << 50, "local_hot epoch_words")
    if "shares" in spec:
        shares = unpack_array(spec["shares"], "<f4", 1, what="local_hot shares")
        if shares.shape[0] > min(vocab, HOT_MAX) or not np.isfinite(shares).all() or \
                (shares.size and (shares.min() < 0 or shares.max() > 1.0001 or
                                  (np.diff(shares) < 0).any())):
            raise ValueError("local_hot shares: expected at most one cumulative share in "
                             "[0, 1] per word, nondecreasing")
        checked["shares"] = shares
    else:
        checked["words"] = check_int(spec.get("words", 0), 0, (1 << 31) - 1, "local_hot words")
    return checked, epoch_words


def hot_range(name: str, rows: int, hot: int) -> tuple[int, int]:
    """The rows of a matrix exchanged every round (both sides agree on them): the most
    frequent words (the vocabulary is sorted by count) of syn0/syn1neg, the top of the
    Huffman tree (its last rows) of syn1."""
    hot = min(hot, rows)
    return (rows - hot, rows) if name == "syn1" else (0, hot)


# ---- chunks and tasks (exchange) --------------------------------------------------------

VARINT_MAX = 4                          # bytes of one id: 7 bits each, ids below 2**28 - 1


def varint_ids(ids: np.ndarray) -> np.ndarray:
    """A chunk's word ids (>= -1; -1 ends a sentence) as bytes: id + 1 in base 128, low
    digits first, the high bit set on every byte but a value's last. Ids are ranked by
    frequency, so most take one or two bytes instead of four."""
    from .._kernels import varint_encode
    ids = np.ascontiguousarray(ids, np.int32)
    if ids.size and (int(ids.min()) < -1 or int(ids.max()) >= (1 << 7 * VARINT_MAX) - 1):
        raise ValueError(f"ids outside [-1, {(1 << 7 * VARINT_MAX) - 1})")
    out = np.empty(VARINT_MAX * ids.shape[0], np.uint8)
    return out[:varint_encode(ids, out)]


def unvarint_ids(data: np.ndarray, max_ids: int, what: str) -> np.ndarray:
    """varint_ids's inverse (int32 ids, at most max_ids); a malformed sequence is a
    ValueError."""
    from .._kernels import varint_decode
    out = np.empty(max_ids, np.int32)
    n = varint_decode(np.ascontiguousarray(data, np.uint8), out, VARINT_MAX)
    if n < 0:
        raise ValueError(f"{what}: ids are not {max_ids} or fewer complete varints of at "
                         f"most {VARINT_MAX} bytes")
    return out[:n]


def pack_documents(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray) -> dict:
    """Documents as CSR (term numbers, counts), compactly: where each document's term
    numbers increase, the first and then each gap less one as varints ("gaps"); where
    every count is a whole number >= 1, each less one as varints ("counts"); otherwise
    the array itself ("indices", "data"). Bag-of-words documents take about two bytes a
    term instead of eight."""
    indptr = np.ascontiguousarray(indptr, np.int64)
    indices = np.ascontiguousarray(indices, np.int32)
    msg = {"indptr": pack_array(indptr)}
    gaps = indices.astype(np.int64)
    gaps[1:] -= indices[:-1].astype(np.int64) + 1
    starts = indptr[:-1][np.diff(indptr) > 0]
    gaps[starts] = indices[starts]
    if _varint_range(gaps, 0):
        msg["gaps"] = pack_array(varint_ids(gaps.astype(np.int32) - 1))
    else:
        msg["indices"] = pack_array(indices.astype("<i4"))
    whole = np.rint(data)
    if np.array_equal(whole, data) and _varint_range(whole, 1):
        msg["counts"] = pack_array(varint_ids(whole.astype(np.int32) - 1))
    else:
        msg["data"] = pack_array(data)
    return msg


def _varint_range(values: np.ndarray, low: int) -> bool:
    """Whether every value is a whole number varint_ids takes, less one (low..2**28-1)."""
    return len(values) == 0 or (values.min() >= low and
                                values.max() < (1 << 7 * VARINT_MAX) - 1)


def _unpack_varints(packed, n: int, what: str) -> np.ndarray:
    """Exactly n values sent as varint_ids of each less one (int64)."""
    data = unpack_array(packed, "|u1", 1, what=what)
    # a varint takes at least a byte: n, read from elsewhere, is held to the bytes sent
    # before anything of that size is allocated
    if len(data) < n:
        raise ValueError(f"{what}: {len(data)} bytes for {n} values")
    got = unvarint_ids(data, n, what)
    if len(got) != n:
        raise ValueError(f"{what}: {len(got)} values, expected {n}")
    return got.astype(np.int64) + 1


def unpack_documents(msg, n_terms: int, dtype, what: str = "documents"
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """pack_documents' CSR (indptr, indices, data), checked: indptr from 0, never
    decreasing; every term number below n_terms; every count finite and >= 0."""
    if not isinstance(msg, dict) or "indptr" not in msg or \
            len(set(msg) & {"gaps", "indices"}) != 1 or len(set(msg) & {"counts", "data"}) != 1 \
            or len(msg) != 3:
        raise ValueError(f"{what}: expected indptr, gaps or indices, counts or data")
    ptr = unpack_array(msg["indptr"], "<i8", 1, what=f"{what} indptr")
    if len(ptr) < 2 or ptr[0] != 0 or np.any(np.diff(ptr) < 0):
        raise ValueError(f"{what}: expected a non-decreasing row index starting at 0")
    nnz = int(ptr[-1])
    if "gaps" in msg:
        gaps = _unpack_varints(msg["gaps"], nnz, f"{what} gaps")
        lengths = np.diff(ptr)
        starts = ptr[:-1][lengths > 0]
        step = gaps + 1
        step[starts] = 0
        run = np.cumsum(step)
        base = gaps[starts] - run[starts]
        indices = run + np.repeat(base, lengths[lengths > 0])
    else:
        indices = unpack_array(msg["indices"], "<i4", 1, (nnz,), f"{what} indices")
    if nnz and (int(indices.min()) < 0 or int(indices.max()) >= n_terms):
        raise ValueError(f"{what}: expected term numbers 0..{n_terms - 1}")
    if "counts" in msg:
        values = _unpack_varints(msg["counts"], nnz, f"{what} counts").astype(dtype)
    else:
        values = unpack_array(msg["data"], np.dtype(dtype).str, 1, (nnz,), f"{what} data")
        if not np.all(np.isfinite(values)) or (nnz and values.min() < 0):
            raise ValueError(f"{what}: expected finite counts >= 0")
    return ptr, indices.astype(np.int32), values


def encode_chunk(chunk: int, ids: np.ndarray) -> dict:
    return {"chunk": int(chunk), "ids": pack_array(varint_ids(ids))}


def decode_chunk(item, max_ids: int, vocab: int) -> tuple[int, np.ndarray]:
    if not isinstance(item, dict) or set(item) != {"chunk", "ids"}:
        raise ValueError("chunks: expected {chunk, ids} items")
    k = check_int(item["chunk"], 0, 1 << 40, "chunk")
    data = unpack_array(item["ids"], "|u1", 1, what=f"chunk {k}")
    ids = unvarint_ids(data, max_ids, f"chunk {k}")
    if ids.shape[0] == 0:
        raise ValueError(f"chunk {k}: no ids (1..{max_ids} expected)")
    if ids.min() < -1 or ids.max() >= vocab:
        raise ValueError(f"chunk {k}: ids outside [-1, {vocab})")
    return k, ids


def encode_task(t: Task, alpha_scale: float = 1.0) -> list:
    """A task for a node; its learning rates times `alpha_scale` (the "scaled" merge)."""
    return [t.task_id, t.chunk, t.raw_words, t.seed, t.alpha0 * alpha_scale,
            t.alpha1 * alpha_scale]


def decode_task(t, chunk_at: dict) -> Task:
    """A task of a chunk this node holds (`chunk_at`: chunk -> (offset, ids) in its id
    file): its ids are that span of the file."""
    if not isinstance(t, list) or len(t) != 6:
        raise ValueError("tasks: expected [id, chunk, raw, seed, alpha0, alpha1]")
    tid = check_int(t[0], 0, 1 << 62, "task id")
    k = check_int(t[1], 0, 1 << 40, "task chunk")
    if k not in chunk_at:
        raise ValueError(f"task {tid}: chunk {k} was never sent to this node")
    off, n = chunk_at[k]
    return Task(tid, off, off + n, check_int(t[2], 0, 1 << 40, "raw words"),
                check_int(t[3], 0, (1 << 64) - 1, "seed"),
                check_num(t[4], 0.0, 10.0, "alpha0"), check_num(t[5], 0.0, 10.0, "alpha1"), k)


def encode_done(task_id: int, effective: int, loss: float, examples: int) -> list:
    return [int(task_id), int(effective), float(loss), int(examples)]


def decode_done(done, held) -> list[tuple[int, tuple[int, float, int]]]:
    """[(task id, (effective words, loss, examples))], every item a task in `held`."""
    if not isinstance(done, list):
        raise ValueError("exchange: malformed reply")
    out = []
    for item in done:
        if (not isinstance(item, list) or len(item) != 4 or
                not all(isinstance(x, int) for x in item[:2] + item[3:]) or
                not isinstance(item[2], float) or item[0] not in held):
            raise ValueError(f"exchange: done item {item!r} is not a task this node held")
        out.append((item[0], (item[1], item[2], item[3])))
    return out


# ---- rows (push_rows, pull, shard_put, shard_pull) ---------------------------------------

def encode_scales(scale: np.ndarray) -> dict:
    """Row scales: as bfloat16 (their top two bytes) when that is exact, as the kernels
    round them, else float32."""
    scale = np.ascontiguousarray(scale, np.float32)
    bits = scale.view(np.uint32)
    if bits.size and (bits & 0xFFFF).any():
        return pack_array(scale)
    return pack_array((bits >> 16).astype("<u2"))


def decode_scales(msg, n: int, what: str) -> np.ndarray:
    if isinstance(msg, dict) and msg.get("dtype") == "<u2":
        top = unpack_array(msg, "<u2", 1, (n,), what)
        return (top.astype(np.uint32) << 16).view(np.float32)
    return unpack_array(msg, "<f4", 1, (n,), what)


def encode_values(payload: Payload) -> dict:
    """float32/float16 values as one packed array, quantized ones as {q, scale}."""
    if isinstance(payload, Quantized):
        return {"q": pack_array(payload.q), "scale": encode_scales(payload.scale)}
    return pack_array(payload)


def decode_values(values, n: int, dim: int, what: str) -> Payload:
    """n rows of values (float32, float16, or int8 or four-bit values with scales),
    checked: shapes, dtypes, and every value finite (one node's NaN would spread to every
    node)."""
    if isinstance(values, dict) and set(values) == {"q", "scale"}:
        packed = isinstance(values["q"], dict) and values["q"].get("dtype") == "|u1"
        dtype = "|u1" if packed else "|i1"
        q = unpack_array(values["q"], dtype, 2, (n, q_width(dim, dtype)), what)
        scale = decode_scales(values["scale"], n, f"{what} scales")
        if scale.size and not (np.isfinite(scale).all() and scale.min() >= 0):
            raise ValueError(f"{what}: scales must be finite and >= 0")
        return Quantized(q, scale)
    dtype = values.get("dtype") if isinstance(values, dict) else None
    vals = unpack_array(values, dtype if dtype in ("<f4", "<f2") else "<f4", 2, (n, dim), what)
    if vals.size and not np.isfinite(vals).all():
        raise ValueError(f"{what}: values must be finite")
    return vals.astype(np.float32, copy=False)


def encode_row_ids(rows: np.ndarray):
    """Row indices for the wire: rows in increasing order (as every exchange makes them)
    as their gaps in varints ({"gaps": bytes}: a run of adjacent rows, the hot rows, takes
    one byte a row instead of four), any others as a packed int32 array."""
    rows = np.ascontiguousarray(rows, np.int32)
    if rows.size == 0 or int(rows[0]) < 0:
        return pack_array(rows)
    gaps = np.diff(rows, prepend=np.int32(-1))
    if int(gaps.min()) < 1 or int(gaps.max()) >= (1 << 7 * VARINT_MAX) - 1:
        return pack_array(rows)
    return {"gaps": pack_array(varint_ids(gaps - 2))}     # a varint holds gap - 1 >= 0


def decode_row_ids(rows, n_rows: int, what: str) -> np.ndarray:
    """encode_row_ids's inverse: int32 rows, each inside [0, n_rows)."""
    if isinstance(rows, dict) and set(rows) == {"gaps"}:
        data = unpack_array(rows["gaps"], "|u1", 1, what=f"{what} rows")
        most = max(1, min(n_rows, data.shape[0]))    # a row takes a byte at least
        gaps = unvarint_ids(data, most, f"{what} rows").astype(np.int64) + 2
        idx = np.cumsum(gaps) - 1                # increasing: every gap is at least 1
        if idx.size and idx[-1] >= n_rows:
            raise ValueError(f"{what}: a row outside [0, {n_rows})")
        return idx.astype(np.int32)
    idx = unpack_array(rows, "<i4", 1, what=f"{what} rows")
    if idx.size and (idx.min() < 0 or idx.max() >= n_rows):
        raise ValueError(f"{what}: a row outside [0, {n_rows})")
    return idx


def encode_rows(rows: np.ndarray, payload: Payload) -> tuple[dict, dict]:
    return encode_row_ids(rows), encode_values(payload)


def decode_rows(rows, values, n_rows: int, dim: int,
                what: str) -> tuple[np.ndarray, Payload]:
    """Row indices inside [0, n_rows) and their values (len(rows) x dim)."""
    idx = decode_row_ids(rows, n_rows, what)
    return idx, decode_values(values, idx.shape[0], dim, what)


def decode_costs(reply) -> tuple[list[int], list[float]]:
    """A node's costs from its exchange reply: bytes through its sockets [sent, received]
    and CPU seconds [exchange, training, dispatch], cumulative since its job opened."""
    wire, cpu = reply.get("wire"), reply.get("cpu")
    if not (isinstance(wire, list) and len(wire) == 2 and
            all(isinstance(x, int) and x >= 0 for x in wire)):
        raise ValueError("exchange: wire expected [sent, received] byte counts")
    if not (isinstance(cpu, list) and len(cpu) == 3 and
            all(isinstance(x, (int, float)) and x >= 0 for x in cpu)):
        raise ValueError("exchange: cpu expected [exchange, training, dispatch] seconds")
    return [int(x) for x in wire], [float(x) for x in cpu]


def encode_piece(matrix: str, rows: np.ndarray, payload: Payload, delta: bool = False) -> dict:
    """Rows of a matrix; `delta`: from a merge point, a delta from the client's snapshot
    (else values)."""
    r, v = encode_rows(rows, payload)
    out = {"matrix": matrix, "rows": r, "values": v}
    if delta:
        out["delta"] = True
    return out


def piece_is_delta(p) -> bool:
    return isinstance(p, dict) and p.get("delta") is True


def decode_piece(p, shapes: dict) -> tuple[str, np.ndarray, Payload]:
    """One piece of rows of a matrix: (matrix, rows, values), checked against `shapes`
    ({name: (rows, dim)}); whether they are a delta: piece_is_delta."""
    if not isinstance(p, dict) or not {"matrix", "rows", "values"} <= set(p) <= \
            {"matrix", "rows", "values", "delta"} or p.get("delta", True) is not True:
        raise ValueError("rows: expected {matrix, rows, values[, delta: true]}")
    name = p["matrix"]
    if name not in WEIGHTS:
        raise ValueError(f"rows: unknown matrix {name!r}")
    n_rows, dim = shapes[name]
    rows, vals = decode_rows(p["rows"], p["values"], n_rows, dim, f"rows of {name}")
    return name, rows, vals
