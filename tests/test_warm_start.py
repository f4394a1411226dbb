"""Warm job start (noise2map.warm_start): a job forked from the warm server is the job its own
process would be — the same output, exit status, trained weights and metrics — and the server
only ever saves time: a job it cannot serve runs in its own process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import whu_cd_demo_store

from noise2map import warm_client, warm_start
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


def _fds(pid: int | str = "self") -> dict[int, str]:
    """A process's open file descriptors above the standard streams, and what each is."""
    found = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            found[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # the listing's own
            continue
    return {fd: what for fd, what in found.items() if fd > 2}


def _plugin(folder: Path, name: str, code: str) -> Path:
    """A config whose model_modules imports ``code`` (in the job: the server imports no plugin)."""
    (folder / f"{name}.py").write_text(code + "\nSPECS = []\n")
    config = folder / f"{name}.yaml"
    config.write_text(yaml.safe_dump({"model_modules": [name]}))
    return config


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
    assert warm_client.run_warm(["models"]) is None
    monkeypatch.delenv(warm_start.SOCKET_ENV)
    assert warm_client.run_warm(["models"]) is None


def test_a_signal_reaches_the_child_and_its_death_is_the_jobs(server, tmp_path):
    """Snakemake kills the job (the client): the child gets the signal, and the client ends
    of it as the job's own process would (killed by SIGTERM, not exit 0 or 1)."""
    path, pid = server
    (tmp_path / "slow_plugin.py").write_text("import time\ntime.sleep(60)\nSPECS = []\n")
    config = tmp_path / "slow.yaml"
    config.write_text(yaml.safe_dump({"model_modules": ["slow_plugin"]}))
    job = subprocess.Popen(CLI + ["models", "--config", str(config)], env=_job_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    (child,) = _wait_for(lambda: _children(pid))
    # the client signals the child by a pidfd the server sent (a pid may be another's later)
    _wait_for(lambda: "anon_inode:[pidfd]" in _fds(job.pid).values())
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


def _train_cold_and_warm(tmp_path, edits: dict, model: str, timeout: int, **run) -> tuple[dict, dict]:
    """The same `noise2map train` in a fresh process and forked from the server: the run
    folders and the processes' stderr, by mode."""
    config = deep_merge(whu_cd_demo_store(tmp_path), edits)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    runs, stderr = {}, {}
    for mode in ("cold", "warm"):
        env = _job_env(**({warm_start.SOCKET_ENV: None} if mode == "cold" else {}))
        runs[mode] = tmp_path / mode
        done = subprocess.run(CLI + ["train", "--config", str(config_file), "--task", "cd", "--dataset", "whu",
                                     "--model", model, "--seed", "0", "--run-dir", str(runs[mode])],
                              env=env, capture_output=True, text=True, timeout=timeout, **run)
        assert done.returncode == 0, done.stderr[-3000:]
        stderr[mode] = done.stderr
    return runs, stderr


def _assert_same_result(runs: dict) -> None:
    """Equal test metrics and equal checkpoint tensors, warm and cold."""
    metrics = {mode: json.loads((run / "metrics.json").read_text()) for mode, run in runs.items()}
    for key in ("tp", "fp", "fn", "tn", "f1", "iou", "f1_pos", "selected_on"):
        assert metrics["warm"][key] == metrics["cold"][key]
    states = {mode: torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)["state_dict"]
              for mode, run in runs.items()}
    assert states["warm"].keys() == states["cold"].keys()
    assert all(torch.equal(states["warm"][k], states["cold"][k]) for k in states["cold"])


def test_a_warm_training_run_equals_a_cold_one(server, tmp_path):
    """The same run (one thread each) trained in a fresh process and forked from the server:
    the same checkpoint tensors and the same test metrics; the warm one's imports are short."""
    runs, _ = _train_cold_and_warm(tmp_path, {"training": {"datasets": {"whu": {"cd": {"max_epochs": 2}}}}},
                                   "noise2map-cd", 600)
    _assert_same_result(runs)
    assert _forked(tmp_path) == 1, _log(tmp_path)
    timing = {mode: json.loads((run / "timing.json").read_text())["seconds"] for mode, run in runs.items()}
    assert timing["warm"]["imports"] < timing["cold"]["imports"]


def test_a_job_of_another_installation_runs_in_its_own_process(server, tmp_path, monkeypatch, capfd):
    """A job whose noise2map comes from another venv or checkout must not get the server's code."""
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)  # as in the server's environment
    assert warm_client.run_warm(["models", "--format", "csv"]) == 0  # this process: served
    assert capfd.readouterr().out.startswith("name,key,")
    monkeypatch.setattr(warm_client, "installation", lambda: ["/elsewhere/.venv", "/elsewhere/noise2map"])
    assert warm_client.run_warm(["models", "--format", "csv"]) is None
    assert _forked(tmp_path) == 1
    assert "(it runs ['/elsewhere/.venv', '/elsewhere/noise2map'], the server [" in _log(tmp_path)


