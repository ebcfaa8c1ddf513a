"""Where `trtq plan` reads the model's shape from, without downloading or loading weights.

In order: `--config FILE|DIR`; for a hub model, a snapshot under $TRTQ_HUB_CONFIGS/<org>/<name>/config.json, then the
Hugging Face cache / hub (config.json only, via hf_hub_download; honours HF_HUB_OFFLINE); a local model's config.json;
a GGUF file's metadata (read with the gguf package, no tensors loaded).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from builder.errors import ModelSourceError
from builder.recipe.schema import Recipe

HUB_CONFIGS_ENV = "TRTQ_HUB_CONFIGS"


def model_config(recipe: Recipe, recipe_dir: Path, config: Path | None = None) -> tuple[dict[str, Any], str]:
    """(HF-style config dict, where it came from) for the recipe's model."""
    if config is not None:
        path = config / "config.json" if config.is_dir() else config
        if not path.is_file():
            raise ModelSourceError(f"--config: no such file: {path}")
        return json.loads(path.read_text()), str(path)
    spec = recipe.model
    if spec.kind == "path":
        from builder.model.source import local_path

        path = local_path(spec, recipe_dir) / "config.json"
        return json.loads(path.read_text()), str(path)
    if spec.kind == "gguf":
        from builder.model.source import gguf_path

        path = gguf_path(spec, recipe_dir)
        return gguf_config(path), str(path)
    snapshots = os.environ.get(HUB_CONFIGS_ENV)
    if snapshots:
        path = Path(snapshots) / spec.hub / "config.json"
        if path.is_file():
            return json.loads(path.read_text()), str(path)
    try:
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(spec.hub, "config.json", revision=spec.revision))
    except Exception as e:  # offline, gated, missing: all mean "no config here"
        raise ModelSourceError(
            f"model.hub: cannot read {spec.hub}'s config.json ({type(e).__name__}): pass --config PATH, or set "
            f"{HUB_CONFIGS_ENV} to a directory holding <org>/<name>/config.json"
        ) from None
    return json.loads(path.read_text()), str(path)


def gguf_config(path: Path) -> dict[str, Any]:
    """The HF config fields `plan` needs, from a GGUF file's metadata."""
    from builder._deps import require

    gguf = require("gguf", "Reading a GGUF file's metadata")
    reader = gguf.GGUFReader(str(path))

    def field(key: str):
        f = reader.fields.get(key)
        if f is None:
            return None
        value = f.parts[f.data[0]]
        return value.tobytes().decode() if f.types and f.types[0] == gguf.GGUFValueType.STRING else value[0].item()

    arch = field("general.architecture")
    if arch is None:
        raise ModelSourceError(f"model.gguf: {path} has no general.architecture")
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    names = {t.name for t in reader.tensors}
    heads = int(field(f"{arch}.attention.head_count"))
    hidden = int(field(f"{arch}.embedding_length"))
    return {
        "architectures": [{"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}.get(arch, arch)],
        "model_type": arch,
        "hidden_size": hidden,
        "intermediate_size": int(field(f"{arch}.feed_forward_length")),
        "num_hidden_layers": int(field(f"{arch}.block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(field(f"{arch}.attention.head_count_kv") or heads),
        "head_dim": int(field(f"{arch}.attention.key_length") or hidden // heads),
        "vocab_size": len(tokens.data) if tokens is not None else int(field(f"{arch}.vocab_size")),
        "tie_word_embeddings": "output.weight" not in names,
    }
