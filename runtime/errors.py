"""The errors trtq raises on purpose, runtime and builder alike: one base, `TrtqError`.

Only the CLI turns them into messages and exit codes (one line each, no traceback; `-v` shows it). ``exit_code``: 2
for input the user can fix (files, flags, launch, URLs), 1 for a run, build or check that failed. Anything that is
not a TrtqError is a bug and keeps its traceback. `builder.errors` adds the build's own subclasses.
"""

from __future__ import annotations


class TrtqError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with: 2 for bad input, 1 for a failed build or run."""

    exit_code = 1


class UsageError(TrtqError):
    """The user asked for something that cannot work as asked (bad recipe, flag, file, layout or URL)."""

    exit_code = 2


class CheckpointError(UsageError):
    """A TensorRT-LLM checkpoint is missing, damaged, or uses something this runtime does not implement."""


class LaunchError(UsageError):
    """The process layout does not match the artifact (mpirun -n vs tp x pp), or MPI cannot start."""


class BackendUnavailable(UsageError):
    """The asked-for backend cannot run here (no engine/ dir, no tensorrt_llm, missing module)."""


class VerificationFailed(TrtqError):
    """An export did not match its reference within the documented thresholds."""
