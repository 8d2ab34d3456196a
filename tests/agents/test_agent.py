"""Message building: context placement and history windowing."""

from __future__ import annotations

from agents.agent import Context, build_messages, with_context, without_context
from agents.records import Message


def words(messages: list[Message]) -> int:
    return sum(len(m["content"].split()) for m in messages)


def test_no_context_no_history() -> None:
    messages = build_messages("Play well.", [], "You see a door.")
    assert messages == [
        {"role": "system", "content": "Play well."},
        {"role": "user", "content": "You see a door."},
    ]


def test_knowledge_context_is_a_delimited_block_after_the_instructions() -> None:
    system = build_messages("Play well.", [], "obs", Context("- EXPERIENCE ITEM: doors open.", "knowledge"))[0]
    assert system["content"].startswith("Play well.")
    assert "<context>\n- EXPERIENCE ITEM: doors open.\n</context>" in system["content"]


def test_a_context_heading_replaces_the_kinds() -> None:
    context = Context("- doors open.", "knowledge", heading="Notes from a colleague")
    system = build_messages("Play well.", [], "obs", context)[0]["content"]
    assert "\n\n## Notes from a colleague\n<context>\n- doors open.\n</context>" in system
    assert context.unwrap(system) == "Play well."


def test_system_prompt_context_opens_the_system_message() -> None:
    system = build_messages("Answer with a letter.", [], "Q?", Context("You are a careful pharmacist.", "system_prompt"))
    assert system[0]["content"] == "You are a careful pharmacist.\n\nAnswer with a letter."


def test_history_alternates_user_and_assistant() -> None:
    messages = build_messages("sys", [("o1", "r1"), ("o2", "r2")], "o3")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert [m["content"] for m in messages[1:]] == ["o1", "r1", "o2", "r2", "o3"]


def test_windowing_drops_oldest_pairs_and_keeps_instructions_and_observation() -> None:
    history = [(f"observation {i} " + "w " * 10, f"reply {i}") for i in range(10)]
    messages = build_messages("the instructions", history, "current observation", None, words, 60)
    assert words(messages) <= 60
    assert messages[0]["content"] == "the instructions"
    assert messages[-1]["content"] == "current observation"
    kept = [m["content"] for m in messages if m["role"] == "assistant"]
    assert kept and kept == [f"reply {i}" for i in range(10 - len(kept), 10)]  # the newest survive


def test_windowing_keeps_the_essentials_even_over_budget() -> None:
    messages = build_messages("a " * 100, [("old", "reply")], "now", None, words, 5)
    assert [m["role"] for m in messages] == ["system", "user"]


def test_with_and_without_context_round_trip() -> None:
    for kind in ("knowledge", "system_prompt", "handbook", "traces"):
        context = Context("some text", kind)
        plain = build_messages("instructions", [("o1", "r1")], "o2")
        wrapped = with_context(plain, context)
        assert wrapped == build_messages("instructions", [("o1", "r1")], "o2", context)
        assert without_context(wrapped, context) == plain


def test_unwrap_refuses_a_foreign_system_message() -> None:
    import pytest

    with pytest.raises(ValueError, match="context"):
        Context("the knowledge").unwrap("instructions without it")


def test_env_context_kinds_and_errors() -> None:
    import pytest

    import envs
    from agents.agent import env_context

    qa = envs.make("qa")
    assert env_context(qa, "qa", "handbook").kind == "handbook"
    assert env_context(qa, "qa", "system_prompt").kind == "system_prompt"
    assert env_context(envs.make("sokoban"), "sokoban", "rules").kind == "knowledge"
    with pytest.raises(ValueError, match="ships: handbook, system_prompt"):
        env_context(qa, "qa", "rules")


def test_windowing_moves_its_start_in_strides_so_consecutive_prompts_share_it() -> None:
    history = [(f"observation {i} " + "w " * 10, f"reply {i}") for i in range(60)]  # 14 words a pair
    starts, kept = [], []
    for turn in range(12, 60):
        messages = build_messages("the instructions", history[:turn], "now", None, words, 150)  # 10 pairs fit
        assert words(messages) <= 150
        starts.append(messages[1]["content"])
        kept.append(sum(m["role"] == "assistant" for m in messages))
    assert min(kept) >= 5 and max(kept) == 10  # never less than half of what fits
    moves = sum(a != b for a, b in zip(starts, starts[1:]))
    assert moves <= len(starts) // 4  # the window's start moves every ~5 turns, not every turn
