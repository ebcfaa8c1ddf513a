"""Options and helpers shared by the sub-commands."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

DEFAULT_ROOT = "engines"


def root_option(f):
    return click.option(
        "--root",
        type=click.Path(file_okay=False, path_type=Path),
        default=lambda: os.environ.get("TRTQ_ROOT", DEFAULT_ROOT),
        show_default="$TRTQ_ROOT or ./engines",
        help="Artifact root: artifacts are written to ROOT/<recipe name>.",
    )(f)


def set_option(f):
    return click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="KEY.PATH=VALUE",
        help="Override a recipe field before validation (repeatable), e.g. --set parallel.tp=2",
    )(f)


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        name = record.name.removeprefix("trtq.").removeprefix("trtq")
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        return f"trtq{' ' + name if name else ''}: {level}{record.getMessage()}"


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    logger = logging.getLogger("trtq")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    logger.propagate = False
    # The libraries we drive are chatty; their warnings rarely concern a trtq user. -v shows them.
    if not verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        import warnings

        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