def test_a_two_device_cpu_run_trains_warm_and_equals_the_cold_one(server, tmp_path):
    """``training.devices: 2`` on CPU (DDP over gloo). Lightning starts rank 1 as ``python -m
    <__main__.__spec__.name> <sys.argv[1:]>``: in the warm child those are the job's
    (``python -m noise2map.cli train ...``), not the server's, which made rank 1 a second
    server (socket ``train``, log ``--config``) and left rank 0 waiting for it. Rank 1's
    environment has the rank's variables, so it runs in its own process."""
    two_devices = {"training": {"devices": 2, "datasets": {"whu": {"cd": {"max_epochs": 2}}}}}
    runs, stderr = _train_cold_and_warm(tmp_path, two_devices, "fc-siam-conc", 300, cwd=tmp_path)
    assert all("GLOBAL_RANK: 1, MEMBER: 2/2" in text for text in stderr.values())
    _assert_same_result(runs)
    log = _log(tmp_path)
    assert _forked(tmp_path) == 1, log  # rank 0
    assert "ran in its own process (its environment differs in " in log and "LOCAL_RANK" in log, log
    assert not (tmp_path / "--config").exists(), "no second server started"


def test_a_forked_job_holds_no_descriptor_of_the_server_or_its_siblings(server, tmp_path):
    """A child keeps its standard streams and its own connection (its client's death is its
    own), not the listening socket, the wake-up pipe or the connections of the jobs beside."""
    path, pid = server
    slow = _plugin(tmp_path, "slow_plugin", "import time\ntime.sleep(60)")
    listing = _plugin(tmp_path, "fds_plugin", "import json, os\nfrom pathlib import Path\nfound = {}\n"
                      "for fd in os.listdir('/proc/self/fd'):\n    try:\n"
                      "        found[fd] = os.readlink(f'/proc/self/fd/{fd}')\n    except OSError:\n        pass\n"
                      "Path(__file__).with_suffix('.json').write_text(json.dumps(found))")
    sibling = subprocess.Popen(CLI + ["models", "--config", str(slow)], env=_job_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: _children(pid))
        kinds = {}
        for mode in ("warm", "cold"):
            env = _job_env(**({warm_start.SOCKET_ENV: None} if mode == "cold" else {}))
            subprocess.run(CLI + ["models", "--config", str(listing)], env=env, check=True, capture_output=True,
                           timeout=300)
            found = json.loads((tmp_path / "fds_plugin.json").read_text())
            kinds[mode] = sorted(what.split(":")[0] for fd, what in found.items() if int(fd) > 2)
        assert kinds["warm"] == sorted([*kinds["cold"], "socket"]), kinds
    finally:
        sibling.send_signal(signal.SIGTERM)
        sibling.wait(timeout=30)
    assert _forked(tmp_path) == 2


