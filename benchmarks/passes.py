"""Graph passes benchmark, in one run:

- conv-bn folding over the model zoo: eager latency of the model against the module generated from its graph
  before and after ``fuse_bn`` (medians of timed loops of the three taken in turns, batch as the parity tests,
  fixed threads); the ratio eager / folded is what a user gains (or loses) by running the folded graph instead
  of the model;
- the time of each pass (and of ``rewrite`` and ``to_sequential``) on a ~100,000-node graph built with the
  Graph API from a repeated block that gives every pass work to do (a duplicate for cse, an eval dropout, an
  identity, a constant subexpression, a linear + batchnorm, a dead node), with the time per node. Each pass
  runs on a fresh copy (the copy is not timed), with the garbage collector off, as ``timeit`` does.

    python benchmarks/passes.py [--quick] [--models a,b] [--nodes 100000] [--json out.json]

Targets: folded >= eager on the conv models (ratio >= 1.0); every pass linear in the graph size (a few
microseconds per node; a 100,000-node graph in about a second or less per pass).
"""
from __future__ import annotations

import gc
import os
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))

import bridge  # noqa: E402
from bridge import zoo  # noqa: E402
from _timing import write_json, zoo_arguments, zoo_names  # noqa: E402
from bridge.ir.graph import Graph  # noqa: E402
from bridge.ir.spec import TensorSpec  # noqa: E402
from bridge.passes import PASSES, _load, run_passes  # noqa: E402
from bridge.progress import track  # noqa: E402


def _latencies(fns: list, repeat: int) -> list[float]:
    """Median seconds per call of each function, timed in turns (one loop of each per round, ``repeat``
    rounds) so that load from other processes falls on all of them alike."""
    loops = []
    with torch.no_grad():
        for fn in fns:
            for _ in range(5):
                fn()
            t0 = time.perf_counter()
            fn()
            loops.append(max(1, min(200, int(0.03 / max(time.perf_counter() - t0, 1e-6)))))  # ~30 ms a loop
        samples: list[list[float]] = [[] for _ in fns]
        for _ in range(repeat):
            for i, (fn, n) in enumerate(zip(fns, loops)):
                t0 = time.perf_counter()
                for _ in range(n):
                    fn()
                samples[i].append((time.perf_counter() - t0) / n)
    return [statistics.median(s) for s in samples]


def bench_fold(entry, repeat: int) -> dict:
    model = entry.make_model()
    args, kwargs = entry.make_inputs(entry.batch)
    g = bridge.trace(model, args, kwargs)
    folded = run_passes(g, ["fuse_bn"])
    before, after = g.to_module(), folded.to_module()
    row = {"model": entry.name, "batch_norms": len(g.find("batch_norm")),
           "folded": len(g.find("batch_norm")) - len(folded.find("batch_norm"))}
    eager, graph, fold = _latencies([lambda: model(*args, **kwargs), lambda: before(*args, **kwargs),
                                     lambda: after(*args, **kwargs)], repeat)
    row["eager_ms"], row["graph_ms"], row["folded_ms"] = 1e3 * eager, 1e3 * graph, 1e3 * fold
    row["ratio"] = row["eager_ms"] / row["folded_ms"]
    return row


# ---- a big graph -------------------------------------------------------------------------------------------
BLOCK = 21 + 2 * 4 + 1 + 5 + 3  # nodes per block (width 4)


