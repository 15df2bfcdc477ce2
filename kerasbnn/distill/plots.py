"""The figure of MAD's delta history (MAD Fig. 3).

It draws on a bare `matplotlib.figure.Figure` with the Agg canvas, so it never touches
pyplot's global state or need a display.
"""

import csv
import re

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["plot_delta_history", "read_delta_csv"]

_DELTA_KEY = re.compile(r"^delta_(?P<tap>.+)_t(?P<teacher>\d+)$")


def read_delta_csv(path):
    """Rows of a `DeltaHistory` CSV as a list of `{column: float}` dicts."""
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _series(rows):
    """{tap: {teacher: [values per row]}} from rows with `delta_<tap>_t<m>` columns."""
    series = {}
    for row in rows:
        for key, value in row.items():
            match = _DELTA_KEY.match(key)
            if match:
                tap, teacher = match.group("tap"), int(match.group("teacher"))
                series.setdefault(tap, {}).setdefault(teacher, []).append(float(value))
    return series


def plot_delta_history(history, path=None, teacher_names=None):
    """Plots each fusion coefficient against the epoch, one panel per distillation point.

    The layout of MAD's Fig. 3: how much the student trusts each teacher at the logits
    and at every tapped feature as training goes on.

    Args:
        history: a `DeltaHistory` CSV path, a list of row dicts, or a Keras
            `History.history` dict with `delta_<tap>_t<m>` keys.
        path: where to save the figure (PNG, PDF...); None only returns it.
        teacher_names: legend labels, one per teacher (default `t0`, `t1`, ...).

    Returns:
        The `matplotlib.figure.Figure`.

    Raises:
        ValueError: if `history` holds no `delta_*` columns.
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
            "No delta_<tap>_t<m> values to plot: pass a DeltaHistory CSV or the history of a "
            "MultiTeacherDistiller fit.")
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
