"""`trtq report`: one page that compares artifacts (formats x layouts) so a person can pick one at a glance.

Reads only what the artifacts hold: manifest.json (format, layout, files and sizes, the verify stage's gate results),
eval/*.json (`trtq eval --save`) and bench/*.json (`trtq bench --save`). Writes report.md, report.html, report.json
and two plots (matplotlib, Agg backend):
  size_vs_perplexity.png  checkpoint size vs perplexity increase over the unquantized model, one point per artifact
                          (green = passed its gate, red = failed, grey = no gate); the dashed line is the gate limit
  speed.png               decode throughput (tokens/s) and time to first token per artifact, one colour per backend
  serving.png             an endpoint under load (`trtq bench --url ... --save`): output tokens/s and TTFT p50/p99
                          against the number of concurrent streams, one line per artifact

With one artifact the report goes into ARTIFACT/report/ and is added to the manifest's files (publishing uploads
what the manifest lists; the model card shows report.md and its plots). A rebuild keeps those entries while the
files are unchanged (builder/manifest.py); run `trtq report` again to refresh the numbers.
"""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("trtq.report")

PLOTS = ("size_vs_perplexity.png", "speed.png", "serving.png")


# ---------------------------------------------------------------------------------------------- collecting
def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def collect(artifact: Path) -> dict[str, Any]:
    """Everything the report shows about one artifact."""
    from runtime.manifest import read_manifest

    m = read_manifest(artifact)
    recipe_q = (m.recipe or {}).get("quantization") or {}
    size_files = [f for f in m.files if f.path.startswith("checkpoint/") and f.path.endswith(".safetensors")]
    if not size_files:
        size_files = [
            f for f in m.files if f.path.startswith(("hf/", "engine/")) and f.path.endswith((".safetensors", ".engine"))
        ]
    row: dict[str, Any] = {
        "name": m.name,
        "path": str(artifact),
        "status": m.status,
        "format": m.quantization.get("format") or recipe_q.get("format"),
        "kv_cache": recipe_q.get("kv_cache", "none"),
        "tp": m.parallel.get("tp", 1),
        "pp": m.parallel.get("pp", 1),
        "size_bytes": sum(f.size for f in size_files),
        "gate": None,
        "perplexity": None,
        "bench": [],
        "serving": [],
    }
    v = m.verify or {}
    if v:
        row["gate"] = {
            "passed": v.get("passed"),
            "failed": v.get("failed") or [],
            "prompts": v.get("prompts"),
            "source": v.get("source"),
            "fake_quant": v.get("fake_quant"),
        }
    # The newest perplexity measurement wins: the build's gate (manifest) or a later `trtq eval --save`.
    found = []
    if v.get("perplexity"):
        found.append((_mtime(artifact / "manifest.json"), {**v["perplexity"], "from": "verify"}))
    for p in sorted((artifact / "eval").glob("*.json")):
        rec = (_read_json(p) or {}).get("perplexity")
        if rec and "increase" in rec:
            found.append((_mtime(p), {**rec, "from": f"eval/{p.name}"}))
    if found:
        row["perplexity"] = max(found, key=lambda t: t[0])[1]
    for p in sorted((artifact / "bench").glob("*.json")):
        rec = _read_json(p)
        if rec and "tokens_per_s" in rec:
            row["bench"].append(rec)
        elif rec and rec.get("kind") == "endpoint" and rec.get("levels"):
            row["serving"].append(rec)
    return row


# ---------------------------------------------------------------------------------------------- plots
def _label(r: dict[str, Any]) -> str:
    kv = f"+kv {r['kv_cache']}" if r["kv_cache"] not in (None, "none") else ""
    layout = f" tp{r['tp']}pp{r['pp']}" if r["tp"] * r["pp"] > 1 else ""
    return f"{r['format']}{kv}{layout}"


