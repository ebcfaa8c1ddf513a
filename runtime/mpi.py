"""The process world: which rank am I, how many are we, and torch.distributed (gloo) over it.

Rank and size come from the launcher's environment. What each launcher exports (read from their sources):

- OpenMPI's mpirun/prterun: OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE, OMPI_COMM_WORLD_LOCAL_RANK/_LOCAL_SIZE.
- PMIx servers (openpmix `PMIx_server_setup_fork`, which Slurm's `--mpi=pmix` plugin calls for every task):
  PMIX_NAMESPACE and PMIX_RANK, but no size variable. Under `srun --mpi=pmix` the size is the job step's task count.
- Slurm's `--mpi=pmi2` plugin (src/plugins/mpi/pmi2/mpi_pmi2.c) and MPICH's hydra: PMI_RANK, PMI_SIZE (+ PMI_FD).
- srun itself, for every task of a job step (src/common/env.c: env_array_for_step in srun, setup_env in slurmstepd):
  SLURM_STEP_ID, SLURM_STEP_NUM_TASKS, SLURM_STEP_TASKS_PER_NODE, SLURM_PROCID, SLURM_LOCALID, SLURM_NODEID (and the
  older SLURM_NTASKS/SLURM_STEPID). A job allocation (salloc's shell, sbatch's script before srun) has SLURM_JOB_ID and
  SLURM_NTASKS but no SLURM_STEP_NUM_TASKS: it is not a launch.
- torchrun: RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE.

Single-process hygiene: a SLURM_* or stray PMI_* variable that leaks into a plain `trtq run` must not make it wait for
peers that will never come. So a world is only believed when a launcher's rank AND its size come together: a rank
variable alone (PMIX_RANK without a namespace, PMI_RANK without PMI_SIZE) or an allocation's SLURM_NTASKS is ignored,
and a Slurm size is only read inside a job step that srun started (SLURM_STEP_ID a real step number).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from runtime.errors import LaunchError

log = logging.getLogger("trtq.mpi")

# Slurm's reserved step ids (slurm.h: SLURM_PENDING_STEP .. SLURM_INTERACTIVE_STEP are 0xfffffffd .. 0xfffffffa; the
# batch script's step prints as -5 through setup_env's "%d"). Real job steps are numbered from 0.
_SLURM_SPECIAL_STEPS = 0xFFFFFFF0


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    launcher: str | None  # the rank variable it came from, None for a single process
    size_from: str | None = None  # the variable that gave the size
    local_rank: int = 0
    local_size: int = 0  # ranks on this node; 0 = unknown (taken as all of them)

    @property
    def is_leader(self) -> bool:
        return self.rank == 0


def _int(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name, "").strip()
    return int(value) if re.fullmatch(r"-?\d+", value) else None


def srun_step(env: Mapping[str, str]) -> bool:
    """Whether this process is a task of a job step that srun launched (not an allocation's shell or batch script).

    srun exports SLURM_STEP_NUM_TASKS and a real SLURM_STEP_ID (a number below Slurm's reserved ids) to every task;
    salloc and sbatch set neither."""
    step = _int(env, "SLURM_STEP_ID")
    if step is None:
        step = _int(env, "SLURM_STEPID")
    return step is not None and 0 <= step < _SLURM_SPECIAL_STEPS and _int(env, "SLURM_STEP_NUM_TASKS") is not None


def _slurm_local(env: Mapping[str, str]) -> tuple[int, int] | None:
    """(local rank, tasks on this node) of a Slurm step task, from SLURM_LOCALID and SLURM_STEP_TASKS_PER_NODE
    ("8(x2)", "4,3", ...) indexed by SLURM_NODEID."""
    local, node = _int(env, "SLURM_LOCALID"), _int(env, "SLURM_NODEID")
    per_node = []
    for part in env.get("SLURM_STEP_TASKS_PER_NODE", "").split(","):
        m = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if not m:
            return None
        per_node += [int(m.group(1))] * int(m.group(2) or 1)
    if local is None or node is None or not 0 <= node < len(per_node):
        return None
    return local, per_node[node]


def _candidates(env: Mapping[str, str]):
    """(rank variable, rank, size variable, size) for each launcher whose rank and size are both present."""

    def pair(rank_var: str, size_var: str):
        rank, size = _int(env, rank_var), _int(env, size_var)
        return None if rank is None or size is None else (rank_var, rank, size_var, size)

    yield pair("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE")
    if env.get("PMIX_NAMESPACE"):  # a PMIx client: the rank is PMIX_RANK, the size comes from the launcher
        yield pair("PMIX_RANK", "PMIX_SIZE")
        if srun_step(env):
            yield pair("PMIX_RANK", "SLURM_STEP_NUM_TASKS")
    yield pair("PMI_RANK", "PMI_SIZE")
    yield pair("MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE")
    if srun_step(env):  # srun without an MPI plugin (or one that exports nothing we know)
        yield pair("SLURM_PROCID", "SLURM_STEP_NUM_TASKS")
    yield pair("RANK", "WORLD_SIZE")


def _local(env: Mapping[str, str], launcher: str, rank: int, size: int) -> tuple[int, int]:
    for local_rank_var, local_size_var in (
        ("OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"),
        ("MPI_LOCALRANKID", "MPI_LOCALNRANKS"),
        ("LOCAL_RANK", "LOCAL_WORLD_SIZE"),
    ):
        lr, ls = _int(env, local_rank_var), _int(env, local_size_var)
        if lr is not None and ls is not None and 0 <= lr < ls:
            return lr, ls
    if launcher in ("PMIX_RANK", "SLURM_PROCID", "PMI_RANK") and srun_step(env):
        local = _slurm_local(env)
        if local is not None:
            return local
    return rank, size  # unknown: assume one node


def world_from_env(env: Mapping[str, str] | None = None) -> World:
    """This process's rank and the world size, from the launcher's environment (1 process when none).

    The first launcher (most specific first: OpenMPI, PMIx, PMI/PMI2, MVAPICH, a Slurm step, torchrun) whose rank and
    size are both present decides; a size of 1 means a single process."""
    env = dict(os.environ if env is None else env)
    for cand in _candidates(env):
        if cand is None:
            continue
        rank_var, rank, size_var, size = cand
        if size <= 1:
            return World(0, 1, None)
        if not 0 <= rank < size:
            raise LaunchError(f"{rank_var}={rank} is outside {size_var}={size}: broken launcher environment")
        local_rank, local_size = _local(env, rank_var, rank, size)
        return World(rank, size, rank_var, size_var, local_rank, local_size)
    return World(0, 1, None)


def launch_hint(world_size: int, what: str) -> str:
    return (
        f"{what} is split over {world_size} ranks (tp x pp): start one process per rank, e.g.\n"
        f"  mpirun -n {world_size} trtq run ...\n"
        "(as root add --allow-run-as-root; with more ranks than cores add --oversubscribe)"
    )


def check_world(world: World, needed: int, what: str) -> None:
    """Fail at once when the launch does not match the artifact's mapping (tp x pp)."""
    if world.size == needed:
        return
    if world.size == 1:
        raise LaunchError(launch_hint(needed, what))
    raise LaunchError(
        f"{what} needs exactly {needed} ranks (its mapping tp x pp), but this launch has {world.size} "
        f"(from {world.launcher}"
        + (f" and {world.size_from}" if world.size_from else "")
        + "): start it with "
        + (f"srun -n {needed}" if world.size_from == "SLURM_STEP_NUM_TASKS" else f"mpirun -n {needed}")
    )


def _port(world: World) -> int:
    """A port every rank agrees on without talking first: MASTER_PORT if set, else mpi4py broadcast from rank 0,
    else a hash of the launcher's job identity."""
    if os.environ.get("MASTER_PORT"):
        return int(os.environ["MASTER_PORT"])
    try:
        from mpi4py import MPI  # initializes MPI only under a real mpirun world

        comm = MPI.COMM_WORLD
        if comm.Get_size() == world.size:
            port = _free_port() if comm.Get_rank() == 0 else None
            return int(comm.bcast(port, root=0))
    except ImportError:
        pass
    job = "|".join(
        os.environ.get(k, "")
        for k in (
            "OMPI_MCA_ess_base_jobid",
            "PMIX_NAMESPACE",
            "PMI_JOBID",
            "SLURM_JOB_ID",
            "SLURM_STEP_ID",
            "OMPI_COMM_WORLD_SIZE",
            "TORCHELASTIC_RUN_ID",
        )
    )
    return 20000 + int(hashlib.sha256(job.encode()).hexdigest(), 16) % 20000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(world: World, timeout_s: float = 300.0) -> None:
    """torch.distributed with gloo over loopback (MASTER_ADDR=127.0.0.1 unless set). No-op for one process."""
    if world.size == 1:
        return
    import datetime

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(_port(world))
    # Share the cores: N ranks on one box each get cores / N threads instead of oversubscribing.
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, world.local_size or world.size)))
    try:
        dist.init_process_group(
            "gloo", rank=world.rank, world_size=world.size, timeout=datetime.timedelta(seconds=timeout_s)
        )
    except Exception as e:  # connection refused / timeout: one clear line
        raise LaunchError(
            f"rank {world.rank}/{world.size}: torch.distributed (gloo) could not connect to "
            f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}: {e}"
        ) from None
    import atexit

    atexit.register(_finalize)


def leave_distributed() -> None:
    """Leave the process group now (all ranks together), e.g. before rank 0 goes on alone for a long time."""
    _finalize()


def _finalize() -> None:
    """Leave the gloo group together: without a last barrier a rank that exits first can make its peer's gloo
    thread abort (SIGABRT, "Connection closed by peer") after all the work was done."""
    import torch.distributed as dist

    if dist.is_initialized():
        try:
            dist.barrier()
            dist.destroy_process_group()
        except Exception:  # a peer already failed: mpirun reports that rank's error
            pass
