"""Packing and the shared-prefix forward passes (the teacher's, and the student's with gradient) on a tiny real model."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from agents.hf_backend import shared_prefix_length
from distill.sequences import Decoder, pack, prefix_tensor, shared_prefix_hidden


def tiny_model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
    )
    return LlamaForCausalLM(config).eval()


def test_pack_marks_the_positions_that_predict_the_reply() -> None:
    packed = pack([[5, 6, 7], [5, 8]], [[9, 10], [11, 12, 13]], pad_id=0)
    assert packed.input_ids.tolist() == [[5, 6, 7, 9, 10], [5, 8, 11, 12, 13]]
    assert packed.predict_mask.tolist() == [[False, False, True, True, False], [False, True, True, True, False]]
    assert packed.targets[packed.predict_mask].tolist() == [9, 10, 11, 12, 13]
    assert packed.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 1]]


def test_shared_prefix_length_keeps_each_last_prompt_token_out() -> None:
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5, 6]]) == 3
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2
    assert shared_prefix_length([[1, 2], [3, 2]]) == 0


def test_shared_prefix_forward_equals_the_full_forward() -> None:
    model = tiny_model()
    context = list(range(1, 30))
    prompts = [context + [40, 41], context + [42], context + [43, 44, 45]]
    replies = [[50, 51, 52], [53], [54, 55]]
    full = pack(prompts, replies, pad_id=0)
    with torch.no_grad():
        reference = Decoder(model)(full.input_ids, full.attention_mask)[full.predict_mask]
    hidden, packed = shared_prefix_hidden(model, prompts, replies, pad_id=0)
    assert hidden.shape[1] < full.input_ids.shape[1]  # the prefix was not recomputed per row
    assert torch.allclose(hidden[packed.predict_mask], reference, atol=1e-5)
    assert torch.equal(packed.targets[packed.predict_mask], full.targets[full.predict_mask])


def test_student_prefix_forward_equals_the_full_forward_in_value_and_gradient() -> None:
    """The student's rows run after their shared prefix, once: the reply positions' hidden states and the
    gradient of every parameter (the prefix's summed over rows) are those of the full rows."""
    model = tiny_model().train()
    decoder = Decoder(model)
    instructions = list(range(1, 20))
    prompts = [instructions + [40, 41], instructions + [42], instructions + [43, 44, 45]]
    replies = [[50, 51, 52], [53], [54, 55]]
    weights = torch.randn(6, 32)

    def grads(hidden: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        (hidden[mask] * weights).sum().backward()
        return hidden[mask].detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    full = pack(prompts, replies, pad_id=0)
    reference, reference_grads = grads(decoder(full.input_ids, full.attention_mask), full.predict_mask)
    length = shared_prefix_length(prompts)
    rows = pack(prompts, replies, pad_id=0, offset=length)
    hidden, hidden_grads = grads(
        decoder(rows.input_ids, rows.attention_mask, prefix_tensor(prompts, length, "cpu")), rows.predict_mask
    )
    assert rows.input_ids.shape[1] < full.input_ids.shape[1]
    assert torch.allclose(hidden, reference, atol=1e-5)
    assert len(hidden_grads) == len(reference_grads) > 0
    for got, want in zip(hidden_grads, reference_grads):
        assert torch.allclose(got, want, atol=1e-5)
    assert prefix_tensor(prompts, 0, "cpu") is None


def test_teacher_tokens_grow_with_the_context_once_not_per_row() -> None:
    """The teacher's cost is flat in batch x context length: a longer context adds its tokens to the forward
    passes once, whatever the number of rows."""
    model = tiny_model()
    fed: list[int] = []
    hook = model.get_decoder().embed_tokens.register_forward_hook(lambda module, args, out: fed.append(args[0].numel()))

    def tokens(context_length: int, rows: int) -> int:
        fed.clear()
        context = [1 + i % 30 for i in range(context_length)]
        prompts = [context + [40 + row] for row in range(rows)]
        shared_prefix_hidden(model, prompts, [[50, 51]] * rows, pad_id=0)
        return sum(fed)

    try:
        for rows in (1, 4, 8):
            assert tokens(60, rows) - tokens(20, rows) == 40
        assert tokens(60, 8) == 60 + 8 * 3  # the context once, then each row's own prompt token and reply
    finally:
        hook.remove()
