"""Lockstep rollouts on real envs with a tiny real model: records, batching, every env plays."""

from __future__ import annotations

import pytest

import envs
from agents.agent import Agent, Context
from agents.evaluate import PassRate, pass_rate, wilson_interval
from agents.hf_backend import HFBackend
from agents.llm import SamplingParams
from agents.rollout import RolloutStats, Task, collect_episodes

BUILTIN = ["addition", "frozenlake", "math", "qa", "sokoban", "textworld"]


class CountingBackend:
    """Wraps a backend and records the batch size of every generate call."""

    def __init__(self, inner: HFBackend) -> None:
        self.inner, self.name, self.calls = inner, inner.name, []

    def generate(self, conversations, params):
        self.calls.append(len(conversations))
        return self.inner.generate(conversations, params)

    def count_tokens(self, conversation):
        return self.inner.count_tokens(conversation)


@pytest.mark.parametrize("env_name", BUILTIN)
def test_every_env_plays(env_name: str, tiny_backend: HFBackend) -> None:
    agent = Agent(tiny_backend, SamplingParams(max_new_tokens=4, temperature=0.0))
    tasks = [Task("validation", 0), Task("validation", 1)]
    episodes = list(collect_episodes(lambda: envs.make(env_name), agent, tasks, env_id=env_name, batch_size=2))
    assert len(episodes) == 2
    for episode in episodes:
        assert episode.env_id == env_name and episode.split == "validation" and episode.model == "tiny-llama"
        assert episode.turns and episode.task_id
        for i, turn in enumerate(episode.turns):
            assert turn.index == i
            assert turn.prompt_messages[0]["role"] == "system" and turn.prompt_messages[-1]["role"] == "user"
            assert turn.reply_token_ids and turn.completion_tokens == len(turn.reply_token_ids)
            assert turn.prompt_tokens > 0 and isinstance(turn.observation, str)
        assert episode.total_reward == pytest.approx(sum(t.reward for t in episode.turns))


def test_one_generate_call_per_turn_for_all_live_episodes(tiny_backend: HFBackend) -> None:
    counting = CountingBackend(tiny_backend)
    agent = Agent(counting, SamplingParams(max_new_tokens=3, temperature=0.0))
    tasks = [Task("validation", i) for i in range(6)]
    stats = RolloutStats()
    episodes = list(collect_episodes(lambda: envs.make("sokoban"), agent, tasks, env_id="sokoban", batch_size=6, stats=stats))
    assert len(episodes) == 6 and stats.episodes == 6
    assert counting.calls[0] == 6  # every episode in the first call
    assert sum(counting.calls) == sum(e.num_turns for e in episodes)  # one reply per live episode per call
    assert len(counting.calls) == max(e.num_turns for e in episodes)  # lockstep: calls = longest episode


def test_free_slots_start_the_next_task(tiny_backend: HFBackend) -> None:
    agent = Agent(tiny_backend, SamplingParams(max_new_tokens=3, temperature=0.0))
    tasks = [Task("test", i) for i in range(5)]
    episodes = list(collect_episodes(lambda: envs.make("math"), agent, tasks, env_id="math", batch_size=2))
    assert sorted(e.metadata["task_index"] for e in episodes) == list(range(5))


def test_context_is_recorded_and_reaches_the_prompt(tiny_backend: HFBackend) -> None:
    context = Context("Always answer 4.", "knowledge", id="set-1")
    agent = Agent(tiny_backend, SamplingParams(max_new_tokens=3, temperature=0.0), context)
    (episode,) = collect_episodes(lambda: envs.make("math"), agent, [Task("test", 0)], env_id="math")
    assert episode.context_id == "set-1"
    assert "Always answer 4." in episode.turns[0].prompt_messages[0]["content"]


def test_seeded_sampling_reproduces_episodes(tiny_backend: HFBackend) -> None:
    def replies() -> list[str]:
        agent = Agent(tiny_backend, SamplingParams(max_new_tokens=5, temperature=1.0, seed=7))
        tasks = [Task("validation", i) for i in range(3)]
        return [t.reply for e in collect_episodes(lambda: envs.make("frozenlake"), agent, tasks, env_id="frozenlake") for t in e.turns]

    assert replies() == replies()


def test_pass_rate_and_wilson_interval(tiny_backend: HFBackend) -> None:
    agent = Agent(tiny_backend, SamplingParams(max_new_tokens=3, temperature=0.0))
    rate = pass_rate(agent, "qa", "validation", 4, batch_size=4)
    assert rate.n == 4 and 0 <= rate.successes <= 4
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-3) and high == pytest.approx(0.7634, abs=1e-3)
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(20, 20)[1] == 1.0
    assert str(PassRate(1, 2)).startswith("50.0%")


@pytest.mark.slow
def test_default_model_plays_a_real_textworld_episode() -> None:
    llm = HFBackend()  # the embedded default model
    agent = Agent(llm, SamplingParams(max_new_tokens=48, temperature=0.7, seed=0))
    (episode,) = collect_episodes(
        lambda: envs.make("textworld", max_steps=6), agent, [Task("validation", 0)], env_id="textworld"
    )
    assert episode.model == "smollm2-135m" and 1 <= episode.num_turns <= 6
    assert all(turn.reply.strip() for turn in episode.turns)
