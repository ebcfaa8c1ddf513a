"""Artifact paths cannot escape the root: symlinked artifacts, stage directories and lock files are refused."""

from __future__ import annotations

import os

import pytest

from builder import launcher_env
from builder.errors import UsageError
from builder.workspace import STAMP, Workspace, write_json_atomic


def test_symlinked_artifact_dir_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "art").symlink_to(outside)
    with pytest.raises(UsageError, match="would escape the artifact root"):
        Workspace(tmp_path / "root", "art")
    (tmp_path / "root" / "other").mkdir()
    (tmp_path / "root" / "alias").symlink_to(tmp_path / "root" / "other")
    with pytest.raises(UsageError, match=r"alias is a symbolic link \(to .*other\): trtq writes artifacts only"):
        Workspace(tmp_path / "root", "alias")


def test_a_symlinked_root_is_fine(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "root").symlink_to(tmp_path / "real")
    with Workspace(tmp_path / "root", "art").lock():
        pass
    assert (tmp_path / "real" / "art" / ".lock").is_file()


def test_symlinked_stage_dir_is_refused_not_reused(tmp_path):
    evil = tmp_path / "evil"
    evil.mkdir()
    write_json_atomic(evil / STAMP, {"stage": "checkpoint", "fingerprint": "forged"})
    ws = Workspace(tmp_path / "root", "art")
    ws.dir.mkdir(parents=True)
    (ws.dir / "checkpoint").symlink_to(evil)
    with pytest.raises(UsageError, match=r"checkpoint is a symbolic link \(to .*evil\)"), ws.lock():
        pass
    assert (evil / STAMP).is_file(), "nothing outside the root was touched"


def test_symlinked_lock_file_is_never_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    ws = Workspace(tmp_path / "root", "art")
    ws.dir.mkdir(parents=True)
    (ws.dir / ".lock").symlink_to(victim)
    with pytest.raises(UsageError, match=r"\.lock is a symbolic link"), ws.lock():
        pass
    assert victim.read_text() == "precious"


def test_leftover_symlinks_are_unlinked_not_followed(tmp_path):
    target = tmp_path / "keep"
    target.mkdir()
    (target / "data").write_text("x")
    ws = Workspace(tmp_path / "root", "art")
    ws.dir.mkdir(parents=True)
    (ws.dir / ".tmp-checkpoint-1").symlink_to(target)
    with ws.lock():
        assert not os.path.lexists(ws.dir / ".tmp-checkpoint-1")
    assert (target / "data").read_text() == "x"


def test_launcher_variables_are_dropped_and_multi_rank_refused():
    env = {"SLURM_JOB_ID": "1", "PMIX_SERVER_URI2": "x", "OMPI_MCA_plm": "keep?", "OMPI_COMM_WORLD_SIZE": "1",
           "RANK": "0", "HF_TOKEN": "t", "CUDA_VISIBLE_DEVICES": "0", "SLURM_NTASKS": "8"}  # fmt: skip
    removed = launcher_env.single_process(env)
    assert removed == ["OMPI_COMM_WORLD_SIZE", "PMIX_SERVER_URI2", "RANK", "SLURM_JOB_ID", "SLURM_NTASKS"]
    assert env == {"OMPI_MCA_plm": "keep?", "HF_TOKEN": "t", "CUDA_VISIBLE_DEVICES": "0"}
    assert launcher_env.world_size({"SLURM_NTASKS": "8"}) == (1, None), "an allocation is not a launch"
    assert launcher_env.world_size({"SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "4"}) == (4, "SLURM_STEP_NUM_TASKS")
    with pytest.raises(UsageError, match="OMPI_COMM_WORLD_SIZE=2 says it was started as one of 2 ranks"):
        launcher_env.single_process({"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1"})


def test_workspace_manifest_name_is_the_runtime_one():
    from builder.workspace import MANIFEST
    from runtime.manifest import FILENAME

    assert MANIFEST == FILENAME


def test_stale_gguf_conversions_of_dead_builds_are_removed(tmp_path):
    import subprocess
    import sys

    from builder.model.source import _remove_stale_conversions

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dest = tmp_path / "gguf" / "m-123"
    (tmp_path / "gguf" / f".tmp-m-123-{dead.stdout.strip()}").mkdir(parents=True)
    (tmp_path / "gguf" / f".tmp-m-123-{os.getpid()}").mkdir()
    _remove_stale_conversions(dest)
    assert [p.name for p in (tmp_path / "gguf").iterdir()] == [f".tmp-m-123-{os.getpid()}"]
