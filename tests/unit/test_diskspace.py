"""Disk-space estimates per stage and the early refusal (no torch)."""

from __future__ import annotations

import shutil
from collections import namedtuple

import pytest

from builder.errors import DiskSpaceError
from builder.planning import diskspace
from builder.recipe.schema import Recipe

SMOL = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 576,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "intermediate_size": 1536,
    "vocab_size": 49152,
    "tie_word_embeddings": True,
}
Usage = namedtuple("Usage", "total used free")


def recipe(fmt="fp16", tp=1, targets=("checkpoint", "engine"), **calib) -> Recipe:
    return Recipe.model_validate(
        {
            "name": "x",
            "model": {"path": "."},
            "quantization": {"format": fmt},
            "parallel": {"tp": tp},
            "calibration": calib,
            "targets": list(targets),
        }  # fmt: skip
    )


def test_stage_estimates_follow_format_and_layout():
    fp16 = diskspace.stage_bytes("checkpoint", recipe(), SMOL)
    assert 300e6 < fp16 < 340e6  # SmolLM2-135M in 16 bits + the untied lm_head a TensorRT-LLM checkpoint holds
    assert diskspace.stage_bytes("checkpoint", recipe(tp=3), SMOL) > fp16  # norms and headers on every rank
    assert diskspace.stage_bytes("checkpoint", recipe("int4_awq"), SMOL) < 0.6 * fp16  # embeddings stay 16-bit
    fp8 = diskspace.stage_bytes("checkpoint", recipe("fp8"), SMOL)
    # float32 calibration on the CPU, plus the unsharded checkpoint the exports slice
    assert diskspace.stage_bytes("quantize", recipe("fp8"), SMOL) == 2 * fp16 + fp8
    assert diskspace.stage_bytes("quantize", recipe("fp8", device="cuda"), SMOL) == fp16 + fp8
    assert diskspace.stage_bytes("quantize", recipe("fp8", targets=["hf"]), SMOL) == 2 * fp16  # no unsharded one
    assert diskspace.stage_bytes("resolve", recipe(), SMOL) == 0


def test_refuses_naming_the_filesystem_needed_and_free(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(10 * 1024**3, 0, 100 * 1024**2))
    with pytest.raises(DiskSpaceError) as e:
        diskspace.check_space([("checkpoint", tmp_path / "art", 300 * 1024**2), ("hf", tmp_path / "art", 1)])
    msg = str(e.value)
    assert msg.startswith(f"not enough disk space on {diskspace.mount_point(tmp_path)} (for {tmp_path / 'art'})")
    assert "writes about 394.0 MiB (checkpoint 300.0 MiB, hf 1 B, with 10% margin) but only 100.0 MiB is free" in msg
    assert "\n" not in msg and e.value.exit_code == 2
    diskspace.check_space([("checkpoint", tmp_path, 10 * 1024**2)])  # 10 MiB + margin fits in 100 MiB
    monkeypatch.setenv("TRTQ_SKIP_DISK_CHECK", "1")
    diskspace.check_space([("checkpoint", tmp_path, 300 * 1024**2)])
