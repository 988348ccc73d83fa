"""ONNX export benchmark over the model zoo, side by side in one run:

- export time: bridge.to_onnx (trace + passes + lowering + check + write) against torch.onnx.export with
  dynamo=True and with dynamo=False (the legacy TorchScript exporter), each the median of repeated exports
  after one warm-up export (the dynamo exporter's first call imports a lot), the exporters taking turns;
- onnxruntime latency of each file (CPU, default graph optimizations, one thread), median of timed loops,
  the three files taking turns; the ratio to the better of theirs picks "better" on half of the rounds and
  measures on the other half (an unbiased ratio: files that run equally fast give 1.0, not slightly more);
- export time against depth: MLPs of 64 to 4096 layers, time per layer should stay flat (linear growth).

    python benchmarks/onnx_export.py [--quick] [--models a,b] [--json out.json] [--no-depth]

Targets: bridge >= 10x faster than dynamo=True and >= 3x faster than dynamo=False (median over the zoo);
onnxruntime latency of bridge's file <= 1.0x the better of theirs; export time linear in depth.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings

import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))

import bridge  # noqa: E402
from bridge import zoo  # noqa: E402
from _timing import (cell, median_of, median_time, one_line, print_failures, write_json, zoo_arguments,  # noqa: E402
                     zoo_names)
from bridge.backends.ort import session  # noqa: E402
from bridge.progress import track  # noqa: E402

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)


@contextlib.contextmanager
def _quiet():
    """torch.onnx.export prints graphs from C++ too: silence file descriptors 1 and 2, not just sys.stdout."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved + [null]:
            os.close(fd)



def _torch_export(model, args, kwargs, path, dynamo: bool):
    with _quiet():
        torch.onnx.export(model, args, path, kwargs=kwargs or None, dynamo=dynamo, opset_version=18 if not dynamo
                          else None, do_constant_folding=True)


