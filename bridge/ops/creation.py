"""Tensors made inside the model: ranges, fills, copies of shapes, literal tensors."""
from __future__ import annotations

import torch

from ..ir.graph import Value
from ._util import nested_items, varargs_method, zero
from .onnx_helpers import Dims, as_dtype, i64, out_dtype, random_like, shape_items
from .registry import onnx_import, onnx_lowering, register

# ---- family-wide helpers ------------------------------------------------------------------------------
_DROP = ("layout", "pin_memory", "requires_grad", "memory_format", "non_blocking", "generator", "out")
_I64 = torch.int64


def _clean(args, kwargs):
    return args, {k: v for k, v in kwargs.items() if k not in _DROP}


def _size(ctx):
    """The size argument (ints and run-time python ints) as a 1-D int64 ONNX tensor."""
    return ctx.ints(shape_items(ctx["size"]))


def _like_shape(ctx):
    """The shape of the ``input`` argument, read at run time."""
    return ctx.op("Shape", [ctx.input("input")])


def _filled(ctx, value, shape):
    """``value`` (python number or scalar Value) of the output dtype, broadcast to the 1-D int64 ``shape``."""
    return ctx.op("Expand", [as_dtype(ctx, value, out_dtype(ctx)), shape])


def _random(normal):
    """Lowering of rand/randn (a size) and rand_like/randn_like (an input's shape)."""
    def lower(ctx, node):
        dt = out_dtype(ctx)
        shape = _like_shape(ctx) if "input" in node.args else _size(ctx)
        return random_like(ctx, ctx.op("Expand", [ctx.const(0, dt), shape]), dt, normal=normal)
    return lower


def _acc_dtype(dt):
    """The dtype torch computes ranges in on CPU: double for float/double, float for half, int64 for integers."""
    if not dt.is_floating_point:
        return _I64
    return torch.float64 if dt in (torch.float32, torch.float64) else torch.float32


# ---- arange ---------------------------------------------------------------------------------------------
@register("arange", family="creation", functions=[(torch.arange, _clean)],
          aten=[("arange.default", _clean), ("arange.start", _clean), ("arange.start_step", _clean)], flops=zero)
def arange(start, end=None, step=1, dtype=None, device=None):
    """torch.arange; a single number is the end."""
    if end is None:
        return torch.arange(start, dtype=dtype, device=device)
    return torch.arange(start, end, step, dtype=dtype, device=device)


@onnx_lowering("arange")
def _arange_onnx(ctx, node):
    a = node.args
    start, end = (0, a["start"]) if a["end"] is None else (a["start"], a["end"])
    dt = out_dtype(ctx)
    acc = _acc_dtype(dt)
    f64 = torch.float64
    # torch: n = ceil((end - start) / step) in double; out[i] = start + i * step in the accumulate type
    n = ctx.op("Ceil", [ctx.op("Div", [ctx.op("Sub", [as_dtype(ctx, end, f64), as_dtype(ctx, start, f64)]),
                                       as_dtype(ctx, a["step"], f64)])])
    idx = ctx.op("Range", [ctx.const(0, _I64), ctx.cast(n, _I64), ctx.const(1, _I64)])
    idx = idx if acc == _I64 else ctx.cast(idx, acc)
    out = ctx.op("Add", [as_dtype(ctx, start, acc), ctx.op("Mul", [idx, as_dtype(ctx, a["step"], acc)])])
    return out if acc == dt else ctx.cast(out, dt)


@onnx_import("Range")
def _range_import(ctx):
    def scalar(i):
        v = ctx.raw(i)
        if isinstance(v, Dims):
            return v[0]
        c = ctx.const(i)
        return None if c is None else c.reshape(-1)[0].item()

    dtype = ctx.dtype(0)
    bounds = [scalar(i) for i in range(3)]
    if all(b is not None for b in bounds) and (isinstance(bounds[2], (int, float)) or dtype.is_floating_point):
        return ctx.call("arange", start=bounds[0], end=bounds[1], step=bounds[2], dtype=dtype)
    # bounds read at run time: n = max(ceil((limit - start) / delta), 0) elements start + i * delta (the ONNX
    # definition), so that the length is one run-time size and the sign of delta is never needed while importing
    start, limit, delta = (ctx.input(i) for i in range(3))
    span = ctx.call("div", input=ctx.call("to", input=ctx.call("sub", input=limit, other=start), dtype=torch.float64),
                    other=ctx.call("to", input=delta, dtype=torch.float64))
    n = ctx.call("item", input=ctx.call("to", input=ctx.call("clamp", input=ctx.call("ceil", input=span), min=0),
                                        dtype=torch.int64))
    steps = ctx.call("mul", input=ctx.call("arange", start=0, end=n, step=1, dtype=dtype), other=delta)
    return ctx.call("add", input=steps, other=start)


