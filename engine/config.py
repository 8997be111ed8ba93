"""Job configuration: frozen dataclasses read from TOML, every field checked.

Unknown keys, wrong types, out-of-range and contradictory values are one-line ConfigErrors
naming the file and the key (`job.toml [model] window: expected an integer in [1, 1000], got
-3`; `job.toml [model] windwo: unknown key (did you mean 'window'?)`). The [model] keys are
exactly the keyword arguments of `engine.Word2Vec`, with gensim 4's defaults.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

INT64_MAX = 2**63 - 1
MAX_JOB_FILE_BYTES = 1 << 20           # a job file is a few lines of TOML


class SectionConflict(ConfigError):
    """Values each valid alone that contradict each other; `detail` is 'key: what is wrong'
    (make_section puts the job file and section in front of it)."""

    def __init__(self, section: str, detail: str):
        super().__init__(f"[{section}] {detail}")
        self.detail = detail


def physical_cores() -> int:
    """Physical cores of this machine (psutil), at least 1."""
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


class AutoInt:
    """The kind of a field that takes "auto" or an integer in its bounds."""


class TimeOrWords:
    """The kind of a field that takes a time ("10m") or a word count, as a string or an
    integer (kept as its string; engine.word2vec.checkpoint.parse_every reads it)."""


def _spec(kind: type, lo: float | None = None, hi: float | None = None,
          choices: tuple | None = None, lo_open: bool = False) -> dict:
    return {"kind": kind, "lo": lo, "hi": hi, "choices": choices, "lo_open": lo_open}


def _f(default: Any, kind: type, lo=None, hi=None, choices=None, lo_open=False):
    factory = (lambda: list(default)) if isinstance(default, list) else None
    meta = {"check": _spec(kind, lo, hi, choices, lo_open)}
    if factory:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class CorpusConfig:
    path: str = _f("", str)                         # "" = the bundled sample (engine.text.sample)
    format: str = _f("auto", str, choices=("auto", "lines", "text8"))
    encoding_errors: str = _f("strict", str, choices=("strict", "replace", "ignore"))


@dataclass(frozen=True)
class ModelConfig:
    sg: int = _f(0, int, 0, 1)
    hs: int = _f(0, int, 0, 1)
    negative: int = _f(5, int, 0, 1000)
    ns_exponent: float = _f(0.75, float, -10.0, 10.0)
    cbow_mean: int = _f(1, int, 0, 1)
    sample: float = _f(1e-3, float, 0.0, 1e12)
    window: int = _f(5, int, 1, 1000)
    min_count: int = _f(5, int, 1, INT64_MAX)
    max_vocab_size: int = _f(0, int, 0, INT64_MAX)  # 0 = no pruning while counting
    max_final_vocab: int = _f(0, int, 0, INT64_MAX)  # 0 = no cap
    epochs: int = _f(5, int, 1, 100_000)
    alpha: float = _f(0.025, float, 0.0, 10.0, lo_open=True)
    min_alpha: float = _f(0.0001, float, 0.0, 10.0)
    seed: int = _f(1, int, 0, 2**63 - 1)
    vector_size: int = _f(100, int, 1, 100_000)
    shrink_windows: bool = _f(True, bool)            # window of each word drawn from 1..window
    compute_loss: bool = _f(True, bool)              # sum the training loss (docs/usage.md)

    def __post_init__(self):
        if self.negative == 0 and self.hs == 0:
            raise SectionConflict("model", "negative: must be > 0 when hs = 0 (nothing to "
                                           "train: no output layer)")
        if self.min_alpha > self.alpha:
            raise SectionConflict("model", f"min_alpha: expected <= alpha ({self.alpha}), "
                                           f"got {self.min_alpha}")


@dataclass(frozen=True)
class EngineConfig:
    workers: int = _f(0, int, 0, 4096)              # 0 = physical cores
    chunk_words: int = _f(20_000, int, 100, 1 << 28)  # ids per work unit handed to a process
    block_bytes: int = _f(1 << 20, int, 4096, 1 << 30)  # text per block when counting/encoding
    cache_dir: str = _f("", str)                    # "" = a temporary folder, removed after
    # With workers > 1: rows of the `hot_words` most frequent words (and as many top Huffman
    # nodes) are trained on per-process copies, merged into the shared weights every
    # `sync_words` trained words (a chunk is reported done once merged); 0 = update the
    # shared rows directly. "auto": sized from the vocabulary and the process count
    # (engine.local.hotrows.auto_hot_rows); sync_words 0 = sized with them. hot_tiers L > 0: only
    # the most frequent 1/2^L of them at every merge, twice as many every second merge, ...
    # all every 2^L-th; "auto": 3 with hot_words "auto", else 0 (all at every merge).
    hot_words: Any = _f("auto", AutoInt, 0, 1 << 20)
    sync_words: int = _f(0, int, 0, 1 << 30)
    hot_tiers: Any = _f("auto", AutoInt, 0, 8)
    # a training process that holds chunks and reports nothing this long (or 10x the
    # slowest chunk seen, if longer) is hung: it is killed and its chunks go to the others
    stall_seconds: float = _f(120.0, float, 0.1, 86400.0)
    # the training kernel: "classic" (word2vec's: skip-gram, one noise set per context word;
    # CBOW, one per center), "batched" (negative sampling without hs; skip-gram: one noise
    # set per center word, its window's rows updated together; CBOW: one noise set per
    # `cbow_batch` consecutive centers of a sentence, their output rows updated together),
    # "two-pass" (CBOW NS: classic, but every score of an update first, then its row
    # updates), "auto" (batched for skip-gram NS, two-pass for CBOW NS, else classic: batched
    # CBOW's neighbouring centers share noise words, which costs analogy accuracy, so it is
    # only taken when asked for; see docs/benchmarks.md, "Batched CBOW is opt-in")
    kernel: str = _f("auto", str, choices=("auto", "classic", "batched", "two-pass"))
    # the batched CBOW kernel: how many consecutive centers share one noise set
    cbow_batch: int = _f(4, int, 1, 16)
    # batched skip-gram's small matrix products (a window's rows against its noise set):
    # "blas" (BLAS sgemm, as scipy exports it, on rows gathered into blocks), "loops"
    # (register-blocked loops in ext/vecmath.h), "auto" (whichever measures faster on this
    # machine at the job's shape, engine.local.kernel.measure_products: which one wins
    # depends on the processor and its BLAS; see docs/benchmarks.md, "BLAS or loops").
    # Cluster nodes measure for themselves.
    products: str = _f("auto", str, choices=("auto", "blas", "loops"))

    @property
    def processes(self) -> int:
        return self.workers or physical_cores()


@dataclass(frozen=True)
class OutputConfig:
    dir: str = _f("out", str)
    text_vectors: bool = _f(False, bool)            # also write vectors.txt
    progress_seconds: float = _f(5.0, float, 0.0, 86400.0, lo_open=True)
    # a checkpoint (OUT/checkpoints) every so long ("10m", "90s", "2h") or every so many
    # trained words ("5000000"); "" = none. `engine run JOB --resume` continues from it.
    checkpoint_every: str = _f("", TimeOrWords)


@dataclass(frozen=True)
class EvaluateConfig:
    analogies: list = _f([], list)
    similarity: list = _f([], list)
    restrict_vocab: int = _f(30_000, int, 1, INT64_MAX)
    neighbours: list = _f([], list)                 # words whose most_similar is printed
    topn: int = _f(5, int, 1, 1000)
    every_epoch: bool = _f(False, bool)              # evaluate after each epoch (a curve)


@dataclass(frozen=True)
class ClusterConfig:
    """With nodes or a name server, `engine run` dispatches the job to `engine worker`s."""
    nodes: list = _f([], list)                      # ["host:port", ...]
    nameserver: str = _f("", str)                   # "host[:port]", or "auto" (broadcast)
    key_file: str = _f("", str)                     # else $ENGINE_CLUSTER_KEY
    # words a node trains between exchanges (at most what a node accepts: 2**50)
    round_words: int = _f(200_000, int, 1, 1 << 50)
    # Exchanges carry the rows of frequent words (hot: the `hot_rows` most frequent words'
    # syn0/syn1neg rows and as many top Huffman nodes; 0 = the words a node meets about twice
    # or more per round); all rows travel every `cold_every` exchanges ("auto": 32 with one
    # or two nodes, 8 from three on: a node's copy of the rows the others change ages
    # faster the more of them there are).
    hot_rows: int = _f(0, int, 0, INT64_MAX)
    cold_every: Any = _f("auto", AutoInt, 1, 1_000_000)
    # T > 0: the hot rows in tiers: the most frequent 1/2^T at every exchange, twice as many
    # at every second, ..., all at every 2^T-th ("auto": 2 with one or two nodes, else 0)
    tiers: Any = _f("auto", AutoInt, 0, 8)
    # T > 0: the rows past the hot ones in tiers on cold exchanges: the most frequent 1/2^T
    # of them at every cold exchange, twice as many at every second, ..., all at every
    # 2^T-th ("auto": 0, all rows at every cold exchange)
    cold_tiers: Any = _f("auto", AutoInt, 0, 8)
    # a node that has trained this many rounds' words since its last exchange (its link
    # slower than its training) waits for the next one instead of training on: a node's
    # copy of the rows ages no further than that, whatever its link (0 = never waits)
    pause_rounds: float = _f(1.5, float, 0.0, 1000.0)
    round_seconds: float = _f(10.0, float, 0.0, 600.0, lo_open=True)  # longest exchange wait
    timeout_seconds: float = _f(30.0, float, 0.5, 86400.0)  # a call late by this drops the node
    rejoin_seconds: float = _f(5.0, float, 0.1, 3600.0)  # look for new/returning nodes
    queue_seconds: float = _f(2.0, float, 0.0, 3600.0)  # work a node holds ahead (its rate)
    # "scaled": the nodes train at N times the learning rate and their deltas are averaged
    # (engine.cluster.merge.MergeRule: one machine's steps, and its noise, at any N);
    # "damped": deltas summed, a frequent row's damped from 3 nodes on so that N nodes' deltas
    # swing it no further than two nodes' sum (engine.cluster.merge.damped_factors;
    # merge_rate: how fast a row settles per update); "sum"; "average": every row over nodes
    merge: str = _f("scaled", str, choices=("scaled", "damped", "sum", "average"))
    merge_rate: float = _f(0.1, float, 0.0, 1000.0)
    # where deltas are merged: at the dispatcher (its link carries every node's traffic),
    # at the nodes (each owns a shard of the rows; every link carries about two deltas per
    # round whatever the node count), or "auto": at the nodes from 2 nodes on, at the
    # dispatcher for one node or when the job writes checkpoints (they need the master)
    merge_at: str = _f("auto", str, choices=("auto", "dispatcher", "nodes"))
    node_workers: int = _f(0, int, 0, 4096)         # processes per node (0 = the node's own)
    # a node's delta: with a threshold, any row whose change reaches this fraction of its
    # norm goes at every exchange and the others wait (their change stays for a later
    # delta); 0 = hot rows every exchange, every changed row on cold ones. Rows travel in
    # four bits a value ("int4": deltas both ways, the rounding kept by the side that sends
    # it for its next delta; the rows that are not hot go down as int8 values), as int8
    # with a scale per row, float16 (deltas only) or float32; the last flush is float32
    delta_threshold: float = _f(0.0, float, 0.0, 10.0)
    delta_dtype: str = _f("int4", str, choices=("float32", "float16", "int8", "int4"))

    @property
    def enabled(self) -> bool:
        return bool(self.nodes or self.nameserver)

    @property
    def pause_words(self) -> int:
        """Words a node trains since its last exchange before it pauses: pause_rounds
        rounds, never under one (0: never pauses), at most what a node accepts (2**52)."""
        if self.pause_rounds <= 0:
            return 0
        return min(max(self.round_words, int(self.pause_rounds * self.round_words)), 1 << 52)


@dataclass(frozen=True)
class LsiSection:
    """[lsi]: the job builds document vectors by latent semantic indexing of [corpus] path
    (one document a line, optionally ID<TAB>text, or a folder of one-document files) instead
    of word vectors; outputs in [output] dir (see engine.documents.job)."""
    num_topics: int = _f(200, int, 1, 100_000)
    no_below: int = _f(5, int, 0, INT64_MAX)           # gensim's filter_extremes defaults
    no_above: float = _f(0.5, float, 0.0, 1.0)
    keep_n: int = _f(100_000, int, 0, INT64_MAX)       # 0 = no limit
    chunksize: int = _f(2_000, int, 1, 10_000_000)      # documents per block and SVD piece
    power_iters: int = _f(2, int, 0, 100)
    extra_samples: int = _f(100, int, 0, 100_000)
    method: str = _f("auto", str, choices=("auto", "stochastic", "merge"))
    processes: int = _f(0, int, 0, 4096)                # 0 = chosen (logged)
    blas_threads: int = _f(0, int, 0, 4096)             # 0 = chosen (logged)
    dtype: str = _f("float32", str, choices=("float32", "float64"))
    smartirs: str = _f("", str)                         # "" = gensim's default weighting
    ids: str = _f("auto", str, choices=("auto", "tab", "none"))
    triplets: str = _f("", str)                         # anchor<TAB>positive<TAB>negative
    topic_words: int = _f(10, int, 1, 1000)
    shares: int = _f(0, int, 0, 1_000_000)              # with [cluster]: parts decomposed
                                                        # apart (0 = one per node)


@dataclass(frozen=True)
class LdaSection:
    """[lda]: the job learns topics (online LDA) from [corpus] path (one document a line,
    optionally ID<TAB>text, or a folder of one-document files) instead of word vectors;
    outputs in [output] dir (see engine.documents.lda_job)."""
    num_topics: int = _f(100, int, 1, 100_000)
    no_below: int = _f(5, int, 0, INT64_MAX)           # gensim's filter_extremes defaults
    no_above: float = _f(0.5, float, 0.0, 1.0)
    keep_n: int = _f(100_000, int, 0, INT64_MAX)       # 0 = no limit
    chunksize: int = _f(2_000, int, 1, 10_000_000)      # documents per E-step chunk
    passes: int = _f(1, int, 1, 100_000)
    update_every: int = _f(1, int, 0, 1_000_000)        # chunks per M-step (0: one a pass)
    alpha: str = _f("symmetric", str, choices=("symmetric", "asymmetric", "auto"))
    eta: str = _f("symmetric", str, choices=("symmetric", "auto"))
    decay: float = _f(0.5, float, 0.0, 1.0)
    offset: float = _f(1.0, float, 0.0, 1e9)
    iterations: int = _f(50, int, 1, 100_000)
    gamma_threshold: float = _f(0.001, float, 0.0, 1e9)
    workers: int = _f(0, int, 0, 4096)                  # E-step threads (0 = every core)
    processes: int = _f(0, int, 0, 4096)                # text passes (0 = chosen, logged)
    dtype: str = _f("float32", str, choices=("float32", "float64"))
    ids: str = _f("auto", str, choices=("auto", "tab", "none"))
    held_out: int = _f(1_000, int, 0, INT64_MAX)        # documents kept out to score passes
    topic_words: int = _f(10, int, 1, 1000)
    coherence_words: int = _f(20, int, 2, 1000)
    seed: int = _f(1, int, 0, 2**32 - 1)                # the random starting topics and mixes


@dataclass(frozen=True)
class JobConfig:
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    lsi: LsiSection | None = None           # a document model instead of word vectors
    lda: LdaSection | None = None           # topics instead of word vectors


_SECTION_TYPES = {"corpus": CorpusConfig, "model": ModelConfig, "engine": EngineConfig,
                  "output": OutputConfig, "evaluate": EvaluateConfig, "cluster": ClusterConfig,
                  "lsi": LsiSection, "lda": LdaSection}
_WORD_VECTOR_SECTIONS = ("model", "engine", "evaluate")   # [cluster] serves both


def _describe(chk: dict) -> str:
    kind, lo, hi, choices = chk["kind"], chk["lo"], chk["hi"], chk["choices"]
    if choices:
        return "one of " + ", ".join(repr(c) for c in choices)
    name = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
            list: "a list of strings", AutoInt: "\"auto\" or an integer",
            TimeOrWords: "a time such as \"10m\" or a word count"}[kind]
    if lo is not None and hi is not None:
        top = "2**63 - 1" if hi == INT64_MAX else hi
        return f"{name} in {'(' if chk['lo_open'] else '['}{lo}, {top}]"
    if lo is not None:
        return f"{name} {'>' if chk['lo_open'] else '>='} {lo}"
    return name


def _show(value: Any, limit: int = 60) -> str:
    """repr of a user's value, shortened so that a message stays one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _plain(name: Any) -> str:
    """A user's key or --set text as is, or as a repr where it holds a line break or
    another unprintable character (the message stays one line)."""
    text = str(name)
    return text if text.isprintable() else repr(text)


