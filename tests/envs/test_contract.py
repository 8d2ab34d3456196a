"""The contract every registered env meets: Gymnasium API, determinism, disjoint splits, robustness."""

from __future__ import annotations

import itertools
import re
from typing import Any

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.base import SPLITS, TextEnv

BUILTIN = ["addition", "frozenlake", "math", "qa", "sokoban", "textworld"]
ADVERSARIAL_ACTIONS: list[Any] = [
    "",
    "x" * 100_000,
    "go " + "a" * 5_000,
    b"\x00\xff\xfe binary \x1b[31m",
    "\\" * 50 + " \\n \\x00 \\\\",
    "take the 🦜 ñandú Ωmega 北京 \u202e",
    "\x00\x01\x02\r\n\t\x7f",
    "[up]\n[down]" * 1000,
    "Answer: " + "9" * 50_000,
]
SAMPLE = 4  # tasks per split checked for disjointness / determinism in big pools


def builtin_envs() -> list[str]:
    return BUILTIN


@pytest.fixture(params=BUILTIN)
def env(request: pytest.FixtureRequest) -> TextEnv:
    made = envs.make(request.param)
    yield made
    made.close()


def task_ids(env: TextEnv, split: str) -> list[str]:
    size = env.split_sizes[split]
    indices = range(size) if size <= 64 else np.linspace(0, size - 1, SAMPLE, dtype=int)
    return [env.reset(options={"split": split, "index": int(i)})[1]["task_id"] for i in indices]


def test_registry_knows_the_builtin_envs() -> None:
    assert set(BUILTIN) <= set(envs.names())
    for name in BUILTIN:
        assert re.fullmatch(r"opcd/\w+-v\d+", envs.spec(name).gym_id)
        assert envs.spec(envs.spec(name).gym_id).name == name


def test_unknown_env_lists_known_names() -> None:
    with pytest.raises(KeyError) as err:
        envs.make("no-such-env")
    message = str(err.value)
    assert "no-such-env" in message
    assert all(name in message for name in BUILTIN)


def test_check_env(env: TextEnv) -> None:
    check_env(env, skip_render_check=True)


def test_gymnasium_make_by_id() -> None:
    made = gymnasium.make("opcd/Math-v1")
    observation, info = made.reset(seed=3)
    assert isinstance(observation, str) and info["task_id"]
    made.close()


def test_contract_surface(env: TextEnv) -> None:
    observation, info = env.reset(seed=0)
    assert isinstance(observation, str) and observation
    assert isinstance(env.instructions, str) and env.instructions
    assert {"task_id", "split", "index", "success"} <= set(info)
    assert set(env.split_sizes) == set(SPLITS) and all(n > 0 for n in env.split_sizes.values())
    assert isinstance(env.reference_solution(), list)


def test_same_seed_same_task(env: TextEnv) -> None:
    for seed in (0, 1, 12345):
        first = env.reset(seed=seed)
        second = env.reset(seed=seed)
        assert first[0] == second[0] and first[1]["task_id"] == second[1]["task_id"]
    by_index = env.reset(options={"split": "test", "index": 1})
    assert env.reset(seed=99, options={"split": "test", "index": 1})[1]["task_id"] == by_index[1]["task_id"]


def test_splits_are_disjoint(env: TextEnv) -> None:
    ids = {split: task_ids(env, split) for split in SPLITS}
    for a, b in itertools.combinations(SPLITS, 2):
        assert not set(ids[a]) & set(ids[b]), f"{a} and {b} share tasks"


def test_bad_task_selection_is_a_clear_error(env: TextEnv) -> None:
    with pytest.raises(ValueError, match="split"):
        env.reset(options={"split": "dev"})
    with pytest.raises(ValueError, match="index"):
        env.reset(options={"split": "test", "index": env.split_sizes["test"]})
    with pytest.raises(ValueError, match="options must be a dict"):
        env.reset(options=["split", "test"])  # type: ignore[arg-type]


@pytest.mark.parametrize("action", ADVERSARIAL_ACTIONS, ids=lambda a: repr(a)[:20])
def test_any_action_yields_an_observation(env: TextEnv, action: Any) -> None:
    env.reset(seed=5)
    observation, reward, terminated, truncated, info = env.step(action)
    assert isinstance(observation, str)
    assert np.isfinite(reward)
    assert isinstance(terminated, bool) and isinstance(truncated, bool)
    assert "task_id" in info and isinstance(info["success"], bool)
    assert isinstance(env.parse_action(action if isinstance(action, str) else repr(action)), str)


