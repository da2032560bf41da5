"""Matplotlib figures of the comparison: curves, pretext, example predictions, confusion matrices."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import confusion_matrix  # noqa: E402

from selfsup.core.files import atomic_path  # noqa: E402

COLORS = {"scratch": "tab:blue", "pretrained": "tab:orange"}
CURVES = [("loss", "Loss (solid: val, dashed: train)"), ("f1_macro", "Macro F1"),
          ("precision_macro", "Macro precision"), ("recall_macro", "Macro recall"), ("accuracy", "Accuracy")]


def _save(fig: plt.Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def _mean_band(ax, runs: list[np.ndarray], color: str, label: str, ls: str = "-") -> None:
    """The mean over seeds as a line, the range over seeds as a band."""
    n = min(len(r) for r in runs)
    stack = np.array([r[:n] for r in runs])
    epochs = np.arange(1, n + 1)
    ax.plot(epochs, stack.mean(0), color=color, ls=ls, label=label)
    if len(runs) > 1:
        ax.fill_between(epochs, stack.min(0), stack.max(0), color=color, alpha=0.15, lw=0)


def curves(histories: dict[str, list[dict[str, np.ndarray]]], threshold: float, path: Path) -> None:
    """Validation curves per quantity (and the training loss, dashed), scratch vs pretrained on one axis each:
    the mean over seeds, with the range over seeds shaded. No test curve: the test set is scored once."""
    fig, axes = plt.subplots(1, len(CURVES), figsize=(4 * len(CURVES), 3.4))
    for ax, (key, title) in zip(axes, CURVES):
        for init, runs in histories.items():
            _mean_band(ax, [h[f"val/{key}"] for h in runs], COLORS[init], f"{init} val")
            if key == "loss":
                _mean_band(ax, [h["train/loss"] for h in runs], COLORS[init], f"{init} train", "--")
        if key == "f1_macro":
            ax.axhline(threshold, color="gray", lw=0.8, ls="-.", label="convergence threshold")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    _save(fig, path)


def pretext(histories: list[dict[str, np.ndarray]], steps: list[dict[str, np.ndarray]], task: dict, path: Path
            ) -> None:
    """Per seed's pretraining: pretext loss, the task's metric (train and held-out, with chance where it has
    one), linear probe; `steps` (per seed, per metric) says which epochs the monitors measured."""
    metric = task["metric"]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for k, history in enumerate(histories):
        color = f"C{k}"
        loss = history.get("train/pretext_loss", np.array([]))
        axes[0].plot(np.arange(1, len(loss) + 1), loss, color=color)
        acc = history.get(f"train/pretext_{metric}", np.array([]))
        axes[1].plot(np.arange(1, len(acc) + 1), acc, color=color, label="train" if k == 0 else None)
        held = history.get(f"val/pretext_{metric}", np.array([]))
        axes[1].plot(steps[k].get(f"val/pretext_{metric}", np.arange(len(held))), held, color=color, ls="--",
                     label="held-out (val images)" if k == 0 else None)
        probe = history.get("probe/linear_accuracy", np.array([]))
        axes[2].plot(steps[k].get("probe/linear_accuracy", np.arange(len(probe))), probe, marker="o", ms=3,
                     color=color)
    if task.get("chance"):
        axes[1].axhline(task["chance"], color="gray", lw=0.8, ls="-.", label="chance")
    axes[0].set_title(f"Pretext ({task['task']}) training loss, {len(histories)} seeds")
    axes[1].set_title(f"Pretext {metric}")
    axes[1].legend(fontsize=7)
    axes[2].set_title("Linear probe accuracy (epoch 0 = random)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    _save(fig, path)


def examples(images: np.ndarray, actual: list[str], predicted: dict[str, list[str]], path: Path) -> None:
    """A row of test images, each titled with its true label and both models' predictions."""
    fig, axes = plt.subplots(1, len(images), figsize=(1.6 * len(images), 2.4))
    for i, ax in enumerate(np.atleast_1d(axes)):
        ax.imshow(images[i].transpose(1, 2, 0), interpolation="nearest")
        lines = [f"true: {actual[i]}"] + [
            f"{init[:4]}: {preds[i]}{'' if preds[i] == actual[i] else ' ✗'}" for init, preds in predicted.items()]
        ax.set_title("\n".join(lines), fontsize=7)
        ax.axis("off")
    _save(fig, path)


