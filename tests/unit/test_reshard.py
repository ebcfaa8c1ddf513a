"""builder.checkpoint.reshard: a tp x pp checkpoint sliced from the tp=1, pp=1 export is byte-identical to ModelOpt's own export.

Each case calibrates a tiny model once (trtq's own ModelOpt configs, builder.quant.config.build_config), exports it
with ModelOpt at tp1pp1 and at every layout from a fresh copy of the calibrated model (ModelOpt's export changes the
model it exports), applies trtq's config fixes (builder.checkpoint.export), reshards the tp1 export and compares every
tensor (read back with the safetensors library itself: names, dtypes, shapes, bytes) and config.json. Where
ModelOpt's export fails, reshard must refuse with ValueError.

The comparisons need torch + transformers + modelopt (marked integration); the import check does not.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

# ModelOpt warns on every export (no tensorrt_llm here, lm_head quantization, ...): noise for these tests.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

ROOT = Path(__file__).resolve().parents[2]
ARCHS = ("llama", "qwen2", "gpt2")
FORMATS = ("fp16", "bf16", "int8_wo", "int4_wo", "int8_sq", "int4_awq", "w4a8_awq", "fp8")
KV_CASES = (("int8_sq", "int8"), ("fp8", "fp8"), ("bf16", "fp8"), ("int4_awq", "int8"))
LAYOUTS = ((2, 1), (1, 2), (2, 2), (4, 1))
AWQ_BLOCK = 16  # divides every per-rank width of the tiny models up to tp=4 (hidden 64, intermediate 128/256)


def test_import_does_not_load_torch():
    code = (
        "import sys, builder.checkpoint.reshard; "
        "heavy = sorted(m for m in ('torch', 'transformers', 'modelopt', 'safetensors') if m in sys.modules); "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_safetensors_roundtrip(tmp_path):
    """The numpy reader/writer keeps dtype names, shapes and bytes, and writes no __metadata__ unless given."""
    import numpy as np

    from builder.checkpoint import _safetensors as st

    rng = np.random.default_rng(0)
    tensors = {
        "b": st.Tensor("BF16", rng.integers(0, 2**16, (3, 5), dtype=np.uint16)),
        "f8": st.Tensor("F8_E4M3", rng.integers(0, 256, (4, 2), dtype=np.uint8)),
        "a": st.Tensor("F32", rng.integers(0, 2**32, (7,), dtype=np.uint32)),
        "s": st.Tensor("I8", rng.integers(0, 256, (2, 3), dtype=np.uint8)[:, 1:]),  # a non-contiguous view
        "e": st.Tensor("F16", np.zeros((0, 4), np.uint16)),
    }
    st.write(tmp_path / "x.safetensors", tensors)
    raw = (tmp_path / "x.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    assert n % 8 == 0 and "__metadata__" not in header
    assert [k for k in header] == ["a", "b", "e", "f8", "s"]  # the safetensors library's order: dtype, then name
    back, metadata = st.read(tmp_path / "x.safetensors")
    assert metadata is None and sorted(back) == sorted(tensors)
    for name, t in tensors.items():
        assert (back[name].dtype, back[name].shape) == (t.dtype, t.shape)
        assert back[name].data.tobytes() == np.ascontiguousarray(t.data).tobytes()
    st.write(tmp_path / "m.safetensors", tensors, {"format": "pt"})
    assert st.read(tmp_path / "m.safetensors")[1] == {"format": "pt"}
    (tmp_path / "bad.safetensors").write_bytes((10**9).to_bytes(8, "little") + b"{}")
    with pytest.raises(ValueError, match="header length"):
        st.read(tmp_path / "bad.safetensors")


# ------------------------------------------------------------------------------------------------------ helpers
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """make(arch, **overrides) -> tiny HF model directory, built once per module."""
    from _tiny import make_model

    base = tmp_path_factory.mktemp("tiny")
    made: dict = {}

    def make(arch: str, **overrides) -> Path:
        key = (arch, tuple(sorted(overrides.items())))
        if key not in made:
            name = "-".join([arch, *(f"{k}{v}" for k, v in sorted(overrides.items()))])
            made[key] = make_model(base / name, arch, **overrides)
        return made[key]

    return make


def _calibrated(model_dir: Path, fmt: str, kv: str, exclude: tuple[str, ...]):
    """The tiny model quantized as trtq's quantize stage configures ModelOpt (float32, one calibration batch)."""
    import modelopt.torch.quantization as mtq
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from builder.quant.config import build_config, needs_calibration
    from builder.quant.data import builtin_documents, token_windows

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    if not needs_calibration(fmt, kv):
        return model
    cfg = build_config(mtq, fmt, kv, exclude, block_size=AWQ_BLOCK)
    batches = [token_windows(builtin_documents(100_000), AutoTokenizer.from_pretrained(str(model_dir)), 1, 32, 0)]

    def forward_loop(m):
        with torch.no_grad():
            for b in batches:
                m(b)

    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):
        return mtq.quantize(model, cfg, forward_loop)


