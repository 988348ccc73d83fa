"""Analysis benchmark, side by side in one run:

- over the zoo: ``bridge.summary(model, args)`` (trace + costs + rows + liveness; "of which analysis": the
  same on the already traced graph) against
  ``torchinfo.summary(model, input_data=...)`` and fvcore's ``FlopCountAnalysis(model, args).total()``, each
  the median of repeated calls after a warm-up, with the parameter and multiply-add counts each reports;
- scaling: graphs of 1,000 to 100,000 nodes (residual blocks of linear -> relu -> add, built directly with
  the Graph API instead of tracing 100k python calls) analyzed by ``bridge.summary`` and ``bridge.topology``;
  time per node should stay flat (linear in the graph's size).

    python benchmarks/analysis.py [--quick] [--models a,b] [--json out.json] [--no-scaling | --no-zoo]

torchinfo and fvcore are the ``bench`` extra (``pip install -e ".[bench]"``); a missing one is reported and
its columns stay empty.
"""
from __future__ import annotations

import contextlib
import gc
import io
import logging
import math
import os
import statistics
import sys
import warnings

import torch

HERE = os.path.dirname(os.path.abspath(__file__))

import bridge  # noqa: E402
from bridge import zoo  # noqa: E402
from bridge.zoo import residual_graph  # noqa: E402
from _timing import (cell, median_of, median_time, one_line, print_failures, write_json, zoo_arguments,  # noqa: E402
                     zoo_names)
from bridge.progress import track  # noqa: E402

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)


def _optional(name):
    try:
        return __import__(name)
    except Exception:  # noqa: BLE001 - absent or broken: its columns stay empty
        return None


@contextlib.contextmanager
def _quiet():
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def bench_model(entry, repeat: int, torchinfo, fvcore) -> dict:
    model = entry.make_model()
    args, kwargs = entry.make_inputs(entry.batch)
    row: dict = {"model": entry.name}
    s = bridge.summary(model, args, kwargs)
    row["bridge_s"] = median_time(lambda: bridge.summary(model, args, kwargs), repeat)
    row["bridge_graph_s"] = median_time(lambda: bridge.summary(s.graph), repeat)  # the analysis alone
    row["bridge_params"], row["bridge_macs"] = s.totals["params"], s.totals["macs"]
    if torchinfo is not None:
        def run_ti():
            with _quiet():
                return torchinfo.summary(model, input_data=list(args), verbose=0, **kwargs)
        try:
            r = run_ti()
            row["torchinfo_s"] = median_time(run_ti, repeat)
            row["torchinfo_params"], row["torchinfo_macs"] = r.total_params, r.total_mult_adds
        except Exception as e:  # noqa: BLE001 - a tool failing on a model is a result
            row["torchinfo_error"] = one_line(e, 100)
    if fvcore is not None:
        from fvcore.nn import FlopCountAnalysis

        def run_fv():
            with _quiet():
                a = FlopCountAnalysis(model, args if not kwargs else (*args, *kwargs.values()))
                a.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
                return a.total()
        try:
            row["fvcore_macs"] = run_fv()  # fvcore counts one "flop" per multiply-add
            row["fvcore_s"] = median_time(run_fv, repeat)
        except Exception as e:  # noqa: BLE001
            row["fvcore_error"] = one_line(e, 100)
    b = row["bridge_s"]
    for other in ("torchinfo", "fvcore"):
        o = row.get(f"{other}_s")
        row[f"speedup_vs_{other}"] = o / b if o else None
    return row


def scaling(sizes, repeat: int) -> list[dict]:
    out = []
    for n in sizes:
        g = residual_graph(n)
        nodes = len(g.nodes)

        def run(g=g):
            bridge.summary(g, depth=2)
            bridge.topology(g)
        run()  # warm-up
        gc.collect()  # start each size from a clean heap: the previous size's garbage is not this one's cost
        t = median_time(run, repeat)
        topo = bridge.topology(g)
        out.append({"nodes": nodes, "analysis_s": t, "us_per_node": 1e6 * t / nodes,
                    "skips": len(topo.skip_connections), "depth": topo.depth})
    return out


