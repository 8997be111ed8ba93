"""`engine report` (plots and report.html of finished runs) and `engine bench --plot`."""
import base64
import json
import re
import subprocess
import sys

import pytest

pytest.importorskip("matplotlib")

from engine.bench import report as rp  # noqa: E402
from engine.bench.table import bench_figure, plot
from engine.runtime.procs import engine_command
from engine.cli import main  # noqa: E402

PNGS = {"loss_per_epoch.png", "loss_over_words.png", "words_per_sec.png", "memory.png",
        "evaluation.png"}


def synthetic_report(speed=100_000.0, epochs=3, words_per_epoch=500_000):
    """A report.json as `engine run` writes it, with the per-epoch curve and timeline."""
    curve = [{"epoch": e, "words": e * words_per_epoch, "seconds": e * words_per_epoch / speed,
              "loss": 3.0e6 / e, "examples": 1_000_000, "loss_per_example": 3.0 / e,
              "words_per_sec": speed, "rss_mb": 200.0 + e, "analogy": 0.1 * e,
              "similarity": None if e == 1 else 0.2 * e} for e in range(1, epochs + 1)]
    total = epochs * words_per_epoch / speed
    timeline = [{"seconds": total * i / 10, "words": epochs * words_per_epoch * i / 10,
                 "words_per_sec": speed * (0.95 + 0.01 * (i % 3)), "rss_mb": 150.0 + i,
                 "loss_per_example": None if i == 0 else 3.0 / (1 + i / 4)} for i in range(11)]
    return {"corpus": "/data/corpus.txt", "corpus_words": words_per_epoch, "vocab_size": 9000,
            "epochs": epochs, "workers": 2, "training_seconds": total, "words_per_sec": speed,
            "peak_rss_mb": 212.5, "curve": curve, "timeline": timeline,
            "evaluation": {"analogies": {"/eval/q.txt": {"accuracy": 0.3, "evaluated": 10}},
                           "similarity": {"/eval/ws.tsv": {"spearman": 0.6}}},
            "settings": {"model": {"sg": 1, "vector_size": 100, "window": 5},
                         "engine": {"workers": 2}, "corpus": {"path": "/data/corpus.txt"},
                         "cluster": {"nodes": []}}}


def write_run(folder, report):
    folder.mkdir(parents=True)
    (folder / "report.json").write_text(json.dumps(report))
    return folder


def embedded_images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_report_writes_plots_and_offline_page(tmp_path, capsys):
    run = write_run(tmp_path / "run1", synthetic_report())
    assert main(["report", str(run)]) == 0
    assert "wrote" in capsys.readouterr().out
    written = {p.name for p in run.iterdir()}
    assert PNGS | {"report.html", "report.json"} == written
    page = (run / "report.html").read_text()
    assert "run1" in page and "/data/corpus.txt" in page
    assert "model.vector_size" in page and "cluster.nodes" not in page  # no cluster used
    assert "0.3000" in page and "0.6000" in page                        # final evaluations
    assert not re.search(r'(src|href)="(https?:)?//', page)             # nothing fetched
    images = embedded_images(page)
    assert len(images) == len(PNGS)
    assert {(run / n).read_bytes() for n in PNGS} == set(images)
    assert all(i.startswith(b"\x89PNG\r\n\x1a\n") for i in images)


def test_plots_from_zero_with_labelled_axes(tmp_path):
    runs = rp.load_runs([str(write_run(tmp_path / "r", synthetic_report()))])
    speed = rp.plot_speed(runs).axes[0]
    assert speed.get_ylim()[0] == 0 and speed.get_xlim()[0] == 0
    assert "words/s" in speed.get_ylabel() and "seconds" in speed.get_xlabel()
    line, = speed.get_lines()
    assert len(line.get_xdata()) == 11                   # the timeline, not the epoch ends
    assert rp.plot_memory(runs).axes[0].get_ylim()[0] == 0
    evaluation = rp.plot_evaluation(runs)
    analogy, similarity = evaluation.axes[:2]
    assert list(analogy.get_lines()[0].get_ydata()) == pytest.approx([0.1, 0.2, 0.3])
    assert list(similarity.get_lines()[0].get_xdata()) == [2, 3]     # nulls left out


