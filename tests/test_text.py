"""The C tokenizer/counter (engine._text) must agree with Python's str.split semantics."""
import random
from collections import Counter

import pytest

from engine._text import TokenTable
from engine.text.corpus import CorpusSource
from engine.word2vec.prepare import build_vocab, encode_corpus
from conftest import decode_stream

SPACES = [" ", "  ", "\t", "\r", "\x0b", "\x0c", "\x1c", "\x1f", "\u2003", "\u00a0", "\u3000"]
WORDS = ["a", "be", "café", "日本", "x_y", "Zz", "naïve", "ß", "é"]


def test_counts_match_counter():
    rnd = random.Random(0)
    choices = WORDS + [f"w{i}" for i in range(3000)]
    toks = [rnd.choice(choices) for _ in range(50_000)]
    text = " \t".join(toks).encode()
    t = TokenTable()
    assert t.count_bytes(text) == len(toks)
    want = Counter(toks)
    got = dict(zip(t.keys(), t.values_array().tolist()))
    assert got == want
    assert t.keys()[:3] == list(dict.fromkeys(toks))[:3]         # first-seen order


def test_merge_prune_from_words_encode():
    a, b = TokenTable(), TokenTable()
    a.count_bytes(b"x y x")
    b.count_bytes(b"z x z z")
    a.merge(b.export())
    assert dict(zip(a.keys(), a.values_array().tolist())) == {"x": 3, "y": 1, "z": 3}
    p = a.pruned(1)
    assert p.keys() == ["x", "z"]
    ids = TokenTable.from_words(["z", "x"])
    out = ids.encode_bytes(b"x q\nz  x\n\nq", True, -2, -1)
    assert out.tolist() == [1, -2, -1, 0, 1, -1, -1, -2]
    assert ids.encode_bytes(b"x q\nz", False, -2, -1).tolist() == [1, -2, 0]


@pytest.mark.parametrize("workers", [1, 2])
def test_vocab_and_ids_match_python_split(tmp_path, workers):
    rnd = random.Random(1)
    lines = []
    for i in range(4000):
        n = rnd.randrange(0, 12)
        line = ""
        for _ in range(n):
            line += rnd.choice(WORDS) + rnd.choice(SPACES if i % 50 == 0 else SPACES[:8])
        lines.append(line)
    p = tmp_path / "c.txt"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    src = CorpusSource(str(p))
    vocab = build_vocab(src, min_count=1, workers=workers, block_bytes=4096)
    want = Counter(t for l in lines for t in l.split())
    assert dict(zip(vocab.words, vocab.counts.tolist())) == want
    stream = encode_corpus(src, vocab, str(tmp_path / "ids"), 300, workers, 4096)
    assert decode_stream(stream, vocab.words) == [l.split() for l in lines]
