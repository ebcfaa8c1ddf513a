"""A Triton model repository for an artifact's engines: TensorRT-LLM's inflight_batcher_llm layout.

    OUT/preprocessing/config.pbtxt  + 1/model.py   (python backend: tokenizer, from the backend's own templates)
    OUT/tensorrt_llm/config.pbtxt   + 1/           (the C++ `tensorrtllm` backend on engine/)
    OUT/postprocessing/config.pbtxt + 1/model.py   (python backend: detokenizer)
    OUT/ensemble/config.pbtxt       + 1/           (text in, text out: preprocessing -> tensorrt_llm -> postprocessing)

The config.pbtxt files are rendered from the fields of the backend's templates (runtime/serve/_triton_fields.py),
then filled the way the backend's tools/fill_template.py fills them: `${name}` placeholders get trtq's values from
the artifact (engine batch size and beam width, engine and tokenizer paths, KV-cache settings) and the ones trtq
does not set stay as they are, which the backend reads as unset. Every file is then parsed with the protobuf text
format of Triton's ModelConfig (tritonclient's model_config_pb2); a placeholder left in a number or enum field fails
that parse. The two python models' model.py come from the backend (`--templates DIR`, by default
/app/all_models/inflight_batcher_llm inside the Triton TensorRT-LLM container); trtq does not ship them.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

from runtime.errors import CheckpointError
from runtime.serve import _triton_fields as F

MODELS = ("preprocessing", "tensorrt_llm", "postprocessing", "ensemble")
CONTAINER_TEMPLATES = Path("/app/all_models/inflight_batcher_llm")
TRITON_CONTAINER = "nvcr.io/nvidia/tritonserver:25.12-trtllm-python-py3"


@dataclass
class TritonRepo:
    out: Path
    values: dict[str, str]
    files: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # python model files not copied (no templates)


def values_for(
    artifact: Path,
    *,
    engine_dir: str | None = None,
    tokenizer_dir: str | None = None,
    kv_cache_free_gpu_mem_fraction: float = 0.9,
    max_queue_size: int = 0,
    instances: int = 1,
    decoupled: bool = True,
) -> dict[str, str]:
    """The fill_template substitutions for ``artifact``'s engines. Paths default to the artifact's own (absolute),
    or pass the paths under which Triton's container will see them."""
    cfg_path = artifact / "engine" / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(
            f"{artifact}: no engines (engine/config.json): Triton's TensorRT-LLM backend runs engines; build them "
            "with targets: [engine] inside the TensorRT-LLM container"
        )
    bc = json.loads(cfg_path.read_text()).get("build_config") or {}
    plugins = bc.get("plugin_config") or {}
    from runtime.select import tokenizer_dir as find_tokenizer

    return {
        "triton_backend": "tensorrtllm",
        "triton_max_batch_size": str(int(bc.get("max_batch_size") or 64)),
        "decoupled_mode": "true" if decoupled else "false",
        "max_queue_delay_microseconds": "0",
        "max_queue_size": str(int(max_queue_size)),
        "engine_dir": engine_dir or str((artifact / "engine").resolve()),
        "tokenizer_dir": tokenizer_dir or str(find_tokenizer(artifact).resolve()),
        "batching_strategy": "inflight_fused_batching",
        "max_beam_width": str(int(bc.get("max_beam_width") or 1)),
        "kv_cache_free_gpu_mem_fraction": str(float(kv_cache_free_gpu_mem_fraction)),
        # block reuse needs paged context FMHA in the engine
        "enable_kv_cache_reuse": "true" if plugins.get("use_paged_context_fmha", True) else "false",
        "batch_scheduler_policy": "guaranteed_no_evict",
        "exclude_input_in_output": "true",
        "logits_datatype": "TYPE_FP32",
        "encoder_input_features_data_type": "TYPE_FP16",
        "prompt_embedding_table_data_type": "TYPE_FP16",
        "preprocessing_instance_count": str(int(instances)),
        "postprocessing_instance_count": str(int(instances)),
        "skip_special_tokens": "true",
        "add_special_tokens": "true",
    }


# ---------------------------------------------------------------------------------------------- rendering
def _tensor(t: tuple, is_input: bool) -> str:
    name, dtype, dims = t[0], t[1], t[2]
    flags = t[3] if is_input else ""
    dt = dtype if dtype.startswith("${") else f"TYPE_{dtype}"
    lines = [f'    name: "{name}"', f"    data_type: {dt}", f"    dims: [ {', '.join(str(d) for d in dims)} ]"]
    if "s" in flags:
        lines.append("    reshape: { shape: [ ] }")
    if "o" in flags:
        lines.append("    optional: true")
    if "r" in flags:
        lines.append("    allow_ragged_batch: true")
    return "  {\n" + "\n".join(lines) + "\n  }"


def _tensors(kind: str, items: tuple, is_input: bool) -> str:
    return f"{kind} [\n" + ",\n".join(_tensor(t, is_input) for t in items) + "\n]\n"


def _parameters(items: tuple) -> str:
    return "".join(f'parameters: {{\n  key: "{k}"\n  value: {{\n    string_value: "{v}"\n  }}\n}}\n' for k, v in items)


