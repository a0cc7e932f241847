"""`lmeval compare --plot`: the comparison as a chart, scores on the left and each later run's
difference to the first on the right, its 95% interval as the error bar. Matplotlib (Agg, no
pyplot: no window, no global state) is imported here only, so no other command pays for it."""

from __future__ import annotations

from pathlib import Path

from lmeval.compare import Comparison

FORMATS = (".png", ".svg")
HEIGHT_INCHES = 4.5
DPI = 100


def figure_width(comparison: Comparison) -> float:
    """Inches: room for every dataset's group of bars, never narrower than 10."""
    return max(10.0, 2.0 + len(comparison.rows) * (0.6 + 0.5 * len(comparison.runs)))


def draw(comparison: Comparison, path: Path) -> None:
    """Write the chart to PATH (.png or .svg). Each bar and error bar carries an id,
    `score:DATASET:RUN`, `delta:DATASET:RUN` and `ci:DATASET:RUN`, which an SVG keeps."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    runs, rows = comparison.runs, comparison.rows
    first = runs[0].folder.name
    figure = Figure(figsize=(figure_width(comparison), HEIGHT_INCHES), dpi=DPI, layout="constrained")
    scores_axes, delta_axes = figure.subplots(1, 2)
    places = range(len(rows))
    width = 0.8 / len(runs)
    for position, run in enumerate(runs):
        offset = (position - (len(runs) - 1) / 2) * width
        values = [row.scores[position] or 0.0 for row in rows]
        bars = scores_axes.bar([place + offset for place in places], values, width, color=f"C{position}",
                               label=f"{run.folder.name} {run.model}")
        scores_axes.bar_label(bars, labels=[f"{value:.1f}" if row.scores[position] is not None else "-"
                                            for value, row in zip(values, rows)], fontsize=8, padding=2)
        for bar, row in zip(bars, rows):
            bar.set_gid(f"score:{row.dataset}:{run.folder.name}")
    top = max([100.0] + [value for row in rows for value in row.scores if value is not None])
    scores_axes.set_ylim(0, top * 1.12)
    scores_axes.set_title("Scores")
    figure.legend(*scores_axes.get_legend_handles_labels(), loc="outside lower center", ncols=min(len(runs), 4),
                  fontsize=8)

    width = 0.8 / (len(runs) - 1)
    for position, run in enumerate(runs[1:], start=1):
        offset = (position - 1 - (len(runs) - 2) / 2) * width
        for place, row in zip(places, rows):
            diff = row.differences[position - 1]
            x = place + offset
            faint = diff.significant is False
            bar = delta_axes.bar(x, diff.delta or 0.0, width, color=f"C{position}", alpha=0.45 if faint else 1.0,
                                 hatch="//" if faint else None)[0]
            bar.set_gid(f"delta:{row.dataset}:{run.folder.name}")
            if diff.low is not None and diff.delta is not None:
                bars = delta_axes.errorbar([x], [diff.delta], yerr=[[diff.delta - diff.low], [diff.high - diff.delta]],
                                           fmt="none", ecolor="black", capsize=4)
                bars.lines[2][0].set_gid(f"ci:{row.dataset}:{run.folder.name}")
    delta_axes.axhline(0, color="black", linewidth=0.8)
    delta_axes.set_title(f"Difference to {first} with its 95% interval\n(hatched: not significant)", fontsize=10)
    metric = rows[0].metric if len({row.metric for row in rows}) == 1 else "score"
    scores_axes.set_ylabel(metric)
    delta_axes.set_ylabel(f"Δ {metric} (points)")
    for axes in (scores_axes, delta_axes):
        axes.set_xticks(list(places), [row.dataset for row in rows], rotation=30 if len(rows) > 6 else 0)
    figure.savefig(path, format=path.suffix[1:])
