"""The lock files pin every dependency pyproject.toml names, within its bounds, and
environment.yml and .ci/run install from them."""

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def _pins(name: str) -> dict[str, str]:
    pins = {}
    for line in (ROOT / name).read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9._-]+)==([^\s;#]+)", line)
        if match:
            pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _check(requirements, pins: dict[str, str]) -> list[str]:
    problems = []
    for text in requirements:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        if name not in pins:
            problems.append(f"{req.name} is not pinned")
        elif not req.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{req.name}=={pins[name]} is outside {req.specifier}")
        problems += [f"{req.name}[{e}] is not pinned" for e in req.extras if e == "reports" and "pygments" not in pins]
    return problems


def test_the_runtime_lock_pins_every_dependency_within_its_bounds():
    pins = _pins("requirements.lock")
    assert _check(_project()["dependencies"], pins) == []
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"  # the versions CI installs
    assert "pytest" not in pins  # the runtime alone: a test extra would hide a missing runtime dependency


def test_the_test_lock_adds_the_test_extra_at_the_same_versions():
    runtime, test = _pins("requirements.lock"), _pins("requirements-test.lock")
    assert _check(_project()["optional-dependencies"]["test"], test) == []
    assert {k: test.get(k) for k in runtime} == runtime


def test_the_checker_finds_a_missing_or_out_of_bounds_pin():
    assert _check(["torch>=2.4", "shapely>=9"], {"torch": "2.14.1", "shapely": "2.2.0"}) == [
        "shapely==2.2.0 is outside >=9"]
    assert _check(["absent-package"], {}) == ["absent-package is not pinned"]


def test_ci_and_conda_install_from_the_locks():
    ci = (ROOT / ".ci/run").read_text()
    assert "pip install --quiet -r requirements.lock" in ci and "pip install --quiet -r requirements-test.lock" in ci
    assert ci.index("requirements.lock") < ci.index("check_runtime.py") < ci.index("requirements-test.lock")
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip == ["-r requirements-test.lock", "-e ."]


def test_the_rules_conda_environment_names_the_lock_it_installs():
    import hashlib

    env = (ROOT / "workflow/envs/noise2map.yaml").read_text()
    digest = hashlib.sha256((ROOT / "requirements.lock").read_bytes()).hexdigest()
    assert f"# requirements.lock sha256: {digest}\n" in env  # a new lock is a new environment
    pip = next(d["pip"] for d in yaml.safe_load(env)["dependencies"] if isinstance(d, dict))
    assert pip == ["-r ../../requirements.lock", "-e ../.."]
