"""The calibrated state of the quantize stage, saved once and restored for every later export and check.

`modelopt_state.pth` is ModelOpt's own restore state (written with torch.save by the quantize stage),
`model.safetensors` the calibrated weights and quantizer buffers (SmoothQuant and AWQ rescale weights in place),
`calibration.json` what was done, with which data and how long.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from builder._deps import require
from builder.model.load import load_model
from builder.recipe.schema import Recipe

log = logging.getLogger("trtq.quantize")

STATE = "modelopt_state.pth"
WEIGHTS = "model.safetensors"
SUMMARY = "calibration.json"


def save_weights(model, path: Path) -> None:
    """The model's state as safetensors, streamed tensor by tensor. safetensors' own save_model first turns every
    tensor into bytes, a second copy of the model in memory at the build's peak. Names that alias one storage (tied
    embeddings) are dropped as save_model drops them, so safetensors' load_model restores them the same way."""
    import torch
    from safetensors.torch import _remove_duplicate_names

    from builder.checkpoint import _safetensors as st

    names = {
        torch.float64: "F64",
        torch.float32: "F32",
        torch.bfloat16: "BF16",
        torch.float16: "F16",
        torch.float8_e4m3fn: "F8_E4M3",
        torch.float8_e5m2: "F8_E5M2",
        torch.int64: "I64",
        torch.int32: "I32",
        torch.int16: "I16",
        torch.int8: "I8",
        torch.uint8: "U8",
        torch.bool: "BOOL",
    }
    raw = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}  # numpy has no bfloat16 or fp8
    state = model.state_dict()
    for dropped in _remove_duplicate_names(state).values():
        for name in dropped:
            del state[name]
    tensors = {}
    for name, t in state.items():
        t = t.detach().contiguous()
        tensors[name] = st.Tensor(names[t.dtype], t.view(raw[t.element_size()]).numpy())
    st.write(path, tensors)


def restore_quantized(recipe: Recipe, model_dir: Path, quantize_dir: Path, export_dtype_name: str):
    """Rebuild the calibrated model from the stage's files (on the CPU) for export."""
    torch = require("torch", "Restoring the calibrated model")
    mto = require("modelopt.torch.opt", "Restoring the calibrated model")
    from safetensors.torch import load_model as load_weights

    summary = json.loads((quantize_dir / SUMMARY).read_text())
    model = load_model(model_dir, summary["dtype"], recipe.model.trust_remote_code)
    # Our own file, written by the quantize stage above; ModelOpt's state holds Python objects, hence no weights_only.
    state = torch.load(quantize_dir / STATE, weights_only=False, map_location="cpu")
    model = mto.restore_from_modelopt_state(model, state)
    load_weights(model, str(quantize_dir / WEIGHTS), strict=True)
    log.debug("restored calibrated %s model for %s export", summary["format"], export_dtype_name)
    return model.eval()
