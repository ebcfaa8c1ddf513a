"""Text in, text out, over any Runner: tokenizer and chat template from the artifact, stop strings, streaming.

Backend-agnostic: it only calls `runner.generate(token batches, Sampling, stream)` (runtime/runners/base.py), so the
reference, engine and PyTorch-backend runners all get the same prompts, stops and printing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.errors import UsageError
from runtime.runners.base import Runner, Sampling


@dataclass
class Completion:
    prompt: str
    text: str
    token_ids: list[int]
    finish_reason: str
    prompt_tokens: int
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "text": self.text,
            "token_ids": self.token_ids,
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": len(self.token_ids),
        }


def load_tokenizer(model_dir: str | Path):
    """The tokenizer saved next to the checkpoint (trtq copies it there at export)."""
    try:
        from transformers import AutoTokenizer
    except ImportError as e:
        raise UsageError("reading the tokenizer needs 'transformers': pip install 'trtq[quantize]'") from e
    d = Path(model_dir)
    if not any((d / n).is_file() for n in ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")):
        raise UsageError(f"{d}: no tokenizer files (tokenizer.json...): was it exported by trtq?")
    return AutoTokenizer.from_pretrained(str(d))


def encode(tokenizer, prompts: Sequence[str], chat: bool, system: str | None = None) -> list[list[int]]:
    out = []
    for p in prompts:
        if chat:
            if not getattr(tokenizer, "chat_template", None):
                raise UsageError("--chat: this model's tokenizer has no chat template")
            msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": p}]
            text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            ids = tokenizer(p)["input_ids"]
        if not ids:
            raise UsageError(f"prompt {p!r} encodes to no tokens")
        out.append(list(ids))
    return out


def _stop_token_ids(tokenizer, stops: Sequence[str]) -> tuple[tuple[int, ...], ...]:
    """Stop strings that are exactly one or more whole tokens end generation inside the runner; all stop strings are
    also checked on the decoded text (a stop string can straddle token boundaries)."""
    seqs = []
    for s in stops:
        ids = tokenizer(s, add_special_tokens=False)["input_ids"]
        if ids and tokenizer.decode(ids) == s:
            seqs.append(tuple(ids))
    return tuple(seqs)


def end_ids(tokenizer, model_dir: str | Path | None = None) -> list[int]:
    """The ids that end a sequence: generation_config.json's eos_token_id (int or list; what the model was tuned to
    emit, e.g. <|im_end|> for chat models) first, then the tokenizer's eos token."""
    ids: list[int] = []
    d = Path(model_dir) if model_dir is not None else Path(getattr(tokenizer, "name_or_path", "") or ".")
    gen = d / "generation_config.json"
    if gen.is_file():
        import json

        try:
            eos = json.loads(gen.read_text()).get("eos_token_id")
        except (OSError, ValueError):
            eos = None
        ids += [int(e) for e in (eos if isinstance(eos, list) else [eos]) if e is not None]
    if tokenizer.eos_token_id is not None and int(tokenizer.eos_token_id) not in ids:
        ids.append(int(tokenizer.eos_token_id))
    return ids


def complete(
    runner: Runner,
    tokenizer,
    prompts: Sequence[str],
    *,
    chat: bool = False,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    stop: Sequence[str] = (),
    stream: Callable[[int, str], None] | None = None,
) -> list[Completion]:
    """Generate for every prompt in one batch. On non-leader ranks returns []. ``stream(i, text_delta)`` is called
    on rank 0 as text arrives (text held back while it could still become a stop string)."""
    batch = encode(tokenizer, prompts, chat)
    eos = end_ids(tokenizer)
    end_id = eos[0] if eos else None
    sampling = Sampling(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        end_id=end_id,
        pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end_id,
        # further end ids (a model with several) stop like one-token stop sequences
        stop_token_ids=tuple((e,) for e in eos[1:]) + _stop_token_ids(tokenizer, stop),
    )
    streamer = _TextStreamer(tokenizer, len(prompts), stop, stream) if stream is not None else None
    outputs = runner.generate(batch, sampling, streamer.on_tokens if streamer else None)
    if not runner.is_leader:
        return []
    results = []
    for i, o in enumerate(outputs):
        reason = o.finish_reason
        if o.token_ids and o.token_ids[-1] in eos and reason in ("eos", "stop"):
            ids, reason = o.token_ids[:-1], "eos"
        else:
            ids = o.token_ids
        text = tokenizer.decode(ids, skip_special_tokens=True)
        cut = _first_stop(text, stop)
        if cut is not None:
            text, reason = text[:cut], "stop"
        if streamer is not None:
            streamer.finish(i, text)
        results.append(Completion(prompts[i], text, list(o.token_ids), reason, len(batch[i])))
    return results


def _first_stop(text: str, stops: Sequence[str]) -> int | None:
    hits = [text.find(s) for s in stops if s and s in text]
    return min(hits) if hits else None


class _TextStreamer:
    """Turns token deltas into text deltas per sequence, never emitting text a stop string could still claim."""

    def __init__(self, tokenizer, n: int, stops: Sequence[str], sink: Callable[[int, str], None]):
        self.tok, self.stops, self.sink = tokenizer, [s for s in stops if s], sink
        self.ids: list[list[int]] = [[] for _ in range(n)]
        self.sent = [0] * n
        self.stopped = [False] * n
        self.hold = max((len(s) for s in self.stops), default=1) - 1

    def on_tokens(self, i: int, new: Sequence[int]) -> None:
        if self.stopped[i]:
            return
        self.ids[i].extend(int(t) for t in new)
        text = self.tok.decode(self.ids[i], skip_special_tokens=True)
        cut = _first_stop(text, self.stops)
        if cut is not None:
            self.stopped[i] = True
            self._emit(i, text[:cut])
            return
        safe = len(text) - self.hold if self.hold > 0 else len(text)
        if text.endswith("\ufffd"):  # an incomplete multi-byte character: wait for the rest
            safe = min(safe, len(text) - 1)
        self._emit(i, text[:safe])

    def _emit(self, i: int, upto: str) -> None:
        if len(upto) > self.sent[i]:
            self.sink(i, upto[self.sent[i] :])
            self.sent[i] = len(upto)

    def finish(self, i: int, final: str) -> None:
        self._emit(i, final)


def print_stream(i: int, delta: str) -> None:
    sys.stdout.write(delta)
    sys.stdout.flush()
