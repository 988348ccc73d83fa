"""Elementwise ops beyond the one sample per spelling of samples.py, starting with ``shrink`` (the op added as the
example of docs/concepts.md, "Adding an op"): its general form (a bias that is neither 0 nor lambd) against the
formula of the ONNX spec, its ONNX lowering and importer against onnxruntime, its FLOPs by count."""
from __future__ import annotations

import math

import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import TensorProto, helper

import bridge
from bridge.ops import registry
from tests.helpers import Fn, import_matches_onnxruntime


def _shrink_by_spec(x: torch.Tensor, lambd: float, bias: float) -> torch.Tensor:
    """ONNX Shrink, written from its spec: y = x - bias if x > lambd; x + bias if x < -lambd; else 0."""
    return torch.where(x > lambd, x - bias, torch.where(x < -lambd, x + bias, torch.zeros_like(x)))


@pytest.mark.parametrize("lambd, bias", [(0.5, 0.0), (0.3, 0.3), (0.4, 0.1), (0.0, 0.2), (1.5, -0.25)])
def test_shrink_impl_is_the_onnx_formula(lambd, bias):
    x = torch.linspace(-3, 3, 61)  # hits the boundaries +-lambd exactly
    torch.testing.assert_close(registry.get("shrink").impl(x, lambd, bias), _shrink_by_spec(x, lambd, bias),
                               rtol=0, atol=0)


@pytest.mark.parametrize("make", [lambda: nn.Hardshrink(0.7), lambda: nn.Softshrink(0.2),
                                  lambda: Fn(lambda x: F.softshrink(x, 0.4) + x.hardshrink(0.1))],
                         ids=["Hardshrink", "Softshrink", "functional"])
def test_shrink_traces_runs_and_exports_with_parity_on_fresh_inputs(make, tmp_path):
    torch.manual_seed(0)
    model = make().eval()
    dynamic = isinstance(model, Fn)  # a symbolic batch: the fresh inputs below have another batch size
    g = bridge.trace(model, (torch.randn(4, 8),), dynamic=({0: "batch"},) if dynamic else None)
    assert {n.op for n in g.nodes} <= {"shrink", "add"} and any(n.op == "shrink" for n in g.nodes)
    fresh = torch.randn(6 if dynamic else 4, 8) * 2  # not the traced example
    torch.testing.assert_close(g.run(fresh), model(fresh), rtol=0, atol=0)
    path = tmp_path / "shrink.onnx"
    proto = bridge.to_onnx(g, path)
    assert "Shrink" in {n.op_type for n in proto.graph.node}
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: fresh.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), model(fresh), rtol=1e-6, atol=1e-6)
    back = bridge.from_onnx(path)
    torch.testing.assert_close(back.run(fresh), model(fresh), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("attrs", [{}, {"lambd": 0.2}, {"lambd": 0.3, "bias": 0.3}, {"lambd": 0.4, "bias": -0.1}])
@pytest.mark.parametrize("opset", [13, 17, 21])
def test_shrink_importer_matches_onnxruntime(attrs, opset):
    node = helper.make_node("Shrink", ["x"], ["y"], **attrs)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 7])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    proto = helper.make_model(helper.make_graph([node], "shrink", [x], [y]),
                              opset_imports=[helper.make_opsetid("", opset)])
    t = torch.randn(3, 7, generator=torch.Generator().manual_seed(opset)) * 0.6
    g = import_matches_onnxruntime(proto, t, rtol=0, atol=1e-7)
    assert [n.op for n in g.nodes] == ["shrink"]


def test_shrink_flops_are_two_per_element():
    g = bridge.trace(nn.Softshrink(0.5), (torch.randn(3, 5, 7),))
    (node,) = g.nodes
    assert registry.get("shrink").flops(node) == 2 * 3 * 5 * 7
    assert bridge.summary(g).totals["flops"] == 210


def test_shrink_is_pure_and_has_no_inplace_form():
    g = bridge.trace(nn.Hardshrink(), (torch.randn(2, 3),))
    (node,) = g.nodes
    d = registry.get("shrink")
    assert d.is_pure(node) and not d.is_commutative(node) and d.inplace is None and not d.view


