"""The reference runtime computes what the checkpoint means, for every architecture and format trtq exports."""

from __future__ import annotations

import pytest
import torch

from tests.integration.conftest import SEQS, hf_logits

pytestmark = pytest.mark.integration


def calibration_batches(model_dir, n: int = 4, seq_len: int = 32):
    """n windows of trtq's builtin calibration text (builder.quant.data), one per batch."""
    from transformers import AutoTokenizer

    from builder.quant.data import builtin_documents, token_windows

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    data = token_windows(builtin_documents(200_000), tok, n, seq_len, 0)
    return [data[i : i + 1] for i in range(n)]


def export(model, model_dir, out, fmt: str):
    """The quantize stage's own export of a calibrated model (builder.checkpoint.export.write_trtllm), tp1 pp1."""
    from builder.checkpoint.export import write_trtllm
    from builder.model.load import copy_tokenizer
    from builder.recipe.schema import Recipe

    recipe = Recipe.model_validate({"name": "x", "model": {"path": str(model_dir)}, "quantization": {"format": fmt}})
    out.mkdir(parents=True)
    write_trtllm(model, recipe, model_dir, out, 1, 1)
    copy_tokenizer(model_dir, out)
    return out


def nrmse(a, b):
    a, b = torch.cat(a), torch.cat(b)
    return ((a - b).pow(2).mean().sqrt() / b.std()).item()


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_unquantized_matches_transformers(arch, checkpoints, tiny_models):
    from transformers import AutoModelForCausalLM

    from runtime.reference.runner import ReferenceRunner
    from runtime.runners.base import Sampling

    ckpt, _ = checkpoints(arch, "fp16")
    hf = AutoModelForCausalLM.from_pretrained(str(tiny_models[arch]), dtype=torch.float32).eval()
    runner = ReferenceRunner.open(ckpt)
    ours = runner.logits(SEQS)
    theirs = hf_logits(hf, SEQS)
    # fp16 storage of the weights is the only difference
    assert nrmse(ours, theirs) < 5e-3
    for o, t in zip(ours, theirs, strict=True):
        assert torch.equal(o.argmax(-1), t.argmax(-1))
    # batched greedy generation (left padding, KV cache) equals transformers' generate, prompt by prompt
    outs = runner.generate(SEQS, Sampling(max_new_tokens=6))
    for s, o in zip(SEQS, outs, strict=True):
        want = hf.generate(torch.tensor([s]), max_new_tokens=6, do_sample=False, eos_token_id=None)[0, len(s) :]
        assert o.token_ids == want.tolist()
        assert o.finish_reason == "length"


# (format, kv) -> the largest nrmse(reference, fake-quant) allowed, and whether the fake-quant model is quantized
CASES = {
    ("int8_sq", "none"): 0.10,
    ("int4_awq", "none"): 0.02,
    # trtq gives fused q/k/v (gate/up) one per-tensor weight scale and one AWQ scale before the export (which would
    # otherwise requantize and resmooth them): measured 0.21 (w4a8_awq) and 0.30 (fp8) of the quantization error,
    # against 0.94 and 0.94 with ModelOpt's calibration alone (tiny Llama, 4 x 32 builtin calibration tokens).
    ("w4a8_awq", "none"): 0.4,
    ("fp8", "none"): 0.45,
}


@pytest.mark.parametrize(("fmt", "kv"), list(CASES), ids=[f"{f}-kv{k}" for f, k in CASES])
def test_quantized_checkpoint_matches_fake_quant(fmt, kv, checkpoints, tiny_models):
    """The checkpoint run by the reference must be much closer to ModelOpt's fake-quant model than the quantization
    error itself (fake-quant vs the unquantized model): it reproduces the scales, packing and pre-quant scaling."""
    from transformers import AutoModelForCausalLM

    from runtime.reference.runner import ReferenceRunner

    ckpt, fq = checkpoints("llama", fmt, kv)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_models["llama"]), dtype=torch.float32).eval()
    ours = ReferenceRunner.open(ckpt).logits(SEQS)
    fq_logits, base_logits = hf_logits(fq, SEQS), hf_logits(base, SEQS)
    err, quant_err = nrmse(ours, fq_logits), nrmse(fq_logits, base_logits)
    assert quant_err > 0.01, f"{fmt}: fake quantization changed nothing ({quant_err}): the test would prove nothing"
    assert err < CASES[(fmt, kv)] * quant_err, (
        f"{fmt}/kv {kv}: reference vs fake-quant {err:.4f}, quant error {quant_err:.4f}"
    )


