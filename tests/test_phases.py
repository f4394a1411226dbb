"""timing.json: the seconds of a job's phases, from the process start."""

import json
import os
import subprocess
import sys
import time

from noise2map.training.phases import Phases, process_start


def test_phases_are_the_gaps_between_marks():
    phases = Phases(start=100.0)
    phases.marks = [("imports", 104.5), ("fit", 106.0), ("test", 106.25)]
    assert phases.seconds() == {"imports": 4.5, "fit": 1.5, "test": 0.25, "total": 6.25}


def test_the_process_start_is_the_interpreter_start():
    code = "import time; t = time.time(); from noise2map.training.phases import process_start; print(t - process_start())"
    before = time.time()
    gap = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert 0 <= gap < time.time() - before + 0.05  # at most the child's whole life, clock ticks of slack
    assert process_start() <= time.time()


def test_a_cli_training_job_writes_its_phases(tmp_path):
    from conftest import whu_cd_demo_store

    import yaml

    config = whu_cd_demo_store(tmp_path)
    config["training"]["datasets"]["whu"]["cd"]["max_epochs"] = 1
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    subprocess.run([sys.executable, "-m", "noise2map.cli", "train", "--config", str(tmp_path / "config.yaml"),
                    "--task", "cd", "--dataset", "whu", "--model", "fc-siam-conc", "--seed", "0",
                    "--run-dir", str(run), "--threads", "1"], check=True, capture_output=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    timing = json.loads((run / "timing.json").read_text())
    seconds = timing["seconds"]
    assert list(seconds) == ["imports", "config", "data", "model", "trainer", "fit", "test", "total"]
    assert seconds["imports"] > 0.5 and seconds["fit"] > 0  # Lightning alone takes seconds to import
    assert abs(sum(v for k, v in seconds.items() if k != "total") - seconds["total"]) < 0.01
    assert timing["model"] == "fc-siam-conc"


def test_a_second_run_in_one_process_counts_from_its_own_start():
    phases = Phases(start=100.0)
    phases.marks = [("imports", 104.0)]
    phases.new_run()  # the first run: the imports stay
    assert phases.start == 100.0 and phases.marks == [("imports", 104.0)]
    phases.marks += [("fit", 110.0), ("test", 111.0)]
    phases.new_run()  # a second run starts afresh
    assert phases.marks == [] and phases.start > 111.0