def test_a_forked_job_gets_the_threads_a_fresh_process_would(server, tmp_path):
    """The server runs on one thread (torch's and the thread variables), so a fork inherits no
    thread pool; the child takes torch's count from the job's OMP_NUM_THREADS, else the
    machine's default, as a fresh process would."""
    path, pid = server
    config = _plugin(tmp_path, "threads_plugin", "import json, os, torch\nfrom pathlib import Path\n"
                     "Path(__file__).with_suffix('.json').write_text("
                     "json.dumps([torch.get_num_threads(), os.environ.get('OMP_NUM_THREADS')]))")
    seen = {}
    for omp in (None, "1"):  # (torch caps a count above the machine's cores; the child does not)
        for mode in ("warm", "cold"):
            env = _job_env(OMP_NUM_THREADS=omp, **({warm_start.SOCKET_ENV: None} if mode == "cold" else {}))
            subprocess.run(CLI + ["models", "--config", str(config)], env=env, check=True, capture_output=True,
                           timeout=300)
            seen[mode, omp] = json.loads((tmp_path / "threads_plugin.json").read_text())
    assert seen["warm", None] == seen["cold", None] and seen["warm", "1"] == seen["cold", "1"] == [1, "1"], seen
    assert _forked(tmp_path) == 2
    assert f"its torch on 1 thread, a job's default {seen['cold', None][0]})" in _log(tmp_path)
    start_env = dict(v.split("=", 1) for v in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in v)
    # torch reads its default from these two at its import; the server pins them after
    assert "OMP_NUM_THREADS" not in start_env and "MKL_NUM_THREADS" not in start_env
    assert start_env["OPENBLAS_NUM_THREADS"] == start_env["NUMEXPR_NUM_THREADS"] == "1"


def test_a_server_that_never_answers_means_a_cold_run(tmp_path, monkeypatch, capfd):
    """A server that takes the connection and never replies: the client gives up after
    REPLY_TIMEOUT, says so and runs the job in its own process (a child never starts
    without the client's go-ahead, so the job cannot run twice)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "socket"))
    listener.listen(1)  # never accepted: connect and send still succeed
    monkeypatch.setenv(warm_start.SOCKET_ENV, str(tmp_path / "socket"))
    monkeypatch.setattr(warm_client, "REPLY_TIMEOUT", 0.5)
    began = time.monotonic()
    try:
        assert warm_client.run_warm(["models"]) is None
    finally:
        listener.close()
    assert time.monotonic() - began < 10
    assert f"the warm server (socket {tmp_path / 'socket'}) gave no answer in 0.5 s: this job runs in its own " \
           "process" in capfd.readouterr().err


def test_a_child_whose_client_gave_up_never_runs(server, tmp_path):
    """The client that timed out as the reply came: its child got no go-ahead and ends unstarted."""
    path, pid = server
    config = _plugin(tmp_path, "marker_plugin", "from pathlib import Path\nPath(__file__).with_suffix('.ran').touch()")
    request = json.dumps({"argv": ["models", "--config", str(config)], "argv0": "noise2map", "cwd": str(tmp_path),
                          "env": _job_env(), "start": time.time(), "install": warm_client.installation()}).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        socket.send_fds(sock, [warm_client.LENGTH.pack(len(request)) + request], [0, 1, 2])
        kind, child, pidfd = warm_client.read_reply(sock, with_fd=True)
        assert kind == "P" and child > 0
        if pidfd is not None:
            os.close(pidfd)
    _wait_for(lambda: "ended unstarted" in _log(tmp_path))
    _wait_for(lambda: _children(pid) == [])
    assert not (tmp_path / "marker_plugin.ran").exists()


def test_a_signal_by_pidfd_never_reaches_a_process_that_took_the_pid():
    """send_signal goes by the pidfd: a process that got the pid since is not hit."""
    gone = subprocess.Popen(["sleep", "60"])
    pidfd = warm_client.pidfd_open(gone.pid)
    if pidfd is None:
        gone.kill()
        gone.wait()
        pytest.skip("no pidfd on this system")
    gone.kill()
    gone.wait()
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        warm_client.send_signal(bystander.pid, pidfd, signal.SIGTERM)  # as if the bystander had the pid now
        time.sleep(0.2)
        assert bystander.poll() is None
    finally:
        os.close(pidfd)
        bystander.kill()
        bystander.wait()


def test_stop_server_signals_the_pid_file_only_while_it_is_that_server(tmp_path, monkeypatch):
    """From a process without the server's handle, stop_server reads the pid file: a pid that
    is no longer that server's (it was killed, its pid reused) is left alone."""
    folder = tmp_path / "noise2map-warm-gone"
    folder.mkdir()
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        (folder / "socket.pid").write_text(str(bystander.pid))
        monkeypatch.setenv(warm_start.SOCKET_ENV, str(folder / "socket"))
        monkeypatch.setattr(warm_start, "_SERVER", None)
        warm_start.stop_server()
        time.sleep(0.2)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_the_socket_folders_of_killed_servers_are_removed(tmp_path):
    """start_server first removes the folders of servers that are gone; those of live
    servers, of servers starting now and other folders stay."""
    def folder(name: str, pid: int | None = None) -> Path:
        path = tmp_path / f"noise2map-warm-{name}"
        path.mkdir()
        if pid is not None:
            (path / "socket.pid").write_text(str(pid))
            (path / "socket").touch()
        return path

    dead = subprocess.Popen(["true"])
    dead.wait()
    live = tmp_path / "noise2map-warm-live"
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "noise2map.warm_start",
                               str(live / "socket")])  # its command line names the server and its socket
    try:
        stale = [folder("dead", dead.pid), folder("reused", os.getpid())]  # a pid that is not a warm server
        old = folder("unstarted")
        os.utime(old, (time.time() - 3600, time.time() - 3600))
        stale.append(old)
        kept = [folder("live", server.pid), folder("starting"), tmp_path / "other"]
        kept[-1].mkdir()
        assert sorted(warm_start.remove_stale_folders(str(tmp_path))) == sorted(map(str, stale))
        assert all(p.exists() for p in kept) and not any(p.exists() for p in stale)
    finally:
        server.kill()
        server.wait()