@pytest.mark.parametrize("mode", [None, False, True, "input"])
def test_dropout_import_is_the_identity_only_in_inference(mode):
    """ONNX Dropout imports as the identity; with training_mode true (or computed at run time) it would be random,
    so it is refused with the node named, never imported as a silent identity."""
    inputs, inits, graph_inputs = ["x"], [], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])]
    if mode is not None:
        inputs += ["", "t"]
        if mode == "input":
            graph_inputs.append(helper.make_tensor_value_info("t", TensorProto.BOOL, []))
        else:
            inits.append(helper.make_tensor("t", TensorProto.BOOL, [], [mode]))
    node = helper.make_node("Dropout", inputs, ["y"], name="drop")
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    proto = helper.make_model(helper.make_graph([node], "d", graph_inputs, [y], initializer=inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    if mode in (True, "input"):
        with pytest.raises(bridge.UnsupportedOpError, match="drop.*training mode"):
            bridge.from_onnx(proto)
        return
    t = torch.randn(2, 3)
    torch.testing.assert_close(import_matches_onnxruntime(proto, t, atol=0, rtol=0).run(t), t)


# ---- inverse hyperbolic functions, atan2, div.Scalar_mode (issue 12: Core ATen ops) ---------------------------
def _ort(proto, inputs):
    from bridge.backends.ort import session

    sess = session(proto)
    return [torch.from_numpy(o) for o in sess.run(None, {i.name: x.numpy() for i, x in zip(sess.get_inputs(), inputs)})]


def _parity(fn, inputs, op, *, exact=False, opsets=(17, None)):
    """``fn`` traced both ways (fx with the torch function, torch.export with its aten spelling) is one ``op`` node
    whose graph run, ONNX export in onnxruntime (at opset 17 and the newest) and, where an importer exists, import
    back all equal eager torch (NaN where torch gives NaN, same dtype)."""
    from bridge.backends.onnx import max_opset

    model = Fn(fn)
    want = fn(*inputs)
    tol = {"rtol": 0, "atol": 0} if exact else {"rtol": 1e-6, "atol": 1e-6}
    for frontend in ("fx", "export"):
        g = bridge.trace(model, inputs, frontend=frontend)
        assert [n.op for n in g.nodes] == [op], frontend
        got = g.run(*inputs)
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want, equal_nan=True, rtol=0, atol=0)
    for opset in opsets:
        proto = bridge.to_onnx(g, None, opset=opset or max_opset(), optimize=False)
        (got,) = _ort(proto, inputs)
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want, equal_nan=True, **tol)
    return g, proto


_EDGES = torch.tensor([0.0, -0.0, 0.5, -0.5, 1.0, -1.0, 1.5, -2.0, 30.0, -1e30, 1e30, math.inf, -math.inf, math.nan])


@pytest.mark.parametrize("fn, onnx_op", [(torch.asinh, "Asinh"), (torch.acosh, "Acosh"), (torch.atanh, "Atanh")],
                         ids=["asinh", "acosh", "atanh"])
