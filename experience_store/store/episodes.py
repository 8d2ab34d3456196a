"""Episodes: appended in transactions, read back lazily with filters, counted and summarised."""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from agents.records import Episode, Message, Turn
from experience_store.errors import DuplicateRecord, EpisodeNotFound, InvalidRecord, MixedEnvSettings
from experience_store.records import shared_prefix, validate_episode
from experience_store.store.connection import StoreConnection
from experience_store.store.files import beside
from experience_store.store.sql import chunks, marks, to_json, translate, translated, unencodable

_PAGE = 256  # episodes fetched per query while iterating
_EPISODE_COLUMNS = (
    "id, uuid, env_id, task_id, split, model, context_id, round, seed, success, total_reward, "
    "num_turns, prompt_tokens, completion_tokens, wall_time_s, created_at, metadata, env_args"
)
_TURN_COLUMNS = (
    "episode_id, idx, prompt_prefix, prompt_messages, reply, action, reward, observation, "
    "prompt_tokens, completion_tokens, reply_token_ids"
)

Timestamp = float | datetime  # unix seconds or an aware/naive (local time) datetime


@dataclass(frozen=True)
class EpisodeGroup:
    """Episode counts and outcomes for one (env, split, model)."""

    env_id: str
    split: str
    model: str
    episodes: int
    successes: int
    mean_return: float
    mean_turns: float
    prompt_tokens: int
    completion_tokens: int

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes if self.episodes else 0.0


@dataclass(frozen=True)
class StoreStats:
    """What a store holds, in totals and per (env, split, model)."""

    path: Path
    schema_version: int
    file_bytes: int  # the database file plus its WAL
    episodes: int
    turns: int
    knowledge_items: int
    knowledge_sets: int
    runs: int
    first_episode_at: float | None
    last_episode_at: float | None
    groups: list[EpisodeGroup]


def _episode_rows(episode: Episode) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
    """The episode's row (without id) and its turns' rows (without episode id), validated."""
    try:
        validate_episode(episode)
    except ValueError as exc:
        raise InvalidRecord(f"episode {getattr(episode, 'uuid', '?')}: {exc}") from None
    turns = []
    previous: list[Message] = []
    for turn in episode.turns:
        prefix = shared_prefix(previous, turn.prompt_messages)
        turns.append(
            (
                int(turn.index),
                prefix,
                to_json(turn.prompt_messages[prefix:], f"episode {episode.uuid} turn {turn.index} prompt_messages"),
                turn.reply,
                turn.action,
                float(turn.reward),
                turn.observation,
                int(turn.prompt_tokens),
                int(turn.completion_tokens),
                to_json(turn.reply_token_ids, f"episode {episode.uuid} turn {turn.index} reply_token_ids"),
            )
        )
        previous = turn.prompt_messages
    row = (
        episode.uuid,
        episode.env_id,
        episode.task_id,
        episode.split,
        episode.model,
        episode.context_id,
        int(episode.round),
        None if episode.seed is None else int(episode.seed),
        int(episode.success),
        float(episode.total_reward),
        len(episode.turns),
        int(episode.prompt_tokens),
        int(episode.completion_tokens),
        float(episode.wall_time_s),
        float(episode.created_at),
        to_json(episode.metadata, f"episode {episode.uuid} metadata"),
        env_args_json(episode.env_args, episode.uuid),
    )
    return row, turns


