"""Shared fixtures: a loopback HTTP server for the download code (never the internet), one thread."""

from __future__ import annotations

import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


@pytest.fixture(autouse=True, scope="session")
def venv_on_path():
    """Snakemake rules call the ``noise2map`` command: the one installed beside this Python."""
    bin_dir = str(Path(sys.executable).parent)
    os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


class FileServer:
    """Serves ``files[path] = bytes`` on 127.0.0.1 with Range support.

    ``cut[path] = n`` makes the next GET of ``path`` announce the full length but close the
    connection after ``n`` bytes (a dropped connection), once.
    """

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.headers: dict[str, dict[str, str]] = {}  # extra response headers per path
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                path = self.path.lstrip("/")
                server.requests.append((path, self.headers.get("Range")))
                if path not in server.files:
                    self.send_error(404)
                    return
                body, start = server.files[path], 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                for name, value in server.headers.get(path, {}).items():
                    self.send_header(name, value)
                self.end_headers()
                if path in server.cut:
                    self.wfile.write(body[start:start + server.cut.pop(path)])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny CPU models: one intra-op thread is as fast as two, and far faster on a busy 2-core
    machine where two threads wait on each other."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def adam_losses():
    """``losses(model, inputs, target, steps=15, lr=3e-3)``: cross-entropy per Adam step on one
    fixed batch, for the "the loss decreases" test of each model."""
    import torch
    from torch.nn import functional as F

    def losses(model, inputs, target, steps: int = 15, lr: float = 3e-3) -> list[float]:
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        out = []
        for _ in range(steps):
            opt.zero_grad()
            loss = F.cross_entropy(model(*inputs), target)
            loss.backward()
            opt.step()
            out.append(loss.item())
        return out

    return losses


@pytest.fixture
def file_server():
    with FileServer() as server:
        yield server


def kill_once_written(proc, path: Path, group: bool = False, timeout: float = 600) -> None:
    """SIGKILL ``proc`` (its whole process group with ``group``) the moment ``path`` exists;
    fails if the process ends first."""
    import signal
    import time

    deadline = time.time() + timeout
    while not path.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, f"the process ended before it could be killed: {proc.communicate()[1][-3000:]}"
    if group:
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def whu_cd_demo_store(root):
    """The demo config pointed at ``root``, with a prepared synthetic WHU-CD store in it."""
    from noise2map.config import load_config, prepared_dir
    from noise2map.data import generate, prepare

    config = load_config(Path(__file__).resolve().parent.parent / "workflow/config/demo.yaml")
    config.update(data_dir=str(root / "data"), results_dir=str(root / "results"), datasets=["whu"])
    generate("whu-cd", root / "data" / "raw", seed=0)
    prepare("whu-cd", root / "data" / "raw", prepared_dir(config, "whu", "cd"), config["tile_size"])
    return config