def test_reference_solution_succeeds(env: TextEnv) -> None:
    env.reset(options={"split": "validation", "index": 0})
    info: dict[str, Any] = {}
    for action in env.reference_solution():
        _, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    assert info.get("success") is True


def test_step_before_reset_is_refused() -> None:
    made = envs.make("math")
    with pytest.raises(gymnasium.error.ResetNeeded):
        made.step("1")


class CountdownEnv(TextEnv):
    """A toy env in a few lines: say the number shown."""

    split_sizes = {"train": 10, "validation": 5, "test": 5}
    instructions = "Reply with the number you are shown."

    def _reset_task(self, split: str, index: int) -> tuple[str, dict[str, Any]]:
        self.target = str({"train": 0, "validation": 10, "test": 15}[split] + index)
        return self.target, {"task_id": f"count-{self.target}"}

    def _step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        won = action == self.target
        return "done", float(won), True, False, {"task_id": f"count-{self.target}", "success": won}

    def parse_action(self, reply: str) -> str:
        return reply.strip()

    def reference_solution(self) -> list[str]:
        return [self.target]


def test_register_a_new_env_in_a_few_lines() -> None:
    envs.register("countdown", CountdownEnv, override=True)
    try:
        assert "countdown" in envs.names()
        made = envs.make("countdown")
        check_env(made, skip_render_check=True)
        observation, _ = made.reset(options={"split": "test", "index": 2})
        assert made.step(observation)[1] == 1.0
        assert isinstance(gymnasium.make("opcd/Countdown-v0").unwrapped, CountdownEnv)
        with pytest.raises(ValueError, match="already registered"):
            envs.register("countdown", CountdownEnv)
    finally:
        envs.unregister("countdown")
    assert "countdown" not in envs.names() and "opcd/Countdown-v0" not in gymnasium.registry


def test_configure_changes_an_envs_defaults_for_every_make() -> None:
    envs.register("sokoban-short", "envs.sokoban:SokobanEnv", override=True)
    try:
        envs.configure("opcd/Sokoban-short-v0", **envs.parse_env_args(["max_turns=2", 'rules="full"']))
        made = envs.make("sokoban-short")
        assert (made.max_turns, made.rules) == (2, "full")
        assert gymnasium.make("opcd/Sokoban-short-v0").unwrapped.max_turns == 2
        assert envs.make("sokoban-short", max_turns=3).max_turns == 3  # explicit arguments still win
        with pytest.raises(ValueError, match="'sokoban-short' rejected arguments {'max_steps': 4}"):
            envs.configure("sokoban-short", max_steps=4)
        with pytest.raises(ValueError, match="max_turns must be a positive integer"):
            envs.configure("sokoban-short", max_turns=0)
        assert envs.make("sokoban-short").max_turns == 2  # a rejected change leaves the defaults alone
    finally:
        envs.unregister("sokoban-short")


def test_a_single_name_configures_an_env_that_takes_names() -> None:
    envs.register("math-one", "envs.math_env:MathEnv", override=True)
    try:
        envs.configure("math-one", **envs.parse_env_args(["families=arithmetic", "level=1"]))
        assert envs.spec("math-one").kwargs["families"] == ("arithmetic",)
        made = envs.make("math-one")
        assert made.reset(options={"split": "test", "index": 0})[1]["task_id"].startswith("arithmetic")
    finally:
        envs.unregister("math-one")


def test_parse_env_args_reads_json_values_and_keeps_words() -> None:
    parsed = envs.parse_env_args(["max_steps=10", "difficulty=hard", 'families=["arithmetic"]', "flag=true", "x=1.5"])
    assert parsed == {"max_steps": 10, "difficulty": "hard", "families": ["arithmetic"], "flag": True, "x": 1.5}
    for bad in ("max_steps", "=3", "two words=1"):
        with pytest.raises(ValueError, match="must look like NAME=VALUE"):
            envs.parse_env_args([bad])


def test_module_path_works_as_a_name() -> None:
    made = envs.make(f"{__name__}:CountdownEnv")
    assert isinstance(made, CountdownEnv)


def test_shipped_contexts_are_text(env: TextEnv) -> None:
    for name, text in env.contexts().items():
        assert name and isinstance(text, str) and text.strip()
        assert text not in env.instructions  # a context adds something the instructions do not say
