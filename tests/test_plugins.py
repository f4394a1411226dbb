"""Your model on the suite's footing without a fork: the entry-point group ``noise2map.models``
and the config key ``model_modules``.

The example package (examples/external_model) is copied out of the repository and installed
with pip into a temporary target, which only the subprocesses see (PYTHONPATH); the
project's environment is not changed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml

import baselines
from baselines import MODELS, ModelSpec, import_model_modules, register, register_specs
from noise2map.config import load_config, validate_config
from noise2map.errors import ConfigError, PluginError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "external_model"


@pytest.fixture
def registry():
    """The registry as it was, restored after the test."""
    models, imported = dict(MODELS), set(baselines._IMPORTED)
    yield MODELS
    MODELS.clear()
    MODELS.update(models)
    baselines._IMPORTED.clear()
    baselines._IMPORTED.update(imported)


def _spec(key="my-net", task="ss", build=lambda size, num_classes=2: None):
    return ModelSpec(key, "MyNet", task, 1.0, build)


def test_a_clash_of_keys_names_both_origins(registry):
    with pytest.raises(PluginError, match=r"'unet' of entry point x = pkg:SPECS \(pkg 1\.0\) is already registered "
                                          r"by built-in; give one of them another key"):
        register_specs([_spec("unet")], "entry point x = pkg:SPECS (pkg 1.0)")
    register_specs([_spec()], "module a (config model_modules)")
    with pytest.raises(PluginError, match="'my-net' of module b .* already registered by module a"):
        register_specs([_spec(build=lambda size, num_classes=2: None)], "module b (config model_modules)")
    # the same spec by two routes (installed, and named in model_modules) is one model
    assert register_specs([_spec()], "module c (config model_modules)")[0].origin == "module a (config model_modules)"


@pytest.mark.parametrize("spec, message", [
    (_spec("My Net"), "its key must be lower case"),
    (_spec(task="seg"), "its task is 'seg', not 'ss' or 'cd'"),
    (_spec(build=None), "its build is not callable"),
])
def test_a_spec_the_suite_cannot_run_is_named(registry, spec, message):
    with pytest.raises(PluginError, match=message):
        register(spec)
    assert spec.key not in MODELS


def test_a_plugin_must_give_a_list_of_specs(registry):
    with pytest.raises(PluginError, match="entry point e = m:SPECS gives dict, not a list of baselines.ModelSpec"):
        register_specs({"k": _spec()}, "entry point e = m:SPECS")


def test_model_modules_join_the_registry_and_the_config_check(registry, tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(textwrap.dedent("""
        from baselines import ModelSpec
        SPECS = [ModelSpec("my-cd-net", "MyCDNet", "cd", 2.0, lambda size, num_classes=2: None)]
    """))
    (tmp_path / "no_specs.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = load_config()
    config["models"]["cd"] = ["my-cd-net"]
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    assert "models.cd.0: 'my-cd-net' is not one of" in str(err.value) and "'fc-siam-conc'" in str(err.value)
    validate_config({**config, "model_modules": ["my_models"]})
    assert MODELS["my-cd-net"].origin == "module my_models (config model_modules)"
    validate_config({**config, "model_modules": ["my_models"]})  # imported once: no clash with itself
    with pytest.raises(PluginError, match=r"module absent_module \(config model_modules\) cannot be imported"):
        import_model_modules(["absent_module"])
    with pytest.raises(PluginError, match="module no_specs .* has no SPECS"):
        import_model_modules(["no_specs"])


def test_the_schema_names_no_model_and_the_check_reads_the_registry(registry):
    from noise2map.config import _schema, _schema_with_registry

    static = _schema()["properties"]["models"]["properties"]
    assert all("enum" not in str(static[task]) for task in ("ss", "cd"))
    derived = _schema_with_registry()["properties"]["models"]["properties"]
    for task in ("ss", "cd"):
        assert derived[task]["items"]["enum"] == [k for k, s in MODELS.items() if s.task == task]
    register(_spec("late-net"))
    assert "late-net" in _schema_with_registry()["properties"]["models"]["properties"]["ss"]["items"]["enum"]


# --------------------------------------------------------------------------------------------
# the example package, installed outside the repository


def _install(src: Path, target: Path) -> dict:
    """pip-install ``src`` (copied to a temporary folder) into ``target``; the env that sees it."""
    build = target.parent / f"src-{src.name}"
    shutil.copytree(src, build, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--target", str(target), str(build)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture(scope="module")
def example_env(tmp_path_factory):
    return _install(EXAMPLE, tmp_path_factory.mktemp("plugin") / "site")


def test_the_example_is_listed_through_its_entry_point_and_passes_its_own_tests(example_env):
    listed = subprocess.run([sys.executable, "-m", "noise2map.cli", "models", "--size", "demo", "--format", "csv"],
                            capture_output=True, text=True, env=example_env, timeout=300, cwd=ROOT)
    assert listed.returncode == 0, listed.stderr[-2000:]
    table = pd.read_csv(pd.io.common.StringIO(listed.stdout)).set_index("key")
    assert table.loc["tiny-unet-ss", "task"] == "ss" and table.loc["tiny-unet-cd", "task"] == "cd"
    assert table.loc["tiny-unet-ss", "params_m"] == 0.03
    assert table.loc["tiny-unet-cd", "origin"].startswith(
        "entry point tiny-unet = noise2map_example.tiny_unet:SPECS (noise2map-example-model 0.1.0)")
    assert "tiny-unet-ss" not in MODELS  # this process's registry is untouched
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
                           capture_output=True, text=True, env=example_env, timeout=300, cwd=EXAMPLE.parent)
    assert tests.returncode == 0 and "3 passed" in tests.stdout, tests.stdout[-2000:]


def test_an_installed_plugin_that_clashes_is_a_named_error(tmp_path):
    pkg = tmp_path / "clash"
    (pkg / "clash_models").mkdir(parents=True)
    (pkg / "clash_models" / "__init__.py").write_text(
        "from baselines import ModelSpec\nSPECS = [ModelSpec('unet', 'MyUNet', 'ss', 1.0, lambda s, n=2: None)]\n")
    (pkg / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "clash-models"
        version = "2.0"
        [project.entry-points."noise2map.models"]
        mine = "clash_models:SPECS"
    """))
    env = _install(pkg, tmp_path / "site")
    listed = subprocess.run([sys.executable, "-m", "noise2map.cli", "models"], capture_output=True, text=True,
                            env=env, timeout=300, cwd=ROOT)
    assert listed.returncode == 2 and "Traceback" not in listed.stderr
    assert ("model key 'unet' of entry point mine = clash_models:SPECS (clash-models 2.0) is already registered "
            "by built-in; give one of them another key") in listed.stderr


