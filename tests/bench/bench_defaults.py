"""Benchmark: trtq's default quantization recipe against ModelOpt's default config, same calibration budget.

    python tests/bench/bench_defaults.py [--formats int8_sq,int4_awq,fp8,w4a8_awq] [--samples 32] [--seq-len 256]

For each format, on SmolLM2-135M-Instruct (bf16 baseline, fake-quant in float32 on the CPU):
- "modelopt": ModelOpt's own *_CFG constant as shipped (SmoothQuant alpha 1.0, AWQ awq_lite, ...), with only the
  AWQ group size set to one that fits the model (576 is not divisible by 128);
- "trtq": what `trtq build` does by default: builder.quant.config.build_config with the recipe defaults (SmoothQuant
  alpha 0.8), then trtq's steps after ModelOpt's calibration (builder.quant.calibrate.calibrate: one smoothing scale
  per fused group; for int4_awq one AWQ scale per fused group and activation-weighted INT4 clipping). Where trtq's
  default is ModelOpt's own (fp8, w4a8_awq) the row is measured once and printed for both.
Both calibrate on the same token windows (trtq's builtin data); perplexity on held-out prose (Debian licenses).
Prints: format, method, ppl, delta vs bf16, calibration seconds, and the ratios the issue targets.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).parent))

from bench_quantize import EVAL_PROSE, LICENSES, perplexity  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--formats", default="int8_sq,int4_awq,fp8,w4a8_awq")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--eval-tokens", type=int, default=4096)
    args = ap.parse_args()

    import modelopt.torch.quantization as mtq
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from builder.model.source import gguf_path, resolve
    from builder.quant.calibrate import calibrate, trtq_steps
    from builder.quant.config import FORMATS, build_config
    from builder.quant.data import builtin_documents, token_windows
    from builder.recipe.load import load_recipe

    recipe, recipe_dir = load_recipe(REPO / "recipes/smollm2-135m/bf16.yaml")
    tmp = Path("/tmp/trtq-bench-defaults")
    tmp.mkdir(parents=True, exist_ok=True)
    model_dir = Path(resolve(recipe.model, recipe_dir, tmp)["model_dir"])  # the shared GGUF conversion cache
    assert gguf_path(recipe.model, recipe_dir).is_file()
    tok = AutoTokenizer.from_pretrained(model_dir)
    data = token_windows(
        builtin_documents(max(200_000, args.samples * args.seq_len * 12)), tok, args.samples, args.seq_len, 0
    )
    eval_text = "\n\n".join((LICENSES / n).read_text() for n in EVAL_PROSE)

    def fresh():
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    def loop(m):
        for i in range(data.shape[0]):
            m(data[i : i + 1])

    base = perplexity(fresh(), tok, eval_text, args.eval_tokens)
    rows = []
    for fmt in args.formats.split(","):
        spec = FORMATS[fmt]
        shipped = copy.deepcopy(getattr(mtq, spec.modelopt_cfg))
        if spec.awq:  # the only change: a group size that divides 576
            for e in shipped["quant_cfg"] if isinstance(shipped["quant_cfg"], list) else []:
                if e.get("quantizer_name") == "*weight_quantizer":
                    for c in e["cfg"] if isinstance(e["cfg"], list) else [e["cfg"]]:
                        if "block_sizes" in c:
                            c["block_sizes"][-1] = 64
        ours = build_config(mtq, fmt, "none", ("lm_head",), block_size=64 if spec.awq else None)
        steps = trtq_steps(fmt, "auto", ours)
        same = not steps and ours == shipped
        for method, cfg, extra in (("modelopt", shipped, ()), ("trtq", ours, steps)):
            if same and method == "trtq":
                rows.append((fmt, "trtq (= modelopt)", *rows[-1][2:]))
                continue
            model = fresh()
            t0 = time.perf_counter()
            calibrate(model, cfg, extra, loop, data[:1, :16], lambda m: [m(data[i : i + 1]) for i in range(8)])
            seconds = time.perf_counter() - t0
            ppl = perplexity(model, tok, eval_text, args.eval_tokens)
            rows.append((fmt, method, ppl, (ppl - base) / base, seconds))
            print(f"{fmt:<10}{method:<10}{ppl:>8.2f}{(ppl - base) / base:>+9.1%}{seconds:>8.1f}", flush=True)
            del model

    print(
        f"\n## trtq defaults vs ModelOpt defaults on SmolLM2-135M ({args.samples} x {args.seq_len} calibration tokens)"
    )
    print(f"bf16 baseline perplexity {base:.2f} ({args.eval_tokens} tokens of {', '.join(EVAL_PROSE)})")
    print(f"{'format':<10}{'method':<19}{'ppl':>8}{'delta':>9}{'calib s':>9}")
    for fmt, method, ppl, delta, seconds in rows:
        print(f"{fmt:<10}{method:<19}{ppl:>8.2f}{delta:>+9.1%}{seconds:>9.1f}")
    print(f"\n{'format':<10}{'delta reduction':>16}{'time ratio':>12}")
    for fmt in args.formats.split(","):
        (_, _, _, d_mo, s_mo), (_, _, _, d_us, s_us) = [r for r in rows if r[0] == fmt]
        print(f"{fmt:<10}{(d_mo - d_us) / d_mo if d_mo > 0 else 0:>16.0%}{s_us / s_mo:>12.2f}")


if __name__ == "__main__":
    main()
