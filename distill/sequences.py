"""Token sequences for distillation: (prompt, reply) pairs packed into tensors, and forward passes.

Positions: the logits at position i predict token i + 1, so for a prompt of length P and a reply of
length R the positions P - 1 ... P + R - 2 predict the reply. ``predict_mask`` marks them.

``Decoder`` runs a causal LM's decoder (no LM head: the loss projects hidden states in chunks).
``shared_prefix_hidden`` runs many sequences that start with the same tokens (the teacher's system
message with the context) by computing the prefix once and reusing its key/value cache for every row.
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

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


@torch.no_grad()
def shared_prefix_hidden(
    model: PreTrainedModel, prompts: list[list[int]], replies: list[list[int]], pad_id: int
) -> tuple[Tensor, Packed]:
    """Hidden states of prompt + reply rows, the common prompt prefix computed once and cached.

    Returns the hidden states (B, T - L, H) of everything after the shared prefix of length L, and the
    rows packed with that offset (their ``predict_mask`` lines up with the hidden states).
    """
    length = shared_prefix_length(prompts)
    device = model.device
    packed = pack(prompts, replies, pad_id, offset=length, device=device)
    decoder = model.get_decoder()
    if length == 0:
        return decoder(input_ids=packed.input_ids, attention_mask=packed.attention_mask).last_hidden_state, packed
    prefix = torch.tensor([prompts[0][:length]], dtype=torch.long, device=device)
    cache = decoder(input_ids=prefix, use_cache=True).past_key_values
    cache.batch_repeat_interleave(len(prompts))
    batch, width = packed.input_ids.shape
    attention = torch.cat([torch.ones(batch, length, dtype=torch.long, device=device), packed.attention_mask], 1)
    positions = torch.arange(length, length + width, device=device).expand(batch, -1)
    hidden = decoder(
        input_ids=packed.input_ids,
        attention_mask=attention,
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
    ).last_hidden_state
    return hidden, packed
