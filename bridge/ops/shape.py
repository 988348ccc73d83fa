"""Shape and indexing: views, reshapes, permutations, concatenation and splitting, indexing.

Each op's section holds its definition, then its ONNX lowering, then its ONNX importer(s)."""
from __future__ import annotations

import builtins
import math
import operator

import torch
import torch.nn as nn

from ..ir.graph import Value, map_values
from ..ir.spec import TensorSpec
from ._util import dim_size, dim_values, nested_items, numel, out_numel, varargs_method, zero
from .onnx_helpers import (INT64_MAX, INT64_MIN, ONNX_DTYPE, Dims, cast_to, dim_of, one, positions, read_at_run_time,
                           run_dim, s_add, s_mul, shape_items, static_shape)
from .onnx_helpers import reshape as onnx_reshape
from .onnx_helpers import slice_ as onnx_slice
from .onnx_helpers import squeeze as onnx_squeeze
from .onnx_helpers import transpose as onnx_transpose
from .onnx_helpers import unsqueeze as onnx_unsqueeze
from .registry import onnx_import, onnx_lowering, register

# onnx_helpers' reshape, slice_, squeeze, transpose and unsqueeze are imported as onnx_*: the plain names are
# this family's ops.


# ---- family-wide helpers --------------------------------------------------------------------------
def _mod(fn):
    return lambda m, args, kwargs: (args, {**kwargs, **fn(m)})


def _tile(ctx, x: str, r: int, reps) -> str:
    reps = shape_items(reps)
    if len(reps) < r:
        reps = [1] * (r - len(reps)) + reps
    elif len(reps) > r:
        x = onnx_unsqueeze(ctx, x, range(len(reps) - r))
    return ctx.op("Tile", [x, ctx.ints(reps)])


def _tensor_list(ctx, tensors, out_dtype):
    """ONNX names of a list of tensors, each cast to the (promoted) output dtype."""
    return [cast_to(ctx, ctx.input(t), ctx.dtype(t), out_dtype) for t in tensors]


def _atleast(ctx, name: str, r: int, k: int) -> str:
    if r >= k:
        return name
    if r == 0:
        return ctx.op("Reshape", [name, ctx.const([1] * k)])
    return onnx_unsqueeze(ctx, name, [0])  # rank 1 -> [1, n] (only k == 2 reaches here)


def _concat_atleast(ctx, node, k: int, axis: int) -> str:
    """The tensors, each made at least ``k``-D, concatenated along ``axis`` (hstack, vstack)."""
    out = ctx.out_spec()
    ts = node.args["tensors"]
    names = [_atleast(ctx, n, ctx.rank(t), k) for n, t in zip(_tensor_list(ctx, ts, out.dtype), ts)]
    return ctx.op("Identity", names) if len(names) == 1 else ctx.op("Concat", names, axis=axis)


def _pieces(ctx, node, x: str, d: int, bounds) -> list[str]:
    """The outputs of a split: one ONNX Split when every piece's size is static and they tile the dim,
    else one Slice per ``(start, end)`` of ``bounds()`` (ints, scalar Values or 1-D names; ends clamp)."""
    n = len(node.outputs)
    sizes = [o.spec.shape[d] for o in node.outputs]
    full = ctx.spec("input").shape[d]
    if all(isinstance(s, int) for s in sizes) and isinstance(full, int) and sum(sizes) == full:
        if n == 1:
            return [ctx.op("Identity", [x])]
        return ctx.op("Split", [x, ctx.const(sizes)], n_out=n, axis=d)
    return [onnx_slice(ctx, x, [s], [e], [d]) for s, e in bounds()]


# indexing: x[index] with torch's semantics in ONNX (getitem, setitem), and the ND index of GatherND/ScatterND
def _is_tensor_value(a) -> bool:
    return isinstance(a, Value) and isinstance(a.spec, TensorSpec)


def _is_mask(ctx, a) -> bool:
    return ctx.dtype(a) in (torch.bool, torch.uint8)


def _index_items(ctx, index) -> list:
    """``index`` as a list of entries; python lists of numbers become constant index tensors (or masks)."""
    items = list(index) if isinstance(index, tuple) else [index]
    out = []
    for it in items:
        if isinstance(it, list) and not any(isinstance(v, (slice, type(None), type(Ellipsis))) for v in it):
            flat = list(nested_items(it))
            if any(isinstance(v, Value) for v in flat):
                if any(isinstance(v, list) for v in it):
                    ctx.unsupported("a nested python list index holding run-time sizes")
                out.append(("idx", ctx.ints(it), 1))
            elif flat and all(isinstance(v, bool) for v in flat):
                out.append(("mask", ctx.const(it, torch.bool), _list_rank(it)))
            else:
                out.append(("idx", ctx.const(it, torch.int64), _list_rank(it)))
        elif isinstance(it, torch.Tensor):
            is_mask = it.dtype in (torch.bool, torch.uint8)
            name = ctx.const(it, torch.bool if is_mask else torch.int64)
            out.append(("mask" if is_mask else "idx", name, it.dim()))
        else:
            out.append(it)
    return out


def _list_rank(v) -> int:
    r = 0
    while isinstance(v, (list, tuple)):
        r, v = r + 1, (v[0] if v else None)
    return r


def _index(ctx, x: str, rank: int, index) -> tuple[str, int]:
    """``x[index]`` with torch's semantics; returns (ONNX name, rank of the result).

    As torch does it (python_variable_indexing.cpp): ints select (and do not count as advanced indices), slices
    and None keep/insert a dim, then the tensor indices (a bool mask stands for its nonzero coordinates) index the
    result together. Their broadcast shape replaces the indexed dims in place when those are adjacent, else it
    goes first.
    """
    entries = []
    for it in _index_items(ctx, index):
        if isinstance(it, tuple) and len(it) == 3 and it[0] in ("idx", "mask"):
            entries.append(it)
        elif _is_tensor_value(it):
            kind = "mask" if _is_mask(ctx, it) else "idx"
            name = ctx.input(it)
            want = torch.bool if kind == "mask" else torch.int64
            if ctx.dtype(it) != want:
                name = ctx.cast(name, want)
            entries.append((kind, name, ctx.rank(it)))
        elif isinstance(it, Value):  # run-time python scalar
            if ctx.dtype(it) != torch.int64:
                ctx.unsupported(f"indexing with a run-time python {it.spec}")
            entries.append(("int", ctx.input(it)))
        elif isinstance(it, bool):
            entries.append(("bool", it))
        elif isinstance(it, int):
            entries.append(("int", ctx.const(it)))
        elif isinstance(it, slice) or it is None or it is Ellipsis:
            entries.append(it)
        else:
            ctx.unsupported(f"index entry {it!r}")
    consumed = sum(1 if isinstance(e, slice) or (isinstance(e, tuple) and e[0] in ("int", "idx")) else
                   e[2] if isinstance(e, tuple) and e[0] == "mask" else 0 for e in entries)
    n_ell = rank - consumed
    slices, selects, nones, empties, adv = [], [], [], [], []
    in_ax = out_ax = 0
    for e in entries:
        if e is Ellipsis:
            in_ax, out_ax = in_ax + n_ell, out_ax + n_ell
        elif e is None or (isinstance(e, tuple) and e[0] == "bool"):
            nones.append(out_ax)
            if isinstance(e, tuple) and not e[1]:
                empties.append(out_ax)
            out_ax += 1
        elif isinstance(e, slice):
            if not (e.start in (None, 0) and (e.stop is None or (isinstance(e.stop, int) and e.stop >= INT64_MAX))
                    and e.step in (None, 1)):
                slices.append((in_ax, e))
            in_ax, out_ax = in_ax + 1, out_ax + 1
        elif e[0] == "int":
            selects.append((in_ax, e[1]))
            in_ax += 1
        elif e[0] == "idx":
            adv.append((out_ax, e))
            in_ax, out_ax = in_ax + 1, out_ax + 1
        else:  # mask over e[2] dims
            adv.append((out_ax, e))
            in_ax, out_ax = in_ax + e[2], out_ax + e[2]
    y = x
    if slices:
        starts = [0 if s.start is None else s.start for _, s in slices]
        ends = [INT64_MAX if s.stop is None else s.stop for _, s in slices]
        steps = [1 if s.step is None else s.step for _, s in slices]
        y = onnx_slice(ctx, y, starts, ends, [a for a, _ in slices], steps)
    for a, i in sorted(selects, key=lambda s: -s[0]):
        y = ctx.op("Gather", [y, i], axis=a)
    r = rank - len(selects)
    if nones:
        y = onnx_unsqueeze(ctx, y, nones)
        r += len(nones)
        if empties:
            y = onnx_slice(ctx, y, [0] * len(empties), [0] * len(empties), empties)
    if not adv:
        return (y if y != x else ctx.op("Identity", [x])), r
    return _advanced(ctx, y, r, adv)


def _advanced(ctx, y: str, r: int, adv) -> tuple[str, int]:
    if len(adv) == 1:
        a, (kind, name, k) = adv[0]
        if kind == "idx":  # one index tensor: Gather puts its shape at the indexed dim
            return ctx.op("Gather", [y, name], axis=a), r - 1 + k
        if k == 0:
            ctx.unsupported("indexing with a 0-d bool tensor")
        if k > 1:  # merge the masked dims into one, then select along it
            pieces = []
            if a > 0:
                pieces.append(ctx.op("Shape", [y], start=0, end=a))
            pieces.append(ctx.const([-1]))
            if a + k < r:
                pieces.append(ctx.op("Shape", [y], start=a + k))
            y = ctx.op("Reshape", [y, ctx.op("Concat", pieces, axis=0) if len(pieces) > 1 else pieces[0]])
            name = ctx.op("Reshape", [name, ctx.const([-1])])
        return ctx.op("Compress", [y, name], axis=a), r - k + 1
    # several: int64 index tensors per indexed dim, broadcast together, one GatherND on the indexed dims first
    axes, idxs, nb = [], [], 0
    for a, (kind, name, k) in adv:
        if kind == "mask":
            nz = ctx.op("NonZero", [name])
            for j in range(k):
                axes.append(a + j)
                idxs.append(ctx.op("Gather", [nz, ctx.const(j)], axis=0))
            nb = max(nb, 1)
        else:
            size = ctx.op("Squeeze", [run_dim(ctx, y, a)])
            name = ctx.op("Where", [ctx.op("Less", [name, ctx.const(0)]), ctx.op("Add", [name, size]), name])
            axes.append(a)
            idxs.append(name)
            nb = max(nb, k)
    total = idxs[0]
    for i in idxs[1:]:
        total = ctx.op("Add", [total, i])
    bshape = ctx.op("Shape", [total])
    ind = ctx.op("Concat", [onnx_unsqueeze(ctx, ctx.op("Expand", [i, bshape]), [nb]) for i in idxs], axis=-1)
    others = [i for i in range(r) if i not in axes]
    out = ctx.op("GatherND", [onnx_transpose(ctx, y, axes + others), ind])
    out_r = nb + len(others)
    first = axes[0]
    if axes == list(range(first, first + len(axes))) and first > 0:  # adjacent: the indexed dims' place
        perm = [nb + i for i in range(first)] + list(range(nb)) + [nb + i for i in range(first, len(others))]
        out = onnx_transpose(ctx, out, perm)
    return out, out_r


