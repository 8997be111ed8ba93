import json
import subprocess

import numpy as np
import pytest

from engine.runtime.procs import engine_command


def _run(*args, env=None):
    cmd, base = engine_command()
    return subprocess.run(cmd + list(args), capture_output=True, text=True,
                          env=dict(base, **(env or {})))


@pytest.fixture
def job(tmp_path, planted_file):
    topics, corpus = planted_file
    q = tmp_path / "q.txt"
    q.write_text(": topic\nt0w0 t0w1 t1w0 t1w1\nt0w2 t0w3 t2w2 t2w3\n")
    ws = tmp_path / "ws.tsv"
    ws.write_text("t0w0\tt0w1\t9\nt0w0\tt1w1\t1\nt1w0\tt1w2\t8\nt2w0\tt3w1\t2\n")
    p = tmp_path / "job.toml"
    p.write_text(f"""
[corpus]
path = "{corpus}"
[model]
sg = 1
vector_size = 20
min_count = 1
epochs = 3
sample = 0
[engine]
workers = 2
chunk_words = 4000
[output]
dir = "{tmp_path / 'out'}"
text_vectors = true
[evaluate]
analogies = ["{q}"]
similarity = ["{ws}"]
neighbours = ["t0w0"]
""")
    return p


def test_run_writes_everything(job, tmp_path):
    r = _run("run", str(job), "--set", "model.window=3")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    rep = json.loads((out / "report.json").read_text())
    for key in ("corpus_words", "vocab_size", "training_seconds", "words_per_sec",
                "peak_rss_mb", "evaluation"):
        assert key in rep
    assert rep["corpus_words"] == 3000 * 12 and rep["workers"] == 2
    start, end = rep["training_window"]                 # when training ran, on this clock
    assert 0 < end - start < rep["wall_seconds"] and end - start >= rep["training_seconds"] - 0.01
    assert rep["settings"]["model"]["window"] == 3
    from engine.runtime.blas import blas_products  # the kernel that ran
    assert rep["kernel"]["sg"] == 1 and rep["kernel"]["batched"] == 1
    measured = rep["kernel"].get("products_measured")       # products = "auto": the faster
    if blas_products() is None:
        assert rep["kernel"]["blas"] == 0 and measured is None
    else:
        assert measured["loops"] > 0 and measured["blas"] > 0
        assert rep["kernel"]["blas"] == int(measured["blas"] > measured["loops"])
    assert rep["trained_words"] == 3 * rep["corpus_words"]
    assert rep["evaluation"]["similarity"][str(tmp_path / "ws.tsv")]["spearman"] > 0.5
    assert rep["evaluation"]["analogies"][str(tmp_path / "q.txt")]["evaluated"] == 2
    assert (out / "vectors.bin").exists() and (out / "vectors.txt").exists()
    assert (out / "model" / "syn0.npy").exists()
    assert "t0w0 ->" in r.stdout and "t0w" in r.stdout.split("t0w0 ->")[1]
    assert "BLAS" in r.stderr                       # the startup log names the BLAS


@pytest.mark.parametrize("override,msg", [
    ("model.window=0", "[model] window: expected an integer in [1, 1000], got 0"),
    ("model.colour=3", "[model] colour: unknown key"),
    ("corpus.path=/nonexistent/c.txt", "/nonexistent/c.txt: corpus file not found"),
    ("model.min_count=100000", "no word occurs min_count=100000 times"),
])
def test_bad_input_one_line_error(job, tmp_path, override, msg):
    r = _run("run", str(job), "--set", override)
    assert r.returncode == 2
    lines = [l for l in r.stderr.splitlines() if l.startswith("engine: error")]
    assert len(lines) == 1 and msg in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out" / "vectors.bin").exists()


