"""`trtq report ARTIFACT...`: a markdown + HTML page with plots to pick a format at a glance.

Exit codes: 0 ok, 2 bad input (not an artifact, matplotlib missing).
"""

from __future__ import annotations

from pathlib import Path

import click

from builder.cli._common import setup_logging


@click.command()
@click.argument("artifacts", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write it (default: ARTIFACT/report/ for one artifact, listed in its manifest; ./report otherwise).",
)
@click.option("-v", "--verbose", is_flag=True)
def report(artifacts, out, verbose) -> None:
    """Compare ARTIFACTS: size vs perplexity, speed per backend, the accuracy gate's results.

    Reads each artifact's manifest (gate results), eval/*.json (trtq eval --save) and bench/*.json (trtq bench --save).

    \b
    Examples:
      trtq report engines/smollm2-135m-int8_sq
      trtq report engines/smollm2-135m-* --out reports/smollm2
    """
    from builder.report import write_report

    setup_logging(verbose)
    files = write_report(list(artifacts), out)  # a ManifestError is a UsageError (exit 2)
    for f in files:
        click.echo(str(f))