# ---- fills of a size: zeros, ones, empty, rand, randn, full ----------------------------------------------
def _sizes(args, kwargs):
    """torch.zeros(2, 3) and torch.zeros((2, 3)) -> zeros(size=(2, 3))."""
    args, kwargs = _clean(args, kwargs)
    if "size" in kwargs or not args:
        return args, kwargs
    if len(args) == 1 and isinstance(args[0], (list, tuple, torch.Size)):
        return (tuple(args[0]),), kwargs
    return (tuple(args),), kwargs


def _strided(args, kwargs):
    """empty_strided(size, stride) -> empty(size): the strides are dropped, as every bridge value is
    contiguous (uninitialized memory has no content that a layout could change)."""
    args, kwargs = _clean(args, kwargs)
    kwargs.pop("stride", None)
    return args[:1], kwargs


def _fill(name, fn, random=False):
    def impl(size, dtype=None, device=None):
        return fn(size, dtype=dtype, device=device)

    impl.__name__ = name
    impl.__doc__ = f"torch.{name}(size)." + (" Also torch.empty_strided: its strides are ignored and the result is "
                                               "contiguous." if name == "empty" else "")
    functions, aten = [(fn, _sizes)], [(f"{name}.default", _clean)]
    if name == "empty":
        functions.append((torch.empty_strided, _strided))
        aten += [("empty.memory_format", _clean), ("empty_strided.default", _strided)]
    register(name, family="creation", functions=functions, aten=aten, flops=zero, random=random)(impl)


_fill("zeros", torch.zeros)
_fill("ones", torch.ones)
_fill("empty", torch.empty, random=True)  # uninitialized memory
_fill("rand", torch.rand, random=True)
_fill("randn", torch.randn, random=True)
for _name, _value in {"zeros": 0, "ones": 1, "empty": 0}.items():  # empty: zeros, the cheapest defined content
    onnx_lowering(_name)(lambda ctx, node, v=_value: _filled(ctx, v, _size(ctx)))
onnx_lowering("rand")(_random(False))
onnx_lowering("randn")(_random(True))


@register("full", family="creation", functions=[(torch.full, _clean)], aten=[("full.default", _clean)], flops=zero)
def full(size, fill_value, dtype=None, device=None):
    return torch.full(size, fill_value, dtype=dtype, device=device)


@onnx_lowering("full")
def _full_onnx(ctx, node):
    return _filled(ctx, node.args["fill_value"], _size(ctx))


@onnx_import("ConstantOfShape")
def _constant_of_shape_import(ctx):
    value = ctx.attr("value")
    fill = value.reshape(-1)[0].item() if value is not None else 0.0
    dtype = value.dtype if value is not None else torch.float32
    return ctx.call("full", size=ctx.ints(0, run_time=True), fill_value=fill, dtype=dtype)


# ---- randperm ---------------------------------------------------------------------------------------------
@register("randperm", family="creation", functions=[(torch.randperm, _clean)], aten=[("randperm.default", _clean)],
          flops=zero, random=True)
def randperm(n, dtype=None, device=None):
    """torch.randperm(n): a random permutation of 0 .. n-1 (int64 unless ``dtype``)."""
    return torch.randperm(n, dtype=dtype if dtype is not None else _I64, device=device)


@onnx_lowering("randperm")
def _randperm_onnx(ctx, node):
    # the order that sorts n independent uniform numbers is a uniformly random permutation: the same
    # distribution as torch's, not the same numbers
    n = ctx.ints([node.args["n"]])
    keys = random_like(ctx, ctx.op("Expand", [ctx.const(0.0, torch.float32), n]), torch.float32)
    _, order = ctx.op("TopK", [keys, n], n_out=2, axis=0, largest=1, sorted=1)
    dt = out_dtype(ctx)
    return order if dt == _I64 else ctx.cast(order, dt)


# ---- fills shaped like a tensor: zeros_like, ones_like, empty_like, rand_like, randn_like, full_like -----
def _like(name, fn, random=False, aten=()):
    def impl(input, dtype=None, device=None):
        return fn(input, dtype=dtype, device=device)

    impl.__name__ = name
    impl.__doc__ = f"torch.{name}(input): same shape as input."
    register(name, family="creation", functions=[(fn, _clean)], aten=[(f"{name}.default", _clean), *aten],
             flops=zero, random=random)(impl)


