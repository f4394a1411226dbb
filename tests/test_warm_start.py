"""Warm job start (noise2map.warm_start): a job forked from the warm server is the job its own
process would be — the same output, exit status, trained weights and metrics — and the server
only ever saves time: a job it cannot serve runs in its own process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import whu_cd_demo_store

from noise2map import warm_start
from noise2map.config import deep_merge

CLI = [sys.executable, "-m", "noise2map.cli"]


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A warm server whose environment has ``tmp_path`` on PYTHONPATH (for the slow plugin)."""
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)  # pytest changes it between setup and call
    path = warm_start.start_server(tmp_path / "warm_start.log")
    pid = int(Path(path).with_suffix(".pid").read_text())
    yield path, pid
    warm_start.stop_server()
    for _ in range(100):
        if not Path(path).exists():
            break
        time.sleep(0.05)
    assert not Path(path).exists(), "the server removes its socket when stopped"


def _job_env(**changes) -> dict:
    """This process's environment as a job's: the server's, but for what pytest changes."""
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    env.update(changes)
    return {k: v for k, v in env.items() if v is not None}


def _log(folder: Path) -> str:
    """The server's log (the fixture puts it in the test's folder)."""
    log = folder / "warm_start.log"
    return log.read_text() if log.exists() else ""


def _forked(folder: Path) -> int:
    return sum(line.split(" ", 2)[2].startswith("forked") for line in _log(folder).splitlines())


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _wait_for(condition, seconds: float = 60.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_env_difference_ignores_only_the_per_job_variables():
    server = {"PATH": "/bin", "HOME": "/root", "OMP_NUM_THREADS": "2", "PS1": "(.venv) "}  # activate exports PS1
    job = {"PATH": "/bin", "HOME": "/root", "OMP_NUM_THREADS": "1", "TMPDIR": "/scratch", warm_start.SOCKET_ENV: "s"}
    assert warm_start.env_difference(server, job) == []
    assert warm_start.env_difference(server, {**job, "PATH": "/usr/bin", "CUDA_VISIBLE_DEVICES": "0"}) \
        == ["CUDA_VISIBLE_DEVICES", "PATH"]
    assert warm_start.env_difference(server, {k: v for k, v in job.items() if k != "HOME"}) == ["HOME"]
    added = {"GDAL_CURL_CA_BUNDLE": "/etc/ssl/certs.pem"}  # set by an import in the server
    assert warm_start.env_difference(server, {**job, **added}, added) == []
    assert warm_start.env_difference(server, {**job, "GDAL_CURL_CA_BUNDLE": "/other.pem"}, added) \
        == ["GDAL_CURL_CA_BUNDLE"]
    assert warm_start._job_threads({"OMP_NUM_THREADS": "3"}, 8) == 3
    assert warm_start._job_threads({"OMP_NUM_THREADS": "x"}, 8) == 8 and warm_start._job_threads({}, 8) == 8


def test_a_warm_command_prints_and_exits_as_a_cold_one(server, tmp_path):
    path, pid = server
    warm_env = _job_env()  # start_server pointed this process's jobs at the server
    cold_env = _job_env(**{warm_start.SOCKET_ENV: None})
    for args, code in ((["models", "--format", "csv"], 0), (["tables", "table1", "--output", str(tmp_path / "t.csv"),
                                                              str(tmp_path / "missing.json")], 2)):
        warm = subprocess.run(CLI + args, env=warm_env, capture_output=True, text=True, timeout=300)
        cold = subprocess.run(CLI + args, env=cold_env, capture_output=True, text=True, timeout=300)
        assert (warm.returncode, warm.stdout, warm.stderr) == (cold.returncode, cold.stdout, cold.stderr)
        assert warm.returncode == code
    assert _forked(tmp_path) == 2
    assert _children(pid) == [], "every child was reaped"


def test_a_job_whose_environment_differs_runs_in_its_own_process(server, tmp_path):
    path, _ = server
    other = subprocess.run(CLI + ["models", "--format", "csv"], env=_job_env(NOISE2MAP_SOMETHING_ELSE="1"),
                           capture_output=True, text=True, timeout=300)
    assert other.returncode == 0 and other.stdout.startswith("name,key,")
    assert _forked(tmp_path) == 0
    assert "its environment differs in NOISE2MAP_SOMETHING_ELSE" in _log(tmp_path)


def test_no_server_means_a_cold_run(monkeypatch, tmp_path):
    monkeypatch.setenv(warm_start.SOCKET_ENV, str(tmp_path / "no-such-socket"))
    assert warm_start.run_warm(["models"]) is None
    monkeypatch.delenv(warm_start.SOCKET_ENV)
    assert warm_start.run_warm(["models"]) is None


def test_a_signal_reaches_the_child_and_its_death_is_the_jobs(server, tmp_path):
    """Snakemake kills the job (the client): the child gets the signal, and the client ends
    of it as the job's own process would (killed by SIGTERM, not exit 0 or 1)."""
    path, pid = server
    (tmp_path / "slow_plugin.py").write_text("import time\ntime.sleep(60)\nSPECS = []\n")
    config = tmp_path / "slow.yaml"
    config.write_text(yaml.safe_dump({"model_modules": ["slow_plugin"]}))
    job = subprocess.Popen(CLI + ["models", "--config", str(config)], env=_job_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    (child,) = _wait_for(lambda: _children(pid))
    job.send_signal(signal.SIGTERM)
    assert job.wait(timeout=30) == -signal.SIGTERM
    _wait_for(lambda: not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2])


def test_a_killed_client_takes_its_child_with_it(server, tmp_path):
    """kill -9 of the job: its process (the server's child) dies at once too, as the job's
    own process would have, so a rerun never meets a straggler in the run folder."""
    path, pid = server
    # it ignores SIGTERM (as training defers it to the next step): only a kill stops it at once
    (tmp_path / "stubborn_plugin.py").write_text(
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)\nSPECS = []\n")
    config = tmp_path / "stubborn.yaml"
    config.write_text(yaml.safe_dump({"model_modules": ["stubborn_plugin"]}))
    job = subprocess.Popen(CLI + ["models", "--config", str(config)], env=_job_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    _wait_for(lambda: _children(pid))
    time.sleep(1)  # the plugin's import has reached its sleep
    job.kill()
    job.wait(timeout=30)
    _wait_for(lambda: _children(pid) == [], seconds=5)


def test_a_warm_training_run_equals_a_cold_one(server, tmp_path):
    """The same run (one thread each) trained in a fresh process and forked from the server:
    the same checkpoint tensors and the same test metrics; the warm one's imports are short."""
    config = deep_merge(whu_cd_demo_store(tmp_path), {"training": {"datasets": {"whu": {"cd": {"max_epochs": 2}}}}})
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    runs = {}
    for mode in ("cold", "warm"):
        env = _job_env(**({warm_start.SOCKET_ENV: None} if mode == "cold" else {}))
        run = tmp_path / mode
        done = subprocess.run(CLI + ["train", "--config", str(config_file), "--task", "cd", "--dataset", "whu",
                                     "--model", "noise2map-cd", "--seed", "0", "--run-dir", str(run)],
                              env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        runs[mode] = run
    metrics = {mode: json.loads((run / "metrics.json").read_text()) for mode, run in runs.items()}
    for key in ("tp", "fp", "fn", "tn", "f1", "iou", "f1_pos", "selected_on"):
        assert metrics["warm"][key] == metrics["cold"][key]
    states = {mode: torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)["state_dict"]
              for mode, run in runs.items()}
    assert states["warm"].keys() == states["cold"].keys()
    assert all(torch.equal(states["warm"][k], states["cold"][k]) for k in states["cold"])
    assert _forked(tmp_path) == 1, _log(tmp_path)
    timing = {mode: json.loads((run / "timing.json").read_text())["seconds"] for mode, run in runs.items()}
    assert timing["warm"]["imports"] < timing["cold"]["imports"]


def test_a_job_of_another_installation_runs_in_its_own_process(server, tmp_path, monkeypatch, capfd):
    """A job whose noise2map comes from another venv or checkout must not get the server's code."""
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)  # as in the server's environment
    assert warm_start.run_warm(["models", "--format", "csv"]) == 0  # this process: served
    assert capfd.readouterr().out.startswith("name,key,")
    monkeypatch.setattr(warm_start, "installation", lambda: ["/elsewhere/.venv", "/elsewhere/noise2map"])
    assert warm_start.run_warm(["models", "--format", "csv"]) is None
    assert _forked(tmp_path) == 1
    assert "(it runs ['/elsewhere/.venv', '/elsewhere/noise2map'], the server [" in _log(tmp_path)
