"""Distillation losses: pure functions on logits, plus a chunked driver that bounds memory.

Per-token divergences take logits of shape (N, V) for N response positions and return (N,) losses:

- ``reverse_kl``: KL(student || teacher), the OPCD objective, over the full vocabulary (default) or the
  student's top-k tokens. For top-k, ``topk_mode`` says what happens to the rest of the mass:
  ``"renormalize"`` (both distributions renormalised over the top-k: a proper KL of the restricted
  distributions), ``"tail"`` (top-k plus one bucket holding the remaining mass: a proper KL on k+1
  outcomes), or ``"truncated"`` (the paper's code: full-vocabulary probabilities summed over the top-k
  only; not a divergence, it can go negative and collapsed a small student in a measured probe).
- ``forward_kl_teacher_topk``: KL(teacher || student) over the teacher's top-k, the off-policy baseline
  (the teacher generated the tokens; the student learns its distribution).

Both sides are divided by the sampling temperature first. Log-probabilities are clamped at
``LOGPROB_FLOOR`` so ``-inf`` logits (masked vocabulary entries) give large but finite losses, never NaN.

``chunked_loss`` computes a per-token loss from hidden states in chunks of positions, projecting to
logits inside each chunk and recomputing them in the backward pass (activation checkpointing), so peak
memory grows with chunk x vocabulary, not sequence x vocabulary. It only touches response positions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

LOGPROB_FLOOR = -1e4
TopKMode = Literal["renormalize", "tail", "truncated"]
Reduction = Literal["token_mean", "sequence_mean"]
# (student_logits (N, V), teacher_logits (N, V) or None, targets (N,)) -> per-token loss (N,)
PerTokenLoss = Callable[[Tensor, Tensor | None, Tensor], Tensor]


def log_probs(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Temperature-scaled log-softmax in float32, floored so that -inf logits stay finite."""
    return F.log_softmax(logits.float() / temperature, dim=-1).clamp(min=LOGPROB_FLOOR)


def _kl_terms(p_log: Tensor, q_log: Tensor) -> Tensor:
    """Sum over the last dim of p * (log p - log q), with 0 * anything = 0."""
    p = p_log.exp()
    return torch.where(p > 0, p * (p_log - q_log), torch.zeros_like(p)).sum(-1)


def _log1mexp(x: Tensor) -> Tensor:
    """log(1 - exp(x)) for x <= 0, stable (the log of the mass outside a top-k set)."""
    x = x.clamp(max=-1e-7)
    return torch.where(x > -0.6931, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x))).clamp(min=LOGPROB_FLOOR)


def _restrict(s_log: Tensor, t_log: Tensor, index: Tensor, mode: TopKMode) -> tuple[Tensor, Tensor]:
    """Both distributions on the tokens ``index`` (N, k), arranged per ``mode``."""
    s_k, t_k = s_log.gather(-1, index), t_log.gather(-1, index)
    if mode == "renormalize":
        return s_k - s_k.logsumexp(-1, keepdim=True), t_k - t_k.logsumexp(-1, keepdim=True)
    if mode == "tail":
        s_tail = _log1mexp(s_k.logsumexp(-1, keepdim=True))
        t_tail = _log1mexp(t_k.logsumexp(-1, keepdim=True))
        return torch.cat([s_k, s_tail], -1), torch.cat([t_k, t_tail], -1)
    if mode == "truncated":
        return s_k, t_k
    raise ValueError(f"unknown topk_mode {mode!r}; expected renormalize, tail or truncated")


def reverse_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    top_k: int | None = None,
    topk_mode: TopKMode = "renormalize",
    temperature: float = 1.0,
) -> Tensor:
    """Per-token KL(student || teacher), shape (N,), over the full vocabulary or the student's top-k."""
    s_log, t_log = log_probs(student_logits, temperature), log_probs(teacher_logits, temperature)
    if top_k is None or top_k >= s_log.shape[-1]:
        return _kl_terms(s_log, t_log)
    index = s_log.detach().topk(top_k, dim=-1).indices  # the support is chosen, not differentiated
    return _kl_terms(*_restrict(s_log, t_log, index, topk_mode))


def forward_kl_teacher_topk(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    top_k: int = 256,
    topk_mode: TopKMode = "renormalize",
    temperature: float = 1.0,
) -> Tensor:
    """Per-token KL(teacher || student) over the teacher's top-k tokens, shape (N,) (off-policy baseline)."""
    s_log, t_log = log_probs(student_logits, temperature), log_probs(teacher_logits, temperature)
    index = t_log.topk(min(top_k, t_log.shape[-1]), dim=-1).indices
    t_k, s_k = _restrict(t_log, s_log, index, topk_mode)
    return _kl_terms(t_k, s_k)


