"""Indexing, slicing, views and splits through the ONNX backend, beyond the one sample per op of op_samples.py.

Each case is a small function of tensors. It is traced with the fx frontend (optionally with a symbolic batch
dim), exported at opset 17 and at the newest opset onnxruntime runs (``onnx.checker`` full check and strict shape
inference), run in onnxruntime and compared with eager PyTorch: same shapes and dtypes, integers and bools
exactly, floats within ``atol = 1e-5 * max(1, scale)``. Cases with a symbolic dim also run at other sizes than
the traced one, so no trace-time size may leak into the ONNX graph.
"""
from __future__ import annotations

import operator

import numpy as np
import pytest
import torch
import torch.nn as nn

import bridge
import bridge.ops
from bridge.backends.onnx import MIN_OPSET, max_opset
from bridge.backends.ort import session
from bridge.errors import UnsupportedOpError
from tests.helpers import assert_same_outputs
from tests.ops.samples import fx_recorded

OPSETS = sorted({MIN_OPSET, max_opset()})
BIG = 9223372036854775807  # what torch.export and python slicing use for an open end

setitem = fx_recorded(operator.setitem)  # fx records operator.setitem itself (a Proxy has no item assignment)


class F1(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class F2(F1):
    def forward(self, x, y):
        return self.fn(x, y)


class F3(F1):
    def forward(self, x, y, z):
        return self.fn(x, y, z)


def _module(fn, n):
    return {1: F1, 2: F2, 3: F3}[n](fn)


def _tuple(out):
    """The tensors of a (nested) tuple output, flat, in order."""
    if isinstance(out, (tuple, list)):
        return tuple(t for o in out for t in _tuple(o))
    return (out,)


def check(fn, make, dynamic=None, sizes=(4,), opsets=OPSETS):
    """Trace ``fn`` on ``make(sizes[0])``, export at every opset, compare onnxruntime with eager at every size."""
    torch.manual_seed(0)
    xs = make(sizes[0])
    model = _module(fn, len(xs))
    g = bridge.trace(model, tuple(x.clone() for x in xs), frontend="fx", dynamic=dynamic)
    assert not g.opaque_nodes(), str(g)
    for opset in opsets:
        proto = bridge.to_onnx(g, None, opset=opset, optimize=False)
        sess = session(proto)
        for s in sizes:
            torch.manual_seed(s)
            xs = make(s)
            expected = _tuple(model(*[x.clone() for x in xs]))
            feeds = {i.name: x.numpy() for i, x in zip(sess.get_inputs(), xs)}
            got = tuple(torch.from_numpy(np.array(a)) for a in sess.run(None, feeds))
            assert_same_outputs(got, expected, path=f"opset {opset}, size {s}")


def r(*s):
    return torch.randn(*s)


B = {"x": {0: "batch"}}
BY = {"x": {0: "batch"}, "y": {0: "batch"}}
SIZES = (4, 6, 3)

# ---- basic indexing: ints, slices, None, Ellipsis ----------------------------------------------------------
BASIC = {
    "int": lambda x: x[1],
    "neg-int": lambda x: (x[-1], x[:, -2], x[..., -1]),
    "slices": lambda x: (x[1:3], x[:, ::2], x[1:-1, -3:], x[::3, 1:100], x[-100:2]),
    "big-end": lambda x: (x[2:BIG], x[:, 1:BIG:2], x[:-BIG]),
    "empty-slice": lambda x: (x[3:1], x[:, 4:]),
    "none": lambda x: (x[None], x[:, None], x[..., None], x[None, :, None, ..., None]),
    "ellipsis": lambda x: (x[...], x[..., 1:], x[1, ...], x[..., 0, :], x[0, ..., 1]),
    "mixed": lambda x: (x[1:, None, ..., 0], x[-1, None, 1:3, ::2], x[None, ..., None, 1], x[1:3, 2, None]),
    "bool-const": lambda x: (x[True], x[None, True]),
}


@pytest.mark.parametrize("name", list(BASIC))
def test_basic_indexing(name):
    check(BASIC[name], lambda b: (r(4, 5, 6),))


# ---- index tensors and masks ---------------------------------------------------------------------
def idx(*vals):
    return torch.tensor(vals)


ADVANCED = {
    "one": (lambda x, i: (x[i], x[:, i], x[..., i]), lambda: (r(4, 5, 6), idx(3, 0, 1, 3))),
    "negative": (lambda x, i: (x[i], x[:, i], x[i, i]), lambda: (r(4, 5, 6), idx(-1, 0, -4))),
    "2d-index": (lambda x, i: (x[i], x[:, i], x[1:, i, ::2]), lambda: (r(4, 5, 6), idx([0, 3], [2, 1], [-1, 0]))),
    "int32": (lambda x, i: (x[i], x[i, i]), lambda: (r(4, 5, 6), idx(0, 2, 1).int())),
    "adjacent": (lambda x, i: (x[i, i], x[:, i, i], x[0, i, i]), lambda: (r(4, 5, 6), idx(0, 3, 2))),
    "separated": (lambda x, i: (x[i, :, i], x[i, 1:3, i], x[:, i, None, i]), lambda: (r(4, 5, 6), idx(0, 3, 2))),
    "int-is-select": (lambda x, i: (x[i, 0, i], x[0, :, i], x[i, :, 0]), lambda: (r(4, 5, 6), idx(0, 3, 2))),
    "broadcast": (lambda x, i: (x[i[:, None], i], x[:, i[:, None], i[None, :2]]), lambda: (r(4, 5, 6), idx(0, 3, 2))),
    "mask-1d": (lambda x, m: (x[m[:4]], x[:, m[:5]], x[..., m]), lambda: (r(4, 5, 6), torch.rand(6) > 0.5)),
    "mask-full": (lambda x, m: (x[m > 0.5], x[(m > 0.5)[:, :, 0]]), lambda: (r(4, 5, 6), torch.rand(4, 5, 6))),
    "mask-2d": (lambda x, m: (x[m[:4, :5]], x[:, m], x[0, m], x[m[:4, :5], 1:], x[..., m[:4, :5], :]),
                lambda: (r(4, 5, 6), torch.rand(5, 6) > 0.4)),
    "mask-and-index": (lambda x, m: (x[m, 1], x[m, idx(0, 4, 1)], x[m, :, idx(5, 0, 1)],
                                     x[:, torch.cat([m, m[:1]]), idx(0, 5, 1, 2)]),
                       lambda: (r(4, 5, 6), torch.tensor([True, False, True, True]))),
    "list": (lambda x, i: (x[[2, 0]], x[:, [0, -1]], x[[0, 1], [1, 2]], x[[True, False, True, False]]),
             lambda: (r(4, 5, 6), idx(0))),
    "gather-masked-output": (lambda x, i: x[x > 0] * 2, lambda: (r(4, 5, 6), idx(0))),
}


@pytest.mark.parametrize("name", list(ADVANCED))
def test_advanced_indexing(name):
    fn, make = ADVANCED[name]
    check(fn, lambda b: make())


# ---- symbolic batch: views and slices must read sizes at run time ---------------------------------------
DYNAMIC = {
    "view-size": lambda x: x.view(x.size(0), -1),
    "view-size-mid": lambda x: x.view(x.size(0), 2, -1),
    "view-flat": lambda x: x.view(-1),
    "reshape-tail": lambda x: x.reshape(-1, 6),
    "view-shape-attr": lambda x: x.view(x.shape[0], x.shape[1] * x.shape[2]),
    "unflatten": lambda x: x.unflatten(2, (2, 3)),
    "unflatten-batch": lambda x: x.flatten(0, 1).unflatten(0, (x.size(0), 5)),
    "slice-to-size": lambda x: (x[: x.size(0) - 1], x[1:], x[-2:], x[:, 1:-1]),
    "slice-from-size": lambda x: x[x.size(0) // 2:],
    "int-index": lambda x: (x[-1], x[:, 0], x[1:, None, ..., 0], x[x.size(0) - 1], x[:, :, x.size(0) - 3]),
    "index-tensor": lambda x: x[:, idx(4, 0)],
    "mask": lambda x: (x[x > 0], x[x[:, 0, 0] > 0]),
    "select": lambda x: (x.select(0, -1), x.select(2, 3)),
    "narrow": lambda x: (x.narrow(0, 1, 2), x.narrow(2, -3, 2), x.narrow(0, 0, x.size(0) - 1)),
    "expand": lambda x: (x[:, :1].expand(-1, 5, -1), x[:, None].expand(x.size(0), 2, 5, 6)),
    "repeat": lambda x: (x.repeat(1, 2, 1), x.repeat(2, 1, 1, 1), x.tile((2,))),
    "squeeze-unsqueeze": lambda x: (x[:, :1].squeeze(1), x.unsqueeze(-1), x[:, :1].squeeze(), x.squeeze(0)),
    "split": lambda x: (x.split(2, dim=2), x.split([2, 4], dim=2), x.split([1, 4], dim=1)),
    "chunk": lambda x: (x.chunk(2, dim=0), x.chunk(4, dim=2)),
    "tensor-split": lambda x: (x.tensor_split(3, dim=0), x.tensor_split([1, 3], dim=0), x.tensor_split([4, 2], 2)),
    "flip-roll": lambda x: (x.flip(0), x.flip(0, 2), x.roll(1, 0), x.roll(-2, 0), x.roll(3)),
    "diagonal": lambda x: (x.diagonal(0, 0, 1), x.diagonal(1, 0, 2), x.diagonal(-1, 2, 0)),
    "transpose-permute": lambda x: (x.transpose(0, 2), x.permute(2, 0, 1), x.movedim(0, -1), x.mT),
    "cat-stack": lambda x: (torch.cat([x, x[:1]], 0), torch.stack([x, x], 1), torch.cat([x, x], -1)),
    "repeat-interleave": lambda x: (x.repeat_interleave(2, dim=0), x.repeat_interleave(3, dim=2)),
    "unbind": lambda x: x.unbind(2),
}


@pytest.mark.parametrize("name", list(DYNAMIC))
def test_symbolic_batch(name):
    check(DYNAMIC[name], lambda b: (r(b, 5, 6),), dynamic=B, sizes=SIZES)


def test_view_as_and_expand_as_symbolic():
    check(lambda x, y: (x.view_as(y), x[:, :1, :1].expand_as(x), x.reshape_as(y)),
          lambda b: (r(b, 3, 4), r(b, 12)), dynamic=BY, sizes=SIZES)


# ---- setitem: the functional form of x[index] = value ------------------------------------------------
SETITEM = {
    "int-row": (lambda x, v: setitem(x, 1, v[0]), lambda: (r(4, 6), r(2, 6))),
    "neg-int": (lambda x, v: setitem(x, (-1, -2), 7.0), lambda: (r(4, 6), r(2, 6))),
    "slice-scalar": (lambda x, v: setitem(x, (slice(None), slice(1, 3)), 0.5), lambda: (r(4, 6), r(2, 6))),
    "slice-step": (lambda x, v: setitem(x, (slice(None, None, 2), slice(1, None, 3)), v[:, :2]),
                   lambda: (r(4, 6), r(2, 6))),
    "ellipsis-broadcast": (lambda x, v: setitem(x, (Ellipsis, 0), v[0, :4]), lambda: (r(4, 6), r(2, 6))),
    "leading-ones": (lambda x, v: setitem(x, 2, v[:1]), lambda: (r(4, 6), r(2, 6))),
    "mask-scalar": (lambda x, v: setitem(x, x > 0, 0.0), lambda: (r(4, 6), r(2, 6))),
    "mask-rows": (lambda x, v: setitem(x, v[0, :4] > 0, v[1]), lambda: (r(4, 6), r(2, 6))),
    "index-tensor": (lambda x, v: setitem(x, idx(3, 0), v), lambda: (r(4, 6), r(2, 6))),
    "index-pair": (lambda x, v: setitem(x, (idx(3, 0), idx(1, 5)), v[0, :2]), lambda: (r(4, 6), r(2, 6))),
    "index-and-slice": (lambda x, v: setitem(x, (idx(3, 0), slice(None, 3)), -1.0), lambda: (r(4, 6), r(2, 6))),
    "none": (lambda x, v: setitem(x, (None, 0), v[:1]), lambda: (r(4, 6), r(2, 6))),
    "other-dtype": (lambda x, v: setitem(x, 0, v[0].double()), lambda: (r(4, 6), r(2, 6))),
    "int-tensor": (lambda x, v: setitem(x, (slice(None), 0), 9), lambda: (torch.arange(12).view(4, 3), r(2))),
    "bool-tensor": (lambda x, v: setitem(x, x, False), lambda: (torch.rand(4, 3) > 0.5, r(2))),
}


@pytest.mark.parametrize("name", list(SETITEM))
def test_setitem(name):
    fn, make = SETITEM[name]

    def write(x, v):
        fn(x, v)
        return x
    check(write, lambda b: make())


def test_setitem_symbolic_batch():
    def write(x, v):
        setitem(x, (slice(None), 0), v)
        setitem(x, x < -1, 0.0)
        setitem(x, -1, 3.0)
        return x
    check(write, lambda b: (r(b, 5), r(b)), dynamic=BY, sizes=SIZES)


# ---- gather, scatter and friends ------------------------------------------------------------------
def test_gather_scatter_smaller_index():
    def fn(x, i, s):
        return (torch.gather(x, 1, i), torch.scatter(x, 1, i, s), torch.scatter(x, 0, i[:2] % 4, 1.5),
                torch.scatter_add(x, 1, i, s), torch.index_select(x, 0, i[1]), torch.index_select(x, 1, i[0, 1]))
    check(fn, lambda b: (r(4, 5), torch.tensor([[0, 4], [2, 1], [3, 3]]), r(3, 4)))


def test_take_nonzero_and_masked_select():
    def fn(x, m):
        return (torch.nonzero(x > 0), torch.masked_select(x, m), torch.masked_select(x, m[0]), x.nonzero(),
                torch.nonzero(m))
    check(fn, lambda b: (r(3, 4), torch.rand(3, 4) > 0.5))


def test_repeat_interleave_tensor_repeats():
    def fn(x, reps):
        return torch.repeat_interleave(x, reps, dim=0), torch.repeat_interleave(x, reps[:1], dim=0), \
            torch.repeat_interleave(x[0], reps[:3])
    check(fn, lambda b: (r(4, 3), torch.tensor([2, 0, 1, 3])))


def _one_node_graph(op, xs, **consts):
    """A graph of one ``op`` node over inputs ``xs`` (a dict name -> example tensor) and constant arguments, for
    argument forms no frontend produces from a traceable model (fx cannot trace data-dependent splits)."""
    from bridge.ir.graph import Graph
    from bridge.ir.spec import spec_of

    g = Graph()
    args = {k: g.add_input(k, spec_of(v)) for k, v in xs.items()}
    args.update(consts)
    out = bridge.ops.get(op).impl(**xs, **consts)
    outs = out if isinstance(out, tuple) else (out,)
    node = g.add_node(op, args, outputs=[(f"out{i}", spec_of(o)) for i, o in enumerate(outs)])
    g.set_outputs(list(node.outputs))
    return g, outs


@pytest.mark.parametrize("sections", [torch.tensor([1, 4]), torch.tensor(3), torch.tensor([5, 2])])
def test_tensor_split_by_index_tensor(sections):
    xs = {"input": r(4, 6), "indices_or_sections": sections}
    g, expected = _one_node_graph("tensor_split", xs, dim=1)
    for opset in OPSETS:
        sess = session(bridge.to_onnx(g, None, opset=opset, optimize=False))
        got = sess.run(None, {k: v.numpy() for k, v in xs.items()})
        assert_same_outputs(tuple(torch.from_numpy(np.array(a)) for a in got), expected)


def test_tril_triu_int_and_bool():
    def fn(x, y):
        return x.tril(), x.triu(1), y.tril(-1), y.triu(), (x > 0).tril()
    check(fn, lambda b: (r(2, 4, 5), torch.randint(-5, 5, (4, 4), dtype=torch.int32)))


def test_view_dtype_bitcast():
    g = bridge.trace(F1(lambda x: x.view(torch.int32)), (r(2, 3),), frontend="fx")
    with pytest.raises(UnsupportedOpError, match="BitCast needs opset 26"):
        bridge.to_onnx(g, None, opset=17, optimize=False)
    if max_opset() >= 26:
        check(lambda x: (x.view(torch.int32), x.view(torch.float32)), lambda b: (r(2, 3),), opsets=[max_opset()])


# ---- the aten spellings (slice.Tensor, select.int, index.Tensor, split_with_sizes) via torch.export --------
def test_aten_slicing_through_export():
    def fn(x, i):
        return (x[:, 1:3], x[1:], x[::2, :, -3:], x[..., 1:BIG], x[-1], x[:, i], x[i, 1:, i], x[x > 0],
                x.split([2, 3], 1), x.narrow(2, 1, 3))
    xs = (r(4, 5, 6), torch.tensor([0, 2, 3]))
    model = F2(fn)
    g = bridge.trace(model, xs, frontend="export")
    assert g.find("slice") and not g.opaque_nodes(), str(g)
    for opset in OPSETS:
        sess = session(bridge.to_onnx(g, None, opset=opset, optimize=False))
        got = sess.run(None, {i.name: x.numpy() for i, x in zip(sess.get_inputs(), xs)})
        assert_same_outputs(tuple(torch.from_numpy(np.array(a)) for a in got), _tuple(model(*xs)))


# ---- scatter_reduce, masked_scatter, as_strided ---------------------------------------------------------------
REDUCES = ("sum", "prod", "mean", "amax", "amin")
DUP = torch.tensor([[0, 0, 4, 0], [2, 1, 2, 2], [3, 3, 3, 3]])  # duplicate writes, and positions never written


def _reduce_opsets(reduce):
    """ScatterElements reduces by max and min from opset 18 on."""
    return [o for o in OPSETS if o >= 18] if reduce in ("amax", "amin") else OPSETS


@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("reduce", REDUCES)
def test_scatter_reduce_every_reduction(reduce, include_self):
    def fn(x, i, s):  # a src larger than index (torch reads src[:index.shape]), integers (means floor)
        return (torch.scatter_reduce(x, 1, i, s[:, :4], reduce, include_self=include_self),
                x.scatter_reduce(0, i[:2] % 3, s, reduce, include_self=include_self),
                torch.scatter_reduce((x * 4).long(), 1, i, (s[:, 1:5] * 4).long(), reduce, include_self=include_self))
    check(fn, lambda b: (r(3, 5), DUP, r(3, 6)), opsets=_reduce_opsets(reduce))


@pytest.mark.parametrize("reduce", REDUCES)
def test_scatter_reduce_half(reduce):
    """float16 reduces in float32 in ONNX (as onnxruntime does for scatter_add): within half precision of eager,
    which rounds to half after each step."""
    model = F3(lambda x, i, s: torch.scatter_reduce(x, 1, i, s, reduce, include_self=False))
    xs = (r(3, 5).half(), DUP, r(3, 4).half())
    g = bridge.trace(model, xs, frontend="fx")
    for opset in _reduce_opsets(reduce):
        sess = session(bridge.to_onnx(g, None, opset=opset, optimize=False))
        (got,) = sess.run(None, {i.name: x.numpy() for i, x in zip(sess.get_inputs(), xs)})
        torch.testing.assert_close(torch.from_numpy(got), model(*xs), rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("reduce", REDUCES)
def test_scatter_reduce_through_export(reduce):
    model = F3(lambda x, i, s: torch.scatter_reduce(x, -1, i, s, reduce, include_self=False))
    xs = (r(2, 3, 5), DUP[None].expand(2, -1, -1).clone(), r(2, 3, 4))
    g = bridge.trace(model, xs, frontend="export")
    assert [n.op for n in g.nodes] == ["scatter_reduce"], str(g)
    torch.testing.assert_close(g.run(*xs), model(*xs))
    for opset in _reduce_opsets(reduce):
        sess = session(bridge.to_onnx(g, None, opset=opset, optimize=False))
        got = sess.run(None, {i.name: x.numpy() for i, x in zip(sess.get_inputs(), xs)})
        assert_same_outputs(torch.from_numpy(np.array(got[0])), model(*xs))


@pytest.mark.fault
@pytest.mark.parametrize("reduce", ["amax", "amin"])
def test_scatter_reduce_max_min_refused_before_opset_18(reduce):
    g = bridge.trace(F3(lambda x, i, s: x.scatter_reduce(1, i, s, reduce)), (r(3, 5), DUP, r(3, 4)), frontend="fx")
    with pytest.raises(UnsupportedOpError, match=f"reduce='{reduce}' needs .*opset 18"):
        bridge.to_onnx(g, None, opset=17, optimize=False)


def test_scatter_reduce_flops():
    """One operation per scattered element (index has 3 * 4); a mean adds one division per output element."""
    xs = (r(3, 5), DUP, r(3, 4))
    for reduce, expected in [("sum", 12), ("amax", 12), ("mean", 12 + 15)]:
        g = bridge.trace(F3(lambda x, i, s, red=reduce: torch.scatter_reduce(x, 1, i, s, red)), xs, frontend="fx")
        (node,) = g.nodes
        assert bridge.ops.get("scatter_reduce").flops(node) == expected, reduce


@pytest.mark.parametrize("reduction, reduce", [("mul", "prod"), ("max", "amax"), ("min", "amin"), ("add", None)])
def test_scatter_elements_reduction_import(reduction, reduce):
    """ScatterElements with a reduction imports as scatter_reduce (include_self) and runs as onnxruntime does."""
    from onnx import TensorProto, helper, numpy_helper

    from tests.helpers import import_matches_onnxruntime

    inits = [numpy_helper.from_array(DUP.numpy(), "i"), numpy_helper.from_array(r(3, 4).numpy(), "s")]
    node = helper.make_node("ScatterElements", ["x", "i", "s"], ["y"], axis=1, reduction=reduction)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    proto = helper.make_model(helper.make_graph([node], "s", [x], [y], initializer=inits),
                              opset_imports=[helper.make_opsetid("", 18)])
    g = import_matches_onnxruntime(proto, r(3, 5))
    (n,) = g.nodes
    assert (n.op, n.args.get("reduce")) == ("scatter_reduce" if reduce else "scatter_add", reduce)


def test_masked_scatter_broadcast_and_dtypes():
    def fn(x, m, s):  # the mask broadcast to x, x broadcast to the mask, more source than trues, integers
        return (x.masked_scatter(m, s), torch.masked_scatter(x, m[0], s), torch.masked_scatter(x[:1], m, s),
                (x * 10).long().masked_scatter(m, (s * 10).long()), x.masked_scatter(m.int().bool(), s[:15]))
    check(fn, lambda b: (r(3, 5), torch.rand(3, 5) > 0.5, r(20)))


def test_masked_scatter_through_export():
    model = F3(lambda x, m, s: x.masked_scatter(m, s))
    xs = (r(2, 3, 4), torch.rand(3, 4) > 0.3, r(30))
    g = bridge.trace(model, xs, frontend="export")
    assert [n.op for n in g.nodes] == ["masked_scatter"], str(g)
    for opset in OPSETS:
        sess = session(bridge.to_onnx(g, None, opset=opset, optimize=False))
        got = sess.run(None, {i.name: x.numpy() for i, x in zip(sess.get_inputs(), xs)})
        assert_same_outputs(torch.from_numpy(np.array(got[0])), model(*xs))


def test_as_strided_sizes_strides_offsets():
    def fn(x):  # overlapping windows, an offset, a 0-d view, a stride of 0, after a reshape and a contiguous copy
        return (torch.as_strided(x, (3, 4), (2, 1)), x.as_strided((2, 2, 3), (6, 1, 2), 5), x.as_strided((), (), 7),
                x.as_strided((2, 3), (0, 1)), x.reshape(4, 6).as_strided((4, 2), (1, 4), 1),
                x.t().contiguous().as_strided((3, 3), (4, 1)), x[[5, 0, 2]].as_strided((2, 2), (4, 1), 2))
    check(fn, lambda b: (r(6, 4),))


def test_as_strided_of_a_symbolic_batch():
    check(lambda x: (x.as_strided((2, 3), (4, 1), 1), (x.t() + 1).contiguous().as_strided((4,), (3,))),
          lambda b: (r(b, 4),), dynamic=B, sizes=SIZES)


def test_as_strided_through_export():
    model = F1(lambda x: (x.as_strided((2, 3), (1, 2), 1), torch.as_strided(x + 1, (4,), (3,))))
    xs = (r(3, 4),)
    g = bridge.trace(model, xs, frontend="export")
    assert g.find("as_strided") and not g.opaque_nodes(), str(g)
    for opset in OPSETS:
        sess = session(bridge.to_onnx(g, None, opset=opset, optimize=False))
        got = sess.run(None, {"x": xs[0].numpy()})
        assert_same_outputs(tuple(torch.from_numpy(np.array(a)) for a in got), model(*xs))


@pytest.mark.fault
@pytest.mark.parametrize("fn, why", [
    (lambda x: x.t().as_strided((2, 3), (1, 2)), "is not contiguous in torch"),
    (lambda x: x[:, 1:].as_strided((2, 3), (1, 2)), "is not contiguous in torch"),
    (lambda x: (x.t() * 2).as_strided((2, 3), (1, 2)), "is not contiguous in torch"),  # mul keeps the layout
    (lambda x: x[1:].as_strided((2, 3), (1, 2), 0), "starts at element 4 of its storage"),
    (lambda x: x[:2].as_strided((2, 3), (1, 4)), "reads element 9 of its input %\\w+, which has 8"),
])
def test_as_strided_of_a_strided_layout_runs_in_torch_and_is_refused_by_onnx(fn, why):
    """Eager as_strided reads the storage of a transposed or sliced input; bridge's torch run does the same, and
    ONNX export, which keeps no storage, refuses and says what to do."""
    model, x = F1(fn), r(3, 4)
    g = bridge.trace(model, (x,), frontend="fx")
    torch.testing.assert_close(g.run(x), model(x))
    with pytest.raises(UnsupportedOpError, match=f"as_strided: .*{why}"):
        bridge.to_onnx(g, None, opset=MIN_OPSET, optimize=False)


def test_as_strided_after_a_copying_op_exports():
    """A reshape that must copy, a contiguous() and advanced indexing give fresh contiguous tensors."""
    check(lambda x: (x.t().reshape(2, 6).as_strided((2, 3), (1, 2)), x.t().contiguous().as_strided((2, 2), (3, 1)),
                     x[[2, 0]].as_strided((3,), (2,), 1)), lambda b: (r(3, 4),))


def test_unfold_of_a_transposed_input_twice_in_a_row():
    """Tensor.unfold is its own op (a gather of windows), not the as_strided torch decomposes it to, so the
    windows of a transposed input export: timm's HaloAttn unfolds two dims of a padded, permuted tensor."""
    check(lambda x: ((x.transpose(2, 3) * 2).unfold(2, 4, 2).unfold(3, 3, 3), x.unfold(-1, 2, 1),
                     x.unfold(0, 1, 1)), lambda b: (r(b, 2, 7, 9),), dynamic=B, sizes=SIZES)


def test_unfold_along_a_symbolic_dim():
    check(lambda x: (x.t() + 1).unfold(0, 3, 2), lambda b: (r(2, b),), dynamic={"x": {1: "n"}}, sizes=(7, 8, 3))


def test_unfold_through_export_and_import():
    model, x = F1(lambda x: x.permute(0, 2, 1).unfold(1, 3, 2)), r(2, 5, 9)
    g = bridge.trace(model, (x,), frontend="export")
    assert g.find("unfold_dim") and not g.find("as_strided"), str(g)
    back = bridge.from_onnx(bridge.to_onnx(g, None))
    assert_same_outputs(back.run(x + 1), model(x + 1))


def test_index_select_of_a_0d_tensor():
    """torch reads a 0-d input as one element and gives a 0-d output; ONNX Gather needs rank 1 (found by
    benchmarks/opinfo.py). Checked in onnxruntime and on import, with a 1-d and a 0-d index."""
    import onnxruntime as ort

    from tests.helpers import Fn

    m = Fn(lambda x, i, j: (torch.index_select(x, 0, i) * 2, x.index_select(-1, j) + 1))
    args = (torch.tensor(3.0), torch.tensor([0]), torch.tensor(0))
    fresh = (torch.tensor(-1.5), torch.tensor([0]), torch.tensor(0))
    ref = m(*fresh)
    proto = bridge.to_onnx(m, args=args)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {i.name: t.numpy() for i, t in zip(sess.get_inputs(), fresh)})
    for a, b in zip(got, ref):
        assert a.shape == () and torch.equal(torch.from_numpy(a), b)
    for a, b in zip(bridge.from_onnx(proto).to_module()(*fresh), ref):
        assert torch.equal(a, b)
