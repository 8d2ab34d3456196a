"""The store's SQLite schema: one list of statements per version, applied as forward migrations.

``MIGRATIONS[i]`` takes a store from ``PRAGMA user_version`` i to i + 1; ``SCHEMA_VERSION`` is their
count. The store runs the pending ones and the version bump in ONE write transaction, so a file is
always at exactly one version. A released migration is never edited: append a new one.

Conventions: every record has an integer ``id`` (internal, used by foreign keys) and a ``uuid`` (its
identity across stores: export, import and merge go by uuid). Timestamps are unix seconds (REAL);
free-form fields (prompt messages, metadata, config, evaluation) are JSON text.

Prompt messages are stored incrementally: a turn keeps ``prompt_prefix``, the number of leading
messages it shares with the previous turn's prompt, and ``prompt_messages``, a JSON list of the rest.
An agent's prompt repeats the system message and the whole history every turn, so storing it whole
would grow with the square of the episode length; the store rebuilds the full list on read.
"""

from __future__ import annotations

APPLICATION_ID = 0x4F504344  # "OPCD" in the file header (PRAGMA application_id): marks an experience store

_V1: tuple[str, ...] = (
    """CREATE TABLE episodes (
        id INTEGER PRIMARY KEY,
        uuid TEXT NOT NULL UNIQUE,
        env_id TEXT NOT NULL,
        task_id TEXT NOT NULL,
        split TEXT NOT NULL,
        model TEXT NOT NULL,
        context_id TEXT,
        round INTEGER NOT NULL,
        seed INTEGER,
        success INTEGER NOT NULL CHECK (success IN (0, 1)),
        total_reward REAL NOT NULL,
        num_turns INTEGER NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        wall_time_s REAL NOT NULL,
        created_at REAL NOT NULL,
        metadata TEXT NOT NULL
    )""",
    # Queries page through episodes in (created_at, id) order; each filter's index ends with created_at
    # (and, implicitly, the rowid), so every page is an index range scan, never a sort.
    "CREATE INDEX episodes_env_split ON episodes (env_id, split, created_at)",
    "CREATE INDEX episodes_env ON episodes (env_id, created_at)",
    "CREATE INDEX episodes_model ON episodes (model, created_at)",
    "CREATE INDEX episodes_round ON episodes (round, created_at)",
    "CREATE INDEX episodes_created_at ON episodes (created_at)",
    """CREATE TABLE turns (
        id INTEGER PRIMARY KEY,
        episode_id INTEGER NOT NULL REFERENCES episodes (id),
        idx INTEGER NOT NULL,
        prompt_prefix INTEGER NOT NULL CHECK (prompt_prefix >= 0),
        prompt_messages TEXT NOT NULL,
        reply TEXT NOT NULL,
        action TEXT NOT NULL,
        reward REAL NOT NULL,
        observation TEXT NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        reply_token_ids TEXT NOT NULL,
        UNIQUE (episode_id, idx)
    )""",
    # Episodes and their turns are append-only: the database itself refuses to change them.
    *(
        f"CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table} "
        "BEGIN SELECT RAISE(ABORT, 'episodes are append-only'); END"
        for table in ("episodes", "turns")
        for op in ("UPDATE", "DELETE")
    ),
    """CREATE TABLE knowledge_items (
        id INTEGER PRIMARY KEY,
        uuid TEXT NOT NULL UNIQUE,
        text TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('experience', 'system_prompt', 'raw_trace')),
        env_id TEXT,
        model TEXT NOT NULL,
        round INTEGER NOT NULL,
        metadata TEXT NOT NULL,
        created_at REAL NOT NULL
    )""",
    "CREATE INDEX knowledge_items_env ON knowledge_items (env_id, round)",
    # Provenance by episode uuid, not foreign key: an item may come from episodes kept in another store.
    """CREATE TABLE knowledge_item_sources (
        item_id INTEGER NOT NULL REFERENCES knowledge_items (id),
        position INTEGER NOT NULL,
        episode_uuid TEXT NOT NULL,
        PRIMARY KEY (item_id, position)
    ) WITHOUT ROWID""",
    "CREATE INDEX knowledge_item_sources_episode ON knowledge_item_sources (episode_uuid)",
    """CREATE TABLE knowledge_sets (
        id INTEGER PRIMARY KEY,
        uuid TEXT NOT NULL UNIQUE,
        env_id TEXT NOT NULL,
        round INTEGER NOT NULL,
        token_count INTEGER NOT NULL,
        validation_score REAL,
        validation_n INTEGER,
        selected INTEGER NOT NULL DEFAULT 0 CHECK (selected IN (0, 1)),
        metadata TEXT NOT NULL,
        created_at REAL NOT NULL,
        CHECK ((validation_score IS NULL) = (validation_n IS NULL))
    )""",
    "CREATE INDEX knowledge_sets_env ON knowledge_sets (env_id, created_at)",
    "CREATE UNIQUE INDEX knowledge_sets_one_selected ON knowledge_sets (env_id) WHERE selected = 1",
    """CREATE TABLE knowledge_set_items (
        set_id INTEGER NOT NULL REFERENCES knowledge_sets (id),
        position INTEGER NOT NULL,
        item_id INTEGER NOT NULL REFERENCES knowledge_items (id),
        PRIMARY KEY (set_id, position)
    ) WITHOUT ROWID""",
    """CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        uuid TEXT NOT NULL UNIQUE,
        config TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'cancelled')),
        checkpoint_path TEXT,
        evaluation TEXT NOT NULL,
        created_at REAL NOT NULL,
        finished_at REAL
    )""",
    """CREATE TABLE run_metrics (
        run_id INTEGER NOT NULL REFERENCES runs (id),
        name TEXT NOT NULL,
        step INTEGER NOT NULL,
        value REAL,  -- NULL is NaN (SQLite stores no NaN); a diverged loss is worth keeping
        PRIMARY KEY (run_id, name, step)
    ) WITHOUT ROWID""",
)

# Version 2: knowledge items may be exemplars (successful traces kept as worked examples). SQLite cannot
# alter a CHECK constraint, and rebuilding the table would break the items' foreign keys; widening the
# list in the stored schema is the documented way (no stored row changes). The new index's DDL bumps the
# schema cookie, so that other open connections reload the schema.
_V2 = (
    "PRAGMA writable_schema = ON",
    """UPDATE sqlite_master SET sql = replace(sql, "'raw_trace')", "'raw_trace', 'exemplar')")
       WHERE type = 'table' AND name = 'knowledge_items'""",
    "PRAGMA writable_schema = RESET",
    "CREATE INDEX knowledge_items_kind ON knowledge_items (kind)",
)

# Version 3: each episode records the env's constructor arguments (``--env-args``) as a JSON object; the
# episodes stored before hold '{}' (the env's defaults, or not recorded). The index answers "which
# settings does this env have here" without reading the episodes.
_V3 = (
    "ALTER TABLE episodes ADD COLUMN env_args TEXT NOT NULL DEFAULT '{}'",
    "CREATE INDEX episodes_env_args ON episodes (env_id, env_args)",
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2, _V3)
SCHEMA_VERSION = len(MIGRATIONS)
