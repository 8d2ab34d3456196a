"""TextWorld env: generation and cache, determinism, rewards, text cleaning, hostile input, parsing."""

from __future__ import annotations

import multiprocessing
import re
import shutil
import time
import warnings
from pathlib import Path

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import envs  # noqa: F401  (registers opcd/TextWorld-v0)
from envs.textworld_env import (
    BLOCKED_REPLY,
    DIFFICULTIES,
    SEED_RANGES,
    TextWorldEnv,
    cache_entry,
    extract_command,
    generate_game,
    match_admissible,
    read_meta,
    to_game_command,
)

BANNER_MARK = "$$$$"
STATUS_LINE = re.compile(r"=-\s*\d+/\d+")
HOSTILE_ACTIONS = [
    "",
    "\\",
    "\\q",
    "\\help",
    "look\\n",
    "é" * 300,
    "日本語" * 400,
    "x" * 100_000,
    "a " * 50_000,
    b"\xff\xfe\x00look",
    "look\x00\x1b[31m around",
    "\n\nlook\n\n",
    '"""\'\'\'``',
    "ＬＯＯＫ",
    "look. inventory. go north",
    "quit",
    "q",
    "restart",
    "restore",
    "save",
    "script",
    "tw-trace-actions",
    "tw-extra-infos score",
    "enable print state option",
    "print_state",
    "restrict commands",
    "yes",
    "again",
    "undo",
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("textworld-cache")


@pytest.fixture
def easy_env(cache_dir: Path):
    env = TextWorldEnv(difficulty="easy", cache_dir=cache_dir, max_steps=1000)
    yield env
    env.close()


def _play_walkthrough(env: TextWorldEnv, index: int) -> None:
    """Reset test game ``index`` and check that its walkthrough wins with reward = score delta."""
    observation, info = env.reset(options={"split": "test", "index": index})
    assert observation.startswith("-= ") and BANNER_MARK not in observation
    score, total = info["score"], 0.0
    solution = env.reference_solution()
    assert solution
    for n, action in enumerate(solution, start=1):
        assert action in info["admissible_actions"]  # the walkthrough only uses commands the game offers
        observation, reward, terminated, truncated, info = env.step(action)
        assert reward == info["score"] - score
        score, total = info["score"], total + reward
        assert not truncated and terminated == (n == len(solution)) == info["success"]
        assert BANNER_MARK not in observation and not STATUS_LINE.search(observation)
    assert total == info["max_score"] == 1


def _generate_in_child(seed: int, difficulty: str, cache_dir: str) -> dict:
    return read_meta(generate_game(seed, difficulty, cache_dir).parent)


# -- contract ---------------------------------------------------------------------------------------


def test_check_env(cache_dir: Path) -> None:
    env = gymnasium.make("opcd/TextWorld-v0", cache_dir=cache_dir, render_mode="ansi").unwrapped
    check_env(env, skip_render_check=False)
    env.close()


def test_split_sizes_and_bad_arguments(cache_dir: Path) -> None:
    assert TextWorldEnv.split_sizes == {"train": 10_000, "validation": 100, "test": 100}
    ranges = [set(seeds) for seeds in SEED_RANGES.values()]
    assert not (ranges[0] & ranges[1] or ranges[0] & ranges[2] or ranges[1] & ranges[2])
    with pytest.raises(ValueError):
        TextWorldEnv(difficulty="nightmare")
    with pytest.raises(ValueError):
        TextWorldEnv(max_steps=0)
    with pytest.raises(ValueError):
        generate_game(-1, "easy", cache_dir)
    with pytest.raises(ValueError):
        generate_game(0, "nightmare", cache_dir)


# -- generation, determinism and the cache ----------------------------------------------------------


def test_same_seed_same_game_across_cache_dirs_and_processes(cache_dir: Path, tmp_path: Path) -> None:
    seed = SEED_RANGES["validation"][0]
    here = read_meta(generate_game(seed, "easy", cache_dir).parent)
    # A spawned process has its own string-hash salt: generation must not depend on it.
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        there = pool.apply(_generate_in_child, (seed, "easy", str(tmp_path)))
    assert here == there
    other = read_meta(generate_game(seed + 1, "easy", cache_dir).parent)
    assert other["content_id"] != here["content_id"]

    env = TextWorldEnv(cache_dir=tmp_path, default_split="validation")
    first = env.reset(seed=7)
    env.reset(options={"split": "validation", "index": 1})
    again = env.reset(seed=7)
    assert first == again and first[1]["task_id"].startswith("tw-easy-")
    env.close()


def test_cached_game_loads_fast(cache_dir: Path) -> None:
    generate_game(SEED_RANGES["test"][0], "easy", cache_dir)
    env = TextWorldEnv(cache_dir=cache_dir)
    start = time.perf_counter()
    env.reset(options={"split": "test", "index": 0})
    assert time.perf_counter() - start < 0.5
    env.close()


def test_concurrent_generation_of_one_game(tmp_path: Path) -> None:
    seed = SEED_RANGES["test"][1]
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        metas = pool.starmap(_generate_in_child, [(seed, "easy", str(tmp_path))] * 3)
    assert all(meta == metas[0] for meta in metas)
    assert [p.name for p in tmp_path.iterdir()] == [cache_entry(seed, "easy", tmp_path).name]
    env = TextWorldEnv(cache_dir=tmp_path)
    _play_walkthrough(env, 1)
    env.close()


def test_broken_cache_entries_are_rebuilt(cache_dir: Path, tmp_path: Path) -> None:
    seed = SEED_RANGES["test"][0]
    good = cache_entry(seed, "easy", cache_dir)
    generate_game(seed, "easy", cache_dir)
    entry = cache_entry(seed, "easy", tmp_path)
    # A leftover build folder from a killed writer, and an entry missing its metadata.
    leftover = tmp_path / f".{entry.name}.abc123.tmp" / entry.name
    shutil.copytree(good, leftover)
    (leftover / "game.z8").write_bytes(b"\x00garbage")
    shutil.copytree(good, entry)
    (entry / "meta.json").unlink()
    (entry / "game.json").write_text('{"truncated')
    assert generate_game(seed, "easy", tmp_path) == entry / "game.z8"
    assert read_meta(entry) == read_meta(good)
    env = TextWorldEnv(cache_dir=tmp_path)
    _play_walkthrough(env, 0)
    env.close()

    (entry / "meta.json").write_text("{not json")  # a damaged metadata file counts as missing
    assert read_meta(entry) is None
    generate_game(seed, "easy", tmp_path)
    assert read_meta(entry) == read_meta(good)


# -- playing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("difficulty", sorted(DIFFICULTIES))
def test_walkthrough_wins_with_score_delta_rewards(cache_dir: Path, difficulty: str) -> None:
    env = TextWorldEnv(difficulty=difficulty, cache_dir=cache_dir)
    for index in range(2):
        _play_walkthrough(env, index)
    env.close()


@pytest.mark.slow
@pytest.mark.parametrize("difficulty", sorted(DIFFICULTIES))
def test_walkthrough_wins_on_many_games(cache_dir: Path, difficulty: str) -> None:
    env = TextWorldEnv(difficulty=difficulty, cache_dir=cache_dir)
    for index in range(10):
        _play_walkthrough(env, index)
    env.close()


def test_observations_have_no_banner_objective_or_status(easy_env: TextWorldEnv) -> None:
    observation, info = easy_env.reset(options={"split": "test", "index": 0})
    objective = easy_env._meta["objective"]
    assert observation.startswith("-= ") and objective not in observation
    assert objective in easy_env.instructions and "Action:" in easy_env.instructions
    for text in (observation, easy_env.step("look")[0], easy_env.step("inventory")[0]):
        assert BANNER_MARK not in text and objective not in text
        assert not STATUS_LINE.search(text) and not text.rstrip().endswith(">")
    assert easy_env.render() is None  # render_mode None
    assert info["admissible_actions"] and all(isinstance(a, str) for a in info["admissible_actions"])


def test_truncation_at_max_steps(cache_dir: Path) -> None:
    env = TextWorldEnv(cache_dir=cache_dir, max_steps=3)
    env.reset(options={"split": "test", "index": 0})
    flags = [env.step("look")[2:4] for _ in range(3)]
    assert flags == [(False, False), (False, False), (False, True)]
    with pytest.raises(gymnasium.error.ResetNeeded):
        env.step("look")
    env.close()


def test_close_then_reset_restarts_the_game(easy_env: TextWorldEnv) -> None:
    first, _ = easy_env.reset(options={"split": "test", "index": 0})
    easy_env.close()
    easy_env.close()
    again, _ = easy_env.reset(options={"split": "test", "index": 0})
    assert again == first
    _play_walkthrough(easy_env, 0)


# -- hostile input ----------------------------------------------------------------------------------


def test_hostile_actions_yield_observations(easy_env: TextWorldEnv, capfd: pytest.CaptureFixture) -> None:
    easy_env.reset(options={"split": "test", "index": 0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Jericho's truncation warning would show an unsafe command
        for action in HOSTILE_ACTIONS:
            observation, reward, terminated, truncated, info = easy_env.step(action)
            assert isinstance(observation, str) and observation.strip()
            assert reward == 0 and not terminated and not truncated
    assert "DUMB-FROTZ" not in capfd.readouterr().out  # backslash escapes never reach the interpreter
    for action in ("restart", "quit", "save", "tw-trace-actions", "\\q"):
        assert easy_env.step(action)[0] == BLOCKED_REPLY
    # Blocked commands left score and state tracking intact: the walkthrough still wins.
    rewards = [easy_env.step(action)[1] for action in easy_env.reference_solution()]
    assert rewards[-1] == 1.0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(action=st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_any_action_yields_an_observation(easy_env: TextWorldEnv, action: str | bytes) -> None:
    if easy_env._episode_over:
        easy_env.reset(options={"split": "test", "index": 0})
    observation, reward, terminated, truncated, info = easy_env.step(action)
    assert isinstance(observation, str) and observation
    assert isinstance(info["task_id"], str) and isinstance(info["success"], bool)


def test_to_game_command() -> None:
    assert to_game_command("Take the Type K Latchkey!") == "take the type k latchkey"
    assert to_game_command("look. inventory") == "look"
    assert to_game_command("take key then open box") == "take key"
    assert to_game_command("\\help me") == "help me"
    assert to_game_command("Crème brûlée") == "creme brulee"
    assert to_game_command("examine non-euclidean Henderson's box") == "examine non-euclidean henderson's box"
    assert len(to_game_command("word " * 1000)) <= 180


# -- parse_action -----------------------------------------------------------------------------------


def test_extract_command() -> None:
    assert extract_command("I should go.\nAction: Go North.") == "go north"
    assert extract_command("**Action:** `open chest`") == "open chest"
    assert extract_command("Action: look\nThinking more...\nAction: take key") == "take key"
    assert extract_command("Next action: examine box") == "examine box"
    assert extract_command("Let me try `unlock door with key` now.") == "unlock door with key"
    assert extract_command('I will type "inventory" next') == "inventory"
    assert extract_command("hmm\n\n> Drop Sock!\n\n") == "drop sock"
    assert extract_command("") == extract_command("  \n\n ") == extract_command("***") == ""


def test_match_admissible() -> None:
    admissible = ["go north", "go south", "take key", "take key from box", "examine Microsoft style box"]
    assert match_admissible("go north", admissible) == "go north"
    assert match_admissible("i will take key from box now", admissible) == "take key from box"
    assert match_admissible("not go north but go south", admissible) == "go south"
    assert match_admissible("examine microsoft style box", admissible) == "examine Microsoft style box"
    assert match_admissible("examin microsoft style box", admissible) == "examine Microsoft style box"
    assert match_admissible("dance wildly", admissible) == "dance wildly"
    assert match_admissible("anything", []) == "anything"


def test_parse_action_prefers_admissible_commands(easy_env: TextWorldEnv) -> None:
    assert easy_env.parse_action("Action: Dance!") == "dance"  # before reset: no admissible commands
    easy_env.reset(options={"split": "test", "index": 0})
    admissible = easy_env._admissible
    target = max(admissible, key=len)
    assert easy_env.parse_action(f"Thoughts...\nAction: {target.upper()}.") == target
    assert easy_env.parse_action(f"I think I'll {target} right away") == target
    assert easy_env.parse_action("Action: look around") == "look"


@given(reply=st.text(max_size=2000))
@settings(max_examples=200, deadline=None)
def test_parse_action_never_raises(reply: str) -> None:
    env = TextWorldEnv()
    env._admissible = ["go north", "take key", "open type K box"]
    assert isinstance(env.parse_action(reply), str)
    assert isinstance(env.parse_action(reply * 50), str)


def test_step_budget_defaults_to_ten_steps_per_quest_action(cache_dir: Path) -> None:
    assert [TextWorldEnv(difficulty=d, cache_dir=cache_dir).max_steps for d in ("easy", "medium", "hard")] == [20, 50, 100]
    assert TextWorldEnv(difficulty="hard", max_steps=7, cache_dir=cache_dir).max_steps == 7
