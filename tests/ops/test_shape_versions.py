"""ONNX Split importers by operator version: Split-13 splits by the optional ``split`` input, else into equal
pieces, one per output; Split-18 adds ``num_outputs`` (the last piece smaller when the dim does not divide).
One-node files at opsets on both sides of the change, imported with ``bridge.from_onnx`` and compared with
onnxruntime on the same file."""
from __future__ import annotations

import pytest
import torch
from onnx import TensorProto, helper

from bridge.ops import registry
from tests.helpers import import_matches_onnxruntime

_F = TensorProto.FLOAT
_NUM_OUTPUTS_SINCE = 18
# form -> (input shape, axis, split sizes given as input 1 or None, number of outputs, num_outputs attribute).
# Without sizes, Split-13 makes one equal piece per output; from Split-18 on, num_outputs must say how many.
_FORMS = {
    "sizes": ([2, 6, 3], 1, [2, 4], 2, False),
    "sizes_negative_axis": ([2, 3, 5], -1, [1, 1, 3], 3, False),
    "equal": ([2, 6, 3], 1, None, 3, False),
    "equal_symbolic_dim": (["N", 6, 3], 0, None, 2, False),
    "num_outputs": ([2, 6, 3], 1, None, 3, True),
    "num_outputs_uneven": ([2, 7, 3], 1, None, 3, True),
    "num_outputs_symbolic_dim": ([2, "M", 3], 1, None, 2, True),
}
_OPSETS = (13, 17, 18, 21)


def _model(opset: int, shape, axis: int, sizes, n: int, num_outputs: bool):
    inputs, inits = ["x"], []
    if sizes is not None:
        inputs.append("split")
        inits.append(helper.make_tensor("split", TensorProto.INT64, [len(sizes)], sizes))
    attrs = {"axis": axis}
    if num_outputs:
        attrs["num_outputs"] = n
    outs = [f"y{i}" for i in range(n)]
    node = helper.make_node("Split", inputs, outs, **attrs)
    x = helper.make_tensor_value_info("x", _F, shape)
    ys = [helper.make_tensor_value_info(o, _F, None) for o in outs]
    return helper.make_model(helper.make_graph([node], f"split_{opset}", [x], ys, initializer=inits),
                             opset_imports=[helper.make_opsetid("", opset)])


def _cases():
    for opset in _OPSETS:
        for form, (shape, axis, sizes, n, num_outputs) in _FORMS.items():
            if sizes is None and num_outputs != (opset >= _NUM_OUTPUTS_SINCE):  # num_outputs came with Split-18
                continue
            yield pytest.param(opset, shape, axis, sizes, n, num_outputs, id=f"Split-{opset}-{form}")


@pytest.mark.parametrize("opset, shape, axis, sizes, n, num_outputs", list(_cases()))
def test_split_matches_onnxruntime(opset, shape, axis, sizes, n, num_outputs):
    proto = _model(opset, shape, axis, sizes, n, num_outputs)
    concrete = [d if isinstance(d, int) else 4 for d in shape]
    t = torch.randn(*concrete, generator=torch.Generator().manual_seed(0))
    g = import_matches_onnxruntime(proto, t, atol=0, rtol=0)
    assert len(g.outputs) == n


def test_split_importer_versions():
    """One importer per ONNX version of Split that bridge reads: 13 (sizes or one equal piece per output) and 18
    (num_outputs)."""
    versions = sorted(v for d, t, v in registry.onnx_importers() if d == "" and t == "Split")
    assert versions == [13, _NUM_OUTPUTS_SINCE]
    assert registry.onnx_importer("Split", 17) is registry.onnx_importer("Split", 13)
    assert registry.onnx_importer("Split", 17) is not registry.onnx_importer("Split", 18)
    assert registry.onnx_importer("Split", 18) is registry.onnx_importer("Split", 21)
