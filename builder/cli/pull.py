"""`trtq pull URL [DEST]`: download an artifact, verify every sha256, and check it can run on this machine."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from builder.cli._common import root_option, setup_logging


@click.command()
@click.argument("url")
@click.argument("dest", required=False, type=click.Path(path_type=Path))
@root_option
@click.option("--force", is_flag=True, help="Replace DEST if it holds something else.")
@click.option("--ignore-compat", is_flag=True, help="Download even if it cannot run on this machine (for another one).")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary on stdout.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def pull(url, dest, root, force, ignore_compat, as_json, verbose) -> None:
    """Pull the artifact at URL into DEST (default: ROOT/<artifact name>).

    Reads the remote manifest first and checks this machine (GPU compute capability, TensorRT-LLM and TensorRT
    versions) before downloading; then downloads every file, checks each size and sha256 against the manifest
    (a mismatch deletes the download and exits 1) and only then moves it into DEST. An interrupted pull resumes
    when run again. Exit codes: 0 pulled, 1 failed (integrity, incompatible, store unreachable), 2 bad URL/DEST.

    \b
    Example:
      trtq pull hf://my-org/smollm2-135m-fp8-trtllm
      trtq pull s3://models/trtq/smollm2-135m-fp8 /srv/models/smollm2 --json
      trtq pull oci://ghcr.io/me/smollm2:fp8 --ignore-compat
    """
    from runtime.pull import pull as do_pull

    setup_logging(verbose, quiet=as_json)
    bar = _Bar() if not as_json and sys.stderr.isatty() else None
    try:  # PullError is a TrtqError: the CLI prints it as one line with its exit code
        result = do_pull(
            url, dest, root=root, force=force, ignore_compat=ignore_compat, progress=bar.update if bar else None
        )
    finally:
        if bar is not None:
            bar.close()
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
        return
    if result.up_to_date:
        click.echo(f"{result.dest}: already up to date ({result.files} files verified, sha256)")
    else:
        resumed = f", resumed {result.resumed_files}" if result.resumed_files else ""
        click.echo(
            f"pulled {result.url} to {result.dest}: {result.files} files, {result.bytes} bytes verified (sha256)"
            f"{resumed} in {result.seconds:.1f} s"
        )


class _Bar:
    """A byte progress bar on stderr, created on the first update (when the total is known)."""

    def __init__(self):
        self.bar = None

    def update(self, n: int, total: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="pull", leave=False)
        self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
