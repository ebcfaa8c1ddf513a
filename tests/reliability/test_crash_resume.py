"""Kill -9 a build at every stage boundary and at random moments inside stages; the resumed build must produce the
same deliverable files (sha256) as an uninterrupted one, and nothing partial may ever look complete."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _harness import REPO, SIGKILL, Zygote, assert_nothing_partial, deliverables, run_trtq

pytestmark = pytest.mark.integration

BOUNDARIES = ("before", "publish", "after")


def write_recipe(dir_: Path, model: Path, fmt: str, **extra) -> Path:
    body = {
        "name": "art",
        "model": {"path": str(model)},
        "quantization": {"format": fmt},
        "calibration": {"samples": 4, "seq_len": 32},
        "parallel": {"tp": extra.pop("tp", 1)},
        "targets": extra.pop("targets", ["checkpoint", "hf"]),
    }
    dir_.mkdir(parents=True, exist_ok=True)
    path = dir_ / f"{fmt}.yaml"
    path.write_text(json.dumps(body))
    return path


def clean_build(zygote: Zygote, recipe: Path, root: Path) -> dict[str, str]:
    r = zygote.run("build", recipe, "--root", root)
    assert r["rc"] == 0, r["log"]
    return deliverables(root / "art")


def kill_at(zygote: Zygote, recipe: Path, root: Path, point: str, *flags) -> list[str]:
    r = zygote.run("build", recipe, "--root", root, *flags, fault=point)
    assert r["signal"] == SIGKILL, f"the build never reached {point}:\n{r['log']}"
    return assert_nothing_partial(root / "art")


def finish(zygote: Zygote, recipe: Path, root: Path) -> tuple[dict[str, str], str]:
    r = zygote.run("build", recipe, "--root", root)
    assert r["rc"] == 0, r["log"]
    assert_nothing_partial(root / "art")
    assert not list((root / "art").glob(".tmp-*")) and not list((root / "art").glob(".old-*"))
    return deliverables(root / "art"), r["log"]


def test_unquantized_build_killed_at_every_stage_boundary_resumes_identically(tmp_path, tiny, zygote):
    recipe = write_recipe(tmp_path, tiny, "fp16", tp=2)
    reference = clean_build(zygote, recipe, tmp_path / "reference")
    assert {"checkpoint/rank0.safetensors", "checkpoint/rank1.safetensors", "hf/model.safetensors"} <= set(reference)

    root = tmp_path / "killed"
    seen = []
    for stage in ("resolve", "checkpoint", "hf"):
        for when in BOUNDARIES:
            complete = kill_at(zygote, recipe, root, f"{stage}:{when}")
            assert (stage in complete) == (when == "after"), f"{stage}:{when} left {complete}"
            assert not (root / "art" / "manifest.json").exists(), "no manifest before the build completed"
            seen.append(complete)
    kill_at(zygote, recipe, root, "manifest:before")
    resumed, log = finish(zygote, recipe, root)
    assert resumed == reference
    assert "up to date" in log or "reused" in log, "the last attempt reused every stage"
    assert seen[-1] == ["checkpoint", "hf", "resolve"]

    # A rebuild (--force) killed while the old checkpoint is moved aside and the new one not yet in place: the old
    # output is gone (never half-replaced), the resumed build re-creates it and the manifest disappears meanwhile.
    complete = kill_at(zygote, recipe, root, "checkpoint:swap", "--force")
    assert "checkpoint" not in complete and list((root / "art").glob(".old-checkpoint-*"))
    assert not (root / "art" / "manifest.json").exists(), "a manifest never outlives the files it lists"
    resumed, log = finish(zygote, recipe, root)
    assert resumed == reference and "checkpoint running" in log


def test_quantized_build_killed_at_boundaries_and_at_random_moments_resumes_identically(tmp_path, tiny, zygote):
    recipe = write_recipe(tmp_path, tiny, "fp8")
    reference = clean_build(zygote, recipe, tmp_path / "reference")
    assert "hf/hf_quant_config.json" in reference

    root = tmp_path / "killed"
    for point in ("quantize:before", "quantize:publish", "quantize:after", "checkpoint:publish", "hf:before"):
        kill_at(zygote, recipe, root, point)
    resumed, _ = finish(zygote, recipe, root)
    assert resumed == reference

    # Random moments: a fresh artifact, killed after seeded random delays (each attempt resumes the last one), until a
    # build completes. The delays fall inside resolve, quantize (calibration), and the exports.
    # The delays are fractions of a timed clean build, so they land inside the build on a fast or a loaded machine.
    clean = zygote.run("build", recipe, "--root", tmp_path / "timing")
    assert clean["rc"] == 0, clean["log"]
    rng = random.Random(20261122)
    root = tmp_path / "random"
    kills = 0
    for _ in range(12):
        r = zygote.run("build", recipe, "--root", root, kill_after=rng.uniform(0.05, 0.5) * clean["seconds"])
        assert_nothing_partial(root / "art")
        if r["signal"] is None:
            assert r["rc"] == 0, r["log"]
            break
        assert r["signal"] == SIGKILL
        kills += 1
    else:
        r = zygote.run("build", recipe, "--root", root)
        assert r["rc"] == 0, r["log"]
    assert kills >= 2, "the random kills landed inside the build"
    assert deliverables(root / "art") == reference


def test_engine_stage_killed_at_its_boundaries_resumes_identically(tmp_path, tiny, zygote):
    """The engine stage, run against the contract tests' stand-in TensorRT-LLM (no GPU here)."""
    recipe = write_recipe(tmp_path, tiny, "fp16", tp=2, targets=["checkpoint", "engine"])
    r = zygote.run("build", recipe, "--root", tmp_path / "reference", standin=True)
    assert r["rc"] == 0, r["log"]
    reference = deliverables(tmp_path / "reference" / "art")
    assert {"engine/rank0.engine", "engine/rank1.engine", "engine/config.json"} <= set(reference)
    root = tmp_path / "killed"
    for point in ("checkpoint:after", "engine:before", "engine:publish", "engine:after"):
        r = zygote.run("build", recipe, "--root", root, fault=point, standin=True)
        assert r["signal"] == SIGKILL, f"the build never reached {point}:\n{r['log']}"
        complete = assert_nothing_partial(root / "art")
        assert ("engine" in complete) == (point == "engine:after")
    r = zygote.run("build", recipe, "--root", root, standin=True)
    assert r["rc"] == 0, r["log"]
    assert "engine     reused" in r["log"]
    assert deliverables(root / "art") == reference


def test_real_trtq_process_killed_inside_calibration_resumes_identically(tmp_path, tiny, zygote):
    """The same with `python -m builder.cli build` itself, killed from outside (kill -9) while it calibrates."""
    recipe = write_recipe(tmp_path, tiny, "int8_sq", targets=["checkpoint"])
    reference = clean_build(zygote, recipe, tmp_path / "reference")
    root = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "builder.cli", "build", str(recipe), "--root", str(root)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    for line in proc.stderr:
        if "quantize" in line and "running" in line:
            time.sleep(1.5)  # well inside the stage: loading the model, calibrating
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=120)
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert assert_nothing_partial(root / "art") == ["resolve"]
    assert list((root / "art").glob(".tmp-quantize-*")), "the kill landed inside the quantize stage"
    r = run_trtq("build", recipe, "--root", root)
    assert r.returncode == 0, r.stderr
    assert "resolve    reused" in r.stderr and "quantize   running" in r.stderr
    assert not list((root / "art").glob(".tmp-*")), "the resumed build cleaned the killed one's leftovers"
    assert deliverables(root / "art") == reference
