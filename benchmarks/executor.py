"""Executor benchmark over the model zoo: bridge's generated module against eager PyTorch, and bridge.trace's
cost against torch.fx.symbolic_trace and torch.export.export, side by side in one run.

    python benchmarks/executor.py                      # CPU, every non-slow zoo entry
    python benchmarks/executor.py --quick              # fewer repetitions (what gpu_check.sh runs)
    python benchmarks/executor.py --device cuda --json out.json
    python benchmarks/executor.py --models resnet_mini,mlp --threads 1

Latency: a graph traced at each batch size (static shapes), ``g.to_module()`` against the eager model, both under
torch.inference_mode, with a fixed thread count. After warmup, eager and generated calls alternate; each sample
times a loop of calls long enough to be measured (CUDA synchronized), and the figure is the median sample.
ratio = generated / eager.

Trace time: median of repeated bridge.trace (default arguments), torch.fx.symbolic_trace and
torch.export.export at batch 1 (export is timed once in --quick mode).

Targets (checked per model, and over the zoo): execution ratio median <= 1.02; bridge.trace time <= 2 x
symbolic_trace + one eager forward. Models fx cannot trace (bridge falls back to torch.export) are checked
against 2 x export + one forward instead, marked "(export)".
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
import warnings

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT]  # bridge (and its zoo) and the tests' helpers from this checkout

import bridge  # noqa: E402
from bridge import zoo  # noqa: E402
from _timing import median_time, one_line  # noqa: E402
from tests.helpers import to_device  # noqa: E402
from bridge.progress import track  # noqa: E402

RATIO_TARGET = 1.02
TRACE_FACTOR = 2.0


# ---- helpers --------------------------------------------------------------------------------------


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)



def _warm(fn, device, calls: int, min_s: float = 0.2) -> None:
    """At least ``calls`` calls and ``min_s`` seconds: some kernels (SDPA, oneDNN) take several calls to settle."""
    start = time.perf_counter()
    n = 0
    while n < calls or time.perf_counter() - start < min_s:
        fn()
        n += 1
    _sync(device)


def compare_latency(eager_fn, gen_fn, device, *, warmup: int, samples: int, min_sample_s: float):
    """Median seconds per call of (eager, generated), alternating which runs first in each sample."""
    with torch.inference_mode():
        _warm(eager_fn, device, warmup)
        _warm(gen_fn, device, warmup)
        single = max(median_time(lambda: (eager_fn(), _sync(device)), 5), 1e-7)
        loops = max(1, int(min_sample_s / single))

        def sample(fn):
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(loops):
                fn()
            _sync(device)
            return (time.perf_counter() - t0) / loops

        eager, gen = [], []
        for i in range(samples):
            if i % 2 == 0:
                eager.append(sample(eager_fn))
                gen.append(sample(gen_fn))
            else:
                gen.append(sample(gen_fn))
                eager.append(sample(eager_fn))
    return statistics.median(eager), statistics.median(gen)


def trace_times(entry, model, args, kwargs, device, reps: int, export_reps: int) -> dict:
    out: dict = {}
    with torch.inference_mode():  # one settled eager forward, measured before any tracing touches the model
        _warm(lambda: model(*args, **kwargs), device, 5)
        out["forward"] = median_time(lambda: (model(*args, **kwargs), _sync(device)), 7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = None

        def do_bridge():
            nonlocal g
            g = bridge.trace(model, args, kwargs)

        out["bridge"] = median_time(do_bridge, reps)
        out["frontend"] = g.meta.get("frontend", "?")
        try:
            out["fx"] = median_time(lambda: torch.fx.symbolic_trace(model), reps)
        except Exception as e:  # noqa: BLE001 - fx cannot trace some models; bridge falls back to export
            out["fx"] = None
            out["fx_error"] = one_line(e)
        try:
            out["export"] = median_time(lambda: torch.export.export(model, args, kwargs), export_reps)
        except Exception as e:  # noqa: BLE001
            out["export"] = None
            out["export_error"] = one_line(e)
    return apply_budget(out)


def apply_budget(t: dict) -> dict:
    """bridge.trace within 2 x the frontend it used (plain fx.symbolic_trace keeps every torch.nn module whole, so
    it can succeed where bridge's tracer falls back to torch.export) + one eager forward."""
    base_name = "fx" if t["frontend"] == "fx" and t["fx"] is not None else "export"
    base = t.get(base_name)
    t["budget_base"] = base_name
    t["budget"] = TRACE_FACTOR * base + t["forward"] if base is not None else None
    t["trace_ok"] = t["budget"] is not None and t["bridge"] <= t["budget"]
    return t


def bench_entry(entry, device, args_ns) -> dict:
    res: dict = {"name": entry.name, "tags": sorted(entry.tags)}
    model = entry.make_model().to(device)
    for batch in args_ns.batches:
        args, kwargs = (to_device(x, device) for x in entry.make_inputs(batch))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gm = bridge.trace(model, args, kwargs).to_module()
        eager_s, gen_s = compare_latency(lambda: model(*args, **kwargs), lambda: gm(*args, **kwargs), device,
                                         warmup=args_ns.warmup, samples=args_ns.samples,
                                         min_sample_s=args_ns.min_sample_ms / 1000)
        res[f"b{batch}"] = {"eager_s": eager_s, "bridge_s": gen_s, "ratio": gen_s / eager_s}
    args, kwargs = (to_device(x, device) for x in entry.make_inputs(1))
    res["trace"] = trace_times(entry, model, args, kwargs, device, args_ns.trace_reps, args_ns.export_reps)
    return res


# ---- report ---------------------------------------------------------------------------------------
def _ms(s):
    return "n/a" if s is None else f"{s * 1e3:.3f}" if s < 0.01 else f"{s * 1e3:.1f}"


def machine_info(device) -> dict:
    info = {"date": datetime.date.today().isoformat(), "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "cpu": _cpu_name(), "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(), "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def summarize(results: list[dict], batches) -> dict:
    ratios = {b: [r[f"b{b}"]["ratio"] for r in results] for b in batches}
    all_ratios = [x for v in ratios.values() for x in v]
    trace_ok = [r["trace"]["trace_ok"] for r in results]
    over = [r["name"] for r in results if not r["trace"]["trace_ok"]]
    return {
        "ratio_median": {str(b): statistics.median(v) for b, v in ratios.items()},
        "ratio_median_all": statistics.median(all_ratios),
        "ratio_ok": statistics.median(all_ratios) <= RATIO_TARGET,
        "models_over_ratio": sorted({r["name"] for r in results for b in batches
                                     if r[f"b{b}"]["ratio"] > RATIO_TARGET}),
        "trace_ok_count": sum(trace_ok), "trace_count": len(trace_ok), "models_over_trace_budget": over,
    }


def print_table(results: list[dict], batches, info: dict, summary: dict) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover - rich is a dependency, but keep plain output possible
        Console = Table = None
    head = ["model"]
    for b in batches:
        head += [f"eager b{b} ms", f"bridge b{b} ms", f"ratio b{b}"]
    head += ["trace ms", "fx ms", "export ms", "fwd ms", "trace ≤ budget"]
    rows = []
    for r in results:
        row = [r["name"] + ("" if r["trace"]["frontend"] == "fx" else f" ({r['trace']['frontend']})")]
        for b in batches:
            x = r[f"b{b}"]
            row += [_ms(x["eager_s"]), _ms(x["bridge_s"]), f"{x['ratio']:.3f}"]
        t = r["trace"]
        ok = ("yes" if t["trace_ok"] else "NO") + (" (export)" if t["budget_base"] == "export" else "")
        row += [_ms(t["bridge"]), _ms(t["fx"]), _ms(t["export"]), _ms(t["forward"]), ok]
        rows.append(row)
    title = (f"bridge executor vs eager — {info['device']}"
             f"{' (' + info['gpu'] + ')' if 'gpu' in info else ''}, torch {info['torch']}, "
             f"{info['threads']} threads, {info['date']}")
    foot = ("ratio median (generated/eager): "
            + ", ".join(f"b{b} {v:.3f}" for b, v in summary["ratio_median"].items())
            + f", all {summary['ratio_median_all']:.3f} (target ≤ {RATIO_TARGET}: "
            + ("met" if summary["ratio_ok"] else "NOT met") + "); trace ≤ 2×base + forward for "
            + f"{summary['trace_ok_count']}/{summary['trace_count']} models")
    if Table is None:
        print(title)
        print(" | ".join(head))
        for row in rows:
            print(" | ".join(row))
        print(foot)
        return
    table = Table(title=title, caption=foot)
    for i, h in enumerate(head):
        table.add_column(h, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    Console(width=max(160, len(head) * 11)).print(table)


def markdown(results: list[dict], batches, info: dict, summary: dict) -> str:
    """The results as a markdown table (what docs/benchmarks.md records)."""
    head = ["model"]
    for b in batches:
        head += [f"eager b{b} (ms)", f"bridge b{b} (ms)", f"ratio b{b}"]
    head += ["bridge.trace (ms)", "fx.symbolic_trace (ms)", "export.export (ms)", "forward b1 (ms)",
             "trace within budget"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        t = r["trace"]
        row = [f"`{r['name']}`" + ("" if t["frontend"] == "fx" else f" ({t['frontend']})")]
        for b in batches:
            x = r[f"b{b}"]
            row += [_ms(x["eager_s"]), _ms(x["bridge_s"]), f"{x['ratio']:.3f}"]
        row += [_ms(t["bridge"]), _ms(t["fx"]), _ms(t["export"]), _ms(t["forward"]),
                ("yes" if t["trace_ok"] else "**no**") + (" (vs export)" if t["budget_base"] == "export" else "")]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="fewer repetitions (about a minute on a GPU machine)")
    p.add_argument("--json", metavar="PATH", help="write results and machine info as JSON")
    p.add_argument("--markdown", metavar="PATH", help="write the results table as markdown")
    p.add_argument("--models", help="comma-separated zoo names (default: every non-slow entry)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: min(4, cpu count))")
    p.add_argument("--batches", default="1,32")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    p.add_argument("--from-json", metavar="PATH", help="print (and --markdown) the results of an earlier --json run")
    ns = p.parse_args(argv)
    if ns.from_json:
        with open(ns.from_json) as f:
            data = json.load(f)
        batches = data["settings"]["batches"]
        results = [dict(r, trace=apply_budget(r["trace"])) for r in data["results"]]
        summary = summarize(results, batches)
        print_table(results, batches, data["machine"], summary)
        if ns.markdown:
            with open(ns.markdown, "w") as f:
                f.write(markdown(results, batches, data["machine"], summary) + "\n")
        return 0
    device = torch.device(ns.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA requested but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    torch.set_num_threads(ns.threads or min(4, os.cpu_count() or 1))
    ns.batches = [int(b) for b in ns.batches.split(",")]
    if ns.quick:
        ns.warmup, ns.samples, ns.min_sample_ms, ns.trace_reps, ns.export_reps = 5, 9, 3.0, 3, 1
    else:
        ns.warmup, ns.samples, ns.min_sample_ms, ns.trace_reps, ns.export_reps = 10, 21, 10.0, 5, 3
    if ns.models:
        entries = [zoo.get(n.strip()) for n in ns.models.split(",") if n.strip()]
    else:
        entries = zoo.entries(exclude_tags=("slow",))
    info = machine_info(device)
    # pay one-time costs (imports, fake-tensor and dispatcher caches) before anything is timed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warm = zoo.get("mlp")
        bridge.trace(warm.make_model().to(device), *(to_device(x, device) for x in warm.make_inputs(2)))
        torch.export.export(warm.make_model().to(device), *(to_device(x, device) for x in warm.make_inputs(2)))
        torch.fx.symbolic_trace(warm.make_model())
    results = []
    for e in track(entries, "benchmarking the zoo"):  # a bar on a terminal only
        t = time.perf_counter()
        try:
            results.append(bench_entry(e, device, ns))
        except Exception as ex:  # noqa: BLE001 - one model's failure should not hide the others
            print(f"{e.name}: FAILED {type(ex).__name__}: {str(ex).splitlines()[0] if str(ex) else ''}",
                  file=sys.stderr)
            continue
        print(f"  {e.name}: {time.perf_counter() - t:.1f}s", file=sys.stderr, flush=True)
    summary = summarize(results, ns.batches)
    print_table(results, ns.batches, info, summary)
    if ns.json:
        with open(ns.json, "w") as f:
            json.dump({"machine": info, "summary": summary, "results": results,
                       "settings": {k: getattr(ns, k) for k in ("quick", "warmup", "samples", "min_sample_ms",
                                                                 "trace_reps", "export_reps", "batches")}},
                      f, indent=1)
    if ns.markdown:
        with open(ns.markdown, "w") as f:
            f.write(markdown(results, ns.batches, info, summary) + "\n")
    ok = summary["ratio_ok"] and not summary["models_over_trace_budget"]
    return 0 if ok or not ns.strict else 1


if __name__ == "__main__":
    sys.exit(main())