def big_graph(n_nodes: int, width: int = 4) -> Graph:
    """A chain of blocks of ``BLOCK`` nodes over (2, width) tensors; every pass has work in every block."""
    g = Graph()
    s = TensorSpec((2, width), torch.float32)
    v = TensorSpec((width,), torch.float32)
    x = g.add_input("x", s)
    gen = torch.Generator().manual_seed(0)
    for i in range(max(1, n_nodes // BLOCK)):
        c = g.add_constant(f"c{i}", torch.randn(width, generator=gen))
        w = g.add_constant(f"l{i}.weight", torch.randn(width, width, generator=gen) * 0.5, kind="param")
        b = g.add_constant(f"l{i}.bias", torch.randn(width, generator=gen), kind="param")
        bn = {k: g.add_constant(f"bn{i}.{k}", t, kind="buffer" if k.startswith("running") else "param")
              for k, t in (("running_mean", torch.randn(width, generator=gen)),
                           ("running_var", torch.rand(width, generator=gen) + 0.5),
                           ("weight", torch.rand(width, generator=gen) + 0.5),
                           ("bias", torch.randn(width, generator=gen)))}
        h = g.add_node("add", {"input": x, "other": c, "alpha": 1}, outputs=[("h", s)]).output
        a = g.add_node("relu", {"input": h}, outputs=[("a", s)]).output
        a2 = g.add_node("relu", {"input": h}, outputs=[("a", s)]).output                          # cse
        m = g.add_node("add", {"input": a, "other": a2, "alpha": 1}, outputs=[("m", s)]).output
        d = g.add_node("dropout", {"input": m, "p": 0.1, "training": False, "kind": "dropout"},
                       outputs=[("d", s)]).output                                                   # remove_dropout
        ident = g.add_node("identity", {"input": d}, outputs=[("i", s)]).output                    # remove_identity
        k = g.add_node("mul", {"input": c, "other": 0.5}, outputs=[("k", v)]).output               # fold
        tr = g.add_node("permute", {"input": ident, "dims": [1, 0]}, outputs=[("t", TensorSpec((width, 2),
                                                                                        torch.float32))]).output
        back = g.add_node("permute", {"input": tr, "dims": [1, 0]}, outputs=[("b", s)]).output   # cancel_reorders
        lin = g.add_node("linear", {"input": back, "weight": w, "bias": b}, outputs=[("l", s)]).output
        y = g.add_node("batch_norm", {"input": lin, **bn, "training": False, "momentum": 0.1, "eps": 1e-5},
                       outputs=[("bn", s)]).output                                                  # fuse_bn
        wt = g.add_node("permute", {"input": w, "dims": [1, 0]}, outputs=[("wt", TensorSpec((width, width),
                                                                                        torch.float32))]).output
        mm = g.add_node("matmul", {"input": y, "other": wt}, outputs=[("mm", s)]).output
        y = g.add_node("add", {"input": mm, "other": b, "alpha": 1}, outputs=[("mb", s)]).output    # fuse_linear
        u = g.add_node("mul", {"input": y, "other": 0.7071067811865476}, outputs=[("gu", s)]).output
        u = g.add_node("erf", {"input": u}, outputs=[("ge", s)]).output
        u = g.add_node("add", {"input": u, "other": 1.0, "alpha": 1}, outputs=[("ga", s)]).output
        h2 = g.add_node("mul", {"input": y, "other": 0.5}, outputs=[("gh", s)]).output
        y = g.add_node("mul", {"input": h2, "other": u}, outputs=[("gelu", s)]).output           # fuse_gelu
        parts = []  # adaptive max pooling of the (C, L) tensor to L, written out per window   # fuse_adaptive_pool
        for j in range(width):
            sl = g.add_node("slice", {"input": y, "dim": 1, "start": j, "end": j + 1, "step": 1},
                            outputs=[("ps", TensorSpec((2, 1), torch.float32))]).output
            parts.append(g.add_node("amax", {"input": sl, "dim": [1], "keepdim": True},
                                    outputs=[("pm", TensorSpec((2, 1), torch.float32))]).output)
        y = g.add_node("cat", {"tensors": parts, "dim": 1}, outputs=[("pool", s)]).output
        halves = TensorSpec((2, 2, width // 2), torch.float32)  # a channel shuffle in five moves     # compose_moves
        u = g.add_node("unflatten", {"input": y, "dim": 1, "sizes": [2, width // 2]}, outputs=[("u", halves)]).output
        u = g.add_node("permute", {"input": u, "dims": [0, 2, 1]},
                       outputs=[("up", TensorSpec((2, width // 2, 2), torch.float32))]).output
        u = g.add_node("reshape", {"input": u, "shape": [2, width]}, outputs=[("ur", s)]).output
        u = g.add_node("reshape", {"input": u, "shape": [2, 2, width // 2]}, outputs=[("ur2", halves)]).output
        y = g.add_node("reshape", {"input": u, "shape": [2, width]}, outputs=[("shuffled", s)]).output
        r1 = g.add_node("slice", {"input": y, "dim": 1, "start": width - 1, "end": width, "step": 1},
                        outputs=[("rl", TensorSpec((2, 1), torch.float32))]).output
        r2 = g.add_node("slice", {"input": y, "dim": 1, "start": 0, "end": width - 1, "step": 1},
                        outputs=[("rr", TensorSpec((2, width - 1), torch.float32))]).output
        y = g.add_node("cat", {"tensors": [r1, r2], "dim": 1}, outputs=[("roll", s)]).output      # recompose
        g.add_node("neg", {"input": y}, outputs=[("dead", s)])                                      # dce
        x = g.add_node("add", {"input": y, "other": k, "alpha": 1}, outputs=[("o", s)]).output
    g.set_outputs([x])
    return g


def bench_big(n_nodes: int) -> list[dict]:
    _load()
    t0 = time.perf_counter()
    g = big_graph(n_nodes)
    build = time.perf_counter() - t0
    n = len(g.nodes)
    rows = [{"step": "build (Graph API)", "s": build, "nodes": n}]
    t0 = time.perf_counter()
    g.check()
    rows.append({"step": "check", "s": time.perf_counter() - t0, "nodes": n})
    steps = {name: PASSES[name] for name in sorted(PASSES)}
    steps["rewrite relu+relu -> 2*relu"] = lambda h: bridge.rewrite(
        h, lambda t: torch.relu(t) + torch.relu(t), lambda t: torch.relu(t) * 2)
    steps["replace_op relu -> gelu"] = lambda h: bridge.replace_op(h, "relu", "gelu")
    steps["to_sequential stages=4"] = lambda h: bridge.to_sequential(h, stages=4)
    steps["to_module (codegen, for reference)"] = lambda h: h.to_module()
    for name, fn in steps.items():
        h = g.copy()
        gc.collect()
        gc.disable()  # as timeit does: a collection of the 100k-node graph's cycles costs seconds, at random
        try:
            t0 = time.perf_counter()
            fn(h)
            dt = time.perf_counter() - t0
        finally:
            gc.enable()
        rows.append({"step": name, "s": dt, "nodes": n, "nodes_after": len(h.nodes)})
    for r in rows:
        r["us_per_node"] = 1e6 * r["s"] / r["nodes"]
    return rows


def main(argv=None) -> int:
    ap = zoo_arguments(__doc__, quick="fewer repetitions, a 20,000-node graph",
                       models="comma-separated zoo names (default: every non-slow entry)")
    ap.add_argument("--nodes", type=int, default=None, help="size of the big graph (default 100000)")
    ap.add_argument("--no-big", action="store_true", help="skip the big-graph pass timings")
    ap.add_argument("--no-fold", action="store_true", help="skip the zoo latency table")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    repeat = 3 if a.quick else 11
    names = zoo_names(a.models)

    from rich.console import Console
    from rich.table import Table

    console = Console(width=140)
    rows = [] if a.no_fold else [bench_fold(zoo.get(name), repeat) for name in track(names, "timing")]
    t = Table(title=f"eager vs folded graph (fuse_bn), torch {torch.__version__}, {a.threads} thread")
    for col in ("model", "bn", "folded", "eager ms", "graph ms", "folded ms", "eager / folded"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        t.add_row(r["model"], str(r["batch_norms"]), str(r["folded"]), f"{r['eager_ms']:.3f}",
                  f"{r['graph_ms']:.3f}", f"{r['folded_ms']:.3f}", f"{r['ratio']:.2f}")
    if rows:
        console.print(t)
    with_bn = [r["ratio"] for r in rows if r["folded"]]
    summary = {"median_ratio_folded_models": statistics.median(with_bn) if with_bn else None,
               "median_ratio_all": statistics.median(r["ratio"] for r in rows) if rows else None}
    if with_bn:
        console.print(f"median eager / folded over the {len(with_bn)} models with folded batchnorms: "
                      f"{summary['median_ratio_folded_models']:.2f} (target >= 1.0)")

    big = [] if a.no_big else bench_big(a.nodes or (20000 if a.quick else 100000))
    if big:
        bt = Table(title=f"passes on a {big[0]['nodes']:,}-node graph")
        for col in ("step", "s", "us / node", "nodes after"):
            bt.add_column(col, justify="left" if col == "step" else "right")
        for r in big:
            bt.add_row(r["step"], f"{r['s']:.3f}", f"{r['us_per_node']:.1f}", f"{r.get('nodes_after', '')}")
        console.print(bt)
    write_json(a.json, fold=rows, summary=summary, big=big)
    return 0


if __name__ == "__main__":
    sys.exit(main())
