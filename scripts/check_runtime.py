"""Does a plain ``pip install -e .`` run what the README's demo command runs?

Run it in an environment that holds only the runtime dependencies (``.ci/run`` does, before it
installs the test extra): a test extra hides what the runtime lacks (pytest brought the
pygments that ``snakemake --report`` needs). It

1. imports every module of ``noise2map`` and ``baselines``;
2. runs one real rule of the workflow through Snakemake (``write_efficiency``: the CLI and
   every registered model's builder) with ``--report --report-after-run``, as the README's
   demo command does, and checks that the report holds the table.

    python scripts/check_runtime.py            # exit 0: the runtime dependencies suffice
"""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("noise2map", "baselines")
TARGET = "results/demo/efficiency.csv"


def import_everything() -> list[str]:
    """Every module of the suite's packages; returns the failures, one line each."""
    failures = []
    for name in PACKAGES:
        package = importlib.import_module(name)
        modules = [name] + [m.name for m in pkgutil.walk_packages(package.__path__, f"{name}.")]
        for module in modules:
            try:
                importlib.import_module(module)
            except ImportError as err:
                failures.append(f"{module}: {err.__class__.__name__}: {err}")
    return failures


def report_step(workdir: Path) -> list[str]:
    """The demo's report step on one cheap rule; returns the failures."""
    report = workdir / "report.html"
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--cores", "1", "--report", str(report), "--report-after-run", TARGET,
           "--configfile", str(ROOT / "workflow/config/demo.yaml")]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        stderr = "\n".join(done.stderr.splitlines()[-15:])
        if "Error in rule" in done.stderr:  # the job failed, not the report: show its log
            stderr += "".join(f"\n{p}:\n{p.read_text()[-2000:]}" for p in sorted(workdir.glob("logs/**/*.log")))
        return [f"snakemake {TARGET} --report exited {done.returncode}:\n{stderr}"]
    if not report.is_file() or "efficiency.csv" not in report.read_text(errors="replace"):
        return [f"{report} was not written or does not name efficiency.csv"]
    return []


def main() -> int:
    start = time.time()
    try:
        failures = import_everything()
    except Exception:  # the package itself does not import
        failures = [traceback.format_exc()]
    with tempfile.TemporaryDirectory(prefix="noise2map-runtime-") as tmp:
        failures += report_step(Path(tmp))
    if failures:
        print("The runtime dependencies (pip install -e .) do not cover what the workflow uses:", file=sys.stderr)
        for line in failures:
            print(f"  - {line}", file=sys.stderr)
        print("Declare what is missing in pyproject.toml's [project] dependencies (and environment.yml).",
              file=sys.stderr)
        return 1
    print(f"runtime check: every module of {', '.join(PACKAGES)} imports; {TARGET} and its report built "
          f"through Snakemake ({time.time() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
