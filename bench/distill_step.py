"""OPCD step benchmark: seconds and peak memory per ``Distiller.step`` against TRL's ``SDFTTrainer``,
plus the loss's memory chunked against naive.

Run: ``python -m bench.distill_step`` (``--reps N`` measured steps after one warm-up, default 1;
``--threads``, default 1; ``--no-trl``; ``--profile``: ``torch.profiler``'s top operators of one more step
of ours; ``--accuracy-dtype bfloat16``: the bench batch's loss with the model in that dtype against float32,
on the same samples). TRL is optional: ``pip install trl==1.16.0``.

Equivalence: ours' warm-up step is step 0 of a seeded run, so its samples and loss are fixed; the loss is
printed against ``REFERENCE_LOSS``, the value the code before the log-prob and student-prefix changes gave.
Ours' "student" time is split into the student's decoder forward, the loss (both LM heads, the KL and its
gradient w.r.t. the hidden states, fused) and the rest (backward through the decoder, AdamW).

The step workload: the default model (LoRA r=16 on all linear layers, the teacher = adapters disabled),
4 QA prompts (the ``qa`` env's train tasks 0-3), a context of exactly 1,024 tokens (the QA handbook,
repeated and cut), replies of exactly 128 tokens (eos masked until then by ``min_new_tokens``, on both
sides), temperature 0.7, reverse KL over the student's top-256 tokens renormalised, one AdamW step
(lr 1e-4, wd 0.01, clip 1.0), fp32.

TRL's ``SDFTTrainer`` gets the same prompts, context text, reply length, sampling, top-k, LoRA and
optimizer: ``distillation_mode="topk_logits"``, ``distillation_topk=256``, no tail bucket (renormalised),
``distillation_alpha=1.0`` (its ``compute_divergence`` with alpha=1 is ``kl_div(teacher, student)`` =
KL(student || teacher), the reverse KL; alpha=0 is the forward KL; the loss table checks it equals
ours), ``teacher_model_kind="base"`` (adapters disabled), ``num_generations=1`` (4 distinct prompts).
Changed from its defaults to do the same work: ``bf16=False`` and ``gradient_checkpointing=False`` (ours
runs fp32 without activation checkpointing), ``max_prompt_length=None`` (512 would cut the 1k-token
context from the teacher prompt). Differences left: TRL puts the context in the user turn (its teacher
template), ours in the system message (the same text; the table shows both teacher rows' lengths); TRL's
"teacher" phase includes its LM head, ours projects teacher logits inside the chunked loss (counted
under "student"); the sampled tokens differ (different RNG streams).

Time: CPU seconds of the child (``time.process_time``, all its threads) per phase, since other load on a
shared machine inflates wall time (printed too); 1 torch thread by default, as 2 threads on a loaded
2-core machine made generation ~25x slower (OpenMP threads waiting on each other).

Memory: torch's CPU allocations are invisible to tracemalloc, so every measurement runs in a fresh
``spawn`` child and reads the kernel's peak RSS (``ru_maxrss``), its high-water mark reset just before
the measured region (``/proc/self/clear_refs``), minus the RSS after loading (steps: before the warm-up,
so state the steps keep, e.g. optimizer moments or memory the allocator holds, counts).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

import envs
from agents.agent import Context, build_messages
from agents.hf_backend import HFBackend, shared_prefix_length
from agents.llm import LLM, SamplingParams
from agents.models import DEFAULT_MODEL, load_model
from agents.records import Message
from agents.rollout import Task
from bench.distill_loss import LossResult, loss_case, loss_table
from bench.measure import MIB, child_setup, in_fresh_process, peak_rss, reset_peak, rss
from common.chat import chat_prompt_ids
from distill.config import DistillConfig
from distill.losses import LossOutput
from distill.trainer import Distiller, Sample

BATCH, CONTEXT_TOKENS, REPLY_TOKENS, TOP_K = 4, 1024, 128, 256
TEMPERATURE, LORA_R, LORA_ALPHA, LR = 0.7, 16, 32, 1e-4
# The float32 loss of ours' warm-up step (step 0, seeded) before the log-prob and student-prefix changes
# (commit cfed62c, torch 2.13.0+cpu); the loss of the same samples must stay within 1e-5 of it.
REFERENCE_LOSS, REFERENCE_TOLERANCE = 0.11742790788412094, 1e-5


# -- the step workload ----------------------------------------------------------------------------------


def bench_context(tokenizer: PreTrainedTokenizerBase) -> Context:
    """The QA handbook repeated and cut to exactly ``CONTEXT_TOKENS`` tokens, as a handbook context."""
    handbook = envs.make("qa").handbook
    ids = tokenizer(f"{handbook}\n\n{handbook}", add_special_tokens=False)["input_ids"][:CONTEXT_TOKENS]
    text = tokenizer.decode(ids)
    assert len(tokenizer(text, add_special_tokens=False)["input_ids"]) == CONTEXT_TOKENS
    return Context(text, "handbook", id="bench")


def student_conversations() -> list[list[Message]]:
    """The student's prompts (no context): the QA env's train tasks 0 .. BATCH-1."""
    env = envs.make("qa")
    conversations = []
    for index in range(BATCH):
        observation, _ = env.reset(options={"split": "train", "index": index})
        conversations.append(build_messages(env.instructions, [], observation))
    return conversations


def distill_config() -> DistillConfig:
    return DistillConfig(
        env="qa", episodes_per_step=BATCH, max_new_tokens=REPLY_TOKENS, temperature=TEMPERATURE, top_p=1.0,
        lr=LR, lora_r=LORA_R, lora_alpha=LORA_ALPHA, kl_top_k=TOP_K, topk_mode="renormalize",
    )


class Clock:
    """Wall and CPU seconds (this process, all threads) summed per phase name."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.wall[name] += time.perf_counter() - wall
        self.cpu[name] += time.process_time() - cpu


