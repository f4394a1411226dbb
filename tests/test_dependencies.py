"""The runtime dependencies cover every import of the suite and of Snakemake's report.

``pip install -e .`` (no test extra) is what the README's demo command installs; anything the
package, the rules or ``snakemake --report`` import must come with it. The installed
metadata gives the transitive closure of ``[project] dependencies`` (extras followed where a
requirement names them, test extra excluded); each third-party module imported is mapped to
the distribution that provides it. ``scripts/check_runtime.py`` (run by ``.ci/run`` before
the test extra is installed) checks the same by running the report.
"""

import ast
import importlib.util
import re
import sys
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCAL = {"noise2map", "baselines"}
# Imported inside try/except ImportError or through importlib with a fallback: optional.
OPTIONAL = {"mamba_ssm"}


def _closure(requirements: list[str]) -> set[str]:
    """Canonical names of the distributions ``requirements`` install, transitively."""
    seen: set[str] = set()
    todo = [(Requirement(r), ()) for r in requirements]
    while todo:
        req, _ = todo.pop()
        name = canonicalize_name(req.name)
        key = f"{name}[{','.join(sorted(req.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        try:
            deps = requires(req.name) or []
        except PackageNotFoundError:
            continue
        for dep in map(Requirement, deps):
            envs = [{"extra": e} for e in req.extras] or [{"extra": ""}]
            if dep.marker is None or any(dep.marker.evaluate(env) for env in envs):
                todo.append((dep, ()))
    return {k.split("[")[0] for k in seen}


def runtime_closure() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return _closure(project["dependencies"])


def _optional_lines(tree: ast.AST) -> set[int]:
    """Line numbers of imports guarded by ``except ImportError``."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                for h in node.handlers):
            lines |= {n.lineno for stmt in node.body for n in ast.walk(stmt) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return lines


def python_imports(path: Path, optional_too: bool = False) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    optional = set() if optional_too else _optional_lines(tree)
    names = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in optional:
            continue
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def snakemake_imports(path: Path) -> set[str]:
    """Imports in a Snakefile / .smk (not Python the ast module reads)."""
    found = re.findall(r"^\s*(?:from\s+([\w.]+)\s+import|import\s+([\w.]+))", path.read_text(), re.M)
    return {(a or b).split(".")[0] for a, b in found}


def third_party(names: set[str]) -> set[str]:
    return {n for n in names if n not in sys.stdlib_module_names and n not in LOCAL and n not in OPTIONAL
            and n != "__future__"}


def suite_imports() -> dict[str, set[str]]:
    where: dict[str, set[str]] = {}
    files = [*(ROOT / "noise2map").rglob("*.py"), *(ROOT / "baselines").rglob("*.py"), ROOT / "scripts/check_runtime.py"]
    for path in files:
        for name in third_party(python_imports(path)):
            where.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    for path in [ROOT / "Snakefile", *(ROOT / "workflow/rules").glob("*.smk")]:
        for name in third_party(snakemake_imports(path)):
            where.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return where


def report_imports() -> dict[str, set[str]]:
    """What Snakemake's HTML report imports (the README's demo command runs it), guarded
    imports included: the report stops with "pygments must be installed" where one fails."""
    report = Path(importlib.util.find_spec("snakemake.report").submodule_search_locations[0])
    where: dict[str, set[str]] = {}
    for path in report.rglob("*.py"):
        for name in third_party(python_imports(path, optional_too=True)) - {"snakemake"}:
            where.setdefault(name, set()).add(f"snakemake/report/{path.relative_to(report)}")
    return where


def _missing(where: dict[str, set[str]], closure: set[str]) -> list[str]:
    providers = packages_distributions()
    missing = []
    for module, files in sorted(where.items()):
        dists = {canonicalize_name(d) for d in providers.get(module, [])}
        if not dists & closure:
            missing.append(f"{module} (imported by {', '.join(sorted(files))}; provided by {sorted(dists) or '?'})")
    return missing


def test_runtime_dependencies_cover_every_import_of_the_suite():
    closure = runtime_closure()
    where = suite_imports()
    assert {"torch", "segmentation_models_pytorch", "diffusers", "snakemake", "rasterio"} <= set(where)
    assert not _missing(where, closure)


def test_runtime_dependencies_cover_snakemake_s_report():
    closure = runtime_closure()
    where = report_imports()
    assert "pygments" in where  # the import that the demo's --report failed on
    assert not _missing(where, closure)


def test_the_closure_follows_extras_and_leaves_the_test_extra_out():
    closure = runtime_closure()
    assert "pygments" in closure  # through snakemake[reports]
    assert "pytest" not in closure and "scikit-learn" not in closure
    assert "pygments" not in _closure(["snakemake>=9"])  # plain snakemake does not bring it
