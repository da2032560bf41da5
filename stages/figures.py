"""Matplotlib figures of the comparison: curves, pretext, example predictions, confusion matrices."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import confusion_matrix  # noqa: E402

from stages.common import atomic_path  # noqa: E402

COLORS = {"scratch": "tab:blue", "pretrained": "tab:orange"}
CURVES = [("loss", "Loss (solid: val, dashed: train)"), ("f1_macro", "Macro F1"),
          ("precision_macro", "Macro precision"), ("recall_macro", "Macro recall"), ("accuracy", "Accuracy")]


def _save(fig: plt.Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def curves(histories: dict[str, dict[str, np.ndarray]], threshold: float, path: Path) -> None:
    """Validation (solid) and test (dotted) curves per quantity, scratch vs pretrained on one axis each."""
    fig, axes = plt.subplots(1, len(CURVES), figsize=(4 * len(CURVES), 3.4))
    for ax, (key, title) in zip(axes, CURVES):
        for init, hist in histories.items():
            epochs = np.arange(1, len(hist[f"val/{key}"]) + 1)
            ax.plot(epochs, hist[f"val/{key}"], color=COLORS[init], label=f"{init} val")
            if key == "loss":
                ax.plot(epochs, hist["train/loss"], color=COLORS[init], ls="--", label=f"{init} train")
            else:
                ax.plot(epochs, hist[f"test/{key}"], color=COLORS[init], ls=":", label=f"{init} test")
        if key == "f1_macro":
            ax.axhline(threshold, color="gray", lw=0.8, ls="-.", label="plateau threshold")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    _save(fig, path)


def pretext(history: dict[str, np.ndarray], path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    loss = history.get("train/pretext_loss", np.array([]))
    axes[0].plot(np.arange(1, len(loss) + 1), loss)
    axes[0].set_title("Pretext training loss")
    acc = history.get("train/pretext_accuracy", np.array([]))
    axes[1].plot(np.arange(1, len(acc) + 1), acc, label="train")
    held = history.get("val/pretext_accuracy", np.array([]))
    axes[1].plot(np.arange(len(held)), held, label="held-out (val images)")
    axes[1].axhline(1 / 8, color="gray", lw=0.8, ls="-.", label="chance")
    axes[1].set_title("Pretext accuracy (8 positions)")
    axes[1].legend(fontsize=7)
    probe = history.get("probe/linear_accuracy", np.array([]))
    axes[2].plot(np.arange(len(probe)), probe, marker="o", ms=3)
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


def confusions(actual: np.ndarray, predicted: dict[str, np.ndarray], classes: list[str], path: Path) -> None:
    fig, axes = plt.subplots(1, len(predicted), figsize=(5.5 * len(predicted), 5))
    for ax, (init, preds) in zip(np.atleast_1d(axes), predicted.items()):
        cm = confusion_matrix(actual, preds, labels=np.arange(len(classes)))
        ax.imshow(cm, cmap="Blues")
        for (r, c), v in np.ndenumerate(cm):
            ax.text(c, r, str(v), ha="center", va="center", fontsize=6,
                    color="white" if v > cm.max() / 2 else "black")
        ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{init} (test, best epoch)")
    _save(fig, path)
