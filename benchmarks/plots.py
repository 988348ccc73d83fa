"""SVG charts of the benchmark figures recorded in docs/benchmarks.md, for the docs site.

Reads the per-model tables of docs/benchmarks.md (the CPU executor table and the ONNX export table) and
writes, into docs/img/:

- ``bench_executor.svg``: generated-module / eager time ratio per model, batch 1 and batch 32;
- ``bench_onnx_export.svg``: export speedup of bridge.to_onnx over torch.onnx.export (dynamo=True and
  dynamo=False) per model, on a log scale;
- ``bench_onnx_ort.svg``: onnxruntime latency of bridge's file / the best of the other two, per model;
- ``bench_export_scale.svg``, ``bench_export_memory.svg``: export time and extra peak memory of full-size models
  (each export in a fresh process) for bridge, both torch.onnx exporters and the floor / half the weights.

The charts are plain SVG written here (no plotting library). Run after updating the tables:

    python benchmarks/plots.py [--doc docs/benchmarks.md] [--out docs/img]
"""
from __future__ import annotations

import argparse
import html
import math
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLORS = ("#4c78a8", "#f58518", "#54a24b", "#9d9d9d")


def tables(markdown: str) -> list[list[list[str]]]:
    """Every pipe table in ``markdown``, as rows of cells (the header first, the ``---`` row dropped)."""
    out, cur = [], []
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                cur.append(cells)
        elif cur:
            out.append(cur)
            cur = []
    return out


def table_with(markdown: str, *header: str) -> list[dict[str, str]]:
    """The first table whose header starts with ``header``, as dicts keyed by column name."""
    for t in tables(markdown):
        if tuple(t[0][:len(header)]) == header:
            return [dict(zip(t[0], row)) for row in t[1:]]
    raise SystemExit(f"no table with columns {header} in the benchmarks doc")


def number(cell: str) -> float | None:
    """``'1.023'`` -> 1.023; ``'-'``, ``'n/a'`` -> None."""
    try:
        return float(cell.replace("*", "").replace(",", ""))
    except ValueError:
        return None


def model_name(cell: str) -> str:
    return cell.split("`")[1] if "`" in cell else cell


