"""Creation ops of PyTorch's Core ATen opset beyond their samples (issue 12): ``randperm`` (random: checked for
shape, dtype and being a permutation, never for torch's numbers) and ``empty_strided`` (the ``empty`` op: strides
dropped, the result contiguous), both with the torch function under fx and the aten spelling under torch.export,
in the graph run and in onnxruntime."""
from __future__ import annotations

import pytest
import torch

import bridge
from bridge.backends.onnx import max_opset
from bridge.backends.ort import session
from bridge.ops import registry
from bridge.ops.onnx_helpers import RANDOM_MAX_OPSET
from tests.helpers import Fn


def _ort(g, inputs, opset=17):
    sess = session(bridge.to_onnx(g, None, opset=opset, optimize=False))
    return [torch.from_numpy(o) for o in sess.run(None, {i.name: x.numpy() for i, x in zip(sess.get_inputs(), inputs)})]


def _is_permutation(t: torch.Tensor, n: int) -> bool:
    return t.shape == (n,) and torch.equal(t.sort().values.long(), torch.arange(n))


# ---- randperm -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("frontend", ["fx", "export"])
@pytest.mark.parametrize("dtype", [None, torch.int32, torch.float32])
def test_randperm_is_a_permutation_of_a_run_time_size(frontend, dtype):
    """n read from the input's symbolic dim 0: the graph and onnxruntime give a permutation of 0 .. n-1 of
    torch's dtype (int64 unless asked) at the traced size and at another size."""
    model = Fn(lambda x: torch.randperm(x.size(0), dtype=dtype) if dtype else torch.randperm(x.size(0)))
    want_dtype = dtype or torch.int64
    g = bridge.trace(model, (torch.randn(6, 2),), frontend=frontend, dynamic=({0: "n"},))
    assert [n.op for n in g.nodes if n.op == "randperm"] == ["randperm"]
    node = next(n for n in g.nodes if n.op == "randperm")
    assert registry.get("randperm").is_random(node) and registry.get("randperm").flops(node) == 0
    for n in (6, 9, 1):
        x = torch.randn(n, 2)
        for got in (g.run(x), _ort(g, (x,))[0]):
            assert got.dtype == want_dtype and _is_permutation(got, n)


def test_randperm_in_onnx_is_a_fresh_shuffle_each_run():
    """The ONNX lowering sorts fresh uniform numbers: different runs give different orders (8! orders: 20 runs all
    equal would mean no randomness), and every position takes several values."""
    g = bridge.trace(Fn(lambda x: torch.randperm(x.size(0))), (torch.randn(8),), frontend="export",
                     dynamic=({0: "n"},))
    sess = session(bridge.to_onnx(g, None, opset=17, optimize=False))
    x = torch.randn(8).numpy()
    runs = torch.stack([torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x})[0]) for _ in range(20)])
    assert all(_is_permutation(r, 8) for r in runs)
    assert len({tuple(r.tolist()) for r in runs}) > 1
    assert all(len(set(col.tolist())) > 1 for col in runs.T)


def test_randperm_of_a_constant_size_under_export():
    g = bridge.trace(Fn(lambda x: x[torch.randperm(5)]), (torch.arange(5.0),), frontend="export")
    assert "randperm" in [n.op for n in g.nodes]
    got = _ort(g, (torch.arange(5.0),))[0]
    assert _is_permutation(got, 5)


@pytest.mark.fault
def test_randperm_above_the_random_opset_is_refused_with_the_reason():
    """onnxruntime has no random-number kernels past opset RANDOM_MAX_OPSET: a typed error naming the node, not a
    file that fails to load."""
    opset = max_opset()
    if opset <= RANDOM_MAX_OPSET:
        pytest.skip("the installed onnxruntime runs random ops at every opset bridge exports")
    g = bridge.trace(Fn(lambda x: torch.randperm(x.size(0))), (torch.randn(4),), dynamic=({0: "n"},))
    with pytest.raises(bridge.UnsupportedOpError, match=rf"randperm.*only up to opset {RANDOM_MAX_OPSET}"):
        bridge.to_onnx(g, None, opset=opset)


# ---- empty_strided ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("frontend", ["fx", "export"])
def test_empty_strided_is_empty_with_the_strides_dropped(frontend):
    """torch.empty_strided (aten empty_strided.default under export) is the ``empty`` op of the size alone: any
    strides, the result is contiguous, of the asked dtype; ONNX gives it the shape (zeros: its content is
    undefined)."""
    model = Fn(lambda x: torch.empty_strided((x.size(0), 3), (1, 4), dtype=torch.float64))
    g = bridge.trace(model, (torch.randn(4, 2),), frontend=frontend, dynamic=({0: "n"},))
    (node,) = [n for n in g.nodes if n.op == "empty"]
    assert "stride" not in node.args and registry.get("empty").flops(node) == 0
    assert registry.get("empty").is_random(node)
    for n in (4, 7):
        got = g.run(torch.randn(n, 2))
        assert got.shape == (n, 3) and got.dtype == torch.float64 and got.is_contiguous()
        (o,) = _ort(g, (torch.randn(n, 2),))
        assert o.shape == (n, 3) and o.dtype == torch.float64


def test_empty_strided_adapter_drops_the_strides():
    opdef, adapt = registry.for_aten("aten.empty_strided.default")
    assert opdef.name == "empty"
    assert adapt(([2, 3], [3, 1]), {"dtype": torch.float16, "pin_memory": False, "layout": torch.strided}) == \
        (([2, 3],), {"dtype": torch.float16})
