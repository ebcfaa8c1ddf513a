"""Run `trtq build` attempts that may be killed, and check what a killed build leaves behind.

"Byte-identical artifact" here means: every deliverable file (the ones the manifest lists, with their sha256) and the
manifest's `files` table. The manifest's `created` time, the stages' `seconds` and the quantize stage's working files
(calibration.json with its timing, ModelOpt's pickled state) are bookkeeping, not the artifact, and may differ.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from builder.fingerprint import file_table, sha256_file
from builder.workspace import STAMP

REPO = Path(__file__).resolve().parents[2]
SIGKILL = 9


def run_trtq(*args, env=None, timeout=600) -> subprocess.CompletedProcess:
    """`python -m builder.cli ARGS` in a fresh interpreter, exactly as a user runs trtq."""
    return subprocess.run(
        [sys.executable, "-m", "builder.cli", *map(str, args)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Zygote:
    """One pre-imported Python that forks a fresh `trtq` child per attempt (see _zygote.py)."""

    def __init__(self, logs: Path):
        self.logs = Path(logs)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.n = 0
        env = {**os.environ, "PYTHONPATH": str(REPO), "TRANSFORMERS_VERBOSITY": "error"}
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("_zygote.py"))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO,
        )
        line = self.proc.stdout.readline()
        assert json.loads(line) == {"ready": True}, line

    def run(
        self, *argv, fault: str | None = None, kill_after: float | None = None, env=None, standin: bool = False
    ) -> dict:
        """One attempt; returns {"rc", "signal", "seconds", "log": its stdout+stderr}."""
        self.n += 1
        log = self.logs / f"attempt-{self.n:02d}.log"
        child_env = dict(env or {})
        child_env["TRTQ_FAULT"] = fault or ""
        cmd = {"argv": [str(a) for a in argv], "env": child_env, "log": str(log), "kill_after": kill_after}
        cmd["standin"] = standin  # the engine stage against the stand-in TensorRT-LLM (tests/contract/standin)
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        report = json.loads(self.proc.stdout.readline())
        report["log"] = log.read_text()
        return report

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def deliverables(artifact: Path) -> dict[str, str]:
    """path -> sha256 of every deliverable file, from the manifest, each re-hashed from disk."""
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["status"] == "complete", manifest["status"]
    listed = {f["path"]: f["sha256"] for f in manifest["files"]}
    on_disk = {}
    for stage in {p.split("/")[0] for p in listed}:
        for row in file_table(artifact / stage, skip=(STAMP,)):
            on_disk[f"{stage}/{row['path']}"] = row["sha256"]
    assert on_disk == listed, "the manifest lists exactly the deliverable files on disk, with their hashes"
    return listed


def assert_nothing_partial(artifact: Path) -> list[str]:
    """A stage directory that is visible is complete: stamped, and (deliverables) holding exactly its stamped files.

    Work in progress lives only in hidden `.tmp-*`/`.old-*` directories. A manifest, when present, matches the disk.
    Returns the names of the complete stages.
    """
    complete = []
    if not artifact.exists():
        return complete
    for d in sorted(artifact.iterdir()):
        if not d.is_dir() or d.name.startswith("."):
            continue
        stamp_path = d / STAMP
        assert stamp_path.is_file(), f"{d} is visible but has no {STAMP}: a partial stage looks complete"
        stamp = json.loads(stamp_path.read_text())
        assert stamp["stage"] == d.name and stamp["fingerprint"]
        if stamp["files"]:
            assert file_table(d, skip=(STAMP,)) == stamp["files"], f"{d} does not hold the files its stamp lists"
        complete.append(d.name)
    manifest = artifact / "manifest.json"
    if manifest.exists():
        for f in json.loads(manifest.read_text())["files"]:
            path = artifact / f["path"]
            assert path.is_file(), f"the manifest lists {f['path']}, which is missing"
            assert sha256_file(path) == f["sha256"], f"{f['path']} changed under a manifest that lists it"
    return complete
