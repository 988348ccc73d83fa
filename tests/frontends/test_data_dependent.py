"""Sizes that depend on tensor values (``x[x > 0]``, ``nonzero``, ``.item()`` as a size) stay symbolic on every
path, or the trace stops with a TraceError naming the line: never the number seen while tracing (issue 11).

Each model is traced on one example and checked on fresh inputs whose data-dependent sizes differ from it,
against eager PyTorch: ``g.run``, the generated module, the ONNX file in onnxruntime and its re-import.
"""
from __future__ import annotations

import onnxruntime as ort
import pytest
import torch

import bridge
from bridge.errors import TraceError


class Kept(torch.nn.Module):  # the first example: kept.numel() used as a number
    def forward(self, h):
        kept = h[h > 0]
        return kept.sum() * kept.numel(), kept


class NonzeroCount(torch.nn.Module):  # the second example: nonzero(m).shape[0] as a size
    def forward(self, m):
        return torch.zeros(torch.nonzero(m).shape[0]) + 1


class Indices(torch.nn.Module):
    def forward(self, x):
        idx = torch.nonzero(x > 0)
        return x.new_zeros(idx.shape[0], 3).sum(1) + idx[:, 0]


class Reshaped(torch.nn.Module):
    def forward(self, h):
        kept = h[h > 0]
        return torch.ones(3, kept.numel()).view(-1, 3) * kept.mean()


class MaskedSelect(torch.nn.Module):
    def forward(self, x, m):
        sel = torch.masked_select(x, m)
        return torch.softmax(sel, 0), sel.shape[0] * x


class TopK(torch.nn.Module):
    def forward(self, h):
        return h.topk(h[h > 0].numel()).values


class Narrow(torch.nn.Module):
    def forward(self, x, h):
        return x.narrow(0, 0, h[h > 0].numel()) * 2


MODELS = {
    "kept": (Kept, lambda g: (torch.randn(10, generator=g),)),
    "nonzero_count": (NonzeroCount, lambda g: (torch.randn(10, generator=g) > 0,)),
    "indices": (Indices, lambda g: (torch.randn(10, generator=g),)),
    "reshaped": (Reshaped, lambda g: (torch.randn(10, generator=g),)),
    "masked_select": (MaskedSelect, lambda g: (torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g) > 0)),
    "topk": (TopK, lambda g: (torch.randn(10, generator=g),)),
    "narrow": (Narrow, lambda g: (torch.randn(10, 3, generator=g), torch.randn(10, generator=g))),
}


def _inputs(make, seed):
    return make(torch.Generator().manual_seed(seed))


def _fresh(make, example, n=3):
    """Inputs whose data-dependent sizes differ from the example's (a model traced with those sizes baked in
    fails on them)."""
    count = lambda args: int((args[-1] > 0).sum())  # noqa: E731 - what every model here keeps
    out = [args for seed in range(1, 40) if count(args := _inputs(make, seed)) != count(example)]
    assert len(out) >= n
    return out[:n]


def _same(a, b):
    fa, _ = torch.utils._pytree.tree_flatten(a)
    fb, _ = torch.utils._pytree.tree_flatten(b)
    assert len(fa) == len(fb)
    for x, y in zip(fa, fb):
        x, y = torch.as_tensor(x), torch.as_tensor(y)
        assert x.shape == y.shape, (x.shape, y.shape)
        torch.testing.assert_close(x.to(y.dtype), y, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("frontend", ["fx", "export"])
@pytest.mark.parametrize("shapes", ["auto", "fake"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_data_dependent_size_stays_symbolic(name, frontend, shapes):
    cls, make = MODELS[name]
    model = cls().eval()
    example = _inputs(make, 0)
    g = bridge.trace(model, example, frontend=frontend, shapes=shapes)
    dims = {str(d) for v in g.values() for d in getattr(v.spec, "shape", ())}
    assert any("u" in d for d in dims), f"no symbolic data-dependent size in\n{g}"
    m = g.to_module()
    for args in _fresh(make, example):
        ref = model(*args)
        _same(g.run(*args), ref)
        _same(m(*args), ref)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_data_dependent_size_through_onnx(name):
    cls, make = MODELS[name]
    model = cls().eval()
    example = _inputs(make, 0)
    proto = bridge.to_onnx(model, args=example)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    back = bridge.from_onnx(proto).to_module()
    for args in _fresh(make, example):
        ref = model(*args)
        got = sess.run(None, {i.name: a.numpy() for i, a in zip(sess.get_inputs(), args)})
        flat, _ = torch.utils._pytree.tree_flatten(ref)
        _same([torch.from_numpy(o) for o in got], [torch.as_tensor(r) for r in flat])
        _same(back(*args), ref)


class Split(torch.nn.Module):  # split sizes must be python ints: the kept count cannot stay symbolic there
    def forward(self, h):
        return torch.split(h, h[h > 0].numel())[0]


class Linspace(torch.nn.Module):
    def forward(self, h):
        return torch.linspace(0, 1, h[h > 0].numel())


class Chunked(torch.nn.Module):
    def forward(self, h):
        return h[h > 0].chunk(2)[0]


@pytest.mark.fault
@pytest.mark.parametrize("cls,op", [(Split, "split"), (Linspace, "linspace"), (Chunked, "chunk")])
def test_size_that_cannot_stay_symbolic_is_a_trace_error(cls, op):
    with pytest.raises(TraceError) as info:
        bridge.trace(cls().eval(), (torch.randn(10),))
    msg = str(info.value)
    assert f"{op} at {__file__}:" in msg and "depends on tensor values" in msg
    assert "comes from getitem" in msg  # the line the size came from
    assert "torch.where" in msg  # what to do
    assert info.value.source and info.value.source.startswith(__file__)


@torch.library.custom_op("bridge_test::no_fake_double", mutates_args=())
def _no_fake_double(x: torch.Tensor) -> torch.Tensor:  # no register_fake: fake tensors cannot run it
    return x * 2


class NoFakeKernel(torch.nn.Module):
    def forward(self, h):
        return _no_fake_double(h)[h > 0]


@pytest.mark.fault
def test_data_dependent_size_with_real_propagation_only_is_a_trace_error():
    """An op with no fake kernel makes shapes come from real tensors; a data-dependent size there would be the
    number seen while tracing, so trace refuses it (naming the op and line) instead of baking it in."""
    with pytest.raises(TraceError) as info:
        bridge.trace(NoFakeKernel().eval(), (torch.randn(10),), frontend="fx")
    msg = str(info.value)
    assert "getitem" in msg and "depends on tensor values" in msg and f"{__file__}:" in msg


@pytest.mark.fault
def test_onnx_import_with_real_values_refuses_a_data_dependent_size(monkeypatch):
    """Where the importer must propagate real values (an op fake tensors cannot run), a NonZero's size would be
    the number seen at import: refused with an OnnxError naming the op, never baked in."""
    from bridge.frontends import common, onnx as onnx_frontend

    proto = bridge.to_onnx(NonzeroCount(), args=(torch.randn(10) > 0,))
    real_only = common.GraphBuilder.__init__

    def no_fake(self, *, fake=True, dynamic=None, data_dependent="allow", fast_shapes=False):
        if fake:
            raise common.NeedsRealValues("forced: as for an op with no fake kernel")
        real_only(self, fake=False, dynamic=dynamic, data_dependent=data_dependent)

    monkeypatch.setattr(common.GraphBuilder, "__init__", no_fake)
    with pytest.raises(bridge.OnnxError) as info:
        onnx_frontend.from_onnx(proto)
    assert "nonzero" in str(info.value) and "depends on tensor values" in str(info.value)