def _labels(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Plot labels: format and layout, or the artifact's name where two artifacts would share one."""
    labels = [_label(r) for r in rows]
    return {r["name"]: (lab if labels.count(lab) == 1 else r["name"]) for r, lab in zip(rows, labels, strict=True)}


def _mib(n: int) -> float:
    return n / 2**20


def plot_size_vs_perplexity(rows: list[dict[str, Any]], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [r for r in rows if r["perplexity"] and "increase" in r["perplexity"]]
    if not pts:
        return False
    names = _labels(rows)
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    for r in pts:
        x, y = _mib(r["size_bytes"]), 100 * r["perplexity"]["increase"]
        passed = r["perplexity"].get("passed") if "passed" in r["perplexity"] else (r["gate"] or {}).get("passed")
        color = {True: "#2e7d32", False: "#c62828"}.get(passed, "#757575")
        ax.scatter([x], [y], s=90, color=color, zorder=3, edgecolor="black", linewidth=0.6)
        ax.annotate(names[r["name"]], (x, y), textcoords="offset points", xytext=(7, 5), fontsize=9)
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], marker="o", linestyle="", color=c, markeredgecolor="black", label=t)
        for c, t in (("#2e7d32", "within its limit"), ("#c62828", "over its limit"), ("#757575", "no limit set"))
    ]
    limits = {r["perplexity"].get("max_increase") for r in pts if r["perplexity"].get("max_increase") is not None}
    if len(limits) == 1:
        lim = 100 * limits.pop()
        handles.append(ax.axhline(lim, color="#c62828", linestyle="--", linewidth=1, label=f"gate limit +{lim:.1f}%"))
    ax.legend(handles=handles, loc="upper right", fontsize=8)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xlabel("checkpoint size (MiB)")
    ax.set_ylabel("perplexity increase vs unquantized (%)")
    ax.set_title("Size vs accuracy: lower-left is better")
    ax.grid(True, alpha=0.3)
    xs = [_mib(r["size_bytes"]) for r in pts]
    ax.set_xlim(0, max(xs) * 1.35 if max(xs) > 0 else 1)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def plot_speed(rows: list[dict[str, Any]], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = []
    names = _labels(rows)
    for r in rows:
        for b in r["bench"]:
            w = b["workload"]
            bars.append(
                (
                    f"{names[r['name']]}  [{b['backend']}]\nin {w['input_len']} out {w['output_len']} batch {w['batch_size']}",
                    b["backend"],
                    b["tokens_per_s"]["mean"],
                    1000 * b["ttft_s"]["mean"],
                )
            )
    if not bars:
        return False
    palette = {"reference": "#8d6e63", "engine": "#1565c0", "pytorch": "#ef6c00"}
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 0.7 * len(bars) + 1.8), dpi=110, sharey=True)
    ys = list(range(len(bars)))
    colors = [palette.get(b[1], "#616161") for b in bars]
    a1.barh(ys, [b[2] for b in bars], color=colors)
    a2.barh(ys, [b[3] for b in bars], color=colors)
    a1.set_yticks(ys, [b[0] for b in bars], fontsize=8)
    a1.invert_yaxis()
    a1.set_xlabel("output tokens/s (higher is better)")
    a2.set_xlabel("time to first token, ms (lower is better)")
    for ax, vals in ((a1, [b[2] for b in bars]), (a2, [b[3] for b in bars])):
        for y, v in zip(ys, vals, strict=True):
            ax.text(v, y, f" {v:,.0f}" if v >= 1000 else f" {v:.3g}", va="center", fontsize=8)
        ax.set_xlim(0, max(vals) * 1.25 or 1)
        ax.grid(True, axis="x", alpha=0.3)
    from matplotlib.patches import Patch

    used = sorted({b[1] for b in bars})
    a2.legend(handles=[Patch(color=palette.get(u, "#616161"), label=u) for u in used], fontsize=8, loc="lower right")
    title = "Speed per backend"
    if used == ["reference"]:
        title += " (reference = trtq's CPU runner: a correctness tool, not deployment speed)"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def plot_serving(rows: list[dict[str, Any]], path: Path) -> bool:
    """Output tokens/s and time to first token (p50 solid, p99 dashed) against concurrent streams."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = _labels(rows)
    series = []
    for r in rows:
        for rec in r.get("serving", []):
            w = rec["workload"]
            levels = [lv for lv in rec["levels"] if lv.get("ttft_s")]
            if levels:
                series.append((f"{names[r['name']]} (out {w['output_len']})", levels))
    if not series:
        return False
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=110)
    for i, (label, levels) in enumerate(series):
        color = f"C{i % 10}"
        xs = [lv["concurrency"] for lv in levels]
        a1.plot(xs, [lv["output_tokens_per_s"] for lv in levels], marker="o", color=color, label=label)
        a2.plot(xs, [1000 * lv["ttft_s"]["p50"] for lv in levels], marker="o", color=color, label=f"{label} p50")
        a2.plot(
            xs,
            [1000 * lv["ttft_s"]["p99"] for lv in levels],
            marker="x",
            linestyle="--",
            color=color,
            label=f"{label} p99",
        )
        for lv in levels:
            if lv.get("errors"):
                a1.annotate(
                    f"{lv['errors']} err", (lv["concurrency"], lv["output_tokens_per_s"]), color="#c62828", fontsize=8
                )
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ticks = sorted({lv["concurrency"] for _, levels in series for lv in levels})
    for ax in (a1, a2):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("concurrent streams")
        ax.grid(True, alpha=0.3)
    a1.set_ylabel("output tokens/s (all streams)")
    a2.set_ylabel("time to first token, ms")
    a1.set_ylim(bottom=0)
    a2.set_ylim(bottom=0)
    a1.legend(fontsize=8)
    a2.legend(fontsize=7)
    fig.suptitle("Serving under load (trtq bench --url)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------------------------- text
def _fmt_pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:+.2f}%"


def _best_bench(r: dict[str, Any]) -> dict[str, Any] | None:
    return max(r["bench"], key=lambda b: b["tokens_per_s"]["mean"], default=None)


def _gate_cell(r: dict[str, Any]) -> str:
    g = r["gate"]
    if g is None:
        return "no gate"
    return "passed" if g["passed"] else "FAILED"


def table_rows(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    head = ["artifact", "format", "layout", "size", "perplexity", "vs unquantized", "gate", "tokens/s", "TTFT"]
    body = []
    for r in sorted(rows, key=lambda r: r["size_bytes"]):
        p = r["perplexity"] or {}
        b = _best_bench(r)
        body.append(
            [
                r["name"],
                _label(r).split(" tp")[0],
                f"tp{r['tp']} pp{r['pp']}",
                f"{_mib(r['size_bytes']):.1f} MiB",
                f"{p['ppl']:.4g}" if p.get("ppl") is not None else "–",
                _fmt_pct(p.get("increase")),
                _gate_cell(r),
                f"{b['tokens_per_s']['mean']:.3g} ({b['backend']})" if b else "–",
                f"{1000 * b['ttft_s']['mean']:.3g} ms" if b else "–",
            ]
        )
    return head, body


def recommendation(rows: list[dict[str, Any]]) -> list[str]:
    ok = [r for r in rows if (r["gate"] or {}).get("passed", True) and r["status"] == "complete"]
    out = []
    if ok:
        small = min(ok, key=lambda r: r["size_bytes"])
        out.append(
            f"Smallest that passed its checks: **{small['name']}** ({_label(small)}, {_mib(small['size_bytes']):.1f} MiB)."
        )
        with_ppl = [r for r in ok if r["perplexity"] and "increase" in r["perplexity"]]
        if with_ppl:
            best = min(with_ppl, key=lambda r: r["perplexity"]["increase"])
            out.append(f"Most accurate: **{best['name']}** ({_fmt_pct(best['perplexity']['increase'])} perplexity).")
        fast = [r for r in ok if r["bench"]]
        if fast:
            f = max(fast, key=lambda r: _best_bench(r)["tokens_per_s"]["mean"])
            b = _best_bench(f)
            out.append(
                f"Fastest measured: **{f['name']}** ({b['tokens_per_s']['mean']:.3g} tokens/s on {b['backend']})."
            )
    failed = [r["name"] for r in rows if (r["gate"] or {}).get("passed") is False or r["status"] != "complete"]
    if failed:
        out.append(f"Do not use: {', '.join(failed)} (failed verification or incomplete).")
    return out


def gate_lines(rows: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in rows:
        g = r["gate"]
        if g is None:
            continue
        parts = []
        p = r["perplexity"] if (r["perplexity"] or {}).get("from") == "verify" else None
        if p:
            parts.append(
                f"perplexity {p['ppl']:.4g} vs {p['baseline_ppl']:.4g} ({_fmt_pct(p['increase'])}, "
                f"limit {_fmt_pct(p.get('max_increase'))}) on {p['tokens']} tokens of {p['dataset']}"
            )
        if g.get("prompts"):
            parts.append(f"prompts {g['prompts']['passed']}/{g['prompts']['total']}")
        for k in ("source", "fake_quant"):
            if g.get(k):
                parts.append(f"{k}: top-1 {g[k].get('top1')}, ppl ratio {g[k].get('ppl_ratio')}")
        verdict = "passed" if g["passed"] else "FAILED: " + "; ".join(g["failed"])
        out.append(f"- **{r['name']}**: {verdict}" + (f" — {'; '.join(parts)}" if parts else ""))
    return out


def render_markdown(rows: list[dict[str, Any]], plots: list[str]) -> str:
    head, body = table_rows(rows)
    lines = ["# Quantization report", ""]
    lines += recommendation(rows) + [""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
    lines += ["", "Size: the TensorRT-LLM checkpoint's weight files. Perplexity: teacher-forced on held-out text, "
              "vs the unquantized model on the same tokens. Speed: `trtq bench` (mean over iterations).", ""]  # fmt: skip
    for p in plots:
        lines += [f"![{Path(p).stem}]({p})", ""]
    gl = gate_lines(rows)
    if gl:
        lines += ["## Accuracy gate", ""] + gl + [""]
    sl = serving_lines(rows)
    if sl:
        lines += ["## Serving under load", ""] + sl + [""]
    return "\n".join(lines)


def serving_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One table per endpoint measurement: concurrency, errors, tokens/s, TTFT and TPOT percentiles."""
    out = []
    for r in rows:
        for rec in r.get("serving", []):
            w = rec["workload"]
            out += [
                f"**{r['name']}** at {rec['url']}: {w['input_words']} prompt words, {w['output_len']} tokens "
                "per request",
                "",
                "| streams | requests | errors | tokens/s | TTFT p50 / p99 | TPOT p50 / p99 |",
                "|---|---|---|---|---|---|",
            ]
            for lv in rec["levels"]:
                t, p = lv.get("ttft_s") or {}, lv.get("tpot_s") or {}
                ms = lambda d, k: f"{1000 * d[k]:.0f} ms" if d else "–"  # noqa: E731
                out.append(
                    f"| {lv['concurrency']} | {lv['requests']} | {lv['errors']} | "
                    f"{lv['output_tokens_per_s']:.1f} | {ms(t, 'p50')} / {ms(t, 'p99')} | "
                    f"{ms(p, 'p50')} / {ms(p, 'p99')} |"
                )
            out.append("")
    return out


