"""verify: passes a correct export, and catches broken ones (the detector is tested, not only the happy path)."""

from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.integration


def _corrupt(src, dst, key, factor):
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    t = load_file(str(dst / "rank0.safetensors"))
    t[key] = t[key] * factor
    save_file(t, str(dst / "rank0.safetensors"))
    return dst


def test_verify_passes_and_catches_a_corrupted_scale(checkpoints, tiny_models, tmp_path):
    from builder.verify.checkpoint import verify_checkpoint

    ckpt, fq = checkpoints("llama", "int8_sq")
    good = verify_checkpoint(ckpt, tiny_models["llama"], fq)
    assert good["passed"], good["failed"]
    assert set(good["comparisons"]) == {"fake_quant", "source"}
    m = good["comparisons"]["fake_quant"]
    assert m["top1"] >= 0.9 and m["nrmse"] < 0.1 and m["positions"] > 50
    bad_dir = _corrupt(ckpt, tmp_path / "bad", "transformer.layers.1.mlp.proj.weights_scaling_factor", 4.0)
    bad = verify_checkpoint(bad_dir, tiny_models["llama"], fq)
    assert not bad["passed"]
    assert any(f.startswith("fake_quant.") for f in bad["failed"])
    assert bad["comparisons"]["fake_quant"]["nrmse"] > 5 * m["nrmse"]


def test_verify_cli_exit_codes(checkpoints, tiny_models, tmp_path):
    from builder.cli import cli

    ckpt, _ = checkpoints("llama", "int4_awq")
    runner = CliRunner()
    ok = runner.invoke(
        cli, ["verify", str(ckpt), "--source", str(tiny_models["llama"]), "--json"], standalone_mode=False
    )
    assert ok.exception is None, ok.output
    assert '"passed": true' in ok.output
    bad_dir = _corrupt(ckpt, tmp_path / "bad", "transformer.layers.0.attention.qkv.weights_scaling_factor", 3.0)
    from builder.errors import StageFailed

    bad = runner.invoke(cli, ["verify", str(bad_dir), "--source", str(tiny_models["llama"])], standalone_mode=False)
    assert isinstance(bad.exception, StageFailed) and bad.exception.exit_code == 1
    assert "verification FAILED" in bad.output


def test_truncated_shard_is_refused_with_the_tensor_named(checkpoints, tmp_path):
    from safetensors.torch import load_file, save_file

    from runtime.errors import CheckpointError
    from runtime.reference.runner import ReferenceRunner

    ckpt, _ = checkpoints("llama", "fp16")
    bad = tmp_path / "bad"
    shutil.copytree(ckpt, bad)
    t = load_file(str(bad / "rank0.safetensors"))
    t["transformer.layers.2.mlp.fc.weight"] = t["transformer.layers.2.mlp.fc.weight"][:-8].contiguous()
    save_file(t, str(bad / "rank0.safetensors"))
    with pytest.raises(
        CheckpointError, match=r"layers\.2\.mlp\.fc\.weight has \(out, in\) shape \(120, 64\), expected \(128, 64\)"
    ):
        ReferenceRunner.open(bad)


def test_unknown_quant_algo_is_a_clear_error(checkpoints, tmp_path):
    import json

    from runtime.errors import CheckpointError
    from runtime.reference.runner import ReferenceRunner

    ckpt, _ = checkpoints("llama", "fp16")
    bad = tmp_path / "c"
    shutil.copytree(ckpt, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["quantization"]["quant_algo"] = "NVFP4"
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="quant_algo NVFP4 is not implemented"):
        ReferenceRunner.open(bad)


def test_gpt2_rope_config_with_a_learned_table_is_refused(checkpoints, tmp_path):
    """ModelOpt 0.47 exports GPT-2 with position_embedding_type rope_gpt_neox: TensorRT-LLM would drop the table."""
    import json

    from runtime.errors import CheckpointError
    from runtime.reference.runner import ReferenceRunner

    ckpt, _ = checkpoints("gpt2", "fp16")
    assert ReferenceRunner.open(ckpt).decoder.pos_table is not None  # fixed config: learned_absolute
    bad = tmp_path / "g"
    shutil.copytree(ckpt, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["position_embedding_type"] = "rope_gpt_neox"
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="set position_embedding_type to learned_absolute"):
        ReferenceRunner.open(bad)