_like("zeros_like", torch.zeros_like, aten=["zero.default"])  # aten.zero: x.zero_() functionalized
_like("ones_like", torch.ones_like)
_like("empty_like", torch.empty_like, random=True)  # uninitialized memory
_like("rand_like", torch.rand_like, random=True)
_like("randn_like", torch.randn_like, random=True)
for _name, _value in {"zeros_like": 0, "ones_like": 1, "empty_like": 0}.items():  # empty_like: zeros, as empty
    onnx_lowering(_name)(lambda ctx, node, v=_value: _filled(ctx, v, _like_shape(ctx)))
onnx_lowering("rand_like")(_random(False))
onnx_lowering("randn_like")(_random(True))


@register("full_like", family="creation", functions=[(torch.full_like, _clean)],
          aten=[("full_like.default", _clean)], flops=zero)
def full_like(input, fill_value, dtype=None, device=None):
    return torch.full_like(input, fill_value, dtype=dtype, device=device)


@onnx_lowering("full_like")
def _full_like_onnx(ctx, node):
    return _filled(ctx, node.args["fill_value"], _like_shape(ctx))


# ---- fills with an input's dtype and device: new_zeros, new_ones, new_empty, new_full --------------------
def _new(name, random=False):
    def impl(input, size, dtype=None, device=None):
        return getattr(input, name)(size, dtype=dtype, device=device)

    impl.__name__ = name
    impl.__doc__ = f"input.{name}(size): dtype and device of input unless given."

    def adapt(args, kwargs):
        a, k = varargs_method("size")(*_clean(args, kwargs))
        return a, k

    register(name, family="creation", methods=[(name, adapt)], aten=[(f"{name}.default", _clean)],
             flops=zero, random=random)(impl)


_new("new_zeros")
_new("new_ones")
_new("new_empty", random=True)  # uninitialized memory
for _name, _value in {"new_zeros": 0, "new_ones": 1, "new_empty": 0}.items():  # new_empty: zeros, as empty
    onnx_lowering(_name)(lambda ctx, node, v=_value: _filled(ctx, v, _size(ctx)))


@register("new_full", family="creation", methods=[("new_full", _clean)], aten=[("new_full.default", _clean)],
          flops=zero)
def new_full(input, size, fill_value, dtype=None, device=None):
    return input.new_full(size, fill_value, dtype=dtype, device=device)


@onnx_lowering("new_full")
def _new_full_onnx(ctx, node):
    return _filled(ctx, node.args["fill_value"], _size(ctx))


# ---- literal tensors: tensor, new_tensor, ONNX Constant ---------------------------------------------------
def _scalar_tensor(args, kwargs):
    """torch.scalar_tensor(s) is of the default float dtype even for an int ``s`` (torch.tensor(s) is int64)."""
    args, kwargs = _clean(args, kwargs)
    if kwargs.get("dtype") is None:
        kwargs = {**kwargs, "dtype": torch.get_default_dtype()}
    return args, kwargs


def _tensor_onnx(ctx, node):
    """Python data (nested lists of numbers and run-time python scalars) as a tensor of the output dtype."""
    data, dt = node.args["data"], out_dtype(ctx)
    leaves = list(nested_items(data))
    if any(isinstance(x, Value) and ctx.rank(x) > 0 for x in leaves):
        ctx.unsupported("tensor() of tensors with more than one element")
    if not any(isinstance(x, Value) for x in leaves):
        return ctx.const(data, dt)
    one = i64(ctx, [1])
    parts = [ctx.op("Reshape", [as_dtype(ctx, x, dt), one]) for x in leaves]
    flat = parts[0] if len(parts) == 1 else ctx.op("Concat", parts, axis=0)
    return ctx.op("Reshape", [flat, i64(ctx, ctx.out_spec().shape)])


@register("tensor", family="creation", functions=[(torch.tensor, _clean), (torch.as_tensor, _clean),
                                                  (torch.scalar_tensor, _scalar_tensor)],
          aten=[("scalar_tensor.default", _scalar_tensor)], flops=zero)
def tensor(data, dtype=None, device=None):
    """A tensor from python data (numbers, nested lists, run-time sizes)."""
    leaves = list(nested_items(data))
    if any(isinstance(x, (torch.SymInt, torch.SymFloat, torch.SymBool)) for x in leaves):
        return _symbolic_tensor(data, dtype or _python_dtype(leaves), device)
    return torch.tensor(data, dtype=dtype, device=device)