def test_inverse_hyperbolic_on_special_values_and_back_from_onnx(fn, onnx_op):
    """Out of the domain (acosh below 1, atanh beyond +-1) is NaN, atanh(+-1) is +-inf, as torch; the ONNX op of
    the same name imports back as the op."""
    _, proto = _parity(fn, (_EDGES,), fn.__name__)
    assert onnx_op in {n.op_type for n in proto.graph.node}
    back = bridge.from_onnx(proto)
    assert [n.op for n in back.nodes] == [fn.__name__]
    torch.testing.assert_close(back.run(_EDGES), fn(_EDGES), equal_nan=True, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("fn, op", [(torch.asinh, "asinh"), (torch.acosh, "acosh"), (torch.atanh, "atanh"),
                                    (lambda x: x.arcsinh(), "asinh"), (lambda x: x.arccosh(), "acosh"),
                                    (torch.arctanh, "atanh")],
                         ids=["asinh", "acosh", "atanh", "Tensor.arcsinh", "Tensor.arccosh", "arctanh"])
def test_inverse_hyperbolic_of_integers_is_float(fn, op):
    """An integer input promotes to the default float dtype, as torch: cast before the ONNX op."""
    _parity(fn, (torch.tensor([-3, -1, 0, 1, 2, 7]),), op)


@pytest.mark.parametrize("onnx_op", ["Asinh", "Acosh", "Atanh"])
@pytest.mark.parametrize("opset", [13, 17, 21])
def test_inverse_hyperbolic_importer_matches_onnxruntime(onnx_op, opset):
    node = helper.make_node(onnx_op, ["x"], ["y"])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    proto = helper.make_model(helper.make_graph([node], "h", [x], [y]), opset_imports=[helper.make_opsetid("", opset)])
    t = torch.rand(4, 5, generator=torch.Generator().manual_seed(opset)) * (1.8 if onnx_op == "Atanh" else 6.0)
    t = t + 1.0 if onnx_op == "Acosh" else t - 0.9 if onnx_op == "Atanh" else t - 3.0
    g = import_matches_onnxruntime(proto, t, rtol=1e-6, atol=1e-6)
    assert [n.op for n in g.nodes] == [onnx_op.lower()]


def test_atan2_in_every_quadrant_and_exact_on_the_axes():
    """atan2(y, x) at x == 0 is exactly +-pi/2 (and at y == 0 exactly 0 or +-pi with the signs of zeros), in float32
    and with integer operands promoted to float."""
    y = torch.tensor([1.0, 1.0, -1.0, -1.0, 2.0, -2.0, 0.0, -0.0, 0.0, -0.0, 3.0, -3.0, 0.0, -0.0, math.inf, 1.0])
    x = torch.tensor([1.0, -1.0, 1.0, -1.0, 0.0, 0.0, 0.0, 0.0, -0.0, -0.0, -0.0, -0.0, -5.0, -5.0, 2.0, -math.inf])
    axes = (x == 0) | (y == 0)
    for fn in (torch.atan2, torch.arctan2, lambda a, b: a.atan2(b)):
        _parity(fn, (y, x), "atan2")
        g = bridge.trace(Fn(fn), (y, x))
        (got,) = _ort(bridge.to_onnx(g, None, optimize=False), (y, x))
        want = torch.atan2(y, x)
        assert torch.equal(got[axes], want[axes]) and torch.equal(got[axes].signbit(), want[axes].signbit())
    yi, xi = torch.tensor([3, -3, 0, 0, 5, -7]), torch.tensor([0, 0, 4, -4, -2, 3])
    _parity(torch.atan2, (yi, xi), "atan2")


def test_atan2_flops_are_three_per_element():
    """A division, its arctangent and the quadrant correction: 3 per output element, broadcast included."""
    g = bridge.trace(Fn(torch.atan2), (torch.randn(4, 1, 5), torch.randn(3, 1)))
    (node,) = g.nodes
    assert registry.get("atan2").flops(node) == 3 * 4 * 3 * 5
    assert bridge.summary(g).totals["flops"] == 180


def test_inverse_hyperbolic_flops_are_one_per_element():
    g = bridge.trace(Fn(lambda x: torch.atanh(torch.asinh(x))), (torch.rand(2, 3, 7) - 0.5,))
    assert [registry.get(n.op).flops(n) for n in g.nodes] == [42, 42]


@pytest.mark.parametrize("mode", ["floor", "trunc", None])
@pytest.mark.parametrize("dtype, divisor", [(torch.float32, 3), (torch.float32, -2.5), (torch.int64, 3),
                                            (torch.int64, -4), (torch.int32, 2.5)])
def test_div_scalar_mode_is_div_with_its_rounding_mode(mode, dtype, divisor):
    """aten.div.Scalar_mode (a python-number divisor, rounding_mode by keyword) is the ``div`` op: the same numbers
    as torch in the graph and in onnxruntime, integer quotients rounded toward -inf or 0 exactly."""
    x = torch.tensor([-7.5, -6.0, -1.0, -0.5, 0.0, 0.5, 1.0, 5.0, 7.25]).to(dtype)
    model = Fn(lambda t: torch.ops.aten.div.Scalar_mode(t, divisor, rounding_mode=mode))
    want = model(x)
    g = bridge.trace(model, (x,), frontend="export")
    (node,) = g.nodes
    assert node.op == "div" and node.args["rounding_mode"] == mode and node.args["other"] == divisor
    assert registry.get("div").flops(node) == 9
    torch.testing.assert_close(g.run(x), want, rtol=0, atol=0)
    (got,) = _ort(bridge.to_onnx(g, None, optimize=False), (x,))
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_div_scalar_mode_adapter_takes_the_mode_by_position():
    opdef, adapt = registry.for_aten("aten.div.Scalar_mode")
    assert opdef.name == "div"
    assert adapt(("x", 2, "floor"), {}) == (("x", 2), {"rounding_mode": "floor"})
    assert adapt(("x", 2), {"rounding_mode": "trunc"}) == (("x", 2), {"rounding_mode": "trunc"})


def test_max_min_of_two_tensors_through_export_are_maximum_minimum():
    """torch.max(a, b) / torch.min(a, b) reach torch.export as aten max.other / min.other (HF T5's attention
    does this): they map to maximum/minimum, with broadcasting and integer inputs, on every path."""
    import onnxruntime as ort

    class M(torch.nn.Module):
        def forward(self, a, b, i):
            return torch.max(a, b), torch.min(a, b[0]), torch.min(i, i.flip(0))

    args = (torch.randn(3, 4), torch.randn(3, 4), torch.randint(-5, 5, (3, 4)))
    fresh = (torch.randn(3, 4), torch.randn(3, 4), torch.randint(-5, 5, (3, 4)))
    g = bridge.trace(M(), args, frontend="export")
    assert [n.op for n in g.nodes if n.op in ("maximum", "minimum")] == ["maximum", "minimum", "minimum"]
    ref = M()(*fresh)
    for got, want in zip(g.run(*fresh), ref):
        torch.testing.assert_close(got, want)
    proto = bridge.to_onnx(g)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {i.name: t.numpy() for i, t in zip(sess.get_inputs(), fresh)}
    for got, want in zip(sess.run(None, feeds), ref):
        torch.testing.assert_close(torch.from_numpy(got), want)


def test_product_of_bools_exports_as_a_conjunction(tmp_path):
    """ONNX Mul has no bool kernel (torch decompositions multiply masks): bool * bool lowers to And."""
    model = Fn(lambda a, b: (a > 0) * (b > 0))
    a, b = torch.randn(3, 5), torch.randn(3, 5)
    bridge.to_onnx(model, tmp_path / "m.onnx", args=(a, b))
    fresh = (torch.randn(3, 5), torch.randn(3, 5))
    assert bridge.verify(model, tmp_path / "m.onnx", fresh).ok
    got = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"xs_0": fresh[0].numpy(), "xs_1": fresh[1].numpy()})[0]
    assert got.dtype == bool and (torch.from_numpy(got) == model(*fresh)).all()
