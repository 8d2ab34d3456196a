"""Named sets of loop flags: ``python -m distill.loop --preset demo`` is the README's first command.

A preset is only flags, put before the ones typed, so any of them can be overridden
(``--preset demo --steps 40``) and ``--preset NAME --print-preset`` shows them all.
"""

from __future__ import annotations

# The demo: one round on the default model, about 15 minutes on a 2-core CPU. Two-digit addition (the
# ``addition`` env) is where SmolLM2-135M measurably uses an example-style context; QA on invented facts is
# the out-of-distribution check (does distilling cost anything elsewhere?). The gate plays 100 validation
# sums with no context and with each candidate; before and after are measured on 200 test sums.
DEMO = (
    "--store", "demo.db", "--out-dir", "runs/demo",
    "--env", "addition", "--ood-env", "qa",
    "--rounds", "1", "--episodes", "16", "--reflect-candidates", "1", "--reflect-budget", "256",
    "--reflect-validation-tasks", "100", "--reflect-validation-max-new-tokens", "64", "--reflect-batch-size", "16",
    "--steps", "20", "--episodes-per-step", "4", "--max-new-tokens", "64",
    "--eval-every", "0", "--eval-tasks", "200", "--eval-max-new-tokens", "64", "--save-every", "20",
)  # fmt: skip

# The demo scaled up (a few hours on a CPU, minutes on a GPU): three rounds, more practice, every family.
FULL = (
    "--store", "exp.db", "--out-dir", "runs/loop", "--env", "math", "--ood-env", "qa",
    "--rounds", "3", "--episodes", "64", "--reflect-candidates", "3", "--reflect-validation-tasks", "200",
    "--steps", "100", "--episodes-per-step", "8", "--eval-every", "25", "--eval-tasks", "300",
)  # fmt: skip

PRESETS: dict[str, tuple[str, ...]] = {"demo": DEMO, "full": FULL}


def expand(argv: list[str]) -> list[str]:
    """``argv`` with ``--preset NAME`` replaced by the preset's flags (typed flags come after, so they win)."""
    if "--preset" not in argv:
        return argv
    at = argv.index("--preset")
    if at + 1 >= len(argv) or argv[at + 1] not in PRESETS:
        raise ValueError(f"--preset needs one of: {', '.join(PRESETS)}")
    return [*PRESETS[argv[at + 1]], *argv[:at], *argv[at + 2 :]]
