"""`trtq serve` on the GPU path: the trtllm-serve command line and extra_llm_api_options YAML it builds, checked
against the options recorded from TensorRT-LLM 1.2.x's source (tests/contract/trtllm_serve_v1_2_1.json): the
command line is parsed by a click command rebuilt from that record, so an option or value the release would
reject fails here. Without trtllm-serve and a GPU (this machine), auto falls back to the reference runtime and an
explicit --backend engine says why it cannot start."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from builder.cli import cli

RECORD = json.loads((Path(__file__).parents[1] / "contract" / "trtllm_serve_v1_2_1.json").read_text())


def record_command() -> click.Command:
    """`trtllm-serve serve` as recorded: every option with its names and type."""
    params: list[click.Parameter] = [click.Argument(["model"])]
    types = {"str": str, "int": int, "float": float}
    for name, spec in RECORD["trtllm-serve"]["serve"]["options"].items():
        names = spec.get("names", [name])
        dest = names[-1].lstrip("-")
        if spec["type"] == "flag":
            params.append(click.Option(names + [dest], is_flag=True))
        elif spec["type"] == "choice":
            choices = spec["choices"] + list(spec.get("aliases", {}))
            params.append(click.Option(names + [dest], type=click.Choice(choices)))
        else:
            params.append(click.Option(names + [dest], type=types[spec["type"]]))
    return click.Command("serve", params=params, callback=lambda **kw: kw)


def parse_trtllm_serve(argv: list[str]) -> dict:
    i = argv.index("trtllm-serve")
    assert argv[i + 1] == "serve"
    return record_command().main(argv[i + 2 :], standalone_mode=False)


def artifact(tmp_path: Path, *, tp=1, pp=1, engine=True, hf=False, checkpoint=True, paged_fmha=True) -> Path:
    art = tmp_path / "art"
    recipe = {
        "name": "tiny",
        "model": {"path": "x", "trust_remote_code": False},
        "parallel": {"tp": tp, "pp": pp},
        "engine": {
            "max_batch_size": 8,
            "max_input_len": 256,
            "max_seq_len": 512,
            "max_num_tokens": 2048,
            "max_beam_width": 1,
        },
    }
    manifest = {
        "schema_version": 1,
        "name": "tiny",
        "status": "complete",
        "created": "2026-01-01T00:00:00Z",
        "trtq_version": "0.2.0",
        "recipe": recipe,
        "parallel": {"tp": tp, "pp": pp, "world_size": tp * pp},
    }
    art.mkdir()
    (art / "manifest.json").write_text(json.dumps(manifest))
    if engine:
        (art / "engine").mkdir()
        bc = {
            "max_batch_size": 4,
            "max_seq_len": 300,
            "max_num_tokens": 1024,
            "max_beam_width": 1,
            "plugin_config": {"use_paged_context_fmha": paged_fmha},
        }
        (art / "engine" / "config.json").write_text(json.dumps({"build_config": bc}))
    if checkpoint:
        (art / "checkpoint").mkdir()
        (art / "checkpoint" / "config.json").write_text(
            json.dumps({"mapping": {"tp_size": tp, "pp_size": pp, "world_size": tp * pp}})
        )
        (art / "checkpoint" / "tokenizer.json").write_text("{}")
    if hf:
        (art / "hf").mkdir()
        (art / "hf" / "config.json").write_text("{}")
    return art


def dry_run(art: Path, *args: str) -> dict:
    r = CliRunner().invoke(cli, ["serve", str(art), "--dry-run", *args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


@pytest.fixture
def gpu_here(monkeypatch):
    """Pretend TensorRT-LLM 1.2.1, trtllm-serve and a GPU are present (both machine probes say nothing is missing)."""
    import runtime.select as select
    import runtime.serve.trtllm as trtllm

    monkeypatch.setattr(trtllm, "cannot_start", lambda: None)
    monkeypatch.setattr(select, "detect_host", lambda: select.Host("1.2.1", 1))


def test_engines_get_trtllm_serve_with_the_engines_own_limits(tmp_path, gpu_here):
    art = artifact(tmp_path)
    out = dry_run(art, "--port", "8123", "--kv-cache-free-gpu-memory-fraction", "0.8")
    assert out["server"] == "trtllm-serve" and out["backend"] == "engine" and "GPU" in out["reason"]
    opts = parse_trtllm_serve(out["command"])
    assert opts["model"] == str(art / "engine") and opts["backend"] == "tensorrt"
    assert opts["tokenizer"] == str(art / "checkpoint")
    assert (opts["host"], opts["port"]) == ("127.0.0.1", 8123)
    assert (opts["max_batch_size"], opts["max_seq_len"], opts["max_num_tokens"]) == (4, 300, 1024)  # engine's
    assert (opts["tp_size"], opts["pp_size"]) == (1, 1)
    assert opts["kv_cache_free_gpu_memory_fraction"] == 0.8
    assert opts["extra_llm_api_options"] == str(art / "serve" / "extra_llm_api_options.yaml")
    assert out["command"][0] == "trtllm-serve"  # one rank: no mpirun


def test_the_yaml_holds_only_recorded_llm_args_fields(tmp_path, gpu_here):
    out = dry_run(artifact(tmp_path, paged_fmha=False))
    extra = out["extra_llm_api_options"]
    fields = RECORD["extra_llm_api_options"]["fields"]
    for key, value in extra.items():
        assert key in fields, key
        if isinstance(value, dict):
            assert set(value) <= set(fields[key]["fields"]), value
    kv = extra["kv_cache_config"]
    assert 0.0 <= kv["free_gpu_memory_fraction"] <= 1.0
    assert kv["enable_block_reuse"] is False and "paged_context_fmha" in " ".join(out["notes"])
    yaml.safe_load(yaml.safe_dump(extra))  # what write_extra_options writes


def test_split_engines_run_under_mpirun_with_the_llmapi_launcher(tmp_path, gpu_here):
    out = dry_run(artifact(tmp_path, tp=2, pp=2))
    cmd = out["command"]
    assert Path(cmd[0]).name == "mpirun" and cmd[1:3] == ["-n", "4"]
    assert cmd[cmd.index("trtllm-serve") - 1] == "trtllm-llmapi-launch"
    opts = parse_trtllm_serve(cmd)
    assert (opts["tp_size"], opts["pp_size"]) == (2, 2) and out["world_size"] == 4


def test_hf_checkpoint_gets_the_pytorch_backend_with_the_recipes_limits(tmp_path, gpu_here):
    art = artifact(tmp_path, engine=False, hf=True, checkpoint=False)
    (art / "hf" / "tokenizer.json").write_text("{}")
    out = dry_run(art)
    opts = parse_trtllm_serve(out["command"])
    assert out["backend"] == "pytorch" and opts["backend"] == "pytorch" and opts["model"] == str(art / "hf")
    assert (opts["max_batch_size"], opts["max_seq_len"], opts["max_num_tokens"]) == (8, 512, 2048)


def test_the_record_rejects_what_the_release_would():
    with pytest.raises(click.UsageError):
        parse_trtllm_serve(["trtllm-serve", "serve", "m", "--max_output_len", "5"])
    with pytest.raises(click.UsageError):
        parse_trtllm_serve(["trtllm-serve", "serve", "m", "--backend", "onnx"])


def test_without_trtllm_serve_auto_falls_back_and_explicit_engine_says_why(tmp_path):
    import runtime.serve.trtllm as trtllm

    why = trtllm.cannot_start()
    assert why is not None and "trtllm-serve" in why  # this machine has no TensorRT-LLM
    art = artifact(tmp_path)
    out = dry_run(art)
    assert out["server"] == "reference" and "engine/ needs TensorRT-LLM on a GPU" in out["reason"]
    assert "tensorrt_llm is not installed here" in out["reason"]
    r = CliRunner().invoke(cli, ["serve", str(art), "--backend", "engine", "--dry-run"])
    assert r.exit_code != 0
    assert "cannot start trtllm-serve" in str(r.exception) and "nvcr.io/nvidia/tensorrt-llm/release:1.2.1" in str(
        r.exception
    )


def test_cli_exit_code_and_message_for_an_engine_without_trtllm(tmp_path):
    from tests._cli import run_trtq

    art = artifact(tmp_path)
    p = run_trtq("serve", art, "--backend", "engine", timeout=120)
    assert p.returncode == 2
    assert p.stderr.startswith("error: cannot start trtllm-serve") and "Traceback" not in p.stderr
