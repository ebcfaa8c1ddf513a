"""Evaluation of a built artifact: perplexity against the unquantized model (baseline cached), and smoke prompts.

Used by the build's accuracy gate (`verify.perplexity`, `verify.prompts`) and by `trtq eval`.

Eval text comes from the same sources as calibration (builder.quant.data.documents): ``builtin``, a local .txt/.jsonl/
.parquet file, or ``hf:<dataset>``. The documents are tokenized, joined with EOS into one stream, and the first
``tokens`` tokens are cut into consecutive ``window``-token windows (runtime.evaluate.windows); every window is scored
teacher-forced, its first token unpredicted.

``builtin`` holds out what calibration uses: calibration reads the standard library's docstrings in the order
``random.Random(seed).shuffle`` gives them (seed 0 by default) and only from the front of that order (it tokenizes
``samples * seq_len * 2`` tokens at most); evaluation reads the same seed-0 order from the END. The two never share a
document while together they use less than the whole builtin text (about 300k tokens for a 49k-vocabulary tokenizer),
which the defaults (128 x 512 x 2 calibration tokens, 4096 eval tokens) respect. For a file or hf: source the
documents are read in order: give evaluation data that calibration did not use.

The baseline (the unquantized source model, Hugging Face transformers in float32 on CPU, on the same windows) is
computed once per (source model, windows) and cached in $TRTQ_CACHE/ppl/ (default ~/.cache/trtq/ppl/): the key
hashes the model's config and weight files (name, size, mtime) and the token ids of the windows themselves, so any
change of data, tokenizer, tokens or window gives a new key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("trtq.eval")

CACHE_VERSION = 1
# Counts baseline computations in this process (tests assert a cached baseline is not recomputed).
BASELINE_RUNS = {"count": 0}


@dataclass(frozen=True)
class EvalData:
    """Where eval text comes from (the fields of `verify.perplexity`, or `trtq eval` flags)."""

    dataset: str = "builtin"
    text_field: str = "text"
    config: str | None = None
    split: str = "test"
    tokens: int = 4096
    window: int = 512
    section: str = "verify.perplexity"  # where the user wrote it, for error messages ("flags": trtq eval's flags)


def eval_documents(data: EvalData, base_dir: Path) -> list[str]:
    """The documents to evaluate on, in reading order (builtin: the calibration order reversed; see the module doc)."""
    from builder.quant.data import documents

    docs = documents(data, base_dir, section=data.section)
    if data.dataset == "builtin":
        order = list(range(len(docs)))
        random.Random(0).shuffle(order)  # calibration's default order (builder.quant.data.token_windows, seed 0)
        docs = [docs[i] for i in reversed(order)]
    return docs


def eval_windows(data: EvalData, base_dir: Path, tokenizer, max_positions: int | None = None) -> list[list[int]]:
    """Token windows of the eval text. ``max_positions``: the model's context; a longer window is shortened to it."""
    from builder.errors import UsageError
    from runtime.evaluate import windows

    window = min(data.window, max_positions) if max_positions else data.window
    if window < data.window:
        log.info("eval window %d tokens: the model has %d positions (asked %d)", window, max_positions, data.window)
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for doc in eval_documents(data, base_dir):
        stream += tokenizer(doc, add_special_tokens=False)["input_ids"]
        if eos is not None:
            stream.append(eos)
        if len(stream) >= data.tokens:
            break
    if len(stream) < data.tokens:
        log.warning("eval: the data holds %d tokens, fewer than the %d asked for", len(stream), data.tokens)
    wins = windows(stream, data.tokens, window)
    if not wins:
        raise UsageError(f"eval: {data.dataset} gives {len(stream)} tokens: too little text to score")
    return wins


# ---------------------------------------------------------------------------------------------- baseline
def cache_dir() -> Path:
    from builder.model.source import cache_root

    return cache_root() / "ppl"


