"""The figure of MAD's delta history (MAD Fig. 3).

It draws on a bare `matplotlib.figure.Figure` with the Agg canvas, so it never touches
pyplot's global state or need a display.
"""

import csv
import re

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from kerasbnn.distill.fusion import importance_key, parse_importance_key

__all__ = ["plot_delta_history", "read_delta_csv"]

# The columns of histories written before the one name `importance/<point>/t<m>`.
_LEGACY_KEY = re.compile(r"^(?:delta|pi)_(?P<point>.+)_t(?P<teacher>\d+)$")


def read_delta_csv(path):
    """Rows of a `DeltaHistory` CSV as a list of `{column: float}` dicts, the importance
    columns named `importance/<point>/t<m>` (`importance_key`; also in a CSV written before
    that name, whose `delta_<point>_t<m>` or `pi_<point>_t<m>` columns are renamed)."""
    with open(path, newline="") as f:
        return [{_current(k): float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _current(column):
    """`column`, or its `importance_key` if it is a legacy `delta_`/`pi_` importance column."""
    match = _LEGACY_KEY.match(column)
    return column if match is None else importance_key(
        match.group("point"), int(match.group("teacher")))


def _series(rows):
    """{point: {teacher: [values per row]}} from rows with `importance/<point>/t<m>` columns."""
    series = {}
    for row in rows:
        for key, value in row.items():
            parsed = parse_importance_key(key)
            if parsed:
                point, teacher = parsed
                series.setdefault(point, {}).setdefault(teacher, []).append(float(value))
    return series


def plot_delta_history(history, path=None, teacher_names=None):
    """Plots each fusion coefficient against the epoch, one panel per distillation point.

    The layout of MAD's Fig. 3: how much the student trusts each teacher at the logits
    and at every tapped feature as training goes on.

    Args:
        history: a `DeltaHistory` CSV path, a list of row dicts, or a Keras
            `History.history` dict with `importance/<point>/t<m>` keys.
        path: where to save the figure (PNG, PDF...); None only returns it.
        teacher_names: legend labels, one per teacher (default `t0`, `t1`, ...).

    Returns:
        The `matplotlib.figure.Figure`.

    Raises:
        ValueError: if `history` holds no `importance/<point>/t<m>` columns.
    """
    if isinstance(history, str) or hasattr(history, "__fspath__"):
        rows = read_delta_csv(history)
    elif isinstance(history, dict):
        length = max((len(v) for v in history.values()), default=0)
        rows = [{k: v[i] for k, v in history.items() if i < len(v)} for i in range(length)]
    else:
        rows = list(history)
    series = _series(rows)
    if not series:
        raise ValueError(
            "No importance/<point>/t<m> values to plot: pass a DeltaHistory CSV or the "
            "history of a MultiTeacherDistiller or CollaborativeDistiller fit.")
    figure = Figure(figsize=(3.2 * len(series), 2.8))
    axes = figure.subplots(1, len(series), squeeze=False)[0]
    # Completed epochs: a DeltaHistory row of epoch e is plotted at e + 1 (its start at 0).
    epochs = [row["epoch"] + 1 for row in rows] if all("epoch" in r for r in rows) else None
    for ax, (tap, teachers) in zip(axes, series.items()):
        for teacher, values in sorted(teachers.items()):
            label = teacher_names[teacher] if teacher_names else f"t{teacher}"
            x = epochs if epochs else np.arange(1, len(values) + 1)
            ax.plot(x, values, marker="o", markersize=3, label=label)
        ax.set_title(tap)
        ax.set_xlabel("epoch")
        ax.set_ylim(0.0, 1.0)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("delta (after softmax)")
    axes[-1].legend(fontsize="small")
    figure.tight_layout()
    if path is not None:
        FigureCanvasAgg(figure)
        figure.savefig(path, dpi=120, bbox_inches="tight")
    return figure
