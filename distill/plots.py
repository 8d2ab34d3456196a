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