@dataclass
class StepResult:
    """Median CPU seconds per phase over the measured steps, the wall seconds, the peak memory, and what the
    teacher scored. CPU time is what the comparison uses: other load on a shared machine inflates wall time."""

    generation: float
    teacher: float
    student: float  # student forward + loss + backward + optimizer (and everything else in the step)
    split: dict[str, float]  # ours: the student's part split into "student forward", "loss", "backward + AdamW"
    total: float
    wall: float
    peak_bytes: int
    memory_method: str
    reply_tokens: list[int]
    teacher_row: int  # the teacher's longest row: context prompt + reply, in tokens
    teacher_tokens: int  # tokens the teacher's forward runs per step (padding and a cached prefix counted once)


def summarize(steps: list[Clock], peak: int, method: str, replies: list[int], row: int, tokens: int) -> StepResult:
    keys = ("generation", "teacher", "step", "student forward", "loss")
    cpu = {key: statistics.median(s.cpu[key] for s in steps) for key in keys}
    student = cpu["step"] - cpu["generation"] - cpu["teacher"]
    split = {}
    if cpu["loss"]:  # ours: "loss" holds the teacher and the student's forward
        loss = cpu["loss"] - cpu["teacher"] - cpu["student forward"]
        split = {"student forward": cpu["student forward"], "loss": loss, "backward + AdamW": student - cpu["loss"] + cpu["teacher"]}
    return StepResult(
        cpu["generation"], cpu["teacher"], student, split, cpu["step"],
        statistics.median(s.wall["step"] for s in steps), peak, method, replies, row, tokens,
    )


class FixedLengthBackend(HFBackend):
    """HF generation whose replies are exactly ``max_new_tokens`` long: eos is masked until then."""

    def _generation_config(self, params: SamplingParams) -> GenerationConfig:
        config = super()._generation_config(params)
        config.min_new_tokens = params.max_new_tokens
        return config


class TimedDecoder(torch.nn.Module):
    """The student's decoder, its forward passes timed under ``clock``'s "student forward"."""

    def __init__(self, decoder: torch.nn.Module, owner: BenchDistiller) -> None:
        super().__init__()
        self.decoder, self.owner = decoder, [owner]  # a list: not a submodule

    def forward(self, *args: Any) -> torch.Tensor:
        with self.owner[0].clock.phase("student forward"):
            return self.decoder(*args)


