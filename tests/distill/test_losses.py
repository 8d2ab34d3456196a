"""Loss properties: exact against naive formulas, chunked == naive in value and gradient, no NaN."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from distill.losses import (
    chunked_loss,
    forward_kl,
    forward_kl_from_log_probs,
    reduce,
    reverse_kl,
    reverse_kl_from_log_probs,
    token_nll,
    token_nll_from_log_probs,
)

torch.manual_seed(0)
V = 50


def naive_reverse_kl(s: Tensor, t: Tensor, temperature: float = 1.0) -> Tensor:
    p = torch.softmax(s.double() / temperature, -1)
    return (p * (torch.log_softmax(s.double() / temperature, -1) - torch.log_softmax(t.double() / temperature, -1))).sum(-1)


def logits(n: int = 6, v: int = V, scale: float = 3.0) -> Tensor:
    return torch.randn(n, v) * scale


def test_full_reverse_kl_matches_the_definition() -> None:
    s, t = logits(), logits()
    assert torch.allclose(reverse_kl(s, t).double(), naive_reverse_kl(s, t), atol=1e-5)
    assert torch.allclose(reverse_kl(s, t, temperature=0.7).double(), naive_reverse_kl(s, t, 0.7), atol=1e-5)
    assert torch.allclose(reverse_kl(s, t, top_k=V), reverse_kl(s, t))


@pytest.mark.parametrize("mode", ["renormalize", "tail", "truncated"])
def test_zero_when_the_models_agree(mode: str) -> None:
    s = logits()
    assert reverse_kl(s, s.clone(), top_k=8, topk_mode=mode).abs().max() < 1e-6
    assert forward_kl(s, s.clone(), top_k=8, topk_mode=mode).abs().max() < 1e-6


@pytest.mark.parametrize("mode", ["renormalize", "tail"])
def test_proper_topk_modes_are_nonnegative(mode: str) -> None:
    for _ in range(20):
        s, t = logits(scale=5.0), logits(scale=5.0)
        assert (reverse_kl(s, t, top_k=5, topk_mode=mode) >= -1e-6).all()


def test_renormalized_topk_is_the_kl_of_restricted_distributions() -> None:
    s, t = logits(), logits()
    index = s.topk(7, -1).indices
    expected = naive_reverse_kl(s.gather(-1, index), t.gather(-1, index))
    assert torch.allclose(reverse_kl(s, t, top_k=7).double(), expected, atol=1e-5)


def test_tail_bucket_is_the_kl_on_k_plus_one_outcomes() -> None:
    s, t = logits(), logits()
    p, q = torch.softmax(s.double(), -1), torch.softmax(t.double(), -1)
    index = s.topk(4, -1).indices
    p_k, q_k = p.gather(-1, index), q.gather(-1, index)
    p_all = torch.cat([p_k, 1 - p_k.sum(-1, keepdim=True)], -1)
    q_all = torch.cat([q_k, 1 - q_k.sum(-1, keepdim=True)], -1)
    expected = (p_all * (p_all.log() - q_all.log())).sum(-1)
    assert torch.allclose(reverse_kl(s, t, top_k=4, topk_mode="tail").double(), expected, atol=1e-5)


def test_truncated_sum_is_not_a_divergence() -> None:
    # A flat student whose top-k holds little mass, against a teacher peaked on those tokens: negative.
    s = torch.zeros(1, V)
    s[0, :3] = 0.1
    t = torch.full((1, V), -10.0)
    t[0, :3] = 5.0
    truncated = reverse_kl(s, t, top_k=3, topk_mode="truncated")
    assert truncated.item() < 0
    assert reverse_kl(s, t, top_k=3, topk_mode="renormalize").item() >= 0


def test_forward_kl_full_and_over_teacher_topk() -> None:
    s, t = logits(), logits()
    assert torch.allclose(forward_kl(s, t).double(), naive_reverse_kl(t, s), atol=1e-5)  # KL(teacher || student)
    assert torch.allclose(forward_kl(s, t, top_k=V), forward_kl(s, t))
    index = t.topk(6, -1).indices
    restricted = naive_reverse_kl(t.gather(-1, index), s.gather(-1, index))
    assert torch.allclose(forward_kl(s, t, top_k=6, topk_mode="renormalize").double(), restricted, atol=1e-5)
    p, q = torch.softmax(t.double(), -1), torch.softmax(s.double(), -1)  # the default: top-k plus a tail bucket
    p_k, q_k = p.gather(-1, index), q.gather(-1, index)
    p_tail, q_tail = 1 - p_k.sum(-1), 1 - q_k.sum(-1)
    tail = (p_k * (p_k / q_k).log()).sum(-1) + p_tail * (p_tail / q_tail).log()
    assert torch.allclose(forward_kl(s, t, top_k=6).double(), tail, atol=1e-5)


def test_minus_inf_logits_never_give_nan() -> None:
    s, t = logits(), logits()
    s[:, :10] = float("-inf")
    t[:, 5:20] = float("-inf")
    s.requires_grad_(True)
    for loss in (
        reverse_kl(s, t),
        reverse_kl(s, t, top_k=12),
        reverse_kl(s, t, top_k=12, topk_mode="tail"),
        forward_kl(s, t),
        forward_kl(s, t, top_k=12),
    ):
        assert torch.isfinite(loss).all()
        (grad,) = torch.autograd.grad(loss.sum(), s)
        assert torch.isfinite(grad).all()


def test_token_nll() -> None:
    s = logits()
    targets = torch.randint(V, (6,))
    expected = -torch.log_softmax(s, -1)[torch.arange(6), targets]
    assert torch.allclose(token_nll(s, targets), expected, atol=1e-6)


def test_reductions() -> None:
    per_token = torch.tensor([1.0, 3.0, 10.0])
    sequence = torch.tensor([0, 0, 1])
    assert reduce(per_token, sequence, 2, "token_mean").item() == pytest.approx(14 / 3)
    assert reduce(per_token, sequence, 2, "sequence_mean").item() == pytest.approx((2 + 10) / 2)
    with pytest.raises(ValueError, match="reduction"):
        reduce(per_token, sequence, 2, "sum")  # type: ignore[arg-type]


def naive_masked(per_token, s_hidden, s_mask, s_head, targets, t_hidden, t_mask, t_head, reduction):
    s_logits, t_logits = s_head(s_hidden[s_mask]), t_head(t_hidden[t_mask])
    losses = per_token(s_logits, t_logits, targets[s_mask])
    return reduce(losses, s_mask.nonzero()[:, 0], s_mask.shape[0], reduction)


def kl_only(fn, **kwargs):
    return lambda s, t, y: fn(s, t, **kwargs)


def case(fn, from_log_probs, temperature: float = 1.0, **kwargs):
    """(per-token loss on logits: the naive reference; the same on log-probs: ``chunked_loss``'s; temperature)."""
    return kl_only(fn, temperature=temperature, **kwargs), kl_only(from_log_probs, **kwargs), temperature


NLL = (lambda s, t, y: token_nll(s, y), lambda s, t, y: token_nll_from_log_probs(s, y), 1.0)


@pytest.mark.parametrize(
    "per_token",
    [
        case(reverse_kl, reverse_kl_from_log_probs, 0.7),
        case(reverse_kl, reverse_kl_from_log_probs, top_k=9),
        case(reverse_kl, reverse_kl_from_log_probs, top_k=9, topk_mode="tail"),
        case(reverse_kl, reverse_kl_from_log_probs, 0.7, top_k=9, topk_mode="truncated"),
        case(forward_kl, forward_kl_from_log_probs),
        case(forward_kl, forward_kl_from_log_probs, top_k=9),
        NLL,
    ],
    ids=["full", "topk-renorm", "topk-tail", "topk-truncated", "forward", "forward-topk", "nll"],
)
@pytest.mark.parametrize("reduction", ["token_mean", "sequence_mean"])
def test_chunked_equals_naive_in_value_and_gradient(per_token, reduction) -> None:
    naive_loss, per_token, temperature = per_token
    torch.manual_seed(1)
    B, T, H = 3, 11, 16
    head_s = torch.nn.Linear(H, V, bias=False)
    head_t = torch.nn.Linear(H, V, bias=False)
    s_hidden = torch.randn(B, T, H, requires_grad=True)
    t_hidden = torch.randn(B, T + 4, H)  # the teacher's prompt holds the context: longer, shifted
    s_mask = torch.zeros(B, T, dtype=torch.bool)
    t_mask = torch.zeros(B, T + 4, dtype=torch.bool)
    for row, (start, length) in enumerate([(2, 7), (5, 3), (1, 9)]):
        s_mask[row, start : start + length] = True
        t_mask[row, start + 4 : start + 4 + length] = True
    with torch.no_grad():  # padding may hold anything: it must not leak into the loss
        s_hidden[~s_mask] = float("nan")
    targets = torch.randint(V, (B, T))

    naive = naive_masked(naive_loss, s_hidden, s_mask, head_s, targets, t_hidden, t_mask, head_t, reduction)
    naive_grads = torch.autograd.grad(naive, [s_hidden, head_s.weight])
    out = chunked_loss(
        per_token, s_hidden, s_mask, head_s, targets, (t_hidden, t_mask, head_t),
        reduction=reduction, chunk_size=4, temperature=temperature,
    )
    grads = torch.autograd.grad(out.loss, [s_hidden, head_s.weight])

    assert torch.allclose(out.loss, naive, atol=1e-5)
    for got, want in zip(grads, naive_grads):
        assert torch.allclose(torch.nan_to_num(got), torch.nan_to_num(want), atol=1e-5)
        assert torch.isfinite(got[s_mask] if got.dim() == 3 else got).all()
    assert out.token_loss.shape == (19,) and out.student_entropy.shape == (19,)
    scaled = head_s(s_hidden[s_mask]).detach() / temperature
    entropy = -(scaled.softmax(-1) * scaled.log_softmax(-1)).sum(-1)  # the logged entropy, at the loss's temperature
    assert torch.allclose(out.student_entropy, entropy, atol=1e-5)


def test_chunked_rejects_mismatched_masks() -> None:
    hidden = torch.randn(1, 4, 8)
    head = torch.nn.Linear(8, V)
    with pytest.raises(ValueError, match="positions"):
        chunked_loss(
            kl_only(reverse_kl_from_log_probs), hidden, torch.tensor([[1, 1, 0, 0]]), head, torch.zeros(1, 4, dtype=torch.long),
            (hidden, torch.tensor([[1, 0, 0, 0]]), head),
        )


def lora_like_setup(reduction: str):
    """A trainable layer (the decoder, LoRA weights) under a frozen head, the trainer's LoRA case."""
    torch.manual_seed(2)
    B, T, H = 2, 9, 16
    decoder = torch.nn.Linear(H, H)
    head = torch.nn.Linear(H, V, bias=False).requires_grad_(False)
    inputs = torch.randn(B, T, H)
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[0, 1:8] = True
    mask[1, 4:6] = True
    targets = torch.randint(V, (B, T))
    teacher_hidden = torch.randn(B, T, H)
    def run(chunked: bool) -> Tensor:
        hidden = decoder(inputs)
        if chunked:
            return chunked_loss(
                kl_only(reverse_kl_from_log_probs, top_k=9), hidden, mask, head, targets, (teacher_hidden, mask, head), reduction=reduction, chunk_size=3
            ).loss
        return naive_masked(kl_only(reverse_kl, top_k=9), hidden, mask, head, targets, teacher_hidden, mask, head, reduction)

    return decoder, head, run


@pytest.mark.parametrize("reduction", ["token_mean", "sequence_mean"])
def test_chunked_frozen_head_passes_gradient_upstream(reduction) -> None:
    decoder, head, run = lora_like_setup(reduction)
    run(chunked=False).backward()
    want = [p.grad.clone() for p in decoder.parameters()]
    decoder.zero_grad()
    loss = run(chunked=True)
    loss.backward()
    for p, expected in zip(decoder.parameters(), want):
        assert torch.allclose(p.grad, expected, atol=1e-5)
    assert head.weight.grad is None


def test_chunked_under_no_grad() -> None:
    _, _, run = lora_like_setup("token_mean")
    naive = run(chunked=False)
    with torch.no_grad():
        loss = run(chunked=True)
    assert not loss.requires_grad
    assert torch.allclose(loss, naive, atol=1e-5)