def test_bench_runs_and_skips_missing_peer(job, tmp_path):
    r = _run("bench", str(job), "--threads", "1..2", "--peers", "nosuchpeer", "--repeat", "2",
             "--json", str(tmp_path / "b.json"), "--set", "model.epochs=1")
    assert r.returncode == 0, r.stderr
    assert "| engine | 2 |" in r.stdout
    assert "peer nosuchpeer skipped" in r.stdout
    assert r.stdout.count("engine, 2 process(es)") == 2      # two rounds
    data = json.loads((tmp_path / "b.json").read_text())
    assert [row["threads"] for row in data["rows"]] == [1, 2]
    assert all(row["peak_mb"] > 0 and row["words_per_sec"] > 0 for row in data["rows"])
    for row in data["rows"]:                        # the median and the worst of the runs
        assert len(row["runs_words_per_sec"]) == 2
        runs = row["runs_words_per_sec"]
        assert row["words_per_sec"] == pytest.approx(sum(runs) / 2, abs=0.1)
        assert row["worst_words_per_sec"] == pytest.approx(min(runs), abs=0.1)
        assert len(row["cpu_capacity"]) == 2 and all(c > 0 for c in row["cpu_capacity"])
        assert len(row["memory_capacity"]) == 2 and all(c > 0 for c in row["memory_capacity"])
    one, two = data["rows"]
    assert "line_ns" not in one and len(two["line_ns"]) == 2     # a moved line, 2 processes
    assert all(1.0 < ns < 1e6 for ns in two["line_ns"])
    assert "hot_rows" not in one and two["hot_rows"]["words"] > 0  # on by default with 2
    assert "CPU check" in r.stdout and "moved line" in r.stdout
    assert "| analogy |" in r.stdout and "no analogy file given" not in r.stdout


def test_bench_without_an_analogy_file_leaves_the_column_out_with_one_note(job, tmp_path):
    r = _run("bench", str(job), "--threads", "1", "--set", "model.epochs=1",
             "--set", "evaluate.analogies=[]", "--json", str(tmp_path / "b.json"))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    header = next(line for line in lines if line.startswith("| tool |"))
    assert "analogy" not in header
    row = next(line for line in lines if line.startswith("| engine | 1 |"))
    assert row.count("|") == header.count("|")          # no empty analogy cell either
    notes = [line for line in lines if "no analogy file given" in line]
    assert len(notes) == 1 and "evaluate.analogies" in notes[0], r.stdout
    data = json.loads((tmp_path / "b.json").read_text())
    assert notes[0] in data["notes"]
    assert all(row.get("analogy_accuracy") is None for row in data["rows"])


def test_bench_table_shows_the_analogy_column_only_with_a_figure():
    from engine.bench.table import format_table

    rows = [{"tool": "engine", "threads": 1, "words_per_sec": 1000.0, "peak_mb": 10.0},
            {"tool": "gensim", "threads": 1, "words_per_sec": 900.0, "peak_mb": 12.0}]
    head, rule, *body = format_table(rows, 2).splitlines()
    assert "analogy" not in head and len(rule.split("|")) == len(head.split("|"))
    assert all(len(line.split("|")) == len(head.split("|")) for line in body)
    rows[1]["analogy_accuracy"] = 0.25
    table = format_table(rows, 2)
    assert "| analogy |" in table and "| 0.2500 |" in table


def test_judge_runs_only_a_script_the_user_names(tmp_path, monkeypatch):
    import sys

    from engine.bench.word2vec import judge
    from engine.errors import ConfigError

    monkeypatch.delenv("ENGINE_JUDGE", raising=False)
    with pytest.raises(ConfigError, match="no judge script"):
        judge(sys.executable, str(tmp_path / "v.bin"))
    with pytest.raises(ConfigError, match="judge script not found"):
        judge(sys.executable, str(tmp_path / "v.bin"), str(tmp_path / "none.py"))
    script = tmp_path / "judge.py"
    script.write_text('import json, sys\nprint(json.dumps({"analogy_accuracy": 0.5, '
                      '"vectors": sys.argv[1]}))\n')
    assert judge(sys.executable, "v.bin", str(script)) == {"analogy_accuracy": 0.5,
                                                          "vectors": "v.bin"}
    monkeypatch.setenv("ENGINE_JUDGE", str(script))
    assert judge(sys.executable, "w.bin")["vectors"] == "w.bin"


def test_bench_share_nothing_runs_copies_side_by_side(job, tmp_path):
    r = _run("bench", str(job), "--threads", "1..2", "--share-nothing", "--json",
             str(tmp_path / "b.json"), "--set", "model.epochs=1", "--keep", str(tmp_path / "k"))
    assert r.returncode == 0, r.stderr
    data = json.loads((tmp_path / "b.json").read_text())
    rows = {(row["tool"], row["threads"]): row for row in data["rows"]}
    assert set(rows) == {("engine", 1), ("engine", 2), ("engine, nothing shared", 2)}
    alone = rows[("engine, nothing shared", 2)]
    reports = [json.loads((tmp_path / "k" / "alone-2" / f"copy-{i}" / "report.json").read_text())
               for i in (1, 2)]
    assert all(rep["workers"] == 1 and rep["corpus_words"] == 3000 * 12 for rep in reports)
    # both copies trained the whole corpus, timed over the union of their training windows
    span = (max(rep["training_window"][1] for rep in reports)
            - min(rep["training_window"][0] for rep in reports))
    assert alone["words_per_sec"] == pytest.approx(2 * 3000 * 12 / span, rel=1e-3)
    assert 0.0 <= alone["overlap"] <= 1.0 and len(alone["cpu_capacity"]) == 2
    assert "| engine, nothing shared | 2 |" in r.stdout
    assert "engine / engine, nothing shared at 2 process(es):" in r.stdout


