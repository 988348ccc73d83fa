"""The property test at scale: draw N random models (the strategy of tests/test_property.py) and check each on
every path against eager PyTorch on fresh inputs: ``g.run``, ``g.to_module()``, ``bridge.to_onnx`` in
onnxruntime, ``bridge.from_onnx(...).to_module()``, ``bridge.to_sequential`` (unstaged and 2..4 stages).

    python benchmarks/property_run.py [--examples N] [--seed S] [--save DIR] [--json out.json]

N defaults to ``BRIDGE_PROPERTY_EXAMPLES``, else 10,000. The draws come from hypothesis seed S (default 0), so a
count gives the same models on every run of the same code. A mismatch (or an error on a path) does not stop the
run: each is printed at the end with the drawn model's source and layers (and with ``--save``, written to DIR for
``tests.test_property.load``), and the script exits 1. Prints the examples run, the op vocabulary and how often
each op was drawn, the shapes of the graphs, the largest error per path, and the models with an output that
differs from eager beyond tolerance but within eager's own rounding noise (tests/test_property.py says how that is
measured) (docs/benchmarks.md, "Property test").
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections import Counter

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE)]  # the tests' strategy and helpers

from hypothesis import given, seed, settings  # noqa: E402

from bridge.views.sequential import chain_inputs  # noqa: E402
from tests import test_property as prop  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=int(os.environ.get("BRIDGE_PROPERTY_EXAMPLES", "10000")))
    ap.add_argument("--seed", type=int, default=0, help="hypothesis seed (default 0: the same models every run)")
    ap.add_argument("--save", help="a folder: write each failing or noisy model there (tests.test_property.load)")
    ap.add_argument("--json", help="write the results here")
    opts = ap.parse_args()
    if opts.save:
        os.makedirs(opts.save, exist_ok=True)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", "Using padding='same' with even kernel")  # torch's, from drawn Conv layers

    worst = {p: (0.0, 0.0) for p in prop.PATHS}  # over the paths within tolerance of eager
    worst_noisy = {p: (0.0, 0.0) for p in prop.PATHS}  # the paths that passed within eager's rounding noise
    ops, models_with, inputs, kinds, nodes = Counter(), Counter(), Counter(), Counter(), []
    shapes = Counter()
    failures: list[tuple[int, str, str, str]] = []
    noisy: list[tuple[int, list[str], str]] = []  # beyond tolerance of eager, within eager's own rounding noise
    count = [0]
    start = time.perf_counter()

    @seed(opts.seed)
    @settings(max_examples=opts.examples, **{**prop.SETTINGS, "derandomize": False})
    @given(prop.models())
    def run(drawn):
        i = count[0] = count[0] + 1
        def failed(path, e):
            failures.append((i, path, f"{type(e).__name__}: {e}", drawn.describe()))
            if opts.save:
                prop.save(drawn, os.path.join(opts.save, f"failure_{i}.pt"))

        checked = prop.check_paths(drawn, failed)
        g = checked.graph
        if checked.rounding_noise:
            noisy.append((i, checked.rounding_noise, drawn.describe()))
            if opts.save:
                prop.save(drawn, os.path.join(opts.save, f"noise_{i}.pt"))
        for p, err in checked.errors.items():
            noise = any(w.split("[")[0] == p for w in checked.rounding_noise)
            into = worst_noisy if noise else worst
            into[p] = tuple(map(max, zip(into[p], err)))
        ops.update(drawn.ops)
        models_with.update(set(drawn.ops))
        inputs[len(drawn.example)] += 1
        ret = drawn.source.rsplit("return ", 1)[1]
        kinds[{"(": "tuple", "{": "dict"}.get(ret[0], "tensor")] += 1
        if g is not None:
            nodes.append(len(g.nodes))
            shapes["chain" if chain_inputs(g) is not None else "DAG"] += 1
        if i % 500 == 0:
            print(f"  {i} models, {time.perf_counter() - start:.0f} s, {len(failures)} failures", flush=True)

    run()
    wall = time.perf_counter() - start
    n = count[0]
    print(f"\nexamples run: {n} models in {wall:.0f} s ({wall / max(n, 1) * 1000:.0f} ms each); "
          f"tolerance atol {prop.ATOL} * max(1, max|ref|) + rtol {prop.RTOL} * |ref| "
          f"(+ {prop.NOISE_FACTOR} x eager's rounding spread)")
    print(f"inputs per model: {dict(sorted(inputs.items()))}; outputs: {dict(kinds)}; graphs: {dict(shapes)}, "
          f"nodes median {statistics.median(nodes) if nodes else 0}, max {max(nodes, default=0)}")
    print("\n| op | drawn | models using it |\n|---|---|---|")
    for op in prop.VOCABULARY:
        print(f"| {op} | {ops[op]} | {models_with[op]} |")
    print("\nlargest errors of the paths within tolerance (the rounding-noise cases are listed below):")
    print("| path | max abs error | max error / max(1, max|ref|) | mismatches |\n|---|---|---|---|")
    per_path = Counter(p for _, p, _, _ in failures)
    for p in prop.PATHS:
        print(f"| {p} | {worst[p][0]:.2e} | {worst[p][1]:.2e} | {per_path[p]} |")
    for i, where, desc in noisy:
        print(f"\n==== model {i}: {', '.join(where)} differ from eager beyond tolerance, within eager's own "
              f"rounding noise\n{desc}")
    print(f"\n{len(noisy)} models with an output that is amplified rounding noise (passed within that noise); "
          "their largest errors: " + ", ".join(f"{p} {e[0]:.2e} abs, {e[1]:.2e} scaled"
                                               for p, e in worst_noisy.items() if e[0]))
    for i, path, err, desc in failures:
        print(f"\n==== model {i}, path {path}: {err}\n{desc}")
    print(f"\n{len(failures)} mismatches in {n} models")
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump({"examples": n, "seconds": wall, "max_error": worst, "max_error_noisy": worst_noisy,
                       "ops": dict(ops),
                       "rounding_noise": [{"model": i, "paths": w, "description": d} for i, w, d in noisy],
                       "models_with": dict(models_with), "inputs": dict(inputs), "outputs": dict(kinds),
                       "graphs": dict(shapes), "nodes_median": statistics.median(nodes) if nodes else 0,
                       "nodes_max": max(nodes, default=0),
                       "failures": [{"model": i, "path": p, "error": e, "description": d}
                                    for i, p, e, d in failures],
                       "torch": torch.__version__, "python": platform.python_version()}, f, indent=1)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
