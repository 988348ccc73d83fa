"""A function kept whole by torch.fx.wrap (as torchvision's Swin keeps shifted_window_attention) is traced into
its ATen ops when it has no canonical op, so it never blocks export or analysis (issue 12). Parity on fresh
inputs against eager, on every path."""
from __future__ import annotations

import onnxruntime as ort
import pytest
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

import bridge


def window_attention(x, proj_weight, shift: int, window: int):
    """Shape-dependent python (pads computed from sizes), a mask written in place, a roll: the kind of code
    torchvision keeps whole with torch.fx.wrap because fx cannot trace it symbolically."""
    b, n, c = x.shape
    pad = (window - n % window) % window
    x = F.pad(x, (0, 0, 0, pad))
    if shift > 0:
        x = torch.roll(x, -shift, dims=1)
    mask = x.new_zeros(x.shape[1])
    mask[-shift:] = 1.0  # in place, on a slice
    scores = (x @ proj_weight) @ x.transpose(1, 2) - 1e4 * mask
    out = torch.softmax(scores, -1) @ x
    return out[:, :n]


torch.fx.wrap("window_attention")


def cumulative_max(x):
    """logcumsumexp has no canonical op: traced into, it still cannot be lowered, so the call stays whole."""
    return torch.logcumsumexp(x, 1) * 2


torch.fx.wrap("cumulative_max")


class Block(nn.Module):
    def __init__(self, shift):
        super().__init__()
        self.proj = nn.Parameter(torch.randn(8, 8) * 0.1)
        self.norm = nn.LayerNorm(8)
        self.shift = shift

    def forward(self, x):
        return self.norm(x + window_attention(x, self.proj, self.shift, 4))


def test_a_wrapped_function_is_traced_into_canonical_ops():
    torch.manual_seed(0)
    model = nn.Sequential(Block(0), Block(2)).eval()
    x = torch.randn(2, 6, 8)
    g = bridge.trace(model, (x,), frontend="fx")
    assert not g.opaque_nodes()
    assert {n.scope.path for n in g.nodes if n.op == "roll"} == {"1"}  # the call's module scope is kept
    fresh = torch.randn(2, 6, 8)
    ref = model(fresh)
    torch.testing.assert_close(g.run(fresh), ref)
    torch.testing.assert_close(g.to_module()(fresh), ref)
    proto = bridge.to_onnx(model, args=(x,))
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    torch.testing.assert_close(torch.from_numpy(sess.run(None, {"input": fresh.numpy()})[0]), ref,
                               atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(bridge.from_onnx(proto).to_module()(fresh), ref, atol=1e-6, rtol=1e-5)
    assert bridge.summary(model, (x,)).to_dict()["totals"]["opaque_nodes"] == 0


class UsesUnmapped(nn.Module):
    def forward(self, x):
        return cumulative_max(x) + 1


@pytest.mark.fault
def test_a_wrapped_function_with_an_op_bridge_lacks_stays_whole_and_says_which():
    x = torch.randn(2, 5)
    g = bridge.trace(UsesUnmapped(), (x,), frontend="fx")
    (node,) = g.opaque_nodes()
    assert "aten.logcumsumexp.default has no canonical op" in node.meta["why_opaque"]
    torch.testing.assert_close(g.run(x), UsesUnmapped()(x))  # it still runs, whole
    with pytest.raises(bridge.UnsupportedOpError, match="logcumsumexp"):
        bridge.to_onnx(UsesUnmapped(), args=(x,))
