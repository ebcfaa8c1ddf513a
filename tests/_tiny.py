"""Tiny random models of several architectures, built offline from configs in tests/fixtures/configs.

Each is a real Hugging Face checkpoint directory (safetensors + config + a small BPE tokenizer with a chat template),
so every stage runs on it exactly as on a real model, in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

CONFIGS = Path(__file__).parent / "fixtures" / "configs"
ARCHITECTURES = tuple(sorted(p.stem for p in CONFIGS.glob("*.json")))

_TEXT = (
    "The quick brown fox jumps over the lazy dog. Paris is the capital of France. "
    "TensorRT-LLM builds engines from checkpoints; quantization trades accuracy for speed. "
    "Calibration data should look like what the model will see. 0123456789 + - * / = ( ) [ ] { } "
)
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_tokenizer(vocab_size: int = 512):
    """A byte-level BPE tokenizer trained on a few sentences: real merges, deterministic, offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator([_TEXT] * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token=None
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_model(dest: Path, arch: str = "llama", seed: int = 0, dtype: str = "float32", **overrides) -> Path:
    """Write a random tiny ``arch`` model (config from fixtures, ``overrides`` applied) to ``dest``; return it."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    raw = json.loads((CONFIGS / f"{arch}.json").read_text())
    raw.update(overrides)
    model_type = raw.pop("model_type")
    config = AutoConfig.for_model(model_type, **raw)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    # Random init leaves norms at 1 and small weights; scale a little so quantization errors are visible in tests.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and ("norm" in name or "ln_" in name):
                p.add_(0.1 * torch.randn_like(p))
    model = model.to(getattr(torch, dtype))
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest, safe_serialization=True)
    make_tokenizer(raw.get("vocab_size", 512)).save_pretrained(dest)
    return dest
