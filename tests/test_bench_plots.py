"""benchmarks/plots.py: the charts read the figures of docs/benchmarks.md, draw one bar per model and
series at the right length, and the SVGs committed in docs/img are current."""
from __future__ import annotations

import os
import sys
import xml.etree.ElementTree as ET

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import plots  # noqa: E402

DOC = open(os.path.join(ROOT, "docs", "benchmarks.md"), encoding="utf-8").read()


def bars(svg: str) -> list[dict]:
    return [r.attrib for r in ET.fromstring(svg).iter("{http://www.w3.org/2000/svg}rect") if r.get("class") == "bar"]


def test_tables_are_read():
    rows = plots.table_with(DOC, "model", "eager b1 (ms)")
    assert plots.model_name(rows[0]["model"]) == "mlp" and len(rows) == 33  # the zoo with torchvision's five
    assert plots.number("**0.964**") == 0.964 and plots.number("-") is None and plots.number("n/a") is None


def test_one_bar_per_model_and_series_with_lengths_proportional():
    made = plots.charts(DOC)
    ex = bars(made["bench_executor.svg"])
    rows = plots.table_with(DOC, "model", "eager b1 (ms)")
    assert len(ex) == 2 * len(rows)
    mlp = {b["data-series"]: b for b in ex if b["data-label"] == "mlp"}
    assert float(mlp["batch 1"]["data-value"]) == plots.number(rows[0]["ratio b1"])
    # linear scale from 0: width / value is the same for every bar
    scale = {round(float(b["width"]) / float(b["data-value"]), 1) for b in ex}
    assert max(scale) - min(scale) <= 0.2
    onnx = bars(made["bench_onnx_export.svg"])
    missing = sum(plots.number(r[c]) is None for r in plots.table_with(DOC, "model", "bridge (s)")
                  for c in ("x vs dynamo", "x vs legacy"))
    assert len(onnx) == 2 * 28 - missing
    onnx_rows = plots.table_with(DOC, "model", "bridge (s)")
    ort = bars(made["bench_onnx_ort.svg"])
    want = {plots.model_name(r["model"]): plots.number(r["ORT ratio"]) for r in onnx_rows
            if plots.number(r["ORT ratio"]) is not None}
    assert {b["data-label"]: float(b["data-value"]) for b in ort} == pytest.approx(want, rel=1e-5)
    assert len(ort) == len(want) > 0


def test_scale_charts_show_each_model_and_exporter():
    rows = plots.table_with(DOC, "model", "weights (MiB)")
    made = plots.scale_charts(DOC)
    times = bars(made["bench_export_scale.svg"])
    want = {(r["model"], series): plots.number(r[col]) for r in rows
            for series, col in (("bridge", "bridge (s)"), ("torch.onnx legacy", "legacy (s)"),
                                ("torch.onnx dynamo", "dynamo (s)"), ("floor", "floor (s)"))}
    assert {(b["data-label"], b["data-series"]): float(b["data-value"]) for b in times} == \
        pytest.approx({k: v for k, v in want.items() if v is not None}, rel=1e-5)
    memory = {(b["data-label"], b["data-series"]): float(b["data-value"])
              for b in bars(made["bench_export_memory.svg"])}
    for r in rows:
        assert memory[(r["model"], "half the weights")] == pytest.approx(plots.number(r["weights (MiB)"]) / 2)
        assert memory[(r["model"], "bridge")] == pytest.approx(plots.number(r["bridge (+MiB)"]))


@pytest.mark.parametrize("name", ["bench_executor.svg", "bench_onnx_export.svg", "bench_onnx_ort.svg",
                                  "bench_export_scale.svg", "bench_export_memory.svg"])
def test_committed_charts_are_current(name):
    with open(os.path.join(ROOT, "docs", "img", name), encoding="utf-8") as f:
        assert f.read() == {**plots.charts(DOC), **plots.scale_charts(DOC)}[name], "rerun: python benchmarks/plots.py"


def test_scale_table_ratios_follow_from_its_times():
    """The export-at-scale table's ratios are its own times divided (benchmarks/export_scale.py writes both)."""
    for r in plots.table_with(DOC, "model", "weights (MiB)"):
        b = plots.number(r["bridge (s)"])
        for col, num, den in (("x vs legacy", r["legacy (s)"], b), ("x vs dynamo", r["dynamo (s)"], b),
                              ("bridge / floor", b, r["floor (s)"])):
            num, den = plots.number(num) if isinstance(num, str) else num, \
                plots.number(den) if isinstance(den, str) else den
            if num is None or den is None:
                assert plots.number(r[col]) is None
            else:
                assert plots.number(r[col]) == pytest.approx(num / den, abs=0.06 * num / den + 0.01), (r["model"], col)
