"""Accumulation: FIFO by whole items under a token budget, near-duplicate merging, raw-trace contexts."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_reflect import play

import envs
from agents.agent import Context
from agents.hf_backend import HFBackend
from agents.records import Episode, Turn
from envs.math_env import WORKED_EXAMPLE
from experience_store import ExperienceStore, KnowledgeItem
from experience_store.knowledge import (
    EXEMPLAR_MAX_CHARS,
    Accumulator,
    exemplar_item,
    exemplar_items,
    knowledge_text,
    llm_token_counter,
    trace_set,
    trace_text,
)
from experience_store.similarity import Containment, TokenOverlap, jaccard, normalize


def words(text: str) -> int:
    return len(text.split())


def never(new: str, kept: str) -> bool:
    return False


def item(text: str, **kwargs: object) -> KnowledgeItem:
    return KnowledgeItem(text, env_id="math", model="m", **kwargs)  # type: ignore[arg-type]


def sized(n: int, tag: str) -> KnowledgeItem:
    """An item of exactly ``n`` words, unlike any other tag's."""
    return item(" ".join(f"{tag}{k}" for k in range(n)))


# -- budget ---------------------------------------------------------------------------------------


def test_budget_drops_the_oldest_whole_items() -> None:
    acc = Accumulator(words, budget=10, similar=never)
    first, second, third = sized(4, "a"), sized(4, "b"), sized(4, "c")
    acc.add([first, second])
    assert acc.items == [first, second] and acc.token_count == 8
    acc.add([third])
    assert acc.items == [second, third] and acc.truncated == [first.uuid]
    assert acc.text == f"{second.text}\n{third.text}"  # every kept item whole, oldest first


def test_an_item_over_the_budget_alone_is_dropped_not_cut() -> None:
    acc = Accumulator(words, budget=5, similar=never)
    small, huge = sized(3, "s"), sized(9, "h")
    acc.add([small, huge])
    assert acc.items == [] and acc.truncated == [small.uuid, huge.uuid] and acc.token_count == 0


@given(st.lists(st.integers(1, 12), max_size=25), st.integers(1, 40))
def test_budget_keeps_the_longest_fitting_newest_suffix(sizes: list[int], budget: int) -> None:
    items = [sized(n, f"t{i}x") for i, n in enumerate(sizes)]
    acc = Accumulator(words, budget, similar=never)
    for start in range(0, len(items), 3):  # several accumulation steps
        acc.add(items[start : start + 3])
    kept = len(acc.items)
    assert acc.items == items[len(items) - kept :]  # a suffix: the newest, in order
    assert sum(sizes[len(items) - kept :]) <= budget
    if kept < len(items) and kept:  # maximal: one more (older) item would not fit
        assert sum(sizes[len(items) - kept - 1 :]) > budget


def test_llm_token_counter_counts_the_text_alone(tiny_backend: HFBackend) -> None:
    count = llm_token_counter(tiny_backend)
    text = "Move right twice, then down.\nAvoid H."
    assert count(text) == len(tiny_backend.tokenizer(text, add_special_tokens=False)["input_ids"])
    assert count("") == 0


# -- near-duplicates ------------------------------------------------------------------------------


def test_similarity_measures() -> None:
    assert normalize("  Check the ANSWER, twice! ") == "check the answer twice"
    assert normalize("Multiply 77 by 41.") == normalize("multiply 3 by 12") == "multiply 0 by 0"
    assert jaccard("a b c", "a b d") == pytest.approx(2 / 4)
    assert jaccard("", "a") == 0.0
    same = TokenOverlap(0.7)
    assert same("Check the answer twice.", "check the ANSWER twice")  # normalised equality
    assert same("Always check the arithmetic before answering.", "Check the arithmetic before answering.")
    assert not same("Move towards the goal.", "Avoid the holes on the board.")
    with pytest.raises(ValueError):
        TokenOverlap(0.0)
    part_of = Containment(0.8)
    assert part_of("A move that worked is worth repeating.", "A move that worked is worth repeating; do not waver.")
    assert not part_of("A move into a hole ends the game.", "A move that worked is worth repeating.")
    assert not part_of("...", "anything")


def test_a_near_duplicate_replaces_the_older_item_with_the_newer_wording_at_the_end() -> None:
    acc = Accumulator(words, budget=100)
    old = item("Check the arithmetic before answering.", source_episodes=["e1"])
    other = item("Write the answer on the last line.")
    acc.add([old, other])
    new = item("Always check the arithmetic before answering.", source_episodes=["e2"])
    acc.add([new])
    assert acc.items == [other, new]
    assert acc.merged == {new.uuid: [old.uuid]}
    newest = item("always CHECK the arithmetic before answering!!")
    acc.add([newest])  # merges again: the chain of replaced items is kept
    assert acc.items == [other, newest] and acc.merged == {newest.uuid: [old.uuid, new.uuid]}


def test_duplicates_within_one_step_and_custom_similarity() -> None:
    acc = Accumulator(words, budget=100)
    a, b = item("Go down first, then right."), item("go down first then right")
    acc.add([a, b])
    assert acc.items == [b]
    by_first_word = Accumulator(words, budget=100, similar=lambda new, kept: new.split()[0] == kept.split()[0])
    c, d, e = item("Avoid holes at all cost."), item("Avoid walls when you can."), item("Move right.")
    by_first_word.add([c, d, e])
    assert by_first_word.items == [d, e] and by_first_word.merged == {d.uuid: [c.uuid]}


