"""What a start-model evaluation depends on, so that runs which would repeat it exactly (a sweep over seeds
or methods) measure it once, in ``agents.evaluate.EvalCache``.

Evaluation is greedy on fixed tasks, so before the first step a pass rate depends only on what the key
holds; seed, method, steps and the teacher do not enter it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from agents.evaluate import Evaluation
from distill.config import DistillConfig

KEY_FIELDS = ("model", "dtype", "device", "backend", "env_args", "eval_max_new_tokens", "max_prompt_tokens")
FORMAT = 3  # one key per evaluation (column); entries of older formats are not used


def evaluation_key(config: DistillConfig, evaluation: Evaluation) -> str:
    """A digest of everything the start model's pass rate on ``evaluation`` depends on."""
    fields: dict[str, Any] = {name: getattr(config, name) for name in KEY_FIELDS}
    context = evaluation.context
    fields.update(env=evaluation.env, split=evaluation.split, tasks=evaluation.tasks, format=FORMAT,
                  context=[context.kind, context.text, context.heading] if context else None)  # fmt: skip
    folder = Path(config.model)
    if folder.is_dir():  # a checkpoint folder: the same path may later hold other weights
        fields["files"] = sorted((str(f.relative_to(folder)), f.stat().st_size, f.stat().st_mtime_ns)
                                 for f in folder.rglob("*") if f.is_file())  # fmt: skip
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=list).encode()).hexdigest()