def model_identity(model_dir: Path) -> dict[str, Any]:
    """Cheap identity of an HF model directory: its config and its weight files' names, sizes and mtimes."""
    d = Path(model_dir)
    cfg = (d / "config.json").read_bytes() if (d / "config.json").is_file() else b""
    weights = sorted(
        (p.name, p.stat().st_size, p.stat().st_mtime_ns)
        for p in d.iterdir()
        if p.suffix in (".safetensors", ".bin", ".pt", ".pth") and p.is_file()
    )
    return {"config_sha256": hashlib.sha256(cfg).hexdigest(), "weights": weights}


def baseline_key(model_dir: Path, wins: Sequence[Sequence[int]]) -> str:
    h = hashlib.sha256(json.dumps([list(map(int, w)) for w in wins]).encode()).hexdigest()
    blob = json.dumps({"v": CACHE_VERSION, "model": model_identity(model_dir), "windows": h}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def baseline_perplexity(model_dir: Path, wins: Sequence[Sequence[int]]) -> dict[str, Any]:
    """Perplexity of the unquantized model on ``wins``: from the cache, else computed (float32, CPU) and cached."""
    from builder.workspace import write_json_atomic

    path = cache_dir() / f"{baseline_key(model_dir, wins)}.json"
    try:
        cached = json.loads(path.read_text())
        log.info("baseline perplexity %.4f from the cache (%s)", cached["ppl"], path)
        return {**cached, "cached": True}
    except (OSError, ValueError, KeyError):
        pass
    record = _hf_perplexity(model_dir, wins)
    record["model_dir"] = str(model_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, record)
    log.info("baseline perplexity %.4f computed in %.1f s, cached in %s", record["ppl"], record["seconds"], path)
    return {**record, "cached": False}


def _hf_perplexity(model_dir: Path, wins: Sequence[Sequence[int]]) -> dict[str, Any]:
    import time

    import torch
    from transformers import AutoModelForCausalLM

    from runtime.evaluate import nll_of, summarize

    BASELINE_RUNS["count"] += 1
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    nll, predicted = 0.0, 0
    with torch.inference_mode():
        for w in wins:
            logits = model(torch.tensor([list(w)])).logits[0]
            nll += nll_of(logits, w)
            predicted += len(w) - 1
    del model
    return summarize(nll, predicted, time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------- the checks
def perplexity_check(
    runner, tokenizer, source_dir: Path | None, data: EvalData, base_dir: Path, max_increase: float | None = None
) -> dict[str, Any] | None:
    """Perplexity of the artifact (through ``runner``), the baseline's, and the relative increase; ``passed`` when
    ``max_increase`` is given. All ranks call it; rank 0 gets the record."""
    from runtime.evaluate import perplexity, relative_increase

    max_pos = getattr(getattr(runner, "cfg", None), "max_position_embeddings", None)
    wins = eval_windows(data, base_dir, tokenizer, max_pos)
    ours = perplexity(runner, wins)
    if ours is None:
        return None
    rec: dict[str, Any] = {
        "dataset": data.dataset,
        "tokens": sum(len(w) for w in wins),
        "window": max(len(w) for w in wins),
        "windows": len(wins),
        "ppl": ours["ppl"],
        "seconds": ours.get("seconds"),
        "backend": runner.backend,
    }
    if source_dir is not None:
        base = baseline_perplexity(Path(source_dir), wins)
        rec["baseline_ppl"] = base["ppl"]
        rec["baseline_cached"] = base["cached"]
        rec["increase"] = relative_increase(ours["ppl"], base["ppl"])
    if max_increase is not None:
        if "increase" not in rec:
            raise ValueError("verify.perplexity: no source model to compare with (the artifact's resolve/ is gone)")
        rec["max_increase"] = max_increase
        rec["passed"] = rec["increase"] <= max_increase
    return rec


def prompt_checks(runner, tokenizer, prompts: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Run each smoke prompt greedily through ``runner``; check `expect` (substring) and `regex` (re.search).

    ``chat``: null = use the tokenizer's chat template when it has one (an instruct model answers a bare prompt
    poorly), true = require it, false = the raw prompt. All ranks call it; rank 0 gets the record."""
    from runtime.generate import complete

    results = []
    for p in prompts:
        chat = p.get("chat")
        if chat is None:
            chat = bool(getattr(tokenizer, "chat_template", None))
        out = complete(runner, tokenizer, [p["prompt"]], chat=chat, max_new_tokens=int(p.get("max_tokens") or 32))
        if not runner.is_leader:
            continue
        text = out[0].text
        row: dict[str, Any] = {"prompt": p["prompt"], "chat": chat, "output": text, "passed": True, "problems": []}
        if p.get("expect") is not None:
            row["expect"] = p["expect"]
            if p["expect"] not in text:
                row["problems"].append(f"does not contain {p['expect']!r}")
        if p.get("regex") is not None:
            row["regex"] = p["regex"]
            if re.search(p["regex"], text) is None:
                row["problems"].append(f"does not match /{p['regex']}/")
        row["passed"] = not row["problems"]
        results.append(row)
    if not runner.is_leader:
        return None
    return {"backend": runner.backend, "passed": all(r["passed"] for r in results), "results": results}


def gate(
    artifact_dir: Path,
    source_dir: Path | None,
    spec: dict[str, Any],
    base_dir: Path,
    backend: str = "auto",
) -> dict[str, Any] | None:
    """The accuracy gate over an artifact: ``spec`` = {"perplexity": {...} | None, "prompts": [...]}, the JSON form of
    `verify.perplexity` / `verify.prompts`. Perplexity is scored on the TensorRT-LLM checkpoint with the reference
    runner (the only one that returns logits); prompts run through the runner that fits the artifact (``backend``).
    All ranks call it (under mpirun for split artifacts); rank 0 returns
    {"passed", "failed": [...], "perplexity": {...}, "prompts": {...}}."""
    from runtime.generate import load_tokenizer
    from runtime.select import checkpoint_dir, open_runner, resolve_backend, tokenizer_dir

    tokenizer = load_tokenizer(tokenizer_dir(artifact_dir))
    out: dict[str, Any] = {"failed": []}
    ppl_spec = spec.get("perplexity")
    prompts = spec.get("prompts") or []
    chosen = resolve_backend(artifact_dir, backend)
    scorer = None
    if ppl_spec:
        ckpt = checkpoint_dir(artifact_dir)
        if ckpt is None:
            raise ValueError(f"{artifact_dir}: no TensorRT-LLM checkpoint to score perplexity on")
        scorer = open_runner(ckpt, "reference")
        data = EvalData(**{k: v for k, v in ppl_spec.items() if k in EvalData.__dataclass_fields__})
        rec = perplexity_check(scorer, tokenizer, source_dir, data, base_dir, ppl_spec.get("max_increase"))
        if rec is not None:
            out["perplexity"] = rec
            if rec.get("passed") is False:
                out["failed"].append(
                    f"perplexity +{rec['increase']:.2%} over the source model ({rec['ppl']:.4g} vs "
                    f"{rec['baseline_ppl']:.4g}; max_increase {rec['max_increase']:.2%})"
                )
    if prompts:
        if scorer is not None and chosen == "reference":
            runner = scorer
        else:
            if scorer is not None:
                scorer.close()
                scorer = None
            runner = open_runner(artifact_dir, chosen)
        try:
            rec = prompt_checks(runner, tokenizer, prompts)
        finally:
            runner.close()
        if rec is not None:
            out["prompts"] = rec
            out["failed"] += [
                f"prompt {r['prompt']!r}: {'; '.join(r['problems'])}" for r in rec["results"] if not r["passed"]
            ]
    elif scorer is not None:
        scorer.close()
    from runtime.mpi import world_from_env

    if not world_from_env().is_leader:
        return None
    out["passed"] = not out["failed"]
    return out
