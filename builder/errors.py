"""The build's own errors, subclasses of the one base in runtime.errors (TrtqError; UsageError exits 2).

Only the CLI turns them into messages and exit codes. Anything that is not a TrtqError is a bug and keeps its traceback.
"""

from __future__ import annotations

from runtime.errors import TrtqError, UsageError

__all__ = [
    "TrtqError",
    "UsageError",
    "RecipeError",
    "LayoutError",
    "ModelSourceError",
    "DiskSpaceError",
    "MissingDependency",
    "StageFailed",
    "LockedError",
]


class RecipeError(UsageError):
    """A recipe failed validation. Holds every problem at once, one line each."""

    def __init__(self, problems: list[str]):
        self.problems = [_one_line(p) for p in problems]
        super().__init__("\n".join(self.problems))


_LINE_BREAKS = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")  # what str.splitlines() splits on


def _one_line(problem: str, limit: int = 400) -> str:
    """A problem is one line, whatever the user's values hold (a newline in a name, a megabyte string)."""
    text = "".join(repr(c)[1:-1] if c in _LINE_BREAKS else c for c in str(problem))
    return text if len(text) <= limit else text[: limit - 3] + "..."


class LayoutError(UsageError):
    """The model cannot be split or quantized the way the recipe asks (heads vs tp, widths vs group size)."""


class ModelSourceError(UsageError):
    """The model could not be resolved: missing file, unpinned revision, pickled weights, not a GGUF file..."""


class DiskSpaceError(UsageError):
    """The filesystem a build writes to lacks the space its stages need (refused before they run)."""


class MissingDependency(UsageError):
    """An optional dependency is not installed; the message names the extra or container that provides it."""


class StageFailed(TrtqError):
    """A stage ran and failed for a reason that is not the user's input (verification failed, tool missing)."""

    exit_code = 1


class LockedError(TrtqError):
    """Another trtq process is building the same artifact."""

    exit_code = 1
