"""Token sequences for distillation: (prompt, reply) pairs packed into tensors, and forward passes.

Positions: the logits at position i predict token i + 1, so for a prompt of length P and a reply of
length R the positions P - 1 ... P + R - 2 predict the reply. ``predict_mask`` marks them.

``Decoder`` runs a causal LM's decoder (no LM head: the loss projects hidden states in chunks).
Rows that start with the same tokens (one system message, the teacher's holding the context) run the
prefix once and reuse its key/value cache for every row: ``shared_prefix_hidden`` for the teacher (no
gradient), ``Decoder(model)(..., prefix_ids=...)`` for the student (the prefix's gradient is the sum of
every row's, through the repeated cache).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor
from transformers import PreTrainedModel

from agents.hf_backend import shared_prefix_length


@dataclass
class Packed:
    """Right-padded rows: ids and attention (B, T); ``predict_mask`` (B, T) and ``targets`` (B, T)."""

    input_ids: Tensor
    attention_mask: Tensor
    predict_mask: Tensor
    targets: Tensor


def pack(
    prompts: list[list[int]], replies: list[list[int]], pad_id: int, offset: int = 0, device: torch.device | str = "cpu"
) -> Packed:
    """Pack prompt + reply rows on ``device`` (the model's that reads them): one copy per tensor, whatever
    torch's default device. Drop the first ``offset`` tokens of every row (a shared prefix run apart)."""
    rows = [(p + r)[offset:] for p, r in zip(prompts, replies)]
    width = max(len(row) for row in rows)
    input_ids, attention, predict, targets = [], [], [], []
    for i, (prompt, reply, row) in enumerate(zip(prompts, replies, rows)):
        first = len(prompt) - 1 - offset  # the position whose logits predict the reply's first token
        if first < 0 and reply:
            raise ValueError(f"offset {offset} cuts into the last prompt token of row {i}")
        padding = width - len(row)
        input_ids.append(row + [pad_id] * padding)
        attention.append([1] * len(row) + [0] * padding)
        mask, target = [False] * width, [pad_id] * width
        mask[first : first + len(reply)] = [True] * len(reply)
        target[first : first + len(reply)] = reply
        predict.append(mask)
        targets.append(target)
    long = partial(torch.tensor, dtype=torch.long, device=device)
    return Packed(long(input_ids), long(attention), torch.tensor(predict, device=device), long(targets))


class Decoder(torch.nn.Module):
    """A causal LM without its head: ``Decoder(model)(input_ids, attention_mask)`` is the last hidden states
    (B, T, H) of its decoder. It holds the whole LM, so that data parallelism (DDP) wrapping it covers every
    trainable parameter, the head's too (its gradient arrives through the chunked loss)."""

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor, prefix_ids: Tensor | None = None) -> Tensor:
        """With ``prefix_ids`` (1, L), every row continues that prefix: it runs once, and the hidden states
        are those of ``input_ids`` (rows packed with ``offset=L``) only."""
        return after_prefix(self.model.get_decoder(), input_ids, attention_mask, prefix_ids)


def after_prefix(decoder: torch.nn.Module, input_ids: Tensor, attention_mask: Tensor, prefix_ids: Tensor | None) -> Tensor:
    """Last hidden states (B, T, H) of right-padded rows that all continue ``prefix_ids`` (1, L): the prefix
    runs once, its key/value cache repeated for every row (no prefix: the rows alone)."""
    if prefix_ids is None or prefix_ids.shape[1] == 0:
        return decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    length = prefix_ids.shape[1]
    cache = decoder(input_ids=prefix_ids, use_cache=True).past_key_values
    batch, width = input_ids.shape
    cache.batch_repeat_interleave(batch)
    device = input_ids.device
    attention = torch.cat([torch.ones(batch, length, dtype=torch.long, device=device), attention_mask], 1)
    positions = torch.arange(length, length + width, device=device).expand(batch, -1)
    return decoder(
        input_ids=input_ids, attention_mask=attention, position_ids=positions, past_key_values=cache, use_cache=True
    ).last_hidden_state


def prefix_tensor(prompts: list[list[int]], length: int, device: torch.device | str) -> Tensor | None:
    """The prompts' first ``length`` tokens (shared by all) as a (1, length) tensor, or None when empty."""
    return torch.tensor([prompts[0][:length]], dtype=torch.long, device=device) if length else None


@torch.no_grad()
def shared_prefix_hidden(
    model: PreTrainedModel, prompts: list[list[int]], replies: list[list[int]], pad_id: int
) -> tuple[Tensor, Packed]:
    """Hidden states of prompt + reply rows, the common prompt prefix computed once and cached.

    Returns the hidden states (B, T - L, H) of everything after the shared prefix of length L, and the
    rows packed with that offset (their ``predict_mask`` lines up with the hidden states).
    """
    length = shared_prefix_length(prompts)
    packed = pack(prompts, replies, pad_id, offset=length, device=model.device)
    prefix = prefix_tensor(prompts, length, model.device)
    return after_prefix(model.get_decoder(), packed.input_ids, packed.attention_mask, prefix), packed
