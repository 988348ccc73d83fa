"""Drawing benchmark, side by side in one run: bridge.draw against torch.fx's FxGraphDrawer (pydot), the
picture a torch.fx user would otherwise make.

- zoo: for every non-slow zoo model fx can trace, the time to write an SVG of every op: ``bridge.draw(g,
  "g.svg")`` (labels with shapes and costs, clusters by module) against ``FxGraphDrawer(gm).get_dot_graph()
  .create_svg()`` on the already traced and shape-propagated GraphModule; both run graphviz's ``dot``. Also
  bridge's ``.html`` and ``.mmd``, which need no graphviz.
- scale: MLPs of Linear+ReLU pairs up to 5,000 ops: bridge's DOT text, HTML page, SVG folded by default
  (past 500 boxes) and SVG of every op, against FxGraphDrawer's SVG of every op.

Graphs are traced once, outside the timings. Each figure is the median of repeated draws after one warm-up.
Needs graphviz (``dot``); FxGraphDrawer needs pydot (``pip install -e ".[bench]"``): without it, only
bridge's figures are printed.

    python benchmarks/draw.py [--quick] [--models a,b] [--json out.json] [--no-scale]
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import warnings

import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE)]

import bridge  # noqa: E402
from bridge import zoo  # noqa: E402
from _timing import cell, median_of, median_time, one_line, write_json, zoo_arguments, zoo_names  # noqa: E402
from bridge.progress import track  # noqa: E402

warnings.filterwarnings("ignore")


def fx_drawer():
    """``FxGraphDrawer``, or None when pydot (which it needs) is not installed."""
    try:
        import pydot  # noqa: F401
        from torch.fx.passes.graph_drawer import FxGraphDrawer
    except ImportError:
        return None
    return FxGraphDrawer


def fx_svg(drawer, model, args, kwargs):
    """A function that draws the fx graph of ``model`` (traced and shape-propagated once, here) to SVG."""
    from torch.fx.passes.shape_prop import ShapeProp

    gm = torch.fx.symbolic_trace(model)
    if not kwargs:
        ShapeProp(gm).propagate(*args)  # FxGraphDrawer then shows shapes too, as bridge does
    return lambda: drawer(gm, "model").get_dot_graph().create_svg()


def bench_model(entry, tmp: str, reps: int, drawer) -> dict:
    model = entry.make_model().eval()
    args, kwargs = entry.make_inputs(1)
    g = bridge.trace(model, args, kwargs)
    row = {"model": entry.name, "ops": len(g.nodes)}
    for fmt in ("svg", "html", "mmd"):
        path = os.path.join(tmp, f"{entry.name}.{fmt}")
        fn = lambda: bridge.draw(g, path)  # noqa: E731
        fn()
        row[f"bridge_{fmt}_s"] = median_time(fn, reps)
    row["fx_svg_s"] = None
    if drawer is not None and g.meta.get("frontend") == "fx":
        try:
            fn = fx_svg(drawer, model, args, kwargs)
            fn()
            row["fx_svg_s"] = median_time(fn, reps)
        except Exception as e:  # noqa: BLE001 - a drawer that fails is a result, not a crash
            row["fx_error"] = one_line(e, 100)
    row["ratio"] = row["fx_svg_s"] / row["bridge_svg_s"] if row["fx_svg_s"] else None
    return row


def bench_scale(sizes, tmp: str, drawer) -> list[dict]:
    out = []
    for ops in sizes:
        layers = []
        for _ in range(ops // 2):
            layers += [nn.Linear(8, 8), nn.ReLU()]
        model = nn.Sequential(*layers).eval()
        x = torch.randn(1, 8)
        g = bridge.trace(model, (x,))
        row = {"ops": len(g.nodes)}
        jobs = {"dot": lambda: bridge.draw(g, os.path.join(tmp, "s.dot"), max_nodes=10**9),
                "html": lambda: bridge.draw(g, os.path.join(tmp, "s.html")),
                "svg_folded": lambda: bridge.draw(g, os.path.join(tmp, "s.svg")),
                "svg_all": lambda: bridge.draw(g, os.path.join(tmp, "s.svg"), max_nodes=10**9)}
        if drawer is not None:
            jobs["fx_svg_all"] = fx_svg(drawer, model, (x,), {})
        for name, fn in jobs.items():
            row[f"{name}_s"] = median_time(fn, 1 if ops >= 2000 else 3)
        out.append(row)
    return out


def main(argv=None) -> int:
    ap = zoo_arguments(__doc__, quick="fewer repetitions, scale up to 2,000 ops")
    ap.add_argument("--no-scale", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if shutil.which("dot") is None:
        print("graphviz 'dot' is not installed (apt-get install graphviz): nothing to compare", file=sys.stderr)
        return 1
    drawer = fx_drawer()
    if drawer is None:
        print("pydot is not installed (pip install -e '.[bench]'): FxGraphDrawer is left out", file=sys.stderr)
    reps = 3 if a.quick else 5
    names = zoo_names(a.models)
    from rich.console import Console
    from rich.table import Table

    console = Console(width=150)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [bench_model(zoo.get(n), tmp, reps, drawer) for n in track(names, "drawing the zoo")]
        scale = [] if a.no_scale else bench_scale((500, 1000, 2000) if a.quick else (500, 1000, 2000, 5000), tmp,
                                                   drawer)
    t = Table(title=f"bridge.draw vs FxGraphDrawer (torch {torch.__version__}, graphviz dot)")
    for col in ("model", "ops", "bridge svg s", "fx svg s", "x vs fx", "bridge html s", "bridge mmd s"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        t.add_row(r["model"], str(r["ops"]), cell(r["bridge_svg_s"], ".3f"), cell(r["fx_svg_s"], ".3f"),
                  cell(r["ratio"], ".2f"), cell(r["bridge_html_s"], ".4f"), cell(r["bridge_mmd_s"], ".4f"))
    console.print(t)
    compared = sum(r["ratio"] is not None for r in rows)
    summary = {"ratio_median": median_of(rows, "ratio"), "models": len(rows), "compared": compared}
    console.print(f"median speedup of bridge's SVG over FxGraphDrawer's: {cell(summary['ratio_median'], '.2f')}x "
                  f"over {compared} models")
    if scale:
        s = Table(title="scale: Linear+ReLU chains (seconds)")
        for col in ("ops", "bridge dot", "bridge html", "bridge svg folded", "bridge svg all", "fx svg all"):
            s.add_column(col, justify="right")
        for r in scale:
            s.add_row(str(r["ops"]), *(cell(r.get(k), ".3f")
                                       for k in ("dot_s", "html_s", "svg_folded_s", "svg_all_s", "fx_svg_all_s")))
        console.print(s)
    write_json(a.json, rows=rows, scale=scale, summary=summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
