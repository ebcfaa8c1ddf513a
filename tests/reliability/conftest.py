"""Helpers of the reliability suite: the forking build runner and the artifact checks (tests/reliability/_harness.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def zygote(tmp_path_factory):
    """The forking `trtq` runner, shared by the suite (its start costs the imports once)."""
    from _harness import Zygote

    z = Zygote(tmp_path_factory.mktemp("attempt-logs"))
    yield z
    z.close()


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    from _tiny import make_model

    return make_model(tmp_path_factory.mktemp("models") / "llama", "llama")
