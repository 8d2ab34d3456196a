"""Imports only go down the layers (common → envs → agents → experience_store → distill → bench, commands),
and no module imports itself back through others: read from every module's source (ast), nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Rank of each package: a module may import its own package and those of lower rank. The composition roots
# (bench, commands) may import everything.
LAYERS = {"common": 0, "envs": 1, "agents": 2, "experience_store": 3, "distill": 4, "bench": 5, "commands": 5}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for package in LAYERS for p in sorted((ROOT / package).rglob("*.py"))}


def is_main_guard(node: ast.stmt) -> bool:
    """``if __name__ == "__main__":``: the code a module runs as a program, never when it is imported."""
    test = node.test if isinstance(node, ast.If) else None
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators)
    )


def imported_modules(name: str) -> set[str]:
    """The project modules ``name`` imports anywhere (functions included), outside its ``__main__`` guard."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    tree.body = [node for node in tree.body if not is_main_guard(node)]
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # ``from pkg import mod`` imports the submodule; ``from mod import name`` the module itself.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]  # `import envs.registry` without a file: its package
            if target and target != name:
                found.add(target)
    return found


GRAPH = {name: imported_modules(name) for name in MODULES}


def layer(name: str) -> int:
    return LAYERS[name.split(".")[0]]


def test_no_import_runs_up_the_layers() -> None:
    upward = sorted(f"{m} imports {t}" for m, targets in GRAPH.items() for t in targets
                    if layer(t) > layer(m) and t.split(".")[0] != m.split(".")[0])  # fmt: skip
    assert not upward, "imports run up the layers:\n" + "\n".join(upward)


def test_no_import_circle() -> None:
    """Tarjan's strongly connected components: any with two or more modules is a circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in GRAPH[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for name in GRAPH:
        if name not in index:
            visit(name)
    assert not circles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in circles)


def test_the_parser_sees_imports() -> None:
    """The checks above are only as good as the graph: a few edges it must hold."""
    assert "agents.sampling" in GRAPH["agents.hf_backend"]
    assert "common.chat" in GRAPH["agents.hf_backend"]
    assert "experience_store" in GRAPH["commands.play"]
    assert "commands.play" not in GRAPH["agents.play"]  # only under its __main__ guard
