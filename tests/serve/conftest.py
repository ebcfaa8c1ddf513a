"""Fixtures for the serving tests: tiny checkpoints, and `trtq serve` as a subprocess on a free loopback port."""

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

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """tp -> a tiny Llama fp16 TensorRT-LLM checkpoint (with its tokenizer and chat template), tp 1 and 2."""
    pytest.importorskip("torch")
    pytest.importorskip("modelopt.torch.quantization")
    from tests._build import build_artifact
    from tests._tiny import make_model

    base = tmp_path_factory.mktemp("serve-ckpt")
    hf = make_model(base / "hf", "llama")
    return {tp: build_artifact(hf, base / "engines", f"tp{tp}", "fp16", tp=tp) / "checkpoint" for tp in (1, 2)}


class Server:
    """A running `trtq serve`: its base URL, process, and the log it wrote so far."""

    def __init__(self, proc: subprocess.Popen, url: str, log: Path, artifact: Path):
        self.proc, self.url, self.log, self.artifact = proc, url, log, artifact
        # rank 0 wrote the record before it started listening; under mpirun proc is mpirun, not rank 0
        self.rank0_pid = int(self.record()["pid"])

    @property
    def base(self) -> str:
        return self.url + "/v1"

    def record(self) -> dict:
        return json.loads((self.artifact / "serve" / "serve.json").read_text())

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM rank 0 (the process that wrote the record), then wait for the launcher to exit."""
        if self.proc.poll() is None:
            try:
                os.kill(self.rank0_pid, signal.SIGTERM)
            except OSError:
                self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(artifact: Path, tmp_path: Path, *args: str, timeout: float = 180, env=None) -> Server:
    port = free_port()
    log = tmp_path / f"serve-{port}.log"
    full_env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "builder.cli", "serve", str(artifact), "--port", str(port), *args],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=full_env,
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"trtq serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return Server(proc, url, log, artifact)
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise AssertionError(f"trtq serve did not become healthy in {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def serve(tmp_path):
    """serve(artifact, *args) -> Server; every server started is stopped (SIGTERM) at the end of the test."""
    started: list[Server] = []

    def start(artifact: Path, *args: str, **kw) -> Server:
        s = start_server(artifact, tmp_path, *args, **kw)
        started.append(s)
        return s

    yield start
    for s in started:
        s.terminate()
