"""The start model's evaluations, shared by runs that would repeat them exactly (a sweep over seeds or methods).

Evaluation is greedy on fixed tasks, so before the first step its pass rates depend only on what ``key``
holds: a sweep evaluates each (model, env, context, tasks, budget) once. The file is JSON, written under
a lock (workers in parallel may share it). Delete it after changing how prompts are built or scored.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agents.agent import Context
from common.files import locked, write_text_atomic
from distill.config import DistillConfig

EvalResults = dict[str, dict[str, Any]]  # column -> PassRate.as_dict()

# What an evaluation of the start model depends on; seed, method, steps and the teacher do not enter it.
KEY_FIELDS = ("model", "dtype", "device", "backend", "env", "env_args", "ood_env", "eval_tasks",
              "eval_max_new_tokens", "max_prompt_tokens")  # fmt: skip
FORMAT = 2  # results hold each task's outcome (for paired comparisons); entries of older formats are not used


def evaluation_key(config: DistillConfig, context: Context, split: str) -> str:
    """A digest of everything the start model's evaluation on ``split`` depends on."""
    fields: dict[str, Any] = {name: getattr(config, name) for name in KEY_FIELDS}
    fields["split"], fields["format"] = split, FORMAT
    fields["context"] = [context.kind, context.text]
    folder = Path(config.model)
    if folder.is_dir():  # a checkpoint folder: the same path may later hold other weights
        fields["files"] = sorted((str(f.relative_to(folder)), f.stat().st_size, f.stat().st_mtime_ns)
                                 for f in folder.rglob("*") if f.is_file())  # fmt: skip
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=list).encode()).hexdigest()


class EvalCache:
    """A JSON file mapping ``evaluation_key`` digests to evaluation results."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.lock = self.path.with_name(self.path.name + ".lock")

    def get(self, key: str) -> EvalResults | None:
        with locked(self.lock):
            return self._read().get(key)

    def put(self, key: str, results: EvalResults) -> None:
        with locked(self.lock):
            entries = {**self._read(), key: results}
            write_text_atomic(self.path, json.dumps(entries, indent=1))

    def lookup(self, key: str, measure: Callable[[], EvalResults]) -> tuple[EvalResults, bool]:
        """The results stored under ``key``, else ``measure()``'s, stored; and whether they were stored before."""
        found = self.get(key)
        if found is not None:
            return found, True
        results = measure()
        self.put(key, results)
        return results, False

    def _read(self) -> dict[str, EvalResults]:
        if not self.path.exists():
            return {}
        try:
            entries = json.loads(self.path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(
                f"evaluation cache {self.path} is not valid JSON ({err}); delete it to start afresh"
            ) from err
        if not isinstance(entries, dict):
            raise ValueError(f"evaluation cache {self.path} does not hold a JSON object; delete it to start afresh")
        return entries
