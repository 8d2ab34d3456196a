"""Distillation losses: pure functions on logits (or on their log-probabilities), plus a chunked driver
that bounds memory.

Per-token divergences take logits of shape (N, V) for N response positions and return (N,) losses:

- ``reverse_kl``: KL(student || teacher), the OPCD objective, over the full vocabulary (default) or the
  student's top-k tokens. For top-k, ``topk_mode`` says what happens to the rest of the mass:
  ``"renormalize"`` (both distributions renormalised over the top-k: a proper KL of the restricted
  distributions), ``"tail"`` (top-k plus one bucket holding the remaining mass: a proper KL on k+1
  outcomes), or ``"truncated"`` (the paper's code: full-vocabulary probabilities summed over the top-k
  only; not a divergence, it can go negative and collapsed a small student in a measured probe).
- ``forward_kl``: KL(teacher || student), the off-policy baseline (the teacher generated the tokens; the
  student learns its distribution), over the full vocabulary (default) or the teacher's top-k, by default
  with a tail bucket: renormalised inside the top-k, a student with 3% of its mass there could score ~0.

Both sides are divided by the sampling temperature first. Log-probabilities are clamped at
``LOGPROB_FLOOR`` so ``-inf`` logits (masked vocabulary entries) give large but finite losses, never NaN.
Each has a ``*_from_log_probs`` form taking ``log_probs(logits, temperature)`` of both sides instead.

``chunked_loss`` computes a per-token loss from hidden states in chunks of positions, projecting to
logits inside each chunk and taking that chunk's gradient right away (the "fused linear" approach of
Liger-Kernel), so peak memory grows with chunk x vocabulary, not sequence x vocabulary, and no chunk is
computed twice. It only touches response positions. Its per-token loss gets both sides' log-probabilities
(computed once per chunk), and the logged student entropy is read from the same log-probabilities.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

LOGPROB_FLOOR = -1e4
TopKMode = Literal["renormalize", "tail", "truncated"]
Reduction = Literal["token_mean", "sequence_mean"]
# (student_log_probs (N, V), teacher_log_probs (N, V) or None, targets (N,)) -> per-token loss (N,), where the
# log-probs are ``log_probs(logits, temperature)`` (``chunked_loss`` computes them once per chunk)
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
    return reverse_kl_from_log_probs(s_log, t_log, top_k=top_k, topk_mode=topk_mode)


def reverse_kl_from_log_probs(
    s_log: Tensor, t_log: Tensor, *, top_k: int | None = None, topk_mode: TopKMode = "renormalize"
) -> Tensor:
    """``reverse_kl`` on log-probabilities (N, V) of the student and the teacher (see ``log_probs``)."""
    if top_k is None or top_k >= s_log.shape[-1]:
        return _kl_terms(s_log, t_log)
    index = s_log.detach().topk(top_k, dim=-1).indices  # the support is chosen, not differentiated
    return _kl_terms(*_restrict(s_log, t_log, index, topk_mode))


def forward_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    top_k: int | None = None,
    topk_mode: TopKMode = "tail",
    temperature: float = 1.0,
) -> Tensor:
    """Per-token KL(teacher || student), shape (N,), over the full vocabulary or the teacher's top-k (off-policy baseline)."""
    s_log, t_log = log_probs(student_logits, temperature), log_probs(teacher_logits, temperature)
    return forward_kl_from_log_probs(s_log, t_log, top_k=top_k, topk_mode=topk_mode)


def forward_kl_from_log_probs(
    s_log: Tensor, t_log: Tensor, *, top_k: int | None = None, topk_mode: TopKMode = "tail"
) -> Tensor:
    """``forward_kl`` on log-probabilities (N, V) of the student and the teacher (see ``log_probs``)."""
    if top_k is None or top_k >= t_log.shape[-1]:
        return _kl_terms(t_log, s_log)
    index = t_log.topk(top_k, dim=-1).indices
    return _kl_terms(*_restrict(t_log, s_log, index, topk_mode))


def token_nll(student_logits: Tensor, targets: Tensor, *, temperature: float = 1.0) -> Tensor:
    """Per-token negative log-likelihood of ``targets`` (N,) under the student, shape (N,) (SFT baseline)."""
    return token_nll_from_log_probs(log_probs(student_logits, temperature), targets)


def token_nll_from_log_probs(s_log: Tensor, targets: Tensor) -> Tensor:
    """``token_nll`` on the student's log-probabilities (N, V)."""
    return -s_log.gather(-1, targets[:, None]).squeeze(-1)


