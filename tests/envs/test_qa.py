"""The QA env: the invented formulary, answer parsing, rewards and the JSONL loaders."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given
from hypothesis import strategies as st

import envs
from envs.base import SPLITS
from envs.qa_domain import ATTRIBUTES, FormularyDomain
from envs.qa_env import QAEnv, parse_choice
from envs.qa_items import MCQItem, assemble_splits, load_jsonl

# Recorded from seed 0: any change to the generator (or a platform difference) shows up here.
HANDBOOK_SHA256 = "136a489507c14369797becfc06a69fa4d22403fbee449f3598e7b9fd1edbbd3e"
QUESTIONS_SHA256 = "7f55a08ddf5029039a2bb05c1d99939dd752ab4a61e7e751e00f46bee1558f76"
OPTIONS = ("Tarvik fever", "Morvan palsy", "5 mg once daily", "15 mg once daily")


@pytest.fixture(scope="module")
def domain() -> FormularyDomain:
    return FormularyDomain()


def questions_digest(domain: FormularyDomain) -> str:
    """A digest of the QA-v0 splits: train, validation and the first 40 test questions, in order (QA-v1
    only appends statement questions to test)."""
    blob = {split: [[q.question, list(q.options), q.answer] for q in items[: 40 if split == "test" else None]]
            for split, items in domain.splits.items()}
    return hashlib.sha256(json.dumps(blob).encode()).hexdigest()


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    return path


# -- the env -------------------------------------------------------------------------------------------


def test_check_env() -> None:
    check_env(QAEnv(render_mode="ansi"), skip_render_check=False)
    check_env(gymnasium.make("opcd/QA-v1").unwrapped, skip_render_check=False)


def test_default_sizes_and_surface() -> None:
    env = envs.make("qa")
    assert env.split_sizes == {"train": 320, "validation": 40, "test": 360}
    assert 1_000 < len(env.handbook) < 6_000
    assert "<answer>" in env.system_prompt and "pharmacology" in env.system_prompt
    assert "<answer>X</answer>" in env.instructions
    assert not any(drug.name in env.instructions for drug in env.domain.drugs)  # the context comes apart
    observation, info = env.reset(options={"split": "test", "index": 3})
    item = env.domain.splits["test"][3]
    assert observation.startswith(f"Question: {item.question}")
    assert all(f"{letter}. {option}" in observation for letter, option in zip("ABCD", item.options))
    assert info["task_id"] == item.task_id and info["task_id"].startswith("qa-")


def test_reward_right_wrong_and_unreadable() -> None:
    env = QAEnv()
    env.reset(options={"split": "validation", "index": 0})
    gold = env.reference_solution()[0]
    observation, reward, terminated, truncated, info = env.step(f"Let me see. <answer>{gold}</answer>")
    assert (reward, terminated, truncated, info["success"]) == (1.0, True, False, True)
    assert info["answer"] == info["chosen"] == gold and observation.startswith("Correct")
    wrong = next(letter for letter in "ABCD" if letter != gold)
    env.reset(options={"split": "validation", "index": 0})
    observation, reward, _, _, info = env.step(f"Answer: {wrong}")
    assert (reward, info["success"], info["chosen"], info["answer"]) == (0.0, False, wrong, gold)
    assert f"the answer is {gold}" in observation
    env.reset(options={"split": "validation", "index": 0})
    _, reward, terminated, _, info = env.step("no idea")
    assert (reward, terminated, info["chosen"]) == (0.0, True, "")
    with pytest.raises(gymnasium.error.ResetNeeded):
        env.step("A")


def test_a_quoted_option_text_is_read_as_that_option() -> None:
    env = QAEnv()
    env.reset(options={"split": "train", "index": 7})
    item = env.domain.splits["train"][7]
    _, reward, _, _, _ = env.step(f"I am confident it is {item.options[item.answer]}.")
    assert reward == 1.0


@pytest.mark.parametrize("action", ["", "x" * 100_000, b"\x00\xff binary", "\\" * 300, "🦜 Ωmega \u202e",
                                    "\x00\x01\r\n\t\x7f", "<answer>" * 5_000, "(" * 50_000, "A\n" * 20_000])
def test_adversarial_actions(action: Any) -> None:
    env = QAEnv()
    env.reset(seed=1)
    observation, reward, terminated, _, info = env.step(action)
    assert isinstance(observation, str) and reward in (0.0, 1.0) and terminated
    assert isinstance(env.parse_action(action), str)


def test_more_entities_and_options() -> None:
    env = QAEnv(num_entities=50, num_options=6, domain_seed=3)
    assert sum(env.split_sizes.values()) == 50 * (20 + 16)  # 16 statement questions per drug in test
    observation, _ = env.reset(seed=0)
    assert "F. " in observation and "G. " not in observation
    with pytest.raises(ValueError, match="num_entities"):
        QAEnv(num_entities=3)


# -- the formulary -------------------------------------------------------------------------------------


def test_domain_is_deterministic(domain: FormularyDomain) -> None:
    assert hashlib.sha256(domain.handbook.encode()).hexdigest() == HANDBOOK_SHA256
    assert questions_digest(domain) == QUESTIONS_SHA256
    assert questions_digest(FormularyDomain()) == QUESTIONS_SHA256
    other = FormularyDomain(seed=1)
    assert other.handbook != domain.handbook and questions_digest(other) != QUESTIONS_SHA256


def test_facts_are_consistent(domain: FormularyDomain) -> None:
    names = [drug.name for drug in domain.drugs]
    assert len(set(names)) == len(names) == 20
    every_value = names + [drug.facts[a.key] for drug in domain.drugs for a in ATTRIBUTES]
    assert len(set(every_value)) == len(every_value)  # one drug per value: every question has one answer
    for drug in domain.drugs:
        assert set(drug.facts) == {a.key for a in ATTRIBUTES}
        assert domain.section(drug.name) in domain.handbook


def test_splits_are_disjoint_and_sized(domain: FormularyDomain) -> None:
    keys = {split: {q.content_key for q in domain.splits[split]} for split in SPLITS}
    assert [len(keys[s]) for s in SPLITS] == [320, 40, 360]
    assert not keys["train"] & keys["validation"] and not keys["train"] & keys["test"]
    assert not keys["validation"] & keys["test"]
    assert len({q.task_id for q in domain.questions}) == len(domain.questions) == 400


def test_every_answer_is_in_its_drug_section_and_distractors_are_not(domain: FormularyDomain) -> None:
    drugs = {drug.name: drug for drug in domain.drugs}
    columns = [[d.name for d in domain.drugs]] + [[d.facts[a.key] for d in domain.drugs] for a in ATTRIBUTES]
    for item in domain.questions:
        drug = drugs[item.subject]
        own_values = {drug.name, *drug.facts.values()}
        section_lines = domain.section(drug.name).splitlines()
        gold = item.options[item.answer]
        assert any(line == gold or line.endswith(f": {gold}") for line in section_lines), item
        distractors = [o for i, o in enumerate(item.options) if i != item.answer]
        assert len(set(item.options)) == 4 and not own_values & set(distractors), item
        assert any(set(item.options) <= set(column) for column in columns), item  # same attribute's values


# -- parsing -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("<answer>B</answer>", "B"),
        ("<answer>A</answer> on second thought <answer>d</answer>", "D"),
        ("<answer>B</answer> then <answer>nonsense</answer>", "B"),
        ("<answer> (C) </answer>", "C"),
        ("<answer>Morvan palsy</answer>", "B"),
        ("Answer: B", "B"),
        ("Final answer: **c**", "C"),
        ("(B)", "B"),
        ("B)", "B"),
        ("B) Morvan palsy", "B"),
        ("the answer is b", "B"),
        ("The answer is (D).", "D"),
        ("The answer is A because the handbook says so.", "A"),
        ("Thinking...\n\nthe answer is a", "A"),
        ("Answer: A\nTarvik fever is what it treats.", "A"),
        ("b", "B"),
        (" **C** ", "C"),
        ("A good choice is C", "C"),
        ("A good answer is D.", "D"),
        ("Option A is wrong; option C is correct.", "C"),
        ("I choose D", "D"),
        ("I'd say Morvan palsy.", "B"),
        ("It is 15 mg once daily.", "D"),  # "5 mg once daily" inside it does not count
        ("It is 5 mg once daily.", "C"),
        ("tarvik FEVER", "A"),
        ("Answer: \\boxed{C}", "C"),
        ("The answer is E", ""),  # not an option
        ("the answer is a bit unclear to me", ""),
        ("Hepatitis B is the correct answer", ""),
        ("Tarvik fever or Morvan palsy, hard to say", ""),
        ("A) Tarvik fever\nB) Morvan palsy\nC) 5 mg once daily", ""),
        ("", ""),
        ("   \n\t ", ""),
        ("I have no idea.", ""),
        ("a" * 100_000, ""),
        ("x" * 100_000 + " Answer: C", "C"),
        ("<answer>X</answer>", ""),
    ],
)
def test_parse_choice(reply: str, expected: str) -> None:
    assert parse_choice(reply, OPTIONS) == expected


def test_parse_letters_follow_the_number_of_options() -> None:
    ten = tuple(f"option text {i}" for i in range(10))
    assert parse_choice("Answer: J", ten) == "J"
    assert parse_choice("Answer: J", OPTIONS) == ""
    assert parse_choice("The answer: I think it's unclear", ten) == ""  # "I" the pronoun
    assert parse_choice("The answer is I.", ten) == "I"
    assert QAEnv().parse_action("<answer>C</answer>") == "C"  # before any reset


@given(st.text(max_size=2_000))
def test_parse_never_raises(reply: str) -> None:
    assert parse_choice(reply, OPTIONS) in ("", "A", "B", "C", "D")


def test_parse_is_fast_on_huge_and_pathological_replies() -> None:
    started = time.perf_counter()
    for reply in ("answer " * 50_000, "\n" * 200_000, "<answer>" * 50_000, "<answer>x</answer>" * 5_000,
                  "Tarvik fever " * 50_000, "a " * 200_000, ("answer" + ":" * 40) * 10_000,
                  "\x00\ud800" * 10_000):
        assert isinstance(parse_choice(reply, OPTIONS), str)
    for bad in (None, 42, b"\xff<answer>B</answer>"):
        assert parse_choice(bad, OPTIONS) in ("", "B")
    assert time.perf_counter() - started < 3


# -- loaders -------------------------------------------------------------------------------------------


def medmcqa(question: str, cop: Any, **extra: Any) -> dict[str, Any]:
    return {"question": question, "opa": "w", "opb": "x", "opc": "y", "opd": "z", "cop": cop, **extra}


def test_medmcqa_zero_based_file(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "hf.jsonl", [medmcqa("q1", 0), medmcqa("q2", 3), medmcqa("q3", 1)])
    assert [item.answer for item, _ in load_jsonl(path)] == [0, 3, 1]


def test_medmcqa_one_based_file_and_letters(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "orig.jsonl", [medmcqa("q1", 4), medmcqa("q2", 1), medmcqa("q3", "c")])
    assert [item.answer for item, _ in load_jsonl(path)] == [3, 0, 2]


def test_medmcqa_undecidable_base(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "few.jsonl", [medmcqa("q1", 1), medmcqa("q2", 2)])
    with pytest.raises(ValueError, match="cop_base"):
        load_jsonl(path)
    assert [item.answer for item, _ in load_jsonl(path, cop_base=1)] == [0, 1]
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [medmcqa("q1", 0), medmcqa("q2", 4)])
    with pytest.raises(ValueError, match=r"mixed\.jsonl:2"):
        load_jsonl(mixed)


def test_choices_answers_by_letter_index_and_text(tmp_path: Path) -> None:
    records = [
        {"question": "q1", "choices": ["red", "green", "blue"], "answer": "C"},
        {"question": "q2", "choices": ["red", "green", "blue"], "answer": 1},
        {"question": "q3", "choices": ["red", "green", "blue"], "answer": "red"},
        {"question": "q4", "choices": ["B", "A"], "answer": "A"},  # a choice's text wins over a letter
    ]
    items = [item for item, _ in load_jsonl(write_jsonl(tmp_path / "c.jsonl", records))]
    assert [item.answer for item in items] == [2, 1, 0, 1]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not a JSON line"),
        ('["a list"]', "JSON object"),
        (json.dumps({"question": "q", "answer": 1}), "unknown format"),
        (json.dumps({"question": "q", "choices": ["a", "b"], "answer": 2}), "out of range"),
        (json.dumps({"question": "q", "choices": ["a", "b"], "answer": "c"}), "neither"),
        (json.dumps({"question": "q", "choices": ["a"], "answer": 0}), "2-10"),
        (json.dumps({"question": None, "choices": ["a", "b"], "answer": 0}), "question"),
        (json.dumps({"question": "q", "choices": ["a", "b"], "answer": 0, "split": "holdout"}), "split"),
        (json.dumps(medmcqa("q", -1)), "unlabelled"),
        (json.dumps(medmcqa("q", 7)), "out of range"),
    ],
)
def test_a_bad_line_names_the_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    good = {"question": "fine", "choices": ["a", "b"], "answer": 0}
    path = write_jsonl(tmp_path / "bad.jsonl", [good, "", line])
    with pytest.raises(ValueError, match=message) as error:
        load_jsonl(path)
    assert f"{path}:3:" in str(error.value)


def test_splits_by_field_or_content_hash_without_duplicates(tmp_path: Path) -> None:
    records = [{"question": f"question {i}", "choices": ["a", "b", "c"], "answer": i % 3} for i in range(200)]
    records[0]["split"] = "test"
    records[1]["split"] = "dev"
    records.append({"question": "Question  0", "choices": ["c", "b", "A"], "answer": 0, "split": "train"})
    splits = assemble_splits(load_jsonl(write_jsonl(tmp_path / "s.jsonl", records)))
    assert sum(len(items) for items in splits.values()) == 200  # the near-duplicate of question 0 is dropped
    assert splits["test"][0].question == "question 0" and splits["validation"][0].question == "question 1"
    assert 140 <= len(splits["train"]) <= 180 and len(splits["validation"]) >= 5 and len(splits["test"]) >= 5
    again = assemble_splits(load_jsonl(tmp_path / "s.jsonl"))
    assert {s: [i.task_id for i in items] for s, items in again.items()} == {
        s: [i.task_id for i in items] for s, items in splits.items()
    }


def test_env_over_a_dataset(tmp_path: Path) -> None:
    records = [medmcqa(f"Which letter is {i}?", i % 4, split=SPLITS[i % 3]) for i in range(12)]
    env = QAEnv(dataset=write_jsonl(tmp_path / "m.jsonl", records), format="medmcqa")
    assert env.split_sizes == {"train": 4, "validation": 4, "test": 4} and env.handbook == ""
    check_env(env, skip_render_check=False)
    observation, _ = env.reset(options={"split": "validation", "index": 0})
    assert observation.startswith("Question: Which letter is 1?") and "A. w" in observation
    _, reward, _, _, info = env.step("The answer is x")
    assert (reward, info["chosen"]) == (1.0, "B")
    with pytest.raises(ValueError, match="no items"):
        QAEnv(dataset=write_jsonl(tmp_path / "only_test.jsonl", records[2:3]), cop_base=0)


def test_mcq_item_validates() -> None:
    with pytest.raises(ValueError):
        MCQItem("q", ("a",), 0)
    with pytest.raises(ValueError):
        MCQItem("q", ("a", "b"), 2)
