"""The real `trtq` command: exit codes, messages, and a fast start that imports no heavy library."""

from __future__ import annotations

import subprocess
import sys

from _cli import REPO, run_trtq

BAD = """\
name: bad
model:
  path: ./m
  dtyp: float16
quantization:
  format: int4-awq
engine:
  max_input_len: 4096
  max_seq_len: 1024
"""


def test_help_lists_commands_with_examples():
    r = run_trtq("--help")
    assert r.returncode == 0
    for cmd in ("build", "validate", "schema", "show", "ls"):
        assert f"  {cmd} " in r.stdout
    r = run_trtq("build", "--help")
    assert r.returncode == 0 and "Example:" in r.stdout and "--dry-run" in r.stdout


def test_validate_reports_every_problem_exit_2_no_traceback(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(BAD)
    r = run_trtq("validate", p)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines == [
        f"{p}:4: model.dtyp: unknown field; did you mean 'dtype'? valid fields here: hub, revision, path, gguf, "
        "dtype, trust_remote_code, allow_pickle",
        f"{p}:6: quantization.format: 'int4-awq' is not one of fp16, bf16, int8_wo, int4_wo, int8_sq, int4_awq, "
        "w4a8_awq, fp8 (did you mean 'int4_awq'?)",
        f"{p}:8: engine.max_input_len: 4096 is larger than max_seq_len (1024): max_seq_len counts prompt and output "
        "tokens together",
    ]


def test_validate_good_recipe_and_json(tmp_path):
    r = run_trtq("validate", "recipes/smollm2-135m/bf16.yaml")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok: recipes/smollm2-135m/bf16.yaml -> smollm2-135m-bf16 (bf16")
    r = run_trtq("validate", "recipes/smollm2-135m/bf16.yaml", "--json")
    assert '"ok": true' in r.stdout


def test_build_with_bad_recipe_exits_2_and_builds_nothing(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(BAD)
    r = run_trtq("build", p, "--root", tmp_path / "engines")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert not (tmp_path / "engines").exists()


def test_unknown_flag_is_a_usage_error():
    r = run_trtq("build", "--no-such-flag")
    assert r.returncode == 2


def test_show_on_a_non_artifact(tmp_path):
    r = run_trtq("show", tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: {tmp_path}: no manifest.json: not a trtq artifact, or its build never finished"


def test_start_up_imports_no_heavy_library(tmp_path):
    """`trtq --help` and `trtq validate` must not import torch/transformers/modelopt (fast start)."""
    code = (
        "import sys\n"
        "from builder.cli import cli\n"
        "for args in (['--help'], ['validate', 'recipes/smollm2-135m/bf16.yaml'], ['schema']):\n"
        "    try:\n"
        "        cli.main(args, standalone_mode=False)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'modelopt', 'tensorrt_llm', 'numpy') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stdout
