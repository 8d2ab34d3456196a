"""PNG plots of a run from its metrics records: training curves and evaluation pass rates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in records if key in r]
    return [s for s, _ in points], [v for _, v in points]


def plot_run(records: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Write ``training.png`` (loss, KL, entropy) and ``evaluation.png`` (pass rates) into ``out_dir``."""
    out_dir = Path(out_dir)
    written = []
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for key, label in (("train/loss", "loss"), ("train/kl_token_mean", "per-token loss (mean)")):
        axes[0].plot(*_series(records, key), label=label)
    axes[0].set_xlabel("step")
    axes[0].legend()
    axes[0].set_title("training loss")
    axes[1].plot(*_series(records, "train/student_entropy"), color="tab:green")
    axes[1].set_xlabel("step")
    axes[1].set_title("student entropy (nats)")
    fig.tight_layout()
    written.append(out_dir / "training.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    labels = {"eval/student": "without context", "eval/student_with_context": "with context", "eval/ood": "OOD env"}
    for key, label in labels.items():
        steps, values = _series(records, key)
        if steps:
            ax.plot(steps, [100 * v for v in values], marker="o", label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("pass rate (%)")
    ax.set_title("evaluation (greedy)")
    ax.legend()
    fig.tight_layout()
    written.append(out_dir / "evaluation.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)
    return written


def plot_rounds(rounds: list[dict[str, Any]], out_dir: Path) -> Path:
    """``rounds.png``: test pass rate without / with the context after each round, and mean reply length."""
    numbers = [r["round"] for r in rounds]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    axes[0].plot([0] + numbers, [100 * rounds[0]["before"]["student"]["rate"]] + [100 * r["after"]["student"]["rate"] for r in rounds], marker="o", label="without context")
    axes[0].plot(numbers, [100 * r["before"]["student_with_context"]["rate"] for r in rounds], marker="s", label="with the round's context (before distilling)")
    if "ood" in rounds[0]["after"]:
        axes[0].plot(numbers, [100 * r["after"]["ood"]["rate"] for r in rounds], marker="^", label="OOD env")
    axes[0].set_xlabel("round")
    axes[0].set_ylabel("test pass rate (%)")
    axes[0].legend(fontsize=8)
    axes[1].bar(numbers, [r["mean_reply_tokens"] for r in rounds], color="tab:gray")
    axes[1].set_xlabel("round")
    axes[1].set_title("mean reply length while collecting (tokens)")
    fig.tight_layout()
    path = Path(out_dir) / "rounds.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
