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
    assert plots.model_name(rows[0]["model"]) == "mlp" and len(rows) == 28
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


@pytest.mark.parametrize("name", ["bench_executor.svg", "bench_onnx_export.svg", "bench_onnx_ort.svg"])
def test_committed_charts_are_current(name):
    with open(os.path.join(ROOT, "docs", "img", name), encoding="utf-8") as f:
        assert f.read() == plots.charts(DOC)[name], "rerun: python benchmarks/plots.py"
