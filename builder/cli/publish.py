"""`trtq publish ARTIFACT --to URL`: upload a complete, verified artifact to the Hub, S3, an OCI registry or a directory."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from builder.cli._common import root_option, setup_logging


def artifact_path(artifact: Path, root: Path) -> Path:
    """ARTIFACT as given, or the artifact of that name under the artifact root."""
    if artifact.exists() or len(artifact.parts) != 1:
        return artifact
    return Path(root) / artifact


@click.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option(
    "--to",
    "urls",
    multiple=True,
    required=True,
    metavar="URL",
    help="hf://org/name[@branch], s3://bucket/prefix, oci://registry/repo:tag or file:///path (repeatable).",
)
@root_option
@click.option("--force", is_flag=True, help="Overwrite an existing tag / revision / prefix / directory.")
@click.option("--allow-unverified", is_flag=True, help="Publish an artifact that is incomplete or failed verification.")
@click.option("--public", is_flag=True, help="hf://: create the repository public (default: private).")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary on stdout.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def publish(artifact, urls, root, force, allow_unverified, public, as_json, verbose) -> None:
    """Publish ARTIFACT (a directory, or a name under --root) to each --to URL.

    Uploads the files listed in its manifest and manifest.json (last), never build caches.
    Credentials come from each service's usual environment and config (HF_TOKEN or `hf auth login`;
    AWS_* or ~/.aws and AWS_ENDPOINT_URL_S3; ~/.docker/config.json or ORAS_USER/ORAS_PASS) and are never printed.
    An interrupted publish resumes when run again. Exit codes: 0 published, 1 upload failed, 2 refused.

    \b
    Example:
      trtq publish engines/smollm2-135m-fp8 --to hf://my-org/smollm2-135m-fp8-trtllm
      trtq publish smollm2-135m-fp8 --to s3://models/trtq/smollm2-135m-fp8 --to oci://ghcr.io/me/smollm2:fp8
    """
    from builder.publish import publish_artifact

    setup_logging(verbose, quiet=as_json)
    path = artifact_path(artifact, root)
    results = []
    for url in urls:
        bar = _Bar(url) if not as_json and sys.stderr.isatty() else None
        try:
            r = publish_artifact(
                path,
                url,
                force=force,
                allow_unverified=allow_unverified,
                public=public,
                progress=bar.update if bar else None,
            )
        finally:
            if bar is not None:
                bar.close()
        results.append(r)
        if not as_json:
            resumed = f", {r['skipped']} already there" if r.get("skipped") else ""
            click.echo(
                f"published {path} to {r['url']}: {r['files']} files, {r['bytes']} bytes "
                f"({r['uploaded']} uploaded{resumed}) in {r['seconds']:.1f} s"
                + (f"\n  {r['location']}" if r.get("location") and r["scheme"] != "file" else "")
            )
    if as_json:
        click.echo(json.dumps(results if len(results) > 1 else results[0], indent=2))


class _Bar:
    """A byte progress bar on stderr, created on the first update (when the total is known)."""

    def __init__(self, label: str):
        self.label, self.bar = label, None

    def update(self, n: int, total: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=self.label, leave=False)
        self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
