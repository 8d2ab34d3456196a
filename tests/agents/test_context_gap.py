"""bench.context_gap with a tiny model folder: the Markdown table, and results reused by a rerun."""

from __future__ import annotations

from pathlib import Path

from bench.context_gap import main


def test_writes_the_table_and_a_rerun_reuses_the_results(tiny_model_dir: str, tmp_path: Path) -> None:
    results, table = tmp_path / "gap.jsonl", tmp_path / "models.md"
    args = ["--models", tiny_model_dir, "--envs", "addition", "--tasks", "2", "--max-new-tokens", "3",
            "--results", str(results), "--write", str(table)]  # fmt: skip
    main(args)
    assert len(results.read_text().splitlines()) == 2  # without, and with the worked example
    text = table.read_text()
    assert f"| {tiny_model_dir} | addition | worked_example |" in text and "(n=2)" in text
    assert "McNemar" in text and " of 2 |" in text  # the gap is paired on the same two tasks
    main(args)
    assert len(results.read_text().splitlines()) == 2  # nothing measured twice
