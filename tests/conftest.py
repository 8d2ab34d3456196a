"""Shared test setup: a per-session cache folder, so tests never write to the user's cache."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

settings.register_profile("default", deadline=None, max_examples=60, derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    if "OPCD_TEST_CACHE_DIR" in os.environ:  # reuse compiled games across local runs
        os.environ["OPCD_CACHE_DIR"] = os.environ["OPCD_TEST_CACHE_DIR"]
    else:
        os.environ["OPCD_CACHE_DIR"] = str(tmp_path_factory.mktemp("opcd-cache"))