def render_html(rows: list[dict[str, Any]], plots: list[str]) -> str:
    import re

    head, body = table_rows(rows)
    esc = html.escape

    def inline(s: str) -> str:
        return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", esc(s))

    out = [
        "<!doctype html><html><head><meta charset='utf-8'><title>trtq report</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#f0f0f0}img{max-width:100%}</style>",
        "</head><body><h1>Quantization report</h1>",
    ]
    out += [f"<p>{inline(s)}</p>" for s in recommendation(rows)]
    out.append("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>")
    out += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in body]
    out.append("</table>")
    out += [f"<p><img src='{esc(p)}' alt='{esc(Path(p).stem)}'></p>" for p in plots]
    gl = gate_lines(rows)
    if gl:
        out.append("<h2>Accuracy gate</h2><ul>")
        out += [f"<li>{inline(s[2:])}</li>" for s in gl]
        out.append("</ul>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------- writing
def write_report(artifacts: list[Path], out: Path | None = None) -> list[Path]:
    """Write the report for ``artifacts`` into ``out`` (default: ARTIFACT/report/ for one artifact, ./report
    otherwise); returns the files written. With one artifact and the default place, the manifest lists them."""
    from builder._deps import require

    require("matplotlib", "Plotting the report (pip install 'trtq[report]')")
    rows = [collect(Path(a)) for a in artifacts]
    single = len(artifacts) == 1 and out is None
    out = Path(artifacts[0]) / "report" if single else Path(out or "report")
    out.mkdir(parents=True, exist_ok=True)
    plots = []
    if plot_size_vs_perplexity(rows, out / PLOTS[0]):
        plots.append(PLOTS[0])
    if plot_speed(rows, out / PLOTS[1]):
        plots.append(PLOTS[1])
    if plot_serving(rows, out / PLOTS[2]):
        plots.append(PLOTS[2])
    for stale in set(PLOTS) - set(plots):
        (out / stale).unlink(missing_ok=True)
    (out / "report.md").write_text(render_markdown(rows, plots) + "\n")
    (out / "report.html").write_text(render_html(rows, plots))
    (out / "report.json").write_text(json.dumps({"artifacts": rows}, indent=2, default=str) + "\n")
    written = [out / n for n in ("report.md", "report.html", "report.json", *plots)]
    if single:
        _add_to_manifest(Path(artifacts[0]))
    return written


def _add_to_manifest(artifact: Path) -> None:
    """List report/ in the manifest's files (replacing an older report's entries), re-hashed."""
    from builder.fingerprint import file_table
    from builder.workspace import write_json_atomic
    from runtime.manifest import FILENAME, Manifest

    path = artifact / FILENAME
    data = json.loads(path.read_text())
    files = [f for f in data.get("files", []) if not f["path"].startswith("report/")]
    files += [{**row, "path": f"report/{row['path']}"} for row in file_table(artifact / "report")]
    data["files"] = sorted(files, key=lambda f: f["path"])
    write_json_atomic(path, Manifest.model_validate(data).model_dump(mode="json"))
