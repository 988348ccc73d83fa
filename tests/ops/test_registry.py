"""Every op of the registry on every path it claims.

For each (op, spelling) pair (torch function, Tensor method, nn.Module class) a tiny module calls that spelling
(see ``op_samples.py``); it is traced with the fx frontend and must give a graph that

- holds a node of that op (and no opaque node), passes ``g.check()``, and whose ``opdef.flops(node)`` is a
  non-negative int;
- runs (``g.run``) and generates a module (``g.to_module()``) whose outputs equal eager PyTorch's, with the same
  structure, within ``atol = 1e-5 * max(1, output scale)`` (random ops: same shapes and dtypes).

The aten spellings are checked through the torch.export frontend when it is present (``test_op_export``).
"""
from __future__ import annotations

import pytest
import torch

import bridge
import bridge.ops
from tests.ops.samples import SAMPLES, cases, spelling_key, spellings

CASES = cases()
RTOL = 1e-5


def _inputs(case):
    torch.manual_seed(0)
    return case.inputs()


def _model(case):
    torch.manual_seed(1)
    return case.make()


def _scale(t: torch.Tensor) -> float:
    t = t.detach()
    if not (t.is_floating_point() or t.is_complex()) or t.numel() == 0:
        return float(t.abs().max()) if t.numel() and t.dtype != torch.bool else 1.0
    finite = t[torch.isfinite(t)]
    return float(finite.abs().max()) if finite.numel() else 1.0


