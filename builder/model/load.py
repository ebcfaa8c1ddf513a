"""Loading the resolved Hugging Face model (heavy imports stay inside the functions)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from builder._deps import require, version

log = logging.getLogger("trtq.model")

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)


def read_config(model_dir: Path) -> dict[str, Any]:
    return json.loads((Path(model_dir) / "config.json").read_text())


def export_dtype(recipe_dtype: str, config: dict[str, Any]) -> str:
    """'float16' or 'bfloat16': the recipe's choice, or the model's own dtype (float32 models export float16)."""
    if recipe_dtype != "auto":
        return recipe_dtype
    own = str(config.get("torch_dtype") or config.get("dtype") or "float16").replace("torch.", "")
    if own in ("float16", "bfloat16"):
        return own
    log.info("dtype float16: the model is stored as %s; TensorRT-LLM checkpoints are float16 or bfloat16", own)
    return "float16"


def load_model(model_dir: Path, dtype: str, trust_remote_code: bool = False, device: str = "cpu"):
    """Load a causal LM for export or calibration, in eval mode."""
    torch = require("torch", "Loading the model")
    transformers = require("transformers", "Loading the model")
    torch_dtype = getattr(torch, dtype)
    # transformers renamed torch_dtype= to dtype= in 4.56; the 1.2.1 container ships an older one.
    key = "dtype" if _at_least(version("transformers"), (4, 56)) else "torch_dtype"
    from safetensors import SafetensorError

    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(model_dir), trust_remote_code=trust_remote_code, low_cpu_mem_usage=True, **{key: torch_dtype}
        )
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:
        # A model whose files disagree with each other (shapes vs config.json) or that transformers cannot read;
        # trtq's own checks in the resolve stage catch the common cases first with a more precise message.
        from builder.errors import ModelSourceError

        detail = _mismatch(transformers, torch, model_dir, trust_remote_code) or str(e).strip().splitlines()[0][:300]
        raise ModelSourceError(f"model: transformers cannot load {model_dir}: {detail}") from None
    return model.to(device).eval()


def _mismatch(transformers, torch, model_dir: Path, trust_remote_code: bool) -> str | None:
    """The first tensor whose shape in the weights differs from what config.json builds (None when all agree)."""
    try:
        from safetensors import safe_open

        config = transformers.AutoConfig.from_pretrained(str(model_dir), trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            skeleton = transformers.AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
        want = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
        for path in sorted(Path(model_dir).glob("*.safetensors")):
            with safe_open(str(path), framework="pt") as f:
                for name in f.keys():  # noqa: SIM118
                    got = tuple(f.get_slice(name).get_shape())
                    if name in want and want[name] != got:
                        return (
                            f"{name} in {path.name} is {list(got)} but config.json describes {list(want[name])}: "
                            "the config does not match the weights"
                        )
    except Exception:  # explaining is best effort; the caller falls back to transformers' own message
        return None
    return None


def copy_tokenizer(model_dir: Path, dest: Path) -> list[str]:
    """Copy the tokenizer (and generation config) next to an export so runners need nothing else."""
    copied = []
    for name in TOKENIZER_FILES:
        src = Path(model_dir) / name
        if src.is_file():
            shutil.copyfile(src, Path(dest) / name)
            copied.append(name)
    return copied


def _at_least(ver: str | None, want: tuple[int, ...]) -> bool:
    if not ver:
        return False
    parts = []
    for p in ver.split(".")[: len(want)]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts) >= want