class BenchDistiller(Distiller):
    """``Distiller`` on fixed tasks with fixed-length replies, timing its sampling, the teacher's forward, the
    student's forward and the whole loss."""

    clock = Clock()
    last_samples: list[Sample] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.decoder = TimedDecoder(self.decoder, self)

    def loss(self, samples: list[Sample]) -> LossOutput:
        with self.clock.phase("loss"):
            return super().loss(samples)

    def train_tasks(self, step: int) -> list[Task]:
        return [Task("train", i) for i in range(BATCH)]

    def llm(self, model: PreTrainedModel) -> LLM:
        return FixedLengthBackend.from_model(model, self.tokenizer, name=self.config.model)

    def sample(self, step: int) -> list[Sample]:
        with self.clock.phase("generation"):
            self.last_samples = super().sample(step)
        return self.last_samples

    @contextmanager
    def teacher_model(self) -> Iterator[PreTrainedModel]:
        with self.clock.phase("teacher"), super().teacher_model() as model:
            yield model


def ours_step(reps: int, threads: int, profile: bool = False) -> tuple[StepResult, float, str]:
    """Child process: one warm-up and ``reps`` measured ``Distiller.step`` calls; also the warm-up's loss
    and, with ``profile``, ``torch.profiler``'s top operators of one more step."""
    child_setup(threads)
    model, tokenizer = load_model(DEFAULT_MODEL)
    distiller = BenchDistiller(distill_config(), model, tokenizer, bench_context(tokenizer))
    loaded = rss()
    first_loss = distiller.step()["loss"]
    steps, peak, method = [], 0, ""
    for _ in range(reps):
        distiller.clock = Clock()
        method = reset_peak()
        with distiller.clock.phase("step"):
            distiller.step()
        peak = max(peak, peak_rss() - loaded)
        steps.append(distiller.clock)
    samples = distiller.last_samples
    prompts = [chat_prompt_ids(tokenizer, s.teacher_messages) for s in samples]
    prefix = shared_prefix_length(prompts)
    row = max(len(p) + len(s.reply_ids) for p, s in zip(prompts, samples))
    replies = [len(s.reply_ids) for s in samples]
    result = summarize(steps, peak, method, replies, row, prefix + len(samples) * (row - prefix))
    operators = ""
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as profiler

        with profiler(activities=[ProfilerActivity.CPU]) as prof:
            distiller.step()
        operators = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    return result, first_loss, operators


def loss_accuracy(dtype: str, threads: int) -> tuple[float, float]:
    """Child process: the loss of ours' step-0 samples (sampled in float32) with the model in float32 and in
    ``dtype`` (the teacher and the student's forward in ``dtype``, the loss itself in float32)."""
    child_setup(threads)
    model, tokenizer = load_model(DEFAULT_MODEL)
    distiller = BenchDistiller(distill_config(), model, tokenizer, bench_context(tokenizer))
    samples = distiller.sample(0)
    losses = []
    for name in ("float32", dtype):
        distiller.student.to(getattr(torch, name))
        with torch.no_grad():
            losses.append(distiller.loss(samples).loss.item())
    return losses[0], losses[1]