def env_args_json(env_args: dict[str, Any], uuid: str) -> str:
    """``env_args`` as stored: JSON with sorted keys, so that equal settings are equal text."""
    try:
        return json.dumps(env_args, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidRecord(f"episode {uuid} env_args {exc}") from None


def _mixed(env_id: str, what: str, env_args: str, where: str, other: str) -> MixedEnvSettings:
    return MixedEnvSettings(
        f"{what} of env {env_id!r}: env_args {env_args}, but {where}: env_args {other} ({{}}: the env's "
        "defaults); use another store, or allow mixed settings explicitly"
    )


def _timestamp(value: Timestamp) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(value)


class EpisodeRecords(StoreConnection):
    """The episodes and turns tables."""

    @translated
    def add_episodes(
        self, episodes: Iterable[Episode], *, skip_existing: bool = False, allow_mixed_settings: bool = False
    ) -> int:
        """Store ``episodes`` in ONE transaction (all or none); return how many were added.

        Every episode is validated first (``InvalidRecord``). An episode whose uuid is already stored
        raises ``DuplicateRecord``; with ``skip_existing`` it is skipped (how import and merge de-duplicate).
        Episodes of one env played with other constructor arguments (``env_args``) than those stored for
        it, or than each other, raise ``MixedEnvSettings`` naming both, unless ``allow_mixed_settings``.
        """
        self._require_writable()
        batch = list(episodes)
        rows = [_episode_rows(episode) for episode in batch]
        uuids = [episode.uuid for episode in batch]
        if not skip_existing and len(set(uuids)) != len(uuids):
            raise DuplicateRecord(f"{self.path}: the batch holds the same episode uuid twice")
        with self.transaction():
            stored = self._existing("episodes", uuids)
            if stored and not skip_existing:
                raise DuplicateRecord(f"{self.path}: episode {min(stored)} is already stored (append-only)")
            next_id = self._conn.execute("SELECT coalesce(max(id), 0) + 1 FROM episodes").fetchone()[0]
            episode_rows, turn_rows = [], []
            for uuid, (row, turns) in zip(uuids, rows):
                if uuid in stored:
                    continue
                stored.add(uuid)
                episode_rows.append((next_id, *row))
                turn_rows.extend((next_id, *turn) for turn in turns)
                next_id += 1
            if not allow_mixed_settings:
                self._check_settings([(row[2], row[-1], f"episode {row[1]}") for row in episode_rows])
            self._conn.executemany(f"INSERT INTO episodes ({_EPISODE_COLUMNS}) VALUES ({marks(18)})", episode_rows)
            self._conn.executemany(f"INSERT INTO turns ({_TURN_COLUMNS}) VALUES ({marks(11)})", turn_rows)
        return len(episode_rows)

    @translated
    def check_env_args(self, env_id: str, env_args: dict[str, Any]) -> None:
        """``MixedEnvSettings`` when ``env_id``'s stored episodes were played with other ``env_args``: what
        ``add_episodes`` would refuse, asked before playing."""
        self._check_settings([(env_id, env_args_json(env_args, "?"), "the episodes to play")])

    def _check_settings(self, rows: list[tuple[str, str, str]]) -> None:
        """``MixedEnvSettings`` when the new episodes' (env, env_args, what) ``rows`` hold two settings of
        one env, or one other than the env's stored episodes."""
        settings: dict[str, tuple[str, str]] = {}
        for env_id, env_args, what in rows:
            first, first_what = settings.setdefault(env_id, (env_args, what))
            if env_args != first:
                raise _mixed(env_id, what, env_args, f"{first_what} of the same batch", first)
        for env_id, (env_args, what) in settings.items():
            other = self._conn.execute(
                "SELECT env_args FROM episodes WHERE env_id = ? AND env_args != ? LIMIT 1", (env_id, env_args)
            ).fetchone()
            if other is not None:
                raise _mixed(env_id, what, env_args, f"{self.path}'s {env_id} episodes", other[0])

    def episodes(
        self,
        *,
        env: str | None = None,
        split: str | None = None,
        success: bool | None = None,
        model: str | None = None,
        round: int | None = None,
        since: Timestamp | None = None,
        until: Timestamp | None = None,
        limit: int | None = None,
    ) -> Iterator[Episode]:
        """Episodes matching every given filter, oldest first, read lazily page by page.

        Order is by ``created_at``, then by arrival. ``since`` / ``until`` bound ``created_at`` (inclusive /
        exclusive). Episodes committed during the iteration are included if they sort after its position.
        """
        where, params = self._episode_filter(env, split, success, model, round, since, until)
        return self._iter_episodes(where, params, limit)

    @translated
    def count_episodes(
        self,
        *,
        env: str | None = None,
        split: str | None = None,
        success: bool | None = None,
        model: str | None = None,
        round: int | None = None,
        since: Timestamp | None = None,
        until: Timestamp | None = None,
    ) -> int:
        """How many episodes ``episodes(...)`` with the same filters would yield."""
        where, params = self._episode_filter(env, split, success, model, round, since, until)
        return self._conn.execute(f"SELECT count(*) FROM episodes WHERE 1 {where}", params).fetchone()[0]

    @staticmethod
    def _episode_filter(
        env: str | None,
        split: str | None,
        success: bool | None,
        model: str | None,
        round: int | None,
        since: Timestamp | None,
        until: Timestamp | None,
    ) -> tuple[str, list[Any]]:
        clauses, params = [], []
        for column, value in (("env_id", env), ("split", split), ("model", model), ("round", round)):
            if value is not None:
                clauses.append(f" AND {column} = ?")
                params.append(value)
        if success is not None:
            clauses.append(" AND success = ?")
            params.append(int(success))
        if since is not None:
            clauses.append(" AND created_at >= ?")
            params.append(_timestamp(since))
        if until is not None:
            clauses.append(" AND created_at < ?")
            params.append(_timestamp(until))
        return "".join(clauses), params

    def _iter_episodes(self, where: str, params: list[Any], limit: int | None) -> Iterator[Episode]:
        # Keyset paging (after the last (created_at, id) seen) rather than one open cursor: an abandoned
        # iterator holds no read snapshot, and writes on this connection between pages are safe.
        after: tuple[Any, ...] = ()
        remaining = limit
        try:
            while remaining is None or remaining > 0:
                page = _PAGE if remaining is None else min(_PAGE, remaining)
                keyset = " AND (created_at, id) > (?, ?)" if after else ""
                sql = f"SELECT {_EPISODE_COLUMNS} FROM episodes WHERE 1 {where}{keyset} ORDER BY created_at, id LIMIT ?"
                rows = self._conn.execute(sql, (*params, *after, page)).fetchall()
                yield from self._load_episodes(rows)
                if len(rows) < page:
                    return
                after = (rows[-1][15], rows[-1][0])
                if remaining is not None:
                    remaining -= len(rows)
        except sqlite3.Error as exc:
            raise translate(exc, self.path, self.timeout) from exc
        except UnicodeEncodeError as exc:
            raise unencodable(exc, self.path) from None

    def _load_episodes(self, rows: list[tuple[Any, ...]]) -> list[Episode]:
        turns: dict[int, list[Turn]] = defaultdict(list)
        ids = [row[0] for row in rows]
        for chunk in chunks(ids):
            sql = (
                f"SELECT {_TURN_COLUMNS} FROM turns "
                f"WHERE episode_id IN ({marks(len(chunk))}) ORDER BY episode_id, idx"
            )
            for episode_id, index, prefix, messages, reply, action, reward, observation, ptok, ctok, ids in (
                self._conn.execute(sql, chunk)
            ):
                episode_turns = turns[episode_id]
                previous = episode_turns[-1].prompt_messages if episode_turns else []
                episode_turns.append(
                    Turn(
                        index=index,
                        prompt_messages=[dict(message) for message in previous[:prefix]] + json.loads(messages),
                        reply=reply,
                        action=action,
                        reward=reward,
                        observation=observation,
                        prompt_tokens=ptok,
                        completion_tokens=ctok,
                        reply_token_ids=json.loads(ids),
                    )
                )
        episodes = []
        for row in rows:
            episodes.append(
                Episode(
                    env_id=row[2],
                    task_id=row[3],
                    split=row[4],
                    model=row[5],
                    turns=turns.get(row[0], []),
                    success=bool(row[9]),
                    total_reward=row[10],
                    context_id=row[6],
                    round=row[7],
                    seed=row[8],
                    wall_time_s=row[14],
                    metadata=json.loads(row[16]),
                    env_args=json.loads(row[17]),
                    uuid=row[1],
                    created_at=row[15],
                )
            )
        return episodes

    @translated
    def episode(self, uuid: str) -> Episode:
        """The episode with this uuid, or with this unique uuid prefix; else ``EpisodeNotFound``."""
        row = self._conn.execute(f"SELECT {_EPISODE_COLUMNS} FROM episodes WHERE uuid = ?", (uuid,)).fetchone()
        if row is None and uuid:
            upper = uuid[:-1] + chr(min(ord(uuid[-1]) + 1, 0x10FFFF))
            sql = f"SELECT {_EPISODE_COLUMNS} FROM episodes WHERE uuid >= ? AND uuid < ? LIMIT 2"
            matches = self._conn.execute(sql, (uuid, upper)).fetchall()
            if len(matches) > 1:
                raise EpisodeNotFound(f"{self.path}: episode id {uuid!r} is ambiguous (several uuids start with it)")
            row = matches[0] if matches else None
        if row is None:
            raise EpisodeNotFound(f"{self.path}: no episode {uuid!r}")
        return self._load_episodes([row])[0]

    @translated
    def stats(self) -> StoreStats:
        """Totals and per (env, split, model) outcomes."""
        sql = (
            "SELECT env_id, split, model, count(*), sum(success), avg(total_reward), avg(num_turns), "
            "sum(prompt_tokens), sum(completion_tokens) FROM episodes GROUP BY env_id, split, model "
            "ORDER BY env_id, split, model"
        )
        groups = [EpisodeGroup(*row) for row in self._conn.execute(sql)]
        episodes, turns, first, last = self._conn.execute(
            "SELECT count(*), coalesce(sum(num_turns), 0), min(created_at), max(created_at) FROM episodes"
        ).fetchone()

        def count(table: str) -> int:
            return self._conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]

        wal = beside(self.path, "-wal")
        return StoreStats(
            path=self.path,
            schema_version=self._pragma("user_version"),
            file_bytes=self.path.stat().st_size + (wal.stat().st_size if wal.exists() else 0),
            episodes=episodes,
            turns=turns,
            knowledge_items=count("knowledge_items"),
            knowledge_sets=count("knowledge_sets"),
            runs=count("runs"),
            first_episode_at=first,
            last_episode_at=last,
            groups=groups,
        )
