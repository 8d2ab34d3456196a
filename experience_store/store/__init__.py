"""The experience store: episodes, knowledge items and sets, distillation runs, in one SQLite file.

>>> with ExperienceStore.open("exp.db") as store:
...     store.add_episodes(episodes)  # one transaction: all of them or none
...     wins = list(store.episodes(env="math", split="train", success=True))

Durability: WAL journal with ``synchronous=FULL`` (once a write call returns, its records survive a
killed process or a power cut), writes under ``BEGIN IMMEDIATE`` with a busy timeout, foreign keys on.
Opening inspects the file read-only first: a file that is not a store, is damaged, was written by a
newer version, or (to write) is in a file or folder this process cannot write is refused before anything
is written to it. A read-only open never writes the store file.
"""

from __future__ import annotations

from experience_store.store.episodes import EpisodeGroup, EpisodeRecords, StoreStats
from experience_store.store.files import inspect_store
from experience_store.store.integrity import IntegrityChecks
from experience_store.store.knowledge import KnowledgeRecords
from experience_store.store.runs import RunRecords
from experience_store.store.sql import DEFAULT_TIMEOUT

__all__ = ["DEFAULT_TIMEOUT", "EpisodeGroup", "ExperienceStore", "StoreStats", "inspect_store"]


class ExperienceStore(EpisodeRecords, KnowledgeRecords, RunRecords, IntegrityChecks):
    """One store file. Open with ``ExperienceStore.open(path)``; use as a context manager to close it.

    Write methods each run in one transaction; ``transaction()`` groups several into one. Reads see
    every committed record, also those other processes commit while this store is open. A store object
    belongs to one thread; every process opens its own.

    Its parts, one module each: the connection (opening, migrations, transactions), episodes, knowledge,
    runs, and the integrity check.
    """