def assert_same(actual, expected, random: bool, where: str = "output") -> None:
    """Same structure, and tensors equal within tolerance (or same shape/dtype for random outputs)."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor), f"{where}: expected a tensor, got {type(actual).__name__}"
        if random:
            assert (actual.shape, actual.dtype) == (expected.shape, expected.dtype), \
                f"{where}: {tuple(actual.shape)} {actual.dtype} != {tuple(expected.shape)} {expected.dtype}"
            return
        atol = 1e-5 * max(1.0, _scale(expected))
        torch.testing.assert_close(actual, expected, rtol=RTOL, atol=atol, equal_nan=True,
                                   msg=lambda m: f"{where}: {m}")
    elif isinstance(expected, (tuple, list)):
        if isinstance(expected, torch.Size):
            assert isinstance(actual, tuple), f"{where}: expected a size tuple, got {type(actual).__name__}"
        else:
            assert type(actual) is type(expected), \
                f"{where}: expected {type(expected).__name__}, got {type(actual).__name__}"
        assert len(actual) == len(expected), f"{where}: {len(actual)} items instead of {len(expected)}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_same(a, e, random, f"{where}[{i}]")
    else:
        assert type(actual) is type(expected) and actual == expected, f"{where}: {actual!r} != {expected!r}"


def _params():
    out = []
    for c in CASES:
        marks = [pytest.mark.xfail(reason=c.xfail, strict=True)] if c.xfail else []
        out.append(pytest.param(c, id=c.id, marks=marks))
    return out


@pytest.mark.parametrize("case", _params())
def test_op_spelling(case):
    if case.skip:
        pytest.skip(case.skip)
    opdef = bridge.ops.get(case.op)
    model = _model(case)
    g = bridge.trace(model, _inputs(case), frontend="fx", dynamic=case.dynamic)
    g.check()

    nodes = g.find(case.op)
    if case.op != "opaque":
        why = {n.name: n.meta.get("why_opaque") for n in g.opaque_nodes()}
        assert not why, f"{case.key} became opaque: {why}\n{g}"
    assert nodes or case.folds, f"{case.key}: no {case.op!r} node in the graph\n{g}"
    if nodes and case.kind in ("function", "method") and not str(case.target).startswith("__"):
        # the spelling itself was mapped (C-level dunders reach fx as operators: x.__radd__(y) is y + x)
        assert any(_same_target(n.target, case.target) for n in nodes), \
            f"{case.key}: the {case.op!r} nodes come from {[n.target for n in nodes]}, not from this spelling"
    for node in nodes:
        flops = opdef.flops(node)
        assert type(flops) is int and flops >= 0, f"flops of {node.describe()} = {flops!r}"

    expected = model(*_inputs(case))
    assert_same(g.run(*_inputs(case)), expected, case.random, "g.run")
    assert_same(g.to_module()(*_inputs(case)), expected, case.random, "g.to_module()")
    if case.dynamic:  # symbolic dims: another size must not reuse trace-time values
        assert_same(g.run(*_grown(case)), model(*_grown(case)), case.random, "g.run at another size")


def _same_target(a, b) -> bool:
    return a is b or (isinstance(a, str) and a == b)


def _grown(case):
    """The inputs with every symbolic dim one longer."""
    xs = list(_inputs(case))
    for i, dims in enumerate(case.dynamic):
        for d in dims or ():
            xs[i] = torch.cat([xs[i], xs[i].narrow(d, 0, 1)], d)
    return tuple(xs)


# ---- coverage: adding an op or a spelling forces adding a sample ----------------------------------
def test_every_op_has_a_sample():
    missing = sorted(set(bridge.ops.all_ops()) - set(SAMPLES))
    assert not missing, f"ops without a sample in tests/ops/samples.py: {missing}"


def test_samples_name_registered_ops_and_spellings():
    ops = bridge.ops.all_ops()
    stale = sorted(set(SAMPLES) - set(ops))
    assert not stale, f"samples for ops that are not registered: {stale}"
    for name, s in SAMPLES.items():
        keys = {spelling_key(k, t) for k, t in spellings(ops[name])}
        unknown = sorted(set(s.sp) - keys)
        assert not unknown, f"{name}: overrides for spellings the op does not claim: {unknown} (claims {sorted(keys)})"


def test_every_op_is_reached():
    """Each op has a case on the fx path, or only aten spellings (the export path's business)."""
    reached = {c.op for c in CASES if not c.skip}
    for name, opdef in bridge.ops.all_ops().items():
        assert name in reached or ((opdef.aten or SAMPLES[name].fx_unreachable) and SAMPLES[name].expr is not None), \
            f"op {name!r} has no fx case and no aten spelling with an expression to export"


def test_every_op_has_flops():
    assert not [n for n, d in bridge.ops.all_ops().items() if d.flops is None]


# ---- aten spellings through the torch.export frontend ---------------------------------------------
def _export_cases():
    """Per op with aten spellings: its expression, else its first function, method or module case."""
    first = {c.op: c for c in CASES if c.kind == "expr"}
    for c in CASES:
        if not c.skip and not c.xfail:
            first.setdefault(c.op, c)
    out = []
    for name, opdef in bridge.ops.all_ops().items():
        if (opdef.aten or SAMPLES[name].fx_unreachable) and name in first:  # or reached by torch.export only
            gap = SAMPLES[name].export_gap
            marks = [pytest.mark.xfail(reason=gap, strict=True)] if gap else []
            out.append(pytest.param(first[name], id=name, marks=marks))
    return out


@pytest.mark.parametrize("case", _export_cases())
def test_op_export(case):
    model = _model(case)
    g = bridge.trace(model, _inputs(case), frontend="export", dynamic=case.dynamic)
    g.check()
    why = {n.name: str(n.target) for n in g.opaque_nodes()}
    assert not why, f"opaque nodes under export (aten ops without a spelling): {why}\n{g}"
    assert g.find(case.op) or case.folds or SAMPLES[case.op].export_absent, \
        f"no {case.op!r} node under export:\n{g}"
    expected = model(*_inputs(case))
    assert_same(g.run(*_inputs(case)), expected, case.random, "g.run")
    assert_same(g.to_module()(*_inputs(case)), expected, case.random, "g.to_module()")
    if case.dynamic:
        assert_same(g.run(*_grown(case)), model(*_grown(case)), case.random, "g.run at another size")


def test_item_is_a_run_time_number_on_every_path():
    """x.item() (aten item / _local_scalar_dense) stays a run-time number: fresh inputs give fresh values in g.run,
    onnxruntime and the re-import, for float, int and bool tensors."""
    import onnxruntime as ort

    class M(torch.nn.Module):
        def forward(self, x, i):
            return x * x.sum().item() + i.max().item(), x * (x > 0).any().item()

    x, i = torch.randn(4), torch.tensor([3, 1])
    fresh = (torch.randn(4) - 3, torch.tensor([7, 2]))
    ref = M()(*fresh)
    for frontend in ("fx", "export"):
        g = bridge.trace(M(), (x, i), frontend=frontend)
        assert "item" in [n.op for n in g.nodes]
        for a, b in zip(g.run(*fresh), ref):
            torch.testing.assert_close(a, b)
    proto = bridge.to_onnx(M(), args=(x, i))
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for a, b in zip(sess.run(None, {"x": fresh[0].numpy(), "i": fresh[1].numpy()}), ref):
        torch.testing.assert_close(torch.from_numpy(a), b)
    for a, b in zip(bridge.from_onnx(proto).to_module()(*fresh), ref):
        torch.testing.assert_close(a, b)
