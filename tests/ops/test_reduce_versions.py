"""ONNX Reduce* importers by operator version: ``axes`` is an attribute before ReduceSum-13 / Reduce*-18 and an
optional input from then on (with ``noop_with_empty_axes``). One-node files at opsets on both sides of the change,
imported with ``bridge.from_onnx`` and compared with onnxruntime on the same file."""
from __future__ import annotations

import pytest
import torch
from onnx import TensorProto, helper

import bridge
from bridge.ops import registry
from tests.helpers import import_matches_onnxruntime

_F = TensorProto.FLOAT
# op type -> the opset whose version moved axes from the attribute to an input
_AXES_INPUT_SINCE = {"ReduceSum": 13, "ReduceMean": 18, "ReduceMax": 18, "ReduceMin": 18, "ReduceProd": 18,
                     "ReduceL1": 18, "ReduceL2": 18, "ReduceLogSumExp": 18, "ReduceSumSquare": 18}
_OPSETS = (13, 17, 18, 21)
# axes (None: not given), keepdims, noop_with_empty_axes (only where axes may be an input); with
# noop_with_empty_axes a reduction over no axes still applies its elementwise step (ReduceSumSquare: x * x,
# ReduceL1/L2: |x|), as onnxruntime does
_FORMS = {"one_axis": ([1], 1, 0), "two_axes_negative_dropped": ([0, -1], 0, 0), "all": (None, 0, 0),
          "all_kept": (None, 1, 0), "empty_noop": ([], 1, 1)}


def _model(op_type: str, opset: int, axes, keepdims: int, noop: int):
    as_input = opset >= _AXES_INPUT_SINCE[op_type]
    attrs = {"keepdims": keepdims}
    inputs, inits = ["x"], []
    if axes is not None:
        if as_input:
            inputs.append("ax")
            inits.append(helper.make_tensor("ax", TensorProto.INT64, [len(axes)], axes))
        else:
            attrs["axes"] = axes
    if noop:
        attrs["noop_with_empty_axes"] = noop
    node = helper.make_node(op_type, inputs, ["y"], **attrs)
    x = helper.make_tensor_value_info("x", _F, [2, 3, 4])
    y = helper.make_tensor_value_info("y", _F, None)
    return helper.make_model(helper.make_graph([node], f"{op_type}_{opset}", [x], [y], initializer=inits),
                             opset_imports=[helper.make_opsetid("", opset)])


def _cases():
    for op_type, since in _AXES_INPUT_SINCE.items():
        for opset in _OPSETS:
            for form, (axes, keep, noop) in _FORMS.items():
                if noop and opset < since:  # noop_with_empty_axes came with the axes input
                    continue
                if axes == [] and opset < since:
                    continue
                yield pytest.param(op_type, opset, axes, keep, noop, id=f"{op_type}-{opset}-{form}")


@pytest.mark.parametrize("op_type, opset, axes, keepdims, noop", list(_cases()))
def test_reduce_matches_onnxruntime(op_type, opset, axes, keepdims, noop):
    proto = _model(op_type, opset, axes, keepdims, noop)
    gen = torch.Generator().manual_seed(0)
    import_matches_onnxruntime(proto, torch.randn(2, 3, 4, generator=gen))


@pytest.mark.parametrize("op_type", list(_AXES_INPUT_SINCE))
def test_importer_versions(op_type):
    """One importer per ONNX version of the axes argument: the attribute form below the change (none for
    ReduceSum, whose attribute form only files below opset 13 have), the input form from it on."""
    since = _AXES_INPUT_SINCE[op_type]
    versions = sorted(v for d, t, v in registry.onnx_importers() if d == "" and t == op_type)
    assert versions == ([since] if since == 13 else [1, since])
    assert registry.onnx_importer(op_type, since) is registry.onnx_importer(op_type, 21)
    if since > 13:
        assert registry.onnx_importer(op_type, since - 1) is not registry.onnx_importer(op_type, since)


@pytest.mark.parametrize("op_type, opset, as_input", [("ReduceMean", 18, False), ("ReduceSum", 13, False),
                                                      ("ReduceMax", 17, True)])
def test_axes_in_the_other_versions_place_is_refused(op_type, opset, as_input):
    """An axes attribute where the version takes an input (or the reverse) is refused, not read as 'all axes'."""
    inputs, attrs, inits = ["x"], {}, []
    if as_input:
        inputs.append("ax")
        inits.append(helper.make_tensor("ax", TensorProto.INT64, [1], [1]))
    else:
        attrs["axes"] = [1]
    node = helper.make_node(op_type, inputs, ["y"], name="r", **attrs)
    proto = helper.make_model(helper.make_graph([node], "r", [helper.make_tensor_value_info("x", _F, [2, 3, 4])],
                                                [helper.make_tensor_value_info("y", _F, None)], initializer=inits),
                              opset_imports=[helper.make_opsetid("", opset)])
    with pytest.raises(bridge.UnsupportedOpError, match="'r'.*axes given as an"):
        bridge.from_onnx(proto)