def _did_you_mean(name: Any, known: list[str], fmt: str = "{!r}") -> str:
    """' (did you mean 'window'?)' for a near miss, else the list of valid names."""
    close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {fmt.format(close[0])}?)"
    return f" (known: {', '.join(fmt.format(k) for k in known)})"


def check_value(where: str, value: Any, chk: dict) -> Any:
    """Validate one value against its field spec; returns it (ints widened to float)."""
    kind = chk["kind"]
    ok = True
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is AutoInt:
        if value == "auto":
            return value
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            try:
                value = float(value)
            except OverflowError:               # an integer beyond any float
                ok = False
            ok = ok and math.isfinite(value)
    elif kind is TimeOrWords:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        ok = isinstance(value, str)
    elif kind is list:
        if isinstance(value, str):
            value = [value]
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    else:
        ok = isinstance(value, kind)
    if ok and chk["choices"] is not None:
        ok = value in chk["choices"]
    if ok and chk["lo"] is not None:
        ok = value > chk["lo"] if chk["lo_open"] else value >= chk["lo"]
    if ok and chk["hi"] is not None:
        ok = value <= chk["hi"]
    if not ok:
        raise ConfigError(f"{where}: expected {_describe(chk)}, got {_show(value)}")
    return value


def make_section(cls: type, values: dict, where: str = ""):
    """Build one section dataclass from a dict, checking every key and, once all are valid,
    how they go together (a SectionConflict, reported under `where`)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    section = where or f"[{next(k for k, v in _SECTION_TYPES.items() if v is cls)}]"
    if not isinstance(values, dict):
        raise ConfigError(f"{section}: expected a table of settings, got {_show(values)}")
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"{section} {_plain(key)}: unknown key"
                              f"{_did_you_mean(key, list(fields))}")
        kwargs[key] = check_value(f"{section} {key}", value, fields[key].metadata["check"])
    try:
        return cls(**kwargs)
    except SectionConflict as exc:
        raise ConfigError(f"{section} {exc.detail}") from None


def parse_override(text: str) -> tuple[str, str, Any]:
    """'model.window=10' -> ('model', 'window', 10); the value is read as TOML, else text."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"--set {_plain(text)}: expected section.key=value")
    path, raw = text.split("=", 1)
    section, key = path.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except (tomllib.TOMLDecodeError, RecursionError):
        value = raw
    return section, key, value


