"""Reflect end to end: episodes stored by `agents.play`, a tiny model that writes items, the CLI, every env.

The tiny model (``writer_dir``, tests/conftest.py) is a one-layer Llama with the default tokenizer whose
weights are set by hand to a bigram chain: after the chat template's generation prompt it always writes
``WRITER_LINE`` and stops. It runs through the real backend, model resolver and CLIs, in well under a
second per call.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import envs
from agents.agent import Agent
from agents.hf_backend import HFBackend
from agents.llm import SamplingParams
from agents.rollout import Task, collect_episodes
from experience_store import ExperienceStore
from experience_store.knowledge import knowledge_text, llm_token_counter
from experience_store.reflect import ITEM_MARKER, Extractor, parse_items, task_style
from experience_store.selection import PassRateScorer, ReflectConfig, latest_decision, reflect


@pytest.fixture(scope="module")
def writer(writer_dir: str) -> HFBackend:
    return HFBackend(writer_dir)


@pytest.fixture(scope="module")
def item(writer: HFBackend) -> str:
    """The one item the writer writes, read off its output (``from conftest import`` would find
    tests/store/conftest.py, not tests/conftest.py)."""
    (reply,) = writer.generate([[{"role": "user", "content": "x"}]], SamplingParams(max_new_tokens=40, temperature=0))
    (text,) = parse_items(reply.text)
    return text


def run(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=600)


def test_the_writer_model_writes_its_line(writer: HFBackend, item: str) -> None:
    conversations = [
        [{"role": "user", "content": "Anything at all."}],
        [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
    ]
    for params in (SamplingParams(max_new_tokens=40, temperature=0.0), SamplingParams(max_new_tokens=40, seed=3)):
        assert [g.text for g in writer.generate(conversations, params)] == [f"{ITEM_MARKER} {item}"] * 2


def test_reflect_cli_on_episodes_that_agents_play_stored(writer_dir: str, item: str, tmp_path: Path) -> None:
    store = tmp_path / "exp.db"
    for env, episodes in (("math", "3"), ("frozenlake", "2")):
        played = run("agents.play", "--env", env, "--model", writer_dir, "--episodes", episodes,
                     "--store", str(store), "--max-new-tokens", "24")
        assert played.returncode == 0, played.stderr
    result = run("experience_store", "reflect", "--store", str(store), "--env", "math", "--episodes-per-candidate", "2",
                 "--candidates", "2", "--validation-tasks", "2", "--extract-max-new-tokens", "24",
                 "--validation-max-new-tokens", "24", "--knowledge", "insights", "--baselines")
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert item in out and "seed 1 step 2" in out  # items shown as they are written
    assert "The gate for math" in out and "baseline raw traces" in out
    assert "no knowledge beat no context" in out  # 2 validation tasks cannot show a gain
    with ExperienceStore.open(store, readonly=True) as s:
        played = {e.uuid for e in s.episodes(env="math")}
        items = s.knowledge_items(env="math", kind="experience")
        candidates = [k for k in s.knowledge_sets(env="math") if k.metadata.get("selection") == "validation"]
        decision = latest_decision(s, "math")
        assert s.selected_knowledge_set("math") is None
    assert len(items) == 4 and all(i.text == item and i.model == writer_dir for i in items)
    assert all(len(i.source_episodes) == 1 and i.source_episodes[0] in played for i in items)
    assert len(candidates) == 2 and all(k.validation_n == 2 for k in candidates)
    assert all(knowledge_text(k.items) == item and k.metadata["merged"] for k in candidates)  # copies merged
    assert decision is not None and decision.accepted is None and decision.model == writer_dir

    shown = run("experience_store", "knowledge", "--store", str(store), "--env", "math")
    assert shown.returncode == 0 and "no knowledge beat no context" in " ".join(shown.stdout.split())
    export = run("experience_store", "knowledge", "--store", str(store), "--env", "math", "--export", str(tmp_path / "k.txt"))
    one_line_error(export, "no selected knowledge set", "no knowledge beat no context")
    traces = run("experience_store", "knowledge", "--store", str(store), "--env", "math", "--export",
                 str(tmp_path / "t.txt"), "--traces")
    assert traces.returncode == 0 and "Problem:" in (tmp_path / "t.txt").read_text()
    replay = run("agents.play", "--env", "math", "--model", writer_dir, "--eval", "--episodes", "1",
                 "--context", str(tmp_path / "t.txt"), "--context-kind", "traces", "--store", str(store),
                 "--max-new-tokens", "4")
    assert replay.returncode == 0, replay.stderr  # the exported file is a usable --context


def one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    for fragment in fragments:
        assert fragment in result.stderr


def test_reflect_cli_errors_are_one_line(tmp_path: Path) -> None:
    store = tmp_path / "exp.db"
    ExperienceStore.open(store).close()
    one_line_error(run("experience_store", "reflect", "--store", str(store), "--env", "math"),
                   "no train episodes of env 'math'", "python -m agents.play --env math")
    missing = run("experience_store", "reflect", "--store", str(tmp_path / "none.db"), "--env", "math")
    one_line_error(missing, "no such store")
    one_line_error(run("experience_store", "reflect", "--store", str(store), "--env", "chess"), "unknown env 'chess'")
    one_line_error(run("experience_store", "knowledge", "--store", str(store), "--env", "math", "--export",
                       str(tmp_path / "k.txt")), "no selected knowledge set", "reflect")
    usage = run("experience_store", "reflect", "--store", str(store), "--env", "math", "--episodes-per-candidate", "0")
    assert usage.returncode == 2 and "must be >= 1" in usage.stderr


@pytest.fixture
def short_textworld() -> Iterator[str]:
    """TextWorld capped at 3 steps: the writer never wins, and 50-step episodes would only cost time."""
    spec = envs.spec("textworld")
    envs.register("textworld-3", spec.entry_point, **{**spec.kwargs, "max_steps": 3})
    yield "textworld-3"
    envs.unregister("textworld-3")


@pytest.mark.parametrize("env", envs.names())
def test_reflect_runs_on_every_env(
    env: str, writer: HFBackend, item: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if env == "textworld":
        env = request.getfixturevalue("short_textworld")
    llm = writer
    agent = Agent(llm, SamplingParams(max_new_tokens=24, seed=0))
    episodes = list(collect_episodes(lambda: envs.make(env), agent, [Task("train", 0), Task("train", 1)], env_id=env))
    with ExperienceStore.open(tmp_path / "exp.db") as store:
        store.add_episodes(episodes)
        scorer = PassRateScorer(llm, env, num_tasks=1, sampling=SamplingParams(max_new_tokens=24, seed=0))
        config = ReflectConfig(episodes_per_candidate=2, candidates=1, validation_tasks=1, knowledge="insights")
        result = reflect(store, Extractor(llm, task_style(env)), scorer, env, llm_token_counter(llm), config)
        assert store.selected_knowledge_set(env) is None  # one validation task cannot show a gain
    (candidate,) = result.candidates
    assert result.decision.accepted is None and candidate.validation_n == 1 == result.decision.no_context.n
    assert [i.text for i in candidate.items] == [item]
    assert candidate.items[0].source_episodes[0] in {e.uuid for e in episodes}


@pytest.mark.slow
def test_default_model_reflects_on_its_own_math_episodes(tmp_path: Path) -> None:
    llm = HFBackend()  # the embedded default model
    agent = Agent(llm, SamplingParams(max_new_tokens=96, seed=0))
    tasks = [Task("train", i) for i in range(4)]
    episodes = list(collect_episodes(lambda: envs.make("math"), agent, tasks, env_id="math"))
    with ExperienceStore.open(tmp_path / "exp.db") as store:
        store.add_episodes(episodes)
        scorer = PassRateScorer(llm, "math", num_tasks=4, sampling=SamplingParams(max_new_tokens=96, seed=0))
        config = ReflectConfig(episodes_per_candidate=4, candidates=2, budget=512, validation_tasks=4)
        result = reflect(store, Extractor(llm, "problem"), scorer, "math", llm_token_counter(llm), config)
    insights = [c for c in result.candidates if c.metadata["kind"] == "insights"]
    assert insights and all(c.items and c.token_count <= 512 and c.validation_n == 4 for c in insights)
    assert len(result.decision.candidates) == len(result.candidates) and result.decision.no_context.n == 4
    assert all(i.model == "smollm2-135m" and i.source_episodes[0] in {e.uuid for e in episodes}
               for c in insights for i in c.items)  # fmt: skip
