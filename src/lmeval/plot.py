"""`lmeval compare --plot`: the comparison as a chart. Runs of checkpoints that each carry their
training step (lmeval.steps) are drawn over the steps: a line per dataset with its 95% band, the
significant changes between consecutive checkpoints marked. Other runs are drawn as bars, scores
on the left and each later run's difference to the first on the right, its 95% interval as the
error bar. Matplotlib (Agg, no pyplot: no window, no global state) is imported here only, so no
other command pays for it."""

from __future__ import annotations

from pathlib import Path

from lmeval.compare import Comparison, difference
from lmeval.steps import run_steps

FORMATS = (".png", ".svg")
HEIGHT_INCHES = 4.5
DPI = 100
Z_95 = 1.959964  # the band: score ± Z_95 standard errors over questions


def figure_width(comparison: Comparison) -> float:
    """Inches: room for every dataset's group of bars, never narrower than 10."""
    return max(10.0, 2.0 + len(comparison.rows) * (0.6 + 0.5 * len(comparison.runs)))


def draw(comparison: Comparison, path: Path) -> None:
    """Write the chart to PATH (.png or .svg): over steps when every run has its own, else bars."""
    import matplotlib

    matplotlib.use("Agg")
    steps = run_steps([run.manifest for run in comparison.runs])
    figure = over_steps(comparison, steps) if steps else bars(comparison)
    figure.savefig(path, format=path.suffix[1:])


def over_steps(comparison: Comparison, steps: list[int]):
    """One line per dataset over the training STEPS (one per run), its band the 95% interval of
    each score, a star on each checkpoint whose change from the one before is significant (the
    paired bootstrap of lmeval.compare). Ids an SVG keeps: `line:DATASET`, `band:DATASET`,
    `change:DATASET:RUN`."""
    import numpy
    from matplotlib.figure import Figure

    runs = comparison.runs
    order = sorted(range(len(runs)), key=lambda position: steps[position])
    places = [steps[position] for position in order]
    figure = Figure(figsize=(10, HEIGHT_INCHES), dpi=DPI, layout="constrained")
    axes = figure.subplots()
    for color, row in enumerate(comparison.rows):
        scores = numpy.array([numpy.nan if row.scores[p] is None else row.scores[p] for p in order])
        errors = numpy.array([numpy.nan if row.errors[p] is None else row.errors[p] for p in order])
        line = axes.plot(places, scores, marker="o", color=f"C{color}", label=row.dataset)[0]
        line.set_gid(f"line:{row.dataset}")
        if not numpy.isnan(errors).all():
            # A standard error is only given to a share of questions right: 0 to 100 points.
            band = axes.fill_between(places, numpy.clip(scores - Z_95 * errors, 0, 100),
                                     numpy.clip(scores + Z_95 * errors, 0, 100), color=f"C{color}", alpha=0.2,
                                     linewidth=0)
            band.set_gid(f"band:{row.dataset}")
        for before, after in zip(order, order[1:]):
            if difference(runs[before], runs[after], row.dataset).significant:
                star = axes.plot([steps[after]], [row.scores[after]], marker="*", markersize=15, color=f"C{color}",
                                 markeredgecolor="black", linestyle="none")[0]
                star.set_gid(f"change:{row.dataset}:{runs[after].folder.name}")
    metric = comparison.rows[0].metric if len({row.metric for row in comparison.rows}) == 1 else "score"
    axes.set_xlabel("training step")
    axes.set_ylabel(metric)
    axes.set_xticks(places, [str(step) for step in places])
    axes.set_title("Scores over training steps; band: 95% interval over questions; "
                   "★: significant change from the checkpoint before", fontsize=10)
    axes.legend(fontsize=8, loc="best")
    return figure


def bars(comparison: Comparison):
    """Scores as bars, and each later run's difference to the first with its 95% interval. Each
    bar and error bar carries an id, `score:DATASET:RUN`, `delta:DATASET:RUN` and
    `ci:DATASET:RUN`, which an SVG keeps."""
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
    return figure