def test_compare_overlays_runs_with_a_legend(tmp_path):
    a = write_run(tmp_path / "x" / "run", synthetic_report(speed=100_000))
    other = synthetic_report(speed=150_000, epochs=4)
    other["settings"]["model"]["window"] = 8
    b = write_run(tmp_path / "y" / "run", other)
    out = tmp_path / "both"
    assert main(["report", str(a), "--compare", str(b), "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == PNGS | {"report.html"}
    assert not (a / "report.html").exists()              # --out: the run folder untouched
    runs = rp.load_runs([str(a), str(b)])
    assert [r.label for r in runs] == ["x/run", "y/run"]
    for make in (rp.plot_loss_per_epoch, rp.plot_speed, rp.plot_evaluation):
        fig = make(runs)
        assert [t.get_text() for t in fig.legends[0].get_texts()][:2] == ["x/run", "y/run"]
        assert len(fig.axes[0].get_lines()) == 2
    page = (out / "report.html").read_text()
    assert "x/run" in page and "y/run" in page
    assert re.findall(r'<tr class="differs"><th>([^<]+)</th>', page) == ["model.window"]


def test_old_report_without_curve_degrades(tmp_path, capsys):
    old = synthetic_report()
    del old["curve"], old["timeline"], old["settings"]
    run = write_run(tmp_path / "old", old)
    (run / "model").mkdir()
    (run / "model" / "model.json").write_text(json.dumps({"model": {"window": 7}}))
    assert main(["report", str(run)]) == 0
    assert 'no "curve" and no "timeline"' in capsys.readouterr().out
    assert not any(p.suffix == ".png" for p in run.iterdir())
    page = (run / "report.html").read_text()
    assert "model.window" in page and "0.3000" in page and not embedded_images(page)


@pytest.mark.parametrize("content,msg", [
    (None, "report.json: not found"),
    ("{not json", "report.json: not valid JSON (line 1, column 2"),
    ("[1, 2]", "report.json: expected a JSON object, got list"),
    ('{"curve": {"epoch": 1}}', 'report.json: "curve": expected a list of objects'),
    ('{"curve": [{"epoch": 1, "loss": "low"}]}',
     'report.json: "curve"[0].loss: expected a number or null, got \'low\''),
])
def test_bad_report_one_line_and_nothing_written(tmp_path, capsys, content, msg):
    good = write_run(tmp_path / "good", synthetic_report())
    bad = tmp_path / "bad"
    bad.mkdir()
    if content is not None:
        (bad / "report.json").write_text(content)
    assert main(["report", str(good), "--compare", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0] and str(bad) in err[0], err
    assert [p.name for p in good.iterdir()] == ["report.json"]


def test_missing_folder_is_named(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert f"{tmp_path / 'nope'}: no such folder" in capsys.readouterr().err


def test_without_matplotlib_one_line_hint(tmp_path, capsys, monkeypatch):
    run = write_run(tmp_path / "run", synthetic_report())
    monkeypatch.setitem(sys.modules, "matplotlib", None)       # import matplotlib fails
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'engine[plot]'" in err[0], err
    assert [p.name for p in run.iterdir()] == ["report.json"]
    assert main(["bench", "--plot", str(tmp_path / "b.png")]) == 2   # before any run
    assert "pip install 'engine[plot]'" in capsys.readouterr().err


def bench_rows():
    """Rows as `engine bench` makes them: 5% apart (once drawn as a steep climb)."""
    return ([{"tool": "engine", "threads": p, "words_per_sec": w}
             for p, w in ((1, 100_000), (2, 190_000), (3, 199_000))]
            + [{"tool": "gensim", "threads": p, "words_per_sec": w}
               for p, w in ((2, 120_000), (1, 70_000))])


def test_bench_plot_axes_from_zero_with_ideal_and_speedup(tmp_path):
    fig = bench_figure(bench_rows(), "engine bench: kjv.txt\nsg=1", cores=2)
    speed, gain = fig.axes
    for ax in (speed, gain):
        assert ax.get_ylim()[0] == 0 and ax.get_xlim()[0] == 0
    assert speed.get_ylim()[1] >= 199_000 and "words/s" in speed.get_ylabel()
    lines = {tuple(line.get_xdata()): list(line.get_ydata()) for line in speed.get_lines()
             if line.get_linestyle() == "--"}
    assert lines[(0, 1, 2, 3)] == [0, 100_000, 200_000, 300_000]    # engine's linear ideal
    assert lines[(0, 1, 2)] == [0, 70_000, 140_000]                  # gensim's, sorted rows
    engine_gain = next(line for line in gain.get_lines() if line.get_label() == "engine")
    assert list(engine_gain.get_ydata()) == pytest.approx([1.0, 1.9, 1.99])
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:2] == ["engine", "gensim"] and "2 CPU(s) here" in legend
    assert "kjv.txt" in fig.get_suptitle()
    out = tmp_path / "bench.png"
    assert plot(bench_rows(), str(out), "t", 2) == f"plot written to {out}"
    assert out.read_bytes().startswith(b"\x89PNG")


def test_bench_plot_refuses_unknown_format_before_running(tmp_path, capsys):
    assert main(["bench", "--plot", str(tmp_path / "b.jpg")]) == 2
    assert "b.jpg: expected a file name ending in .png, .svg, .pdf" in capsys.readouterr().err


def test_report_of_a_real_run(tmp_path, planted_file):
    _, corpus = planted_file
    job = tmp_path / "job.toml"
    out = tmp_path / "out"
    job.write_text(f'[corpus]\npath = "{corpus}"\n[model]\nvector_size = 16\nmin_count = 1\n'
                   f'epochs = 2\n[engine]\nworkers = 1\n[output]\ndir = "{out}"\n')
    cmd, env = engine_command()
    r = subprocess.run(cmd + ["run", str(job), "--quiet"], capture_output=True, text=True,
                       env=env)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(cmd + ["report", str(out)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    rep = json.loads((out / "report.json").read_text())
    page = (out / "report.html").read_text()
    assert "model.vector_size" in page and f"{rep['corpus_words']:,}" in page
    drawn = {p.name for p in out.iterdir() if p.suffix == ".png"}
    assert len(embedded_images(page)) == len(drawn)
    if rep.get("curve"):                      # an engine that records the per-epoch curve
        assert {"loss_per_epoch.png", "words_per_sec.png", "memory.png"} <= drawn
    else:
        assert not drawn and 'no "curve"' in r.stdout