def test_parallel_prepare_reports_bad_bytes(tmp_path):
    corpus = tmp_path / "c.txt"
    good = ("alpha beta gamma delta\n" * 2000).encode()
    corpus.write_bytes(good + b"bad \xfe byte\n" + good)
    job = tmp_path / "job.toml"
    job.write_text(f'[corpus]\npath = "{corpus}"\n[model]\nmin_count = 1\nepochs = 1\n'
                   f'[engine]\nworkers = 2\nblock_bytes = 4096\n'
                   f'[output]\ndir = "{tmp_path / "out"}"\n')
    r = _run("run", str(job))                 # 90 KB in 4 KB blocks: counted by a pool
    assert r.returncode == 2, r.stderr
    assert f"engine: error: {corpus}: invalid UTF-8 at byte {len(good) + 4}" in r.stderr
    r = _run("run", str(job), "--set", "corpus.encoding_errors=replace")
    assert r.returncode == 0, r.stderr


def test_an_lsi_job_runs_through_engine_run(tmp_path, planted):
    """[lsi] in a job file: document vectors of the corpus (one document a line), the topics
    and the triplet score written by `engine run`; mixing it with [model] is one line."""
    import numpy as np

    topics, sents = planted
    docs = tmp_path / "docs.tsv"
    docs.write_text("".join(f"{i}\t{' '.join(sents[i] + sents[i + 1])}\n"
                            for i in range(0, 600, 2)))
    trip = tmp_path / "trip.tsv"
    trip.write_text("".join(f"{' '.join(t[:6])}\t{' '.join(t[6:])}\t{' '.join(u[:6])}\n"
                            for t in topics for u in topics if t is not u))
    job = tmp_path / "lsi.toml"
    job.write_text(f'[corpus]\npath = "{docs}"\n[lsi]\nnum_topics = 4\nno_below = 1\n'
                   f'no_above = 0.9\ntriplets = "{trip}"\n[output]\ndir = "{tmp_path / "o"}"\n')
    r = _run("run", str(job))
    assert r.returncode == 0, r.stderr
    assert "300 documents" in r.stdout and "triplets:" in r.stdout
    out = tmp_path / "o"
    vecs = np.load(out / "doc_vectors.npy")
    assert vecs.shape == (300, 4)
    assert (out / "doc_ids.txt").read_text().split()[:2] == ["0", "2"]
    rep = json.loads((out / "report.json").read_text())
    assert rep["triplets"]["lsi"]["accuracy"] >= 0.9       # planted topics are separable
    job.write_text(job.read_text() + "[model]\nsg = 1\n")
    r = _run("run", str(job))
    assert r.returncode == 2 and "a job trains one model" in r.stderr


def test_bench_on_an_lsi_job_runs_splits_and_nodes(tmp_path):
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(300)]
    with open(tmp_path / "docs.tsv", "w") as fh:
        for d in range(300):
            words = rng.choice(vocab[d % 3::3], 40).tolist()
            fh.write(f"d{d}\t{' '.join(words)}\n")
    job = tmp_path / "lsi.toml"
    job.write_text(f'[corpus]\npath = "{tmp_path / "docs.tsv"}"\n[lsi]\nnum_topics = 3\n'
                   f'extra_samples = 5\nno_above = 1.0\n')
    env_key = {"ENGINE_CLUSTER_KEY": "bench-key"}
    r = _run("bench", str(job), "--threads", "1..2", "--nodes", "1", "--peers", "nosuch",
             "--json", str(tmp_path / "b.json"), env=env_key)
    assert r.returncode == 0, r.stderr
    data = json.loads((tmp_path / "b.json").read_text())
    assert [row["split"] for row in data["rows"]] == ["1x1", "1x2", "2x1", "1 nodes"]
    assert all(row["svd_seconds"] > 0 and row["peak_mb"] > 0 for row in data["rows"])
    assert "unknown LSI peer 'nosuch'" in r.stdout
    assert "| engine | 2x1 |" in r.stdout
    r = _run("bench", str(job), "--share-nothing")     # refused before anything runs
    assert r.returncode == 2 and "--share-nothing: word2vec jobs only" in r.stderr
    assert "Traceback" not in r.stderr
