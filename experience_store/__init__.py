"""The durable store of episodes, knowledge and runs (SQLite): ``ExperienceStore.open(path)``.

The CLI is ``python -m experience_store``; JSONL export / import / merge live in ``experience_store.jsonl``.
"""

from experience_store.errors import (
    DuplicateRecord,
    EpisodeNotFound,
    InvalidRecord,
    KnowledgeSetNotFound,
    MixedEnvSettings,
    NotAStore,
    RecordNotFound,
    RunNotFound,
    StoreCorrupt,
    StoreError,
    StoreLocked,
    StoreReadOnly,
    StoreTooNew,
)
from experience_store.records import DistillRun, KnowledgeItem, KnowledgeSet
from experience_store.store import EpisodeGroup, ExperienceStore, StoreStats, inspect_store

__all__ = [
    "DistillRun",
    "DuplicateRecord",
    "EpisodeGroup",
    "EpisodeNotFound",
    "ExperienceStore",
    "InvalidRecord",
    "KnowledgeItem",
    "KnowledgeSet",
    "KnowledgeSetNotFound",
    "MixedEnvSettings",
    "NotAStore",
    "RecordNotFound",
    "RunNotFound",
    "StoreCorrupt",
    "StoreError",
    "StoreLocked",
    "StoreReadOnly",
    "StoreStats",
    "StoreTooNew",
    "inspect_store",
]
