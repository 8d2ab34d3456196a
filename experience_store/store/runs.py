"""Distillation runs: created, their metrics logged step by step, finished with a status and an evaluation."""

from __future__ import annotations

import json
import math
import os
import time
from collections import defaultdict
from typing import Any

from experience_store.errors import DuplicateRecord, InvalidRecord, RunNotFound
from experience_store.records import RUN_STATUSES, DistillRun, RunStatus, is_valid_unicode
from experience_store.store.connection import StoreConnection
from experience_store.store.sql import chunks, is_real, marks, revalidate, to_json, translated

_RUN_COLUMNS = "id, uuid, config, status, checkpoint_path, evaluation, created_at, finished_at"


class RunRecords(StoreConnection):
    """The runs and run metrics tables."""

    def create_run(self, config: dict[str, Any]) -> str:
        """Start recording a run with status "running"; return its id (a uuid)."""
        try:
            run = DistillRun(config=config)
        except ValueError as exc:
            raise InvalidRecord(f"DistillRun: {exc}") from None
        self.add_run(run)
        return run.uuid

    @translated
    def add_run(self, run: DistillRun, *, skip_existing: bool = False) -> bool:
        """Store a whole run record (with its metrics); return whether it was added."""
        self._require_writable()
        revalidate(run)
        with self.transaction():
            if self._existing("runs", [run.uuid]):
                if skip_existing:
                    return False
                raise DuplicateRecord(f"{self.path}: run {run.uuid} is already stored")
            config = to_json(run.config, f"run {run.uuid} config")
            evaluation = to_json(run.evaluation, f"run {run.uuid} evaluation")
            finished_at = None if run.finished_at is None else float(run.finished_at)
            cursor = self._conn.execute(
                f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES (NULL, {marks(7)})",
                (run.uuid, config, run.status, run.checkpoint_path, evaluation, float(run.created_at), finished_at),
            )
            points = [(name, int(step), float(value)) for name, series in run.metrics.items() for step, value in series]
            self._conn.executemany(
                "INSERT INTO run_metrics (run_id, name, step, value) VALUES (?, ?, ?, ?)",
                [(cursor.lastrowid, *point) for point in points],
            )
        return True

    @translated
    def log_run_metrics(self, run_id: str, step: int, metrics: dict[str, float]) -> None:
        """Record metric values at ``step`` (a value logged again for the same name and step replaces it).

        NaN and infinities are kept: a diverging loss is worth recording, not a reason to stop a run.
        """
        self._require_writable()
        if not isinstance(step, int) or isinstance(step, bool) or not -(2**63) <= step < 2**63:
            raise InvalidRecord(f"step must be a 64-bit integer, got {step!r}")
        for name, value in metrics.items():
            if not (isinstance(name, str) and is_valid_unicode(name)):
                raise InvalidRecord(f"metric name {name!r} must be a string of valid Unicode")
            if not is_real(value):
                raise InvalidRecord(f"metric {name!r} must be a number, got {value!r}")
        with self.transaction():
            row_id = self._id("runs", run_id, RunNotFound, "run")
            self._conn.executemany(
                "INSERT OR REPLACE INTO run_metrics (run_id, name, step, value) VALUES (?, ?, ?, ?)",
                [(row_id, name, step, float(value)) for name, value in metrics.items()],
            )

    @translated
    def finish_run(
        self,
        run_id: str,
        status: RunStatus,
        checkpoint_path: str | os.PathLike[str] | None = None,
        evaluation: dict[str, Any] | None = None,
    ) -> None:
        """Record how a run ended; ``checkpoint_path`` / ``evaluation`` left None keep their stored values."""
        self._require_writable()
        if status not in RUN_STATUSES or status == "running":
            finished = ", ".join(s for s in RUN_STATUSES if s != "running")
            raise InvalidRecord(f"a run finishes as one of {finished}, got {status!r}")
        checkpoint = None if checkpoint_path is None else os.fspath(checkpoint_path)
        evaluation_json = None if evaluation is None else to_json(evaluation, f"run {run_id} evaluation")
        with self.transaction():
            row_id = self._id("runs", run_id, RunNotFound, "run")
            self._conn.execute(
                "UPDATE runs SET status = ?, checkpoint_path = coalesce(?, checkpoint_path), "
                "evaluation = coalesce(?, evaluation), finished_at = ? WHERE id = ?",
                (status, checkpoint, evaluation_json, time.time(), row_id),
            )

    @translated
    def runs(self, *, status: RunStatus | None = None) -> list[DistillRun]:
        """Runs (with ``status``, or all), oldest first, with their metrics."""
        where, params = ("", ()) if status is None else ("WHERE status = ?", (status,))
        rows = self._conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs {where} ORDER BY created_at, id", params)
        return self._load_runs(rows.fetchall())

    @translated
    def run(self, run_id: str) -> DistillRun:
        """The run with this id, or ``RunNotFound``."""
        row = self._conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE uuid = ?", (run_id,)).fetchone()
        if row is None:
            raise RunNotFound(f"{self.path}: no run {run_id!r}")
        return self._load_runs([row])[0]

    def _load_runs(self, rows: list[tuple[Any, ...]]) -> list[DistillRun]:
        metrics: dict[int, dict[str, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
        for chunk in chunks([row[0] for row in rows]):
            sql = (
                "SELECT run_id, name, step, value FROM run_metrics "
                f"WHERE run_id IN ({marks(len(chunk))}) ORDER BY run_id, name, step"
            )
            for run_id, name, step, value in self._conn.execute(sql, chunk):
                metrics[run_id][name].append((step, math.nan if value is None else value))
        return [
            DistillRun(
                config=json.loads(config),
                status=status,
                checkpoint_path=checkpoint,
                evaluation=json.loads(evaluation),
                metrics=dict(metrics.get(id_, {})),
                uuid=uuid,
                created_at=created_at,
                finished_at=finished_at,
            )
            for id_, uuid, config, status, checkpoint, evaluation, created_at, finished_at in rows
        ]
