"""A whole distillation run: load models, evaluate, step, checkpoint, resume, log, plot, record.

``train(config, context)`` is what ``python -m distill.run`` calls; library users call it directly.
Evaluation is greedy, in three columns: the student without the context (what distillation should
raise), the student with the context (at step 0: the in-context baseline), and the student on a second
env (``ood_env``: does it keep what it could do?). The test split (``config.eval_split``) is measured
only before the first step and after the last; the evaluations every ``eval_every`` steps use
``config.monitor_split`` (validation), also before and after so that its curve has both ends. Nothing
is chosen on the test split. With ``eval_cache`` the start model's evaluations are looked up
(``agents.evaluate.EvalCache``, keyed by ``distill.eval_cache``) instead of repeated. Resuming a finished run returns its results.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from agents.agent import Context
from agents.evaluate import EvalCache, Evaluation, PassRate, evaluate
from agents.llm import SamplingParams
from agents.models import load_model, resolve_device
from common.files import write_text_atomic
from distill.checkpoint import load_checkpoint, resume_point, save_checkpoint
from distill.config import DistillConfig
from distill.eval_cache import evaluation_key
from distill.plots import plot_run
from distill.trainer import Distiller, make_accelerator
from experience_store import ExperienceStore


EvalResults = dict[str, dict[str, Any]]  # column -> PassRate.as_dict()


class MetricsLog:
    """Append-only JSONL of ``{"step": n, "<namespace>/<name>": value, ...}`` records."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def records(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def keep_until(self, step: int) -> None:
        """Drop records after ``step`` (a resumed run redoes them)."""
        kept = [r for r in self.records() if r["step"] <= step]
        write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))


@dataclass
class TrainingResult:
    """What a run produced: evaluations before and after, the final checkpoint and the run's id."""

    before: EvalResults
    after: EvalResults
    checkpoint: Path
    run_id: str | None
    metrics_path: Path


def evaluations(config: DistillConfig, context: Context, split: str) -> dict[str, Evaluation]:
    """The evaluation's columns on ``split``: the student without the context, with it, and on the OOD env."""
    columns = {
        "student": Evaluation(config.env, split, config.eval_tasks),
        "student_with_context": Evaluation(config.env, split, config.eval_tasks, context),
    }
    if config.ood_env:
        columns["ood"] = Evaluation(config.ood_env, split, config.eval_tasks)
    return columns


def evaluate_columns(distiller: Distiller, config: DistillConfig, split: str, cache: EvalCache | None = None) -> tuple[EvalResults, bool]:
    """Greedy pass rates of the current student in each column on ``split`` (looked up in ``cache`` where
    given), as ``PassRate.as_dict()``; and whether every one was found in the cache."""
    llm = distiller.llm(distiller.student)
    params = SamplingParams(max_new_tokens=config.eval_max_new_tokens, temperature=0.0)
    results: EvalResults = {}
    all_cached = cache is not None
    for name, evaluation in evaluations(config, distiller.context, split).items():

        def measure(evaluation: Evaluation = evaluation) -> PassRate:
            return evaluate(llm, params, evaluation, max_prompt_tokens=config.max_prompt_tokens,
                            batch_size=config.eval_batch_size)  # fmt: skip

        if cache is None:
            rate = measure()
        else:
            rate, cached = cache.lookup(evaluation_key(config, evaluation), measure)
            all_cached = all_cached and cached
        results[name] = rate.as_dict()
    return results, all_cached


