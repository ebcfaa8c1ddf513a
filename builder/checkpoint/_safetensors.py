"""Read and write the safetensors format with numpy alone (no torch), byte for byte.

numpy has no bfloat16 or float8, and resharding only moves bytes, so every tensor is held as unsigned integers of
its element size (F16/BF16 -> uint16, F8_E4M3 -> uint8, F32 -> uint32, ...). Zero padding is then the all-zero bit
pattern, which is +0.0 in every float format, as torch's zero padding is.

Format (https://github.com/huggingface/safetensors#format): 8-byte little-endian header length N, N bytes of JSON
{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}?}, then the tensor bytes, offsets
counted from the end of the header.
"""

from __future__ import annotations

import json
import mmap
import struct
from pathlib import Path

# Element sizes, in the order the safetensors library (0.8) lays tensors out in a file (its Dtype enum, largest
# first; then by name).
ITEM_SIZE = {
    "U64": 8,
    "I64": 8,
    "F64": 8,
    "F32": 4,
    "U32": 4,
    "I32": 4,
    "BF16": 2,
    "F16": 2,
    "U16": 2,
    "I16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}
_ORDER = {dtype: i for i, dtype in enumerate(ITEM_SIZE)}
_RAW = {1: "u1", 2: "<u2", 4: "<u4", 8: "<u8"}  # numpy dtypes of the raw elements, by item size
MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit


class Tensor:
    """One tensor: its safetensors dtype name and its elements as raw unsigned integers (a view where possible)."""

    __slots__ = ("dtype", "data")

    def __init__(self, dtype: str, data):
        self.dtype = dtype
        self.data = data

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)


def read(path: Path) -> tuple[dict[str, Tensor], dict[str, str] | None]:
    """Map ``path`` and return {name: Tensor} (views into the mapping, read-only) and its ``__metadata__``."""
    import numpy as np  # here, not at import: builder.model.files shares this module's tables at CLI start-up

    with open(path, "rb") as f:
        size = path.stat().st_size
        if size < 8:
            raise ValueError(f"{path}: not a safetensors file ({size} bytes)")
        (n,) = struct.unpack("<Q", f.read(8))
        if n > min(MAX_HEADER, size - 8):
            raise ValueError(f"{path}: header length {n} is impossible for a {size}-byte file")
        header = json.loads(f.read(n))
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size > 8 + n else b""
    metadata = header.pop("__metadata__", None)
    body = 8 + n
    tensors = {}
    for name, info in header.items():
        dtype, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
        if dtype not in ITEM_SIZE:
            raise ValueError(f"{path}: tensor {name} has dtype {dtype}, which this reader does not know")
        raw = np.dtype(_RAW[ITEM_SIZE[dtype]])
        count = int(np.prod(shape, dtype=np.int64))
        if end - begin != count * raw.itemsize or body + end > size:
            raise ValueError(f"{path}: tensor {name} {dtype}{list(shape)} has data_offsets {[begin, end]}")
        data = np.frombuffer(buf, dtype=raw, count=count, offset=body + begin) if count else np.empty(0, raw)
        tensors[name] = Tensor(dtype, data.reshape(shape))
    return tensors, metadata


def write(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` as safetensors, laid out as the safetensors library (0.8) does: by dtype in its order, then by
    name; compact JSON header padded with spaces to 8 bytes. The same tensors then give the same file, byte for byte."""
    import numpy as np

    order = sorted(tensors, key=lambda k: (_ORDER[tensors[k].dtype], k))
    header: dict = {"__metadata__": metadata} if metadata is not None else {}
    offset = 0
    for name in order:
        t = tensors[name]
        nbytes = t.data.size * ITEM_SIZE[t.dtype]
        if t.data.dtype.itemsize != ITEM_SIZE[t.dtype]:
            raise ValueError(f"tensor {name}: {t.data.dtype} elements held for dtype {t.dtype}")
        header[name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name in order:
            data = tensors[name].data
            if data.size:
                f.write(np.ascontiguousarray(data).reshape(-1).view(np.uint8))
