"""Every PyTorch OpInfo (``torch.testing._internal.common_methods_invocations.op_db``) whose function or method
bridge claims, on the database's own CPU samples, through every path: trace -> run, ONNX in onnxruntime, and import
back, each against eager. The checks and tolerances are those of tests/ops/test_opinfo.py (imported from there);
this prints the outcome per path and every failure with its first reason, marking those that
bridge/ops/opinfo_exclusions.py lists. Needs ``expecttest`` (torch's test utilities).

    python benchmarks/opinfo.py [--samples 3] [--dtypes float32,int64,bool] [--json out.json] [name ...]
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bridge.ops import opinfo_exclusions  # noqa: E402
from tests.ops.test_opinfo import check, claimed, exclusion_key, opinfo_name, samples  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("names", nargs="*")
    ap.add_argument("--samples", type=int, default=3, help="samples per OpInfo and dtype (0: all)")
    ap.add_argument("--dtypes", default="float32")
    ap.add_argument("--json", default=None)
    ns = ap.parse_args()
    torch.set_num_threads(1)
    dtypes = [getattr(torch, d) for d in ns.dtypes.split(",")]
    ops = [oi for oi in claimed() if not ns.names or opinfo_name(oi) in ns.names or oi.name in ns.names]
    per_path: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    failures: dict[str, dict[str, str]] = {}
    for oi in ops:
        for dtype in dtypes:
            key = exclusion_key(opinfo_name(oi), dtype)
            for k, sample in enumerate(samples(oi, dtype, limit=ns.samples or None)):
                for path, r in check(oi, sample).items():
                    per_path[path][r if r in ("ok", "not reached") else "fail"] += 1
                    if r not in ("ok", "not reached"):
                        failures.setdefault(key, {}).setdefault(path, f"sample {k}: {r}")
    print(f"{len(ops)} OpInfos bridge claims, up to {ns.samples or 'all'} samples each of {ns.dtypes}")
    for path, c in per_path.items():
        print(f"  {path:8s} " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())))
    print(f"{len(failures)} OpInfos (name:dtype) with a failure (* excluded in bridge/ops/opinfo_exclusions.py):")
    for name, r in sorted(failures.items()):
        ex = opinfo_exclusions.EXCLUDED.get(name, {})
        print(f"  {name}: " + "; ".join(f"{'*' if p in ex else ''}{p}: {w}" for p, w in r.items()))
    if ns.json:
        with open(ns.json, "w") as f:
            json.dump({"per_path": per_path, "failures": failures}, f, indent=1)


if __name__ == "__main__":
    main()
