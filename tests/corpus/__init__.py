"""The real-model corpus (issue 12): architectures as their users build them, from torchvision, timm and HuggingFace
transformers (random weights; transformers in tiny configs), each checked on every path bridge offers:

    trace   bridge.trace on an example input, g.check()
    run     g.run on a fresh input (one the trace never saw) against eager PyTorch
    module  g.to_module() on the fresh input against eager
    onnx    bridge.to_onnx; onnx.checker.check_model(full_check=True); every node a standard op of its opset
    ort     the file in onnxruntime on the fresh input against eager (bridge.verify)
    import  bridge.from_onnx(file).run on the fresh input against eager

Tolerance: ``|got - ref| <= atol * max|ref| + rtol * |ref|`` per output tensor, atol = rtol = 1e-5, unless an
entry says otherwise with its reason: relative to the output's own scale, not to max(1, scale) as the unit tests
do, because random weights make some real models' outputs tiny (EfficientNet's logits are about 1e-14), and an
absolute 1e-5 would let anything pass there. Weights a model's init leaves all zero (ViT and MLP-Mixer heads)
are drawn at random (``informative``), else the output would be zero whatever the body computes.

Entries live in one file per source (``torchvision.py``, ``timm.py``, ``hf.py``); ``ALL`` collects them.
``tests/test_corpus.py`` runs them (big models marked slow); ``python -m tests.corpus`` runs them all and writes
the coverage table of docs/coverage.md.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
import time
import traceback
from typing import Any, Callable

import torch

PATHS = ("trace", "run", "module", "onnx", "ort", "import")


@dataclasses.dataclass(frozen=True)
class Model:
    source: str       # "torchvision" | "timm" | "transformers": the package that must be importable
    name: str         # the model's name in its package (torchvision/timm) or a short name (transformers)
    family: str       # the architecture family, as the docs table groups it
    build: Callable[[], torch.nn.Module]                          # random weights, eval mode
    inputs: Callable[[torch.Generator], tuple[tuple, dict]]       # (args, kwargs) drawn from the generator
    slow: bool = False          # too big or too slow for the default test run (CI runs it in the slow job)
    atol: float = 1e-5          # scaled by max(1, max|ref|)
    rtol: float = 1e-5
    ort_atol: float | None = None  # onnxruntime's own kernels (conv algorithms, fused attention) may differ more
    why_tol: str = ""           # the reason when a tolerance is not the default one

    @property
    def id(self) -> str:
        return f"{self.source}:{self.name}"


def informative(model: torch.nn.Module) -> torch.nn.Module:
    """Random weights that make the parity check mean something: an all-zero Linear or Conv weight (the head of
    torchvision's ViT, timm's MLP-Mixer, ResMLP, gMLP, Sequencer, Hiera) gets ``N(0, 1/fan_in)``."""
    with torch.no_grad():
        for m in model.modules():
            w = getattr(m, "weight", None)
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)) and \
                    isinstance(w, torch.Tensor) and not w.any():
                torch.nn.init.normal_(w, std=(w[0].numel()) ** -0.5)
    return model


def available(m: Model) -> bool:
    """Whether ``m``'s package (its source) is installed."""
    import importlib.util

    return importlib.util.find_spec(m.source) is not None


def hf_model(name: str, seed: int = 0) -> tuple[Model, torch.nn.Module, tuple, dict]:
    """The HuggingFace entry ``name`` for a test: ``(entry, informative model, args, kwargs)`` with inputs drawn
    from ``seed``; the test is skipped where transformers is not installed."""
    import pytest

    m = next(e for e in _all() if e.source == "transformers" and e.name == name)
    if not available(m):
        pytest.skip("transformers not installed")
    args, kwargs = m.inputs(torch.Generator().manual_seed(seed))
    return m, informative(m.build()), args, kwargs


def standard_op_problems(proto) -> list[str]:
    """Nodes of ``proto`` (and of its functions and subgraphs) whose op is not a standard one of the opset the file
    imports for its domain: an op bridge invented would be listed here."""
    import onnx

    opsets = {o.domain or "ai.onnx": o.version for o in proto.opset_import}
    bad = []

    def walk(graph):
        for n in graph.node:
            domain = n.domain or "ai.onnx"
            if domain not in ("ai.onnx", "ai.onnx.ml"):
                bad.append(f"{n.name}: {domain}.{n.op_type} is not in a standard domain")
            else:
                try:
                    onnx.defs.get_schema(n.op_type, opsets.get(domain, 1), "" if domain == "ai.onnx" else domain)
                except onnx.defs.SchemaError:
                    bad.append(f"{n.name}: {n.op_type} has no schema at opset {opsets.get(domain)}")
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)
                for sub in a.graphs:
                    walk(sub)

    walk(proto.graph)
    if proto.functions:
        bad.extend(f"function {f.domain}.{f.name}: bridge writes no model-local functions" for f in proto.functions)
    return bad


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300] if text else ''}"


