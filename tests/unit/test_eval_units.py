"""Eval windows, the builtin held-out order, bench workloads and the report's text (no torch, no models)."""

from __future__ import annotations

import random

import pytest

from runtime.bench import Workload, _stats
from runtime.evaluate import relative_increase, windows


def test_windows_cut_the_budget_and_drop_useless_tails():
    assert windows(list(range(10)), 7, 3) == [[0, 1, 2], [3, 4, 5]]  # the 1-token tail predicts nothing
    assert windows(list(range(10)), 8, 3) == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert windows(list(range(4)), 100, 8) == [[0, 1, 2, 3]]
    with pytest.raises(ValueError, match="at least 2"):
        windows([1, 2], 2, 1)


def test_relative_increase():
    assert relative_increase(11.0, 10.0) == pytest.approx(0.1)
    assert relative_increase(9.0, 10.0) == pytest.approx(-0.1)


def test_builtin_eval_reads_calibrations_order_from_the_end(monkeypatch):
    from builder.quant import data as calib
    from builder.verify.evaluate import EvalData, eval_documents

    docs = [f"doc{i}" for i in range(50)]
    monkeypatch.setattr(calib, "builtin_documents", lambda limit_chars=0: list(docs))
    got = eval_documents(EvalData(), None)
    order = list(range(50))
    random.Random(0).shuffle(order)  # calibration's order with the default seed
    assert got == [docs[i] for i in reversed(order)]
    calibration_front = {docs[i] for i in order[:25]}
    assert not calibration_front & set(got[:25])  # the halves never meet


def test_workload_is_seeded_and_avoids_special_ids():
    w = Workload(input_len=16, batch_size=3, seed=7)
    a, b = w.prompts(100, avoid=5), w.prompts(100, avoid=5)
    assert a == b and len(a) == 3 and all(len(p) == 16 for p in a)
    assert min(min(p) for p in a) >= 5 and max(max(p) for p in a) < 100
    assert Workload(seed=8, input_len=16).prompts(100, 5) != a[:1]


def test_stats_mean_and_percentiles():
    s = _stats([1.0, 2.0, 3.0, 4.0, 10.0])
    assert s == {"mean": 4.0, "p50": 3.0, "p90": 10.0}


def _row(name, fmt, size, inc, passed, tps=None):
    bench = []
    if tps is not None:
        bench = [{"backend": "reference", "workload": {"input_len": 8, "output_len": 4, "batch_size": 1},
                  "tokens_per_s": {"mean": tps}, "ttft_s": {"mean": 0.1}}]  # fmt: skip
    return {
        "name": name, "path": name, "status": "complete" if passed else "failed-verification", "format": fmt,
        "kv_cache": "none", "tp": 1, "pp": 1, "size_bytes": size,
        "gate": {"passed": passed, "failed": [] if passed else ["perplexity +50%"], "prompts": None},
        "perplexity": {"ppl": 10 * (1 + inc), "baseline_ppl": 10.0, "increase": inc, "max_increase": 0.1,
                       "passed": inc <= 0.1, "tokens": 100, "dataset": "builtin", "from": "verify"},
        "bench": bench,
    }  # fmt: skip


def test_report_text_picks_smallest_most_accurate_and_fastest():
    from builder.report import recommendation, render_html, render_markdown

    rows = [
        _row("bf16", "bf16", 270 << 20, 0.0, True, tps=20),
        _row("int8", "int8_sq", 140 << 20, 0.04, True, tps=30),
        _row("int4", "int4_awq", 80 << 20, 0.5, False),
    ]
    rec = recommendation(rows)
    assert rec[0].startswith("Smallest that passed its checks: **int8**")
    assert "Most accurate: **bf16**" in rec[1] and "Fastest measured: **int8**" in rec[2]
    assert rec[3].startswith("Do not use: int4")
    md = render_markdown(rows, ["size_vs_perplexity.png"])
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[0] for line in table[1:]] == ["| int4", "| int8", "| bf16"]  # sorted by size
    assert "| +4.00% | passed | 30 (reference) |" in md and "![size_vs_perplexity](size_vs_perplexity.png)" in md
    html = render_html(rows, ["size_vs_perplexity.png"])
    assert "<b>int8</b>" in html and "<td>FAILED</td>" in html
