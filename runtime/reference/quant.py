"""Quantized linear layers with TensorRT-LLM's semantics, rebuilt from the checkpoint's tensors.

Every rule below is written from the source that defines it (paths in NVIDIA/TensorRT-LLM unless marked ModelOpt):

- Which class runs a linear per quant_algo: tensorrt_llm/quantization/quantize.py `quantize()`:
  FP8 -> FP8Linear/FP8RowLinear; W8A8_SQ_PER_CHANNEL (not a *_PLUGIN algo) -> `smooth_quantize_ootb` ->
  Int8SmoothQuantLinear/Int8SmoothQuantRowLinear; W4A16_AWQ/W4A8_AWQ -> WeightOnlyGroupwiseQuant*Linear;
  W8A16/W4A16 -> WeightOnlyQuant*Linear (per-channel, no groups).
- What the checkpoint tensors become at load: tensorrt_llm/models/modeling_utils.py `preprocess_weights` /
  `preprocess_perlayer_weights` (AWQ scales transposed and cast to the model dtype; W4A8 scale rewrites; FP8 weights
  viewed as e4m3; W8A16/W4A16 quantized by `weight_only_quantize_dict`).
- How ModelOpt packs them: modelopt/torch/export/quant_utils.py `to_quantized_weight`, `pack_int4_in_uint8`,
  `get_scaling_factor` (scale = amax / maxbound) (ModelOpt 0.47).

Compute choice (documented): weights are dequantized ONCE at load to float32 and every matmul runs in float32.
The quantization *grid* (which values a weight/activation can take) is exactly TensorRT-LLM's; only the accumulation
precision differs from a GPU kernel (fp32 here vs fp16/bf16/fp8 tensor cores there), which is far below the
quantization error being checked.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from runtime.errors import CheckpointError

FP8_MAX = 448.0  # float8_e4m3fn largest finite value

# tensorrt_llm/quantization/functional.py weight_only_quantize_dict: the linears quantized at load for W8A16/W4A16.
WEIGHT_ONLY_NAMES = ("qkv", "dense", "fc", "proj", "gate")


def qdq_int8(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Static per-tensor int8 quantize->dequantize: TensorRT's IQuantizeLayer (round to nearest even, saturate to
    [-128, 127]) as used by Int8SmoothQuantLinear.forward (tensorrt_llm/quantization/layers.py)."""
    return torch.clamp(torch.round(x / scale), -128, 127) * scale