def check(m: Model, workdir: str | None = None) -> dict[str, Any]:
    """Every path of ``m``; a dict with ``ok`` (all paths passed), per path ``"ok"`` or the first line of what
    failed, the error of each numeric path (max abs difference), and timings. Stops at the first failing path whose
    result a later path needs (no file, no ONNX paths)."""
    import onnx

    import bridge
    from tests.helpers import assert_same_outputs, max_error, tensor_leaves

    row: dict[str, Any] = {"model": m.id, "family": m.family}
    for p in PATHS:
        row[p] = "not run"
    start = time.perf_counter()
    model = informative(m.build())
    args, kwargs = m.inputs(torch.Generator().manual_seed(0))
    fresh_args, fresh_kwargs = m.inputs(torch.Generator().manual_seed(1))  # parity on inputs the trace never saw
    with torch.no_grad():
        ref = model(*fresh_args, **fresh_kwargs)
    row["build_s"] = round(time.perf_counter() - start, 2)
    floats = [t for t in tensor_leaves(ref) if t.is_floating_point() and t.numel()]
    row["scale"] = max((float(t.abs().max()) for t in floats), default=0.0)  # what the tolerance scales with

    def compare(path: str, got, atol: float | None = None) -> bool:
        try:
            row[f"{path}_err"] = max_error(got, ref)
            assert_same_outputs(got, ref, atol=atol if atol is not None else m.atol, rtol=m.rtol, scale_floor=0.0)
        except AssertionError as e:
            row[path] = _first_line(e)
            return False
        row[path] = "ok"
        return True

    failed = object()

    def attempt(path: str, fn) -> Any:
        """``fn()``, or ``failed`` with the path's row entry saying why."""
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - reported per path
            row[path] = _first_line(e)
            row[f"{path}_trace"] = traceback.format_exc(limit=-6)
            return failed

    t = time.perf_counter()
    g = attempt("trace", lambda: bridge.trace(model, args, kwargs))
    row["trace_s"] = round(time.perf_counter() - t, 2)
    if g is failed or attempt("trace", g.check) is failed:
        return _done(row)
    row["trace"], row["nodes"] = "ok", len(g.nodes)
    row["opaque"] = sorted({f"{getattr(n.target, '__name__', n.target)}: {n.meta.get('why_opaque', '')}"
                            for n in g.nodes if n.op == "opaque"})
    if row["opaque"]:
        row["trace"] = f"opaque calls: {', '.join(row['opaque'])}"
    with torch.no_grad():
        if (got := attempt("run", lambda: g.run(*fresh_args, **fresh_kwargs))) is not failed:
            compare("run", got)
        mod = attempt("module", g.to_module)
        if mod is not failed and (got := attempt("module", lambda: mod(*fresh_args, **fresh_kwargs))) is not failed:
            compare("module", got)
    with tempfile.TemporaryDirectory(dir=workdir) as d:
        path = os.path.join(d, "model.onnx")
        t = time.perf_counter()
        if attempt("onnx", lambda: bridge.to_onnx(g, path)) is failed:
            return _done(row)
        row["export_s"] = round(time.perf_counter() - t, 2)

        def checked():
            onnx.checker.check_model(path, full_check=True)
            problems = standard_op_problems(onnx.load(path, load_external_data=False))
            if problems:
                raise AssertionError(f"{len(problems)} non-standard nodes: {'; '.join(problems[:5])}")
            row["onnx"] = "ok"

        def in_ort():
            # verify scales atol by max(1, scale): scaled here by the output's own scale instead
            atol = (m.ort_atol if m.ort_atol is not None else m.atol) * min(1.0, row["scale"])
            rep = bridge.verify(model, path, fresh_args, fresh_kwargs, localize=False, atol=atol, rtol=m.rtol)
            row["ort_err"] = rep.max_abs
            if not rep.ok:
                raise AssertionError(str(rep).splitlines()[0] + f" (max abs {rep.max_abs:.3e})")
            row["ort"] = "ok"

        attempt("onnx", checked)
        attempt("ort", in_ort)
        t = time.perf_counter()
        back = attempt("import", lambda: bridge.from_onnx(path))
        row["import_s"] = round(time.perf_counter() - t, 2)
        if back is not failed:
            with torch.no_grad():
                got = attempt("import", lambda: back.run(*fresh_args, **fresh_kwargs))
            if got is not failed:
                compare("import", _restructure(got, ref))
    return _done(row, start)


def _restructure(got, ref):
    """An imported file returns its outputs in the file's terms (a dict where the model returned a ModelOutput),
    in bridge's flattening order: put its tensors in ``ref``'s structure (the structure itself is checked on the
    run and module paths)."""
    from bridge.ir import structure

    leaves, spec = structure.flatten(ref, lambda o: isinstance(o, torch.Tensor))
    flat = structure.flatten(got, lambda o: isinstance(o, torch.Tensor))[0]
    if len(flat) != len(leaves):
        return got  # the comparison names the mismatch
    return structure.unflatten(spec, flat)


def _done(row: dict, start: float | None = None) -> dict:
    if start is not None:
        row["total_s"] = round(time.perf_counter() - start, 2)
    row["ok"] = all(row[p] == "ok" for p in PATHS)
    return row


def _all() -> list[Model]:
    from . import hf, timm, torchvision

    return torchvision.MODELS + timm.MODELS + hf.MODELS


def __getattr__(name: str):
    if name == "ALL":
        return _all()
    raise AttributeError(name)
