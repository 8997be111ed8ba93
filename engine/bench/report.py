"""`engine report OUT_DIR [--compare OTHER_DIR ...] [--out DIR]`: pictures of how runs
trained (loss, speed, memory, evaluation per epoch; an [lda] job's held-out perplexity per
pass) and one offline report.html with them,
the settings and the final figures of every run, all read from the runs' report.json.

Reports written by older engines lack the per-epoch "curve" or the "timeline": the plots
that need them are left out and the page says so. matplotlib is optional (the `plot`
extra); figures are drawn on its Agg canvas, never through pyplot's global state.
"""
from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
import math
import os

from ..runtime.atomic import atomic_file
from ..errors import EngineError

REPORT = "report.json"
PLOT_HINT = ("matplotlib is not installed: pip install 'engine[plot]' "
             "(or '.[plot]' in a checkout of engine)")
DPI = 110
CURVE_KEYS = ("epoch", "words", "seconds", "loss", "examples", "loss_per_example",
              "words_per_sec", "rss_mb", "analogy", "similarity")
TIMELINE_KEYS = ("seconds", "words", "words_per_sec", "rss_mb", "loss_per_example")


# ---------------------------------------------------------------- reading the runs


@dataclasses.dataclass
class Run:
    """One run folder: its report, its per-epoch curve and timeline (checked), its settings."""
    folder: str
    label: str
    report: dict
    curve: list
    timeline: list
    settings: dict          # "section.key" -> value


def check_matplotlib() -> None:
    """Raise the one-line install hint when matplotlib cannot be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise EngineError(PLOT_HINT) from None


def read_report(folder: str) -> tuple[str, dict]:
    """The path and content of FOLDER/report.json; one line naming the file if it is
    missing, unreadable or not a JSON object."""
    path = os.path.join(folder, REPORT)
    if not os.path.isdir(folder):
        what = "not a folder" if os.path.exists(folder) else "no such folder"
        raise EngineError(f"{folder}: {what} (expected the output folder of `engine run`, "
                          f"holding {REPORT})")
    try:
        with open(path, encoding="utf-8") as fh:
            report = json.load(fh)
    except FileNotFoundError:
        raise EngineError(f"{path}: not found (is {folder} the output folder of a finished "
                          f"`engine run`?)") from None
    except json.JSONDecodeError as exc:
        raise EngineError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: "
                          f"{exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EngineError(f"{path}: cannot read it ({getattr(exc, 'strerror', None) or exc})"
                          ) from None
    if not isinstance(report, dict):
        raise EngineError(f"{path}: expected a JSON object, got {type(report).__name__}")
    return path, report


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def checked_rows(path: str, report: dict, name: str, keys: tuple) -> list[dict]:
    """report[name] as a list of rows holding `keys` (a number or None each); absent = []."""
    rows = report.get(name)
    if rows is None:
        return []
    if not isinstance(rows, list):
        raise EngineError(f'{path}: "{name}": expected a list of objects, got '
                          f'{type(rows).__name__}')
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise EngineError(f'{path}: "{name}"[{i}]: expected an object, got '
                              f'{type(row).__name__}')
        clean = {}
        for k in keys:
            v = row.get(k)
            if v is not None and not _is_number(v):
                raise EngineError(f'{path}: "{name}"[{i}].{k}: expected a number or null, '
                                  f'got {v!r}')
            clean[k] = v
        out.append(clean)
    return out


def _with_loss_per_example(curve: list[dict]) -> list[dict]:
    """Fill loss_per_example from loss / examples where only those two are given."""
    for row in curve:
        if row["loss_per_example"] is None and row["loss"] is not None and row["examples"]:
            row["loss_per_example"] = row["loss"] / row["examples"]
    return curve


def run_settings(folder: str, report: dict) -> dict:
    """The job's settings as "section.key" -> value: from report.json, else the model
    section from the saved model (OUT/model/model.json), else nothing. The cluster section
    is left out of a run that did not use a cluster."""
    sections = report.get("settings")
    if not isinstance(sections, dict):
        sections = {}
        try:
            with open(os.path.join(folder, "model", "model.json"), encoding="utf-8") as fh:
                model = json.load(fh).get("model")
            if isinstance(model, dict):
                sections = {"model": model}
        except (OSError, ValueError, AttributeError):
            pass
    flat = {}
    for section, values in sections.items():
        if section == "cluster" and not report.get("cluster"):
            continue
        if isinstance(values, dict):
            for key, value in values.items():
                flat[f"{section}.{key}"] = value
    return flat


def run_labels(folders: list[str]) -> list[str]:
    """Short names for the runs' folders: the last path part, or as many trailing parts as
    make the names distinct."""
    parts = [os.path.abspath(f).split(os.sep) for f in folders]
    for n in range(1, max(len(p) for p in parts) + 1):
        labels = [os.path.join(*p[-n:]) or os.sep for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [os.path.abspath(f) for f in folders]


def load_runs(folders: list[str]) -> list[Run]:
    """Every run folder read and checked, before anything is written."""
    runs = []
    for folder, label in zip(folders, run_labels(folders)):
        path, report = read_report(folder)
        curve = _with_loss_per_example(checked_rows(path, report, "curve", CURVE_KEYS))
        timeline = checked_rows(path, report, "timeline", TIMELINE_KEYS)
        runs.append(Run(folder, label, report, curve, timeline, run_settings(folder, report)))
    return runs


# ---------------------------------------------------------------- drawing


def short_number(x: float) -> str:
    """A tick label: 0, 950, 1.5k, 2M, 3.2B (words and words/s of any corpus size)."""
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}"
    return f"{x:.3g}"


def new_figure(ncols: int = 1, width: float = 7.0, height: float = 4.4):
    """A figure with `ncols` side-by-side axes, on the Agg canvas, laid out so that titles,
    labels and a legend outside the axes never overlap."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, list(fig.subplots(1, ncols, squeeze=False)[0])


