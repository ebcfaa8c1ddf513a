"""The model card (README.md) published with an artifact on the Hugging Face Hub.

Built only from the manifest and the artifact's own report/ (never from the environment), so it cannot leak a token.
Front matter: base_model (the source repository), base_model_relation quantized, tags (tensorrt-llm, trtq, the
format, checkpoint/engine, tpN-ppM), pipeline_tag. Body: what it is, what it needs to run (the compatibility facts),
the report's table and plots when report/ exists (else the manifest's facts), how to pull and run it, the files.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from runtime import compat
from runtime.formats import FORMATS, UNQUANTIZED
from runtime.manifest import Manifest, human_bytes

_IMAGES = (".png", ".svg", ".jpg", ".jpeg", ".gif", ".webp")


def front_matter(m: Manifest) -> dict:
    req = compat.requirements(m)
    fmt = m.quantization.get("format") or "unknown"
    tags = ["tensorrt-llm", "trtq", fmt]
    if fmt not in UNQUANTIZED:
        tags.append("quantized")
    if m.quantization.get("quant_algo"):
        tags.append(str(m.quantization["quant_algo"]).lower())
    tags.append("engine" if req.engine else "checkpoint")
    tags.append(f"tp{m.parallel.get('tp', 1)}-pp{m.parallel.get('pp', 1)}")
    tags = list(dict.fromkeys(tags))  # "fp8" is both the format and the quant_algo
    meta: dict = {}
    base = m.source.get("hub")
    if base:
        meta["base_model"] = base
        meta["base_model_relation"] = "quantized"
    meta.update({"library_name": "tensorrt-llm", "pipeline_tag": "text-generation", "tags": tags})
    return meta


def model_card(m: Manifest, artifact_dir: Path, url: str) -> str:
    """README.md for the artifact in ``artifact_dir`` (manifest ``m``), published at ``url`` (hf://org/name[@rev])."""
    req = compat.requirements(m)
    src = m.source
    q = m.quantization
    fmt = q.get("format")
    base = src.get("hub")
    source = base or src.get("kind") or "a local model"
    if src.get("commit"):
        source_line = (
            f"[{base}](https://huggingface.co/{base}/tree/{src['commit']}) at commit `{src['commit']}`"
            if base
            else f"{source} at `{src['commit']}`"
        )
    else:
        source_line = f"`{source}`"
    what = "TensorRT engines" if req.engine else "a TensorRT-LLM checkpoint"
    out = ["---", yaml.safe_dump(front_matter(m), sort_keys=False).strip(), "---", ""]
    out += [
        f"# {m.name}",
        "",
        f"{what.capitalize()} of {source_line}, quantized as **{fmt}** and split **tp {m.parallel.get('tp')} x pp "
        f"{m.parallel.get('pp')}**, built by trtq {m.trtq_version} from one YAML recipe.",
        "",
        f"Status: **{m.status}**.",
        "",
        "## Will it run on my machine?",
        "",
        f"It needs: {req.summary()}.",
        "",
        "| fact | value |",
        "|---|---|",
    ]
    rows = [
        ("format", f"{fmt} ({FORMATS[fmt].summary})" if fmt in FORMATS else fmt),
        ("quant_algo", q.get("quant_algo")),
        ("kv cache quant_algo", q.get("kv_cache_quant_algo")),
        ("tensor parallel x pipeline parallel", f"{m.parallel.get('tp')} x {m.parallel.get('pp')}"),
        ("GPU (engines)", req.gpu_name),
        ("compute capability (engines)", req.compute_capability),
        ("minimum compute capability (format)", req.min_compute_capability),
        ("TensorRT-LLM", req.tensorrt_llm or (m.versions or {}).get("tensorrt-llm")),
        ("TensorRT", req.tensorrt),
        ("CUDA", req.cuda),
    ]
    rows += [
        (f"built with {k}", v)
        for k, v in (m.versions or {}).items()
        if v and k in ("torch", "transformers", "nvidia-modelopt")
    ]
    out += [f"| {k} | {v} |" for k, v in rows if v not in (None, "")]
    out += [""]
    if req.engine:
        out += [
            "TensorRT engines run only on the GPU architecture and the TensorRT-LLM/TensorRT versions they were built "
            "with. `trtq pull` checks this before it downloads anything.",
            "",
        ]
    out += _evaluation(m, artifact_dir)
    repo = url.removeprefix("hf://")
    out += [
        "## How to run it",
        "",
        "```bash",
        "pip install trtq   # inside nvcr.io/nvidia/tensorrt-llm/release:1.2.1 for engines",
        f"trtq pull hf://{repo} ./{m.name}      # downloads, checks every sha256 and this machine's compatibility",
        f"trtq show ./{m.name}",
        f'trtq run ./{m.name} "What is the capital of France?"',
        "```",
        "",
    ]
    if m.world_size > 1:
        out += [f"It runs on {m.world_size} GPUs (one MPI rank per GPU; `trtq run` starts them).", ""]
    out += ["## Files", "", "| file | size | sha256 |", "|---|---|---|"]
    out += [f"| `{f.path}` | {human_bytes(f.size)} | `{f.sha256[:16]}…` |" for f in m.files]
    out += ["", "`manifest.json` lists every file with its full sha256; `trtq pull` verifies them all.", ""]
    return "\n".join(out)


def _evaluation(m: Manifest, artifact_dir: Path) -> list[str]:
    """The report's own table and plots when the artifact has a report/, else verify results from the manifest."""
    report_files = [f.path for f in m.files if f.path.startswith("report/")]
    out: list[str] = []
    texts = [p for p in report_files if p.endswith(".md")]
    images = [p for p in report_files if p.lower().endswith(_IMAGES)]
    if texts or images:
        out += ["## Evaluation", ""]
        main = next((p for p in texts if Path(p).name.lower() in ("report.md", "readme.md", "summary.md")), None)
        main = main or (texts[0] if texts else None)
        if main is not None:
            text = (artifact_dir / main).read_text(encoding="utf-8", errors="replace").strip()
            # The report links its plots relative to report/; the card sits at the artifact's root.
            for p in images:
                if Path(p).parent == Path(main).parent:
                    text = text.replace(f"]({Path(p).name})", f"]({p})")
            # The report's own title would be a second H1 in the card: demote its headings one level.
            out += [_demote(text), ""]
        for p in images:
            if main is not None and f"]({p})" in text:
                continue  # the report already shows it
            out += [f"![{Path(p).stem}]({p})", ""]
    elif m.verify:
        out += ["## Verification", "", "| check | result |", "|---|---|"]
        for k, v in m.verify.items():
            out.append(f"| {k} | {_cell(v)} |")
        out += [""]
    return out


def _demote(text: str) -> str:
    lines = []
    fence = False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
        lines.append("#" + line if not fence and line.startswith("#") else line)
    return "\n".join(lines)


def _cell(v) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k} {_cell(x)}" for k, x in v.items())
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "\\|")
