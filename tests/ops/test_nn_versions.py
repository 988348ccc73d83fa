"""ONNX nn importers by operator version: GroupNormalization-18 takes one scale and bias per group, -21 one per
channel; Pad-13 pads every axis, Pad-18 takes an optional ``axes`` input (Pad-19 adds the wrap mode). One-node
files at opsets on both sides of each change, imported with ``bridge.from_onnx`` and compared with onnxruntime on
the same file."""
from __future__ import annotations

import pytest
import torch
from onnx import TensorProto, helper

import bridge
from bridge.ops import registry
from tests.helpers import import_matches_onnxruntime

_F = TensorProto.FLOAT


def _model(node, opset: int, x_shape, inits=()):
    x = helper.make_tensor_value_info("x", _F, list(x_shape))
    y = helper.make_tensor_value_info("y", _F, None)
    return helper.make_model(helper.make_graph([node], f"{node.op_type}_{opset}", [x], [y], initializer=list(inits)),
                             opset_imports=[helper.make_opsetid("", opset)])


def _check(proto, x_shape):
    import_matches_onnxruntime(proto, torch.randn(*x_shape, generator=torch.Generator().manual_seed(0)))


def _floats(name, values):
    return helper.make_tensor(name, _F, [len(values)], values)


def _i64(name, values):
    return helper.make_tensor(name, TensorProto.INT64, [len(values)], values)


# ---- GroupNormalization ------------------------------------------------------------------------------------------
# opset, channels, groups: scale and bias have ``groups`` values before opset 21, ``channels`` from it on
_GROUP_NORM = {"18-per-group": (18, 6, 3), "20-per-group": (20, 6, 2), "18-groups-are-channels": (18, 4, 4),
               "21-per-channel": (21, 6, 3), "21-one-group": (21, 4, 1)}


@pytest.mark.parametrize("opset, channels, groups", list(_GROUP_NORM.values()), ids=list(_GROUP_NORM))
def test_group_normalization_matches_onnxruntime(opset, channels, groups):
    n = groups if opset < 21 else channels
    scale = _floats("s", [0.5 + 0.25 * i for i in range(n)])
    bias = _floats("b", [0.1 * i - 0.2 for i in range(n)])
    node = helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=groups, epsilon=1e-4)
    shape = (2, channels, 3, 5)
    _check(_model(node, opset, shape, [scale, bias]), shape)


# ---- Pad ---------------------------------------------------------------------------------------------------------
# opset, mode, pads, axes (None: no axes input), constant value (None: not given)
_PAD = {
    "13-constant": (13, "constant", [0, 1, 2, 0, 0, 1], None, 1.5),
    "13-constant-default-value": (13, "constant", [1, 0, 0, 1, 0, 2], None, None),
    "13-reflect": (13, "reflect", [0, 1, 2, 0, 1, 1], None, None),
    "13-edge": (13, "edge", [0, 0, 1, 0, 2, 3], None, None),
    "17-negative-pads": (17, "constant", [0, -1, 1, 0, 1, -2], None, None),
    "18-no-axes": (18, "constant", [0, 1, 2, 0, 0, 1], None, 2.0),
    "18-axes": (18, "constant", [1, 2, 0, 3], [1, 2], -1.0),
    "18-negative-axes": (18, "reflect", [2, 1, 1, 0], [-1, 1], None),
    "18-one-axis": (18, "edge", [2, 3], [2], None),
    "19-wrap-axes": (19, "wrap", [1, 2, 2, 1], [-1, 1], None),
    "21-axes": (21, "constant", [0, 1, 1, 0], [0, 2], 0.5),
}


@pytest.mark.parametrize("opset, mode, pads, axes, value", list(_PAD.values()), ids=list(_PAD))
def test_pad_matches_onnxruntime(opset, mode, pads, axes, value):
    inputs, inits = ["x", "p"], [_i64("p", pads)]
    if value is not None or axes is not None:
        inputs.append("v" if value is not None else "")
        if value is not None:
            inits.append(helper.make_tensor("v", _F, [], [value]))
    if axes is not None:
        inputs.append("ax")
        inits.append(_i64("ax", axes))
    node = helper.make_node("Pad", inputs, ["y"], mode=mode)
    shape = (3, 4, 5)
    _check(_model(node, opset, shape, inits), shape)


def test_pad_axes_input_before_opset_18_is_refused():
    """Pad-13 has no ``axes`` input: a fourth input there is refused, not read as Pad-18's."""
    node = helper.make_node("Pad", ["x", "p", "", "ax"], ["y"], name="pad")
    proto = _model(node, 17, (3, 4), [_i64("p", [1, 1]), _i64("ax", [1])])
    with pytest.raises(bridge.UnsupportedOpError, match="'pad'.*axes input"):
        bridge.from_onnx(proto)


# ---- the importers registered ------------------------------------------------------------------------------------
@pytest.mark.parametrize("op_type, versions", [("GroupNormalization", [18, 21]), ("Pad", [13, 18])])
def test_importer_versions(op_type, versions):
    """One importer per ONNX version whose meaning changed; a model is read with the newest at or below its opset."""
    assert sorted(v for d, t, v in registry.onnx_importers() if d == "" and t == op_type) == versions
    first, second = versions
    assert registry.onnx_importer(op_type, second - 1) is registry.onnx_importer(op_type, first)
    assert registry.onnx_importer(op_type, second - 1) is not registry.onnx_importer(op_type, second)
    assert registry.onnx_importer(op_type, 23) is registry.onnx_importer(op_type, second)
