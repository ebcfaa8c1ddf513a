"""The Hugging Face model card: metadata the Hub understands, compatibility facts, report or manifest facts."""

from __future__ import annotations

import yaml

from builder.publish.card import model_card
from runtime.manifest import read_manifest
from tests._publish import make_artifact

H100 = {"gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "tensorrt_llm": "1.2.1", "tensorrt": "10.13.2"}


def _front(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_front_matter_for_a_quantized_checkpoint(tmp_path):
    d = make_artifact(tmp_path / "a", fmt="fp8", tp=2)
    card = model_card(read_manifest(d), d, "hf://me/smol-fp8")
    meta = _front(card)
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert meta["base_model_relation"] == "quantized"
    assert meta["pipeline_tag"] == "text-generation"
    assert meta["tags"] == ["tensorrt-llm", "trtq", "fp8", "quantized", "checkpoint", "tp2-pp1"]
    assert "GPU compute capability >= 8.9" in card
    assert "trtq pull hf://me/smol-fp8 ./tiny-fp16" in card
    assert f"at commit `{'a' * 40}`" in card


def test_engine_card_states_the_gpu_and_versions(tmp_path):
    files = {"engine/config.json": b"{}", "engine/rank0.engine": b"\0" * 10}
    d = make_artifact(tmp_path / "a", files, hardware=H100)
    card = model_card(read_manifest(d), d, "hf://me/smol@h100")
    assert "engine" in _front(card)["tags"]
    assert "| compute capability (engines) | 9.0 |" in card
    assert "| TensorRT-LLM | 1.2.1 |" in card
    assert "| GPU (engines) | NVIDIA H100 80GB HBM3 |" in card
    assert "TensorRT engines run only on the GPU architecture" in card
    assert "| `engine/rank0.engine` | 10 B |" in card


def test_report_table_and_plots_are_included(tmp_path):
    report = "# Report\n\n| model | ppl |\n|---|---|\n| fp16 | 16.81 |\n| fp8 | 17.29 |\n\n![ppl](report/ppl.png)\n"
    files = {
        "checkpoint/config.json": b"{}",
        "report/report.md": report.encode(),
        "report/ppl.png": b"\x89PNG fake",
        "report/latency.png": b"\x89PNG fake2",
    }
    d = make_artifact(tmp_path / "a", files, fmt="fp8")
    card = model_card(read_manifest(d), d, "hf://me/x")
    assert "## Evaluation" in card
    assert "| fp8 | 17.29 |" in card
    assert "## Report" in card  # demoted from H1: the card has one title
    assert card.count("report/ppl.png") == 2  # once in the report, once in the files table; not added twice
    assert "![latency](report/latency.png)" in card


def test_without_report_the_verify_results_are_shown(tmp_path):
    d = make_artifact(tmp_path / "a", verify={"passed": True, "perplexity": {"baseline": 16.81, "quantized": 17.29}})
    card = model_card(read_manifest(d), d, "hf://me/x")
    assert "## Evaluation" not in card
    assert "| passed | True |" in card and "quantized 17.29" in card