def style_axis(ax, xlabel: str, ylabel: str, title: str, xfmt=None, yfmt=None) -> None:
    """Labels, a light grid and optional tick formatters (functions of the value)."""
    from matplotlib.ticker import FuncFormatter

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize="medium")
    ax.grid(alpha=0.3)
    if xfmt is not None:
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: xfmt(v)))
    if yfmt is not None:
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: yfmt(v)))


def legend_columns(labels: list[str], width_in: float) -> int:
    """The most legend columns whose labels fit `width_in` inches (about 10 characters an
    inch at the default size, 5 more for each entry's key). Entries fill the columns as
    matplotlib does: the first len % ncols columns hold one entry more."""
    for ncols in range(len(labels), 1, -1):
        rows, large = divmod(len(labels), ncols)
        sizes = [rows + 1] * large + [rows] * (ncols - large)
        starts = [sum(sizes[:i]) for i in range(ncols)]
        width = sum(max(map(len, labels[a:a + n])) + 5 for a, n in zip(starts, sizes))
        if width <= width_in * 10:
            return ncols
    return 1


def legend_below(fig, handles: list) -> None:
    """One legend for the whole figure, under the axes: it cannot cover a line there."""
    if handles:
        labels = [h.get_label() for h in handles]
        fig.legend(handles, labels, loc="outside lower center", frameon=False,
                   ncols=legend_columns(labels, fig.get_figwidth() - 0.5))


def png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


# How each kind of series is drawn, and what the legend says about it.
STYLES = {
    "epoch": ({"linestyle": "-", "marker": "o", "markersize": 4}, "dots: one per epoch"),
    "pass": ({"linestyle": "-", "marker": "o", "markersize": 4}, "dots: one per pass"),
    "steps": ({"drawstyle": "steps-pre", "marker": "s", "markersize": 4,
               "markevery": slice(1, None)}, "squares: each epoch's average"),
    "peak": ({"linestyle": "--", "marker": "o", "markersize": 4},
             "dots: peak so far, at each epoch's end"),
    "sampled": ({"linestyle": "-"}, "line: sampled every few seconds"),
    "running": ({"linestyle": ":", "linewidth": 2.2},
                "dotted: since the previous sample, while training"),
}


def _points(rows: list[dict], xkey: str, ykey: str) -> tuple[list, list]:
    pts = [(r[xkey], r[ykey]) for r in rows if r[xkey] is not None and r[ykey] is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def draw_runs(fig, panels: list, runs: list[Run]) -> bool:
    """Draw every run on each (axes, traces) panel, one colour per run (traces(run) ->
    [(style, xs, ys), ...]), and the legend: the runs by colour, then the styles used.
    False when nothing was drawn."""
    from matplotlib.lines import Line2D

    styles, colours = {}, {}
    for ax, traces in panels:
        for i, run in enumerate(runs):
            for style, xs, ys in traces(run):
                kw = dict(STYLES[style][0], linewidth=STYLES[style][0].get("linewidth", 1.6))
                ax.plot(xs, ys, color=f"C{i % 10}", label=run.label, **kw)
                colours.setdefault(i, Line2D([], [], color=f"C{i % 10}", linewidth=3,
                                             label=run.label))
                styles.setdefault(style, Line2D([], [], color="0.35", label=STYLES[style][1],
                                                **kw))
    legend_below(fig, [colours[i] for i in sorted(colours)] + list(styles.values()))
    return bool(colours)


def _from_zero(ax, pad: float = 1.08) -> None:
    """Both axes from 0; the top of y kept where matplotlib put it, with a little room."""
    top = ax.get_ylim()[1]
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0, top=top * pad if top > 0 else 1)