def _nd_index(ctx, i):
    """The last axis of an ND index tensor as a tuple of index tensors (``x[idx[..., 0], idx[..., 1], ...]``)."""
    ind = ctx.input(i)
    k = ctx.shape(ind)[-1]
    if not isinstance(k, int):
        ctx.unsupported("an index tensor with a symbolic last dim")
    return tuple(ctx.call("select", input=ind, dim=-1, index=j) for j in range(k))


# ---- ONNX Shape and Size: importers only, sizes followed as Dims (the ops are python's size and numel) ----
@onnx_import("Shape")
def _shape_import(ctx):
    shape = ctx.shape(0)
    start, end = int(ctx.attr("start", 0)), ctx.attr("end")
    picked = list(range(len(shape)))[start:None if end is None else int(end)]
    if all(isinstance(shape[i], int) for i in picked):
        return torch.tensor([shape[i] for i in picked], dtype=torch.int64)
    return Dims(ctx.size(ctx.input(0), i) for i in picked)


@onnx_import("Size")
def _size_import(ctx):
    shape = ctx.shape(0)
    if all(isinstance(d, int) for d in shape):
        n = 1
        for d in shape:
            n *= d
        return torch.tensor(n, dtype=torch.int64)
    return Dims([ctx.call("numel", input=ctx.input(0))], scalar=True)


# ---- flatten --------------------------------------------------------------------------------------
@register("flatten", family="shape", functions=[torch.flatten], methods=["flatten"], aten=["flatten.using_ints"],
          modules={nn.Flatten: _mod(lambda m: dict(start_dim=m.start_dim, end_dim=m.end_dim))}, flops=zero, view=True)
def flatten(input, start_dim=0, end_dim=-1):
    return torch.flatten(input, start_dim, end_dim)


@onnx_lowering("flatten")
def _flatten_onnx(ctx, node):
    r = ctx.rank("input")
    s, e = node.args["start_dim"] % max(r, 1), node.args["end_dim"] % max(r, 1)
    if r == 0:
        return ctx.op("Reshape", [ctx.input("input"), ctx.const([1])])
    if e == r - 1:
        if s == 0:
            return ctx.op("Reshape", [ctx.input("input"), ctx.const([-1])])
        if s == 1:
            return ctx.op("Flatten", [ctx.input("input")], axis=1)
    shape = ctx.op("Shape", [ctx.input("input")])
    pieces = []
    if s > 0:
        pieces.append(ctx.op("Slice", [shape, ctx.const([0]), ctx.const([s])]))
    pieces.append(ctx.const([-1]))
    if e < r - 1:
        pieces.append(ctx.op("Slice", [shape, ctx.const([e + 1]), ctx.const([r])]))
    return ctx.op("Reshape", [ctx.input("input"), ctx.op("Concat", pieces, axis=0)])


@onnx_import("Flatten")
def _flatten_import(ctx):  # always 2-D: (prod(shape[:axis]), prod(shape[axis:]))
    x = ctx.input(0)
    r = ctx.rank(x)
    axis = int(ctx.attr("axis", 1))
    axis = (axis + r if axis < 0 else axis) if r else 0  # axis in [-r, r]: -1 is r - 1, not r
    if axis == 0:
        return ctx.call("unsqueeze", input=ctx.call("flatten", input=x, start_dim=0, end_dim=-1), dim=0)
    y = ctx.call("flatten", input=x, start_dim=axis, end_dim=-1) if axis < r else ctx.call("unsqueeze", input=x,
                                                                                           dim=-1)
    return ctx.call("flatten", input=y, start_dim=0, end_dim=axis - 1) if axis > 1 else y


# ---- unflatten ------------------------------------------------------------------------------------
@register("unflatten", family="shape", functions=[torch.unflatten], methods=["unflatten"], aten=["unflatten.int"],
          modules={nn.Unflatten: _mod(lambda m: dict(dim=m.dim, sizes=tuple(m.unflattened_size)))}, flops=zero,
          view=True)
def unflatten(input, dim, sizes):
    return torch.unflatten(input, dim, sizes)


@onnx_lowering("unflatten")
def _unflatten_onnx(ctx, node):
    x, r = ctx.input("input"), ctx.rank("input")
    d = node.args["dim"] % max(r, 1)
    sizes = shape_items(node.args["sizes"])
    out = ctx.out_spec()
    if isinstance(out, TensorSpec) and out.is_static:
        return ctx.op("Reshape", [x, ctx.const(list(out.shape))], allowzero=1 if 0 in out.shape else None)
    pieces = []
    if d > 0:
        pieces.append(ctx.op("Shape", [x], start=0, end=d))
    pieces.append(ctx.ints(sizes))
    if d < r - 1:
        pieces.append(ctx.op("Shape", [x], start=d + 1))
    shape = ctx.op("Concat", pieces, axis=0) if len(pieces) > 1 else pieces[0]
    return ctx.op("Reshape", [x, shape], allowzero=1)  # a run-time 0 is an empty dim, as in torch


# ---- view, reshape: one lowering ------------------------------------------------------------------
@register("view", family="shape", methods=[("view", varargs_method("shape"))], aten=["view.dtype"], flops=zero,
          view=True)
def view(input, shape):
    """input.view(shape); a dtype instead of a shape reinterprets the bytes."""
    return input.view(shape)


# aten.view in a torch.export graph is valid for the strides seen at export time, on that device: SDPA and other
# kernels lay their outputs out differently on CUDA, so a CPU-exported view can fail there. reshape is the same
# view wherever a view is possible, and copies only where the view would raise.
@register("reshape", family="shape", functions=[torch.reshape], methods=[("reshape", varargs_method("shape"))],
          aten=["reshape.default", "view.default", "_unsafe_view.default"], flops=zero, view=True)
def reshape(input, shape):
    return torch.reshape(input, shape)


