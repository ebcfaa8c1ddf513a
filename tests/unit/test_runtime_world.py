"""World detection per launcher, launch checks and backend selection: no torch needed.

The launcher environments below are what each launcher exports to a task, read from its source: OpenMPI 5's prterun
(OMPI_COMM_WORLD_* and its PMIx client variables), Slurm's srun (src/common/env.c: env_array_for_step, setup_env) with
--mpi=pmix (openpmix PMIx_server_setup_fork: PMIX_NAMESPACE, PMIX_RANK, no size), --mpi=pmi2
(src/plugins/mpi/pmi2/mpi_pmi2.c: PMI_FD, PMI_JOBID, PMI_RANK, PMI_SIZE) and without an MPI plugin, torchrun, and the
shells where those variables leak: an salloc allocation and an sbatch script before srun.
"""

from __future__ import annotations

import pytest

from builder.errors import UsageError
from builder.launcher_env import single_process
from runtime.errors import BackendUnavailable, LaunchError
from runtime.mpi import World, check_world, srun_step, world_from_env
from runtime.select import Host, checkpoint_dir, choose_backend, engine_dir, resolve_backend


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


# ---------------------------------------------------------------------------------------------- launchers
ALLOCATION = {  # salloc's shell, or an sbatch script before its srun: an allocation, not a launch
    "SLURM_JOB_ID": "4242",
    "SLURM_JOBID": "4242",
    "SLURM_NTASKS": "16",
    "SLURM_NPROCS": "16",
    "SLURM_NNODES": "2",
    "SLURM_JOB_NUM_NODES": "2",
    "SLURM_NODELIST": "gpu[001-002]",
    "SLURM_JOB_NODELIST": "gpu[001-002]",
    "SLURM_TASKS_PER_NODE": "8(x2)",
}
STEP = {  # what srun adds for task 11 of a 2 x 8 task job step (node 1, local task 3)
    **ALLOCATION,
    "SLURM_STEP_ID": "0",
    "SLURM_STEPID": "0",
    "SLURM_STEP_NUM_TASKS": "16",
    "SLURM_STEP_NUM_NODES": "2",
    "SLURM_STEP_NODELIST": "gpu[001-002]",
    "SLURM_STEP_TASKS_PER_NODE": "8(x2)",
    "SLURM_STEP_LAUNCHER_PORT": "40123",
    "SLURM_SRUN_COMM_PORT": "40123",
    "SLURM_PROCID": "11",
    "SLURM_LOCALID": "3",
    "SLURM_NODEID": "1",
    "SLURM_TASK_PID": "31337",
}
PMIX = {  # --mpi=pmix: PMIx_server_setup_fork's variables (no PMIX_SIZE) and Slurm's process mapping
    "PMIX_NAMESPACE": "slurm.pmix.4242.0",
    "PMIX_RANK": "11",
    "PMIX_SERVER_URI41": "pmix-server.812;tcp4://10.0.0.2:37301",
    "PMIX_SERVER_URI2": "pmix-server.812;tcp4://10.0.0.2:37301",
    "PMIX_SECURITY_MODE": "native",
    "PMIX_GDS_MODULE": "hash",
    "PMIX_HOSTNAME": "gpu002",
    "PMIX_VERSION": "5.0.3",
    "SLURM_PMIX_MAPPING_SERV": "(vector,(0,2,8))",
}
PMI2 = {"PMI_FD": "7", "PMI_JOBID": "4242.0", "PMI_RANK": "11", "PMI_SIZE": "16"}
LAUNCHES = {
    "mpirun (OpenMPI)": (
        {
            "OMPI_COMM_WORLD_RANK": "2",
            "OMPI_COMM_WORLD_SIZE": "4",
            "OMPI_COMM_WORLD_LOCAL_RANK": "0",
            "OMPI_COMM_WORLD_LOCAL_SIZE": "2",
            "OMPI_COMM_WORLD_NODE_RANK": "0",
            "OMPI_UNIVERSE_SIZE": "4",
            "PMIX_NAMESPACE": "prterun-host-812@1",
            "PMIX_RANK": "2",
            "PMIX_SERVER_URI41": "prterun-host-812@0.0;tcp4://127.0.0.1:41011",
        },
        World(2, 4, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", 0, 2),
    ),
    "srun --mpi=pmix": ({**STEP, **PMIX}, World(11, 16, "PMIX_RANK", "SLURM_STEP_NUM_TASKS", 3, 8)),
    "srun --mpi=pmi2": ({**STEP, **PMI2}, World(11, 16, "PMI_RANK", "PMI_SIZE", 3, 8)),
    "srun (no MPI plugin)": (STEP, World(11, 16, "SLURM_PROCID", "SLURM_STEP_NUM_TASKS", 3, 8)),
    "torchrun": (
        {
            "RANK": "1",
            "WORLD_SIZE": "2",
            "LOCAL_RANK": "1",
            "LOCAL_WORLD_SIZE": "2",
            "GROUP_RANK": "0",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": "29500",
            "TORCHELASTIC_RUN_ID": "none",
        },
        World(1, 2, "RANK", "WORLD_SIZE", 1, 2),
    ),
    "salloc shell / sbatch script (leaked allocation)": (ALLOCATION, World(0, 1, None)),
    "sbatch script: the batch step's own ids": (
        {**ALLOCATION, "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_STEP_ID": "-5"},
        World(0, 1, None),
    ),
    "PMIx variables leaked into a plain shell": ({**ALLOCATION, **PMIX}, World(0, 1, None)),
    "srun -n 1 --mpi=pmix": (
        {**STEP, **PMIX, "SLURM_STEP_NUM_TASKS": "1", "SLURM_PROCID": "0", "PMIX_RANK": "0"},
        World(0, 1, None),
    ),
}


@pytest.mark.parametrize("name", list(LAUNCHES))
def test_world_of_each_launcher(name):
    env, expected = LAUNCHES[name]
    assert world_from_env(env) == expected


@pytest.mark.parametrize("name", list(LAUNCHES))
def test_trtq_build_refuses_exactly_the_multi_rank_launches_and_drops_the_rest(name):
    """builder/launcher_env.py and runtime/mpi.py read the same launchers: the one-process build refuses every
    world `trtq run` would join, and after dropping the leaked variables nothing is left that makes a world."""
    env, expected = dict(LAUNCHES[name][0]), LAUNCHES[name][1]
    env["HOME"] = "/home/u"
    if expected.size > 1:
        with pytest.raises(UsageError, match=f"one of {expected.size} ranks"):
            single_process(env)
        return
    removed = single_process(env)
    assert env == {"HOME": "/home/u"} and removed, removed
    assert world_from_env(env) == World(0, 1, None)


def test_slurm_step_is_told_from_an_allocation():
    assert srun_step(STEP) and not srun_step(ALLOCATION)
    for special in ("4294967290", "4294967291", "4294967292", "-5", "batch", ""):  # interactive, batch, extern steps
        assert not srun_step({**STEP, "SLURM_STEP_ID": special, "SLURM_STEPID": special}), special
    assert not srun_step({k: v for k, v in STEP.items() if k != "SLURM_STEP_NUM_TASKS"})


def test_a_lone_pmix_rank_in_an_srun_step_without_namespace_is_the_plain_step():
    env = {**STEP, "PMIX_RANK": "3"}  # no PMIX_NAMESPACE: not a PMIx client
    assert world_from_env(env).launcher == "SLURM_PROCID"


def test_broken_slurm_rank_is_refused():
    with pytest.raises(LaunchError, match="PMIX_RANK=16 is outside SLURM_STEP_NUM_TASKS=16"):
        world_from_env({**STEP, **PMIX, "PMIX_RANK": "16"})


def test_wrong_srun_task_count_names_srun():
    with pytest.raises(LaunchError, match=r"needs exactly 8 ranks.*has 16.*start it with srun -n 8"):
        check_world(world_from_env({**STEP, **PMIX}), 8, "checkpoint x")


def test_plain_run_on_split_checkpoint_says_how_to_launch():
    with pytest.raises(LaunchError, match=r"mpirun -n 4 trtq run"):
        check_world(world_from_env({}), 4, "checkpoint x")


def test_wrong_world_size_fails_with_the_needed_size():
    w = world_from_env({"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "3"})
    with pytest.raises(LaunchError, match="needs exactly 2 ranks.*has 3"):
        check_world(w, 2, "checkpoint x")
    check_world(world_from_env({}), 1, "checkpoint x")  # matching: no error


# ---------------------------------------------------------------------------------------------- backend choice
NO_TRTLLM = Host(None, 0)  # a laptop / CI box: torch only
CONTAINER_GPU = Host("1.2.1", 8)  # nvcr.io/nvidia/tensorrt-llm/release:1.2.1 on a GPU node
NO_ENGINE_BACKEND = Host("1.3.0rc21", 8)  # a newer TensorRT-LLM: PyTorch backend only
TRTLLM_NO_GPU = Host("1.2.1", 0)  # the container without --gpus


def artifact(root, *holds):
    """An artifact directory holding the given parts: engine/, hf/, checkpoint/."""
    root.mkdir(parents=True)
    if "engine" in holds:
        (root / "engine").mkdir()
        (root / "engine" / "config.json").write_text("{}")
        (root / "engine" / "rank0.engine").write_bytes(b"")
    if "hf" in holds:
        (root / "hf").mkdir()
        (root / "hf" / "config.json").write_text("{}")
    if "checkpoint" in holds:
        (root / "checkpoint").mkdir()
        (root / "checkpoint" / "config.json").write_text("{}")
    return root


CHOICES = [  # (what the artifact holds, what the machine has, the backend auto picks)
    (("engine", "checkpoint"), CONTAINER_GPU, "engine"),
    (("engine", "checkpoint"), NO_TRTLLM, "reference"),
    (("engine", "checkpoint"), NO_ENGINE_BACKEND, "reference"),
    (("engine", "checkpoint"), TRTLLM_NO_GPU, "reference"),
    (("hf", "checkpoint"), CONTAINER_GPU, "pytorch"),
    (("hf", "checkpoint"), NO_ENGINE_BACKEND, "pytorch"),
    (("hf", "checkpoint"), NO_TRTLLM, "reference"),
    (("hf", "checkpoint"), TRTLLM_NO_GPU, "reference"),
    (("engine", "hf", "checkpoint"), CONTAINER_GPU, "engine"),
    (("engine", "hf", "checkpoint"), NO_ENGINE_BACKEND, "pytorch"),
    (("engine", "hf", "checkpoint"), NO_TRTLLM, "reference"),
    (("engine", "hf"), NO_ENGINE_BACKEND, "pytorch"),
    (("hf",), CONTAINER_GPU, "pytorch"),
    (("engine",), CONTAINER_GPU, "engine"),
    # nothing runs here and there is no checkpoint: the TensorRT-LLM runner is picked, and its error says why
    (("engine",), NO_TRTLLM, "engine"),
    (("hf",), NO_TRTLLM, "pytorch"),
    (("engine", "hf"), NO_TRTLLM, "engine"),
]


@pytest.mark.parametrize(("holds", "host", "expected"), CHOICES)
def test_auto_backend_by_what_the_artifact_holds_and_the_machine_has(tmp_path, holds, host, expected):
    art = artifact(tmp_path / "a", *holds)
    assert resolve_backend(art, host=host) == expected
    for explicit in ("reference", "engine", "pytorch"):
        assert resolve_backend(art, explicit, host=host) == explicit  # an explicit --backend is taken as asked


def test_the_reason_is_given(tmp_path):
    art = artifact(tmp_path / "a", "engine", "hf", "checkpoint")
    chosen, why = choose_backend(art, host=NO_ENGINE_BACKEND)
    assert chosen == "pytorch" and why == "hf/ present and this machine runs it"
    chosen, why = choose_backend(art, host=NO_TRTLLM)
    assert chosen == "reference" and "engine/ needs TensorRT-LLM on a GPU: tensorrt_llm is not installed here" in why
    chosen, why = choose_backend(art, host=TRTLLM_NO_GPU)
    assert "no NVIDIA GPU is visible" in why


def test_the_pytorch_backend_is_not_picked_for_one_of_several_launched_ranks(tmp_path, monkeypatch):
    art = artifact(tmp_path / "a", "hf", "checkpoint")
    for k, v in LAUNCHES["mpirun (OpenMPI)"][0].items():
        monkeypatch.setenv(k, v)
    chosen, why = choose_backend(art, host=CONTAINER_GPU)
    assert chosen == "reference" and "one of 4 launched ranks" in why


def test_a_checkpoint_alone_does_not_probe_the_machine(tmp_path, monkeypatch):
    import runtime.select as sel

    def probe():
        raise AssertionError("probed the machine for a checkpoint-only artifact")

    monkeypatch.setattr(sel, "detect_host", probe)
    assert resolve_backend(artifact(tmp_path / "a", "checkpoint")) == "reference"


def test_nothing_to_run_and_unknown_backend(tmp_path):
    with pytest.raises(BackendUnavailable, match="nothing to run"):
        resolve_backend(tmp_path / "empty")
    with pytest.raises(BackendUnavailable, match="choose one of auto, reference, engine, pytorch"):
        resolve_backend(tmp_path, "tensorrt")


def test_a_bare_engine_directory_is_its_own_engine(tmp_path):
    d = tmp_path / "engines"
    d.mkdir()
    (d / "config.json").write_text("{}")
    (d / "rank0.engine").write_bytes(b"")
    assert engine_dir(d) == d and checkpoint_dir(d) is None
    assert resolve_backend(d, host=CONTAINER_GPU) == "engine"


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
