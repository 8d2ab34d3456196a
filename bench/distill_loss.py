"""The loss alone, for ``bench.distill_step``: forward + backward of the reverse KL chunked (ours), naive
(full logits for both models) and TRL's, at one OPCD batch's size; peak memory, CPU seconds, agreement."""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial

import torch
from rich.table import Table

from bench.measure import MIB, child_setup, peak_rss, reset_peak, rss
from distill.losses import chunked_loss, reverse_kl, reverse_kl_from_log_probs

LOSS_POSITIONS, LOSS_VOCAB, LOSS_HIDDEN = 2048, 49_152, 576  # SmolLM2-135M's vocabulary and hidden size


@dataclass
class LossResult:
    loss: float
    grad: torch.Tensor  # d loss / d student hidden states
    seconds: float  # CPU seconds
    peak_bytes: int


def loss_case(mode: str, top_k: int | None, chunk: int, threads: int, temperature: float) -> LossResult:
    """Child process: forward + backward of the reverse KL at (positions, vocab, hidden) = (2048, 49152, 576).

    ``mode``: "chunked" (``chunked_loss`` on hidden states), "naive" (full (N, V) logits for both
    models, then ``reverse_kl``), or "trl" (TRL's own top-k / full-logit loss on full logits, alpha=1).
    """
    child_setup(threads)
    generator = torch.Generator().manual_seed(0)
    head = torch.randn(LOSS_VOCAB, LOSS_HIDDEN, generator=generator) * 0.12  # logits of std ~3, like a real LM
    student = torch.randn(LOSS_POSITIONS, LOSS_HIDDEN, generator=generator)
    teacher = student + 0.5 * torch.randn(LOSS_POSITIONS, LOSS_HIDDEN, generator=generator)
    kl = partial(reverse_kl, top_k=top_k, topk_mode="renormalize", temperature=temperature)
    kl_log = partial(reverse_kl_from_log_probs, top_k=top_k, topk_mode="renormalize")

    def project(hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ head.T

    def run(positions: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = student[:positions].clone().requires_grad_(True)
        t = teacher[:positions]
        if mode == "chunked":
            mask = torch.ones(1, positions, dtype=torch.bool)
            loss = chunked_loss(
                lambda sl, tl, y: kl_log(sl, tl), s[None], mask, project, torch.zeros(1, positions, dtype=torch.long),
                (t[None], mask, project), chunk_size=chunk, temperature=temperature,
            ).loss
        elif mode == "naive":
            with torch.no_grad():
                teacher_logits = project(t)
            loss = kl(project(s), teacher_logits).mean()
        else:
            from trl.experimental.sdft.loss_utils import (
                compute_full_logit_self_distillation_loss,
                compute_topk_self_distillation_loss,
            )

            with torch.no_grad():
                teacher_logits = project(t) / temperature
            student_logits = project(s) / temperature
            if top_k is None:
                per_token = compute_full_logit_self_distillation_loss(
                    student_logits, teacher_logits, distillation_alpha=1.0
                )
            else:
                per_token = compute_topk_self_distillation_loss(
                    student_logits, teacher_logits, distillation_topk=top_k, distillation_alpha=1.0,
                    distillation_add_tail=False,
                )
            loss = per_token.mean()
        loss.backward()
        return loss.detach(), s.grad

    run(64)  # warm-up: first-call overheads, negligible memory
    loaded = rss()
    reset_peak()
    start = time.process_time()
    loss, grad = run(LOSS_POSITIONS)
    seconds = time.process_time() - start
    return LossResult(loss.item(), grad, seconds, peak_rss() - loaded)


def loss_table(results: dict[tuple[str, str], LossResult], threads: int, temperature: float) -> Table:
    table = Table(
        title="Loss forward + backward, 1 run each after a 64-position warm-up",
        caption=f"{LOSS_POSITIONS} positions, vocab {LOSS_VOCAB:,}, hidden {LOSS_HIDDEN}, T={temperature}, "
        f"{threads} torch thread(s); naive = full (N, V) logits for both models, then reverse_kl",
    )
    for column in ("KL", "path", "loss", "peak MiB", "CPU s", "|loss - naive|", "max |grad - naive|"):
        table.add_column(column, justify="right")
    for (kl, path), r in results.items():
        naive = results[(kl, "naive")]
        table.add_row(
            kl, path, f"{r.loss:.6f}", f"{r.peak_bytes / MIB:.0f}", f"{r.seconds:.2f}",
            f"{abs(r.loss - naive.loss):.1e}", f"{(r.grad - naive.grad).abs().max().item():.1e}",
        )
    return table
