"""The whole path on a real trtq build: build -> publish (CLI) -> pull (CLI) -> sha256 equal -> trtq run.

Runs the real `trtq` command in subprocesses against real servers on 127.0.0.1 (moto S3, docker-registry) and a
plain directory. Secrets in the environment (HF_TOKEN, AWS_SECRET_ACCESS_KEY) are canaries: they must not appear
in any output, manifest or published byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests._publish import moto_s3, registry, tree_hashes

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HF_CANARY = "hf_CANARY0token0value0should0never0appear"
AWS_CANARY = "CANARYawsSECRETvalue0should0never0appear"


def trtq(*args, env=None, check=True) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    p = subprocess.run(
        [sys.executable, "-m", "builder.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=300,
    )
    if check and p.returncode != 0:
        raise AssertionError(f"trtq {' '.join(map(str, args))} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("modelopt")
    from tests._tiny import make_model

    work = tmp_path_factory.mktemp("roundtrip")
    make_model(work / "tiny", "llama")
    recipe = work / "tiny.yaml"
    recipe.write_text(
        f"name: tiny-fp16\nmodel: {{path: {work / 'tiny'}}}\nquantization: {{format: fp16}}\ntargets: [checkpoint]\n"
    )
    p = trtq(
        "build",
        recipe,
        "--root",
        work / "engines",
        "-v",
        env={"HF_TOKEN": HF_CANARY, "AWS_SECRET_ACCESS_KEY": AWS_CANARY},
    )
    assert HF_CANARY not in p.stdout + p.stderr and AWS_CANARY not in p.stdout + p.stderr
    art = work / "engines" / "tiny-fp16"
    assert json.loads((art / "manifest.json").read_text())["status"] == "complete"
    return art


def deliverables(art: Path) -> dict[str, str]:
    manifest = json.loads((art / "manifest.json").read_text())
    return {
        **{f["path"]: f["sha256"] for f in manifest["files"]},
        "manifest.json": hashlib.sha256((art / "manifest.json").read_bytes()).hexdigest(),
    }


def no_canary(*texts: str) -> None:
    for t in texts:
        assert HF_CANARY not in t and AWS_CANARY not in t


def has_run() -> bool:
    from builder.cli import COMMANDS

    return "run" in COMMANDS


def run_pulled(pulled: Path, env) -> None:
    p = trtq("run", pulled, "The capital of France is", "--max-new-tokens", "4", env=env)
    assert p.stdout.strip(), p.stderr  # the tiny random model says something; that it loads and generates is the point
    no_canary(p.stdout, p.stderr)


def check_pulled(art: Path, pulled: Path, env, run: bool) -> None:
    assert tree_hashes(pulled) == deliverables(art)  # every file, byte for byte, and nothing else
    if not run:
        return
    if has_run():
        run_pulled(pulled, env)
    else:
        print("the `trtq run` step of this round trip is left out: no `run` command in this checkout yet")


def round_trip(art: Path, url: str, dest: Path, env: dict, run: bool = False) -> None:
    env = {"HF_TOKEN": HF_CANARY, **env}
    pub = trtq("publish", art, "--to", url, "--json", "-v", env=env)
    summary = json.loads(pub.stdout)
    assert summary["files"] == len(deliverables(art)) and summary["uploaded"] == summary["files"]
    got = trtq("pull", url, dest, "--json", "-v", env=env)
    pulled = json.loads(got.stdout)
    assert pulled["verified"] == "sha256" and pulled["dest"] == str(dest)
    no_canary(pub.stdout, pub.stderr, got.stdout, got.stderr, (dest / "manifest.json").read_text())
    check_pulled(art, dest, env, run)


def test_file_round_trip(built, tmp_path):
    round_trip(built, f"file://{tmp_path}/store", tmp_path / "pulled", {"AWS_SECRET_ACCESS_KEY": AWS_CANARY})
    for p in (tmp_path / "store").rglob("*"):
        if p.is_file():
            no_canary(p.read_bytes().decode("latin-1"))


@pytest.mark.s3
def test_s3_round_trip(built, tmp_path, monkeypatch):
    bucket = f"rt-{uuid.uuid4().hex[:8]}"
    with moto_s3(monkeypatch, bucket):
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_CANARY)  # moto accepts any secret: a canary is a fine one
        round_trip(built, f"s3://{bucket}/trtq/tiny-fp16", tmp_path / "pulled", {}, run=True)
        import boto3

        s3 = boto3.client("s3")
        for obj in s3.list_objects_v2(Bucket=bucket)["Contents"]:
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            no_canary(body.decode("latin-1"), json.dumps(s3.head_object(Bucket=bucket, Key=obj["Key"])["Metadata"]))


@pytest.mark.oci
def test_oci_round_trip(built, tmp_path):
    work = tmp_path / "registry"
    work.mkdir()
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker/config.json").write_text("{}")
    with registry(work) as reg:
        env = {"DOCKER_CONFIG": str(tmp_path / "docker"), "AWS_SECRET_ACCESS_KEY": AWS_CANARY}
        round_trip(built, f"oci://{reg.host}/trtq/tiny-fp16:fp16", tmp_path / "pulled", env)
        for p in reg.storage.rglob("*"):
            if p.is_file():
                no_canary(p.read_bytes().decode("latin-1"))


def test_trtq_run_on_a_pulled_artifact(built, tmp_path):
    if not has_run():
        pytest.skip("no `run` command in builder/cli COMMANDS yet (the CPU reference runner, runtime/select.py)")
    trtq("publish", built, "--to", f"file://{tmp_path}/store")
    trtq("pull", f"file://{tmp_path}/store", tmp_path / "pulled")
    run_pulled(tmp_path / "pulled", {})


def test_show_prints_the_compatibility_facts(built):
    p = trtq("show", built)
    # fp16 runs on compute capability 8.0+ (the format table)
    assert "requires   GPU compute capability >= 8.0, 1 GPU (tp x pp), TensorRT-LLM to build engines" in p.stdout
    shown = json.loads(trtq("show", built, "--json").stdout)
    assert "cuda" in shown["versions"] and shown["status"] == "complete"
