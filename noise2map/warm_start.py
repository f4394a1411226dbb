"""Warm job start: one process holds the heavy imports, and each local job forks from it.

A demo job trains for seconds after about 4 s of imports (Lightning alone pulls torchmetrics,
torchvision, scipy.signal and ``torch._dynamo``). Under a local Snakemake run with
``warm_start: true``, ``onstart`` starts a *warm server* that imports the suite's libraries
once; each job's ``noise2map ...`` (a light client, :mod:`noise2map.warm_client`: the CLI
module imports no torch) connects to it and hands over its argument list, working folder,
environment and standard streams. The server forks a child that runs the command exactly as
the job's own process would, and relays the child's exit status; the client forwards the
signals it gets (Snakemake's kill, Ctrl-C) to the child and exits with the child's status.
Snakemake still sees one process per (task, data set, model, seed), with its log, exit
status and kill.

What a fresh process would differ in is reset in the child: the file descriptors (only the
job's streams and its connection stay open), the signal handlers, ``__main__`` and
``sys.argv`` (those of ``python -m noise2map.cli``: Lightning relaunches the other ranks of a
multi-device run from them), torch's thread count (from the job's ``OMP_NUM_THREADS``, else
the machine's default; the server itself runs on one thread), the global random states, the
phase clock (it counts from the client's start) and ``tempfile``'s folder. A job whose
environment differs from the server's in anything but the per-job thread and
temporary-folder variables runs in its own process instead, as does a job that would use a
GPU (a forked process cannot use CUDA safely), a launched rank of a multi-device run (its
environment has the rank's variables) and every job when the server cannot be reached: warm
start only ever saves time.
"""

from __future__ import annotations

import importlib
import json
import os
import select
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path

from noise2map.warm_client import GO, LENGTH, REPLY, SOCKET_ENV, installation, pidfd_open, send_signal