def test_the_set_records_its_provenance_and_stores(tmp_path: Path) -> None:
    acc = Accumulator(words, budget=9)
    first, second = item("Check the arithmetic before answering."), item("Write the answer on the last line.")
    acc.add([first, second])
    ks = acc.knowledge_set("math", round=1, metadata={"seed": 3, "steps": 2})
    assert ks.items == [second] and ks.token_count == 7 and ks.round == 1
    assert ks.metadata == {"budget": 9, "merged": {}, "truncated": [first.uuid], "seed": 3, "steps": 2}
    with ExperienceStore.open(tmp_path / "exp.db") as store:
        store.add_knowledge_set(ks)
        (stored,) = store.knowledge_sets(env="math")
    assert knowledge_text(stored.items) == second.text and stored.metadata == ks.metadata


# -- raw traces ---------------------------------------------------------------------------------


def episode(i: int, reply: str) -> Episode:
    prompt = [{"role": "system", "content": "RULES"}, {"role": "user", "content": f"board {i}"}]
    turns = [Turn(0, prompt, reply, "[up]", 0.0, "You lost.")]
    return Episode("frozenlake", f"t{i}", "train", "m", turns, created_at=1000.0 + i)


def test_raw_traces_keep_the_newest_whole_traces_under_the_budget() -> None:
    episodes = [episode(i, f"reply {i} " + "word " * 10) for i in range(4)]
    one = words(trace_text(trace_set("frozenlake", episodes[:1], "game", words, 10**6).items))
    ks = trace_set("frozenlake", episodes, "game", words, budget=2 * one + 1)
    assert [i.source_episodes for i in ks.items] == [[episodes[2].uuid], [episodes[3].uuid]]
    assert all(i.kind == "raw_trace" for i in ks.items) and ks.metadata["kind"] == "raw_trace"
    text = trace_text(ks.items)
    assert "board 3" in text and "Final result: failure" in text and "RULES" not in text
    assert ks.token_count == words(text) <= 2 * one + 1


# -- exemplars ----------------------------------------------------------------------------------


def test_an_addition_exemplar_looks_like_the_envs_worked_example() -> None:
    reply = "33 + 75 = 33 + 70 + 5 = 103 + 5 = 108.\nAnswer: 108"
    won = play("addition", [reply], index=3)
    exemplar = exemplar_item(won, "problem")
    assert exemplar is not None and won.success
    assert exemplar.text == f"Example. Problem: What is 33 + 75?\nReply: {reply}"
    assert WORKED_EXAMPLE.split("Example. ")[1].startswith("Problem: What is ")  # the same form as the env's own
    assert exemplar.kind == "exemplar" and exemplar.source_episodes == [won.uuid]
    assert exemplar.env_id == "addition" and exemplar.model == won.model
    assert exemplar.metadata == {"task_id": won.task_id}
    assert "Solve the math problem" not in exemplar.text  # the env's instructions stay out
    Context(knowledge_text([exemplar]), "knowledge")  # usable as an agent's context


def test_a_math_exemplar_keeps_the_answer_and_loses_the_reasoning_blocks() -> None:
    reply = "<think>hmm, let me see</think>Work inside the parentheses: 13 + 7 = 20, then 20 × 9 = 180.\nAnswer: 180"
    won = play("math", [reply], index=0)
    exemplar = exemplar_item(won, "problem")
    assert won.success and exemplar is not None
    assert exemplar.text.startswith("Example. Problem: Compute (13 + 7) × 9.\nReply: Work inside")
    assert exemplar.text.endswith("Answer: 180") and "think" not in exemplar.text
    long = play("math", ["I add and multiply. " * 40 + "So it is 180.\nAnswer: 180"], index=0)
    clipped = exemplar_item(long, "problem", max_chars=200)
    assert clipped is not None and len(clipped.text) <= 200
    assert "\nReply: ... " in clipped.text and clipped.text.endswith("So it is 180.\nAnswer: 180")
    assert exemplar_item(long, "problem", max_chars=60) is None  # no room left for the reply


def test_failures_and_long_games_give_no_exemplar() -> None:
    assert exemplar_item(play("addition", ["Answer: 1"], index=3), "problem") is None
    assert exemplar_item(play("frozenlake", ["[down]"], index=3), "game") is None
    won = play("frozenlake", ["[right]", "[right]", "[down]", "[down]"], index=3)
    exemplar = exemplar_item(won, "game")
    assert exemplar is not None and exemplar.text.startswith("Example. Start:\nCurrent Board:\n+-----+")
    assert exemplar.text.endswith("\nMoves that solved it: [right]; [right]; [down]; [down]")
    assert len(exemplar.text) <= EXEMPLAR_MAX_CHARS
    assert exemplar_item(won, "game", max_chars=100) is None  # cannot be made that short


def solved(index: int, created_at: float, working: str = "") -> Episode:
    """A real addition episode of train task ``index``, answered right, created at ``created_at``."""
    env = envs.make("addition")
    env.reset(options={"split": "train", "index": index})
    (answer,) = env.reference_solution()
    episode = play("addition", [f"{working}Answer: {answer}"], index=index)
    episode.created_at = created_at
    return episode


def test_exemplar_items_one_per_task_newest_first_successes_only() -> None:
    old, new, other = solved(3, 1.0), solved(3, 3.0, "Tens, then ones.\n"), solved(5, 0.5)
    failure = play("addition", ["Answer: 0"], index=4)
    failure.created_at = 2.0
    items = exemplar_items([old, failure, new, other], "problem")
    assert [i.source_episodes for i in items] == [[new.uuid], [other.uuid]]
    assert all(i.kind == "exemplar" for i in items) and "Tens, then ones." in items[0].text
    assert exemplar_items([failure], "problem") == []
