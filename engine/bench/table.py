"""The bench's table, ratios and plots."""
from __future__ import annotations

import os

from ..errors import ConfigError
from .common import SHARE_NOTHING

def format_table(rows: list[dict], cores: int) -> str:
    """The bench's table; its analogy column only where some row has an analogy figure (a
    job without an analogy file has none to show)."""
    analogy = any(r.get("analogy_accuracy") is not None for r in rows)
    head = ["tool", "processes", "words/s (median)", "worst", "speedup (median)", "worst",
            "efficiency", "peak RAM MB"] + (["analogy"] if analogy else []) + [
            "runs", "CPU check", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for tool in dict.fromkeys(r["tool"] for r in rows):
        mine = [r for r in rows if r["tool"] == tool]
        base = _base_row(rows, tool)
        for r in mine:
            # speedup over the tool's base row (_base_row), per process of that row
            speed = r["words_per_sec"] / base["words_per_sec"] * base["threads"]
            worst = r.get("worst_words_per_sec", r["words_per_sec"])
            worst_speed = worst / base.get("worst_words_per_sec",
                                           base["words_per_sec"]) * base["threads"]
            acc = r.get("analogy_accuracy")
            note = "oversubscribed" if r["threads"] > cores else ""
            cells = [tool, str(r["threads"]), f"{r['words_per_sec']:,.0f}", f"{worst:,.0f}",
                     f"{speed:.2f}x", f"{worst_speed:.2f}x", f"{speed / r['threads']:.2f}",
                     f"{r['peak_mb']:.0f}"]
            if analogy:
                cells.append("" if acc is None else f"{acc:.4f}")
            cells += [_spread(r), _capacity(r), note]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _base_row(rows: list[dict], tool: str) -> dict:
    """The row a tool's speedups are over: its fewest-process row; for the nothing-shared
    copies, engine's (the same kernel in one process)."""
    mine = [r for r in rows if r["tool"] == tool]
    if tool == SHARE_NOTHING:
        mine = [r for r in rows if r["tool"] == "engine"] or mine
    return min(mine, key=lambda r: r["threads"])


def _record_checks(row: dict, before, after) -> None:
    row["cpu_capacity"] = [before[0], after[0]]
    row["memory_capacity"] = [before[1], after[1]]
    if before[2] is not None:
        row["line_ns"] = [before[2], after[2]]


def _capacity(row: dict) -> str:
    cap, mem = row.get("cpu_capacity"), row.get("memory_capacity")
    text = f"{cap[0]:.2f}/{cap[1]:.2f} of {row['threads']}" if cap else ""
    if mem:
        text += f" (memory {mem[0]:.2f}/{mem[1]:.2f})"
    line = row.get("line_ns")
    if line:
        text += f" (moved line {line[0]:.0f}/{line[1]:.0f} ns)"
    return text


def _spread(row: dict) -> str:
    runs = row.get("runs_words_per_sec") or [row["words_per_sec"]]
    if len(runs) == 1:
        return "1"
    return f"{len(runs)} ({min(runs) / max(runs):.2f}-1.00)"


def ratios(rows: list[dict]) -> list[str]:
    out = []
    ours = {r["threads"]: r for r in rows if r["tool"] == "engine"}
    for r in rows:
        if r["tool"] == SHARE_NOTHING and r["threads"] in ours:
            out.append(f"engine / {SHARE_NOTHING} at {r['threads']} process(es): "
                       f"{ours[r['threads']]['words_per_sec'] / r['words_per_sec']:.2f}x words/s "
                       f"(what sharing the weights and starting {r['threads']} training processes "
                       f"cost or give; the copies' training overlapped {r['overlap']:.0%} of "
                       f"their span)")
        elif r["tool"] != "engine" and r["threads"] in ours:
            out.append(f"engine / {r['tool']} at {r['threads']} process(es): "
                       f"{ours[r['threads']]['words_per_sec'] / r['words_per_sec']:.2f}x words/s")
    return out


PLOT_FORMATS = ("png", "svg", "pdf")


def check_plot_path(path: str) -> None:
    """Before any run: --plot names a format we write and matplotlib is there to draw it
    (found after an hour of benchmarks, either would lose the picture)."""
    from .report import check_matplotlib

    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if ext not in PLOT_FORMATS:
        raise ConfigError(f"--plot {path}: expected a file name ending in "
                          + ", ".join(f".{f}" for f in PLOT_FORMATS))
    check_matplotlib()


def scaling_lines(rows: list[dict]) -> dict[str, dict]:
    """Per tool, its rows by process count: processes, words/s, speedup over the tool's
    base row (_base_row: its fewest-process row, engine's for the nothing-shared copies;
    per process of that row, as in the table) and the ideal words/s of linear scaling from
    that row."""
    out = {}
    for tool in dict.fromkeys(r["tool"] for r in rows):
        mine = sorted((r for r in rows if r["tool"] == tool), key=lambda r: r["threads"])
        first = _base_row(rows, tool)
        base = first["words_per_sec"] / first["threads"]
        out[tool] = {"processes": [r["threads"] for r in mine],
                     "words_per_sec": [r["words_per_sec"] for r in mine],
                     "speedup": [r["words_per_sec"] / base for r in mine],
                     "ideal": [base * r["threads"] for r in mine]}
    return out


def bench_figure(rows: list[dict], title: str, cores: int | None = None):
    """Words/s (left) and speedup (right) against processes, both axes from 0, with every
    tool's ideal linear scaling dashed and the cores available marked."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    from .report import legend_below, new_figure, short_number, style_axis

    fig, (speed, gain) = new_figure(2, width=11, height=4.8)
    lines = scaling_lines(rows)
    top = max(max(r["processes"]) for r in lines.values())
    for i, (tool, line) in enumerate(lines.items()):
        colour = f"C{i % 10}"
        speed.plot(line["processes"], line["words_per_sec"], "o-", color=colour, label=tool)
        speed.plot([0] + line["processes"], [0] + line["ideal"], "--", color=colour, alpha=0.6,
                   linewidth=1)
        gain.plot(line["processes"], line["speedup"], "o-", color=colour, label=tool)
        gain.annotate(f"{line['speedup'][-1]:.2f}x", (line["processes"][-1],
                      line["speedup"][-1]), xytext=(5, -12), textcoords="offset points",
                      fontsize="small", color=colour,         # the headline: most processes
                      bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none"})
    gain.plot([0, top], [0, top], "--", color="0.4", linewidth=1)
    style_axis(speed, "processes / threads", "words/s (raw corpus words)",
               "Training speed", yfmt=short_number)
    style_axis(gain, "processes / threads", "speedup (x the rate of 1 process)", "Speedup")
    for ax in (speed, gain):
        if cores:
            ax.axvline(cores, color="0.6", linestyle=":", linewidth=1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(0, top + 0.5)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.05)
    extra = [Line2D([], [], color="0.4", linestyle="--", linewidth=1,
                    label="dashed: ideal linear scaling")]
    if cores:
        extra.append(Line2D([], [], color="0.6", linestyle=":", label=f"{cores} CPU(s) here"))
    legend_below(fig, speed.get_legend_handles_labels()[0] + extra)
    fig.suptitle(title, fontsize="medium")
    return fig


def plot(rows: list[dict], path: str, title: str = "", cores: int | None = None) -> str:
    """Draw the bench figure into `path` (written whole or not at all)."""
    from ..runtime.atomic import atomic_file

    fig = bench_figure(rows, title, cores)
    with atomic_file(path, "wb") as fh:
        fig.savefig(fh, format=os.path.splitext(path)[1].lower().lstrip("."), dpi=110)
    return f"plot written to {path}"

