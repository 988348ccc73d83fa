"""Run the whole corpus and write docs/coverage.md (the family x path table), with one JSON line per model on
stdout (errors, timings). Each model runs in a fresh process, so one model's memory or failure does not touch the
next.

    python -m tests.corpus [--write docs/coverage.md] [--only ID ...]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys

import torch

from . import ALL, PATHS, available

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MARK = {"ok": "✓"}
HEAD = """# Real-model coverage

Every model of the corpus (`tests/corpus`) goes through every path bridge offers, against eager PyTorch on a
fresh input (one the trace never saw): **trace** (`bridge.trace`, `g.check()`, no opaque call), **run**
(`g.run`), **module** (`g.to_module()`), **onnx** (`bridge.to_onnx`, then `onnx.checker.check_model(...,
full_check=True)` and every node a standard op of its opset), **ort** (the file in onnxruntime) and **import**
(`bridge.from_onnx(file).run`). Tolerance: `|got - ref| <= 1e-5 x max|ref| + 1e-5 x |ref|` per output tensor,
relative to the output's own scale however small (random weights make some outputs tiny: EfficientNet's logits
are about 1e-14), unless the model's entry gives another with its reason. Weights are random
(`torch.manual_seed(0)`; a weight the model's init leaves all zero, as ViT heads, is drawn at random too);
transformers are tiny configs of the real architectures; torchvision and timm models are full size, on small
images.

`pytest tests/test_corpus.py` checks every entry (models marked slow run with `-m slow`, as CI does); this page is
written by `python -m tests.corpus --write docs/coverage.md` (or from the rows a test run leaves with
`BRIDGE_CORPUS_ROWS=DIR`, `--rows DIR`), and a test checks that it lists exactly the corpus. The output scale is the
largest output magnitude on the fresh input, which the tolerance scales with.
"""


def run_one(model_id: str) -> dict:
    """One model's check in a fresh process."""
    code = ("import json, sys, torch; torch.set_num_threads(%d); from tests import corpus; "
            "m = next(m for m in corpus.ALL if m.id == sys.argv[1]); r = corpus.check(m); "
            "print('@@' + json.dumps({k: v for k, v in r.items() if not k.endswith('_trace')}))"
            % torch.get_num_threads())
    p = subprocess.run([sys.executable, "-c", code, model_id], capture_output=True, text=True, cwd=ROOT)
    for line in p.stdout.splitlines():
        if line.startswith("@@"):
            return json.loads(line[2:])
    return {"model": model_id, "ok": False, **{k: "crashed" for k in PATHS},
            "error": (p.stderr.strip().splitlines() or ["no output"])[-1]}


def table(rows: list[dict]) -> str:
    import importlib.metadata as md

    versions = ", ".join(f"{p} {md.version(p)}" for p in ("torch", "torchvision", "timm", "transformers", "onnx",
                                                             "onnxruntime"))
    lines = [HEAD, f"Measured {datetime.date.today()} with {versions}: {sum(r['ok'] for r in rows)} of {len(rows)} "
             "models pass every path.", ""]
    for source in ("torchvision", "timm", "transformers"):
        part = [r for r in rows if r["model"].startswith(source + ":")]
        lines += [f"## {source} ({len(part)} models, {len({r['family'] for r in part})} families)", "",
                  "| model | family | nodes | " + " | ".join(PATHS) + " | output scale | onnxruntime max abs err | "
                  "seconds |", "|---|---|---|" + "---|" * len(PATHS) + "---|---|---|"]
        for r in sorted(part, key=lambda r: (r["family"], r["model"])):
            cells = [MARK.get(r.get(p), "✗") for p in PATHS]
            err = r.get("ort_err")
            scale = r.get("scale")
            lines.append(f"| `{r['model']}` | {r['family']} | {r.get('nodes', '')} | " + " | ".join(cells)
                         + f" | {'' if scale is None else f'{scale:.1e}'} | {'' if err is None else f'{err:.1e}'} | "
                         f"{r.get('total_s', '')} |")
        lines.append("")
    failed = [r for r in rows if not r["ok"]]
    if failed:
        lines += ["## Failures", ""] + [f"- `{r['model']}`: " + "; ".join(f"{p}: {r[p]}" for p in PATHS
                                                                        if r[p] != "ok") for r in failed] + [""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--write", default=None, help="write the markdown table here (docs/coverage.md)")
    ap.add_argument("--only", nargs="*", default=None, help="model ids or names to run (default: all)")
    ap.add_argument("--rows", default=None, help="take the rows a test run wrote here (BRIDGE_CORPUS_ROWS=DIR "
                                                 "pytest tests/test_corpus.py) instead of running the models")
    ns = ap.parse_args()
    rows = []
    if ns.rows:
        for m in ALL:
            path = os.path.join(ns.rows, m.id.replace(":", "__") + ".json")
            rows.append(json.load(open(path)) if os.path.exists(path) else
                        {"model": m.id, "family": m.family, "ok": False, **{k: "not run" for k in PATHS}})
        if ns.write:
            with open(ns.write, "w") as f:
                f.write(table(rows))
        return
    for m in ALL:
        if ns.only and m.id not in ns.only and m.name not in ns.only:
            continue
        if not available(m):
            print(json.dumps({"model": m.id, "skipped": f"{m.source} not installed"}), flush=True)
            continue
        row = run_one(m.id)
        print(json.dumps(row), flush=True)
        rows.append(row)
    if ns.write:
        with open(ns.write, "w") as f:
            f.write(table(rows))


if __name__ == "__main__":
    main()
