"""The package layout tells the story (data → models → training → evaluation → reporting) and
has no import circle: every module's imports, read with ast (those deferred into functions
too), form a graph without cycles, and every prepared data set has its preparer in a file of
its own."""

from __future__ import annotations

import ast
from pathlib import Path

import noise2map
from noise2map.data import PREPARED_DATASETS, PREPARERS

ROOT = Path(noise2map.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str) -> set[str]:
    """noise2map modules imported anywhere in the module: a deferred (function-level) import
    still makes a circle, one that only shows when the function runs."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m.split(".")[0] == "noise2map"}


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    return {name: {m for m in _imports(path, name) if m in modules and m != name}
            for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circle():
    graph = _graph()
    assert "noise2map.data.preparers.common" in graph["noise2map.data.preparers.xview2"]
    assert "noise2map.data.preparers.xview2" in graph["noise2map.data.prepare"]
    # deferred imports count: cli reaches the warm-start client only inside main()
    assert "noise2map.warm_client" in graph["noise2map.cli"] and "noise2map.cli" in graph["noise2map.warm_start"]
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_package_root_reads_as_the_story():
    packages = sorted(p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file())
    assert packages == ["bench", "data", "evaluation", "models", "reporting", "training"]
    assert {p.stem for p in (ROOT / "evaluation").glob("[!_]*.py")} == {"metrics", "rank", "intervals"}
    assert {p.stem for p in (ROOT / "reporting").glob("[!_]*.py")} == {"tables", "ablations", "figures", "fidelity"}


def test_one_preparer_file_per_data_set():
    assert set(PREPARERS) == set(PREPARED_DATASETS)
    files = {name: Path(fn.__code__.co_filename) for name, fn in PREPARERS.items()}
    assert {f.parent for f in files.values()} == {ROOT / "data" / "preparers"}
    # a file per data set: the SS and CD forms of one source share it, WHU-CD (another archive) has its own
    by_file: dict[str, set[str]] = {}
    for name, f in files.items():
        by_file.setdefault(f.stem, set()).add(name)
    assert by_file == {"spacenet7": {"spacenet7-ss", "spacenet7-cd"}, "whu": {"whu-ss"}, "whu_cd": {"whu-cd"},
                       "xview2": {"xview2-ss", "xview2-cd"}, "aid": {"aid"}, "imagenet": {"imagenet"},
                       "majortom": {"majortom"}}
    assert all(len(f.read_text().splitlines()) < 400 for f in files.values())
