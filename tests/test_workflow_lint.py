"""The workflow stays lint-clean and formatted, as `.ci/run` checks: `snakemake --lint` (the
default config and the demo's) reports nothing, and `snakefmt --check Snakefile workflow`
(settings in pyproject.toml) would change nothing."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What Snakemake 9 prints when no linter fires; each lint is a "Lints for rule ...:" or
# "Lints for snakefile ...:" block, and any lint makes the exit status 1.
CLEAN = "Congratulations, your workflow is in a good condition!"


@pytest.mark.parametrize("configfile", [None, "workflow/config/demo.yaml"], ids=["default", "demo"])
def test_snakemake_lint_reports_no_lints(configfile):
    cmd = [sys.executable, "-m", "snakemake", "--lint"]
    if configfile:
        cmd += ["--configfile", configfile]
    done = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=600)
    out = done.stdout + done.stderr
    lints = [line for line in out.splitlines() if line.startswith("Lints for ")]
    assert not lints, "\n".join(lints) + "\n\n" + out[-4000:]
    assert done.returncode == 0, out[-4000:]
    assert CLEAN in out, out[-4000:]


def test_snakefmt_check_passes():
    # on PATH, or beside this interpreter (a venv's bin/ when it is not activated)
    snakefmt = shutil.which("snakefmt") or shutil.which("snakefmt", path=str(Path(sys.executable).parent))
    if snakefmt is None:
        pytest.skip("snakefmt is not installed (pip install snakefmt)")
    done = subprocess.run([snakefmt, "--check", "Snakefile", "workflow"], check=False, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
