"""ONNX import benchmark over the model zoo's files, side by side in one run:

- import time: bridge.from_onnx (read + import + the generated module) against onnx2torch.convert on the same
  file (bridge's own export of each zoo model at opset 17), median of repeated imports after one warm-up, the two
  importing in turns;
- latency of the imported modules (bridge's generated module, onnx2torch's fx GraphModule) and of the original
  torch model the file was exported from (eager, the same inputs), median of timed loops taken in turns, and of
  onnxruntime on the same file (CPU, fixed threads); every output checked against onnxruntime first.

    python benchmarks/onnx_import.py [--quick] [--models a,b] [--json out.json] [--threads 1]

onnx2torch comes from the ``bench`` extra (``pip install -e ".[bench]"``); without it the onnx2torch columns
say so and bridge is measured alone.
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # _timing, and the tests' helpers

import bridge  # noqa: E402
from bridge import zoo  # noqa: E402
from tests.helpers import tensor_leaves  # noqa: E402
from _timing import cell, median_of, one_line, print_failures, write_json, zoo_arguments, zoo_names  # noqa: E402
from bridge.frontends.signature import InputBinding  # noqa: E402
from bridge.progress import track  # noqa: E402
from onnx_export import _ort_latency, _ort_session, _quiet  # noqa: E402

try:
    import onnx2torch
except ImportError:  # the bench extra is not installed
    onnx2torch = None

OPSET = 17


def _in_turns(fns: dict, repeat: int, n: int = 1) -> dict:
    """Median seconds per call of each of ``fns`` (name -> callable), timed in turns: round after round, each one a
    loop of ``n`` calls, so a drift of the machine's speed during the run (other load, clock changes) reaches all of
    them alike, and their ratios hold where separate runs of each disagreed by 5-10% on models of 0.02-0.1 ms."""
    samples: dict = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t = time.perf_counter()
            for _ in range(n):
                fn()
            samples[k].append((time.perf_counter() - t) / n)
    return {k: statistics.median(v) for k, v in samples.items()}


def _caller(module, feeds: list, kwargs: dict | None = None):
    kwargs = kwargs or {}
    return lambda: module(*feeds, **kwargs)


def _max_err(got, ref) -> float:
    got = tensor_leaves(got)
    if len(got) != len(ref):
        return float("inf")
    return max([float((torch.as_tensor(g).double() - torch.as_tensor(r).double()).abs().max()) if g.numel() else 0.0
                for g, r in zip(got, ref)] or [0.0])


def bench_model(entry, tmp: str, repeat: int, threads: int) -> dict:
    row: dict = {"model": entry.name}
    model = entry.make_model()
    args, kwargs = entry.make_inputs(entry.batch)
    path = os.path.join(tmp, f"{entry.name}.onnx")
    proto = bridge.to_onnx(model, path, args=args, kwargs=kwargs, opset=OPSET)
    b = InputBinding(model, args, kwargs)
    by_name = dict(zip(b.names, b.examples))
    feeds = [by_name[i.name] for i in proto.graph.input]
    ort_feeds = {i.name: t.numpy() for i, t in zip(proto.graph.input, feeds)}
    ref = [torch.from_numpy(r) for r in _ort_session(path, threads).run(None, ort_feeds)]
    row["nodes"] = len(proto.graph.node)
    row["ort_ms"] = 1e3 * _ort_latency(path, ort_feeds, repeat, threads)

    def ours():
        return bridge.from_onnx(path).to_module()

    def theirs():
        with _quiet():
            return onnx2torch.convert(path)

    imports, modules = {}, {"torch": _caller(model, list(args), kwargs)}
    try:
        mod = ours()
        row["bridge_err"] = _max_err(mod(*feeds), ref)
        imports["bridge"], modules["bridge"] = ours, _caller(mod, feeds)
    except Exception as e:  # noqa: BLE001 - reported in the table
        row["bridge_error"] = one_line(e)
    if onnx2torch is None:
        row["onnx2torch_error"] = "onnx2torch not installed (pip install -e '.[bench]')"
    else:
        try:
            mod = theirs()
            with torch.no_grad():
                row["onnx2torch_err"] = _max_err(mod(*feeds), ref)
            imports["onnx2torch"], modules["onnx2torch"] = theirs, _caller(mod, feeds)
        except Exception as e:  # noqa: BLE001
            row["onnx2torch_error"] = one_line(e)
    for k, sec in _in_turns(imports, repeat).items():  # imports of the two, in turns
        row[f"{k}_s"] = sec
    with torch.no_grad():
        _in_turns(modules, 1, 10)  # warm-up
        for k, sec in _in_turns(modules, repeat, 30).items():  # the modules and the original model, in turns
            row[f"{k}_ms"] = 1e3 * sec
    if "bridge_ms" in row:
        row["vs_torch"] = row["bridge_ms"] / row["torch_ms"]
    if row.get("bridge_s") and row.get("onnx2torch_s"):
        row["import_speedup"] = row["onnx2torch_s"] / row["bridge_s"]
        row["latency_ratio"] = row["bridge_ms"] / row["onnx2torch_ms"]
    return row


def main(argv=None) -> int:
    a = zoo_arguments(__doc__).parse_args(argv)
    torch.set_num_threads(a.threads)
    repeat = 3 if a.quick else 5
    names = zoo_names(a.models)
    from rich.console import Console
    from rich.table import Table

    console = Console(width=150)
    if onnx2torch is None:
        console.print("onnx2torch is not installed (the bench extra: pip install -e '.[bench]'): bridge alone",
                      markup=False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in track(names, "importing"):
            rows.append(bench_model(zoo.get(name), tmp, repeat, a.threads))
    t = Table(title=f"ONNX import (opset {OPSET} files): bridge.from_onnx vs onnx2torch.convert "
                    f"(torch {torch.__version__}, {a.threads} thread)")
    for col in ("model", "nodes", "bridge s", "onnx2torch s", "x faster", "bridge ms", "torch ms", "vs torch",
                "onnx2torch ms", "ort ms", "lat. ratio", "bridge err", "o2t err"):
        t.add_column(col, justify="right" if col != "model" else "left")
    f = cell
    for r in rows:
        t.add_row(r["model"], str(r["nodes"]), f(r.get("bridge_s"), ".4f"), f(r.get("onnx2torch_s"), ".4f"),
                  f(r.get("import_speedup"), ".1f"), f(r.get("bridge_ms"), ".3f"), f(r.get("torch_ms"), ".3f"),
                  f(r.get("vs_torch"), ".2f"), f(r.get("onnx2torch_ms"), ".3f"),
                  f(r.get("ort_ms"), ".3f"), f(r.get("latency_ratio"), ".2f"), f(r.get("bridge_err"), ".1e"),
                  f(r.get("onnx2torch_err"), ".1e"))
    console.print(t)

    summary = {"median_import_speedup": median_of(rows, "import_speedup"),
               "median_latency_ratio": median_of(rows, "latency_ratio"),
               "median_latency_vs_torch": median_of(rows, "vs_torch"),
               "max_latency_vs_torch": max((r["vs_torch"] for r in rows if r.get("vs_torch")), default=None),
               "bridge_failures": [r["model"] for r in rows if r.get("bridge_s") is None],
               "onnx2torch_failures": [r["model"] for r in rows if r.get("onnx2torch_s") is None]}
    console.print(f"median import speedup vs onnx2torch: {f(summary['median_import_speedup'], '.2f')}x; "
                  f"median latency bridge / onnx2torch: {f(summary['median_latency_ratio'], '.2f')}; "
                  f"bridge / the original torch model: median {f(summary['median_latency_vs_torch'], '.2f')}, "
                  f"at most {f(summary['max_latency_vs_torch'], '.2f')}")
    console.print(f"bridge could not import: {summary['bridge_failures'] or 'none'}; onnx2torch could not convert: "
                  f"{summary['onnx2torch_failures'] or 'none'}")
    print_failures(console, rows, ("bridge", "onnx2torch"), verb="")
    write_json(a.json, rows=rows, summary=summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