def test_a_job_that_would_use_a_gpu_runs_in_its_own_process(server, tmp_path, monkeypatch):
    """A forked process cannot use CUDA safely: a job asking for a GPU, or with ``auto`` where
    CUDA is available, is refused by name and runs in its own process."""
    for accelerator in ("gpu", "auto", "cpu"):
        (tmp_path / f"{accelerator}.yaml").write_text(yaml.safe_dump({"training": {"accelerator": accelerator,
                                                                                    "devices": 2}}))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"training": {"accelerator": "gpu"}}))

    def gpu(*argv, cuda=False):
        return warm_start.gpu_use(list(argv), str(tmp_path), lambda: cuda)

    train = ["train", "--task", "cd", "--dataset", "whu", "--model", "fc-siam-conc", "--seed", "0", "--config"]
    assert gpu(*train, "gpu.yaml") == "it asks for a GPU, training.accelerator gpu"
    assert gpu(*train, "auto.yaml", cuda=True) == "it would run on a GPU, training.accelerator auto with CUDA available"
    assert gpu(*train, "auto.yaml") == gpu(*train, "cpu.yaml", cuda=True) == ""  # 2 CPU devices: served
    assert gpu("pretrain", "--config", "gpu.yaml", "--output-dir", "out") != ""
    assert gpu("evaluate", str(run)) == "it asks for a GPU, the run's training.accelerator gpu"
    assert gpu("evaluate", str(run), "--accelerator", "cpu") == ""
    assert gpu("bench", "train", "--device", "cuda") == "it asks for a GPU, --device cuda"
    assert gpu("bench", "infer", cuda=True) != "" and gpu("bench", "infer") == ""
    assert gpu("models") == gpu("train", "--no-such-option") == gpu("train", "--config", "missing.yaml") == ""
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)  # as in the server's environment
    monkeypatch.chdir(tmp_path)
    assert warm_client.run_warm([*train, "gpu.yaml"]) is None
    assert _forked(tmp_path) == 0
    assert "ran in its own process (it asks for a GPU, training.accelerator gpu): ['train'," in _log(tmp_path)
