"""RowCache: longest-prefix lookup, the last prompt token always left to feed, the token budget."""

from __future__ import annotations

import torch

from agents.prompt_cache import RowCache


def layers(tokens: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Two layers whose keys and values record the token at each position."""
    k = torch.tensor(tokens, dtype=torch.float32).view(1, -1, 1)
    return [(k, -k), (2 * k, -2 * k)]


def test_take_finds_the_longest_shared_prefix_and_removes_it() -> None:
    cache = RowCache(max_tokens=100)
    cache.add([1, 2, 3, 4], layers([1, 2, 3, 4]))
    cache.add([1, 2, 9, 9, 9], layers([1, 2, 9, 9, 9]))
    length, found = cache.take([1, 2, 3, 4, 5, 6])
    assert length == 4 and found is not None
    assert found[1][0].flatten().tolist() == [2, 4, 6, 8] and found[0][1].flatten().tolist() == [-1, -2, -3, -4]
    assert len(cache) == 1 and cache.tokens == 5


def test_the_last_prompt_token_is_never_taken_from_the_cache() -> None:
    cache = RowCache(max_tokens=100)
    cache.add([1, 2, 3], layers([1, 2, 3]))
    length, found = cache.take([1, 2, 3])
    assert length == 2 and found is not None and found[0][0].shape == (1, 2, 1)


def test_no_shared_prefix_takes_nothing() -> None:
    cache = RowCache(max_tokens=100)
    cache.add([1, 2], layers([1, 2]))
    assert cache.take([7, 8, 9]) == (0, None) and len(cache) == 1
    assert cache.take([1]) == (0, None)  # a one-token prompt has nothing to reuse


def test_budget_evicts_the_least_recently_added() -> None:
    cache = RowCache(max_tokens=6)
    cache.add([1, 2, 3], layers([1, 2, 3]))
    cache.add([4, 5, 6], layers([4, 5, 6]))
    cache.add([7, 8], layers([7, 8]))
    assert len(cache) == 2 and cache.tokens == 5
    assert cache.take([1, 2, 3, 4]) == (0, None)
    cache.add(list(range(7)), layers(list(range(7))))  # larger than the whole budget: not kept
    assert cache.tokens == 5