@pytest.mark.parametrize(("fmt", "bits"), [("int8_wo", 8), ("int4_wo", 4)])
def test_weight_only_is_quantized_at_load(fmt, bits, checkpoints):
    """W8A16/W4A16 checkpoints hold fp16 weights; the runtime quantizes per channel at load (TensorRT-LLM rule)."""
    from safetensors.torch import load_file

    from runtime.reference.quant import weight_only_quantize
    from runtime.reference.runner import ReferenceRunner

    ckpt, _ = checkpoints("llama", fmt)
    w = load_file(str(ckpt / "rank0.safetensors"))["transformer.layers.0.mlp.fc.weight"]
    assert w.dtype == torch.float16
    runner = ReferenceRunner.open(ckpt)
    got = runner.decoder.layers[0].fc.weight
    assert torch.equal(got, weight_only_quantize(w, bits, torch.float16))
    # on the int grid: each row holds at most 2^bits distinct values
    assert max(len(torch.unique(r)) for r in got) <= 2**bits
    assert not torch.equal(got, w.float())
    # lm_head is never weight-only quantized
    assert torch.equal(
        runner.decoder.lm_head.weight, load_file(str(ckpt / "rank0.safetensors"))["lm_head.weight"].float()
    )


def test_int4_unpack_inverts_modelopt_packing():
    from modelopt.torch.export.quant_utils import pack_int4_in_uint8

    from runtime.reference.quant import unpack_int4

    torch.manual_seed(0)
    q = torch.randint(-8, 8, (6, 8)).float()
    scale = torch.ones(6, 2)
    packed = pack_int4_in_uint8(q, scale, 4).view(torch.int8)
    assert torch.equal(unpack_int4(packed), q)


@pytest.mark.parametrize(("fmt", "kv", "grid"), [("fp16", "int8", "int8"), ("fp8", "fp8", "fp8")])
def test_kv_cache_quantization(fmt, kv, grid, checkpoints):
    """K/V go through the cache on TensorRT-LLM's grid: one scale per layer = max(k scale, v scale)
    (preprocess_weights.process_kv_scaling_factor), int8 or e4m3 values; generation reads them back."""
    from safetensors.torch import load_file

    from runtime.reference.runner import ReferenceRunner, _left_pad, _mask

    ckpt, _ = checkpoints("llama", fmt, kv)
    t = load_file(str(ckpt / "rank0.safetensors"))
    want = torch.maximum(
        t["transformer.layers.1.attention.k_cache_scaling_factor"],
        t["transformer.layers.1.attention.v_cache_scaling_factor"],
    )
    runner = ReferenceRunner.open(ckpt)
    layer = runner.decoder.layers[1]
    assert layer.kv_scale.item() == pytest.approx(want.item())
    ids, valid = _left_pad([SEQS[0]], 0)
    cache = runner.decoder.new_cache(1, ids.shape[1])
    pos = (valid.long().cumsum(-1) - 1).clamp_min(0)
    with torch.inference_mode():
        runner.decoder.forward(ids, pos, _mask(valid, 0, ids.shape[1]), cache)
    stored = cache.v[1] / layer.kv_scale
    if grid == "int8":
        assert torch.allclose(stored, stored.round(), atol=1e-4) and stored.abs().max() <= 128.001
    else:
        assert torch.allclose(stored, stored.to(torch.float8_e4m3fn).float(), rtol=1e-5, atol=1e-6)
    # through the cache vs fresh K/V (context phase): the quantization is visible but small
    fresh, cached = runner.logits(SEQS, through_cache=False), runner.logits(SEQS, through_cache=True)
    diff = nrmse(cached, fresh)
    assert 0 < diff < 0.2


