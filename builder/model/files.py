"""Check a model's weight files before anything loads them: truncated or corrupt safetensors, missing shards, and a
config.json that disagrees with the weights' shapes each become one clear line instead of a deep library traceback.

Only the safetensors headers are read (a few KiB per file), so this is cheap even for a 70B checkpoint. Flipped bits
inside the tensor data cannot be seen from the header; a hub download is checked by huggingface_hub's own hashes.
"""

from __future__ import annotations

import json
import math
import re
import struct
from pathlib import Path
from typing import Any

from builder.checkpoint._safetensors import ITEM_SIZE as _DTYPE_BYTES
from builder.checkpoint._safetensors import MAX_HEADER as _MAX_HEADER
from builder.errors import ModelSourceError

_EMBEDDINGS = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight")
_LAYER = re.compile(r"\.(?:layers|h|blocks)\.(\d+)\.")


def read_header(path: Path) -> dict[str, dict[str, Any]]:
    """The tensors of a safetensors file (name -> dtype, shape, data_offsets), checked against the file's size."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ModelSourceError(f"model: {path} is not a safetensors file (only {size} bytes): re-download it")
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER or n > size - 8:
            raise ModelSourceError(
                f"model: {path} is truncated or not a safetensors file (its header claims {n} bytes; the file has "
                f"{size}): re-download it"
            )
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelSourceError(f"model: {path} has a corrupt safetensors header ({e}): re-download it") from None
    if not isinstance(header, dict):
        raise ModelSourceError(f"model: {path} has a corrupt safetensors header (not a JSON object): re-download it")
    data = size - 8 - n
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    end_max = 0
    for name, t in tensors.items():
        try:
            dtype, shape, (start, end) = t["dtype"], [int(d) for d in t["shape"]], t["data_offsets"]
            start, end = int(start), int(end)
        except (TypeError, KeyError, ValueError):
            raise ModelSourceError(f"model: {path}: the header entry of {name} is malformed: re-download it") from None
        if end > data or start > end:
            raise ModelSourceError(
                f"model: {path} is truncated: {name} ends at byte {end} of the data but the file holds only {data}: "
                "re-download it"
            )
        width = _DTYPE_BYTES.get(dtype)
        if width is not None and (end - start) != math.prod(shape) * width:
            raise ModelSourceError(
                f"model: {path} is corrupt: {name} is {dtype} {shape} ({math.prod(shape) * width} bytes) but its "
                f"header gives it {end - start} bytes: re-download it"
            )
        end_max = max(end_max, end)
    if end_max != data:
        raise ModelSourceError(
            f"model: {path} is corrupt: its tensors cover {end_max} bytes but the file holds {data} bytes of data"
        )
    return tensors


def check_weights(root: Path, config: dict[str, Any]) -> None:
    """Every safetensors file of the model is whole, every indexed shard exists, and the shapes fit config.json."""
    root = Path(root)
    files = sorted(root.glob("*.safetensors"))
    index = root / "model.safetensors.index.json"
    if index.is_file():
        try:
            wanted = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise ModelSourceError(f"model: {index} is not a valid shard index ({e}): re-download it") from None
        missing = sorted(w for w in wanted if not (root / w).is_file())
        if missing:
            raise ModelSourceError(f"model: {root} lacks shards listed in {index.name}: {', '.join(missing[:3])}")
    shapes: dict[str, tuple[str, list[int]]] = {}
    for f in files:
        for name, t in read_header(f).items():
            shapes[name] = (f.name, t["shape"])
    if shapes:
        check_config_shapes(root / "config.json", config, shapes)


def check_config_shapes(config_path: Path, config: dict[str, Any], shapes: dict[str, tuple[str, list[int]]]) -> None:
    """config.json must describe the weights: hidden size and vocabulary (embedding) and the number of layers."""
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    hidden = text.get("hidden_size", text.get("n_embd"))
    vocab = text.get("vocab_size")
    layers = text.get("num_hidden_layers", text.get("n_layer"))
    for name, (file, shape) in shapes.items():
        if name.endswith(_EMBEDDINGS) and len(shape) == 2:
            if hidden is not None and shape[1] != hidden:
                raise ModelSourceError(
                    f"model: {config_path} says hidden_size {hidden} but {name} in {file} is {shape}: "
                    "the config does not describe these weights"
                )
            if vocab is not None and shape[0] != vocab:
                raise ModelSourceError(
                    f"model: {config_path} says vocab_size {vocab} but {name} in {file} is {shape}: "
                    "the config does not describe these weights"
                )
            break
    found = {int(m.group(1)) for name in shapes if (m := _LAYER.search(name))}
    if layers is not None and found and max(found) + 1 != layers:
        raise ModelSourceError(
            f"model: {config_path} says num_hidden_layers {layers} but the weights hold {max(found) + 1} layers: "
            "the config does not describe these weights"
        )
