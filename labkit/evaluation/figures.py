"""The figures of ``labkit evaluate`` and lab 06: generated vs real scores per digit, best and worst samples.

Drawn with ``labkit.plotting``'s panels on a matplotlib ``Figure`` (no pyplot: the notebook's backend is left
alone), from the dict ``evaluate_samples`` returns or from images with a score each.
"""

from __future__ import annotations

import torch

from labkit.errors import LabkitValueError
from labkit.evaluation.classifier import check_images
from labkit.plotting import digit_rows_panel, per_digit_bars

PLOT_METRICS = {
    "accuracy": "classifier accuracy",
    "confidence": "classifier p(intended digit)",
    "clip_prob": "CLIP p(intended digit)",
    "clip_clear": "CLIP P(clear vs blurry)",
}


def _bars(ax, result: dict, metric: str) -> None:
    def values(key):
        return [r[key] if r[key] is not None else float("nan") for r in result["per_digit"]]

    per_digit_bars(ax, values(metric), values(f"real_{metric}"), PLOT_METRICS[metric])


def plot_per_digit_scores(result: dict, path_or_ax=None, *, metric: str | None = None):
    """Bars of generated vs real scores per digit.

    path_or_ax: a matplotlib Axes (draws ``metric``, default accuracy, into it), a file path (saves a
    figure with one panel per available score) or None (returns that figure). Returns the Figure.
    """
    from matplotlib.figure import Figure  # no pyplot: never touches the notebook's backend

    if metric is not None and metric not in PLOT_METRICS:
        raise LabkitValueError(f"metric must be one of {list(PLOT_METRICS)}, got {metric!r}.")
    if hasattr(path_or_ax, "bar"):  # an Axes
        _bars(path_or_ax, result, metric or "accuracy")
        return path_or_ax.figure
    metrics = [metric] if metric else [m for m in PLOT_METRICS if result["overall"][m] is not None]
    fig = Figure(figsize=(4.2 * len(metrics), 3.2), layout="constrained")
    for i, m in enumerate(metrics):
        _bars(fig.add_subplot(1, len(metrics), i + 1), result, m)
    if path_or_ax is not None:
        fig.savefig(path_or_ax, dpi=120)
    return fig


def best_worst_indices(labels: torch.Tensor, scores: torch.Tensor, k: int) -> dict[int, tuple[list, list]]:
    """For each digit: (indices of its k highest scores, best first; indices of its k lowest, worst first)."""
    labels, scores = labels.cpu(), scores.detach().float().cpu()
    out = {}
    for d in range(10):
        idx = (labels == d).nonzero()[:, 0]
        order = idx[scores[idx].argsort(descending=True)]
        out[d] = (order[:k].tolist(), order.flip(0)[:k].tolist())
    return out


def plot_best_worst(images: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor, k: int = 5, path=None):
    """Two panels, one row per digit: its k best and its k worst samples by ``scores`` [N] (e.g. the
    classifier's p(intended digit) from ``classifier_accuracy(...)["intended_prob"]``). Returns the Figure."""
    from matplotlib.figure import Figure

    check_images(images)
    if scores.shape != (len(images),) or labels.shape != (len(images),):
        raise LabkitValueError(
            f"labels and scores must have shape [{len(images)}], got {list(labels.shape)} and {list(scores.shape)}."
        )
    picks = best_worst_indices(labels, scores, k)
    fig = Figure(figsize=(2 * 0.55 * k + 1.2, 6.2), layout="constrained")
    for col, title in enumerate(("best", "worst")):
        rows = [picks[d][col] for d in range(10)]
        digit_rows_panel(fig.add_subplot(1, 2, col + 1), images, rows, scores, k, f"{title} {k} per digit")
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
