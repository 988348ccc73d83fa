"""Calls with no canonical op are traced into their ATen ops (issue 12): a function kept whole by torch.fx.wrap (as
torchvision's Swin keeps shifted_window_attention), a Tensor method, a module kept whole with leaf_modules=, and
an ATen operator torch.export keeps whole (decomposed with torch's decompositions), so they never block export or
analysis; code that reads tensor values stays one opaque call. Parity on fresh inputs against eager, on every
path."""
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


class WeightNormConv(nn.Module):
    """A weight-normed conv over the last weight dim, as Wav2Vec2's positional conv: torch.export keeps
    ``aten._weight_norm`` whole, which has no canonical op; its decomposition (norm, div, mul) has."""

    def __init__(self):
        super().__init__()
        self.conv = nn.utils.parametrizations.weight_norm(nn.Conv1d(4, 4, 3, padding=1), dim=2)

    def forward(self, x):
        return self.conv(x)


def test_an_op_export_keeps_whole_is_decomposed():
    torch.manual_seed(0)
    model = WeightNormConv().eval()
    g = bridge.trace(model, (torch.randn(2, 4, 10),), frontend="export")
    assert not g.opaque_nodes()
    fresh = torch.randn(2, 4, 10)
    with torch.no_grad():
        ref = model(fresh)
        torch.testing.assert_close(g.run(fresh), ref)
        proto = bridge.to_onnx(g)
        sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        torch.testing.assert_close(torch.from_numpy(sess.run(None, {"x": fresh.numpy()})[0]), ref,
                                   atol=1e-5, rtol=1e-5)


class Scaled(nn.Module):
    """No canonical op: traced into when kept whole."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.register_buffer("scale", torch.tensor(2.0))

    def forward(self, x):
        return torch.special.xlog1py(self.lin(x).sigmoid(), x.abs()) * self.scale + x.logaddexp(x.flip(0))


@torch.fx.wrap
def wrapped_call(x):
    return torch.special.entr(x.sigmoid()) - torch.rot90(x.renorm(2, 0, 1.0), 2)


class Traceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Scaled()

    def forward(self, x):
        return wrapped_call(self.block(x)).deg2rad()


@pytest.mark.parametrize("frontend", ["fx", "export"])
def test_calls_without_a_canonical_op_are_traced_into(frontend, tmp_path):
    """A kept module, a wrapped function, methods and ATen ops with no canonical op become canonical nodes (torch's
    decompositions where needed) under the call's scope, with the module's own weights: no opaque node, so
    the graph exports, and every path matches eager on a fresh input."""
    torch.manual_seed(0)
    m = Traceable().eval()
    g = bridge.trace(m, (torch.randn(3, 4),), frontend=frontend, leaf_modules=[Scaled] if frontend == "fx" else ())
    assert not g.opaque_nodes(), str(g)
    assert {n.scope.path for n in g.nodes} >= {"block"}
    assert {tuple(c.names) for c in g.constants if c.kind != "constant"} == \
        {("block.lin.weight",), ("block.lin.bias",), ("block.scale",)}
    x = torch.randn(3, 4)
    with torch.no_grad():
        want = m(x)
    torch.testing.assert_close(g.run(x), want)
    torch.testing.assert_close(g.to_module()(x), want)
    bridge.to_onnx(g, tmp_path / "m.onnx")
    assert bridge.verify(m, tmp_path / "m.onnx", (x,)).ok


def test_tracing_into_never_keeps_a_branch_on_data():
    """A kept module that branches on a tensor's value stays one opaque call: tracing into it would keep the
    example's branch."""

    class Branchy(nn.Module):
        def forward(self, x):
            return x + 1 if x.sum() > 0 else x - 1

    m = nn.Sequential(nn.Linear(4, 4), Branchy()).eval()
    g = bridge.trace(m, (torch.ones(2, 4) * 5,), leaf_modules=[Branchy])
    assert [n.op for n in g.nodes] == ["linear", "opaque"]
    for x in (torch.ones(2, 4) * 5, -torch.ones(2, 4) * 5):
        torch.testing.assert_close(g.run(x), m(x))
