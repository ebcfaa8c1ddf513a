"""Helpers for the publish/pull tests: hand-made artifacts (no torch) and real servers on 127.0.0.1.

Servers, each started by the test that needs it on a free port and torn down after it:
- S3: moto's ThreadedMotoServer (`pip install "moto[server]" "s3fs>=2025" boto3`), in this process so that its
  objects survive a stop/start (the "server dies mid-upload" test restarts it). S3_UPLOAD_PART_MIN_SIZE is lowered
  to 1 KiB before moto is imported so multipart uploads can be tested with small files.
- OCI: Debian's `docker-registry` binary (`apt-get install docker-registry`), `docker-registry serve CONFIG` with a
  temporary storage directory and plain HTTP on 127.0.0.1 (kept across a restart: the blobs are on disk).
Tests skip, with the reason, when a server or client package is missing.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

os.environ.setdefault("S3_UPLOAD_PART_MIN_SIZE", "1024")  # moto reads it at import

DEFAULT_FILES = {
    "checkpoint/config.json": b'{"architecture": "LlamaForCausalLM", "mapping": {"world_size": 1}}\n',
    "checkpoint/rank0.safetensors": bytes(range(256)) * 700,  # 179 KB: big enough for multipart with 64 KiB parts
    "checkpoint/tokenizer.json": b'{"model": {"type": "BPE"}}\n',
}


def make_artifact(
    dest: Path,
    files: dict[str, bytes] | None = None,
    *,
    name: str = "tiny-fp16",
    status: str = "complete",
    fmt: str = "fp16",
    hardware: dict | None = None,
    tp: int = 1,
    pp: int = 1,
    verify: dict | None = None,
    source: dict | None = None,
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Write an artifact directory with ``files`` (plus unlisted caches and stamps) and a valid manifest.json."""
    files = dict(DEFAULT_FILES if files is None else files)
    dest.mkdir(parents=True, exist_ok=True)
    rows = []
    for rel, data in sorted(files.items()):
        p = dest / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        rows.append({"path": rel, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    # What a real build leaves next to the deliverables, which must never be published.
    for rel, data in {
        "resolve/source.json": b"{}",
        "checkpoint/.stage.json": b"{}",
        ".lock": b"pid 1",
        **(extra_files or {}),
    }.items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_bytes(data)
    manifest = {
        "schema_version": 1,
        "name": name,
        "status": status,
        "created": _dt.datetime(2026, 11, 1, tzinfo=_dt.timezone.utc).isoformat(),
        "trtq_version": "0.1.0",
        "recipe": {"name": name, "quantization": {"format": fmt, "kv_cache": "none"}},
        "source": source or {"kind": "hub", "hub": "HuggingFaceTB/SmolLM2-135M-Instruct", "commit": "a" * 40},
        "quantization": {
            "format": fmt,
            "quant_algo": None if fmt in ("fp16", "bf16") else fmt.upper(),
            "kv_cache_quant_algo": None,
        },
        "parallel": {"tp": tp, "pp": pp, "world_size": tp * pp},
        "stages": {"checkpoint": {"fingerprint": "0123456789abcdef", "seconds": 1.0, "reused": False}},
        "versions": {
            "torch": "2.13.0",
            "transformers": "5.14.1",
            "nvidia-modelopt": "0.47.0",
            "tensorrt-llm": None,
            "cuda": None,
        },
        "hardware": hardware or {},
        "files": rows,
        "verify": verify,
    }
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return dest


def tree_hashes(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """rel path -> sha256 of every regular file under ``root``."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and not any(rel == s or rel.startswith(s + "/") for s in skip):
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_module(name: str, install: str) -> None:
    if importlib.util.find_spec(name) is None:
        pytest.skip(f"{name} is not installed ({install})")


# ------------------------------------------------------------------------------------------------- S3 (moto)
class MotoS3:
    """moto's S3 server on 127.0.0.1:port, in this process; stop() kills the endpoint, start() brings it back."""

    def __init__(self) -> None:
        require_module("moto", 'pip install "moto[server]" "s3fs>=2025" boto3')
        require_module("boto3", "pip install boto3")
        from moto.server import ThreadedMotoServer

        self._cls = ThreadedMotoServer
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = None

    def start(self) -> None:
        self.server = self._cls(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return
            time.sleep(0.05)
        raise RuntimeError("moto server did not start")

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@contextlib.contextmanager
def moto_s3(monkeypatch, bucket: str = "models"):
    """A running moto S3 server with ``bucket``, and the AWS_* environment pointing boto3 at it.

    moto keeps its objects per process, so each test names its own bucket.
    """
    srv = MotoS3()
    env = {
        "AWS_ENDPOINT_URL_S3": srv.url,  # the port is chosen before the server starts
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_MAX_ATTEMPTS": "1",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    try:
        srv.start()
        import boto3

        boto3.client("s3").create_bucket(Bucket=bucket)
        yield srv
    finally:
        srv.stop()


# ------------------------------------------------------------------------------------------------- OCI registry
class Registry:
    """Debian's docker-registry on 127.0.0.1:port with its blobs in ``storage`` (survives stop/start)."""

    def __init__(self, workdir: Path, htpasswd: tuple[str, str] | None = None) -> None:
        exe = shutil.which("docker-registry")
        if exe is None:
            pytest.skip("docker-registry is not installed (apt-get install -y docker-registry)")
        require_module("oras", "pip install oras")
        self.exe = exe
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.storage = workdir / "storage"
        self.config = workdir / "config.yml"
        auth = ""
        if htpasswd is not None:
            (workdir / "htpasswd").write_text(f"{htpasswd[0]}:{_bcrypt(htpasswd[1])}\n")
            auth = f"auth: {{htpasswd: {{realm: trtq-test, path: {workdir / 'htpasswd'}}}}}\n"
        self.config.write_text(
            "version: 0.1\n"
            "log: {level: error, accesslog: {disabled: true}}\n"
            f"storage: {{filesystem: {{rootdirectory: {self.storage}}}, delete: {{enabled: true}}}}\n"
            f"http: {{addr: '{self.host}'}}\n" + auth
        )
        self.log = workdir / "registry.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self._log = open(self.log, "ab")  # noqa: SIM115 (the server writes to it until kill())
        self.proc = subprocess.Popen([self.exe, "serve", str(self.config)], stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=0.5) as r:
                    if r.status == 200:
                        return
            except urllib.error.HTTPError as e:
                if e.code == 401:  # up, and asking for a login
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("docker-registry did not answer on /v2/ within 15 s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None

    def blob_path(self, digest: str) -> Path:
        hexd = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"


def _bcrypt(password: str) -> str:
    """A bcrypt hash for the registry's htpasswd file, from the C library's crypt (Python <= 3.12)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt
        except ImportError:
            pytest.skip("no bcrypt available to write an htpasswd file (Python's crypt module is gone in 3.13)")
    hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))
    if not hashed or not hashed.startswith("$2"):
        pytest.skip("this C library's crypt() has no bcrypt")
    return hashed


@contextlib.contextmanager
def registry(workdir: Path, htpasswd: tuple[str, str] | None = None):
    reg = Registry(workdir, htpasswd)
    try:
        reg.start()
        yield reg
    finally:
        reg.kill()


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Run the real `trtq` entry point in this process (exit code mapping included); return (code, stdout, stderr)."""
    import sys

    from builder.cli import main

    old = sys.argv
    sys.argv = ["trtq", *map(str, args)]
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = old
    out = capsys.readouterr()
    return code, out.out, out.err
