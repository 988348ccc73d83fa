"""Export refuses what it cannot write with a BridgeError that says what works, before tracing or writing."""
from __future__ import annotations

import os

import onnx
import pytest
import torch

import bridge
from bridge.backends.onnx import MIN_OPSET, max_opset


@pytest.mark.fault
@pytest.mark.parametrize("opset", [99, onnx.defs.onnx_opset_version() + 1, MIN_OPSET - 1, -3, "17",
                                   17.0, True])
def test_an_opset_bridge_cannot_write_is_a_typed_error(opset, tmp_path):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"old")
    with pytest.raises(bridge.BridgeError) as info:
        bridge.to_onnx(torch.nn.Linear(2, 2), out, args=(torch.randn(1, 2),), opset=opset)
    msg = str(info.value)
    assert repr(opset) in msg and f"{MIN_OPSET} to {onnx.defs.onnx_opset_version()}" in msg
    assert str(max_opset()) in msg
    assert out.read_bytes() == b"old" and os.listdir(tmp_path) == ["m.onnx"]  # nothing written


def test_every_opset_in_range_exports():
    for opset in (MIN_OPSET, max_opset()):
        proto = bridge.to_onnx(torch.nn.Linear(2, 2), args=(torch.randn(1, 2),), opset=opset)
        assert proto.opset_import[0].version == opset