def test_smoothquant_below_alpha_1_exports_what_was_calibrated(tiny_models, tmp_path):
    """SmoothQuant alpha < 1 gives q/k/v (and gate/up) different scales; ModelOpt's export averages them without
    re-measuring the activation range. builder.quant.smoothing gives each fused group one scale before the export, and the
    checkpoint then computes what the fake-quant model computed, as closely as at alpha 1.0 (where the scales agree
    by construction; what remains is fp16 storage). Without it the two diverge (SmolLM2: nrmse 0.30)."""
    import modelopt.torch.quantization as mtq
    from transformers import AutoModelForCausalLM

    from builder.quant.config import build_config
    from builder.quant.smoothing import fuse_smoothing, shared_input_groups
    from runtime.reference.runner import ReferenceRunner

    model_dir = tiny_models["llama"]
    batches = calibration_batches(model_dir)
    probe = batches[0][:, :8]

    def export_error(alpha: float, fused: bool) -> float:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
        cfg = build_config(mtq, "int8_sq", "none", ("lm_head",), alpha=alpha)
        with torch.no_grad():
            mtq.quantize(model, cfg, lambda m: [m(b) for b in batches])
            if fused:
                changed = fuse_smoothing(model, probe, alpha=alpha)
                assert changed == (0 if alpha == 1.0 else 2 * model.config.num_hidden_layers)  # qkv, gate/up
                for names in shared_input_groups(model, probe):
                    scales = [model.get_submodule(n).input_quantizer.pre_quant_scale for n in names]
                    assert all(torch.equal(s, scales[0]) for s in scales)
        calibrated = hf_logits(model, SEQS)  # before the export, which rescales the model in place
        ckpt = export(model, model_dir, tmp_path / f"{alpha}-{fused}", "int8_sq")
        return nrmse(ReferenceRunner.open(ckpt).logits(SEQS), calibrated)

    floor = export_error(1.0, fused=True)
    fused, per_linear = export_error(0.5, fused=True), export_error(0.5, fused=False)
    assert fused < 1.5 * floor, f"fused at alpha 0.5: {fused:.4f}, alpha 1.0: {floor:.4f}"
    assert per_linear > 1.5 * fused, f"ModelOpt per-linear smoothing no longer diverges ({per_linear:.4f})"


def test_int4_clipping_survives_the_export(tiny_models, tmp_path):
    """trtq's int4_awq default (awq_lite, one AWQ scale per fused group, activation-weighted clipping): some blocks
    are clipped below their max, and the checkpoint holds those ranges (ModelOpt's export would re-measure the max if
    it had to resmooth a fused group), so the reference run of the checkpoint matches the fake-quant model."""
    import modelopt.torch.quantization as mtq
    from transformers import AutoModelForCausalLM

    from builder.quant.calibrate import calibrate, trtq_steps
    from builder.quant.config import build_config
    from runtime.reference.runner import ReferenceRunner

    model_dir = tiny_models["llama"]
    batches = calibration_batches(model_dir)

    cfg = build_config(mtq, "int4_awq", "none", ("lm_head",), block_size=32)
    steps = trtq_steps("int4_awq", "auto", cfg)
    assert steps == ("fused-awq-scales", "int4-clip")
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    model = calibrate(model, cfg, steps, lambda m: [m(b) for b in batches], batches[0][:, :8])
    q = model.model.layers[0].self_attn.q_proj
    block_max = q.weight.detach().abs().reshape(q.weight.shape[0], -1, 32).amax(-1).reshape(-1)
    clipped = q.weight_quantizer.amax.reshape(-1) < block_max * 0.999
    assert clipped.any(), "activation-weighted clipping clipped nothing"
    fq = hf_logits(model, SEQS)
    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    quant_err = nrmse(fq, hf_logits(base, SEQS))
    ckpt = export(model, model_dir, tmp_path / "ckpt", "int4_awq")
    err = nrmse(ReferenceRunner.open(ckpt).logits(SEQS), fq)
    assert err < 0.05 * quant_err, f"reference vs fake-quant {err:.4f}, quant error {quant_err:.4f}"
