"""Errors the runtime raises on purpose. The CLI turns them into one line and an exit code; anything else is a bug."""

from __future__ import annotations


class RuntimeTrtqError(Exception):
    """Base class. ``exit_code``: 2 for input the user can fix (files, flags, launch), 1 for a failed run/check."""

    exit_code = 1


class CheckpointError(RuntimeTrtqError):
    """A TensorRT-LLM checkpoint is missing, damaged, or uses something this runtime does not implement."""

    exit_code = 2


class LaunchError(RuntimeTrtqError):
    """The process layout does not match the artifact (mpirun -n vs tp x pp), or MPI cannot start."""

    exit_code = 2


class BackendUnavailable(RuntimeTrtqError):
    """The asked-for backend cannot run here (no engine/ dir, no tensorrt_llm, missing module)."""

    exit_code = 2


class VerificationFailed(RuntimeTrtqError):
    """An export did not match its reference within the documented thresholds."""

    exit_code = 1