def _export(model, model_dir: Path, out: Path, fmt: str, exclude: tuple[str, ...], tp: int, pp: int) -> Path:
    """What trtq's export stage writes for ``model`` at tp x pp (builder.checkpoint.export.write_trtllm: ModelOpt's export
    plus trtq's config edits), from a copy: ModelOpt's export changes the model."""
    from builder.checkpoint.export import write_trtllm

    recipe = SimpleNamespace(
        model=SimpleNamespace(dtype="bfloat16" if fmt == "bf16" else "float16"),
        quantization=SimpleNamespace(format=fmt, exclude=exclude),
    )
    out.mkdir(parents=True, exist_ok=True)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            write_trtllm(copy.deepcopy(model), recipe, model_dir, out, tp, pp)
    except NotImplementedError as e:  # ModelOpt 0.37 exports no Qwen2 TensorRT-LLM checkpoint at all
        if "not supported by TensorRT-LLM yet" in str(e):
            pytest.skip(f"this ModelOpt cannot export {type(model).__name__}: {str(e)[:80]}")
        raise
    return out


def _normalized(config: dict) -> dict:
    """ModelOpt's exclude_modules passes through a set: its order changes from one Python process to the next."""
    config = json.loads(json.dumps(config))
    quant = config.get("quantization") or {}
    if "exclude_modules" in quant:
        quant["exclude_modules"] = sorted(quant["exclude_modules"])
    return config


def _assert_identical(ref: Path, got: Path) -> int:
    """Every tensor and config.json (and quant_cfg.json) equal; returns how many tensors were compared."""
    import torch
    from safetensors.torch import load_file

    assert _normalized(json.loads((got / "config.json").read_text())) == _normalized(
        json.loads((ref / "config.json").read_text())
    )
    if (ref / "quant_cfg.json").exists() or (got / "quant_cfg.json").exists():
        assert json.loads((got / "quant_cfg.json").read_text()) == json.loads((ref / "quant_cfg.json").read_text())
    ranks = sorted(p.name for p in ref.glob("rank*.safetensors"))
    assert sorted(p.name for p in got.glob("rank*.safetensors")) == ranks
    count = 0
    for name in ranks:
        want, have = load_file(ref / name), load_file(got / name)
        assert sorted(have) == sorted(want), f"{name}: {sorted(set(have) ^ set(want))}"
        for key, w in want.items():
            h = have[key]
            assert (h.dtype, h.shape) == (w.dtype, w.shape), f"{name}:{key}"
            assert torch.equal(h.reshape(-1).view(torch.uint8), w.reshape(-1).view(torch.uint8)), f"{name}:{key}"
            count += 1
    return count


def _check_layouts(model, model_dir: Path, tmp: Path, fmt: str, exclude=("lm_head",), layouts=LAYOUTS) -> dict:
    """Export tp1pp1 and each layout with ModelOpt, reshard, compare. Returns layout -> 'same' | 'refused'."""
    from builder.checkpoint.reshard import reshard

    src = _export(model, model_dir, tmp / "tp1pp1", fmt, exclude, 1, 1)
    seen = {}
    for tp, pp in layouts:
        ref = tmp / f"ref-tp{tp}pp{pp}"
        try:
            _export(model, model_dir, ref, fmt, exclude, tp, pp)
        except (AssertionError, NotImplementedError) as e:  # what ModelOpt raises for layouts it cannot export
            with pytest.raises(ValueError):
                reshard(src, tmp / f"got-tp{tp}pp{pp}", tp, pp)
            seen[(tp, pp)] = f"refused ({type(e).__name__})"
            continue
        config = reshard(src, tmp / f"got-tp{tp}pp{pp}", tp, pp)
        assert config == json.loads((tmp / f"got-tp{tp}pp{pp}" / "config.json").read_text())
        assert _assert_identical(ref, tmp / f"got-tp{tp}pp{pp}") > 0
        seen[(tp, pp)] = "same"
    return seen


# ------------------------------------------------------------------------------------------------------ cases
@pytest.mark.integration
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(("fmt", "kv"), [(f, "none") for f in FORMATS] + list(KV_CASES), ids=lambda v: v)
def test_reshard_matches_modelopt(tiny, tmp_path, arch, fmt, kv):
    model_dir = tiny(arch)
    model = _calibrated(model_dir, fmt, kv, ("lm_head",))
    seen = _check_layouts(model, model_dir, tmp_path, fmt)
    refused = {k for k, v in seen.items() if v != "same"}
    # ModelOpt cannot repeat KV heads (tp=4 > 2 KV heads) with per-channel int8 scales; everything else exports.
    expected = {(4, 1)} if fmt == "int8_sq" and arch != "gpt2" else set()
    assert refused == expected, seen


@pytest.mark.integration
@pytest.mark.parametrize("fmt", ["fp8", "int8_sq", "int4_awq", "w4a8_awq"])
def test_reshard_quantized_lm_head(tiny, tmp_path, fmt):
    """exclude=() keeps lm_head quantized (a column linear with its own scales, cut across tp like the others)."""
    model_dir = tiny("llama")
    seen = _check_layouts(_calibrated(model_dir, fmt, "none", ()), model_dir, tmp_path, fmt, exclude=())
    refused = {k for k, v in seen.items() if v != "same"}
    assert refused == ({(4, 1)} if fmt == "int8_sq" else set()), seen
    assert _linear_scales(tmp_path / "got-tp2pp2" / "rank3.safetensors", "lm_head")  # still quantized