@pytest.mark.slow
def test_the_example_model_gets_its_table1_row_through_the_demo_dag(example_env, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    override = work / "plugin.yaml"
    override.write_text(yaml.safe_dump({"datasets": ["whu"], "models": {"ss": ["tiny-unet-ss", "unet"],
                                                                         "cd": ["tiny-unet-cd"]}}))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--cores", "2",
           "--directory", str(work), "results/demo/table1.csv",
           "--configfile", str(ROOT / "workflow/config/demo.yaml"), str(override)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=example_env, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    table = pd.read_csv(work / "results/demo/table1.csv")
    assert set(zip(table.task, table.model)) == {("ss", "TinyUNet-SS"), ("ss", "UNet"), ("cd", "TinyUNet-CD")}
    row = table[table.model_key == "tiny-unet-ss"].iloc[0]
    assert row.dataset == "WHU" and row.ranked and row["rank"] in (1, 2) and row.params_m == pytest.approx(0.03, abs=0.01)
    assert row[["precision", "recall", "f1", "iou"]].between(0, 100).all()
    run = work / "results/demo/runs/ss/whu/tiny-unet-ss/seed0"
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["run"]["model"] == "tiny-unet-ss" and resolved["preset"] == "demo"
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "tile_counts.csv").is_file()
    assert "| TinyUNet-SS |" in (work / "results/demo/table1.md").read_text()
