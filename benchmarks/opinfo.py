"""Every PyTorch OpInfo (``torch.testing._internal.common_methods_invocations.op_db``) whose function or method
bridge claims, on the database's own float32 CPU samples, through every path: trace -> run, ONNX in onnxruntime,
and import back, each against eager (tolerance 1e-5 x max(1, scale) + 1e-4 relative, as the tests use). Prints
the outcome per path and the ops that fail, with the first reason. Needs ``expecttest`` (torch's test utilities).

    python benchmarks/opinfo.py [--samples 3] [--json out.json] [name ...]
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import warnings

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import bridge  # noqa: E402
from bridge.backends.ort import session  # noqa: E402
from bridge.ops import registry  # noqa: E402
from tests.helpers import Fn, max_error  # noqa: E402

warnings.filterwarnings("ignore")
TOL = 1e-4


def claimed(op_db):
    """The OpInfos whose function or Tensor method maps to a canonical op."""
    registry.get("relu")
    out = []
    for oi in op_db:
        mv = getattr(oi, "method_variant", None)
        if (oi.op is not None and registry.for_function(oi.op)) or \
                (mv is not None and getattr(mv, "__name__", None) and registry.for_method(mv.__name__)):
            out.append(oi)
    return out


def _leaves(o):
    return [t for t in torch.utils._pytree.tree_flatten(o)[0] if isinstance(t, torch.Tensor)]


def check(oi, sample) -> dict[str, str]:
    """Outcome per path: "ok", or why not."""
    tensors = [sample.input, *sample.args]
    ti = [i for i, a in enumerate(tensors) if isinstance(a, torch.Tensor)]
    consts = list(tensors)

    def call(*xs):
        a = list(consts)
        for i, x in zip(ti, xs):
            a[i] = x
        return oi.op(*a, **sample.kwargs)

    inputs = tuple(tensors[i] for i in ti)
    if not inputs:
        return {"trace": "skip: no tensor input"}
    model = Fn(call)
    with torch.no_grad():
        ref = model(*inputs)
    out: dict[str, str] = {}
    try:
        g = bridge.trace(model, inputs)
    except Exception as e:  # noqa: BLE001 - a measurement: every failure is recorded
        return {"trace": f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"}
    if g.opaque_nodes():
        out["opaque"] = ", ".join(sorted({str(n.args.get('target')) for n in g.opaque_nodes()}))
    try:
        err = max(max_error(a, b) for a, b in zip(_leaves(g.run(*inputs)), _leaves(ref))) if _leaves(ref) else 0
        out["run"] = "ok" if err <= TOL else f"mismatch {err:.1e}"
    except Exception as e:  # noqa: BLE001
        out["run"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
    try:
        proto = bridge.to_onnx(g)
        sess = session(proto)
        got = sess.run(None, {i.name: x.numpy() for i, x in zip(sess.get_inputs(), inputs)})
        err = max((max_error(torch.from_numpy(a), b) for a, b in zip(got, _leaves(ref))), default=0)
        out["onnx"] = "ok" if err <= TOL else f"mismatch {err:.1e}"
        back = bridge.from_onnx(proto).to_module()
        err = max((max_error(a, b) for a, b in zip(_leaves(back(*inputs)), _leaves(ref))), default=0)
        out["import"] = "ok" if err <= TOL else f"mismatch {err:.1e}"
    except Exception as e:  # noqa: BLE001
        key = "onnx" if "onnx" not in out else "import"
        out[key] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("names", nargs="*")
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--json", default=None)
    ns = ap.parse_args()
    torch.set_num_threads(1)
    from torch.testing._internal.common_methods_invocations import op_db

    ops = [oi for oi in claimed(op_db) if not ns.names or oi.name in ns.names]
    per_path: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    failures: dict[str, dict[str, str]] = {}
    for oi in ops:
        if torch.float32 not in oi.supported_dtypes("cpu"):
            per_path["all"]["skip: no float32"] += 1
            continue
        for k, sample in enumerate(oi.sample_inputs("cpu", torch.float32, requires_grad=False)):
            if k >= ns.samples:
                break
            res = check(oi, sample)
            for path, r in res.items():
                per_path[path]["ok" if r == "ok" else "fail"] += 1
                if r != "ok":
                    failures.setdefault(f"{oi.name}{'.' + oi.variant_test_name if oi.variant_test_name else ''}",
                                        {}).setdefault(path, r)
    print(f"{len(ops)} OpInfos bridge claims, up to {ns.samples} float32 samples each")
    for path, c in per_path.items():
        print(f"  {path:8s} " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())))
    print(f"{len(failures)} OpInfos with a failure:")
    for name, r in sorted(failures.items()):
        print(f"  {name}: " + "; ".join(f"{p}: {w}" for p, w in r.items()))
    if ns.json:
        with open(ns.json, "w") as f:
            json.dump({"per_path": per_path, "failures": failures}, f, indent=1)


if __name__ == "__main__":
    main()
