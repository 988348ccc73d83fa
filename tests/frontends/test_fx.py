"""Untraceable models: one per kind of failure. Each must raise ``bridge.TraceError`` that names the exact
offending line of this file (``.source`` and the line's code in the message) and says how to fix it; where
the fix is ``leaf_modules=``, the fix is applied and checked against eager PyTorch.

Every construct here is checked to fail in ``torch.export.export`` itself too, so ``frontend="auto"``
(fx, then torch.export) has no way to succeed: these are limits of tracing, not of bridge.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn as nn

import bridge

HERE = os.path.abspath(__file__)


def line_of(marker: str) -> int:
    """The line number of the only line of this file that ends with ``# <marker>``."""
    with open(HERE) as f:
        hits = [i for i, line in enumerate(f, 1) if line.rstrip().endswith(f"# <{marker}>")]
    assert len(hits) == 1, marker
    return hits[0]


def code_of(marker: str) -> str:
    with open(HERE) as f:
        return f.read().splitlines()[line_of(marker) - 1].split("#")[0].strip()


# ---- the untraceable blocks --------------------------------------------------------------------------
class BranchBlock(nn.Module):
    """(a) python control flow on a tensor's value."""

    def forward(self, x):
        if x.sum() > 0:  # <branch>
            return x * 2
        return x - 1


class LoopBlock(nn.Module):
    """(b) iterating over a tensor whose length depends on the data (torch.export unrolls only static ones)."""

    def forward(self, x):
        out = x
        for idx in torch.nonzero(x > 0):  # <loop>
            out = out + idx.sum()
        return out


class ItemShapeBlock(nn.Module):
    """(c) a shape taken from ``.item()``."""

    def forward(self, x):
        n = int(x.abs().sum().item())  # <item>
        return torch.ones(n, 2) * x.mean()


class NumpyBlock(nn.Module):
    """(d) tensor data handed to numpy."""

    def forward(self, x):
        return torch.from_numpy(np.tanh(x.detach().numpy()))  # <numpy>