def main(argv=None) -> int:
    ap = zoo_arguments(__doc__, quick="fewer repetitions, smaller scaling sweep")
    ap.add_argument("--no-scaling", action="store_true")
    ap.add_argument("--no-zoo", action="store_true", help="only the scaling sweep")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    repeat = 3 if a.quick else 5
    torchinfo, fvcore = _optional("torchinfo"), _optional("fvcore")
    from rich.console import Console
    from rich.table import Table

    console = Console(width=170)
    for name, mod in (("torchinfo", torchinfo), ("fvcore", fvcore)):
        if mod is None:
            console.print(f"{name} is not installed (pip install -e '.[bench]'): its columns stay empty", markup=False)
    names = zoo_names(a.models, exclude=("slow", "torchvision"))
    if a.no_zoo:
        names = []
    rows = [bench_model(zoo.get(n), repeat, torchinfo, fvcore) for n in track(names, "summarizing")]

    t = Table(title=f"summary time: bridge.summary vs torchinfo.summary vs fvcore FlopCountAnalysis "
                    f"(torch {torch.__version__}, {a.threads} thread)")
    for col in ("model", "bridge ms", "of which analysis", "torchinfo ms", "fvcore ms", "x vs torchinfo", "x vs fvcore",
                "params bridge",
                "params torchinfo", "MACs bridge", "MACs torchinfo", "MACs fvcore"):
        t.add_column(col, justify="right" if col != "model" else "left")
    for r in rows:
        t.add_row(r["model"], cell(r.get("bridge_s") and 1e3 * r["bridge_s"], ".1f"),
                  cell(r.get("bridge_graph_s") and 1e3 * r["bridge_graph_s"], ".2f"),
                  cell(r.get("torchinfo_s") and 1e3 * r["torchinfo_s"], ".1f"),
                  cell(r.get("fvcore_s") and 1e3 * r["fvcore_s"], ".1f"),
                  cell(r.get("speedup_vs_torchinfo"), ".2f"), cell(r.get("speedup_vs_fvcore"), ".2f"),
                  *(cell(r.get(k), ",") for k in ("bridge_params", "torchinfo_params", "bridge_macs", "torchinfo_macs",
                                                  "fvcore_macs")))
    console.print(t)

    summary = {"median_speedup_vs_torchinfo": median_of(rows, "speedup_vs_torchinfo"),
               "median_speedup_vs_fvcore": median_of(rows, "speedup_vs_fvcore"),
               "params_equal_torchinfo": sum(1 for r in rows if r.get("torchinfo_params") == r["bridge_params"]),
               "macs_equal_fvcore": sum(1 for r in rows if r.get("fvcore_macs") == r["bridge_macs"]),
               "models": len(rows)}
    summary["median_analysis_vs_torchinfo"] = statistics.median(
        [r["bridge_graph_s"] / r["torchinfo_s"] for r in rows if r.get("torchinfo_s")] or [math.nan])
    console.print(f"median time ratio torchinfo / bridge: {cell(summary['median_speedup_vs_torchinfo'], '.2f')}; "
                  f"fvcore / bridge: {cell(summary['median_speedup_vs_fvcore'], '.2f')}")
    console.print(f"parameter counts equal to torchinfo's: {summary['params_equal_torchinfo']} of {len(rows)}; "
                  f"MACs equal to fvcore's: {summary['macs_equal_fvcore']} of {len(rows)}")
    print_failures(console, rows, ("torchinfo", "fvcore"))
    scale = []
    if not a.no_scaling:
        scale = scaling([999, 9999, 99999] if a.quick else [999, 3000, 9999, 30000, 99999], max(1, repeat // 2))
        st = Table(title="bridge.summary + bridge.topology against graph size (residual blocks)")
        for col in ("nodes", "seconds", "us per node", "skips", "depth"):
            st.add_column(col, justify="right")
        for s in scale:
            st.add_row(f"{s['nodes']:,}", f"{s['analysis_s']:.3f}", f"{s['us_per_node']:.1f}", f"{s['skips']:,}",
                       f"{s['depth']:,}")
        console.print(st)
        console.print(f"per-node time, largest / smallest: {scale[-1]['us_per_node'] / scale[0]['us_per_node']:.2f} "
                      "(linear: about 1)")
    write_json(a.json, rows=rows, summary=summary, scaling=scale)
    return 0


if __name__ == "__main__":
    sys.exit(main())