def bar_chart(title: str, labels: list[str], series: dict[str, list[float | None]], *, refs=(), log=False,
              unit: str = "") -> str:
    """A horizontal grouped bar chart: one row per label, one bar per series; ``refs``: (value, text) lines."""
    left, right, top, row_gap, bar_h = 150, 70, 48, 6, 9
    width = 760
    row_h = bar_h * len(series) + row_gap
    height = top + row_h * len(labels) + 40
    values = [v for s in series.values() for v in s if v is not None] + [r for r, _ in refs]
    lo = min(values) if log else 0.0
    hi = max(values)
    if log:
        lo, hi = 10 ** math.floor(math.log10(lo)), 10 ** math.ceil(math.log10(hi))
    else:
        hi *= 1.08
    span = width - left - right

    def x(v: float) -> float:
        return left + span * ((math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) if log else
                              (v - lo) / (hi - lo))

    e = html.escape
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
           f'<text x="{left}" y="18" font-size="13" font-weight="bold">{e(title)}</text>']
    for i, name in enumerate(series):
        lx = left + i * (170 if len(series) <= 3 else 145)
        out.append(f'<rect x="{lx}" y="26" width="10" height="10" fill="{COLORS[i % len(COLORS)]}"/>'
                   f'<text x="{lx + 14}" y="35">{e(name)}</text>')
    ticks = ([10 ** k for k in range(round(math.log10(lo)), round(math.log10(hi)) + 1)] if log else
             [hi / 1.08 * k / 4 for k in range(5)])
    bottom = top + row_h * len(labels)
    for t in ticks:
        out.append(f'<line x1="{x(t):.1f}" y1="{top - 4}" x2="{x(t):.1f}" y2="{bottom}" stroke="#e4e4e4"/>'
                   f'<text x="{x(t):.1f}" y="{bottom + 14}" text-anchor="middle" fill="#555">{t:g}{unit}</text>')
    for r, text in refs:
        out.append(f'<line x1="{x(r):.1f}" y1="{top - 4}" x2="{x(r):.1f}" y2="{bottom}" stroke="#d62728" '
                   f'stroke-dasharray="4 3"/><text x="{x(r):.1f}" y="{bottom + 28}" text-anchor="middle" '
                   f'fill="#d62728">{e(text)}</text>')
    for row, label in enumerate(labels):
        y0 = top + row * row_h
        out.append(f'<text x="{left - 6}" y="{y0 + row_h / 2 + 1:.1f}" text-anchor="end" '
                   f'dominant-baseline="middle">{e(label)}</text>')
        for i, (name, vals) in enumerate(series.items()):
            v = vals[row]
            y = y0 + i * bar_h
            if v is None:
                out.append(f'<text x="{left + 4}" y="{y + bar_h - 1}" fill="#888" font-size="9">n/a</text>')
                continue
            x0 = x(lo) if log else x(0)
            out.append(f'<rect class="bar" data-series="{e(name)}" data-label="{e(label)}" data-value="{v:g}" '
                       f'x="{x0:.1f}" y="{y}" width="{max(x(v) - x0, 0.5):.1f}" height="{bar_h - 1}" '
                       f'fill="{COLORS[i % len(COLORS)]}"/>'
                       f'<text x="{x(v) + 3:.1f}" y="{y + bar_h - 1}" font-size="9" fill="#333">{v:g}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def charts(markdown: str) -> dict[str, str]:
    """``{file name: svg}`` for the tables of the benchmarks doc."""
    ex = table_with(markdown, "model", "eager b1 (ms)")
    onnx = table_with(markdown, "model", "bridge (s)")
    ex_labels = [model_name(r["model"]) for r in ex]
    on_labels = [model_name(r["model"]) for r in onnx]
    return {
        "bench_executor.svg": bar_chart(
            "Executor: generated module / eager time (lower is faster; CPU, 1 thread)", ex_labels,
            {"batch 1": [number(r["ratio b1"]) for r in ex], "batch 32": [number(r["ratio b32"]) for r in ex]},
            refs=[(1.0, "eager"), (1.02, "")]),
        "bench_onnx_export.svg": bar_chart(
            "ONNX export: bridge.to_onnx speedup over torch.onnx.export (log scale)", on_labels,
            {"x vs dynamo=True": [number(r["x vs dynamo"]) for r in onnx],
             "x vs dynamo=False": [number(r["x vs legacy"]) for r in onnx]},
            refs=[(1.0, "same"), (10.0, "target 10x"), (3.0, "3x")], log=True, unit="x"),
        "bench_onnx_ort.svg": bar_chart(
            "onnxruntime latency: bridge's file / the better of torch.onnx's (lower is faster)", on_labels,
            {"latency ratio": [number(r["ORT ratio"]) for r in onnx]}, refs=[(1.0, "parity")]),
    }


def scale_charts(markdown: str) -> dict[str, str]:
    """The charts of the "Export at real-model scale" table."""
    rows = table_with(markdown, "model", "weights (MiB)")
    labels = [r["model"] for r in rows]
    col = {"bridge": "bridge", "torch.onnx legacy": "legacy", "torch.onnx dynamo": "dynamo"}
    return {
        "bench_export_scale.svg": bar_chart(
            "Export of full-size models, each in a fresh process: seconds (log scale; floor: a forward + the "
            "weight bytes written)", labels,
            {**{k: [number(r[f"{c} (s)"]) for r in rows] for k, c in col.items()},
             "floor": [number(r["floor (s)"]) for r in rows]}, log=True, unit=" s"),
        "bench_export_memory.svg": bar_chart(
            "Export: peak memory above the model's own, MiB (grey: half the weights, bridge's bound)", labels,
            {**{k: [number(r[f"{c} (+MiB)"]) for r in rows] for k, c in col.items()},
             "half the weights": [number(r["weights (MiB)"]) / 2 for r in rows]}),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--doc", default=os.path.join(ROOT, "docs", "benchmarks.md"))
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "img"))
    a = p.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    with open(a.doc, encoding="utf-8") as f:
        doc = f.read()
    made = {**charts(doc), **scale_charts(doc)}
    for name, svg in made.items():
        with open(os.path.join(a.out, name), "w", encoding="utf-8") as f:
            f.write(svg)
        print(f"wrote {os.path.join(a.out, name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
