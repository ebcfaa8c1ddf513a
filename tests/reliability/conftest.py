"""Helpers of the reliability suite: the forking build runner and the artifact checks (tests/reliability/_harness.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