def _python_dtype(leaves) -> torch.dtype:
    """The dtype ``torch.tensor`` infers for these python (or symbolic) numbers."""
    if any(isinstance(x, (float, torch.SymFloat)) for x in leaves):
        return torch.get_default_dtype()
    if leaves and all(isinstance(x, (bool, torch.SymBool)) for x in leaves):
        return torch.bool
    return torch.int64


def _symbolic_tensor(data, dtype, device):
    """``torch.tensor`` reads each symbolic size as a number, which for a size that depends on data (an unbacked
    symbol) it cannot do while shapes are propagated; ``full``/``stack`` keep the symbol."""
    if isinstance(data, (list, tuple)):
        if not data:
            return torch.empty(0, dtype=dtype, device=device)
        return torch.stack([_symbolic_tensor(d, dtype, device) for d in data])
    return torch.full((), data, dtype=dtype, device=device)


onnx_lowering("tensor")(_tensor_onnx)


@register("new_tensor", family="creation", methods=[("new_tensor", _clean)], flops=zero)
def new_tensor(input, data, dtype=None, device=None):
    """input.new_tensor(data): dtype and device of ``input`` unless given."""
    return input.new_tensor(data, dtype=dtype, device=device)


onnx_lowering("new_tensor")(_tensor_onnx)


@onnx_import("Constant")
def _constant_import(ctx):  # known at import time: folds into whatever uses it
    for key, dtype in (("value", None), ("value_float", torch.float32), ("value_floats", torch.float32),
                       ("value_int", torch.int64), ("value_ints", torch.int64)):
        v = ctx.attr(key)
        if v is not None:
            return v if dtype is None else torch.tensor(v, dtype=dtype)
    ctx.unsupported("a Constant given as a sparse tensor or strings")


# ---- linspace -------------------------------------------------------------------------------------------
@register("linspace", family="creation", functions=[(torch.linspace, _clean)], aten=[("linspace.default", _clean)],
          flops=zero)
def linspace(start, end, steps, dtype=None, device=None):
    return torch.linspace(start, end, steps, dtype=dtype, device=device)


@onnx_lowering("linspace")
def _linspace_onnx(ctx, node):
    dt = out_dtype(ctx)
    acc = torch.float64 if not dt.is_floating_point else _acc_dtype(dt) if dt != torch.float32 else dt
    # torch (CPU): step = (end - start) / (steps - 1); the first half counts up from start, the second half
    # down from end: out[i] = i < steps // 2 ? start + step * i : end - step * (steps - 1 - i); steps == 1: start
    n = as_dtype(ctx, "steps", _I64)
    one = ctx.const(1, _I64)
    last = ctx.op("Sub", [n, one])
    idx = ctx.op("Range", [ctx.const(0, _I64), n, one])
    step = ctx.op("Div", [ctx.op("Sub", [as_dtype(ctx, "end", acc), as_dtype(ctx, "start", acc)]),
                          ctx.cast(ctx.op("Max", [last, one]), acc)])

    def base(key):  # integer outputs: torch truncates start/end to the dtype first
        return as_dtype(ctx, key, acc) if dt.is_floating_point else ctx.cast(as_dtype(ctx, key, dt), acc)

    up = ctx.op("Add", [base("start"), ctx.op("Mul", [step, ctx.cast(idx, acc)])])
    down = ctx.op("Sub", [base("end"), ctx.op("Mul", [step, ctx.cast(ctx.op("Sub", [last, idx]), acc)])])
    half = ctx.op("Max", [ctx.op("Div", [n, ctx.const(2, _I64)]), one])
    out = ctx.op("Where", [ctx.op("Less", [idx, half]), up, down])
    return out if acc == dt else ctx.cast(out, dt)


# ---- eye ------------------------------------------------------------------------------------------------
@register("eye", family="creation", functions=[(torch.eye, _clean)], aten=[("eye.default", _clean), ("eye.m", _clean)],
          flops=zero)
def eye(n, m=None, dtype=None, device=None):
    return torch.eye(n, m if m is not None else n, dtype=dtype, device=device)


@onnx_lowering("eye")
def _eye_onnx(ctx, node):
    dt = out_dtype(ctx)
    n, m = node.args["n"], node.args["m"]
    gen = dt if dt in (torch.float32, torch.float64, torch.int32, torch.int64) else torch.float32  # EyeLike's types
    eye = ctx.op("EyeLike", [ctx.op("Expand", [ctx.const(0, gen), ctx.ints([n, n if m is None else m])])])
    return eye if gen == dt else ctx.cast(eye, dt)