def job_from_dict(data: dict, overrides: list[str] = (), source: str = "job") -> JobConfig:
    """A JobConfig from parsed TOML (a dict of section tables) with --set overrides on top;
    anything wrong is a ConfigError naming `source`, the section and the key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a table of sections, got {_show(data)}")
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for text in overrides:
        section, key, value = parse_override(text)
        table = data.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"--set {_plain(text)}: [{_plain(section)}] is not a table "
                              f"in {source}")
        table[key] = value
    sections = {}
    for name, values in data.items():
        if name not in _SECTION_TYPES:
            raise ConfigError(f"{source}: unknown section [{_plain(name)}]"
                              f"{_did_you_mean(name, list(_SECTION_TYPES), '[{}]')}")
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: [{name}] must be a table")
        sections[name] = make_section(_SECTION_TYPES[name], values, f"{source} [{name}]")
    if "lsi" in sections and "lda" in sections:
        raise ConfigError(f"{source}: [lsi] and [lda] in one job; a job trains one model")
    for doc, what in (("lsi", "document vectors"), ("lda", "topics")):
        mixed = [f"[{n}]" for n in _WORD_VECTOR_SECTIONS if n in sections]
        if doc in sections and mixed:
            raise ConfigError(f"{source}: [{doc}] ({what}) and {', '.join(mixed)} "
                              f"(word vectors) in one job; a job trains one model")
    return JobConfig(**sections)


_TOML_WHERE = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")


def _toml_error(path: str, exc: tomllib.TOMLDecodeError) -> ConfigError:
    """'job.toml, line 3, column 8: not valid TOML: expected '=' after a key ...'."""
    msg = str(exc)
    m = _TOML_WHERE.search(msg)
    where = f"{path}, line {m.group(1)}, column {m.group(2)}" if m else path
    what = (msg[:m.start()] if m else msg).replace(" (at end of document)", " at its end")
    return ConfigError(f"{where}: not valid TOML: {what[:1].lower()}{what[1:]}")


def read_job_text(path: str) -> str:
    """The job file's text; a missing, unreadable, oversized or non-UTF-8 file is a
    ConfigError naming it."""
    try:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise ConfigError(f"{path}: is a folder, expected a job file (TOML)")
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{path}: not a regular file, expected a job file (TOML)")
        if info.st_size > MAX_JOB_FILE_BYTES:
            raise ConfigError(f"{path}: {info.st_size:,} bytes, too big for a job file "
                              f"(TOML, at most {MAX_JOB_FILE_BYTES:,} bytes)")
        with open(path, "rb") as fh:
            raw = fh.read(MAX_JOB_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: job file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the job file ({exc.strerror or exc})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}, line {line}: not UTF-8 text (invalid byte at offset "
                          f"{exc.start}); a job file is TOML") from None


def load_job(path: str, overrides: list[str] = ()) -> JobConfig:
    """Read and validate a job file (TOML) with --set overrides applied on top."""
    text = read_job_text(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _toml_error(path, exc) from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML: arrays or tables nested too deeply"
                          ) from None
    return job_from_dict(data, overrides, source=path)