def _ort_session(path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads  # the same fixed thread count for every file: no pool-spin noise
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def _ort_latency(path, feeds, repeat: int, threads: int = 1) -> float:
    return statistics.median(_ort_samples({path: (_ort_session(path, threads), feeds)}, repeat)[path])


def _ort_samples(sessions: dict, rounds: int) -> dict:
    """Seconds per run of each ``name: (session, feeds)``, one sample per round. The sessions are timed in
    turns, a loop of at least 2 ms each, ``max(rounds, 7)`` rounds: a change in machine load hits every file
    alike."""
    loops = {}
    for name, (sess, feeds) in sessions.items():
        for _ in range(20):
            sess.run(None, feeds)
        t = time.perf_counter()
        sess.run(None, feeds)
        loops[name] = max(10, int(2e-3 / max(time.perf_counter() - t, 1e-7)))
    samples: dict = {name: [] for name in sessions}
    for _ in range(max(rounds, 7)):
        for name, (sess, feeds) in sessions.items():
            n = loops[name]
            t = time.perf_counter()
            for _ in range(n):
                sess.run(None, feeds)
            samples[name].append((time.perf_counter() - t) / n)
    return samples


def _ratio_to_best(samples: dict, ours: str, theirs: list[str]) -> float | None:
    """Our latency / the better of theirs. The better one is chosen on the even rounds and the ratio measured
    on the odd ones: picking the minimum of noisy figures and dividing by that same minimum would bias the
    ratio above 1 for files that run equally fast."""
    theirs = [k for k in theirs if k in samples]
    if ours not in samples or not theirs:
        return None
    best = min(theirs, key=lambda k: statistics.median(samples[k][0::2]))
    return statistics.median(samples[ours][1::2]) / statistics.median(samples[best][1::2])


def _feeds(sess_path, args, kwargs):
    from bridge.ir import structure

    leaves, _ = structure.flatten((args, kwargs), lambda o: isinstance(o, torch.Tensor))
    names = [i.name for i in session(sess_path).get_inputs()]
    return {n: t.numpy() for n, t in zip(names, leaves)}


def bench_model(entry, tmp: str, repeat: int) -> dict:
    model = entry.make_model()
    args, kwargs = entry.make_inputs(1)
    row: dict = {"model": entry.name}
    paths = {k: os.path.join(tmp, f"{entry.name}_{k}.onnx") for k in ("bridge", "dynamo", "legacy")}
    exporters = {
        "bridge": lambda: bridge.to_onnx(model, paths["bridge"], args=args, kwargs=kwargs),
        "dynamo": lambda: _torch_export(model, args, kwargs, paths["dynamo"], True),
        "legacy": lambda: _torch_export(model, args, kwargs, paths["legacy"], False),
    }
    working = {}
    for name, fn in exporters.items():
        try:
            fn()  # warm-up (and the file for latency)
            working[name] = fn
        except Exception as e:  # noqa: BLE001 - a failing exporter is a result, not a crash
            row[f"{name}_s"] = None
            row[f"{name}_error"] = one_line(e)
    times: dict = {name: [] for name in working}
    for _ in range(repeat):  # the exporters in turns: a change in machine load hits them alike
        for name, fn in working.items():
            times[name].append(median_time(fn, 1))
    for name, ts in times.items():
        row[f"{name}_s"] = statistics.median(ts)
    sessions = {}
    for name in exporters:
        if row.get(f"{name}_s") is not None:
            try:
                sessions[name] = (_ort_session(paths[name], 1), _feeds(paths[name], args, kwargs))
                sessions[name][0].run(None, sessions[name][1])
            except Exception as e:  # noqa: BLE001
                sessions.pop(name, None)
                row[f"{name}_ort_ms"] = None
                row[f"{name}_error"] = f"ort: {type(e).__name__}"
    samples = _ort_samples(sessions, 31)
    for name, ts in samples.items():
        row[f"{name}_ort_ms"] = 1e3 * statistics.median(ts)
    row["ort_ratio"] = _ratio_to_best(samples, "bridge", ["dynamo", "legacy"])
    b = row.get("bridge_s")
    for other in ("dynamo", "legacy"):
        o = row.get(f"{other}_s")
        row[f"speedup_vs_{other}"] = (o / b) if (b and o) else None
    return row


def depth_scaling(depths, repeat: int) -> list[dict]:
    out = []
    for d in depths:
        layers = []
        for _ in range(d):
            layers += [nn.Linear(16, 16), nn.ReLU()]
        m = nn.Sequential(*layers).eval()
        x = torch.randn(1, 16)
        with tempfile.TemporaryDirectory() as tmp:
            p = os.path.join(tmp, "m.onnx")
            t = median_time(lambda: bridge.to_onnx(m, p, args=(x,)), max(1, repeat // 2))
        out.append({"layers": d, "export_s": t, "us_per_layer": 1e6 * t / d})
    return out


def markdown_table(rows: list[dict]) -> str:
    """The per-model table of docs/benchmarks.md (benchmarks/plots.py reads it back for the charts)."""
    f = cell
    out = ["| model | bridge (s) | dynamo=True (s) | dynamo=False (s) | x vs dynamo | x vs legacy | ORT bridge (ms) "
           "| ORT dynamo (ms) | ORT legacy (ms) | ORT ratio |", "|" + "---|" * 10]
    for r in rows:
        out.append(f"| `{r['model']}` | {f(r.get('bridge_s'), '.4f')} | {f(r.get('dynamo_s'), '.3f')} | "
                   f"{f(r.get('legacy_s'), '.3f')} | {f(r.get('speedup_vs_dynamo'), '.1f')} | "
                   f"{f(r.get('speedup_vs_legacy'), '.1f')} | {f(r.get('bridge_ort_ms'), '.3f')} | "
                   f"{f(r.get('dynamo_ort_ms'), '.3f')} | {f(r.get('legacy_ort_ms'), '.3f')} | "
                   f"{f(r.get('ort_ratio'), '.2f')} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = zoo_arguments(__doc__, quick="fewer repetitions, smaller depth sweep")
    ap.add_argument("--markdown", help="write the per-model table here, as docs/benchmarks.md has it")
    ap.add_argument("--no-depth", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    repeat = 3 if a.quick else 5
    names = zoo_names(a.models)
    from rich.console import Console
    from rich.table import Table

    console = Console(width=150)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in track(names, "exporting"):  # a bar on a terminal only
            rows.append(bench_model(zoo.get(name), tmp, repeat))
    t = Table(title=f"ONNX export: bridge vs torch.onnx.export (torch {torch.__version__}, {a.threads} thread)")
    for col in ("model", "bridge s", "dynamo s", "legacy s", "x vs dynamo", "x vs legacy", "ort bridge ms",
                "ort dynamo ms", "ort legacy ms", "ort ratio"):
        t.add_column(col, justify="right" if col != "model" else "left")

    f = cell
    for r in rows:
        t.add_row(r["model"], f(r.get("bridge_s"), ".4f"), f(r.get("dynamo_s"), ".3f"), f(r.get("legacy_s"), ".3f"),
                  f(r.get("speedup_vs_dynamo"), ".1f"), f(r.get("speedup_vs_legacy"), ".1f"),
                  f(r.get("bridge_ort_ms"), ".3f"), f(r.get("dynamo_ort_ms"), ".3f"), f(r.get("legacy_ort_ms"), ".3f"),
                  f(r.get("ort_ratio"), ".2f"))
    console.print(t)

    summary = {"median_speedup_vs_dynamo": median_of(rows, "speedup_vs_dynamo"),
               "median_speedup_vs_legacy": median_of(rows, "speedup_vs_legacy"),
               "median_ort_ratio": median_of(rows, "ort_ratio"),
               "bridge_failures": [r["model"] for r in rows if r.get("bridge_s") is None]}
    console.print(f"median speedup vs dynamo=True: {f(summary['median_speedup_vs_dynamo'], '.1f')}x (target >= 10x)")
    console.print(f"median speedup vs dynamo=False: {f(summary['median_speedup_vs_legacy'], '.1f')}x (target >= 3x)")
    console.print(f"median onnxruntime latency ratio: {f(summary['median_ort_ratio'], '.2f')} (target <= 1.0)")
    print_failures(console, rows, ("bridge", "dynamo", "legacy"))
    depth = []
    if not a.no_depth:
        depth = depth_scaling([64, 256, 1024] if a.quick else [64, 256, 1024, 4096], repeat)
        dt = Table(title="bridge.to_onnx time against depth (Linear+ReLU MLPs)")
        for col in ("layers", "export s", "us per layer"):
            dt.add_column(col, justify="right")
        for d in depth:
            dt.add_row(str(d["layers"]), f"{d['export_s']:.3f}", f"{d['us_per_layer']:.0f}")
        console.print(dt)
        growth = depth[-1]["us_per_layer"] / depth[0]["us_per_layer"]
        console.print(f"per-layer time, deepest / shallowest: {growth:.2f} (linear: about 1)")
    if a.markdown:
        with open(a.markdown, "w") as fh:
            fh.write(markdown_table(rows))
    write_json(a.json, rows=rows, summary=summary, depth=depth)
    return 0


if __name__ == "__main__":
    sys.exit(main())