def _epoch_axis(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(left=0.5)


def _sampled_or(run: Run, key: str, fallback: str) -> list:
    """`key` over seconds: the timeline when it has two samples or more, else the epoch
    ends drawn as `fallback` ("steps": each epoch's average from its start)."""
    xs, ys = _points(run.timeline, "seconds", key)
    if len(xs) >= 2:
        return [("sampled", xs, ys)]
    xs, ys = _points(run.curve, "seconds", key)
    if not xs:
        return []
    if fallback == "steps":
        return [("steps", [0.0] + xs, [ys[0]] + ys)]
    return [(fallback, xs, ys)]


def _per_epoch(key: str):
    """traces(run): `key` at each epoch, where the curve has it."""
    def traces(run: Run) -> list:
        xs, ys = _points(run.curve, "epoch", key)
        return [("epoch", xs, ys)] if xs else []
    return traces


def _loss_over_words(run: Run) -> list:
    """The per-epoch mean at each epoch's end, and the timeline's recent values beside it."""
    out = []
    xs, ys = _points(run.curve, "words", "loss_per_example")
    if xs:
        out.append(("epoch", xs, ys))
    xs, ys = _points(run.timeline, "words", "loss_per_example")
    if len(xs) >= 2:
        out.append(("running", xs, ys))
    return out


def _one_panel(runs: list[Run], traces, xlabel, ylabel, title, xfmt=None, yfmt=None):
    """A one-axes figure of every run's traces, from zero; None when no run has data."""
    fig, (ax,) = new_figure()
    if not draw_runs(fig, [(ax, traces)], runs):
        return None
    style_axis(ax, xlabel, ylabel, title, xfmt, yfmt)
    _from_zero(ax)
    return fig


def plot_loss_per_epoch(runs: list[Run]):
    fig = _one_panel(runs, _per_epoch("loss_per_example"), "epoch",
                     "mean loss per training example", "Training loss per epoch (lower is better)")
    if fig is not None:
        _epoch_axis(fig.axes[0])
    return fig


def plot_loss_over_words(runs: list[Run]):
    return _one_panel(runs, _loss_over_words, "words trained (raw corpus words, all epochs)",
                      "mean loss per training example", "Training loss over words trained",
                      xfmt=short_number)


def plot_speed(runs: list[Run]):
    return _one_panel(runs, lambda r: _sampled_or(r, "words_per_sec", "steps"),
                      "seconds since training began", "words/s (raw corpus words)",
                      "Training speed over time", yfmt=short_number)


def plot_memory(runs: list[Run]):
    return _one_panel(runs, lambda r: _sampled_or(r, "rss_mb", "peak"),
                      "seconds since training began", "memory of all processes (MB)",
                      "Memory over time", yfmt=lambda v: f"{v:,.0f}")


def _per_pass(key: str):
    """traces(run): an [lda] job's `key` after each pass (report.json "passes")."""
    def traces(run: Run) -> list:
        rows = [r for r in run.report.get("passes") or [] if isinstance(r, dict)
                and _is_number(r.get("pass")) and _is_number(r.get(key))]
        return [("pass", [r["pass"] for r in rows], [r[key] for r in rows])] if rows else []
    return traces


def plot_lda_passes(runs: list[Run]):
    fig = _one_panel(runs, _per_pass("held_out_perplexity"), "pass",
                     "held-out perplexity (document completion)",
                     "LDA: held-out perplexity per pass (lower is better)",
                     yfmt=lambda v: f"{v:,.0f}")
    if fig is not None:
        _epoch_axis(fig.axes[0])
    return fig


def plot_evaluation(runs: list[Run]):
    """Analogy accuracy and word-pair Spearman per epoch: a panel for each that has data."""
    panels = [(key, title, ylabel) for key, title, ylabel in (
        ("analogy", "Analogy accuracy per epoch", "accuracy (share of questions right)"),
        ("similarity", "Word-pair similarity per epoch", "Spearman correlation"))
        if any(_per_epoch(key)(r) for r in runs)]
    if not panels:
        return None
    fig, axes = new_figure(len(panels), width=4.6 * len(panels) + 1.2)
    draw_runs(fig, [(ax, _per_epoch(key)) for ax, (key, _, _) in zip(axes, panels)], runs)
    for ax, (key, title, ylabel) in zip(axes, panels):
        style_axis(ax, "epoch", ylabel, title)
        low, top = ax.get_ylim()
        _epoch_axis(ax)
        ax.set_ylim(bottom=min(low, 0.0), top=top * 1.08 if top > 0 else 1)  # Spearman may be < 0
    return fig


PLOTS = (  # file, drawing, what it needs (when no run has it), caption on the page
    ("loss_per_epoch.png", plot_loss_per_epoch, "per-epoch loss", "Training loss per epoch"),
    ("loss_over_words.png", plot_loss_over_words, "per-epoch or sampled loss",
     "Training loss over words trained"),
    ("words_per_sec.png", plot_speed, "sampled or per-epoch words/s",
     "Training speed (words/s) over time"),
    ("memory.png", plot_memory, "sampled or per-epoch memory", "Memory over time"),
    ("evaluation.png", plot_evaluation, "per-epoch analogy or similarity scores",
     "Evaluation per epoch"),
    ("lda_passes.png", plot_lda_passes, "an [lda] job's per-pass held-out perplexity",
     "LDA: held-out perplexity per pass"))


# ---------------------------------------------------------------- the page


def _fmt(v, spec: str = "") -> str:
    """A table cell: '' for missing, numbers formatted with `spec`, anything else as text."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"             # as in the job file
    if _is_number(v) and spec:
        return "" if isinstance(v, float) and math.isnan(v) else format(v, spec)
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def final_figures(run: Run) -> dict:
    """Row name -> cell text for the final figures of a run."""
    r = run.report
    if r.get("model") == "lda":
        last = (r.get("passes") or [{}])[-1]
        seconds = r.get("seconds") if isinstance(r.get("seconds"), dict) else {}
        return {"documents": _fmt(r.get("documents"), ",.0f"),
                "held out": _fmt(r.get("held_out"), ",.0f"),
                "terms": _fmt(r.get("terms"), ",.0f"), "topics": _fmt(r.get("topics")),
                "passes": _fmt(len(r.get("passes") or [])),
                "threads": _fmt(r.get("workers")),
                "training seconds": _fmt(seconds.get("train"), ",.1f"),
                "documents/s": _fmt(r.get("documents_per_second"), ",.0f"),
                "held-out perplexity": _fmt(last.get("held_out_perplexity"), ",.1f"),
                "u_mass coherence": _fmt(r.get("coherence_u_mass"), ".4f"),
                "peak memory MB": _fmt(r.get("peak_memory_mb"), ",.0f")}
    rows = {
        "corpus": _fmt(r.get("corpus")),
        "corpus words": _fmt(r.get("corpus_words"), ",.0f"),
        "vocabulary": _fmt(r.get("vocab_size"), ",.0f"),
        "epochs": _fmt(r.get("epochs") if r.get("epochs") is not None
                       else run.settings.get("model.epochs")),
        "training processes": _fmt(r.get("workers")),
        "training seconds": _fmt(r.get("training_seconds"), ",.1f"),
        "words/s": _fmt(r.get("words_per_sec"), ",.0f"),
        "peak memory MB": _fmt(r.get("peak_rss_mb"), ",.0f"),
    }
    last = [row["loss_per_example"] for row in run.curve if row["loss_per_example"] is not None]
    if last:
        rows["final loss per example"] = _fmt(last[-1], ".4f")
    ev = r.get("evaluation") if isinstance(r.get("evaluation"), dict) else {}
    for kind, metric in (("analogies", "accuracy"), ("similarity", "spearman")):
        results = ev.get(kind) if isinstance(ev.get(kind), dict) else {}
        for path, res in results.items():
            if isinstance(res, dict):
                rows[f"{kind} {metric} ({os.path.basename(path)})"] = _fmt(res.get(metric),
                                                                           ".4f")
    return rows


def _table(runs: list[Run], rows: list[dict], mark_differences: bool) -> str:
    """An HTML table: one column per run, one row per name in `rows` (dicts by run)."""
    names = list(dict.fromkeys(name for r in rows for name in r))
    head = "".join(f"<th>{html.escape(run.label)}</th>" for run in runs)
    body = []
    for name in names:
        cells = [r.get(name, "") for r in rows]
        cls = ' class="differs"' if mark_differences and len(set(cells)) > 1 else ""
        body.append(f"<tr{cls}><th>{html.escape(name)}</th>"
                    + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return f"<table><tr><th></th>{head}</tr>{''.join(body)}</table>"


STYLE = """body{font-family:sans-serif;margin:2em;max-width:75em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:0.25em 0.6em;text-align:left;vertical-align:top}
td{font-variant-numeric:tabular-nums}tr.differs{background:#fff3c4}
img{max-width:100%;border:1px solid #eee;margin:0.5em 0}.note{color:#555}"""


def render_html(runs: list[Run], images: list[tuple[str, str, bytes]], notes: list[str]) -> str:
    """The offline page: final figures, plots (embedded as data URIs), settings, notes."""
    title = "engine report: " + ", ".join(run.label for run in runs)
    plots = "".join(
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,'
        f'{base64.b64encode(data).decode("ascii")}"><figcaption>{html.escape(caption)} '
        f'({html.escape(name)})</figcaption></figure>' for name, caption, data in images)
    settings = [{k: _fmt(v) for k, v in run.settings.items()} for run in runs]
    parts = [f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>"
             f"{html.escape(title)}</title><style>{STYLE}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             "<h2>Final figures</h2>", _table(runs, [final_figures(r) for r in runs], False),
             "<h2>Plots</h2>", plots or '<p class="note">No plots: see the notes.</p>',
             "<h2>Settings</h2>",
             ('<p class="note">Highlighted rows differ between the runs.</p>'
              if len(runs) > 1 else ""),
             _table(runs, settings, len(runs) > 1) if any(settings) else
             '<p class="note">No settings recorded.</p>']
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>"
                                                    for n in notes) + "</ul>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def missing_data_notes(runs: list[Run]) -> list[str]:
    """What each run's report.json lacks for the plots (written by an older engine)."""
    notes = []
    for run in runs:
        if run.report.get("model") == "lda":      # its curve is "passes"
            if not _per_pass("held_out_perplexity")(run):
                notes.append(f"{run.label}: no held-out perplexity per pass (held_out = 0?)")
            continue
        if not run.curve and not run.timeline:
            notes.append(f'{run.label}: report.json has no "curve" and no "timeline" (an older '
                         f'engine?): only its final figures are shown')
        elif not run.curve:
            notes.append(f'{run.label}: report.json has no per-epoch "curve": the per-epoch '
                         f'plots leave this run out')
        elif not run.timeline:
            notes.append(f'{run.label}: report.json has no "timeline" (a run shorter than one '
                         f'sample?): speed and memory are drawn from the epoch ends')
        if not run.settings:
            notes.append(f"{run.label}: no settings in report.json or model/model.json")
    return notes


def write_report(runs: list[Run], out: str) -> tuple[list[str], list[str]]:
    """Draw the plots that have data into `out` and report.html beside them; returns the
    files written and the notes. Each file is written whole or not at all."""
    images = []
    for name, make, _, caption in PLOTS:
        fig = make(runs)
        if fig is not None:
            images.append((name, caption, png_bytes(fig)))
    notes = missing_data_notes(runs)
    drawn = {name for name, _, _ in images}
    skipped = [f"{name} (needs {need})" for name, _, need, _ in PLOTS if name not in drawn]
    if skipped:
        notes.append("not drawn, no run has the data: " + ", ".join(skipped))
    files = [(name, data) for name, _, data in images]
    files.append(("report.html", render_html(runs, images, notes).encode("utf-8")))
    try:
        os.makedirs(out, exist_ok=True)
        for name, data in files:
            with atomic_file(os.path.join(out, name), "wb") as fh:
                fh.write(data)
    except OSError as exc:
        raise EngineError(f"{out}: cannot write the report there ({exc.strerror or exc})"
                          ) from None
    return [name for name, _ in files], notes


def run_report(args) -> int:
    check_matplotlib()
    runs = load_runs([args.out_dir] + list(args.compare))
    out = args.out or args.out_dir
    files, notes = write_report(runs, out)
    for note in notes:
        print(f"note: {note}")
    print(f"wrote {', '.join(files)} to {out}")
    return 0
