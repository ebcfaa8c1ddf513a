"""Format tables and ModelOpt config building for both ModelOpt generations (no torch: fake config constants)."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest

from builder.errors import RecipeError
from builder.quant.config import FORMATS, build_config, needs_calibration, trtllm_exclude_modules
from builder.recipe.load import load_recipe
from runtime.families import BY_NAME

# Shapes of the real constants: ModelOpt 0.47 (list) and 0.37 (dict), abridged.
LIST = SimpleNamespace(
    INT4_AWQ_CFG={
        "quant_cfg": [
            {"quantizer_name": "*", "enable": False},
            {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 4, "block_sizes": {-1: 128, "type": "static"}}},
            {"quantizer_name": "*lm_head*", "enable": False},
        ],
        "algorithm": {"method": "awq_lite", "alpha_step": 0.1},
    },
    INT8_SMOOTHQUANT_CFG={
        "quant_cfg": [
            {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}},
            {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": 8, "axis": None}},
            {"quantizer_name": "*lm_head*", "enable": False},
        ],
        "algorithm": "smoothquant",
    },
    W4A8_AWQ_BETA_CFG={
        "quant_cfg": [
            {
                "quantizer_name": "*weight_quantizer",
                "cfg": [
                    {"num_bits": 4, "block_sizes": {-1: 128, "type": "static"}},
                    {"num_bits": (4, 3), "axis": None},
                ],
            },
            {"quantizer_name": "*lm_head*", "enable": False},
        ],
        "algorithm": "awq_lite",
    },
)
DICT = SimpleNamespace(
    INT4_AWQ_CFG={
        "quant_cfg": {
            "*weight_quantizer": {"num_bits": 4, "block_sizes": {-1: 128, "type": "static"}, "enable": True},
            "*lm_head*": {"enable": False},
            "default": {"enable": False},
        },
        "algorithm": {"method": "awq_lite", "alpha_step": 0.1},
    },
    FP8_DEFAULT_CFG={
        "quant_cfg": {
            "*weight_quantizer": {"num_bits": (4, 3), "axis": None},
            "*input_quantizer": {"num_bits": (4, 3), "axis": None},
            "*lm_head*": {"enable": False},
        },
        "algorithm": "max",
    },
)


def test_list_style_awq_block_exclude_and_kv_without_touching_the_constant():
    before = copy.deepcopy(LIST.INT4_AWQ_CFG)
    cfg = build_config(LIST, "int4_awq", "fp8", ("lm_head", "model.layers.0.*"), block_size=64, algorithm="awq_clip")
    assert before == LIST.INT4_AWQ_CFG, "ModelOpt's constant must never be mutated"
    rules = cfg["quant_cfg"]
    assert rules[1]["cfg"]["block_sizes"] == {-1: 64, "type": "static"}
    assert {"quantizer_name": "model.layers.0.*", "enable": False} in rules
    assert {"quantizer_name": "*lm_head*", "enable": False} in rules
    assert rules[-1] == {"quantizer_name": "*[kv]_bmm_quantizer", "cfg": {"num_bits": (4, 3), "axis": None}}
    assert cfg["algorithm"] == {"method": "awq_clip"}


def test_dict_style_fp8_int8_kv_and_quantized_lm_head():
    before = copy.deepcopy(DICT.FP8_DEFAULT_CFG)
    cfg = build_config(DICT, "fp8", "int8", ())
    assert before == DICT.FP8_DEFAULT_CFG
    rules = cfg["quant_cfg"]
    assert "*lm_head*" not in rules, "exclude: [] quantizes lm_head too"
    assert rules["*[kv]_bmm_quantizer"] == {"num_bits": 8, "axis": None, "enable": True}
    assert cfg["algorithm"] == "max"


def test_smoothquant_alpha_default_and_override():
    # trtq's default (ModelOpt's is 1.0; tests/bench/bench_defaults.py), and the recipe's value when it sets one
    assert build_config(LIST, "int8_sq", "none", ("lm_head",))["algorithm"] == {"method": "smoothquant", "alpha": 0.8}
    assert build_config(LIST, "int8_sq", "none", ("lm_head",), alpha=1.0)["algorithm"]["alpha"] == 1.0


def test_w4a8_block_size_reaches_the_int4_half_only():
    cfg = build_config(LIST, "w4a8_awq", "none", ("lm_head",), block_size=32)
    int4, fp8 = cfg["quant_cfg"][0]["cfg"]
    assert int4["block_sizes"][-1] == 32 and "block_sizes" not in fp8


def test_kv_only_calibration_for_weight_only_formats():
    assert not needs_calibration("int8_wo", "none") and needs_calibration("int8_wo", "fp8")
    assert needs_calibration("int8_sq", "none") and not needs_calibration("bf16", "none")
    for style in (LIST, DICT):
        cfg = build_config(style, "int4_wo", "fp8", ("lm_head",))
        assert cfg["algorithm"] == "max"
        rules = cfg["quant_cfg"]
        text = str(rules)
        assert "*[kv]_bmm_quantizer" in text and "weight_quantizer" not in text


def test_formats_map_to_trtllm_quant_algos():
    assert {k: v.quant_algo for k, v in FORMATS.items()} == {
        "fp16": None,
        "bf16": None,
        "int8_wo": "W8A16",
        "int4_wo": "W4A16",
        "int8_sq": "W8A8_SQ_PER_CHANNEL",
        "int4_awq": "W4A16_AWQ",
        "w4a8_awq": "W4A8_AWQ",
        "fp8": "FP8",
    }


LINEARS = [
    f"model.layers.{i}.{m}"
    for i in range(2)
    for m in (
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    )
] + ["lm_head"]


def test_weight_only_excludes_translate_to_trtllm_names():
    assert trtllm_exclude_modules(LINEARS, ("lm_head",), BY_NAME["llama"]) == ["lm_head"]
    assert trtllm_exclude_modules(LINEARS, ("lm_head", "model.layers.1.mlp.*"), BY_NAME["llama"]) == [
        "lm_head",
        "transformer.layers.1.mlp.fc",
        "transformer.layers.1.mlp.gate",
        "transformer.layers.1.mlp.proj",
    ]
    with pytest.raises(
        ValueError,
        match=r"model.layers.0.self_attn.q_proj is fused with .*k_proj.* into transformer.layers.0.attention.qkv",
    ):
        trtllm_exclude_modules(LINEARS, ("model.layers.0.self_attn.q_proj",), BY_NAME["llama"])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"format": "fp8", "kv_cache": "int8"}, "quantization.kv_cache: int8 cannot be combined with fp8"),
        ({"format": "fp8", "smoothquant_alpha": 0.5}, "quantization.smoothquant_alpha: only applies to int8_sq"),
        ({"format": "int8_sq", "awq_block_size": 64}, "quantization.awq_block_size: only applies to int4_awq"),
        (
            {"format": "fp8", "algorithm": "awq_clip"},
            "quantization.algorithm: awq_clip does not apply to fp8: use one of auto, max",
        ),
    ],
)
def test_unsupported_combinations_name_valid_ones(tmp_path, fields, message):
    q = ", ".join(f"{k}: {v}" for k, v in fields.items())
    p = tmp_path / "r.yaml"
    p.write_text(f"name: x\nmodel: {{path: m}}\nquantization: {{{q}}}\n")
    with pytest.raises(RecipeError) as e:
        load_recipe(p)
    assert message in e.value.problems[0] and e.value.problems[0].startswith(f"{p}:3: ")


def test_hf_target_refuses_formats_it_cannot_hold(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("name: x\nmodel: {path: m}\nquantization: {format: int8_sq}\ntargets: [checkpoint, hf]\n")
    with pytest.raises(RecipeError) as e:
        load_recipe(p)
    assert "targets: the unified HF checkpoint cannot hold int8_sq" in e.value.problems[0]