def _batching() -> str:
    return (
        "dynamic_batching {\n    preferred_batch_size: [ ${triton_max_batch_size} ]\n"
        "    max_queue_delay_microseconds: ${max_queue_delay_microseconds}\n"
        "    default_queue_policy: { max_queue_size: ${max_queue_size} }\n}\n"
    )


def render(model: str) -> str:
    """The template of ``model`` (placeholders unfilled), rendered from the field tables."""
    if model == "preprocessing":
        return (
            'name: "preprocessing"\nbackend: "python"\nmax_batch_size: ${triton_max_batch_size}\n'
            + _batching()
            + _tensors("input", F.PREPROCESSING_INPUTS, True)
            + _tensors("output", F.PREPROCESSING_OUTPUTS, False)
            + _parameters(F.PREPROCESSING_PARAMETERS)
            + "instance_group [\n  {\n    count: ${preprocessing_instance_count}\n    kind: KIND_CPU\n  }\n]\n"
        )
    if model == "postprocessing":
        return (
            'name: "postprocessing"\nbackend: "python"\nmax_batch_size: ${triton_max_batch_size}\n'
            "dynamic_batching {}\n"
            + _tensors("input", F.POSTPROCESSING_INPUTS, True)
            + _tensors("output", F.POSTPROCESSING_OUTPUTS, False)
            + _parameters(F.POSTPROCESSING_PARAMETERS)
            + "instance_group [\n  {\n    count: ${postprocessing_instance_count}\n    kind: KIND_CPU\n  }\n]\n"
        )
    if model == "tensorrt_llm":
        return (
            'name: "tensorrt_llm"\nbackend: "${triton_backend}"\nmax_batch_size: ${triton_max_batch_size}\n'
            "model_transaction_policy {\n  decoupled: ${decoupled_mode}\n}\n"
            + _batching()
            + _tensors("input", F.TENSORRT_LLM_INPUTS, True)
            + _tensors("output", F.TENSORRT_LLM_OUTPUTS, False)
            + "instance_group [\n  {\n    count: 1\n    kind : KIND_CPU\n  }\n]\n"
            + _parameters(F.TENSORRT_LLM_PARAMETERS)
        )
    if model == "ensemble":
        steps = []
        for name, inputs, outputs in F.ENSEMBLE_STEPS:
            maps = [f'      input_map {{\n        key: "{k}"\n        value: "{v}"\n      }}' for k, v in inputs]
            maps += [f'      output_map {{\n        key: "{k}"\n        value: "{v}"\n      }}' for k, v in outputs]
            steps.append(f'    {{\n      model_name: "{name}"\n      model_version: -1\n' + "\n".join(maps) + "\n    }")
        return (
            'name: "ensemble"\nplatform: "ensemble"\nmax_batch_size: ${triton_max_batch_size}\n'
            + _tensors("input", F.ENSEMBLE_INPUTS, True)
            + _tensors("output", F.ENSEMBLE_OUTPUTS, False)
            + "ensemble_scheduling {\n  step [\n"
            + ",\n".join(steps)
            + "\n  ]\n}\n"
        )
    raise ValueError(model)


def fill(template: str, values: dict[str, str]) -> str:
    """tools/fill_template.py's substitution: Template.safe_substitute (placeholders without a value stay)."""
    return Template(template).safe_substitute(values)


def parse(text: str, where: str):
    """Parse a config.pbtxt as Triton's ModelConfig; a CheckpointError names the file and the problem."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError as e:
        raise CheckpointError(
            f"checking {where} needs Triton's model config protobuf: pip install 'tritonclient[grpc]' ({e})"
        ) from None
    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as e:
        raise CheckpointError(f"{where}: not a valid Triton model config: {e}") from None


def write_repo(artifact: Path, out: Path, values: dict[str, str], templates: Path | None = None) -> TritonRepo:
    """Write (and check) the model repository; copies the python models' code from ``templates`` when given."""
    out.mkdir(parents=True, exist_ok=True)
    repo = TritonRepo(out, values)
    for model in MODELS:
        text = fill(render(model), values)
        cfg = parse(text, f"{out / model / 'config.pbtxt'}")
        if cfg.name != model:
            raise CheckpointError(f"{out / model}: config names {cfg.name!r}")
        (out / model / "1").mkdir(parents=True, exist_ok=True)
        path = out / model / "config.pbtxt"
        path.write_text(text)
        repo.files.append(path)
        if model in ("preprocessing", "postprocessing"):
            src = templates / model / "1" / "model.py" if templates else None
            dst = out / model / "1" / "model.py"
            if src is not None and src.is_file():
                shutil.copyfile(src, dst)
                repo.files.append(dst)
            else:
                repo.missing.append(str(dst.relative_to(out)))
    return repo


def check_repo(out: Path) -> dict[str, Any]:
    """Parse every config.pbtxt under ``out``; returns {model: ModelConfig}."""
    return {p.parent.name: parse(p.read_text(), str(p)) for p in sorted(out.glob("*/config.pbtxt"))}
