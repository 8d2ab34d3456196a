"""The collect -> reflect -> distill loop with a tiny model that writes knowledge items: rounds are
recorded, each round's model is the previous round's checkpoint, and a stopped loop resumes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from distill.config import DistillConfig
from distill.loop import main
from distill.presets import PRESETS, expand
from distill.rounds import LoopConfig, run_rounds
from experience_store import ExperienceStore
from experience_store.selection import ReflectConfig, latest_decision


def configs(model: str, out: Path, rounds: int, force: bool = True) -> tuple[DistillConfig, LoopConfig, ReflectConfig]:
    base = DistillConfig(
        env="qa", model=model, out_dir=out, steps=1, episodes_per_step=2, max_new_tokens=4, eval_tasks=2,
        eval_max_new_tokens=3, eval_every=0, ood_env="math",
    )
    loop = LoopConfig(rounds=rounds, episodes=3, force_distill=force)  # 2 validation tasks never pass the gate
    reflection = ReflectConfig(candidates=2, budget=128, validation_tasks=2, validation_max_new_tokens=3, knowledge="insights")
    return base, loop, reflection


def test_rounds_chain_models_and_resume(writer_dir: str, tmp_path: Path) -> None:
    out = tmp_path / "loop"
    with ExperienceStore.open(tmp_path / "exp.db") as store:
        base, loop, reflection = configs(writer_dir, out, rounds=1)
        first = run_rounds(base, loop, store, reflection)
        assert [r.round for r in first] == [1] and first[0].model == writer_dir
        state = (out / "loop.json").read_text()
        base, loop, reflection = configs(writer_dir, out, rounds=2)
        changed = dataclasses.replace(base, model="other-model", steps=2)
        with pytest.raises(ValueError, match=f"--model {writer_dir} -> other-model; --steps 1 -> 2 "):
            run_rounds(changed, loop, store, reflection)  # finished rounds were made with the start model and 1 step
        with pytest.raises(ValueError, match="--reflect-budget 128 -> 64"):
            run_rounds(base, loop, store, dataclasses.replace(reflection, budget=64))
        assert (out / "loop.json").read_text() == state
        phases: list[tuple[int, str]] = []
        base, loop, reflection = configs(writer_dir, out, rounds=2)
        both = run_rounds(base, loop, store, reflection, on_phase=lambda r, p: phases.append((r, p)))
        assert phases == [(2, "collect"), (2, "reflect"), (2, "distill")]  # round 1 was not redone
        assert all(r.verdict.startswith("forced: no knowledge beat no context") for r in both)
        assert both[1].model == first[0].checkpoint and Path(both[1].checkpoint, "config.json").is_file()

        for r in (1, 2):
            episodes = list(store.episodes(env="qa", split="train", round=r))
            assert len(episodes) == 3 and {e.model for e in episodes} == {both[r - 1].model}
            assert store.knowledge_set(both[r - 1].knowledge_set).round == r
        (loop_run,) = [run for run in store.runs() if run.config.get("kind") == "loop"]
        assert loop_run.status == "completed" and [s for s, _ in loop_run.metrics["after/student"]] == [1, 2]
    state = json.loads((out / "loop.json").read_text())
    assert [r["round"] for r in state["rounds"]] == [1, 2]


def test_a_round_whose_knowledge_the_gate_refuses_distils_nothing(writer_dir: str, tmp_path: Path) -> None:
    out = tmp_path / "loop"
    with ExperienceStore.open(tmp_path / "exp.db") as store:
        base, loop, reflection = configs(writer_dir, out, rounds=1, force=False)
        (result,) = run_rounds(base, loop, store, reflection)
        assert result.verdict.startswith("no knowledge beat no context") and not result.distilled
        assert result.checkpoint == writer_dir and result.after == {}  # the next round's model: the same
        assert {k: v["n"] for k, v in result.before.items()} == {"student": 2, "student_with_context": 2}  # test split
        assert not (out / "round-1").exists()
        decision = latest_decision(store, "qa", model=writer_dir, round=1)
        assert decision is not None and decision.accepted is None and decision.no_context.n == 2
        assert len(list(store.episodes(env="qa", split="train", round=1))) == 3  # every collected episode was read
        assert len({i.source_episodes[0] for i in store.knowledge_items(env="qa")}) <= 3


def test_cli_prints_the_round_table(writer_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main([
        "--store", str(tmp_path / "exp.db"), "--env", "qa", "--model", writer_dir, "--rounds", "1", "--episodes", "2",
        "--reflect-candidates", "1", "--reflect-validation-tasks", "2", "--force-distill", "--steps", "1",
        "--episodes-per-step", "2", "--max-new-tokens", "4", "--eval-tasks", "2", "--eval-max-new-tokens", "3",
        "--eval-every", "0", "--ood-env", "math", "--out-dir", str(tmp_path / "loop"),
    ])
    out = " ".join(capsys.readouterr().out.split())  # the table may wrap its headers in a narrow terminal
    assert "OPCD" in out and "OOD" in out and "round 1/1: distill" in out
    assert "McNemar" in out and "of 2" in out  # each change paired on the same two test tasks
    assert (tmp_path / "loop" / "rounds.png").stat().st_size > 0


def test_preset_flags_come_first_so_typed_ones_win() -> None:
    expanded = expand(["--steps", "3", "--preset", "demo", "--model", "m"])
    assert expanded[: len(PRESETS["demo"])] == list(PRESETS["demo"]) and expanded[-4:] == ["--steps", "3", "--model", "m"]
    assert expand(["--env", "qa"]) == ["--env", "qa"]
    with pytest.raises(ValueError, match="demo, full"):
        expand(["--preset", "huge"])


def test_demo_preset_runs_the_loop(writer_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's demo command, shrunk by typed flags: the addition env, QA as the OOD env."""
    main([
        "--preset", "demo", "--store", str(tmp_path / "demo.db"), "--out-dir", str(tmp_path / "demo"),
        "--model", writer_dir, "--episodes", "2", "--reflect-candidates", "1", "--reflect-knowledge", "insights",
        "--reflect-validation-tasks", "2", "--steps", "1", "--episodes-per-step", "2", "--max-new-tokens", "4",
        "--eval-tasks", "2", "--eval-max-new-tokens", "3",
    ])
    out = " ".join(capsys.readouterr().out.split())
    assert "the gate refused the knowledge" in out and "no knowledge beat no context" in out  # 2 tasks: never
    assert "test the refused knowledge" in out and "+0/-0 of 2" in out  # checked on the test tasks, paired
    with ExperienceStore.open(tmp_path / "demo.db", readonly=True) as store:
        (loop_run,) = [run for run in store.runs() if run.config.get("kind") == "loop"]
        assert (loop_run.config["env"], loop_run.config["ood_env"], loop_run.status) == ("addition", "qa", "completed")
        assert {e.env_id for e in store.episodes(split="train")} == {"addition"}
