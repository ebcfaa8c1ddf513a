"""Two `trtq build` processes on one artifact: the second refuses (or waits with --wait); writes never interleave."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from _harness import REPO, assert_nothing_partial, deliverables

pytestmark = pytest.mark.integration


def start(*args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "builder.cli", *map(str, args)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_second_build_refuses_or_waits_and_nothing_interleaves(tmp_path, tiny):
    recipe = tmp_path / "r.yaml"
    body = {"name": "art", "model": {"path": str(tiny)}, "quantization": {"format": "fp16"}, "targets": ["checkpoint"]}
    recipe.write_text(json.dumps(body))
    root = tmp_path / "engines"
    art = root / "art"

    first = start("build", recipe, "--root", root)
    deadline = time.monotonic() + 60
    while not (art / ".lock").exists() or (art / ".lock").read_text() != f"pid {first.pid}":
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the first build never took the lock"
        time.sleep(0.05)

    waiter = start("build", recipe, "--root", root, "--wait")
    refused = subprocess.run(
        [sys.executable, "-m", "builder.cli", "build", recipe, "--root", root],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert first.poll() is None, "the first build was still running while the second was refused"
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1] == (
        f"error: {art} is being built by pid {first.pid}: wait for it to finish (or pass --wait to queue)"
    )
    assert "Traceback" not in refused.stderr

    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert "ran resolve, checkpoint" in out
    w_out, w_err = waiter.communicate(timeout=300)
    assert waiter.returncode == 0, w_err
    assert "up to date, nothing to do" in w_out, "the waiting build found the first one's complete output"
    assert_nothing_partial(art)
    assert {"checkpoint/config.json", "checkpoint/rank0.safetensors"} <= set(deliverables(art))