def trl_step(reps: int, threads: int) -> StepResult:
    """Child process: TRL's SDFTTrainer, configured as OPCD, one warm-up and ``reps`` measured steps."""
    child_setup(threads)
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl.experimental.sdft import SDFTConfig, SDFTTrainer

    model, tokenizer = load_model(DEFAULT_MODEL)
    context = bench_context(tokenizer)
    rows = [{"prompt": c, "privileged_context": context.wrap("")} for c in student_conversations()]
    clock = [Clock()]
    steps: list[Clock] = []
    replies: list[int] = []
    teacher_shape: list[int] = []
    peak = [0]
    method = [""]

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            clock[0] = Clock()
            method[0] = reset_peak()
            clock[0].wall["step"], clock[0].cpu["step"] = -time.perf_counter(), -time.process_time()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            clock[0].wall["step"] += time.perf_counter()
            clock[0].cpu["step"] += time.process_time()
            if state.global_step > 1:  # after the warm-up step
                steps.append(clock[0])
                peak[0] = max(peak[0], peak_rss() - loaded)

    with tempfile.TemporaryDirectory() as out:
        args = SDFTConfig(
            output_dir=out, use_cpu=True, report_to="none", logging_strategy="no", save_strategy="no",
            disable_tqdm=True, seed=0,
            # fp32 and no activation checkpointing, like ours (TRL's defaults: bf16=True, gradient_checkpointing=True)
            bf16=False, gradient_checkpointing=False,
            per_device_train_batch_size=BATCH, num_generations=1, shuffle_dataset=False, max_steps=1 + reps,
            max_prompt_length=None,  # the default 512 would cut the teacher's 1k-token context from the left
            max_completion_length=REPLY_TOKENS, generation_kwargs={"min_new_tokens": REPLY_TOKENS},
            temperature=TEMPERATURE, top_p=1.0, top_k=0,
            distillation_mode="topk_logits", distillation_topk=TOP_K, distillation_add_tail=False,
            distillation_alpha=1.0,  # compute_divergence: alpha=1 -> KL(student || teacher), the reverse KL
            distillation_is_clip=None, teacher_model_kind="base",
            teacher_prompt_template="{prompt}{privileged_context}",
            learning_rate=LR, lr_scheduler_type="constant", weight_decay=0.01, max_grad_norm=1.0, optim="adamw_torch",
        )
        lora = LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, target_modules="all-linear", lora_dropout=0.0)
        trainer = SDFTTrainer(
            model, args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
            peft_config=lora, callbacks=[StepTimer()],
        )
        trainer.remove_callback(PrinterCallback)  # it prints the run's summary metrics
        generate, forward = trainer._generate, trainer._forward_logits

        def timed_generate(prompt_ids: list[list[int]]) -> tuple[list[list[int]], list[list[int]]]:
            with clock[0].phase("generation"):
                out_ids = generate(prompt_ids)
            replies[:] = [len(c) for c in out_ids[1]]
            return out_ids

        def timed_forward(model: Any, input_ids: torch.Tensor, *rest: Any, **kwargs: Any) -> torch.Tensor:
            if torch.is_grad_enabled():  # the student's forward
                return forward(model, input_ids, *rest, **kwargs)
            teacher_shape[:] = input_ids.shape
            with clock[0].phase("teacher"):
                return forward(model, input_ids, *rest, **kwargs)

        trainer._generate, trainer._forward_logits = timed_generate, timed_forward
        loaded = rss()
        trainer.train()
    _, row = teacher_shape
    return summarize(steps, peak[0], method[0], replies, row, math.prod(teacher_shape))


# -- report ---------------------------------------------------------------------------------------------


OURS, TRL = "ours: Distiller.step", "TRL 1.16: SDFTTrainer"


