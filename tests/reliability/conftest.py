"""Helpers of the reliability suite: the forking build runner and the artifact checks (tests/reliability/_harness.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

# (no sys.path changes here: tests/conftest.py's `conftest` must stay the one `from conftest import ...` finds;
# pytest puts this directory on sys.path for the test modules, which import _harness and _recipes)


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
