"""`trtq show ARTIFACT` and `trtq ls`: read manifests (through runtime.manifest)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from builder.cli._common import root_option
from runtime.manifest import human_bytes


@click.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def show(artifact: Path, as_json: bool) -> None:
    """Show what ARTIFACT holds: source, format, layout, versions, files.

    \b
    Example:
      trtq show engines/smollm2-135m-bf16
    """
    from runtime.compat import requirements
    from runtime.manifest import read_manifest

    m = read_manifest(artifact)  # a ManifestError is a UsageError (exit 2)
    if as_json:
        click.echo(json.dumps(m.model_dump(mode="json"), indent=2, sort_keys=True))
        return
    src = m.source
    where = src.get("hub") or (src.get("gguf") or {}).get("path") or src.get("model_dir") or "?"
    if src.get("commit"):
        where += f"@{src['commit'][:12]}"
    q = m.quantization
    lines = [
        f"artifact   {artifact}",
        f"status     {m.status}",
        f"model      {where} ({src.get('kind', '?')})",
        f"format     {q.get('format')} (quant_algo {q.get('quant_algo')}, kv {q.get('kv_cache_quant_algo')})",
        f"layout     tp {m.parallel.get('tp')} x pp {m.parallel.get('pp')}",
        f"stages     {', '.join(m.stages)}",
        f"requires   {requirements(m).summary()}",
        "versions   " + ", ".join(f"{k} {v}" for k, v in m.versions.items() if v),
        f"files      {len(m.files)} files, {human_bytes(sum(f.size for f in m.files))}",
        f"created    {m.created} by trtq {m.trtq_version}",
    ]
    if m.hardware:
        hw = m.hardware
        lines.insert(
            6,
            f"built on   {hw.get('gpu', '?')} (compute capability {hw.get('compute_capability', '?')}), "
            f"TensorRT-LLM {hw.get('tensorrt_llm', '?')}, TensorRT {hw.get('tensorrt', '?')}",
        )
    if m.verify is not None:
        lines.insert(-2, f"verify     {_verify_line(m.verify)}")
    click.echo("\n".join(lines))


def _verify_line(v: dict) -> str:
    """The verify results in one line: `passed` first when present, then the rest as key value pairs."""
    parts = []
    if "passed" in v:
        parts.append("passed" if v["passed"] else "FAILED")
    for k, x in v.items():
        if k == "passed":
            continue
        if isinstance(x, dict):
            x = ", ".join(f"{kk} {round(vv, 4) if isinstance(vv, float) else vv}" for kk, vv in x.items())
        elif isinstance(x, float):
            x = round(x, 4)
        parts.append(f"{k}: {x}")
    return "; ".join(parts) or "(empty)"


@click.command(name="ls")
@root_option
@click.option("--json", "as_json", is_flag=True)
def ls(root: Path, as_json: bool) -> None:
    """List the artifacts under the artifact root.

    \b
    Example:
      trtq ls --root engines
    """
    from runtime.manifest import ManifestError, read_manifest

    rows = []
    for d in sorted(Path(root).iterdir()) if Path(root).is_dir() else []:
        if not d.is_dir():
            continue
        try:
            m = read_manifest(d)
        except ManifestError:
            rows.append({"name": d.name, "status": "no manifest"})
            continue
        size = sum(f.size for f in m.files)
        rows.append(
            {
                "name": d.name,
                "status": m.status,
                "format": m.quantization.get("format"),
                "tp": m.parallel.get("tp"),
                "pp": m.parallel.get("pp"),
                "bytes": size,
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no artifacts under {root}")
    for r in rows:
        if "format" in r:
            click.echo(
                f"{r['name']:<32} {r['format']:<9} tp{r['tp']} pp{r['pp']}  {human_bytes(r['bytes']):>9}  {r['status']}"
            )
        else:
            click.echo(f"{r['name']:<32} {r['status']}")