def token_weights(sequence_index: Tensor, num_sequences: int, reduction: Reduction) -> Tensor:
    """Per-token weights (N,) in float32 such that the reduced loss is ``sum_i w_i * loss_i``.

    ``token_mean``: 1/N. ``sequence_mean``: 1 / (sequences present x the token's sequence length), the
    mean over sequences of each sequence's mean. ``sequence_index`` (N,) gives each token's sequence.
    """
    n = sequence_index.numel()
    if reduction == "token_mean":
        return torch.full((n,), 1.0 / max(n, 1), device=sequence_index.device)
    if reduction == "sequence_mean":
        counts = torch.bincount(sequence_index, minlength=num_sequences)
        return 1.0 / ((counts > 0).sum() * counts[sequence_index]).float()
    raise ValueError(f"unknown reduction {reduction!r}; expected token_mean or sequence_mean")


def reduce(per_token: Tensor, sequence_index: Tensor, num_sequences: int, reduction: Reduction) -> Tensor:
    """Aggregate (N,) token losses: mean over tokens, or mean over sequences of each sequence's mean."""
    return (per_token * token_weights(sequence_index, num_sequences, reduction).to(per_token.dtype)).sum()


@dataclass
class LossOutput:
    """The scalar loss and detached per-token diagnostics (N response positions)."""

    loss: Tensor
    token_loss: Tensor
    student_entropy: Tensor


class _PrecomputedGrad(torch.autograd.Function):
    """Attach gradients computed in the forward pass to a loss value.

    ``apply(loss, grads, *inputs)`` returns ``loss`` (a detached scalar) as a function of ``inputs``, whose
    backward returns ``grad_output * grads[i]`` for ``inputs[i]`` (``grads[i]`` is None where the input needs
    no gradient). Gradients then reach whatever produced the inputs through the normal ``backward()``.
    """

    @staticmethod
    def forward(ctx, loss: Tensor, grads: tuple[Tensor | None, ...], *inputs: Tensor) -> Tensor:
        ctx.save_for_backward(*grads)
        return loss.clone()  # a new tensor: returning an input as-is would make it a view of it

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        grads = tuple(None if g is None else grad_output * g for g in ctx.saved_tensors)
        return None, None, *grads


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
    Heads map (n, H) -> (n, V) logits. ``per_token`` gets ``log_probs(logits, temperature)`` of both sides;
    the logged student entropy is that of the same temperature-scaled distribution.

    Each chunk's gradient (w.r.t. its hidden states and the trainable parameters of ``student_head``, when
    it is an ``nn.Module``) is computed in the forward pass and kept ((N, H) plus the parameters' size);
    ``loss.backward()`` then hands it on, so at most one chunk of logits per model is alive at a time and
    no chunk is recomputed. Tensors a plain-function head closes over get no gradient.
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

    # The reduction is linear in the token losses, so each chunk's gradient can be weighted up front.
    weights = token_weights(sequence_index, student_mask.shape[0], reduction)
    grad_on = torch.is_grad_enabled()
    want_hidden = grad_on and s_hidden.requires_grad
    is_module = isinstance(student_head, torch.nn.Module)
    params = [p for p in student_head.parameters() if p.requires_grad] if grad_on and is_module else []
    hidden_grad = torch.zeros_like(s_hidden) if want_hidden else None
    # Parameter gradients add up over chunks: accumulate in float32, whatever the parameters' dtype.
    param_grads = [torch.zeros_like(p, dtype=torch.float32) for p in params]

    def chunk(piece: slice) -> tuple[Tensor, Tensor]:
        """(loss, entropy) of the positions ``piece``, adding their weighted gradient into the buffers."""
        s = s_hidden[piece].detach().requires_grad_(want_hidden)
        with torch.no_grad():
            t_log = log_probs(teacher_head(t_hidden[piece]), temperature) if t_hidden is not None else None
        with torch.set_grad_enabled(want_hidden or bool(params)):
            s_log = log_probs(student_head(s), temperature)
            loss = per_token(s_log, t_log, y[piece])
        with torch.no_grad():  # from the loss's own log-probs: no second log-softmax over the vocabulary
            detached = s_log.detach()
            entropy = -(detached.exp() * detached).sum(-1)
        if loss.requires_grad:
            grads = torch.autograd.grad((loss * weights[piece]).sum(), ([s] if want_hidden else []) + params)
            if want_hidden:
                hidden_grad[piece] = grads[0]
            for total, grad in zip(param_grads, grads[1:] if want_hidden else grads):
                total += grad
        return loss.detach(), entropy

    losses, entropies = [], []
    for start in range(0, s_hidden.shape[0], chunk_size):
        loss, entropy = chunk(slice(start, start + chunk_size))  # the chunk's logits are freed on return
        losses.append(loss)
        entropies.append(entropy)
    token_loss = torch.cat(losses) if losses else s_hidden.new_zeros(0)
    entropy = torch.cat(entropies) if entropies else s_hidden.new_zeros(0)
    loss = (token_loss * weights.to(token_loss.dtype)).sum()
    if want_hidden or params:
        grads = (hidden_grad, *(g.to(p.dtype) for g, p in zip(param_grads, params)))
        loss = _PrecomputedGrad.apply(loss, grads, s_hidden, *params)
    return LossOutput(loss=loss, token_loss=token_loss, student_entropy=entropy)
