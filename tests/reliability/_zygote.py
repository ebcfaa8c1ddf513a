"""A trtq process with torch, transformers and ModelOpt already imported, forking one child per build attempt.

Each child runs `trtq <argv>` (builder.cli.main, exactly what `python -m builder.cli` runs) in a fresh process that
can be killed with SIGKILL like any build; forking skips the ~8 s of imports a new interpreter pays, which keeps a
harness of dozens of killed builds within a couple of minutes. The zygote itself never runs a torch op (forking
after OpenMP started is unsafe), so each child starts as clean as `python -m builder.cli` would.

Protocol (JSON lines): stdin {"argv": [...], "env": {...}, "log": path, "kill_after": seconds|null}
-> stdout {"rc": int|null, "signal": int|null, "seconds": float}.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback


def _preload() -> None:
    import modelopt.torch.export  # noqa: F401
    import modelopt.torch.opt  # noqa: F401
    import modelopt.torch.quantization  # noqa: F401
    import safetensors.torch  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    import builder.checkpoint.export  # noqa: F401
    import builder.cli.build  # noqa: F401
    import builder.model.source  # noqa: F401
    import builder.pipeline  # noqa: F401
    import builder.quant.state  # noqa: F401


def _child(cmd: dict) -> None:
    fd = os.open(cmd["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.update(cmd.get("env") or {})
    sys.argv = ["trtq", *cmd["argv"]]
    code = 0
    try:
        if cmd.get("standin"):
            _standin()
        from builder.cli import main

        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 3
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _standin() -> None:
    """The contract tests' stand-in TensorRT-LLM 1.2.1 and an H100-like GPU, so the engine stage runs on a CPU box."""
    from _pytest.monkeypatch import MonkeyPatch

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from contract.standin import install

    from builder.stages import build
    from runtime import gpu as _gpu

    mp = MonkeyPatch()
    install(mp)
    mp.setattr(build, "local_gpus", lambda: [_gpu.Gpu("NVIDIA H100 80GB HBM3", "9.0", 81559 * 1024 * 1024)])


def main() -> None:
    _preload()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        t0 = time.monotonic()
        pid = os.fork()
        if pid == 0:
            _child(cmd)
        status = None
        if cmd.get("kill_after") is not None:
            deadline = t0 + cmd["kill_after"]
            while time.monotonic() < deadline:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                time.sleep(0.01)
            else:
                os.kill(pid, signal.SIGKILL)
                status = None
        if status is None or not (os.WIFEXITED(status) or os.WIFSIGNALED(status)):
            _, status = os.waitpid(pid, 0)
        report = {
            "rc": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            "seconds": round(time.monotonic() - t0, 3),
        }
        print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