def _linear_scales(path: Path, prefix: str) -> list[str]:
    from builder.checkpoint import _safetensors as st

    return [k for k in st.read(path)[0] if k.startswith(prefix + ".") and "scaling_factor" in k]


@pytest.mark.integration
def test_reshard_exclude_modules_follow_the_last_stage(tiny, tmp_path):
    """config.json comes from the last rank: its exclude_modules name that rank's layers, renumbered from 0."""
    model_dir = tiny("llama")
    exclude = ("lm_head", "layers.0.mlp", "layers.3.self_attn.o_proj")
    model = _calibrated(model_dir, "fp8", "none", exclude)
    seen = _check_layouts(model, model_dir, tmp_path, "fp8", exclude, layouts=((1, 2), (2, 2), (1, 4), (4, 1)))
    assert set(seen.values()) == {"same"}, seen
    config = json.loads((tmp_path / "got-tp1pp4" / "config.json").read_text())
    assert sorted(config["quantization"]["exclude_modules"]) == ["lm_head", "transformer.layers.0.attention.dense"]


@pytest.mark.integration
def test_reshard_pads_vocabulary(tiny, tmp_path):
    """Vocabulary 510 at tp=4: ModelOpt zero-pads the embedding and lm_head rows to a multiple of tp."""
    model_dir = tiny("llama", vocab_size=510)
    seen = _check_layouts(_calibrated(model_dir, "fp16", "none", ("lm_head",)), model_dir, tmp_path, "fp16")
    assert set(seen.values()) == {"same"}, seen
    from safetensors import safe_open

    with safe_open(str(tmp_path / "got-tp4pp1" / "rank3.safetensors"), framework="pt") as f:
        assert f.get_slice("lm_head.weight").get_shape() == [128, 64]


@pytest.mark.integration
def test_reshard_awq_vocabulary_padding(tiny, tmp_path):
    """AWQ pads a vocabulary of 500 to 512 (and then keeps lm_head unquantized: 500 rows are not whole groups)."""
    model_dir = tiny("qwen2", vocab_size=500)
    model = _calibrated(model_dir, "int4_awq", "none", ())
    seen = _check_layouts(model, model_dir, tmp_path, "int4_awq", exclude=())
    assert set(seen.values()) == {"same"}, seen
    config = json.loads((tmp_path / "got-tp2pp2" / "config.json").read_text())
    assert config["vocab_size"] == 512 and config["quantization"]["exclude_modules"] == ["lm_head"]


@pytest.mark.integration
def test_reshard_refuses_an_awq_lm_head_that_modelopt_unquantizes_at_pp(tiny, tmp_path):
    """Vocabulary 528 = 33 groups of 16: lm_head stays AWQ-quantized at pp=1 (vocabulary padded to 576), but ModelOpt
    checks the rows against group * pp and exports it unquantized at pp=2. The tp1 checkpoint cannot tell."""
    from builder.checkpoint.reshard import reshard

    model_dir = tiny("llama", vocab_size=528)
    model = _calibrated(model_dir, "int4_awq", "none", ())
    seen = _check_layouts(model, model_dir, tmp_path, "int4_awq", exclude=(), layouts=((2, 1),))
    assert seen == {(2, 1): "same"}
    assert _linear_scales(tmp_path / "tp1pp1" / "rank0.safetensors", "lm_head")
    ref = _export(model, model_dir, tmp_path / "ref-tp1pp2", "int4_awq", (), 1, 2)
    assert not _linear_scales(ref / "rank1.safetensors", "lm_head")
    with pytest.raises(ValueError, match="lm_head"):
        reshard(tmp_path / "tp1pp1", tmp_path / "got-tp1pp2", 1, 2)


@pytest.mark.integration
def test_reshard_refuses_what_it_cannot_derive(tiny, tmp_path):
    from builder.checkpoint.reshard import reshard

    model_dir = tiny("llama")
    src = _export(_calibrated(model_dir, "fp16", "none", ("lm_head",)), model_dir, tmp_path / "src", "fp16", (), 1, 1)
    with pytest.raises(ValueError, match="4 layers"):
        reshard(src, tmp_path / "pp3", 1, 3)
    with pytest.raises(ValueError, match="4 attention heads"):
        reshard(src, tmp_path / "tp3", 3, 1)
    reshard(src, tmp_path / "tp2", 2, 1)
    with pytest.raises(FileExistsError):
        reshard(src, tmp_path / "tp2", 2, 1)
    pp2 = reshard(src, tmp_path / "pp2", 1, 2)
    with pytest.raises(ValueError, match="mapping"):
        reshard(tmp_path / "pp2", tmp_path / "again", 2, 1)
    assert pp2["mapping"] == {"world_size": 2, "tp_size": 1, "pp_size": 2}