def _itemsize(dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _view_onnx(ctx, node):
    shape = node.args["shape"]
    x = ctx.input("input")
    if isinstance(shape, torch.dtype):
        have = ctx.dtype("input")
        if shape == have:
            return ctx.op("Identity", [x])
        if _itemsize(shape) != _itemsize(have):
            ctx.unsupported(f"view as {shape} reinterprets {have} bytes with another element size "
                            "(ONNX BitCast keeps the element size)")
        if ctx.opset < 26:
            ctx.unsupported(f"view as {shape} reinterprets the bytes of a {have} tensor: ONNX BitCast needs "
                            f"opset 26 or newer (asked: {ctx.opset})")
        return ctx.op("BitCast", [x], to=ONNX_DTYPE[shape])
    if isinstance(shape, Value) and isinstance(shape.spec, TensorSpec):
        return ctx.op("Reshape", [x, ctx.cast(ctx.input(shape), torch.int64)])
    return onnx_reshape(ctx, x, shape_items(shape))


onnx_lowering("view")(_view_onnx)
onnx_lowering("reshape")(_view_onnx)


@onnx_import("BitCast")
def _bitcast_import(ctx):
    """The input's bytes read as another type of the same size: ``x.view(dtype)``."""
    from .onnx_helpers import torch_dtype

    x, dtype = ctx.input(0), torch_dtype(int(ctx.attr("to")))
    if _itemsize(dtype) != _itemsize(ctx.dtype(x)):
        ctx.unsupported(f"BitCast from {ctx.dtype(x)} to {dtype}, of another element size")
    return ctx.call("view", input=x, shape=dtype)


@onnx_import("Reshape")
def _reshape_import(ctx):
    raw, shape = ctx.raw(0), ctx.ints(1, run_time=True)
    if isinstance(raw, Dims) and len(shape) <= 1:  # sizes to a 1-element list, or back to a scalar
        return Dims(raw, scalar=not shape)
    x = ctx.input(0)
    if not ctx.attr("allowzero", 0):  # 0 copies the input's size in that dim
        shape = [ctx.size(x, i) if isinstance(d, int) and d == 0 else d for i, d in enumerate(shape)]
        if any(read_at_run_time(d) for d in shape[:ctx.rank(x)]):
            shape = _zero_copies(ctx, x, shape)
    return ctx.call("reshape", input=x, shape=shape)


def _zero_copies(ctx, x, shape: list) -> list:
    """ONNX Reshape's sizes read at run time, where a 0 copies the input's size in that dim: each such size ``d``
    at a dim ``i`` of the input becomes ``where(d == 0, x.size(i), d)``, computed when the module runs."""
    out = []
    for i, d in enumerate(shape):
        if i < ctx.rank(x) and read_at_run_time(d):
            t = ctx.call("tensor", data=d, dtype=torch.int64)
            n = ctx.call("tensor", data=ctx.size(x, i), dtype=torch.int64)
            d = ctx.call("item", input=ctx.call("where", condition=ctx.call("eq", input=t, other=0), input=n,
                                                other=t))
        out.append(d)
    return out


# ---- view_as --------------------------------------------------------------------------------------
@register("view_as", family="shape", methods=["view_as", "reshape_as"], flops=zero, view=True, n_tensor_params=2)
def view_as(input, other):
    return input.reshape(other.shape)


@onnx_lowering("view_as")
def _view_as_onnx(ctx, node):
    return ctx.op("Reshape", [ctx.input("input"), ctx.op("Shape", [ctx.input("other")])])


# ---- permute --------------------------------------------------------------------------------------
@register("permute", family="shape", functions=[torch.permute], methods=[("permute", varargs_method("dims"))],
          aten=["permute.default"], flops=zero, view=True)
def permute(input, dims):
    return torch.permute(input, dims)


@onnx_lowering("permute")
def _permute_onnx(ctx, node):
    r = ctx.rank("input")
    dims = shape_items(node.args["dims"])
    return ctx.op("Identity", [ctx.input("input")]) if r <= 1 else \
        ctx.op("Transpose", [ctx.input("input")], perm=[d % r for d in dims])


@onnx_import("Transpose")
def _transpose_import(ctx):
    x = ctx.input(0)
    perm = ctx.attr("perm") or list(range(ctx.rank(x)))[::-1]
    return ctx.call("permute", input=x, dims=[int(p) for p in perm])


# ---- transpose ------------------------------------------------------------------------------------
@register("transpose", family="shape", functions=[torch.transpose, torch.swapaxes, torch.swapdims],
          methods=["transpose", "swapaxes", "swapdims", "transpose_"], aten=["transpose.int"], flops=zero, view=True)
def transpose(input, dim0, dim1):
    return torch.transpose(input, dim0, dim1)


@onnx_lowering("transpose")
def _transpose_onnx(ctx, node):
    r = ctx.rank("input")
    x = ctx.input("input")
    if r <= 1:
        return ctx.op("Identity", [x])
    perm = list(range(r))
    a, b = node.args["dim0"] % r, node.args["dim1"] % r
    perm[a], perm[b] = perm[b], perm[a]
    return ctx.op("Identity", [x]) if a == b else ctx.op("Transpose", [x], perm=perm)


# ---- t --------------------------------------------------------------------------------------------
@register("t", family="shape", functions=[torch.t], methods=["t"], aten=["t.default"], flops=zero, view=True)
def t(input):
    """Transpose of a tensor of rank <= 2."""
    return torch.t(input)


@onnx_lowering("t")
def _t_onnx(ctx, node):
    x = ctx.input("input")
    return ctx.op("Transpose", [x], perm=[1, 0]) if ctx.rank("input") == 2 else ctx.op("Identity", [x])


# ---- movedim --------------------------------------------------------------------------------------
@register("movedim", family="shape", functions=[torch.movedim, torch.moveaxis], methods=["movedim", "moveaxis"],
          aten=["movedim.int"], flops=zero, view=True)
def movedim(input, source, destination):
    return torch.movedim(input, source, destination)


@onnx_lowering("movedim")
def _movedim_onnx(ctx, node):
    r = ctx.rank("input")
    x = ctx.input("input")
    src = [s % max(r, 1) for s in shape_items(node.args["source"])]
    dst = [d % max(r, 1) for d in shape_items(node.args["destination"])]
    if r <= 1:
        return ctx.op("Identity", [x])
    perm = [-1] * r
    for s, d in zip(src, dst):
        perm[d] = s
    rest = iter(i for i in range(r) if i not in src)
    for i in range(r):
        if perm[i] == -1:
            perm[i] = next(rest)
    return ctx.op("Transpose", [x], perm=perm) if perm != list(range(r)) else ctx.op("Identity", [x])


# ---- squeeze --------------------------------------------------------------------------------------
@register("squeeze", family="shape", functions=[torch.squeeze], methods=["squeeze", "squeeze_"],
          aten=["squeeze.default", "squeeze.dim", "squeeze.dims"], flops=zero, view=True)
def squeeze(input, dim=None):
    return torch.squeeze(input) if dim is None else torch.squeeze(input, dim)


@onnx_lowering("squeeze", complex=True)  # axes >= 0: a complex tensor's pairs stay whole
def _squeeze_onnx(ctx, node):
    x, r = ctx.input("input"), ctx.rank("input")
    shape = ctx.spec("input").shape
    dim = node.args["dim"]
    cand = range(r) if dim is None else [d % max(r, 1) for d in shape_items(dim)]
    axes = sorted({d for d in cand if r > 0 and shape[d] == 1})
    return onnx_squeeze(ctx, x, axes) if axes else ctx.op("Identity", [x])


@onnx_import("Squeeze")
def _squeeze_import(ctx):
    axes = ctx.ints(1, run_time=True) if ctx.has(1) else ctx.attr("axes")
    raw = ctx.raw(0)
    if isinstance(raw, Dims) and len(raw) == 1 and not raw.scalar:
        return Dims(raw, scalar=True)
    x = ctx.input(0)
    if axes is None:
        return ctx.call("squeeze", input=x)
    if any(isinstance(a, Value) for a in axes):  # read when the module runs: those dims have size 1
        return ctx.call_unknown_shape("squeeze", input=x, dim=tuple(axes), rank=ctx.rank(x) - len(axes))
    return ctx.call("squeeze", input=x, dim=tuple(int(a) % ctx.rank(x) for a in axes))


# ---- unsqueeze ------------------------------------------------------------------------------------
@register("unsqueeze", family="shape", functions=[torch.unsqueeze], methods=["unsqueeze", "unsqueeze_"],
          aten=["unsqueeze.default"], flops=zero, view=True)
def unsqueeze(input, dim):
    return torch.unsqueeze(input, dim)


@onnx_lowering("unsqueeze", complex=True)  # axes >= 0: a complex tensor's pairs stay whole
def _unsqueeze_onnx(ctx, node):
    r = ctx.rank("input")
    return onnx_unsqueeze(ctx, ctx.input("input"), [node.args["dim"] % (r + 1)])


@onnx_import("Unsqueeze")
def _unsqueeze_import(ctx):
    axes = ctx.axes(1) if ctx.const(1) is not None or isinstance(ctx.raw(1), Dims) or not ctx.has(1) else None
    raw = ctx.raw(0)
    if axes is not None and isinstance(raw, Dims) and raw.scalar and len(axes) == 1:
        return Dims(raw)
    x = ctx.input(0)
    if axes is None:  # axes read when the module runs: made non-negative and sorted there, inserted in order
        a = ctx.input(1)
        r = ctx.rank(x) + ctx.shape(a)[0] if ctx.rank(a) == 1 else None
        if r is None or not isinstance(r, int):
            ctx.unsupported("axes computed at run time must be a 1-D tensor of a static length")
        a = ctx.call("where", condition=ctx.call("lt", input=a, other=0), input=ctx.call("add", input=a, other=r),
                     other=a)
        dims = ctx.run_time_ints(ctx.call("sort", input=a)[0])
        if dims is None:
            ctx.unsupported("axes computed at run time must be an integer tensor of at most 64 elements")
        for d in dims:
            x = ctx.call_unknown_shape("unsqueeze", input=x, dim=d, rank=ctx.rank(x) + 1)
        return x
    r = ctx.rank(x) + len(axes)
    for a in sorted(a % r for a in axes):
        x = ctx.call("unsqueeze", input=x, dim=a)
    return x


# ---- expand ---------------------------------------------------------------------------------------
def _expand_aten(args, kwargs):
    return args[:2], {}


@register("expand", family="shape", functions=[torch.broadcast_to],
          methods=[("expand", varargs_method("size")), "broadcast_to"],
          aten=[("expand.default", _expand_aten), "broadcast_to.default"], flops=zero, view=True)
def expand(input, size):
    """input.expand(size), also spelled torch.broadcast_to (-1 keeps a dim)."""
    return input.expand(size)


def _expand_to(ctx, x: str, r: int, size) -> str:
    """torch ``expand``: ``-1`` keeps the dim (ONNX Expand broadcasts a 1 to the input's size)."""
    if isinstance(size, Value) and isinstance(size.spec, TensorSpec):
        return ctx.op("Expand", [x, ctx.input(size)])
    items = shape_items(size)
    lead = len(items) - r
    items = [1 if (not isinstance(v, Value) and v == -1 and i >= lead) else v for i, v in enumerate(items)]
    return ctx.op("Expand", [x, ctx.ints(items)])


@onnx_lowering("expand")
def _expand_onnx(ctx, node):
    return _expand_to(ctx, ctx.input("input"), ctx.rank("input"), node.args["size"])


@onnx_import("Expand")
def _expand_import(ctx):  # broadcasting both ways: a 1 in the shape keeps the input's size
    x, shape = ctx.input(0), ctx.ints(1, run_time=True)
    r = ctx.rank(x)
    big = len(shape)
    if big < r:
        shape = [1] * (r - big) + list(shape)
        big = r
    size = []
    for i, s in enumerate(shape):
        j = i - (big - r)
        have = ctx.shape(x)[j] if j >= 0 else None
        if j >= 0 and isinstance(s, int) and s == 1:
            s = -1
        elif j >= 0 and read_at_run_time(s) and have != 1:  # a 1 keeps the input's size, else equal to it
            s = -1 if isinstance(have, int) else ctx.call("python_call", fn=builtins.max, args=[ctx.size(x, j), s])
        size.append(s)
    if all(s == -1 for s in size[big - r:]) and big == r:
        return x
    return ctx.call("expand", input=x, size=size)


# ---- expand_as ------------------------------------------------------------------------------------
@register("expand_as", family="shape", methods=["expand_as"], flops=zero, view=True, n_tensor_params=2)
def expand_as(input, other):
    return input.expand_as(other)


@onnx_lowering("expand_as")
def _expand_as_onnx(ctx, node):
    return ctx.op("Expand", [ctx.input("input"), ctx.op("Shape", [ctx.input("other")])])


# ---- repeat ---------------------------------------------------------------------------------------
@register("repeat", family="shape", methods=[("repeat", varargs_method("repeats"))], aten=["repeat.default"],
          flops=zero)
def repeat(input, repeats):
    return input.repeat(repeats)


@onnx_lowering("repeat")
def _repeat_onnx(ctx, node):
    return _tile(ctx, ctx.input("input"), ctx.rank("input"), node.args["repeats"])


# ---- tile -----------------------------------------------------------------------------------------
@register("tile", family="shape", functions=[torch.tile], methods=[("tile", varargs_method("dims"))], flops=zero)
def tile(input, dims):
    return torch.tile(input, dims)


@onnx_lowering("tile")
def _tile_onnx(ctx, node):
    return _tile(ctx, ctx.input("input"), ctx.rank("input"), node.args["dims"])


@onnx_import("Tile")
def _tile_import(ctx):
    return ctx.call("tile", input=ctx.input(0), dims=ctx.ints(1, run_time=True))


# ---- repeat_interleave ----------------------------------------------------------------------------
@register("repeat_interleave", family="shape", functions=[torch.repeat_interleave], methods=["repeat_interleave"],
          aten=["repeat_interleave.self_int", "repeat_interleave.self_Tensor"], flops=zero,
          data_dependent=lambda node: isinstance(node.args["repeats"], Value) and node.args["output_size"] is None)
def repeat_interleave(input, repeats, dim=None, output_size=None):
    return torch.repeat_interleave(input, repeats, dim, output_size=output_size)


@onnx_lowering("repeat_interleave")
def _repeat_interleave_onnx(ctx, node):
    x, r = ctx.input("input"), ctx.rank("input")
    reps, dim = node.args["repeats"], node.args["dim"]
    if dim is None or r == 0:
        x, r, d = ctx.op("Reshape", [x, ctx.const([-1])]), 1, 0
    else:
        d = dim % r
    if isinstance(reps, Value) and isinstance(reps.spec, TensorSpec):
        # data-dependent: output j takes source i where cumsum(repeats)[i-1] <= j < cumsum(repeats)[i]
        rp = ctx.cast(ctx.input(reps), torch.int64) if ctx.dtype(reps) != torch.int64 else ctx.input(reps)
        rp = ctx.op("Expand", [ctx.op("Reshape", [rp, ctx.const([-1])]), run_dim(ctx, x, d)])
        cs = ctx.op("CumSum", [rp, ctx.const(0)])
        total = ctx.op("ReduceSum", [rp, ctx.const([0])], keepdims=0)
        j = ctx.op("Range", [ctx.const(0), total, ctx.const(1)])
        le = ctx.op("LessOrEqual", [onnx_unsqueeze(ctx, cs, [0]), onnx_unsqueeze(ctx, j, [1])])
        idx = ctx.op("ReduceSum", [ctx.cast(le, torch.int64), ctx.const([1])], keepdims=0)
        return ctx.op("Gather", [x, idx], axis=d)
    # x[..., n, ...] -> [..., n, 1, ...] -> expand to [..., n, reps, ...] -> [..., n*reps, ...]
    y = onnx_unsqueeze(ctx, x, [d + 1])
    y = ctx.op("Expand", [y, ctx.ints([1] * (d + 1) + [reps] + [1] * (r - d - 1))])
    pieces = []
    if d > 0:
        pieces.append(ctx.op("Shape", [x], start=0, end=d))
    pieces.append(ctx.const([-1]))
    if d < r - 1:
        pieces.append(ctx.op("Shape", [x], start=d + 1))
    return ctx.op("Reshape", [y, ctx.op("Concat", pieces, axis=0) if len(pieces) > 1 else pieces[0]])


# ---- cat ------------------------------------------------------------------------------------------
@register("cat", family="shape", functions=[torch.cat, torch.concat, torch.concatenate], aten=["cat.default"],
          flops=zero, fresh_output=True)
def cat(tensors, dim=0):
    """Concatenate along ``dim``."""
    return torch.cat(tensors, dim)


@onnx_lowering("cat")
def _cat_onnx(ctx, node):
    out = ctx.out_spec()
    r = out.rank
    # torch.cat skips legacy empty 1-D tensors next to tensors of higher rank
    ts = [t for t in node.args["tensors"] if not (ctx.rank(t) == 1 and r > 1 and ctx.spec(t).shape[0] == 0)]
    names = _tensor_list(ctx, ts, out.dtype)
    if len(names) == 1:
        return ctx.op("Identity", names)
    return ctx.op("Concat", names, axis=node.args["dim"] % r)


@onnx_import("Concat")
def _concat_import(ctx):
    raws = [ctx.raw(i) for i in range(ctx.n_inputs) if ctx.has(i)]
    if any(isinstance(r, Dims) for r in raws) and all(
            isinstance(r, Dims) and not r.scalar or (c := ctx.const(i)) is not None and c.dim() == 1
            for i, r in enumerate(raws)):
        out = Dims()
        for i, r in enumerate(raws):
            out.extend(r if isinstance(r, Dims) else ctx.ints(i))
        return out
    ins = [ctx.input(i) for i in range(ctx.n_inputs) if ctx.has(i)]
    return ctx.call("cat", tensors=ins, dim=int(ctx.attr("axis")))


# ---- stack ----------------------------------------------------------------------------------------
@register("stack", family="shape", functions=[torch.stack], aten=["stack.default"], flops=zero)
def stack(tensors, dim=0):
    return torch.stack(tensors, dim)


@onnx_lowering("stack")
def _stack_onnx(ctx, node):
    out = ctx.out_spec()
    d = node.args["dim"] % out.rank
    names = [onnx_unsqueeze(ctx, n, [d]) for n in _tensor_list(ctx, node.args["tensors"], out.dtype)]
    return ctx.op("Identity", names) if len(names) == 1 else ctx.op("Concat", names, axis=d)


# ---- hstack ---------------------------------------------------------------------------------------
@register("hstack", family="shape", functions=[torch.hstack], flops=zero)
def hstack(tensors):
    return torch.hstack(tensors)


@onnx_lowering("hstack")
def _hstack_onnx(ctx, node):
    return _concat_atleast(ctx, node, 1, 0 if ctx.out_spec().rank == 1 else 1)


# ---- vstack ---------------------------------------------------------------------------------------
@register("vstack", family="shape", functions=[torch.vstack], flops=zero)
def vstack(tensors):
    return torch.vstack(tensors)


@onnx_lowering("vstack")
def _vstack_onnx(ctx, node):
    return _concat_atleast(ctx, node, 2, 0)


# ---- split ----------------------------------------------------------------------------------------
@register("split", family="shape", functions=[torch.split], methods=["split"],
          aten=["split.Tensor", "split_with_sizes.default"], flops=zero, view=True)
def split(input, split_size_or_sections, dim=0):
    """Split into pieces of a size, or of the listed sizes; a tuple of tensors."""
    return tuple(torch.split(input, split_size_or_sections, dim))


@onnx_lowering("split")
def _split_onnx(ctx, node):
    x, r = ctx.input("input"), ctx.rank("input")
    d = node.args["dim"] % r
    n = len(node.outputs)
    sec = node.args["split_size_or_sections"]

    def bounds():
        out = []
        if isinstance(sec, (list, tuple)):
            start = 0
            for s in sec:
                end = s_add(ctx, start, s)
                out.append((start, end))
                start = end
        else:
            for i in range(n):
                out.append((s_mul(ctx, sec, i), s_mul(ctx, sec, i + 1) if i < n - 1 else INT64_MAX))
        return out
    return _pieces(ctx, node, x, d, bounds)


def _split_import(ctx, n: int):
    """Split input 0 along ``axis`` by the sizes in input 1, else into ``n`` pieces of ceil(size / n)."""
    x = ctx.input(0)
    axis = int(ctx.attr("axis", 0))
    split = ctx.ints(1, run_time=True)
    if split:
        parts = ctx.call("split", input=x, split_size_or_sections=list(split), dim=axis)
    else:
        size = ctx.shape(x)[axis]
        if isinstance(size, int):
            parts = ctx.call("split", input=x, split_size_or_sections=-(-size // n), dim=axis)
        else:
            parts = ctx.call("chunk", input=x, chunks=n, dim=axis)
    return list(parts)


@onnx_import("Split", since=13)
def _split13_import(ctx):  # without sizes: equal pieces, one per output
    return _split_import(ctx, len(ctx.node.output))


@onnx_import("Split", since=18)
def _split18_import(ctx):  # without sizes: num_outputs pieces, the last smaller when the dim does not divide
    return _split_import(ctx, int(ctx.attr("num_outputs", len(ctx.node.output))))


# ---- chunk ----------------------------------------------------------------------------------------
@register("chunk", family="shape", functions=[torch.chunk], methods=["chunk"], aten=["chunk.default"], flops=zero,
          view=True)
def chunk(input, chunks, dim=0):
    return tuple(torch.chunk(input, chunks, dim))


@onnx_lowering("chunk")
def _chunk_onnx(ctx, node):
    x, r = ctx.input("input"), ctx.rank("input")
    d = node.args["dim"] % r
    n = len(node.outputs)
    full = ctx.spec("input").shape[d]
    chunks = node.args["chunks"]

    def bounds():
        if isinstance(full, int) and isinstance(chunks, int):
            size = -(-full // chunks)
        else:  # ceil(dim / chunks) at run time
            num = s_add(ctx, dim_of(ctx, "input", x, d), s_add(ctx, chunks, -1))
            size = ctx.op("Div", [one(ctx, num), one(ctx, chunks)])
        return [(s_mul(ctx, size, i), s_mul(ctx, size, i + 1) if i < n - 1 else INT64_MAX) for i in range(n)]
    return _pieces(ctx, node, x, d, bounds)


# ---- tensor_split ---------------------------------------------------------------------------------
def _runtime_tensor(a) -> bool:
    """A tensor of indices (or a 0-d number of sections) known only at run time: the pieces' sizes are its values."""
    return isinstance(a, Value) and not a.is_const


@register("tensor_split", family="shape", functions=[torch.tensor_split], methods=["tensor_split"], flops=zero,
          view=True, data_dependent=lambda node: _runtime_tensor(node.args["indices_or_sections"]))
def tensor_split(input, indices_or_sections, dim=0):
    return tuple(torch.tensor_split(input, indices_or_sections, dim))


@onnx_lowering("tensor_split")
def _tensor_split_onnx(ctx, node):
    x, r = ctx.input("input"), ctx.rank("input")
    d = node.args["dim"] % r
    n = len(node.outputs)
    ios = node.args["indices_or_sections"]
    full = ctx.spec("input").shape[d]

    def bounds():
        k = ios
        if isinstance(k, Value) and isinstance(k.spec, TensorSpec):
            t = ctx.cast(ctx.input(k), torch.int64) if ctx.dtype(k) != torch.int64 else ctx.input(k)
            if ctx.rank(k) > 0:  # a 1-D tensor of indices
                idx = [ctx.op("Slice", [t, ctx.const([i]), ctx.const([i + 1])]) for i in range(n - 1)]
                return list(zip([0] + idx, idx + [INT64_MAX]))
            k = ctx.op("Reshape", [t, ctx.const([1])])  # a 0-d tensor is a number of sections
        if isinstance(k, (list, tuple)):
            return list(zip([0] + list(k), list(k) + [INT64_MAX]))
        if isinstance(full, int) and isinstance(k, int):
            q, rem = divmod(full, k)
            starts = [i * q + min(i, rem) for i in range(n + 1)]
        else:  # piece i starts at i*q + min(i, rem), q, rem = divmod(dim, sections)
            dim_n, k = dim_of(ctx, "input", x, d), one(ctx, k)
            q, rem = ctx.op("Div", [dim_n, k]), ctx.op("Mod", [dim_n, k])
            starts = [ctx.op("Add", [one(ctx, s_mul(ctx, q, i)), ctx.op("Min", [ctx.const([i]), rem])])
                      for i in range(n + 1)]
        return list(zip(starts[:-1], starts[1:]))
    return _pieces(ctx, node, x, d, bounds)


# ---- unbind ---------------------------------------------------------------------------------------
@register("unbind", family="shape", functions=[torch.unbind], methods=["unbind"], aten=["unbind.int"], flops=zero,
          view=True)
def unbind(input, dim=0):
    return tuple(torch.unbind(input, dim))


@onnx_lowering("unbind")
def _unbind_onnx(ctx, node):
    x, r = ctx.input("input"), ctx.rank("input")
    d = node.args["dim"] % r
    n = len(node.outputs)
    if n == 1:
        return [onnx_squeeze(ctx, x, [d])]
    parts = ctx.op("Split", [x, ctx.const([1] * n)], n_out=n, axis=d)
    return [onnx_squeeze(ctx, p, [d]) for p in parts]


# ---- getitem --------------------------------------------------------------------------------------
def _aten_index(args, kwargs):
    """aten.index.Tensor(self, indices): a ``None`` index means the whole dim (``:``), not a new axis."""
    b = dict(zip(("input", "indices"), args), **kwargs)
    return (b["input"], tuple(slice(None) if i is None else i for i in b["indices"])), {}


def _mask_index(node) -> bool:
    """Is a bool (or uint8) tensor among the indices? ``x[mask]`` has as many rows as ``mask`` has trues."""
    index = node.args["index"]
    return any(isinstance(i, Value) and getattr(i.spec, "dtype", None) in (torch.bool, torch.uint8)
               for i in (index if isinstance(index, (tuple, list)) else (index,)))


@register("getitem", family="shape", functions=[operator.getitem], methods=["__getitem__"],
          aten=[("index.Tensor", _aten_index)], flops=zero, data_dependent=_mask_index)
def getitem(input, index):
    """input[index]: ints, slices, None, Ellipsis, bool masks and index tensors."""
    return input[index]


@onnx_lowering("getitem", complex=True)  # ints, slices, None and ... pick leading axes: complex pairs stay whole
def _getitem_onnx(ctx, node):
    if not _is_tensor_value(node.args["input"]):
        ctx.unsupported(f"indexing a python {ctx.spec('input')}")
    if ctx.dtype("input").is_complex and any(v is not node.args["input"] for v in node.inputs):
        ctx.unsupported("indexing a complex tensor with tensors or run-time numbers")
    y, _ = _index(ctx, ctx.input("input"), ctx.rank("input"), node.args["index"])
    return y


@onnx_import("GatherND")
def _gather_nd_import(ctx):
    if ctx.attr("batch_dims", 0):
        ctx.unsupported("GatherND with batch_dims > 0")
    return ctx.call("getitem", input=ctx.input(0), index=_nd_index(ctx, 1))


# ---- setitem --------------------------------------------------------------------------------------
def _rank(v) -> int:
    return len(v.spec.shape) if hasattr(getattr(v, "spec", None), "shape") else v.dim()


def _index_put(args, kwargs):
    x, indices, values, *rest = args
    if (rest and rest[0]) or kwargs.get("accumulate"):
        raise NotImplementedError("index_put with accumulate=True")  # stays opaque, which runs it
    return (x, tuple(slice(None) if i is None else i for i in indices), values), {}


def _select_scatter(args, kwargs):
    names = ("input", "src", "dim", "index")
    b = dict(zip(names, args), **kwargs)
    dim = b["dim"] % _rank(b["input"])
    return (b["input"], (slice(None),) * dim + (b["index"],), b["src"]), {}


def _slice_scatter(args, kwargs):
    names = ("input", "src", "dim", "start", "end", "step")
    b = {"dim": 0, "start": None, "end": None, "step": 1, **dict(zip(names, args)), **kwargs}
    dim = b["dim"] % _rank(b["input"])
    return (b["input"], (slice(None),) * dim + (slice(b["start"], b["end"], b["step"]),), b["src"]), {}


def _whole(args, kwargs):
    """copy(self, src) and fill(self, value): every element written, as ``self[...] = src``."""
    return (args[0], (Ellipsis,), args[1]), {}


@register("setitem", family="shape", functions=[operator.setitem], methods=["__setitem__"],
          aten=[("index_put.default", _index_put), ("select_scatter.default", _select_scatter),
                ("slice_scatter.default", _slice_scatter), ("copy.default", _whole), ("fill.Scalar", _whole),
                ("fill.Tensor", _whole)],
          flops=zero, n_tensor_params=3)
def setitem(input, index, value):
    """A copy of ``input`` with ``input[index] = value`` (the functional form of an in-place write)."""
    out = input.clone()
    out[index] = value
    return out


@onnx_lowering("setitem")
def _setitem_onnx(ctx, node):
    x, r, dt = ctx.input("input"), ctx.rank("input"), ctx.dtype("input")
    index, value = node.args["index"], node.args["value"]
    if isinstance(value, Value):
        v = cast_to(ctx, ctx.input(value), ctx.dtype(value), dt)
        vr = ctx.rank(value)
    else:
        v, vr = ctx.const(value, dt), 0
    if _is_tensor_value(index) and _is_mask(ctx, index) and ctx.rank(index) == r and vr == 0:
        m = ctx.input(index)  # x[mask] = scalar: a where
        if ctx.dtype(index) != torch.bool:
            m = ctx.cast(m, torch.bool)
        if dt == torch.bool:  # onnxruntime has no bool Where
            u8 = ctx.op("Where", [m, ctx.cast(v, torch.uint8), ctx.cast(x, torch.uint8)])
            return ctx.cast(u8, torch.bool)
        return ctx.op("Where", [m, v, x])
    # general: index a tensor of flat positions the same way, scatter the (broadcast) value there
    shape = ctx.spec("input").shape
    static = all(isinstance(d, int) for d in shape)
    pos, pr = _index(ctx, positions(ctx, x, shape), r, index)
    if vr > pr:  # torch drops the value's extra leading 1-dims
        v = ctx.op("Reshape", [v, ctx.op("Shape", [v], start=vr - pr)])
    v = ctx.op("Expand", [v, ctx.op("Shape", [pos])])
    flat = ctx.op("ScatterND", [ctx.op("Reshape", [x, ctx.const([-1])]), onnx_unsqueeze(ctx, pos, [pr]), v])
    return ctx.op("Reshape", [flat, ctx.const(list(shape)) if static else ctx.op("Shape", [x])])


_SCATTER_ND_REDUCE = {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}


@onnx_import("ScatterND")
def _scatter_nd_import(ctx):
    """data[indices[u]] = updates[u]; with a reduction, combined with what is there (every update of one slot,
    in turn), as scatter_reduce over the data flattened to (slots, slot size)."""
    reduction = ctx.attr("reduction", "none")
    if reduction == "none":
        return ctx.call("setitem", input=ctx.input(0), index=_nd_index(ctx, 1), value=ctx.input(2))
    data, ind, upd = ctx.input(0), ctx.input(1), ctx.input(2)
    shape, k = ctx.shape(data), ctx.shape(ind)[-1]
    if reduction not in _SCATTER_ND_REDUCE or not isinstance(k, int) or not all(isinstance(d, int) for d in shape):
        ctx.unsupported(f"ScatterND with reduction={reduction!r} on symbolic sizes")
    slot = math.prod(shape[k:])
    lin = None  # each update's slot: its index's row-major position over the first k dims
    for j in range(k):  # negative indices count from the end of their dim
        idx = _wrap_negative(ctx, ctx.call("select", input=ind, dim=-1, index=j), shape[j])
        term = ctx.call("mul", input=idx, other=math.prod(shape[j + 1:k]))
        lin = term if lin is None else ctx.call("add", input=lin, other=term)
    lin = ctx.call("expand", input=ctx.call("reshape", input=lin, shape=[-1, 1]), size=[-1, slot])
    out = ctx.call("scatter_reduce", input=ctx.call("reshape", input=data, shape=[-1, slot]), dim=0, index=lin,
                   src=ctx.call("reshape", input=upd, shape=[-1, slot]), reduce=_SCATTER_ND_REDUCE[reduction])
    return ctx.call("reshape", input=out, shape=list(shape))


# ---- select ---------------------------------------------------------------------------------------
@register("select", family="shape", functions=[torch.select], methods=["select"],
          aten=["select.int", "select_copy.int"], flops=zero, view=True)  # select_copy: torch.export's, in scans
def select(input, dim, index):
    return torch.select(input, dim, index)


@onnx_lowering("select", complex=True)  # axes >= 0: a complex tensor's pairs stay whole
def _select_onnx(ctx, node):
    r = ctx.rank("input")
    return ctx.op("Gather", [ctx.input("input"), ctx.input("index")], axis=node.args["dim"] % r)


# ---- slice ----------------------------------------------------------------------------------------
@register("slice", family="shape", aten=["slice.Tensor"], flops=zero, view=True)
def slice_(input, dim=0, start=None, end=None, step=1):
    """input[..., start:end:step, ...] along ``dim``."""
    idx = [slice(None)] * (dim % input.dim()) + [slice(start, end, step)]
    return input[tuple(idx)]


@onnx_lowering("slice", complex=True)  # the axis is >= 0: the same axis of a complex tensor's [..., 2] pairs
def _slice_onnx(ctx, node):
    a = node.args
    r = ctx.rank("input")
    start = 0 if a["start"] is None else a["start"]
    end = INT64_MAX if a["end"] is None else a["end"]
    return onnx_slice(ctx, ctx.input("input"), [start], [end], [a["dim"] % r], [a["step"]])


def _onnx_slice_indices(dim: int, start: int, end: int, step: int) -> list[int]:
    """The indices ONNX Slice picks along a dim of static size ``dim`` (its clamping rules)."""
    start, end = start + dim if start < 0 else start, end + dim if end < 0 else end
    if step > 0:
        start, end = min(max(start, 0), dim), min(max(end, 0), dim)
    else:
        start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
    return list(range(start, end, step))


@onnx_import("Slice")
def _slice_import(ctx):
    starts, ends = ctx.ints(1, run_time=True), ctx.ints(2, run_time=True)
    axes = ctx.ints(3, run_time=True) if ctx.has(3) else list(range(len(starts)))
    steps = ctx.ints(4, run_time=True) if ctx.has(4) else [1] * len(starts)
    raw = ctx.raw(0)
    if isinstance(raw, Dims) and all(isinstance(v, int) for v in starts + ends + steps):
        return Dims(raw[slice(starts[0], None if ends[0] >= INT64_MAX else ends[0], steps[0])])
    x = ctx.input(0)
    shape = ctx.shape(x)
    for s, e, a, st in zip(starts, ends, axes, steps):
        if isinstance(a, Value):  # an axis read when the module runs: torch's slice clamps as ONNX's does
            x = ctx.call_unknown_shape("slice", input=x, dim=a, start=s, end=e, step=st)
            continue
        a = a % len(shape)
        size = shape[a]
        if isinstance(st, int) and st < 0:
            if not (isinstance(size, int) and isinstance(s, int) and isinstance(e, int)):
                ctx.unsupported("a negative step over a symbolic dim or with run-time bounds")
            idx = _onnx_slice_indices(size, s, e, st)
            x = ctx.call("index_select", input=x, dim=a, index=torch.tensor(idx, dtype=torch.int64))
            continue
        if isinstance(size, int) and isinstance(s, int) and isinstance(e, int):
            idx = _onnx_slice_indices(size, s, e, st)
            if len(idx) == size:
                continue  # the whole dim
            s, e = (idx[0], idx[-1] + 1) if idx else (0, 0)
        else:
            e = None if isinstance(e, int) and e >= INT64_MAX // 2 else e
            s = None if isinstance(s, int) and s <= -(INT64_MAX // 2) else s
        x = ctx.call("slice", input=x, dim=a, start=s, end=e, step=st)
    return x


# ---- narrow ---------------------------------------------------------------------------------------
@register("narrow", family="shape", functions=[torch.narrow], methods=["narrow"], aten=["narrow.default"],
          flops=zero, view=True)
def narrow(input, dim, start, length):
    return torch.narrow(input, dim, start, length)


@onnx_lowering("narrow")
def _narrow_onnx(ctx, node):
    x, r = ctx.input("input"), ctx.rank("input")
    d = node.args["dim"] % r
    start, length = node.args["start"], node.args["length"]
    if _is_tensor_value(start):
        start = ctx.op("Reshape", [ctx.cast(ctx.input(start), torch.int64), ctx.const([1])])
    if isinstance(start, int) and start < 0:
        start = s_add(ctx, start, dim_of(ctx, "input", x, d)) if not isinstance(
            ctx.spec("input").shape[d], int) else start + ctx.spec("input").shape[d]
    elif not isinstance(start, int):  # run-time start: negative counts from the end
        s = one(ctx, start)
        start = ctx.op("Where", [ctx.op("Less", [s, ctx.const([0])]),
                                 ctx.op("Add", [s, dim_of(ctx, "input", x, d)]), s])
    return onnx_slice(ctx, x, [start], [s_add(ctx, start, length)], [d])


# ---- index_select ---------------------------------------------------------------------------------
@register("index_select", family="shape", functions=[torch.index_select], methods=["index_select"],
          aten=["index_select.default"], flops=zero, n_tensor_params=3)
def index_select(input, dim, index):
    return torch.index_select(input, dim, index)


@onnx_lowering("index_select")
def _index_select_onnx(ctx, node):
    r = ctx.rank("input")
    idx = ctx.input("index")
    if ctx.rank("index") == 0:
        idx = ctx.op("Reshape", [idx, ctx.const([1])])
    if ctx.dtype("index") not in (torch.int32, torch.int64):
        idx = ctx.cast(idx, torch.int64)
    if r == 0:  # torch reads a 0-d input as one element: its output is 0-d too
        x = ctx.op("Reshape", [ctx.input("input"), ctx.const([1])])
        return ctx.op("Reshape", [ctx.op("Gather", [x, idx], axis=0), ctx.const([], torch.int64)])
    return ctx.op("Gather", [ctx.input("input"), idx], axis=node.args["dim"] % r)


def _gather_by_flat_index(ctx, x, axis: int, flat_index, index_sizes: list):
    """Gather by an N-d index (N >= 2) given flattened: index_select, then the index's dims replace ``axis``."""
    flat = ctx.call("index_select", input=x, dim=axis, index=flat_index)
    sizes = ctx.sizes(x)
    return ctx.call("reshape", input=flat, shape=sizes[:axis] + index_sizes + sizes[axis + 1:])


@onnx_import("Gather")
def _gather_import(ctx):
    axis = int(ctx.attr("axis", 0))
    idx = ctx.const(1)
    raw = ctx.raw(0)
    if isinstance(raw, Dims) and idx is not None:
        picked = [raw[int(i)] for i in idx.reshape(-1).tolist()]
        return Dims(picked, scalar=idx.dim() == 0) if idx.dim() <= 1 else ctx.call(
            "reshape", input=ctx.materialize(Dims(picked)), shape=list(idx.shape))
    x = ctx.input(0)
    shape = ctx.shape(x)
    axis %= len(shape)
    size = shape[axis]
    if idx is not None:
        if isinstance(size, int):
            idx = torch.where(idx < 0, idx + size, idx)
        if idx.dim() == 0:
            return ctx.call("select", input=x, dim=axis, index=int(idx))
        if idx.dim() == 1:
            return ctx.call("index_select", input=x, dim=axis, index=idx)
        return _gather_by_flat_index(ctx, x, axis, idx.reshape(-1), list(idx.shape))
    ind = ctx.input(1)
    ir = ctx.rank(ind)
    if axis == 0 and len(shape) == 2 and isinstance(x, Value) and x.const is not None:
        return ctx.call("embedding", input=ind, weight=x)  # a lookup table indexed by ids
    if ir == 0:
        row = ctx.call("index_select", input=x, dim=axis, index=ctx.call("reshape", input=ind, shape=[1]))
        return ctx.call("squeeze", input=row, dim=axis)
    if ir == 1:
        return ctx.call("index_select", input=x, dim=axis, index=ind)
    return _gather_by_flat_index(ctx, x, axis, ctx.call("reshape", input=ind, shape=[-1]), ctx.sizes(ind))


# ---- gather ---------------------------------------------------------------------------------------
@register("gather", family="shape", functions=[torch.gather], methods=["gather"], aten=["gather.default"],
          flops=zero)
def gather(input, dim, index):
    return torch.gather(input, dim, index)


@onnx_lowering("gather")
def _gather_onnx(ctx, node):
    r = ctx.rank("input")
    if r == 0:  # every index is 0: the value, in the index's shape
        return ctx.op("Expand", [ctx.input("input"), ctx.op("Shape", [ctx.input("index")])])
    out = ctx.out_spec()
    if 0 in out.shape:  # torch lets an empty index have any rank; GatherElements does not
        return ctx.op("Identity", [ctx.const(torch.zeros(tuple(out.shape), dtype=out.dtype))])
    index = ctx.input("index")
    if ctx.dtype("index") not in (torch.int32, torch.int64):  # torch also takes uint8 (and other int) indices
        index = ctx.cast(index, torch.int64)
    return ctx.op("GatherElements", [ctx.input("input"), index], axis=node.args["dim"] % r)


_INDEX_OUTPUTS = {"argsort": 0, "argmax": 0, "argmin": 0, "nonzero": 0, "sort": 1, "topk": 1}  # op -> output
_SAME_ELEMENTS = frozenset({"slice", "select", "narrow", "reshape", "flatten", "unflatten", "unsqueeze", "squeeze",
                            "permute", "transpose", "expand", "contiguous", "clone"})


def non_negative(v) -> bool:
    """Is ``v`` (a Value) made of indices an op computed (sort's, argmax's, nonzero's, ...), through ops that only
    move or pick elements: never negative."""
    for _ in range(16):
        p = v.producer if isinstance(v, Value) else None
        if p is None:
            return False
        if p.op in _INDEX_OUTPUTS:
            return p.outputs.index(v) == _INDEX_OUTPUTS[p.op]
        if p.op not in _SAME_ELEMENTS:
            return False
        v = p.args.get("input")
    return False


def _wrap_negative(ctx, index, size, known=None):
    """ONNX indices may count from the end (-1 is the last); torch's scatter/gather take them from 0: ``index +
    size`` where negative. ``known``: the index's value when it is a constant (nothing to do if none is
    negative)."""
    if known is not None and not bool((known < 0).any()) or non_negative(index):
        return index
    return ctx.call("where", condition=ctx.call("lt", input=index, other=0),
                    input=ctx.call("add", input=index, other=size), other=index)


@onnx_import("GatherElements")
def _gather_elements_import(ctx):
    x, dim = ctx.input(0), int(ctx.attr("axis", 0))
    index = _wrap_negative(ctx, ctx.input(1), ctx.size(x, dim % ctx.rank(x)), ctx.const(1))
    return ctx.call("gather", input=x, dim=dim, index=index)


# ---- scatter, scatter_add: one lowering, by reduction ---------------------------------------------
@register("scatter", family="shape", functions=[torch.scatter], methods=["scatter", "scatter_"],
          aten=["scatter.src", "scatter.value"], flops=zero)
def scatter(input, dim, index, src):
    return torch.scatter(input, dim, index, src)


@register("scatter_add", family="shape", functions=[torch.scatter_add], methods=["scatter_add", "scatter_add_"],
          aten=["scatter_add.default"], flops=zero)
def scatter_add(input, dim, index, src):
    return torch.scatter_add(input, dim, index, src)


def _scatter_src(ctx, node, dt) -> str:
    """``src`` as ONNX ScatterElements' updates: index's shape and the input's dtype. torch reads only
    ``src[:index.shape]`` of a larger tensor, and broadcasts a scalar."""
    r, idx, src = ctx.rank("input"), ctx.input("index"), node.args["src"]
    if isinstance(src, Value) and _is_tensor_value(src):
        s = cast_to(ctx, ctx.input(src), ctx.dtype(src), dt)
        if ctx.spec(src).shape != ctx.spec("index").shape:
            s = ctx.op("Slice", [s, ctx.const([0] * r), ctx.op("Shape", [idx]), ctx.const(list(range(r)))])
        return s
    return ctx.op("Expand", [cast_to(ctx, ctx.input(src, dtype=dt), ctx.dtype(src), dt), ctx.op("Shape", [idx])])


def _scatter_lowering(reduction):
    def lower(ctx, node):
        x, r, dt = ctx.input("input"), ctx.rank("input"), ctx.dtype("input")
        idx, s = ctx.input("index"), _scatter_src(ctx, node, dt)
        if reduction and dt in (torch.float16, torch.bfloat16):  # onnxruntime adds in float32
            out = ctx.op("ScatterElements", [ctx.cast(x, torch.float32), idx, ctx.cast(s, torch.float32)],
                         axis=node.args["dim"] % max(r, 1), reduction=reduction)
            return ctx.cast(out, dt)
        return ctx.op("ScatterElements", [x, idx, s], axis=node.args["dim"] % max(r, 1), reduction=reduction)
    return lower


onnx_lowering("scatter")(_scatter_lowering(None))
onnx_lowering("scatter_add")(_scatter_lowering("add"))


# ---- scatter_reduce: ScatterElements with a reduction, plus identities and counts ------------------------
@register("scatter_reduce", family="shape", functions=[torch.scatter_reduce],
          methods=["scatter_reduce", "scatter_reduce_"], aten=["scatter_reduce.two"],
          flops=lambda node: numel(node.args["index"]) + (out_numel(node) if node.args["reduce"] == "mean" else 0))
def scatter_reduce(input, dim, index, src, reduce, include_self=True):
    """``input`` with ``src[i]`` reduced (sum, prod, mean, amax, amin) into position ``index[i]`` along ``dim``;
    with ``include_self=False`` the input's value at a position written to takes no part. FLOPs: one per
    scattered element, and for mean one division per output element (integer means round down, as torch's)."""
    return torch.scatter_reduce(input, dim, index, src, reduce, include_self=include_self)


_SCATTER_REDUCTIONS = {"sum": "add", "mean": "add", "prod": "mul", "amax": "max", "amin": "min"}


def _reduce_identity(reduce: str, dtype: torch.dtype):
    """The value that ``reduce`` leaves unchanged: where include_self=False, a written position starts from it."""
    if reduce in ("sum", "mean"):
        return 0
    if reduce == "prod":
        return 1
    if dtype.is_floating_point:
        return -math.inf if reduce == "amax" else math.inf
    info = torch.iinfo(dtype)
    return info.min if reduce == "amax" else info.max


@onnx_lowering("scatter_reduce")
def _scatter_reduce_onnx(ctx, node):
    reduce, include_self, dt = node.args["reduce"], bool(node.args["include_self"]), ctx.dtype("input")
    red = _SCATTER_REDUCTIONS.get(reduce)
    if red is None:
        ctx.unsupported(f"scatter_reduce with reduce={reduce!r} (torch takes sum, prod, mean, amax, amin)")
    if red in ("max", "min") and ctx.opset < 18:
        ctx.unsupported(f"scatter_reduce with reduce={reduce!r} needs ScatterElements' reduction={red!r}, which "
                        f"ONNX has from opset 18 (asked: {ctx.opset}); export at opset 18 or newer")
    if dt == torch.bool:
        ctx.unsupported("scatter_reduce of a bool tensor (ONNX ScatterElements reduces numbers only)")
    cdt = torch.float32 if dt in (torch.float16, torch.bfloat16) else dt  # onnxruntime reduces halves in float32
    x, idx = cast_to(ctx, ctx.input("input"), dt, cdt), ctx.input("index")
    axis = node.args["dim"] % max(ctx.rank("input"), 1)

    def scatter(base, updates, reduction=None):
        return ctx.op("ScatterElements", [base, idx, updates], axis=axis, reduction=reduction)

    def filled(value, like):
        return ctx.op("Expand", [ctx.const(value, cdt), ctx.op("Shape", [like])])

    out = scatter(x if include_self else scatter(x, filled(_reduce_identity(reduce, cdt), idx)),
                  cast_to(ctx, _scatter_src(ctx, node, dt), dt, cdt), red)
    if reduce == "mean":  # sum / count, the count of a written position starting at 1 with include_self, else 0
        ones = filled(1, x)
        counts = scatter(ones if include_self else scatter(ones, filled(0, idx)), filled(1, idx), "add")
        if not cdt.is_floating_point:  # exact division of sum - (sum mod count): torch floors integer means
            out = ctx.op("Sub", [out, ctx.op("Mod", [out, counts])])
        out = ctx.op("Div", [out, counts])
    return cast_to(ctx, out, cdt, dt)


_SCATTER_IMPORTS = {"mul": "prod", "max": "amax", "min": "amin"}


@onnx_import("ScatterElements")
def _scatter_elements_import(ctx):
    red = ctx.attr("reduction", "none")
    if red not in ("none", "add", *_SCATTER_IMPORTS):
        ctx.unsupported(f"ScatterElements with reduction={red!r}")
    x, dim, index = ctx.input(0), int(ctx.attr("axis", 0)), ctx.input(1)
    index = _wrap_negative(ctx, index, ctx.size(x, dim % ctx.rank(x)), ctx.const(1))
    args = {"input": x, "dim": dim, "index": index, "src": ctx.input(2)}
    if red in _SCATTER_IMPORTS:
        return ctx.call("scatter_reduce", **args, reduce=_SCATTER_IMPORTS[red], include_self=True)
    return ctx.call("scatter" if red == "none" else "scatter_add", **args)


# ---- masked_select --------------------------------------------------------------------------------
@register("masked_select", family="shape", functions=[torch.masked_select], methods=["masked_select"],
          aten=["masked_select.default"], flops=zero, n_tensor_params=2)
def masked_select(input, mask):
    return torch.masked_select(input, mask)


@onnx_lowering("masked_select")
def _masked_select_onnx(ctx, node):
    x, m = ctx.input("input"), ctx.input("mask")
    if ctx.dtype("mask") != torch.bool:
        m = ctx.cast(m, torch.bool)
    if ctx.spec("input").shape != ctx.spec("mask").shape:
        x = ctx.op("Expand", [x, ctx.op("Shape", [ctx.op("Or", [m, ctx.cast(x, torch.bool)])])])
        m = ctx.op("Expand", [m, ctx.op("Shape", [x])])
    flat = ctx.const([-1])  # Compress without an axis flattens its input, which must have a rank though
    return ctx.op("Compress", [ctx.op("Reshape", [x, flat]), ctx.op("Reshape", [m, flat])])


@onnx_import("Compress")
def _compress_import(ctx):  # the entries where condition is true, along axis (flattened without one)
    x = ctx.input(0)
    axis = ctx.attr("axis")
    if axis is None:
        x, axis = ctx.call("reshape", input=x, shape=[-1]), 0
    cond = ctx.call("reshape", input=ctx.call("to", input=ctx.input(1), dtype=torch.bool), shape=[-1])
    n = ctx.shape(x)[int(axis)]  # a condition shorter than the axis selects from its first entries only
    if isinstance(n, int) and ctx.shape(cond)[0] != n:
        x = ctx.call("slice", input=x, dim=int(axis), start=0, end=ctx.shape(cond)[0], step=1)
    idx = ctx.call("reshape", input=ctx.call("nonzero", input=cond), shape=[-1])
    return ctx.call("index_select", input=x, dim=int(axis), index=idx)


# ---- masked_scatter -------------------------------------------------------------------------------
@register("masked_scatter", family="shape", functions=[torch.masked_scatter],
          methods=["masked_scatter", "masked_scatter_"], aten=["masked_scatter.default"], flops=zero,
          n_tensor_params=3)
def masked_scatter(input, mask, source):
    """``input`` (broadcast with ``mask``) where the mask is false; its trues take ``source``'s elements in
    order (row-major), the k-th true the k-th element of ``source`` flattened."""
    return torch.masked_scatter(input, mask, source)


@onnx_lowering("masked_scatter")
def _masked_scatter_onnx(ctx, node):
    # each true's source index is the count of trues before it: CumSum of the flat mask, minus one
    x, m, dt = ctx.input("input"), ctx.input("mask"), ctx.dtype("input")
    if ctx.dtype("mask") != torch.bool:
        m = ctx.cast(m, torch.bool)
    if ctx.spec("input").shape != ctx.spec("mask").shape:  # Expand broadcasts both ways
        x = ctx.op("Expand", [x, ctx.op("Shape", [m])])
        m = ctx.op("Expand", [m, ctx.op("Shape", [x])])
    flat = ctx.const([-1])
    mf = ctx.op("Reshape", [m, flat])
    before = ctx.op("Sub", [ctx.op("CumSum", [ctx.cast(mf, torch.int64), ctx.const(0)]), ctx.const(1)])
    src = ctx.op("Reshape", [cast_to(ctx, ctx.input("source"), ctx.dtype("source"), dt), flat])
    taken = ctx.op("Gather", [src, ctx.op("Max", [before, ctx.const(0)])], axis=0)
    xf = ctx.op("Reshape", [x, flat])
    if dt == torch.bool:  # onnxruntime has no bool Where: (m and taken) or (not m and x)
        out = ctx.op("Or", [ctx.op("And", [mf, taken]), ctx.op("And", [ctx.op("Not", [mf]), xf])])
    else:
        out = ctx.op("Where", [mf, taken, xf])
    return ctx.op("Reshape", [out, ctx.op("Shape", [x])])


# ---- nonzero --------------------------------------------------------------------------------------
@register("nonzero", family="shape", functions=[torch.nonzero], methods=["nonzero"], aten=["nonzero.default"],
          flops=zero)
def nonzero(input):
    return torch.nonzero(input)


@onnx_lowering("nonzero")
def _nonzero_onnx(ctx, node):
    x = ctx.input("input")
    if ctx.dtype("input") != torch.bool:  # onnxruntime's NonZero lacks several dtypes; x != 0 is the same
        x = ctx.cast(x, torch.bool)
    if ctx.rank("input") == 0:  # torch: (n, 0) for n in {0, 1}; NonZero of the 1-d view is (1, n): keep 0 rows
        nz = ctx.op("NonZero", [ctx.op("Reshape", [x, ctx.ints([1])])])
        return ctx.op("Transpose", [ctx.op("Slice", [nz, ctx.ints([0]), ctx.ints([0]), ctx.ints([0])])], perm=[1, 0])
    return ctx.op("Transpose", [ctx.op("NonZero", [x])], perm=[1, 0])


@onnx_import("NonZero")
def _nonzero_import(ctx):  # ONNX: (rank, n); torch: (n, rank)
    return ctx.call("t", input=ctx.call("nonzero", input=ctx.input(0)))


# ---- unique ---------------------------------------------------------------------------------------
def _unique_aten(dim_given: bool):
    def adapt(args, kwargs):  # aten returns (values, inverse, counts) whatever the flags: ask for all three
        names = ["input", "dim"] if dim_given else ["input"]
        kw = {**dict(zip(names, args[:len(names)])), **kwargs}
        rest = dict(zip(["sorted", "return_inverse", "return_counts"], args[len(names):]))
        kw.update(rest, return_inverse=True, return_counts=True)
        kw.setdefault("sorted", True)
        return (), kw
    return adapt


@register("unique", family="shape", functions=[torch.unique], methods=["unique"],
          aten=[("_unique2.default", _unique_aten(False)), ("unique_dim.default", _unique_aten(True))], flops=zero)
def unique(input, sorted=True, return_inverse=False, return_counts=False, dim=None):
    """The distinct values of ``input`` (flattened, or the distinct slices along ``dim``), sorted, with the
    index of each input element's value (``return_inverse``) and each value's count (``return_counts``). torch
    leaves the order unspecified for ``sorted=False``; on CPU and in the ONNX file it is sorted as well."""
    return torch.unique(input, sorted=sorted, return_inverse=return_inverse, return_counts=return_counts, dim=dim)


_UNIQUE_DTYPES = (torch.float32, torch.float64, torch.int64, torch.int8)  # onnxruntime's Unique kernel


@onnx_lowering("unique")
def _unique_onnx(ctx, node):
    x, dt = ctx.input("input"), ctx.dtype("input")
    work = dt if dt in _UNIQUE_DTYPES else (torch.float64 if dt.is_floating_point else torch.int64)
    if work != dt:  # exact for every value of the narrower types
        x = cast_to(ctx, x, dt, work)
    dim = node.args["dim"]
    y, _, inverse, counts = ctx.op("Unique", [x], n_out=4, sorted=1,
                                   axis=None if dim is None else dim % max(ctx.rank("input"), 1))
    if work != dt:
        y = cast_to(ctx, y, work, dt)
    outs = [y]
    if node.args["return_inverse"]:
        # torch: the input's shape without a dim (one index per element), else one index per slice along dim
        outs.append(ctx.op("Reshape", [inverse, ctx.op("Shape", [ctx.input("input")])]) if dim is None
                    else inverse)
    if node.args["return_counts"]:
        outs.append(counts)
    return outs[0] if len(outs) == 1 else outs


@onnx_import("Unique")
def _unique_import(ctx):
    """Y, the index of each value's first occurrence, the inverse indices and the counts; ``sorted=0``: values
    in order of first occurrence."""
    axis = ctx.attr("axis")
    x = ctx.input(0)
    if axis is not None:
        axis = int(axis) % max(ctx.rank(0), 1)
    y, inverse, counts = ctx.call("unique", input=x, sorted=True, return_inverse=True, return_counts=True, dim=axis)
    if axis is None:
        inverse = ctx.call("reshape", input=inverse, shape=[-1])
    n = ctx.size(inverse, 0)
    # first occurrence: the least position among the elements (slices) that map to each value
    big = ctx.call("add", input=ctx.call("mul", input=counts, other=0), other=n)
    first = ctx.call("scatter_reduce", input=big, dim=0, index=inverse,
                     src=ctx.call("arange", start=0, end=n, step=1, dtype=torch.int64), reduce="amin",
                     include_self=True)
    if not ctx.attr("sorted", 1):  # in order of first occurrence
        order = ctx.call("argsort", input=first, dim=0)
        y = ctx.call("index_select", input=y, dim=0 if axis is None else axis, index=order)
        counts = ctx.call("index_select", input=counts, dim=0, index=order)
        first = ctx.call("index_select", input=first, dim=0, index=order)
        rank = ctx.call("argsort", input=order, dim=0)  # the new position of each sorted value
        inverse = ctx.call("index_select", input=rank, dim=0, index=inverse)
    return y, first, inverse, counts


# ---- flip -----------------------------------------------------------------------------------------
@register("flip", family="shape", functions=[torch.flip], methods=[("flip", varargs_method("dims"))],
          aten=["flip.default"], flops=zero)
def flip(input, dims):
    return torch.flip(input, dims)


@onnx_lowering("flip")
def _flip_onnx(ctx, node):
    r = ctx.rank("input")
    x = ctx.input("input")
    dims = sorted({d % max(r, 1) for d in shape_items(node.args["dims"])})
    if r == 0 or not dims:
        return ctx.op("Identity", [x])
    n = len(dims)
    return onnx_slice(ctx, x, [-1] * n, [INT64_MIN] * n, dims, [-1] * n)


# ---- roll -----------------------------------------------------------------------------------------
@register("roll", family="shape", functions=[torch.roll], methods=["roll"], aten=["roll.default"], flops=zero)
def roll(input, shifts, dims=None):
    return torch.roll(input, shifts, dims)


def _roll(ctx, x: str, shape, d: int, shift) -> str:
    n = shape[d]
    if isinstance(n, int) and isinstance(shift, int):
        if n == 0 or shift % n == 0:
            return x
        cut = n - shift % n
    else:  # cut = n - shift mod n, at run time
        nn_ = run_dim(ctx, x, d) if not isinstance(n, int) else ctx.const([n])
        cut = ctx.op("Sub", [nn_, ctx.op("Mod", [one(ctx, shift), nn_])])
    return ctx.op("Concat", [onnx_slice(ctx, x, [cut], [INT64_MAX], [d]), onnx_slice(ctx, x, [0], [cut], [d])], axis=d)


@onnx_lowering("roll")
def _roll_onnx(ctx, node):
    x, r = ctx.input("input"), ctx.rank("input")
    shifts, dims = node.args["shifts"], node.args["dims"]
    shape = ctx.spec("input").shape
    if dims is None or (isinstance(dims, (list, tuple)) and not dims):
        s = shape_items(shifts)
        if len(s) != 1:
            ctx.unsupported("roll over the flattened tensor with several shifts")
        flat = ctx.op("Reshape", [x, ctx.const([-1])])
        st = static_shape(ctx, "input")
        n = 1
        for v in (st or ()):
            n *= v
        y = _roll(ctx, flat, (n,) if st is not None else ("n",), 0, s[0])
        return ctx.op("Reshape", [y, ctx.op("Shape", [x])])
    y = x
    for s, d in zip(shape_items(shifts), shape_items(dims)):
        y = _roll(ctx, y, shape, d % r, s)
    return y if y != x else ctx.op("Identity", [x])


# ---- tril, triu: one lowering ---------------------------------------------------------------------
@register("tril", family="shape", functions=[torch.tril], methods=["tril", "tril_"], aten=["tril.default"],
          flops=zero)
def tril(input, diagonal=0):
    return torch.tril(input, diagonal)


@register("triu", family="shape", functions=[torch.triu], methods=["triu", "triu_"], aten=["triu.default"],
          flops=zero)
def triu(input, diagonal=0):
    return torch.triu(input, diagonal)


def _trilu_lowering(upper):
    def lower(ctx, node):
        x, dt = ctx.input("input"), ctx.dtype("input")
        k = ctx.input("diagonal", dtype=torch.int64)
        ok = (torch.float32, torch.float64, torch.float16, torch.int32, torch.int64, torch.bool)
        if dt in ok:
            return ctx.op("Trilu", [x, k], upper=upper)
        return ctx.cast(ctx.op("Trilu", [ctx.cast(x, torch.int64 if not dt.is_floating_point else torch.float32),
                                         k], upper=upper), dt)
    return lower


onnx_lowering("tril")(_trilu_lowering(0))
onnx_lowering("triu")(_trilu_lowering(1))


@onnx_import("EyeLike", since=9)
def _eye_like_import(ctx):
    """Ones on diagonal ``k`` of a 2-D tensor shaped like the input (zeros elsewhere), in ``dtype`` (else the
    input's): the upper triangle from k less the one from k + 1."""
    from .onnx_helpers import torch_dtype

    x = ctx.input(0)
    dtype = torch_dtype(int(ctx.attr("dtype"))) if ctx.attr("dtype") is not None else ctx.dtype(x)
    k = int(ctx.attr("k", 0))
    ones = ctx.call("full_like", input=x, fill_value=1, dtype=torch.int64)
    diag = ctx.call("sub", input=ctx.call("triu", input=ones, diagonal=k),
                    other=ctx.call("triu", input=ones, diagonal=k + 1))
    return ctx.call("to", input=diag, dtype=dtype)


@onnx_import("ReverseSequence", since=10)
def _reverse_sequence_import(ctx):
    """The first ``sequence_lens[b]`` steps of each batch entry reversed along the time axis, the rest kept: a
    gather along time at index ``L - 1 - t`` where ``t < L``, else ``t`` (the lengths are read at run time)."""
    x, lens = ctx.input(0), ctx.input(1)
    r = ctx.rank(x)
    t_ax, b_ax = int(ctx.attr("time_axis", 0)) % r, int(ctx.attr("batch_axis", 1)) % r
    if {t_ax, b_ax} != {0, 1}:
        ctx.unsupported("time and batch axes other than 0 and 1")
    steps = ctx.size(x, t_ax)
    if not isinstance(steps, int):
        ctx.unsupported("a symbolic number of steps")
    t = ctx.call("reshape", input=ctx.call("arange", start=steps, dtype=torch.int64),
                 shape=[steps, 1] if t_ax == 0 else [1, steps])
    lens = ctx.call("reshape", input=ctx.call("to", input=lens, dtype=torch.int64),
                    shape=[1, -1] if t_ax == 0 else [-1, 1])
    rev = ctx.call("sub", input=ctx.call("sub", input=lens, other=1), other=t)
    idx = ctx.call("where", condition=ctx.call("lt", input=t, other=lens), input=rev, other=t)
    if r > 2:
        idx = ctx.call("reshape", input=idx, shape=[*ctx.shape(idx), *([1] * (r - 2))])
    idx = ctx.call("expand", input=idx, size=ctx.sizes(x))
    return ctx.call("gather", input=x, dim=t_ax, index=idx)


@onnx_import("Trilu")
def _trilu_import(ctx):
    k = ctx.ints(1, run_time=True)[0] if ctx.has(1) else 0
    return ctx.call("triu" if ctx.attr("upper", 1) else "tril", input=ctx.input(0), diagonal=k)


# ---- contiguous, clone, detach: an Identity in ONNX -----------------------------------------------
@register("contiguous", family="shape", methods=["contiguous"], aten=["contiguous.default"], flops=zero)
def contiguous(input):
    return input.contiguous()


@register("clone", family="shape", functions=[torch.clone, torch.resolve_conj, torch.resolve_neg],
          methods=["clone", "resolve_conj", "resolve_neg"],
          aten=["clone.default", "resolve_conj.default", "resolve_neg.default"], flops=zero)
def clone(input):
    return input.clone()


@register("detach", family="shape", functions=[torch.detach], methods=["detach", "detach_"],
          aten=["detach.default", "detach_.default", "alias.default", "lift_fresh_copy.default"], flops=zero,
          view=True)
def detach(input):
    return input.detach()


def _identity_onnx(ctx, node):
    return ctx.op("Identity", [ctx.input("input")])


for _name in ("contiguous", "clone", "detach"):
    onnx_lowering(_name, complex=True)(_identity_onnx)  # an Identity is right for complex tensors too


# ---- diagonal -------------------------------------------------------------------------------------
@register("diagonal", family="shape", functions=[torch.diagonal], methods=["diagonal"], aten=["diagonal.default"],
          flops=zero, view=True)
def diagonal(input, offset=0, dim1=0, dim2=1):
    return torch.diagonal(input, offset, dim1, dim2)


@onnx_lowering("diagonal")
def _diagonal_onnx(ctx, node):
    x, r = ctx.input("input"), ctx.rank("input")
    off = node.args["offset"]
    d1, d2 = node.args["dim1"] % r, node.args["dim2"] % r
    others = [i for i in range(r) if i not in (d1, d2)]
    y = onnx_transpose(ctx, x, others + [d1, d2])
    shape = ctx.spec("input").shape
    n1, n2 = shape[d1], shape[d2]
    a, b = max(0, -off), max(0, off)
    # flatten the last two dims and gather positions (i + a) * n2 + (i + b), i < L
    if others:
        flat = ctx.op("Reshape", [y, ctx.op("Concat", [ctx.op("Shape", [y], start=0, end=r - 2),
                                                       ctx.const([-1])], axis=0)])
    else:
        flat = ctx.op("Reshape", [y, ctx.const([-1])])
    if isinstance(n1, int) and isinstance(n2, int):
        length = max(0, min(n1 - a, n2 - b))
        pos = ctx.const([(i + a) * n2 + i + b for i in range(length)], torch.int64)
    else:
        s1, s2 = run_dim(ctx, y, r - 2), run_dim(ctx, y, r - 1)
        length = ctx.op("Max", [ctx.const([0]), ctx.op("Min", [ctx.op("Sub", [s1, ctx.const([a])]),
                                                               ctx.op("Sub", [s2, ctx.const([b])])])])
        i = ctx.op("Range", [ctx.const(0), ctx.op("Squeeze", [length]), ctx.const(1)])
        pos = ctx.op("Add", [ctx.op("Mul", [ctx.op("Add", [i, ctx.const(a)]), ctx.op("Squeeze", [s2])]),
                             ctx.op("Add", [i, ctx.const(b)])])
    return ctx.op("Gather", [flat, pos], axis=-1)


# ---- as_strided: a gather of the flat input at offset + sum(i_k * stride_k) -----------------------------
@register("as_strided", family="shape", functions=[torch.as_strided], methods=["as_strided"],
          aten=["as_strided.default"], flops=zero, view=True)
def as_strided(input, size, stride, storage_offset=None):
    """The view of ``input``'s storage with ``size`` and ``stride`` from ``storage_offset`` (default: the
    input's own offset), as eager computes it for the tensor as given: for a non-contiguous input (a transpose,
    a slice) that is its storage's layout, not its logical order. ONNX keeps no storage, so the lowering gathers
    from the input's elements in logical order, which is the same for a contiguous input only."""
    return torch.as_strided(input, size, stride, storage_offset)


def _storage_layout(v: Value, memo: dict) -> torch.Tensor:
    """A meta tensor with the strides and storage offset that ``v`` has in eager torch (and in bridge's torch
    backend, which runs the same impls): graph inputs contiguous, constants as they are, each producer's impl run
    on meta tensors. Elementwise ops keep a transposed input's layout, so no list of view ops would do. Raises
    where an op upstream cannot run on meta tensors (run-time python values, data-dependent shapes)."""
    if id(v) not in memo:
        if v.const is not None:
            memo[id(v)] = v.const.to("meta")
        elif v.producer is None:
            memo[id(v)] = torch.empty([dim_size(d) for d in v.spec.shape], dtype=v.spec.dtype, device="meta")
        else:
            from .registry import get

            node = v.producer
            out = get(node.op).impl(**map_values(node.args, lambda a: _storage_layout(a, memo)
                                                 if _is_tensor_value(a) else a))
            for w, o in zip(node.outputs, out if isinstance(out, (tuple, list)) else (out,)):
                memo[id(w)] = o
    return memo[id(v)]


@onnx_lowering("as_strided")
def _as_strided_onnx(ctx, node):
    size, stride, offset, x = node.args["size"], node.args["stride"], node.args["storage_offset"], node.args["input"]
    if not all(isinstance(a, int) for a in (*size, *stride, offset or 0)):
        ctx.unsupported("as_strided with run-time sizes, strides or offset (the index tensor is built at export "
                        "from python ints)")
    sizes = {k: max(int(n), 2) for k, n in (ctx.graph.meta.get("dim_values") or {}).items()}
    try:
        with dim_values(sizes):
            t = _storage_layout(x, {})
    except Exception as e:  # noqa: BLE001 - an op upstream that does not run on meta tensors: layout unknown
        ctx.unsupported(f"bridge cannot tell how torch lays out its input %{x.name} in storage ({e}), which "
                        f"as_strided reads; call .contiguous() on the input of as_strided to export it")
    if not t.is_contiguous():
        ctx.unsupported(f"its input %{x.name} is not contiguous in torch (a transpose, or an op keeping one's "
                        f"layout), and as_strided reads its storage while every ONNX value is contiguous, so the "
                        f"export would read other elements; call .contiguous() on the input of as_strided")
    if offset is not None and t.storage_offset() != 0:
        ctx.unsupported(f"its input %{x.name} starts at element {t.storage_offset()} of its storage (a slice) and "
                        f"storage_offset={offset} counts from the storage's start, which ONNX does not keep; pass "
                        f"storage_offset=None or clone the input first")
    idx = torch.tensor(int(offset or 0))
    for n, st in zip(size, stride):
        idx = idx.unsqueeze(-1) + torch.arange(n) * st
    n = static_shape(ctx, "input")
    if idx.numel() and n is not None and int(idx.max()) >= math.prod(n):
        ctx.unsupported(f"it reads element {int(idx.max())} of its input %{x.name}, which has {math.prod(n)}: "
                        f"torch reads on into the storage beyond the tensor, which ONNX does not keep")
    return ctx.op("Gather", [ctx.op("Reshape", [ctx.input("input"), ctx.const([-1])]), ctx.const(idx)], axis=0)


# ---- unfold_dim: Tensor.unfold, the windows of one dim (not F.unfold, which is im2col: op "unfold") ----------
@register("unfold_dim", family="shape", methods=["unfold"], aten=["unfold.default"], flops=zero, view=True)
def unfold_dim(input, dimension, size, step):
    """``x.unfold(dimension, size, step)``: every window of ``size`` elements along ``dimension``, ``step``
    apart, as a new dim there, the window's elements in a new last dim. Its own op, not the ``as_strided`` torch
    decomposes it to: that reads storage, which a transposed input lays out otherwise (timm's HaloAttn unfolds
    twice in a row), while windows are a gather along one dim whatever the layout."""
    return input.unfold(dimension, size, step)


@onnx_lowering("unfold_dim")
def _unfold_dim_onnx(ctx, node):
    """A Gather of the window indices [windows, size] along the dim, then that window dim moved last."""
    x, r = ctx.input("input"), ctx.rank("input")
    if r == 0:
        ctx.unsupported("unfold of a 0-d tensor")
    d, size, step = node.args["dimension"] % r, int(node.args["size"]), int(node.args["step"])
    n = ctx.spec("input").shape[d]
    if isinstance(n, int):
        idx = ctx.const(torch.arange(0, n - size + 1, step)[:, None] + torch.arange(size))
    else:  # window starts 0, step, ... up to n - size, read at run time
        last = onnx_squeeze(ctx, ctx.op("Sub", [run_dim(ctx, x, d), ctx.const([size - 1])]), [0])
        starts = ctx.op("Range", [ctx.const(0), last, ctx.const(step)])
        idx = ctx.op("Add", [onnx_unsqueeze(ctx, starts, [1]), ctx.const(torch.arange(size))])
    return onnx_transpose(ctx, ctx.op("Gather", [x, idx], axis=d), [*range(d + 1), *range(d + 2, r + 1), d + 1])
