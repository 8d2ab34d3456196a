"""PNG plots of a run from its metrics records: training curves and evaluation pass rates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in records if key in r]
    return [s for s, _ in points], [v for _, v in points]


def _errorbar(ax: Axes, xs: list[int], rates: list[dict[str, Any]], **style: Any) -> None:
    """Pass rates (``PassRate.as_dict`` records) in percent with their 95% intervals as error bars."""
    values = [100 * r["rate"] for r in rates]
    below = [100 * (r["rate"] - r["low"]) for r in rates]
    above = [100 * (r["high"] - r["rate"]) for r in rates]
    ax.errorbar(xs, values, yerr=[below, above], marker="o", capsize=3, **style)


def plot_run(records: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Write ``training.png`` (loss, KL, entropy) and ``evaluation.png`` (pass rates) into ``out_dir``."""
    out_dir = Path(out_dir)
    written = []
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    per_token = (("train/kl_token_mean", "per-token KL (mean)"), ("train/nll_token_mean", "per-token NLL (mean)"))
    for key, label in (("train/loss", "loss"), *per_token):  # nll: sft's loss; kl: the other methods'
        if not any(key in r for r in records):
            continue
        axes[0].plot(*_series(records, key), label=label)
    axes[0].set_xlabel("step")
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].legend()
    axes[0].set_title("training loss")
    axes[1].plot(*_series(records, "train/student_entropy"), color="tab:green")
    axes[1].set_xlabel("step")
    axes[1].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[1].set_title("student entropy (nats)")
    fig.tight_layout()
    written.append(out_dir / "training.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    labels = {"student": "without context", "student_with_context": "with context", "ood": "OOD env"}
    evaluations = [r for r in records if "eval_detail" in r]
    for split, style in (("validation", "--"), ("test", "-")):
        for name, label in labels.items():
            points = [(r["step"], r["eval_detail"][name]) for r in evaluations if r.get("split") == split and name in r["eval_detail"]]
            if points:
                _errorbar(ax, [s for s, _ in points], [p for _, p in points], label=f"{label} ({split})", linestyle=style)
    ax.set_xlabel("step")
    ax.set_ylabel("pass rate (%, 95% Wilson)")
    ax.set_title("evaluation (greedy)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=7)
    fig.tight_layout()
    written.append(out_dir / "evaluation.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)
    return written


def plot_rounds(rounds: list[dict[str, Any]], out_dir: Path) -> Path | None:
    """``rounds.png``: test pass rates without the context after each distilled round (round 0: the start
    model), with the round's context before distilling, and the OOD env, each with its 95% Wilson interval.
    Rounds whose knowledge the gate refused distilled nothing and are not drawn; None when no round distilled."""
    rounds = [r for r in rounds if r["after"]]
    if not rounds:
        return None
    numbers = [r["round"] for r in rounds]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    without = [rounds[0]["before"]["student"]] + [r["after"]["student"] for r in rounds]
    _errorbar(ax, [0, *numbers], without, label="without context (round 0: the start model)")
    _errorbar(ax, numbers, [r["before"]["student_with_context"] for r in rounds],
              label="with the round's context (before distilling)")  # fmt: skip
    if "ood" in rounds[0]["after"]:
        _errorbar(ax, [0, *numbers], [rounds[0]["before"]["ood"]] + [r["after"]["ood"] for r in rounds],
                  label="OOD env")  # fmt: skip
    ax.set_xlabel("round")
    ax.set_ylabel("test pass rate (%, 95% Wilson)")
    ax.set_xticks([0, *numbers])
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(out_dir) / "rounds.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
