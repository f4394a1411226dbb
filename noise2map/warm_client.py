"""Warm start, the job's side: a light client (the standard library only) that has the warm
server (:mod:`noise2map.warm_start`) run its command in a forked child.

``noise2map ...`` with ``NOISE2MAP_WARM_SOCKET`` set (a local Snakemake run with
``warm_start: true``) connects to the server and hands over its argument list, working folder,
environment and standard streams. The server answers with the child's pid (and a pidfd of
it), or refuses the job; the client then gives the go-ahead, forwards the signals it gets to
the child and exits with the child's status. No answer within :data:`REPLY_TIMEOUT` seconds,
a refusal or no server: the job runs in its own process, which is always safe, as a child
only starts on the go-ahead.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys

from noise2map.training.phases import process_start

SOCKET_ENV = "NOISE2MAP_WARM_SOCKET"
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
# The server binds its socket before its imports, so an early job waits for them: the
# timeout is for a server that accepted and hung, not for a slow start.
REPLY_TIMEOUT = 120.0
LENGTH = struct.Struct("!I")  # the request's length, before its JSON
REPLY = struct.Struct("!ci")  # P pid (forked), R 0 (refused), X code (exited), S signal (killed)
GO = b"G"  # the client took the pid: the child may start


def run_warm(argv: list[str]) -> int | None:
    """Run ``noise2map argv`` in a child of the warm server; None when the job is to run in
    its own process (no server, a refusal, or no answer in time)."""
    path = os.environ.get(SOCKET_ENV)
    if not path:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(REPLY_TIMEOUT)
    try:
        sock.connect(path)
        request = json.dumps({"argv": argv, "argv0": sys.argv[0], "cwd": os.getcwd(), "env": dict(os.environ),
                              "start": process_start(), "install": installation()}).encode()
        socket.send_fds(sock, [LENGTH.pack(len(request)) + request], [0, 1, 2])
        kind, pid, pidfd = read_reply(sock, with_fd=True)
        if kind == "P":
            sock.sendall(GO)
    except TimeoutError:
        sock.close()
        print(f"noise2map: the warm server (socket {path}) gave no answer in {REPLY_TIMEOUT:g} s: "
              "this job runs in its own process", file=sys.stderr)
        return None
    except OSError:  # no server there (gone, or never started): a job on its own
        sock.close()
        return None
    if kind != "P":  # refused: the server's log says why
        sock.close()
        return None
    sock.settimeout(None)
    return _wait_for_child(sock, pid, pidfd)


def _wait_for_child(sock: socket.socket, pid: int, pidfd: int | None) -> int:
    def forward(sig, _frame):
        send_signal(pid, pidfd, sig)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED_SIGNALS}
    try:
        kind, value, _ = read_reply(sock)
    except OSError:  # the server went first: the job's process goes too, as a failed job
        forward(signal.SIGTERM, None)
        print(f"noise2map: the warm server ended while job process {pid} ran; it was stopped", file=sys.stderr)
        kind, value = "X", 1
    finally:
        sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if pidfd is not None:
            os.close(pidfd)
    if kind == "S":  # the child died of a signal: so does this process, for the same status
        signal.signal(value, signal.SIG_DFL)
        os.kill(os.getpid(), value)
        return 128 + value
    return value


def read_reply(sock: socket.socket, with_fd: bool = False) -> tuple[str, int, int | None]:
    """One reply: its kind, its number and the file descriptor sent with it (a pidfd)."""
    if with_fd:
        data, fds, _, _ = socket.recv_fds(sock, REPLY.size, 1)
    else:
        data, fds = sock.recv(REPLY.size), []
    while data and len(data) < REPLY.size:
        chunk = sock.recv(REPLY.size - len(data))
        if not chunk:
            break
        data += chunk
    if len(data) < REPLY.size:
        for fd in fds:
            os.close(fd)
        raise ConnectionError("the warm server closed the connection")
    kind, value = REPLY.unpack(data)
    return kind.decode(), value, (fds[0] if fds else None)


def pidfd_open(pid: int) -> int | None:
    """A pidfd of ``pid`` (Linux 5.3, Python 3.9), None where there are none. A process that is
    gone raises ProcessLookupError: it must not be signalled by its pid."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, NotImplementedError):
        return None
    except ProcessLookupError:
        raise
    except OSError:  # ENOSYS (an older kernel), EPERM (a sandbox)
        return None


def send_signal(pid: int, pidfd: int | None, sig: int) -> None:
    """``sig`` to the process; by its pidfd where there is one, as a pid may since be
    another process's."""
    try:
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def installation() -> list[str]:
    """The Python environment and the noise2map package a process runs: a job run by another
    venv's ``noise2map`` than the server's must not get the server's code."""
    import noise2map

    return [sys.prefix, os.path.dirname(os.path.abspath(noise2map.__file__))]
