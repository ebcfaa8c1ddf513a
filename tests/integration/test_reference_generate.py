"""Generation through runtime.generate + `trtq run`: stops, EOS, sampling, chat template, JSON, streaming."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def setup(checkpoints):
    from runtime.generate import load_tokenizer
    from runtime.reference.runner import ReferenceRunner

    ckpt, _ = checkpoints("llama", "fp16")
    return ckpt, ReferenceRunner.open(ckpt), load_tokenizer(ckpt)


def test_stop_strings_and_eos(setup):
    from runtime.generate import complete
    from runtime.runners.base import Sampling

    ckpt, runner, tok = setup
    free = complete(runner, tok, ["The quick brown"], max_new_tokens=12)[0]
    assert free.finish_reason == "length" and len(free.token_ids) == 12
    stop = free.text[3:6]
    cut = complete(runner, tok, ["The quick brown"], max_new_tokens=12, stop=[stop])[0]
    assert cut.finish_reason == "stop" and cut.text == free.text[: free.text.find(stop)]
    # EOS: make the first generated token the end id
    first = free.token_ids[0]
    out = runner.generate([tok("The quick brown")["input_ids"]], Sampling(max_new_tokens=12, end_id=first))
    assert out[0].token_ids == [first] and out[0].finish_reason == "eos"


def test_sampling_is_seeded(setup):
    from runtime.generate import complete

    _, runner, tok = setup
    kw = dict(max_new_tokens=10, temperature=1.0, top_k=50, top_p=0.9)
    a = complete(runner, tok, ["Paris is"], seed=1, **kw)[0].token_ids
    b = complete(runner, tok, ["Paris is"], seed=1, **kw)[0].token_ids
    c = complete(runner, tok, ["Paris is"], seed=2, **kw)[0].token_ids
    greedy = complete(runner, tok, ["Paris is"], max_new_tokens=10)[0].token_ids
    assert a == b and (a != c or a != greedy)


def test_chat_template_is_applied(setup):
    from runtime.generate import encode

    _, _, tok = setup
    plain, chat = encode(tok, ["hi"], False)[0], encode(tok, ["hi"], True)[0]
    assert tok.convert_tokens_to_ids("<|im_start|>") in chat and len(chat) > len(plain)


def test_cli_json_and_streaming(setup):
    from builder.cli import cli

    ckpt, runner, tok = setup
    r = CliRunner()
    res = r.invoke(
        cli, ["run", str(ckpt), "The quick brown", "Paris is", "--max-new-tokens", "5", "--json"], standalone_mode=False
    )
    assert res.exception is None, res.output
    data = json.loads(res.stdout)
    assert data["backend"] == "reference" and [len(c["token_ids"]) for c in data["completions"]] == [5, 5]
    streamed = r.invoke(cli, ["run", str(ckpt), "The quick brown", "--max-new-tokens", "5"], standalone_mode=False)
    assert streamed.stdout.strip() == data["completions"][0]["text"].strip()


def test_run_on_a_built_artifact(tiny_models, tmp_path):
    """`trtq build` (checkpoint target) then `trtq run ARTIFACT`: the runner is picked from the artifact's layout."""
    from builder.cli import cli

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"name: tiny-fp16\nmodel: {{path: {tiny_models['llama']}}}\nquantization: {{format: fp16}}\n"
        "targets: [checkpoint]\n"
    )
    r = CliRunner()
    built = r.invoke(cli, ["build", str(recipe), "--root", str(tmp_path / "engines")], standalone_mode=False)
    assert built.exception is None, built.output
    art = tmp_path / "engines" / "tiny-fp16"
    res = r.invoke(cli, ["run", str(art), "The quick brown", "--max-new-tokens", "4", "--json"], standalone_mode=False)
    assert res.exception is None, res.output
    data = json.loads(res.stdout)
    assert data["backend"] == "reference" and data["completions"][0]["completion_tokens"] == 4
    engine = r.invoke(cli, ["run", str(art), "hi", "--backend", "engine"], standalone_mode=False)
    assert engine.exception is not None and "no engine/ directory" in str(engine.exception)