def confusions(actual: np.ndarray, predicted: dict[str, list[np.ndarray]], classes: list[str], path: Path) -> None:
    """One confusion matrix per init, summed over seeds (each seed predicts the same test images)."""
    fig, axes = plt.subplots(1, len(predicted), figsize=(5.5 * len(predicted), 5))
    for ax, (init, runs) in zip(np.atleast_1d(axes), predicted.items()):
        cm = sum(confusion_matrix(actual, preds, labels=np.arange(len(classes))) for preds in runs)
        ax.imshow(cm, cmap="Blues")
        for (r, c), v in np.ndenumerate(cm):
            ax.text(c, r, str(v), ha="center", va="center", fontsize=6,
                    color="white" if v > cm.max() / 2 else "black")
        ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{init} (test, last epoch, {len(runs)} seeds summed)")
    _save(fig, path)


def label_efficiency(series: dict[str, list[tuple[float, dict]]], gains: dict[str, list[tuple[float, dict]]],
                     margin: float, path: Path, ylabel: str = "test macro-F1") -> None:
    """Left: the metric against the label fraction per init (scratch, and fine-tuned from each pretext), the mean
    over seeds with its confidence interval. Right: each pretext's paired gain over scratch with its interval, and
    the equivalence margin as a band around 0."""
    fig, (ax, gx) = plt.subplots(1, 2, figsize=(10, 3.6))
    colors = {"scratch": COLORS["scratch"], "context": COLORS["pretrained"]}
    palette = iter(["tab:green", "tab:red", "tab:purple", "tab:brown"])

    def draw(axis, name: str, points: list[tuple[float, dict]], i: int) -> None:
        points = sorted(points)
        x = np.array([f for f, _ in points]) * (1 + 0.03 * (i - 1))  # a little apart so the bars do not overlap
        mean = np.array([p["mean"] for _, p in points])
        low = np.array([p["ci_low"] if p["ci_low"] is not None else p["mean"] for _, p in points])
        high = np.array([p["ci_high"] if p["ci_high"] is not None else p["mean"] for _, p in points])
        color = colors[name] if name in colors else colors.setdefault(name, next(palette))
        axis.errorbar(x, mean, yerr=[mean - low, high - mean], color=color, marker="o", capsize=4, label=name)
    for i, (name, points) in enumerate(series.items()):
        draw(ax, name, points, i)
    for i, (name, points) in enumerate(gains.items()):
        draw(gx, name, points, i + 1)
    gx.axhspan(-margin, margin, color="0.85", label=f"equivalence margin ±{margin:g}")
    gx.axhline(0, color="0.4", lw=0.8)
    fractions = sorted({f for points in series.values() for f, _ in points})
    for axis, label in ((ax, ylabel), (gx, f"gain over scratch ({ylabel})")):
        axis.set_xscale("log")
        axis.set_xticks(fractions, [f"{f:.0%}" for f in fractions])
        axis.minorticks_off()
        axis.set_xlabel("share of the labels")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    _save(fig, path)


def fraction_curves(curves: dict[float, dict[str, list]], path: Path) -> None:
    """Validation macro-F1 per epoch (mean over seeds), one panel per label fraction (a fixed budget: the runs keep
    their last epoch, so the curves show how far each was from its plateau)."""
    fig, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3.2), squeeze=False)
    for ax, (fraction, columns) in zip(axes[0], sorted(curves.items(), reverse=True)):
        for init, color in COLORS.items():
            ax.plot(columns["epoch"], columns[f"{init}_val_f1_macro"], color=color, label=init)
        ax.set_title(f"{fraction:.0%} of the labels")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation macro-F1 (mean over seeds)")
    axes[0][0].legend(fontsize=7)
    _save(fig, path)
