"""Crash injection for the reliability tests (tests/reliability): not a user feature.

``TRTQ_FAULT=<point>`` makes the build kill itself with SIGKILL when it reaches ``<point>``, exactly as `kill -9` or
the OOM killer would, so the tests can prove that a build killed anywhere resumes to byte-identical files.
Points: ``<stage>:before`` (its temporary directory exists, nothing written), ``<stage>:publish`` (output and stamp
written, not yet renamed into place), ``<stage>:swap`` (an older output moved aside, the new one not yet in place),
``<stage>:after`` (in place), ``manifest:before``. Unset (always, outside tests), this is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal


def crash_point(name: str) -> None:
    if os.environ.get("TRTQ_FAULT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
