"""Elementwise ops beyond the one sample per spelling of samples.py, starting with ``shrink`` (the op added as the
example of docs/concepts.md, "Adding an op"): its general form (a bias that is neither 0 nor lambd) against the
formula of the ONNX spec, its ONNX lowering and importer against onnxruntime, its FLOPs by count."""
from __future__ import annotations

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
