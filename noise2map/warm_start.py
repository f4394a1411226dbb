"""Warm job start: one process holds the heavy imports, and each local job forks from it.

A demo job trains for seconds after about 4 s of imports (Lightning alone pulls torchmetrics,
torchvision, scipy.signal and ``torch._dynamo``). Under a local Snakemake run with
``warm_start: true``, ``onstart`` starts a *warm server* that imports the suite's libraries
once; each job's ``noise2map ...`` (a light client: the CLI module imports no torch) connects
to it and hands over its argument list, working folder, environment and standard streams. The
server forks a child that runs the command exactly as the job's own process would, and relays
the child's exit status; the client forwards the signals it gets (Snakemake's kill, Ctrl-C) to
the child and exits with the child's status. Snakemake still sees one process per (task,
data set, model, seed), with its log, exit status and kill.

What a fresh process would differ in is reset in the child: the signal handlers, torch's
thread count (from the job's ``OMP_NUM_THREADS``, else the machine's default), the global
random states, the phase clock (it counts from the client's start) and ``tempfile``'s folder.
A job whose environment differs from the server's in anything but the per-job thread and
temporary-folder variables runs in its own process instead, as does every job when the
server cannot be reached: warm start only ever saves time.
"""

from __future__ import annotations

import importlib
import json
import os
import select
import signal
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path

from noise2map.training.phases import process_start

SOCKET_ENV = "NOISE2MAP_WARM_SOCKET"
# Snakemake sets the first ones per job (threads, resources.tmpdir); the job's shell sets or
# drops the rest (a venv's `activate` exports PS1, which a non-interactive bash unsets). The
# child takes the job's values (torch's threads and tempfile's folder are re-read).
PER_JOB_ENV = ("OMP_NUM_THREADS", "GOTO_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "TMPDIR", "TEMP", "TMP", "TEMPDIR", SOCKET_ENV,
               "SHLVL", "_", "PWD", "OLDPWD", "PS1", "PS2", "PS3", "PS4", "PROMPT_COMMAND")
# What the suite's jobs import; a missing optional one is skipped.
PRELOAD = ("noise2map.cli", "noise2map.training.run", "noise2map.training.multitask", "noise2map.data.prepare",
           "noise2map.reporting.tables", "noise2map.reporting.figures", "baselines", "segmentation_models_pytorch",
           "timm", "diffusers", "rasterio", "pandas", "matplotlib.pyplot")
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
_LENGTH = struct.Struct("!I")


# -- the job's side ----------------------------------------------------------------------------

def run_warm(argv: list[str]) -> int | None:
    """Run ``noise2map argv`` in a child of the warm server; None when there is none to use."""
    path = os.environ.get(SOCKET_ENV)
    if not path:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        request = json.dumps({"argv": argv, "argv0": sys.argv[0], "cwd": os.getcwd(), "env": dict(os.environ),
                              "start": process_start(), "install": installation()}).encode()
        socket.send_fds(sock, [_LENGTH.pack(len(request)) + request], [0, 1, 2])
        kind, value = _read_reply(sock)
    except OSError:
        sock.close()
        return None
    if kind == "R":  # refused: this job's environment or installation is not the server's
        sock.close()
        return None
    return _wait_for_child(sock, value)


def _wait_for_child(sock: socket.socket, pid: int) -> int:
    def forward(sig, _frame):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED_SIGNALS}
    try:
        kind, value = _read_reply(sock)
    except OSError:  # the server went first: the job's process goes too, as a failed job
        forward(signal.SIGTERM, None)
        print(f"noise2map: the warm server ended while job process {pid} ran; it was stopped", file=sys.stderr)
        kind, value = "X", 1
    finally:
        sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if kind == "S":  # the child died of a signal: so does this process, for the same status
        signal.signal(value, signal.SIG_DFL)
        os.kill(os.getpid(), value)
        return 128 + value
    return value


def _read_reply(sock: socket.socket) -> tuple[str, int]:
    data = b""
    while len(data) < 5:
        chunk = sock.recv(5 - len(data))
        if not chunk:
            raise ConnectionError("the warm server closed the connection")
        data += chunk
    return data[:1].decode(), struct.unpack("!i", data[1:])[0]


def installation() -> list[str]:
    """The Python environment and the noise2map package a process runs: a job run by another
    venv's ``noise2map`` than the server's must not get the server's code."""
    import noise2map

    return [sys.prefix, os.path.dirname(os.path.abspath(noise2map.__file__))]


# -- the server's side -------------------------------------------------------------------------