def step_table(results: dict[str, StepResult], reps: int, threads: int) -> Table:
    table = Table(
        title=f"OPCD step, median of {reps} after 1 warm-up",
        caption=f"{DEFAULT_MODEL}, batch {BATCH}, {CONTEXT_TOKENS}-token context, top-{TOP_K} renormalised reverse KL, "
        f"LoRA r={LORA_R}, fp32, {threads} torch thread(s); CPU seconds except 'step wall'. student = student "
        "forward + loss + backward + AdamW (ours: with the teacher's LM head, which runs inside the chunked loss)",
    )
    for column in (
        "trainer", "gen", "teacher", "student", "step", "step wall", "peak MiB", "replies", "teacher row", "teacher tok"
    ):
        table.add_column(column, justify="right")
    for name, r in results.items():
        replies = f"{len(r.reply_tokens)}x{r.reply_tokens[0]}" if len(set(r.reply_tokens)) == 1 else str(r.reply_tokens)
        table.add_row(
            name, f"{r.generation:.1f}", f"{r.teacher:.1f}", f"{r.student:.1f}", f"{r.total:.1f}", f"{r.wall:.1f}",
            f"{r.peak_bytes / MIB:.0f}", replies, str(r.teacher_row), str(r.teacher_tokens),
        )
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=1, help="measured steps per trainer, after one warm-up step")
    parser.add_argument("--no-trl", action="store_true", help="skip TRL even when it is installed")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch threads per child (1: on a shared 2-core machine 2 threads made generation ~25x slower)",
    )
    parser.add_argument("--profile", action="store_true", help="torch.profiler's top operators of one more step of ours")
    parser.add_argument(
        "--accuracy-dtype", choices=["bfloat16", "float16"],
        help="also the bench batch's loss with the model in this dtype against float32 (same samples)",
    )
    args = parser.parse_args(argv)
    console = Console()
    if not console.is_terminal:
        console.width = 120
    started = time.perf_counter()
    has_trl = importlib.util.find_spec("trl") is not None and not args.no_trl

    ours_result, first_loss, operators = in_fresh_process(ours_step, args.reps, args.threads, args.profile)
    steps = {OURS: ours_result}
    if has_trl:
        steps[TRL] = in_fresh_process(trl_step, args.reps, args.threads)
    console.print(step_table(steps, args.reps, args.threads))
    ours = steps[OURS]
    split = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in ours.split.items())
    console.print(f"ours' student {ours.student:.1f} CPU s: {split}")
    difference = abs(first_loss - REFERENCE_LOSS)
    verdict = "within" if difference <= REFERENCE_TOLERANCE else "[bold red]NOT within[/]"
    console.print(
        f"ours' warm-up (step 0) loss {first_loss:.8f}, reference {REFERENCE_LOSS:.8f}: |difference| "
        f"{difference:.1e}, {verdict} {REFERENCE_TOLERANCE:.0e}"
    )
    if operators:
        print(f"torch.profiler, one more step of ours (self CPU time; the profiler slows it down):\n{operators}")
    if has_trl:
        trl = steps[TRL]
        console.print(
            f"TRL / ours CPU seconds per step: [bold]{trl.total / ours.total:.2f}x[/] (target >= 2x; wall "
            f"{trl.wall / ours.wall:.2f}x); without generation (the same HF generate on both sides) "
            f"{(trl.total - trl.generation) / (ours.total - ours.generation):.2f}x; teacher "
            f"{trl.teacher / ours.teacher:.2f}x; peak memory {trl.peak_bytes / ours.peak_bytes:.2f}x"
        )
    else:
        reason = "--no-trl" if args.no_trl else "trl is not installed (pip install trl==1.16.0)"
        console.print(f"TRL skipped: {reason}")

    losses: dict[tuple[str, str], LossResult] = {}
    paths = [("naive", "naive", 0), ("chunked 256", "chunked", 256), ("chunked 512", "chunked", 512)]
    for kl, top_k in ((f"top-{TOP_K} renorm", TOP_K), ("full vocab", None)):
        for label, mode, chunk in paths + ([("TRL loss_utils", "trl", 0)] if has_trl else []):
            losses[(kl, label)] = in_fresh_process(loss_case, mode, top_k, chunk, args.threads, TEMPERATURE)
    console.print(loss_table(losses, args.threads, TEMPERATURE))
    for kl in (f"top-{TOP_K} renorm", "full vocab"):
        naive, chunked = losses[(kl, "naive")], losses[(kl, "chunked 256")]
        console.print(
            f"{kl}: naive / chunked-256 peak memory [bold]{naive.peak_bytes / chunked.peak_bytes:.1f}x[/], "
            f"CPU seconds {naive.seconds / chunked.seconds:.2f}x"
        )
    if args.accuracy_dtype:
        full, low = in_fresh_process(loss_accuracy, args.accuracy_dtype, args.threads)
        console.print(
            f"loss of the bench batch: float32 {full:.6f}, {args.accuracy_dtype} model {low:.6f} "
            f"(|difference| {abs(full - low):.1e}, {abs(full - low) / abs(full):.1%} relative)"
        )
    console.print(f"memory: {ours.memory_method}; each measurement in a fresh spawned process")
    console.print(f"total benchmark time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
