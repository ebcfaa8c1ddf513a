"""MPI/Slurm hygiene for `trtq build`, which is always one process.

Variables that MPI launchers (mpirun, srun, torchrun) set for their ranks sometimes leak into a plain shell: an
`salloc` session, a job script that runs the build before `srun`, an exported environment. A single process that
then initializes MPI (importing tensorrt_llm does, through mpi4py) tries to reach a PMI/PMIx server that is not
there and hangs, or joins a world it is not part of. So `trtq build`:

- refuses when it really is one of several ranks (a world size above 1): N copies of one build would only queue on
  the artifact's lock; the message names the variable, so a leaked one can be unset. It reads the launchers as
  runtime.mpi does (the same srun job-step test), and more cautiously: any size variable above 1 refuses, even one
  without its rank partner, so every world that `trtq run` would join is refused here too;
- otherwise drops the launcher's variables from its environment (and so from trtllm-build's) before any library
  reads them, and says which it dropped (with -v).
"""

from __future__ import annotations

import os
import re
from collections.abc import MutableMapping

from builder.errors import UsageError
from runtime.errors import LaunchError
from runtime.mpi import srun_step, world_from_env

# Variables whose value is a world size when a launcher started this process.
WORLD_SIZE_VARS = (
    "OMPI_COMM_WORLD_SIZE",
    "PMI_SIZE",
    "PMIX_SIZE",
    "MV2_COMM_WORLD_SIZE",
    "MPI_LOCALNRANKS",
    "WORLD_SIZE",
)
_LAUNCHER = re.compile(
    r"^(PMI_|PMIX_|SLURM_|OMPI_COMM_WORLD_|OMPI_UNIVERSE_|OMPI_MCA_(orte|ess|pmix|prte)|PRTE_|MPI_LOCAL|PALS_|"
    r"MV2_|I_MPI_|HYDRA_|TORCHELASTIC_)|^(RANK|WORLD_SIZE|LOCAL_RANK|LOCAL_WORLD_SIZE|GROUP_RANK|MASTER_ADDR|"
    r"MASTER_PORT)$"
)


def world_size(environ: MutableMapping[str, str]) -> tuple[int, str | None]:
    """The largest world size a launcher variable claims (1 when none does), and the variable that says so."""
    best, name = 1, None
    candidates = list(WORLD_SIZE_VARS)
    if srun_step(environ):  # inside a job step srun launched (not merely a job allocation)
        candidates.append("SLURM_STEP_NUM_TASKS")
    for var in candidates:
        value = environ.get(var, "").strip()
        if value.isdigit() and int(value) > best:
            best, name = int(value), var
    return best, name


def single_process(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Refuse a multi-rank launch; remove leaked launcher variables. Returns the names removed (sorted)."""
    env = os.environ if environ is None else environ
    size, var = world_size(env)
    try:
        world = world_from_env(env)
    except LaunchError as e:
        raise UsageError(f"trtq build runs as one process, but the launcher's variables are broken ({e})") from None
    if world.size > size:  # cannot happen while world_size scans every size variable world_from_env reads
        size, var = world.size, world.size_from
    if size > 1:
        raise UsageError(
            f"trtq build runs as one process, but {var}={env[var]} says it was started as one of {size} ranks: "
            "start it without mpirun/srun/torchrun (only `trtq run` uses several ranks), or unset the variable "
            "if it leaked into this shell"
        )
    removed = sorted(k for k in env if _LAUNCHER.match(k))
    for k in removed:
        del env[k]
    return removed