# Snakemake sets the first ones per job (threads, resources.tmpdir); the job's shell sets or
# drops the rest (a venv's `activate` exports PS1, which a non-interactive bash unsets). The
# child takes the job's values (torch's threads and tempfile's folder are re-read).
THREAD_ENV = ("OMP_NUM_THREADS", "GOTO_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
TORCH_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # torch's default thread count reads these
PER_JOB_ENV = (*THREAD_ENV, "TMPDIR", "TEMP", "TMP", "TEMPDIR", SOCKET_ENV,
               "SHLVL", "_", "PWD", "OLDPWD", "PS1", "PS2", "PS3", "PS4", "PROMPT_COMMAND")
# What the suite's jobs import; a missing optional one is skipped.
PRELOAD = ("noise2map.cli", "noise2map.training.run", "noise2map.training.multitask", "noise2map.data.prepare",
           "noise2map.reporting.tables", "noise2map.reporting.figures", "baselines", "segmentation_models_pytorch",
           "timm", "diffusers", "rasterio", "pandas", "matplotlib.pyplot")
FOLDER_PREFIX = "noise2map-warm-"
# A socket folder without a pid file is a server that died in its start; one starting now is younger.
STARTING_SECONDS = 600


# -- the workflow's side: start and stop ---------------------------------------------------------

_SERVER = None  # the server start_server started (a subprocess.Popen)


def start_server(log: str | os.PathLike, timeout: float = 30.0) -> str | None:
    """Start a warm server for this workflow run and point the jobs at it (``SOCKET_ENV``).

    The socket is bound before the imports, so a job that comes early waits for them instead
    of doing its own. ``log`` gets a line per job: forked, or run in its own process and
    why. The server stops with :func:`stop_server` or when its parent exits. A server that
    does not start is a warning: every job then runs in its own process. The socket folders
    of servers that were killed are removed first."""
    import subprocess

    global _SERVER
    remove_stale_folders()
    folder = tempfile.mkdtemp(prefix=FOLDER_PREFIX)
    path = os.path.join(folder, "socket")
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    # One thread from the interpreter's start (OpenBLAS and numexpr size their pools at
    # import), but for the two torch reads its default from: _pin_threads pins those.
    env = {k: v for k, v in os.environ.items() if k not in PER_JOB_ENV}
    env.update({k: "1" for k in THREAD_ENV if k not in TORCH_THREAD_ENV})
    proc = subprocess.Popen([sys.executable, "-m", "noise2map.warm_start", path, os.path.abspath(log)], env=env,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            shutil.rmtree(folder, ignore_errors=True)
            print(f"noise2map: warning: the warm server did not start (socket {path}; log {log}): "
                  "each job runs in its own process", file=sys.stderr)
            return None
        time.sleep(0.02)
    _SERVER = proc
    os.environ[SOCKET_ENV] = path
    return path


def stop_server() -> None:
    """Stop the server :func:`start_server` started; in another process, the one whose pid
    file sits beside the socket, if that pid still is that server."""
    global _SERVER
    path = os.environ.pop(SOCKET_ENV, None)
    proc, _SERVER = _SERVER, None
    if not path:
        return
    if proc is not None and proc.args[-2] == path:  # this process's child: its pid is not reused before the wait
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except Exception:  # noqa: BLE001 -- it ends on its own when this process does
            pass
        return
    try:
        pid = int(Path(path).with_suffix(".pid").read_text())
        pidfd = pidfd_open(pid)
    except (OSError, ValueError):
        return
    try:
        if _is_server(pid, os.path.dirname(path)):  # checked after the pidfd: it is the process signalled
            send_signal(pid, pidfd, signal.SIGTERM)
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _is_server(pid: int, folder: str) -> bool:
    """Whether ``pid`` is the warm server of ``folder`` (not a process that got its pid since)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: whether the pid is alive at all
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    return b"noise2map.warm_start" in args and os.path.join(folder, "socket").encode() in args


def remove_stale_folders(root: str | None = None) -> list[str]:
    """Remove the socket folders of warm servers that are gone (killed, so they could not
    remove their own); those of live servers and of servers starting now stay."""
    root = root or tempfile.gettempdir()
    removed = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    for entry in entries:
        try:
            if not entry.name.startswith(FOLDER_PREFIX) or not entry.is_dir(follow_symlinks=False) \
                    or entry.stat(follow_symlinks=False).st_uid != os.getuid():
                continue
            pid_file = Path(entry.path) / "socket.pid"
            if pid_file.exists():
                stale = not _is_server(int(pid_file.read_text()), entry.path)
            else:
                stale = time.time() - entry.stat(follow_symlinks=False).st_mtime > STARTING_SECONDS
        except (OSError, ValueError):
            continue
        if stale:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
    return removed


# -- the server ------------------------------------------------------------------------------

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
    threads = _pin_threads()
    _preload()
    _log(f"warm server {os.getpid()} ready (socket {path}; its torch on 1 thread, a job's default {threads})")
    # set by the imports (rasterio, torch); the pinned thread variables are the server's own
    added = {k: v for k, v in os.environ.items() if k not in env and k not in PER_JOB_ENV}
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
                pid = _accept_job(conn, env, added, threads)
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


def _pin_threads() -> int:
    """Pin the server to one thread (its forks then inherit no thread pool) and return the
    thread count a fresh process of a job without ``OMP_NUM_THREADS`` would get.

    The interpreter starts without ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS``
    (start_server), so torch finds the machine's default; they are set to 1 after, for what
    the server imports next."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    os.environ.update({k: "1" for k in THREAD_ENV})
    return threads


def _preload() -> None:
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    sys.stdout.flush()
    sys.stderr.flush()


def env_difference(server: dict, job: dict, added: dict | None = None) -> list[str]:
    """The variables in which a job's environment differs from the server's, per-job ones
    aside; one the server's imports ``added`` may be absent from the job or hold that value."""
    added = added or {}
    keys = (set(server) | set(job)) - set(PER_JOB_ENV)
    return sorted(k for k in keys if server.get(k) != job.get(k) and not (k in added and job.get(k) in (None, added[k])))


_CUDA: bool | None = None


def _cuda_available() -> bool:
    """torch.cuda.is_available(), asked in a short-lived fork: the server itself must not
    initialise CUDA, or no child of it could use CUDA (nor, safely, ask about it)."""
    global _CUDA
    if _CUDA is None:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                import torch

                os.write(write, b"1" if torch.cuda.is_available() else b"0")
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as answer:
            _CUDA = answer.read(1) == b"1"
        os.waitpid(pid, 0)
    return _CUDA


def gpu_use(argv: list[str], cwd: str, cuda_available=_cuda_available) -> str:
    """Why ``noise2map argv`` (run in ``cwd``) would use a GPU; '' when it would not.

    The accelerator comes from the command's config (``training.accelerator``, over the
    paper preset), a run folder's config.yaml or ``--accelerator`` / ``--device``; ``auto``
    uses a GPU when CUDA is available. Read as YAML only: the server imports no plugin."""
    import contextlib
    import io

    from noise2map.cli import build_parser
    from noise2map.config import PAPER_PRESET, deep_merge, read_yaml

    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            args = build_parser().parse_args(argv)
    except (SystemExit, Exception):  # --help, or a usage error the child prints as the job's own process would
        return ""
    command = getattr(args.func, "__name__", "")

    def config_accelerator(*paths: str) -> str:
        config = read_yaml(PAPER_PRESET)
        for p in paths:
            config = deep_merge(config, read_yaml(Path(cwd, p)))
        return str(config.get("training", {}).get("accelerator", "auto"))

    try:
        if command in ("cmd_train", "cmd_train_multitask", "cmd_pretrain", "cmd_import_released"):
            accelerator = config_accelerator(*([args.config] if args.config else []))
            where = "training.accelerator"
        elif command == "cmd_evaluate":
            accelerator = args.accelerator or str(
                read_yaml(Path(cwd, args.run_dir, "config.yaml")).get("training", {}).get("accelerator", "auto"))
            where = "--accelerator" if args.accelerator else "the run's training.accelerator"
        elif command in ("cmd_bench", "cmd_bench_train", "cmd_bench_infer", "cmd_bench_step"):
            device = args.device or "auto"
            accelerator, where = ("gpu" if device.startswith("cuda") else device), "--device"
        else:
            return ""
    except Exception:  # noqa: BLE001 -- a config it cannot read: the child reports it as the job's process would
        return ""
    if accelerator == "gpu":
        return f"it asks for a GPU, {where} {args.device if where == '--device' else 'gpu'}"
    if accelerator == "auto" and cuda_available():
        return f"it would run on a GPU, {where} auto with CUDA available"
    return ""


def _accept_job(conn: socket.socket, env: dict, added: dict, threads: int) -> int | None:
    try:
        conn.settimeout(30)  # a job that connects and sends nothing must not hold up the others
        message, fds, _, _ = socket.recv_fds(conn, 65536, 3)
        (length,) = LENGTH.unpack(message[:4])
        payload = message[4:]
        while len(payload) < length:
            chunk = conn.recv(length - len(payload))
            if not chunk:
                raise ConnectionError("the job closed the connection")
            payload += chunk
        request = json.loads(payload)
        conn.settimeout(None)
    except (OSError, ValueError, struct.error):
        conn.close()
        return None
    differs = env_difference(env, request["env"], added)
    why = (f"its environment differs in {', '.join(differs)}" if differs else
           f"it runs {request.get('install')}, the server {installation()}" if request.get("install") != installation()
           else "its standard streams did not arrive" if len(fds) != 3 else gpu_use(request["argv"], request["cwd"]))
    if why:
        for fd in fds:
            os.close(fd)
        _log(f"ran in its own process ({why}): {request['argv']}")
        try:
            conn.sendall(REPLY.pack(b"R", 0))
        except OSError:
            pass
        conn.close()
        return None
    pid = os.fork()
    if pid == 0:
        request["env"] = {**added, **request["env"]}
        _run_child(conn, fds, request, threads)  # never returns
    for fd in fds:
        os.close(fd)
    _log(f"forked {pid}: {request['argv']}")
    try:
        pidfd = pidfd_open(pid)  # before any wait: the pid cannot be another's yet
    except ProcessLookupError:
        pidfd = None
    try:
        socket.send_fds(conn, [REPLY.pack(b"P", pid)], [pidfd] if pidfd is not None else [])
    except OSError:  # the job went: its child gets no go-ahead and ends at once
        pass
    finally:
        if pidfd is not None:
            os.close(pidfd)
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
            conn.sendall(REPLY.pack(b"S", -code) if code < 0 else REPLY.pack(b"X", code))
        except OSError:
            pass
        conn.close()


def _run_child(conn: socket.socket, fds: list[int], request: dict, threads: int) -> None:
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        _close_inherited([conn.fileno(), *fds])
        if conn.recv(1) != GO:  # the client is gone, or gave up waiting and runs the job itself
            code = 0
            _log(f"child {os.getpid()} ended unstarted (its client took no reply): {request['argv']}")
            return
        _become_job(fds, request, threads)
        _watch_client(conn)
        from noise2map.cli import main

        code = _exit_code(main, request["argv"])
    except BaseException:  # noqa: BLE001 -- before the job ran: the server's code must not go on in a fork
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


def _close_inherited(keep: list[int]) -> None:
    """Close every file descriptor but the standard streams and ``keep``: the server's
    listening socket and wake-up pipe, and the connections of the jobs running beside."""
    try:
        open_fds = [int(fd) for fd in os.listdir("/proc/self/fd")]  # (the listing's own is closed by now)
    except OSError:  # no /proc: every number up to the limit
        try:
            open_fds = range(os.sysconf("SC_OPEN_MAX"))
        except (OSError, ValueError):
            open_fds = range(1 << 16)
    for fd in open_fds:
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _become_job(fds: list[int], request: dict, threads: int) -> None:
    """What this child would be as the job's own process: streams, folder, environment."""
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
    _as_cli_main(request["argv0"], request["argv"])
    tempfile.tempdir = None
    import numpy as np
    import torch

    from noise2map.training.phases import JOB

    JOB.start, JOB.marks = float(request["start"]), []
    torch.set_num_threads(_job_threads(request["env"], threads))
    torch.random.default_generator.manual_seed(torch.initial_seed())  # a fresh process's state
    np.random.seed()


def _as_cli_main(argv0: str, argv: list[str]) -> None:
    """``__main__`` and ``sys.argv`` as in ``python -m noise2map.cli argv``, not the server's:
    Lightning starts the other ranks of a multi-device run as
    ``python -m <__main__.__spec__.name> <sys.argv[1:]>``."""
    import builtins
    import importlib.util
    import types

    spec = importlib.util.find_spec("noise2map.cli")
    main = types.ModuleType("__main__")
    main.__spec__, main.__loader__, main.__file__ = spec, spec.loader, spec.origin
    main.__package__, main.__builtins__ = "noise2map", builtins
    sys.modules["__main__"] = main  # the server's own __main__ lives on in the frames of this fork
    sys.argv = [argv0, *argv]


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
