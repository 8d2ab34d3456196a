"""Extraction: parsing messy model output, the trace and outcome the extractor reads, item provenance."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

import envs
from agents.agent import Agent, Context
from agents.llm import Generation, SamplingParams
from agents.records import Episode, Message, Turn
from agents.rollout import Task, collect_episodes
from envs.grid_games import STRIPPED_RULES
from experience_store.examples import EXAMPLES, STYLE_EXAMPLES, contrast_example_for, example_for
from experience_store.reflect import (
    CONTRAST_TEMPLATES,
    MAX_ITEM_CHARS,
    Contrast,
    ExtractionOptions,
    Extractor,
    extraction_messages,
    finished_lines,
    parse_items,
    render_outcome,
    render_trace,
    task_style,
    with_contrasts,
)


@dataclass
class ScriptedLLM:
    """An ``LLM`` whose replies come from a function of the conversation; it records each call."""

    reply: object  # Callable[[list[Message]], str]
    name: str = "scripted"
    calls: list[tuple[list[list[Message]], SamplingParams]] = field(default_factory=list)

    def generate(self, conversations: list[list[Message]], params: SamplingParams) -> list[Generation]:
        self.calls.append((conversations, params))
        return [Generation(self.reply(c), [], [], "stop") for c in conversations]  # type: ignore[operator]

    def count_tokens(self, conversation: list[Message]) -> int:
        return sum(len(m["content"].split()) for m in conversation)


def play(env: str, replies: list[str], *, context: Context | None = None, index: int = 0) -> Episode:
    """One real episode of ``env`` whose agent answers with ``replies`` in turn (the last one repeats)."""
    turn = iter(range(10**6))
    llm = ScriptedLLM(lambda c: replies[min(next(turn), len(replies) - 1)])
    agent = Agent(llm, SamplingParams(max_new_tokens=8), context)
    (episode,) = collect_episodes(lambda: envs.make(env), agent, [Task("train", index)], env_id=env)
    return episode


# -- parsing --------------------------------------------------------------------------------------


def test_parses_one_item_per_marked_line() -> None:
    text = "Sure!\n- EXPERIENCE ITEM: Check each step of the arithmetic.\n- EXPERIENCE ITEM: Write the answer last.\n"
    assert parse_items(text) == ["Check each step of the arithmetic.", "Write the answer last."]


def test_several_markers_on_one_line_are_separate_items() -> None:
    text = "- EXPERIENCE ITEM: Move towards the goal. - EXPERIENCE ITEM: Avoid the holes marked H."
    assert parse_items(text) == ["Move towards the goal.", "Avoid the holes marked H."]


@pytest.mark.parametrize(
    "text",
    [
        "**EXPERIENCE ITEM:** Reduce fractions at the end.",
        "1. Experience Item: Reduce fractions at the end.",
        "* EXPERIENCE_ITEM 2: Reduce fractions at the end.",
        "  -   EXPERIENCE ITEM:   Reduce   fractions at the end.  ",
        '- EXPERIENCE ITEM: "Reduce fractions at the end."',
        "- experience item: Reduce fractions at the end.\ncontinued on the next line",
    ],
)
def test_marker_variants_and_decoration(text: str) -> None:
    assert parse_items(text) == ["Reduce fractions at the end."]


def test_thinking_is_ignored() -> None:
    closed = "<think>- EXPERIENCE ITEM: A thought, not an item.</think>\n- EXPERIENCE ITEM: The real item here."
    stray = "- EXPERIENCE ITEM: Reasoning before the close tag.</think>- EXPERIENCE ITEM: Only this one counts."
    unclosed = "- EXPERIENCE ITEM: Written before thinking began.\n<think>- EXPERIENCE ITEM: cut off mid thought"
    assert parse_items(closed) == ["The real item here."]
    assert parse_items(stray) == ["Only this one counts."]
    assert parse_items(unclosed) == ["Written before thinking began."]


def test_junk_and_nothing_give_no_items() -> None:
    assert parse_items("") == []
    assert parse_items("I am not sure what to write here.") == []
    junk = "\n".join(
        [
            "- EXPERIENCE ITEM:",
            "- EXPERIENCE ITEM: ok then",
            "- EXPERIENCE ITEM: <one general rule or strategy>",
            "- EXPERIENCE ITEM: [insert insight]",
            "- EXPERIENCE ITEM: 12 + 30 = 42 = 42",
            "- EXPERIENCE ITEM: ...",
            "- EXPERIENCE ITEM: " + "very long rambling " * 30,
        ]
    )
    assert parse_items(junk) == []


def test_repeated_items_are_kept_once_in_order() -> None:
    text = "- EXPERIENCE ITEM: Go right first.\n- EXPERIENCE ITEM: go right first.\n- EXPERIENCE ITEM: Then go down."
    assert parse_items(text) == ["Go right first.", "Then go down."]


@given(st.text(alphabet=st.sampled_from(list("- EXPERINCItm:<>/thk\n*ab .")) | st.characters(), max_size=300))
def test_parsing_never_fails_and_items_are_clean(text: str) -> None:
    for item in parse_items(text):
        assert item == item.strip() and "\n" not in item
        assert 3 <= len(item.split()) and len(item) <= MAX_ITEM_CHARS
        assert "EXPERIENCE ITEM" not in item.upper()


# -- what the extractor reads --------------------------------------------------------------------


def test_task_styles() -> None:
    assert task_style("math") == task_style("opcd/Math-v1") == task_style("qa") == "problem"
    assert task_style("frozenlake") == task_style("sokoban") == task_style("textworld") == "game"


def test_game_trace_has_observations_and_replies_but_no_rules_and_no_context() -> None:
    context = Context("Secret tip: always go down.", "knowledge")
    episode = play("frozenlake", ["I go [right]", "then [down]", "[down]", "[right]", "[up]"], context=context)
    messages = extraction_messages(episode, "game")
    request = messages[-1]["content"]
    assert STRIPPED_RULES not in request and "Secret tip" not in request
    assert envs.make("frozenlake").instructions not in request
    assert "Turn 1\nGame:\nCurrent Board:" in request and "You:\nI go [right]" in request
    assert f"Final result: {'success' if episode.success else 'failure'}" in request
    assert episode.turns[-1].observation.strip() in request  # the env's last message is the reason
    # The worked example comes first, as a finished exchange.
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[2]["content"].startswith("- EXPERIENCE ITEM:")


def test_math_trace_and_withheld_outcome() -> None:
    episode = play("math", ["I think it is 7.\nAnswer: 7"])
    shown = extraction_messages(episode, "problem")[-1]["content"]
    problem = episode.turns[0].prompt_messages[-1]["content"]
    assert f"Problem:\n{problem}\n\nYour answer:\nI think it is 7.\nAnswer: 7" in shown
    assert "Final result: failure\nFeedback: Incorrect: the answer read from your reply was 7" in shown
    withheld = extraction_messages(episode, "problem", ExtractionOptions(withhold_outcome=True))
    assert all("Final result" not in m["content"] and "Incorrect" not in m["content"] for m in withheld)
    assert render_outcome(episode, ExtractionOptions(withhold_outcome=True)) == ""


def test_long_episodes_and_messages_are_shortened() -> None:
    episode = play("frozenlake", ["[left] " + "x" * 3000])  # invalid moves: the episode ends early
    options = ExtractionOptions(max_turns=1, max_chars=100)
    trace = render_trace(episode, "game", options)
    assert "[...]" in trace and len(trace) < 400
    if episode.num_turns > 1:
        assert "turns left out" in trace


# -- extraction -----------------------------------------------------------------------------------


def test_extractor_writes_items_with_provenance_and_drops_copies_of_the_example() -> None:
    episodes = [play("math", ["Answer: 3"], index=i) for i in range(2)]
    copied, part = EXAMPLES["math"].items[0], EXAMPLES["math"].items[1].split(" before")[0]
    other_env = EXAMPLES["addition"].items[0]  # not shown to math: not a copy
    reply = "\n".join(f"- EXPERIENCE ITEM: {text}" for text in (copied, part, "Read the question twice.", other_env))
    llm = ScriptedLLM(lambda c: reply)
    extractor = Extractor(llm, "problem", round=2)
    written = extractor.extract(episodes, env_id="math", seed=7)
    assert [[i.text for i in items] for items in written] == [["Read the question twice.", other_env]] * 2
    for step, (episode, (item, _)) in enumerate(zip(episodes, written), start=1):
        assert item.source_episodes == [episode.uuid] and item.model == "scripted" and item.round == 2
        assert item.env_id == "math" and item.kind == "experience"
        assert item.metadata == {"seed": 7, "step": step, "outcome_shown": True}
    (conversations, params), = llm.calls  # one batched call, with the candidate's seed
    assert len(conversations) == 2 and params.seed == 7 and params.max_new_tokens == 192


def test_a_last_line_cut_off_by_the_token_limit_is_dropped() -> None:
    text = "- EXPERIENCE ITEM: Reduce fractions at the end.\n- EXPERIENCE ITEM: Multiply both sides by the"
    assert parse_items(finished_lines(Generation(text, [], [], "length"))) == ["Reduce fractions at the end."]
    assert len(parse_items(finished_lines(Generation(text, [], [], "stop")))) == 2
    assert finished_lines(Generation("- EXPERIENCE ITEM: no newline at all", [], [], "length")) == ""


# -- per-env worked examples --------------------------------------------------------------------

# What each env's first observation starts with: the example must be in the env's own format.
OPENINGS = {"math": "Compute", "addition": "What is", "qa": "Question:", "frozenlake": "Current Board:",
            "sokoban": "Current Board:", "textworld": "-= "}


@pytest.mark.parametrize("env", sorted(OPENINGS))
def test_each_env_has_its_own_example_in_its_own_format(env: str) -> None:
    assert set(EXAMPLES) == set(OPENINGS) <= set(envs.names())
    style = task_style(env)
    example = EXAMPLES[env]
    assert example_for(env, style) is example and example_for(envs.spec(env).gym_id, style) is example
    observation, _ = envs.make(env).reset(seed=0, options={"split": "train", "index": 0})
    assert observation.startswith(OPENINGS[env])
    assert OPENINGS[env] in example.trace and 1 <= len(example.items) <= 3
    shown = "\n".join(f"- EXPERIENCE ITEM: {item}" for item in example.items)
    assert parse_items(shown) == list(example.items)  # every item survives the parser


def test_an_episode_is_shown_its_envs_example_and_a_new_env_its_styles() -> None:
    episode = play("addition", ["Answer: 3"])
    messages = extraction_messages(episode, "problem")
    assert EXAMPLES["addition"].trace in messages[1]["content"] and "fractions" not in str(messages)
    assert messages[2]["content"] == "\n".join(f"- EXPERIENCE ITEM: {i}" for i in EXAMPLES["addition"].items)
    assert example_for("researcher:NewEnv", "game") is STYLE_EXAMPLES["game"]
    assert example_for("opcd/Unknown-v9", "problem") is STYLE_EXAMPLES["problem"]


def test_copies_are_judged_against_the_example_shown() -> None:
    episode = play("frozenlake", ["[down]"])
    lake, sokoban = EXAMPLES["frozenlake"].items[0], EXAMPLES["sokoban"].items[1]
    llm = ScriptedLLM(lambda c: f"- EXPERIENCE ITEM: {lake}\n- EXPERIENCE ITEM: {sokoban}")
    (items,) = Extractor(llm, "game").extract([episode], env_id="frozenlake", seed=0)
    assert [i.text for i in items] == [sokoban]


# -- contrasts ----------------------------------------------------------------------------------


def stored(env: str, task: str, success: bool, at: float, tag: str = "") -> Episode:
    """A one-turn episode of ``task`` (reply ``tag``), created at ``at``."""
    prompt: list[Message] = [{"role": "system", "content": "RULES"}, {"role": "user", "content": f"Task {task}"}]
    last = "Correct." if success else "Incorrect: the answer read from your reply was 1"
    turn = Turn(0, prompt, f"reply {tag}", "1", float(success), last)
    return Episode(env, task, "train", "m", [turn], success=success, total_reward=float(success), created_at=at)


def test_with_contrasts_pairs_the_newest_success_and_failure_of_a_task() -> None:
    old_win = stored("math", "t1", True, 1.0)
    lone_fail = stored("math", "t2", False, 2.0)
    loss = stored("opcd/Math-v1", "t1", False, 3.0)  # the same task under the env's other name
    new_win = stored("math", "t1", True, 4.0)
    other_env = stored("addition", "t1", True, 5.0)  # same task_id, another env: not a pair
    sources = with_contrasts([new_win, loss, lone_fail, old_win, other_env])  # newest first
    assert sources == [Contrast(new_win, loss), lone_fail, old_win, other_env]
    # Oldest first: the contrast stands where its newer member (the success) stood.
    assert with_contrasts([old_win, lone_fail, loss, new_win]) == [old_win, lone_fail, Contrast(new_win, loss)]
    assert with_contrasts([lone_fail, old_win]) == [lone_fail, old_win]
    assert with_contrasts([]) == []
    with pytest.raises(ValueError):
        Contrast(loss, new_win)  # success first
    with pytest.raises(ValueError):
        Contrast(new_win, lone_fail)  # another task


def test_a_contrast_shows_both_traces_and_outcomes_after_its_example() -> None:
    won = play("addition", ["33 + 75 = 33 + 70 + 5 = 108\nAnswer: 108"], index=3)
    lost = play("addition", ["33 + 75 = 98\nAnswer: 98"], index=3)
    assert won.success and not lost.success and won.task_id == lost.task_id
    messages = extraction_messages(Contrast(won, lost), "problem")
    request = messages[-1]["content"]
    assert request.index("SUCCESSFUL ATTEMPT") < request.index("Answer: 108\nFinal result: success\nFeedback: Correct.")
    assert request.index("FAILED ATTEMPT") < request.index(
        "Answer: 98\nFinal result: failure\nFeedback: Incorrect: the answer read from your reply was 98"
    )
    assert request.count("Problem:\nWhat is 33 + 75?") == 2
    assert "SUCCESSFUL ATTEMPT" in messages[1]["content"] and "58 + 67" in messages[1]["content"]
    assert CONTRAST_TEMPLATES["problem"].split("{")[0] in request
    with pytest.raises(ValueError):
        extraction_messages(Contrast(won, lost), "problem", ExtractionOptions(withhold_outcome=True))


def test_contrast_items_name_both_episodes() -> None:
    won = play("frozenlake", ["[right]", "[right]", "[down]", "[down]"], index=3)
    lost = play("frozenlake", ["[down]"], index=3)
    single = play("frozenlake", ["[left]"], index=4)
    copied = contrast_example_for("frozenlake", "game").items[0]
    reply = f"- EXPERIENCE ITEM: Plan the whole path before the first move.\n- EXPERIENCE ITEM: {copied}"
    llm = ScriptedLLM(lambda c: reply)
    pair, alone = Extractor(llm, "game").extract([Contrast(won, lost), single], env_id="frozenlake", seed=3)
    (item,) = pair
    assert item.source_episodes == [won.uuid, lost.uuid] and item.env_id == "frozenlake"
    assert item.metadata == {"seed": 3, "step": 1, "outcome_shown": True, "contrast": True}
    assert [i.source_episodes for i in alone] == [[single.uuid]] * 2  # the contrast example is not shown here
    assert "contrast" not in alone[0].metadata
    (conversations, _), = llm.calls
    assert "WON GAME" in conversations[0][-1]["content"] and "WON GAME" not in conversations[1][-1]["content"]
