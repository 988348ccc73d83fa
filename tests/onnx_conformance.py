"""onnx's own node test cases (``onnx.backend.test``, the suite every ONNX backend runs) through bridge's ONNX
backend (bridge/backends/onnx_backend.py: ``from_onnx`` + ``to_module``), with the same comparison onnx's runner
makes (``Runner.assert_similar_outputs``: the case's rtol/atol, dtypes and shapes).

The cases bridge does not pass yet are listed, each with its reason, in ``EXCLUSIONS_FILE``; the list only
shrinks: tests/test_onnx_conformance.py fails when an excluded case passes (take it off the list) and runs every
other case through onnx's ``BackendTest`` runner.

    python -m tests.onnx_conformance              # pass count and the failures by reason
    python -m tests.onnx_conformance --write      # rewrite the exclusion list (and the docs' table) from a run
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import warnings

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXCLUSIONS_FILE = os.path.join(_ROOT, "tests", "golden", "onnx_conformance_exclusions.json")
TABLE_FILE = os.path.join(_ROOT, "docs", "onnx_conformance.md")


def node_cases() -> list:
    """onnx's node test cases (``TestCase`` with an in-memory model and data sets)."""
    from onnx.backend.test.case import node
    from onnx.backend.test.loader import load_model_tests

    node._TargetOpType = None  # onnx's collector is global; a filter left set would drop the other ops' cases
    with warnings.catch_warnings():  # the cast cases' generators overflow on purpose
        warnings.simplefilter("ignore")
        return load_model_tests(kind="node")


def reason(e: BaseException) -> str:
    """Why a case fails, in one line: the op types without an importer, else the error's first line (without
    the model's name)."""
    from bridge.errors import UnsupportedOpError

    if isinstance(e, UnsupportedOpError) and getattr(e, "nodes", None):
        return "no importer for " + ", ".join(sorted(set(e.nodes)))
    lines = str(e).strip().splitlines()
    first = lines[0] if lines else ""
    if first.startswith("Not equal to tolerance") and len(lines) > 4:  # numpy's message: the mismatch line
        first = f"{first}; " + next((ln.strip() for ln in lines if ln.strip().startswith("Mismatched")), "")
    first = re.sub(r"<ModelProto>:? ?|from <ModelProto>", "", first).split(" What to do")[0]
    first = first.split(", which bridge")[0].split(". Convert")[0].strip()
    return f"{type(e).__name__}: {first}"[:240]


def run_case(case) -> str | None:
    """None when bridge's backend passes ``case`` as onnx's runner checks it; else the reason it fails."""
    from onnx.backend.test.runner import Runner, _normalize_tensor

    from bridge.backends import onnx_backend

    try:
        rep = onnx_backend.prepare(case.model)
        for inputs, refs in case.data_sets:
            got = rep.run([_normalize_tensor(x) for x in inputs])
            Runner.assert_similar_outputs([_normalize_tensor(r) for r in refs], got, rtol=case.rtol,
                                          atol=case.atol, model_dir=None)
    except Exception as e:  # noqa: BLE001 - every failure is a reason on the list
        return reason(e)
    return None


def run_all(cases: list | None = None) -> dict[str, str | None]:
    """Each case's ``run_case`` (onnx's node cases unless ``cases`` are given), with a progress line on a
    terminal (``bridge.progress``): a full run takes minutes."""
    from bridge import progress

    with warnings.catch_warnings(), progress.job("onnx conformance"):
        warnings.simplefilter("ignore")
        if cases is None:
            progress.step("loading onnx's node cases")
            cases = node_cases()
        return {c.name: run_case(c) for c in progress.track(cases, "node cases")}


def load_exclusions() -> dict[str, str]:
    with open(EXCLUSIONS_FILE, encoding="utf-8") as f:
        return json.load(f)


def op_type(case) -> str:
    """The op a node case tests: its model's first node's (domain-qualified) op type."""
    node = case.model.graph.node[0]
    return f"{node.domain}::{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type


def table(cases, excluded: dict[str, str]) -> str:
    """docs/onnx_conformance.md: the pass count, then per op type the cases passed and why the others fail. An
    ``_expanded`` case (a function op written out in primitive ops) counts for the op of its unexpanded case."""
    by_name = {c.name: c for c in cases}
    by_op: dict[str, list] = collections.defaultdict(list)
    for c in cases:
        base = by_name.get(re.sub(r"_expanded(_ver\d+)?$", "", c.name), c)
        by_op[op_type(base)].append(c.name)
    passed = sum(1 for c in cases if c.name not in excluded)
    lines = ["# ONNX conformance: onnx's node test cases", "",
             "Written by `python -m tests.onnx_conformance --write` (tests/onnx_conformance.py); "
             "tests/test_onnx_conformance.py checks that it matches the exclusion list and runs every passing case "
             "through onnx's `BackendTest` runner over `bridge.backends.onnx_backend` (`from_onnx` + `to_module`, "
             "compared with each case's rtol/atol as onnx's runner does).", "",
             f"**{passed} of {len(cases)} cases pass** over {len(by_op)} op types.", "",
             "| op type | passed | cases | why the others fail (count) |", "|---|---|---|---|"]
    for op in sorted(by_op, key=str.lower):
        names = by_op[op]
        whys = collections.Counter(excluded[n] for n in names if n in excluded)
        why = "; ".join(f"{w} ({k})" for w, k in whys.most_common(3)) + ("; ..." if len(whys) > 3 else "")
        ok = sum(1 for n in names if n not in excluded)
        lines.append(f"| {op} | {ok} | {len(names)} | {why.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="rewrite the exclusion list from this run")
    a = ap.parse_args(argv)
    from bridge import progress

    with progress.job("onnx conformance"):  # run_all's line, from the loading of the cases on
        progress.step("loading onnx's node cases")
        cases = node_cases()
        results = run_all(cases)
    failed = {k: v for k, v in results.items() if v is not None}
    print(f"{len(results) - len(failed)} of {len(results)} node cases pass")
    for why, n in collections.Counter(failed.values()).most_common(40):
        print(f"{n:5d}  {why}")
    if a.write:
        with open(EXCLUSIONS_FILE, "w", encoding="utf-8") as f:
            json.dump(dict(sorted(failed.items())), f, indent=0, sort_keys=True)
            f.write("\n")
        with open(TABLE_FILE, "w", encoding="utf-8") as f:
            f.write(table(cases, failed))
        print(f"wrote {EXCLUSIONS_FILE} and {TABLE_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