def train(
    config: DistillConfig,
    context: Context,
    *,
    store: ExperienceStore | None = None,
    resume: bool = False,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    on_eval: Callable[[int, str, EvalResults], None] | None = None,
    loaded: tuple[PreTrainedModel, PreTrainedTokenizerBase] | None = None,
) -> TrainingResult:
    """Run (or resume) a distillation run as ``config`` says; see the module docstring.

    ``loaded``: ``config.model`` already loaded by ``load_model`` on ``config.device`` (one process), trained
    instead of a fresh load; LoRA is injected into it in place, so the caller must not use it afterwards.

    Under ``accelerate launch`` every process samples its own episodes on its own device and the loss is
    the mean over all processes' tokens (``Distiller.backward``); the main process alone evaluates,
    checkpoints and records.
    """
    config.configure_env()
    if config.context_heading:
        context = replace(context, heading=config.context_heading)
    device = resolve_device(config.device)  # no GPU: a one-line error before anything is read or written
    checkpoint = resume_point(config, context) if resume else None  # other settings: refused before loading
    accelerator = make_accelerator(device)  # joins the process group when launched by accelerate
    if accelerator.num_processes > 1 and device != "cpu":
        device = str(accelerator.device)  # this process's own GPU
    student, tokenizer = loaded or load_model(config.model, dtype=config.dtype, device=device)  # type: ignore[arg-type]
    teacher = teacher_tokenizer = None
    if config.teacher:
        teacher, teacher_tokenizer = load_model(config.teacher, dtype=config.dtype, device=device)  # type: ignore[arg-type]
    distiller = Distiller(config, student, tokenizer, context, teacher, teacher_tokenizer, accelerator)
    log = MetricsLog(config.out_dir / "metrics.jsonl")
    is_main = accelerator.is_main_process

    run_id: str | None = None
    if checkpoint is not None:
        run_id = load_checkpoint(distiller, checkpoint).get("run_id")
        if is_main:
            log.keep_until(distiller.step_count)
    elif log.records():
        if not resume:
            raise FileExistsError(f"{config.out_dir} holds an earlier run; pass --resume to continue it or choose another --out-dir")
        accelerator.wait_for_everyone()
        if is_main:  # killed before its first checkpoint: nothing to resume, start over
            log.keep_until(-1)
    finished_before = checkpoint is not None and distiller.step_count >= config.steps
    accelerator.wait_for_everyone()  # every process has checked before the main one writes
    if store is not None and run_id is None and is_main:
        run_id = store.create_run({**config.to_dict(), "context_id": context.id, "context_kind": context.kind})

    def record(step: int, metrics: dict[str, float]) -> None:
        if not is_main:
            return
        log.append({"step": step, **metrics})
        if store is not None and run_id is not None:
            store.log_run_metrics(run_id, step, metrics)

    cache = EvalCache(config.eval_cache) if config.eval_cache is not None else None

    def evaluation(step: int, split: str) -> None:
        if not is_main:
            return
        # The start model's evaluations are the same for every run with their keys.
        results, cached = evaluate_columns(distiller, config, split, cache if step == 0 else None)
        record(step, {f"eval_{split}/{name}": r["rate"] for name, r in results.items()})
        log.append({"step": step, "split": split, "eval_detail": results, "from_cache": cached})
        if on_eval:
            on_eval(step, split, results)

    # The test split before and after only; the monitoring split also at both ends when it has a curve.
    monitored = bool(config.eval_every) and config.monitor_split != config.eval_split
    end_splits = [config.eval_split, *([config.monitor_split] if monitored else [])]

    try:
        if distiller.step_count == 0:
            for split in end_splits:
                evaluation(0, split)
        while distiller.step_count < config.steps:
            metrics = distiller.step()
            step = distiller.step_count
            record(step, {f"train/{k}": v for k, v in metrics.items()})
            if on_step:
                on_step(step, metrics)
            if config.eval_every and step % config.eval_every == 0 and step < config.steps:
                evaluation(step, config.monitor_split)
            if is_main and config.save_every and step % config.save_every == 0 and step < config.steps:
                save_checkpoint(distiller, config.out_dir, {"run_id": run_id})
        if finished_before:
            final = checkpoint  # its final evaluation is in the log already
        else:
            for split in end_splits:
                evaluation(distiller.step_count, split)
            final = save_checkpoint(distiller, config.out_dir, {"run_id": run_id}) if is_main else config.out_dir
    except BaseException as err:
        if store is not None and run_id is not None and is_main:
            store.finish_run(run_id, "cancelled" if isinstance(err, KeyboardInterrupt) else "failed")
        raise

    details = [r for r in log.records() if "eval_detail" in r and r["split"] == config.eval_split]
    before, after = details[0]["eval_detail"], details[-1]["eval_detail"]
    if is_main:
        plot_run(log.records(), config.out_dir)
        if store is not None and run_id is not None:
            store.finish_run(run_id, "completed", final, {"before": before, "after": after})
    return TrainingResult(before, after, Path(final), run_id, log.path)
