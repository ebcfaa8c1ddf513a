"""The process world: which rank am I, how many are we, and torch.distributed (gloo) over it.

Rank/size come from the launcher's environment (OpenMPI's OMPI_COMM_WORLD_*, PMI/PMIx, or torchrun's RANK/
WORLD_SIZE). Single-process hygiene: a SLURM_* or stray PMI_* variable that leaks into a plain `trtq run` must not
make it wait for peers that will never come, so a world is only believed when its size variable says > 1 AND the
launcher's rank variable is set alongside it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from dataclasses import dataclass

from runtime.errors import LaunchError

log = logging.getLogger("trtq.mpi")

# (rank variable, size variable) per launcher, most specific first. SLURM_PROCID/SLURM_NTASKS are deliberately absent:
# they describe the allocation, not this launch (srun without --mpi still sets them for a single process).
_LAUNCHERS = (
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
    ("PMIX_RANK", "PMIX_SIZE"),
    ("PMI_RANK", "PMI_SIZE"),
    ("MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE"),
    ("RANK", "WORLD_SIZE"),
)


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    launcher: str | None  # the rank variable it came from, None for a single process

    @property
    def is_leader(self) -> bool:
        return self.rank == 0


def world_from_env(env: dict[str, str] | None = None) -> World:
    """This process's rank and the world size, from the launcher's environment (1 process when none)."""
    env = dict(os.environ if env is None else env)
    for rank_var, size_var in _LAUNCHERS:
        if rank_var in env and size_var in env:
            try:
                rank, size = int(env[rank_var]), int(env[size_var])
            except ValueError:
                continue
            if size <= 1:
                return World(0, 1, None)
            if not 0 <= rank < size:
                raise LaunchError(f"{rank_var}={rank} is outside {size_var}={size}: broken launcher environment")
            return World(rank, size, rank_var)
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
        f"(from {world.launcher}): start it with mpirun -n {needed}"
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
        for k in ("OMPI_MCA_ess_base_jobid", "PMIX_NAMESPACE", "PMI_JOBID", "SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE")
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

    local = int(os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE", world.size))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local)))
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