def qdq_fp8(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Static per-tensor FP8 (e4m3) quantize->dequantize: FP8Linear.forward (tensorrt_llm/quantization/layers.py)
    `quantize(x, activation_scaling_factor, 'fp8')` then `dequantize(...)`; values saturate at +-448."""
    return torch.clamp(x / scale, -FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).to(x.dtype) * scale


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of ModelOpt's `pack_int4_in_uint8` (modelopt/torch/export/quant_utils.py): a (out/2, in) int8 tensor
    whose byte [j, i] holds w[2j, i] in the low nibble and w[2j+1, i] in the high nibble, each a signed 4-bit value."""
    b = packed.view(torch.uint8).to(torch.int16)
    lo, hi = b & 0x0F, (b >> 4) & 0x0F
    lo = torch.where(lo >= 8, lo - 16, lo)
    hi = torch.where(hi >= 8, hi - 16, hi)
    out = torch.empty((packed.shape[0] * 2, packed.shape[1]), dtype=torch.float32)
    out[0::2] = lo.float()
    out[1::2] = hi.float()
    return out


def weight_only_quantize(w: torch.Tensor, bits: int, dtype: torch.dtype) -> torch.Tensor:
    """W8A16/W4A16 quantization at load, as TensorRT-LLM does it (weight_only_quantize ->
    torch.ops.trtllm.symmetric_quantize_last_axis_of_batched_matrix, cpp/tensorrt_llm/kernels/cutlass_kernels/
    cutlass_preprocessors.cpp): per output channel, scale = max|w| / 2^(bits-1) (128 for int8, 8 for int4), stored in
    the model dtype; q = round(w / scale) clamped to [-128, 127] / [-8, 7]. Returns the dequantized weight (fp32)."""
    w = w.float()
    amax = w.abs().amax(dim=1, keepdim=True).clamp_min(1e-12)
    scale = amax / float(1 << (bits - 1))
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    q = torch.clamp(torch.round(w / scale), lo, hi)
    return q * scale.to(dtype).float()


class QLinear:
    """y = act_q(x * pre_scale) @ W^T (+ bias). W is the dequantized weight of THIS rank's shard, float32."""

    __slots__ = ("name", "weight", "bias", "pre_scale", "act_q", "kind")

    def __init__(self, name, weight, bias=None, pre_scale=None, act_q: Callable | None = None, kind: str = "none"):
        self.name = name
        self.weight = weight
        self.bias = bias
        self.pre_scale = pre_scale
        self.act_q = act_q
        self.kind = kind

    def __call__(self, x: torch.Tensor, add_bias: bool = True) -> torch.Tensor:
        if self.pre_scale is not None:
            x = x * self.pre_scale
        if self.act_q is not None:
            x = self.act_q(x)
        return torch.nn.functional.linear(x, self.weight, self.bias if add_bias else None)


def _get(tensors: dict[str, torch.Tensor], key: str, shard: str) -> torch.Tensor:
    if key not in tensors:
        raise CheckpointError(f"{shard}: tensor {key} is missing")
    return tensors[key]


def build_linear(
    tensors: dict[str, torch.Tensor],
    prefix: str,
    algo: str | None,
    dtype: torch.dtype,
    shape: tuple[int, int],
    shard: str,
    group_size: int = 128,
    quantize_weight_only: bool = True,
) -> QLinear:
    """The linear ``prefix`` of one rank's shard, with the semantics of ``algo``; ``shape`` = expected (out, in) of
    this rank's shard (a wrongly split checkpoint fails here, naming the tensor)."""
    w = _get(tensors, f"{prefix}.weight", shard)
    bias = tensors.get(f"{prefix}.bias")
    bias = None if bias is None else bias.float()
    wsf = tensors.get(f"{prefix}.weights_scaling_factor")
    asf = tensors.get(f"{prefix}.activation_scaling_factor")
    pre = tensors.get(f"{prefix}.prequant_scaling_factor")
    leaf = prefix.rsplit(".", 1)[-1]
    pre_scale, act_q, kind = None, None, "none"

    if algo in ("W4A16_AWQ", "W4A8_AWQ") and w.dtype in (torch.int8, torch.uint8):
        # Packed int4 with per-group scales (ModelOpt pack_int4_in_uint8; scales (out, in/group), fp32).
        if wsf is None:
            raise CheckpointError(f"{shard}: {prefix}.weights_scaling_factor is missing for packed int4 weights")
        q = unpack_int4(w)
        if wsf.dim() != 2 or wsf.shape[0] != q.shape[0] or q.shape[1] % wsf.shape[1]:
            raise CheckpointError(
                f"{shard}: {prefix}.weights_scaling_factor has shape {tuple(wsf.shape)}, which does not fit int4 "
                f"weights of shape {tuple(q.shape)}"
            )
        group = q.shape[1] // wsf.shape[1]
        if algo == "W4A16_AWQ":
            # preprocess_perlayer_weights: scales transposed and cast to the model dtype; the groupwise kernel
            # computes (x * pre_quant_scale) @ (int4 * scale) (weight_only_groupwise_quant_matmul).
            scale = wsf.to(dtype).float()
            weight = q * scale.repeat_interleave(group, dim=1)
            kind = "int4_awq"
        else:
            # W4A8_AWQ, preprocess_perlayer_weights: weights_scaling_factor /= weights_scaling_factor_2 (then fp16),
            # prequant_scaling_factor /= activation_scaling_factor, alpha = activation_sf * weights_sf_2.
            # The kernel multiplies an e4m3 activation by the int4 weight dequantized with that scale to e4m3
            # (FP8 tensor-core MMA) and rescales the output by alpha. Written here as: W = e4m3(int4 * s/s2) * s2,
            # x = qdq_fp8(x * pre, act_sf) -- the same grid as ModelOpt's W4A8_AWQ fake quantization.
            s2 = _get(tensors, f"{prefix}.weights_scaling_factor_2", shard).float().reshape(())
            if asf is None:
                raise CheckpointError(f"{shard}: {prefix}.activation_scaling_factor is missing (W4A8_AWQ)")
            scale = (wsf.float() / s2).to(torch.float16).float()
            weight = q * scale.repeat_interleave(group, dim=1)
            weight = torch.clamp(weight, -FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).float() * s2
            a = asf.float().reshape(())
            act_q = lambda x, a=a: qdq_fp8(x, a)  # noqa: E731
            kind = "w4a8_awq"
        if pre is not None:
            pre_scale = pre.float().reshape(-1)
    elif algo == "FP8" and w.dtype in (torch.float8_e4m3fn, torch.int8):
        # FP8Linear/FP8RowLinear: per-tensor weight scale, per-tensor static activation scale; int8-stored weights
        # are viewed as e4m3 (preprocess_perlayer_weights, FP8 branch).
        if wsf is None or asf is None:
            raise CheckpointError(
                f"{shard}: {prefix}: FP8 weights need weights_scaling_factor and activation_scaling_factor"
            )
        fp8 = w.view(torch.float8_e4m3fn) if w.dtype == torch.int8 else w
        weight = fp8.float() * wsf.float().reshape(())
        a = asf.float().reshape(())
        act_q = lambda x, a=a: qdq_fp8(x, a)  # noqa: E731
        kind = "fp8"
    elif algo == "W8A8_SQ_PER_CHANNEL" and w.dtype == torch.int8:
        # Int8SmoothQuantLinear/Int8SmoothQuantRowLinear (smooth_quantize_ootb): x * prequant_scaling_factor ->
        # int8 qdq with the per-tensor activation_scaling_factor; weight int8 with per-output-channel scales (axis 0).
        if wsf is None or asf is None:
            raise CheckpointError(
                f"{shard}: {prefix}: int8 SmoothQuant weights need weights_scaling_factor and activation_scaling_factor"
            )
        if wsf.numel() not in (1, w.shape[0]):
            raise CheckpointError(
                f"{shard}: {prefix}.weights_scaling_factor has {wsf.numel()} values for {w.shape[0]} output channels"
            )
        weight = w.float() * wsf.float().reshape(-1, 1)
        a = asf.float().reshape(())
        act_q = lambda x, a=a: qdq_int8(x, a)  # noqa: E731
        if pre is not None:
            pre_scale = pre.float().reshape(-1)
        kind = "int8_sq"
    elif algo in ("W8A16", "W4A16") and quantize_weight_only and leaf in WEIGHT_ONLY_NAMES and w.is_floating_point():
        weight = weight_only_quantize(w, 8 if algo == "W8A16" else 4, dtype)
        kind = algo.lower()
    else:
        if w.dtype in (torch.int8, torch.uint8) or w.dtype == torch.float8_e4m3fn:
            raise CheckpointError(
                f"{shard}: {prefix}.weight is stored as {w.dtype} but quant_algo {algo} does not quantize it"
            )
        weight = w.float()
    if tuple(weight.shape) != tuple(shape):
        raise CheckpointError(
            f"{shard}: {prefix}.weight has (out, in) shape {tuple(weight.shape)}, expected {tuple(shape)} for this rank "
            "(wrongly split shard, or a config.json that does not match the weights)"
        )
    if pre_scale is not None and pre_scale.numel() != shape[1]:
        raise CheckpointError(
            f"{shard}: {prefix}.prequant_scaling_factor has {pre_scale.numel()} values, expected {shape[1]}"
        )
    if bias is not None and bias.numel() != shape[0]:
        raise CheckpointError(f"{shard}: {prefix}.bias has {bias.numel()} values, expected {shape[0]}")
    return QLinear(prefix, weight.contiguous(), bias, pre_scale, act_q, kind)


def kv_cache_scale(tensors: dict[str, torch.Tensor], prefix: str, shard: str) -> torch.Tensor:
    """The KV-cache scale of one attention layer: preprocess_weights.process_kv_scaling_factor
    (tensorrt_llm/models/modeling_utils.py) combines separate k/v scales as max(k, v) into kv_cache_scaling_factor;
    the attention plugin quantizes with its reciprocal (kv_orig_quant_scale) and dequantizes with it
    (kv_quant_orig_scale) (tensorrt_llm/layers/attention.py, gpt_attention in tensorrt_llm/functional.py)."""
    k, v = tensors.get(f"{prefix}.k_cache_scaling_factor"), tensors.get(f"{prefix}.v_cache_scaling_factor")
    if k is not None and v is not None:
        s = torch.maximum(k.float(), v.float())
    else:
        s = _get(tensors, f"{prefix}.kv_cache_scaling_factor", shard).float()
    s = s.reshape(-1)[0]
    if not torch.isfinite(s) or s <= 0:
        raise CheckpointError(f"{shard}: {prefix} KV-cache scaling factor is {s.item()}: must be finite and > 0")
    return s


def kv_qdq(kv_algo: str | None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """What writing to and reading back from a quantized KV cache does to a value (INT8 or FP8 cache)."""
    if kv_algo == "INT8":
        return qdq_int8
    if kv_algo == "FP8":
        return qdq_fp8
    return None