class Outer(nn.Module):
    """A traceable model around one untraceable block: the hint should name the block as the leaf to keep."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.pre = nn.Linear(3, 3)
        self.block = block

    def forward(self, x):
        return self.block(self.pre(x)) * 2


CASES = {
    # marker: (block class, words the fix must contain)
    "branch": (BranchBlock, ["torch.where", "torch.cond", "concrete_args=", "leaf_modules=[BranchBlock]"]),
    "loop": (LoopBlock, ["Vectorize", "leaf_modules=[LoopBlock]"]),
    "item": (ItemShapeBlock, [".item()", "concrete_args=", "leaf_modules=[ItemShapeBlock]"]),
    "numpy": (NumpyBlock, ["numpy", "torch equivalent", "leaf_modules=[NumpyBlock]"]),
}


def example() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(4, 3)


@pytest.mark.parametrize("marker", sorted(CASES))
def test_torch_export_also_fails(marker):
    """Guard on the premise: a construct torch.export can trace does not belong in this file."""
    block, _ = CASES[marker]
    with pytest.raises(Exception):
        torch.export.export(Outer(block()).eval(), (example(),))


@pytest.mark.parametrize("marker", sorted(CASES))
def test_trace_error_names_line_and_fix(marker):
    block, words = CASES[marker]
    model = Outer(block()).eval()
    with pytest.raises(bridge.TraceError) as info:
        bridge.trace(model, (example(),), frontend="auto")
    err = info.value
    msg = str(err)
    assert err.source == f"{HERE}:{line_of(marker)}", msg
    assert f"at {HERE}:{line_of(marker)}" in msg.splitlines()[0]
    assert code_of(marker) in msg
    assert set(err.causes) == {"fx", "record", "export"}, msg  # auto tried every frontend
    fix = msg.split("How to fix:", 1)[1]
    for w in words:
        assert w in fix, f"{w!r} missing from the fix: {fix}"


@pytest.mark.parametrize("marker", sorted(CASES))
def test_suggested_leaf_fix_works(marker):
    """Following the hint (keep the block whole with leaf_modules=) gives a graph that matches eager."""
    block, _ = CASES[marker]
    model = Outer(block()).eval()
    g = bridge.trace(model, (example(),), leaf_modules=[block])
    assert [n.op for n in g.nodes] == ["linear", "opaque", "mul"]
    assert g.nodes[1].scope.path == "block"
    torch.manual_seed(1)
    for x in (example(), -example(), torch.randn(4, 3) * 3):
        with torch.no_grad():
            want, got = model(x), g.run(x)
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


class RootBranch(nn.Module):
    def forward(self, x):
        y = x + 1
        while y.max() < 10:  # <root-while>
            y = y * 2
        return y


def test_branch_in_the_root_module():
    """The offending line is in the traced model itself: leaf_modules cannot keep the root whole, so the hint
    says to move the code into a submodule."""
    with pytest.raises(bridge.TraceError) as info:
        bridge.trace(RootBranch(), (example(),))
    err = info.value
    assert err.source == f"{HERE}:{line_of('root-while')}"
    assert code_of("root-while") in str(err)
    assert "torch.where" in str(err) and "move that code into a submodule" in str(err)


class RowLoop(nn.Module):
    def forward(self, x):
        out = []
        for row in x:  # <row-loop>
            out.append(row * 2 + row.sum())
        return torch.stack(out)


def test_static_loop_fx_only_points_to_export():
    """torch.fx cannot iterate a tensor; torch.export unrolls a static-length loop. fx alone says so..."""
    with pytest.raises(bridge.TraceError) as info:
        bridge.trace(RowLoop(), (example(),), frontend="fx")
    err = info.value
    assert err.source == f"{HERE}:{line_of('row-loop')}"
    assert set(err.causes) == {"fx"}
    assert "frontend='auto' or 'export'" in str(err)


def test_static_loop_auto_falls_back_to_export():
    """...and frontend='auto' does fall back to torch.export, with the right numbers."""
    x = example()
    g = bridge.trace(RowLoop(), (x,))
    assert "fx" in g.meta["fallback_reasons"]
    torch.testing.assert_close(g.run(x), RowLoop()(x))


def test_numpy_helper_location_is_the_model_line():
    """An error raised deep inside numpy still points at the model's line, not numpy's."""

    class FFT(nn.Module):
        def forward(self, x):
            return torch.as_tensor(np.fft.fft(x.detach().numpy()).real)  # <fft>

    with pytest.raises(bridge.TraceError) as info:
        bridge.trace(FFT(), (example(),))
    assert info.value.source == f"{HERE}:{line_of('fft')}"
    assert "numpy" in str(info.value).split("How to fix:")[1]


def test_wrong_example_inputs():
    """A model that fails on its example inputs in eager mode too: the hint says to check the inputs."""
    model = nn.Sequential(nn.Linear(3, 4))
    with pytest.raises(bridge.TraceError) as info:
        bridge.trace(model, (torch.randn(2, 5),))
    assert "shapes and dtypes" in str(info.value)


# ---- wrong inputs to a traced graph -------------------------------------------------------------------
class Affine(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 5)

    def forward(self, x):
        return torch.relu(self.fc(x))


def test_input_error_static_dim_suggests_dynamic():
    torch.manual_seed(0)
    m = Affine().eval()
    g = bridge.trace(m, (torch.randn(2, 3),))
    with pytest.raises(bridge.InputError) as info:
        g.run(torch.randn(4, 3))
    msg = str(info.value)
    assert "'x'" in msg and "[4, 3]" in msg and "[2, 3]" in msg
    assert "dynamic={'x': {0:" in msg
    # following the suggestion works, with the right numbers
    g2 = bridge.trace(m, (torch.randn(2, 3),), dynamic={"x": {0: "batch"}})
    assert str(g2.inputs[0].spec) == "f32[batch, 3]"
    x = torch.randn(4, 3)
    with torch.no_grad():
        torch.testing.assert_close(g2.run(x), m(x))


def test_input_error_wrong_rank():
    g = bridge.trace(Affine().eval(), (torch.randn(2, 3),))
    with pytest.raises(bridge.InputError) as info:
        g.run(torch.randn(2, 3, 1))
    msg = str(info.value)
    assert "'x'" in msg and "[2, 3, 1]" in msg and "[2, 3]" in msg
    assert isinstance(info.value, ValueError)  # InputError is also a ValueError


# ---- known gaps in the core (see the report that added this file) --------------------------------------
class TolistShape(nn.Module):
    def forward(self, x):
        n = x.argmax().item()
        return x[:n]


def test_item_value_is_not_silently_baked():
    """A python number read from tensor data stays a run-time value: the graph is right on other data."""
    x = torch.tensor([[0.0, 0, 0], [0, 5, 0], [0, 0, 0]])  # argmax 4
    y = torch.tensor([[9.0, 0, 0], [0, 5, 0], [0, 0, 0]])  # argmax 0
    g = bridge.trace(TolistShape(), (x,))
    assert g.run(y).shape == TolistShape()(y).shape == (0, 3)
    assert g.run(x).shape == TolistShape()(x).shape


def test_dynamic_dim_of_example_size_one():
    with pytest.raises(bridge.BridgeError, match="example of size 1"):
        bridge.trace(Affine().eval(), (torch.randn(1, 3),), dynamic={"x": {0: "batch"}})
    g = bridge.trace(Affine().eval(), (torch.randn(2, 3),), dynamic={"x": {0: "batch"}})
    assert str(g.inputs[0].spec) == "f32[batch, 3]"