def token_nll(student_logits: Tensor, targets: Tensor, *, temperature: float = 1.0) -> Tensor:
    """Per-token negative log-likelihood of ``targets`` (N,) under the student, shape (N,) (SFT baseline)."""
    return -log_probs(student_logits, temperature).gather(-1, targets[:, None]).squeeze(-1)


def reduce(per_token: Tensor, sequence_index: Tensor, num_sequences: int, reduction: Reduction) -> Tensor:
    """Aggregate (N,) token losses: mean over tokens, or mean over sequences of each sequence's mean."""
    if per_token.numel() == 0:
        return per_token.sum()
    if reduction == "token_mean":
        return per_token.mean()
    if reduction == "sequence_mean":
        sums = per_token.new_zeros(num_sequences).index_add(0, sequence_index, per_token)
        counts = per_token.new_zeros(num_sequences).index_add(0, sequence_index, torch.ones_like(per_token))
        present = counts > 0
        return (sums[present] / counts[present]).mean()
    raise ValueError(f"unknown reduction {reduction!r}; expected token_mean or sequence_mean")


@dataclass
class LossOutput:
    """The scalar loss and detached per-token diagnostics (N response positions)."""

    loss: Tensor
    token_loss: Tensor
    student_entropy: Tensor


def chunked_loss(
    per_token: PerTokenLoss,
    student_hidden: Tensor,
    student_mask: Tensor,
    student_head: Callable[[Tensor], Tensor],
    targets: Tensor,
    teacher: tuple[Tensor, Tensor, Callable[[Tensor], Tensor]] | None = None,
    *,
    reduction: Reduction = "token_mean",
    chunk_size: int = 512,
    temperature: float = 1.0,
) -> LossOutput:
    """``per_token`` loss over response positions, projecting hidden states to logits chunk by chunk.

    ``student_hidden`` (B, T, H) carries gradient; ``student_mask`` (B, T) selects the positions whose
    logits predict response tokens, and ``targets`` (B, T) holds those tokens. ``teacher`` is
    ``(hidden (B, T', H'), mask (B, T'), head)``, treated as constant; its prompt is longer (it holds the
    context), so its positions are shifted, but each row must select as many positions as the student's.
    Heads map (n, H) -> (n, V) logits. Chunks are recomputed in backward, so at most one chunk of logits
    per model is alive at a time. ``temperature`` scales the logged student entropy.
    """
    student_mask = student_mask.bool()
    sequence_index = student_mask.nonzero()[:, 0]
    s_hidden, y = student_hidden[student_mask], targets[student_mask]
    t_hidden, teacher_head = None, None
    if teacher is not None:
        teacher_hidden, teacher_mask, teacher_head = teacher
        if not torch.equal(student_mask.sum(1), teacher_mask.bool().sum(1)):
            raise ValueError("student and teacher masks select different numbers of positions per row")
        t_hidden = teacher_hidden[teacher_mask.bool()].detach()

    def chunk_loss(s: Tensor, t: Tensor | None, targets_chunk: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            teacher_logits = teacher_head(t) if t is not None else None
        student_logits = student_head(s)
        with torch.no_grad():
            s_log = log_probs(student_logits, temperature)
            entropy = -(s_log.exp() * s_log).sum(-1)
        return per_token(student_logits, teacher_logits, targets_chunk), entropy

    losses, entropies = [], []
    for start in range(0, s_hidden.shape[0], chunk_size):
        piece = slice(start, start + chunk_size)
        args = (s_hidden[piece], t_hidden[piece] if t_hidden is not None else None, y[piece])
        if torch.is_grad_enabled() and s_hidden.requires_grad:
            loss, entropy = checkpoint(chunk_loss, *args, use_reentrant=False)
        else:
            loss, entropy = chunk_loss(*args)
        losses.append(loss)
        entropies.append(entropy)
    token_loss = torch.cat(losses) if losses else s_hidden.new_zeros(0)
    entropy = torch.cat(entropies) if entropies else s_hidden.new_zeros(0)
    loss = reduce(token_loss, sequence_index, student_mask.shape[0], reduction)
    return LossOutput(loss=loss, token_loss=token_loss.detach(), student_entropy=entropy)
