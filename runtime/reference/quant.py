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

Compute choice (documented): weights are dequantized ONCE at load and column-parallel matmuls run in float32.
The quantization *grid* (which values a weight/activation can take) is exactly TensorRT-LLM's; only the accumulation
precision differs from a GPU kernel (fp32 here vs fp16/bf16/fp8 tensor cores there), which is far below the
quantization error being checked.

Split invariance: a network with quantized activations (or a quantized KV cache) is chaotic in its rounding. A
perturbation of 1e-6 (relative) of SmolLM2's embeddings moves its fp8 checkpoint's logits by nrmse 0.04 (top-1 0.81),
because every activation quantizer amplifies it: a value near a rounding boundary flips by a whole quantization step.
A row-parallel linear sums its partial products in a different order at tp=3 than at tp=1, which was enough to make a
split fp8/int8_sq SmolLM2 checkpoint compute visibly different logits (fp8: nrmse 0.10, top-1 0.95) although every
rank held exact slices of the same tensors. TensorRT-LLM behaves the same way (Int8SmoothQuantRowLinear/FP8RowLinear
in tensorrt_llm/quantization/layers.py: the GEMM applies the activation x weight scales in its epilogue and writes
the model dtype, and `RowLinear.multiply_reduce` all-reduces those rounded partials), so its tp=1 and tp=3 engines
agree only up to that chaos. The reference runtime is exact instead, so that a split checkpoint that computes
something else is an export bug and nothing else. For such checkpoints (`exact` below) every linear multiplies the
activation's and the weight's *grid values* (int8 / e4m3 values; the plain values of unquantized linears) in float64,
row-parallel partial sums are all-reduced in float64, and the scales (activation x weight, the GEMM epilogue's) are
applied after the reduction, rounding to float32 once. For int8 and fp8 grids the products and their sums are exact
in float64, so the result does not depend on the split at all. Checkpoints without activation or KV-cache
quantization have no such amplifier: they compute in float32, and a split differs from the unsplit checkpoint by
float32 rounding only (nrmse ~1e-7).

Weight-only formats (W8A16/W4A16) are quantized by TensorRT-LLM when each rank loads its shard, so a row-parallel
linear gets per-output-channel scales of its *slice* of the input: a tp=2 engine computes something else than a
tp=1 engine by design. `weight_only_slices` reproduces that on an unsplit checkpoint (the verify stage's baseline).
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


def weight_only_quantize(w: torch.Tensor, bits: int, dtype: torch.dtype, slices: int = 1) -> torch.Tensor:
    """W8A16/W4A16 quantization at load, as TensorRT-LLM does it (weight_only_quantize ->
    torch.ops.trtllm.symmetric_quantize_last_axis_of_batched_matrix, cpp/tensorrt_llm/kernels/cutlass_kernels/
    cutlass_preprocessors.cpp): per output channel, scale = max|w| / 2^(bits-1) (128 for int8, 8 for int4), stored in
    the model dtype; q = round(w / scale) clamped to [-128, 127] / [-8, 7]. Returns the dequantized weight (fp32).
    ``slices``: quantize each of that many equal column blocks on its own, as the ranks of a row-parallel linear do."""
    out, cols = w.shape
    w = w.float().reshape(out, slices, cols // slices)
    amax = w.abs().amax(dim=2, keepdim=True).clamp_min(1e-12)
    scale = amax / float(1 << (bits - 1))
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    q = torch.clamp(torch.round(w / scale), lo, hi)
    return (q * scale.to(dtype).float()).reshape(out, cols)


class QLinear:
    """One rank's shard of a linear with TensorRT-LLM's semantics: y = act_q(x * pre_scale) @ W^T + bias.

    Column-parallel: ``lin(x)``. Row-parallel: ``lin.finish(all_reduce(lin.partial(x)))``: `partial` is what the
    ranks sum, `finish` applies the scales and the bias once. In float32 arithmetic ``weight`` is the dequantized
    weight and ``act`` the quantize->dequantize of the input; in exact arithmetic (see the module docstring) ``weight``
    holds float64 grid values, ``act`` maps the input to its float64 grid values and ``out_scale`` is the activation x
    weight scale (float64; per output channel for int8 SmoothQuant)."""

    __slots__ = ("name", "weight", "bias", "pre_scale", "act", "out_scale")

    def __init__(self, name, weight, bias=None, pre_scale=None, act: Callable | None = None, out_scale=None):
        self.name = name
        self.weight = weight
        self.bias = bias
        self.pre_scale = pre_scale
        self.act = act
        self.out_scale = out_scale

    def partial(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_scale is not None:
            x = x * self.pre_scale
        if self.act is not None:
            x = self.act(x)
        return torch.nn.functional.linear(x, self.weight)

    def finish(self, y: torch.Tensor) -> torch.Tensor:
        if self.out_scale is not None:
            y = y * self.out_scale
        y = y.float()
        return y + self.bias if self.bias is not None else y

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.finish(self.partial(x))


def _grid_int8(a: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: torch.clamp(torch.round(x / a), -128, 127).double()


def _grid_fp8(a: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: torch.clamp(x / a, -FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).double()


def _to_double(x: torch.Tensor) -> torch.Tensor:
    return x.double()


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
    exact: bool = False,
    weight_only_slices: int = 1,
) -> QLinear:
    """The linear ``prefix`` of one rank's shard, with the semantics of ``algo``; ``shape`` = expected (out, in) of
    this rank's shard (a wrongly split checkpoint fails here, naming the tensor). ``exact``: float64 grid arithmetic
    (module docstring). ``weight_only_slices``: W8A16/W4A16 scales per that many column blocks (a row-parallel linear
    of an unsplit checkpoint computing what its tp ranks would)."""
    w = _get(tensors, f"{prefix}.weight", shard)
    bias = tensors.get(f"{prefix}.bias")
    bias = None if bias is None else bias.float()
    wsf = tensors.get(f"{prefix}.weights_scaling_factor")
    asf = tensors.get(f"{prefix}.activation_scaling_factor")
    pre = tensors.get(f"{prefix}.prequant_scaling_factor")
    leaf = prefix.rsplit(".", 1)[-1]
    pre_scale, act_q = None, None
    grid = None  # exact arithmetic: (grid weight, grid activation, output scale); None: the weight itself

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
            w8 = q * scale.repeat_interleave(group, dim=1)
            w8 = torch.clamp(w8, -FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).float()
            weight = w8 * s2
            a = asf.float().reshape(())
            act_q = lambda x, a=a: qdq_fp8(x, a)  # noqa: E731
            grid = (w8, _grid_fp8(a), a.double() * s2.double())
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
        grid = (fp8.float(), _grid_fp8(a), a.double() * wsf.double().reshape(()))
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
        grid = (w.float(), _grid_int8(a), a.double() * wsf.double().reshape(-1))
        if pre is not None:
            pre_scale = pre.float().reshape(-1)
    elif algo in ("W8A16", "W4A16") and quantize_weight_only and leaf in WEIGHT_ONLY_NAMES and w.is_floating_point():
        if w.shape[1] % weight_only_slices:
            raise CheckpointError(f"{shard}: {prefix}.weight has {w.shape[1]} columns, not {weight_only_slices} slices")
        weight = weight_only_quantize(w, 8 if algo == "W8A16" else 4, dtype, weight_only_slices)
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
    if exact:
        grid_w, grid_act, out_scale = grid or (weight, None, None)
        return QLinear(prefix, grid_w.double().contiguous(), bias, pre_scale, grid_act or _to_double, out_scale)
    return QLinear(prefix, weight.contiguous(), bias, pre_scale, act_q)


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
