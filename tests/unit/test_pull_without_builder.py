"""A serving box has only `runtime`: pull (every store) and the compatibility check must work without `builder`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from builder.publish import publish_artifact
from tests._publish import make_artifact

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys
sys.modules["builder"] = None  # any `import builder...` now fails
import runtime.pull, runtime.compat, runtime.locations
import runtime.stores.file_store, runtime.stores.s3_store, runtime.stores.oci_store, runtime.stores.hf_store
from runtime.pull import pull
r = pull(sys.argv[1], sys.argv[2], machine=runtime.compat.Machine())
print(r.files, r.bytes)
assert not [m for m in sys.modules if m == "builder" or m.startswith("builder.")] or sys.modules["builder"] is None
"""


def test_runtime_pulls_without_builder(tmp_path):
    publish_artifact(make_artifact(tmp_path / "a"), f"file://{tmp_path}/store")
    p = subprocess.run(
        [sys.executable, "-c", SCRIPT, f"file://{tmp_path}/store", str(tmp_path / "got")],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["3", str(sum(f.stat().st_size for f in (tmp_path / "got/checkpoint").iterdir()))]
