"""A real model: SmolLM2-135M int8 SmoothQuant, exported and run by the reference, greedy = the fake-quant model."""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_smollm2_int8_sq_greedy_matches_fake_quant(smollm2, tmp_path):
    from transformers import AutoTokenizer

    from runtime.generate import complete, load_tokenizer
    from runtime.reference.runner import ReferenceRunner
    from tests import _quant

    # real prose for calibration (toy sentences make a poor SmoothQuant model, ppl x2.6)
    texts = _quant.license_texts(16) or None
    fq = _quant.quantize_model(smollm2, "int8_sq", texts=texts, n=16 if texts else 4)
    ckpt = _quant.export_checkpoint(fq, smollm2, tmp_path / "ckpt", "int8_sq", dtype="bfloat16")
    runner = ReferenceRunner.open(ckpt)
    assert runner.cfg.quant_algo == "W8A8_SQ_PER_CHANNEL" and runner.cfg.rotary_base == 100000.0
    tok = load_tokenizer(ckpt)
    prompt = "What is the capital of France?"
    ours = complete(runner, tok, [prompt], chat=True, max_new_tokens=20)[0]
    hf_tok = AutoTokenizer.from_pretrained(str(smollm2))
    text = hf_tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([hf_tok(text, add_special_tokens=False)["input_ids"]])
    with torch.inference_mode():
        want = fq.generate(ids, max_new_tokens=20, do_sample=False)[0, ids.shape[1] :].tolist()
    n = len(ours.token_ids)
    assert ours.token_ids == want[:n], (hf_tok.decode(ours.token_ids), hf_tok.decode(want))
    assert n == 20 or ours.finish_reason == "eos"
    assert "Paris" in ours.text
