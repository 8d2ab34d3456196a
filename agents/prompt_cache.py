"""Keys and values of recent generation rows, reused when a later prompt starts with the same tokens.

A multi-turn episode's next prompt repeats its last prompt and reply and adds one observation, so
keeping each row's keys and values (prompt + reply) lets the next turn prefill only the new tokens.
``RowCache`` holds them per row, least recently used first out, within a token budget; the HF backend
left-pads the rows of a batch into one ``DynamicCache`` (``batch_cache``) and splits it back after
generating (``row_layers``).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from transformers import DynamicCache, PretrainedConfig

Layers = list[tuple[Tensor, Tensor]]  # per decoder layer: keys and values, each (heads, tokens, head_dim)


@dataclass
class CachedRow:
    tokens: np.ndarray  # the token ids whose keys and values ``layers`` hold, in order
    layers: Layers


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    """Length of the longest common prefix of two token arrays."""
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n


class RowCache:
    """Rows' keys and values within ``max_tokens`` tokens in all (least recently used evicted first)."""

    def __init__(self, max_tokens: int) -> None:
        if max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
        self.max_tokens = max_tokens
        self._rows: OrderedDict[int, CachedRow] = OrderedDict()
        self._next_key = 0
        self.tokens = 0

    def __len__(self) -> int:
        return len(self._rows)

    def take(self, prompt: list[int]) -> tuple[int, Layers | None]:
        """Remove and return the row sharing the longest prefix with ``prompt``, cut to that prefix (at most
        ``len(prompt) - 1`` tokens: the last prompt token is always fed to get the next token's logits)."""
        if not self._rows or len(prompt) < 2:
            return 0, None
        ids = np.asarray(prompt, dtype=np.int64)
        key, length = max(((k, common_prefix(row.tokens, ids)) for k, row in self._rows.items()), key=lambda kv: kv[1])
        length = min(length, len(prompt) - 1)
        if length == 0:
            return 0, None
        row = self._rows.pop(key)
        self.tokens -= len(row.tokens)
        return length, [(k[:, :length], v[:, :length]) for k, v in row.layers]

    def add(self, tokens: list[int], layers: Layers) -> None:
        if not tokens or len(tokens) > self.max_tokens:
            return
        self._rows[self._next_key] = CachedRow(np.asarray(tokens, dtype=np.int64), layers)
        self._next_key += 1
        self.tokens += len(tokens)
        while self.tokens > self.max_tokens:
            _, evicted = self._rows.popitem(last=False)
            self.tokens -= len(evicted.tokens)

    def clear(self) -> None:
        self._rows.clear()
        self.tokens = 0


def batch_cache(rows: list[Layers | None], lengths: list[int], config: PretrainedConfig) -> DynamicCache:
    """One cache for a batch: row ``i`` holds ``lengths[i]`` positions, left-padded with zeros to the longest
    (the caller's attention mask hides the padding). At least one row must hold some."""
    width = max(lengths)
    template = next(layers for layers in rows if layers is not None)
    data = []
    for layer, (k0, v0) in enumerate(template):
        keys = k0.new_zeros((len(rows), k0.shape[0], width, k0.shape[2]))
        values = v0.new_zeros((len(rows), v0.shape[0], width, v0.shape[2]))
        for i, (layers, length) in enumerate(zip(rows, lengths, strict=True)):
            if layers is not None and length:
                keys[i, :, width - length :] = layers[layer][0]
                values[i, :, width - length :] = layers[layer][1]
        data.append((keys, values))
    return DynamicCache(data, config=config)


def is_plain(cache: DynamicCache) -> bool:
    """Whether every layer keeps all positions (a sliding-window layer cannot be split into rows)."""
    return all(type(layer).__name__ == "DynamicLayer" for layer in cache.layers)


def row_layers(cache: DynamicCache, row: int, positions: Tensor) -> Layers:
    """Row ``row``'s keys and values at ``positions`` (a 1-D index tensor), copied out of the batch."""
    return [
        (layer.keys[row].index_select(1, positions).clone(), layer.values[row].index_select(1, positions).clone())
        for layer in cache.layers
    ]


def position_index(pieces: list[tuple[int, int]], device: torch.device) -> Tensor:
    """The positions of the half-open ranges ``pieces``, concatenated."""
    return torch.cat([torch.arange(start, end, device=device) for start, end in pieces])
