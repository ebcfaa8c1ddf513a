"""World detection, launch checks and backend selection: no torch needed."""

from __future__ import annotations

import pytest

from runtime.errors import BackendUnavailable, LaunchError
from runtime.mpi import check_world, world_from_env
from runtime.select import checkpoint_dir, resolve_backend


def test_single_process_by_default():
    w = world_from_env({})
    assert (w.rank, w.size, w.launcher) == (0, 1, None)


def test_openmpi_world():
    w = world_from_env({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "4"})
    assert (w.rank, w.size, w.launcher) == (1, 4, "OMPI_COMM_WORLD_RANK")


def test_leaked_slurm_and_half_pmi_do_not_make_a_world():
    # srun allocations and stray PMI variables without their pair must not make a single run wait for peers
    env = {"SLURM_PROCID": "0", "SLURM_NTASKS": "8", "PMI_SIZE": "8", "SLURM_JOB_ID": "42"}
    assert world_from_env(env).size == 1


def test_size_one_world_is_single():
    assert world_from_env({"PMI_RANK": "0", "PMI_SIZE": "1"}).launcher is None


def test_broken_rank_is_refused():
    with pytest.raises(LaunchError, match="outside"):
        world_from_env({"OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_SIZE": "2"})


def test_plain_run_on_split_checkpoint_says_how_to_launch():
    with pytest.raises(LaunchError, match=r"mpirun -n 4 trtq run"):
        check_world(world_from_env({}), 4, "checkpoint x")


def test_wrong_world_size_fails_with_the_needed_size():
    w = world_from_env({"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "3"})
    with pytest.raises(LaunchError, match="needs exactly 2 ranks.*has 3"):
        check_world(w, 2, "checkpoint x")
    check_world(world_from_env({}), 1, "checkpoint x")  # matching: no error


def test_backend_selection(tmp_path):
    art = tmp_path / "a"
    (art / "checkpoint").mkdir(parents=True)
    (art / "checkpoint" / "config.json").write_text("{}")
    assert resolve_backend(art) == "reference"
    assert checkpoint_dir(art) == art / "checkpoint"
    (art / "engine").mkdir()
    assert resolve_backend(art) == "engine"
    assert resolve_backend(art, "reference") == "reference"
    only_hf = tmp_path / "b"
    (only_hf / "hf").mkdir(parents=True)
    assert resolve_backend(only_hf) == "pytorch"
    with pytest.raises(BackendUnavailable, match="nothing to run"):
        resolve_backend(tmp_path / "empty")


def test_bare_checkpoint_dir_is_its_own_checkpoint(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "rank0.safetensors").write_bytes(b"")
    assert checkpoint_dir(tmp_path) == tmp_path
    assert resolve_backend(tmp_path) == "reference"


def test_missing_runner_module_is_a_clear_error(tmp_path, monkeypatch):
    import runtime.select as sel

    (tmp_path / "engine").mkdir()
    monkeypatch.setattr(sel, "_lazy", sel._lazy)  # real import path
    try:
        import runtime.runners.engine  # noqa: F401
    except ModuleNotFoundError:
        with pytest.raises(BackendUnavailable, match="no runtime.runners.engine module"):
            sel.open_runner(tmp_path, "engine")
    else:
        pytest.skip("runtime.runners.engine exists in this checkout: the missing-module path cannot be exercised")