def start_server(log: str | os.PathLike, timeout: float = 30.0) -> str | None:
    """Start a warm server for this workflow run and point the jobs at it (``SOCKET_ENV``).

    The socket is bound before the imports, so a job that comes early waits for them instead
    of doing its own. ``log`` gets a line per job: forked, or run in its own process and
    why. The server stops with :func:`stop_server` or when its parent exits. A server that
    does not start is a warning: every job then runs in its own process."""
    import subprocess

    folder = tempfile.mkdtemp(prefix="noise2map-warm-")
    path = os.path.join(folder, "socket")
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in PER_JOB_ENV}
    proc = subprocess.Popen([sys.executable, "-m", "noise2map.warm_start", path, os.path.abspath(log)], env=env,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            print(f"noise2map: warning: the warm server did not start (socket {path}; log {log}): "
                  "each job runs in its own process", file=sys.stderr)
            return None
        time.sleep(0.02)
    os.environ[SOCKET_ENV] = path
    return path


def stop_server() -> None:
    """Stop the server :func:`start_server` started (its pid file sits beside the socket)."""
    path = os.environ.pop(SOCKET_ENV, None)
    if not path:
        return
    try:
        os.kill(int(Path(path).with_suffix(".pid").read_text()), signal.SIGTERM)
    except (OSError, ValueError):
        pass


_LOG = ""


def serve(path: str, log: str) -> None:
    global _LOG
    _LOG, parent = log, os.getppid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".tmp")
    listener.listen(256)
    Path(path).with_suffix(".pid").write_text(str(os.getpid()))
    os.replace(path + ".tmp", path)
    env = dict(os.environ)
    _preload()
    threads = _default_threads()
    _log(f"warm server {os.getpid()} ready (socket {path})")
    added = {k: v for k, v in os.environ.items() if k not in env}  # set by the imports (rasterio, torch)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    children: dict[int, socket.socket] = {}
    try:
        while os.getppid() == parent:
            ready, _, _ = select.select([listener, wake_r], [], [], 1.0)
            if wake_r in ready:
                os.read(wake_r, 512)
            if listener in ready:
                conn, _ = listener.accept()
                pid = _accept_job(conn, env, added, threads, listener.fileno(), wake_r, wake_w)
                if pid is not None:
                    children[pid] = conn
            _reap(children)
    finally:
        for file in (path, Path(path).with_suffix(".pid")):
            Path(file).unlink(missing_ok=True)
        try:
            os.rmdir(os.path.dirname(path))
        except OSError:
            pass


def _preload() -> None:
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    sys.stdout.flush()
    sys.stderr.flush()


def _default_threads() -> int:
    import torch

    return torch.get_num_threads()


def env_difference(server: dict, job: dict, added: dict | None = None) -> list[str]:
    """The variables in which a job's environment differs from the server's, per-job ones
    aside; one the server's imports ``added`` may be absent from the job or hold that value."""
    added = added or {}
    keys = (set(server) | set(job)) - set(PER_JOB_ENV)
    return sorted(k for k in keys if server.get(k) != job.get(k) and not (k in added and job.get(k) in (None, added[k])))


def _accept_job(conn: socket.socket, env: dict, added: dict, threads: int, *inherited: int) -> int | None:
    try:
        message, fds, _, _ = socket.recv_fds(conn, 65536, 3)
        (length,) = _LENGTH.unpack(message[:4])
        payload = message[4:]
        while len(payload) < length:
            chunk = conn.recv(length - len(payload))
            if not chunk:
                raise ConnectionError("the job closed the connection")
            payload += chunk
        request = json.loads(payload)
    except (OSError, ValueError, struct.error):
        conn.close()
        return None
    differs = env_difference(env, request["env"], added)
    why = (f"its environment differs in {', '.join(differs)}" if differs else
           f"it runs {request.get('install')}, the server {installation()}" if request.get("install") != installation()
           else "" if len(fds) == 3 else "its standard streams did not arrive")
    if why:
        for fd in fds:
            os.close(fd)
        _log(f"ran in its own process ({why}): {request['argv']}")
        conn.sendall(b"R" + struct.pack("!i", 0))
        conn.close()
        return None
    pid = os.fork()
    if pid == 0:
        for fd in inherited:  # the server's own: the listening socket, the wake-up pipe
            os.close(fd)
        request["env"] = {**added, **request["env"]}
        _run_child(conn, fds, request, threads)  # never returns
    for fd in fds:
        os.close(fd)
    _log(f"forked {pid}: {request['argv']}")
    conn.sendall(b"P" + struct.pack("!i", pid))
    return pid


def _log(line: str) -> None:
    with open(_LOG, "a") as log:
        log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")


def _reap(children: dict[int, socket.socket]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        try:
            conn.sendall((b"S" + struct.pack("!i", -code)) if code < 0 else (b"X" + struct.pack("!i", code)))
        except OSError:
            pass
        conn.close()


def _run_child(conn: socket.socket, fds: list[int], request: dict, threads: int) -> None:
    code = 1
    try:
        _become_job(fds, request, threads)
        _watch_client(conn)
        from noise2map.cli import main

        code = _exit_code(main, request["argv"])
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


def _become_job(fds: list[int], request: dict, threads: int) -> None:
    """What this child would be as the job's own process: streams, folder, environment."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdout.reconfigure(line_buffering=os.isatty(1))  # as a fresh interpreter buffers the job's stdout
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = [request["argv0"], *request["argv"]]
    tempfile.tempdir = None
    import numpy as np
    import torch

    from noise2map.training.phases import JOB

    JOB.start, JOB.marks = float(request["start"]), []
    torch.set_num_threads(_job_threads(request["env"], threads))
    torch.random.default_generator.manual_seed(torch.initial_seed())  # a fresh process's state
    np.random.seed()


def _job_threads(env: dict, default: int) -> int:
    try:
        return max(1, int(env.get("OMP_NUM_THREADS", "")))
    except ValueError:
        return default


def _watch_client(conn: socket.socket) -> None:
    """If the job's client goes before this child (``kill -9`` of the job or of Snakemake's
    process group), the child dies the same death at once: a job Snakemake counts gone must
    not go on writing its run folder. (A signal the client receives is forwarded instead.)"""
    import threading

    def watch():
        try:
            while conn.recv(1):
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True, name="warm-start-client-watch").start()


def _exit_code(main, argv: list[str]) -> int:
    try:
        result = main(argv)
    except SystemExit as stop:
        result = stop.code
    except KeyboardInterrupt:  # as a fresh interpreter ends on Ctrl-C: the traceback, then the signal
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        return 130
    except BaseException:  # noqa: BLE001 -- any escape ends the job as an uncaught one ends python: traceback, 1
        import traceback

        traceback.print_exc()
        return 1
    if result is None:
        return 0
    if isinstance(result, int):
        return result
    print(result, file=sys.stderr)
    return 1


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2])
