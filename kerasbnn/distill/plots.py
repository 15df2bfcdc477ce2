"""Figures of MAD: the delta history (MAD Fig. 3) and logits histograms (Fig. 4).

Both draw on a bare `matplotlib.figure.Figure` with the Agg canvas, so they never touch
pyplot's global state or need a display.
"""

import csv
import re

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["plot_delta_history", "plot_logits_histograms", "read_delta_csv"]

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


def _save(figure, path):
    if path is not None:
        FigureCanvasAgg(figure)
        figure.savefig(path, dpi=120, bbox_inches="tight")
    return figure


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
            "MultiTeacherDistiller fit."
        )
    figure = Figure(figsize=(3.2 * len(series), 2.8))
    axes = figure.subplots(1, len(series), squeeze=False)[0]
    for ax, (tap, teachers) in zip(axes, series.items()):
        for teacher, values in sorted(teachers.items()):
            label = teacher_names[teacher] if teacher_names else f"t{teacher}"
            ax.plot(np.arange(1, len(values) + 1), values, marker="o", markersize=3, label=label)
        ax.set_title(tap)
        ax.set_xlabel("epoch")
        ax.set_ylim(0.0, 1.0)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("delta (after softmax)")
    axes[-1].legend(fontsize="small")
    figure.tight_layout()
    return _save(figure, path)


def plot_logits_histograms(models, x, path=None, labels=None, bins=80, batch_size=256):
    """Overlaid histograms of the logits of teachers and a student (MAD Fig. 4).

    Args:
        models: Keras models returning logits (e.g. `[*teachers, student]`).
        x: inputs (array or dataset) passed to `model.predict`.
        path: where to save the figure; None only returns it.
        labels: one legend label per model (default: the model names).
        bins: number of histogram bins, shared by all models.
        batch_size: `predict` batch size for array inputs.

    Returns:
        The `matplotlib.figure.Figure`.

    Raises:
        ValueError: if `models` is empty or `labels` has the wrong length.
    """
    models = list(models)
    if not models:
        raise ValueError("plot_logits_histograms needs at least one model.")
    labels = list(labels) if labels is not None else [m.name for m in models]
    if len(labels) != len(models):
        raise ValueError(f"Got {len(labels)} labels for {len(models)} models.")
    kwargs = {} if hasattr(x, "element_spec") else {"batch_size": batch_size}
    logits = [np.asarray(m.predict(x, verbose=0, **kwargs)).ravel() for m in models]
    low = min(v.min() for v in logits)
    high = max(v.max() for v in logits)
    edges = np.linspace(low, high if high > low else low + 1.0, bins + 1)
    figure = Figure(figsize=(5.0, 3.2))
    ax = figure.subplots()
    for values, label in zip(logits, labels):
        ax.hist(values, bins=edges, histtype="step", density=True, linewidth=1.4, label=label)
    ax.set_xlabel("logit value")
    ax.set_ylabel("density")
    ax.legend(fontsize="small")
    figure.tight_layout()
    return _save(figure, path)
