"""Compatibility: what an artifact needs, and the precise error/warning when this machine does not have it."""

from __future__ import annotations

import json

import pytest

from runtime.compat import Gpu, Machine, check, requirements
from runtime.gpu import normalize_cc
from runtime.manifest import read_manifest
from tests._publish import make_artifact

H100 = {"gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "tensorrt_llm": "1.2.1", "tensorrt": "10.13.2"}


def _engine(tmp_path, **kw):
    files = {"engine/config.json": b"{}", "engine/rank0.engine": b"\0" * 64}
    return read_manifest(make_artifact(tmp_path / "a", files, hardware=H100, **kw))


@pytest.mark.parametrize(
    "raw, cc", [("9.0", "9.0"), ([8, 9], "8.9"), (90, "9.0"), ("sm_89", "8.9"), ("sm100", "10.0"), (None, None)]
)
def test_compute_capability_forms(raw, cc):
    assert normalize_cc(raw) == cc


def test_engine_requirements_and_summary(tmp_path):
    m = _engine(tmp_path, tp=2)
    req = requirements(m)
    assert req.engine and req.compute_capability == "9.0" and req.tensorrt_llm == "1.2.1"
    assert (
        req.summary()
        == "GPU compute capability 9.0 (NVIDIA H100 80GB HBM3), 2 GPUs (tp x pp), TensorRT-LLM 1.2.1, TensorRT 10.13.2"
    )


def test_engine_on_another_architecture_is_an_error(tmp_path):
    m = _engine(tmp_path)
    found = check(m, Machine((Gpu("NVIDIA A100-SXM4-80GB", "8.0"),), "1.2.1", "10.13.2", "nvidia-smi"))
    assert [f.level for f in found] == ["error"]
    assert "built for compute capability 9.0 (NVIDIA H100 80GB HBM3)" in found[0].message
    assert "NVIDIA A100-SXM4-80GB (8.0)" in found[0].message


def test_engine_on_same_architecture_and_versions_is_fine(tmp_path):
    m = _engine(tmp_path)
    assert check(m, Machine((Gpu("NVIDIA H200", "9.0"),), "1.2.1", "10.13.2", "nvidia-smi")) == []


def test_engine_with_other_tensorrt_llm_version_is_an_error(tmp_path):
    found = check(_engine(tmp_path), Machine((Gpu("NVIDIA H100", "9.0"),), "1.3.0", "10.13.2", "nvidia-smi"))
    assert len(found) == 1 and found[0].level == "error"
    assert "built with TensorRT-LLM 1.2.1, but this machine has TensorRT-LLM 1.3.0" in found[0].message


def test_engine_without_gpu_or_tensorrt_llm_warns(tmp_path):
    found = check(_engine(tmp_path), Machine())
    assert {f.level for f in found} == {"warning"}
    text = " | ".join(f.message for f in found)
    assert "no NVIDIA GPU found" in text and "TensorRT-LLM is not installed here" in text


def test_fp8_checkpoint_needs_sm89(tmp_path):
    m = read_manifest(make_artifact(tmp_path / "a", fmt="fp8"))
    assert requirements(m).min_compute_capability == "8.9"
    found = check(m, Machine((Gpu("NVIDIA A100", "8.0"),)))
    assert found[0].level == "error" and "format fp8 needs a GPU with compute capability >= 8.9" in found[0].message
    assert check(m, Machine((Gpu("NVIDIA L40S", "8.9"),))) == []
    assert check(m, Machine()) == []  # a checkpoint without a GPU here: nothing to say (it is portable)


def test_too_few_gpus_warns(tmp_path):
    m = read_manifest(make_artifact(tmp_path / "a", tp=2, pp=2))
    found = check(m, Machine((Gpu("NVIDIA H100", "9.0"),)))
    assert [f.level for f in found] == ["warning"] and "split over 4 GPUs" in found[0].message


def test_kv_cache_fp8_raises_the_minimum(tmp_path):
    d = make_artifact(tmp_path / "a", fmt="int4_awq")
    raw = json.loads((d / "manifest.json").read_text())
    raw["recipe"]["quantization"]["kv_cache"] = "fp8"
    (d / "manifest.json").write_text(json.dumps(raw))
    req = requirements(read_manifest(d))
    assert req.min_compute_capability == "8.9" and req.reasons["min_compute_capability"] == "kv cache fp8"


@pytest.mark.parametrize("kv", ["none", "fp8", "int8"])
@pytest.mark.parametrize("fmt", ["fp16", "int8_sq", "int4_awq", "fp8"])
def test_pull_and_build_agree_on_the_minimum_compute_capability(tmp_path, fmt, kv):
    """One table (runtime/formats.py) for `trtq pull`'s check and the engine build's: they once disagreed on int8 KV."""
    from runtime.formats import FORMATS, KV_CACHES, sm_problem

    if kv not in FORMATS[fmt].kv_caches:
        pytest.skip(f"{fmt} does not combine with kv {kv}")
    d = make_artifact(tmp_path / "a", fmt=fmt)
    raw = json.loads((d / "manifest.json").read_text())
    raw["recipe"]["quantization"]["kv_cache"] = kv
    (d / "manifest.json").write_text(json.dumps(raw))
    need = requirements(read_manifest(d)).min_compute_capability
    want = max(FORMATS[fmt].min_sm, KV_CACHES[kv].min_sm)
    assert need == f"{want[0]}.{want[1]}"
    below = (want[0], want[1] - 1) if want[1] else (want[0] - 1, 9)
    assert sm_problem(fmt, kv, want, "gpu") is None and sm_problem(fmt, kv, below, "gpu") is not None
    assert check(read_manifest(d), Machine((Gpu("g", f"{below[0]}.{below[1]}"),)))[0].level == "error"
