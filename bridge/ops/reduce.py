"""Reductions, scans, sorting and selection along dims."""
from __future__ import annotations

import math

import torch

from ..ir.graph import Value
from ..ir.spec import TensorSpec
from ._util import dim_size, no_out, per_input, shape, zero
from .onnx_helpers import INT64_MAX, cast_to, concat1, dim_of, one, reduce, slice_, squeeze, transpose, unsqueeze
from .registry import onnx_import, onnx_lowering, register


# ---- family-wide helpers ------------------------------------------------------------------------------
def _reduction(name, fn, methods, aten, k=1, with_dtype=True):
    if with_dtype:
        def impl(input, dim=None, keepdim=False, dtype=None):
            if dim is None:
                return fn(input, dtype=dtype) if dtype is not None else fn(input)
            return fn(input, dim, keepdim, dtype=dtype)
    else:
        def impl(input, dim=None, keepdim=False):
            return fn(input) if dim is None else fn(input, dim, keepdim)
    impl.__name__ = name
    impl.__doc__ = f"torch.{name} over ``dim`` (all dims when None)."
    register(name, family="reduce", functions=[fn], methods=methods, aten=aten, flops=per_input(k))(impl)


# dtypes onnxruntime's kernels run; others compute in a wider type and cast back
_SUM_TYPES = (torch.float32, torch.float64, torch.int32, torch.int64)  # ReduceSum/Prod/Mean, CumSum
_ORDER_TYPES = (torch.float32, torch.float64, torch.float16, torch.int32, torch.int64, torch.uint8)  # Max, ArgMax, TopK


def _wide(dtype, ok):
    if dtype in ok:
        return dtype
    if dtype.is_floating_point:
        return torch.float32
    return torch.int32 if torch.int32 in ok and dtype in (torch.bool, torch.int8, torch.int16, torch.uint8) \
        else torch.int64


def _axes(dim, rank):
    """Sorted non-negative axes of ``dim``; None for all (``dim`` None or empty, or a 0-d input)."""
    if dim is None:
        return None
    dims = [dim] if isinstance(dim, int) else list(dim)
    if not dims or rank == 0:
        return None
    return sorted({int(d) % rank for d in dims})


def _input_as(ctx, dtype, ok):
    """The input cast to the output dtype, then to a dtype onnxruntime computes in: (name, compute dtype)."""
    x = cast_to(ctx, ctx.input("input"), ctx.dtype("input"), dtype)
    cdt = _wide(dtype, ok)
    return cast_to(ctx, x, dtype, cdt), cdt


def _arg(ctx, op, x, dim, keepdim):
    """ArgMax/ArgMin of ``x`` (already in a compute dtype) as torch: the first extreme; over all when dim is None."""
    r = ctx.rank("input")
    if dim is None:
        if r != 1:
            x = ctx.op("Reshape", [x, ctx.const([-1])])
        return ctx.op(op, [x], axis=0, keepdims=0, select_last_index=0)
    if r == 0:
        return ctx.op("Identity", [ctx.const(0)])
    return ctx.op(op, [x], axis=int(dim) % r, keepdims=int(bool(keepdim)), select_last_index=0)


def _reduce_import(ctx, axes, build, over_no_axes=None):
    """An ONNX Reduce* node over ``axes`` (None or empty: every dim, or none with noop_with_empty_axes) as
    ``build(ctx, x, dims, keepdim)`` with ``dims`` sorted and non-negative. Reducing over no axes still applies
    the op's elementwise step (ReduceSumSquare: x * x, ReduceL1/L2: |x|): ``over_no_axes(ctx, x)``, else x."""
    x = ctx.input(0)
    r = ctx.rank(x)
    keep = bool(ctx.attr("keepdims", 1))
    if not axes:
        if ctx.attr("noop_with_empty_axes", 0):
            return over_no_axes(ctx, x) if over_no_axes is not None else x
        axes = list(range(r))
    if any(isinstance(a, Value) for a in axes):  # read when the module runs (torch wraps negative axes)
        return build(ctx, x, list(axes), keep)
    return build(ctx, x, sorted(int(a) % r for a in axes), keep)


def _reduced(ctx, op: str, dims: list, **args):
    """Canonical reduction ``op`` over ``dims``: sorted ints, or axes read when the module runs."""
    if any(isinstance(d, Value) for d in dims):
        return ctx.call_unknown_shape(op, dim=dims, **args)
    return ctx.call(op, dim=dims, **args)


def _reduce_importers(op_type, build, axes_input_since=18, over_no_axes=None):
    """Import the ONNX reduction ``op_type`` through ``build`` (see ``_reduce_import``): its axes are the
    ``axes`` attribute before opset ``axes_input_since`` and an optional input from it on (Reduce*-18;
    ReduceSum-13, whose attribute form only files below opset 13 have, and those are refused)."""
    def axes_attribute(ctx):
        if ctx.has(1):
            ctx.unsupported(f"{op_type} axes given as an input before opset {axes_input_since}")
        return _reduce_import(ctx, ctx.attr("axes"), build)

    def axes_input(ctx):
        if ctx.attr("axes") is not None:
            ctx.unsupported(f"{op_type} axes given as an attribute from opset {axes_input_since} on")
        return _reduce_import(ctx, ctx.ints(1, run_time=True) if ctx.has(1) else None, build, over_no_axes)

    if axes_input_since > 13:
        onnx_import(op_type)(axes_attribute)
    onnx_import(op_type, since=axes_input_since)(axes_input)


def _to(op):
    """A ``_reduce_import`` build calling the canonical reduction ``op`` over all the dims at once."""
    return lambda ctx, x, dims, keep: _reduced(ctx, op, dims, input=x, keepdim=keep)


# ---- sum, mean, nansum, prod ----------------------------------------------------------------------------
def _sum_lowering(op, nan=False):
    def lower(ctx, node):
        dt = ctx.out_spec().dtype
        x, cdt = _input_as(ctx, dt, _SUM_TYPES)
        if nan and cdt.is_floating_point:  # nansum: NaN counts as 0
            x = ctx.op("Where", [ctx.op("IsNaN", [x]), ctx.const(0.0, cdt), x])
        dim = node.args["dim"]
        y = reduce(ctx, op, x, _axes(dim, ctx.rank("input")), node.args["keepdim"] and dim is not None)
        return cast_to(ctx, y, cdt, dt)
    return lower


_reduction("sum", torch.sum, ["sum"], ["sum.dim_IntList", "sum.default"])
onnx_lowering("sum")(_sum_lowering("ReduceSum"))
_reduce_importers("ReduceSum", _to("sum"), axes_input_since=13)
_reduce_importers("ReduceSumSquare", lambda ctx, x, dims, keep: _reduced(
    ctx, "sum", dims, input=ctx.call("mul", input=x, other=x), keepdim=keep),
    over_no_axes=lambda ctx, x: ctx.call("mul", input=x, other=x))

_reduction("mean", torch.mean, ["mean"], ["mean.dim", "mean.default"])
onnx_lowering("mean")(_sum_lowering("ReduceMean"))
_reduce_importers("ReduceMean", _to("mean"))

_reduction("nansum", torch.nansum, ["nansum"], [])
onnx_lowering("nansum")(_sum_lowering("ReduceSum", nan=True))


@register("prod", family="reduce", functions=[torch.prod], methods=["prod"], aten=["prod.default", "prod.dim_int"],
          flops=per_input(1))
def prod(input, dim=None, keepdim=False, dtype=None):
    if dim is None:
        return torch.prod(input, dtype=dtype)
    return torch.prod(input, dim, keepdim, dtype=dtype)


onnx_lowering("prod")(_sum_lowering("ReduceProd"))


def _prod_dims(ctx, x, dims, keep):
    if any(isinstance(d, Value) for d in dims):  # read at run time: in any order, kept, then squeezed
        for d in dims:
            x = ctx.call_unknown_shape("prod", input=x, dim=d, keepdim=True)
        return x if keep else ctx.call_unknown_shape("squeeze", input=x, dim=tuple(dims),
                                                        rank=ctx.rank(x) - len(dims))
    for d in reversed(dims):  # torch.prod reduces one dim at a time
        x = ctx.call("prod", input=x, dim=d, keepdim=keep)
    return x


_reduce_importers("ReduceProd", _prod_dims)


# ---- amax, amin ---------------------------------------------------------------------------------------
def _order_lowering(op):
    def lower(ctx, node):
        dt = ctx.out_spec().dtype
        x, cdt = _input_as(ctx, dt, _ORDER_TYPES)
        dim = node.args["dim"]
        y = reduce(ctx, op, x, _axes(dim, ctx.rank("input")), node.args["keepdim"] and dim is not None)
        return cast_to(ctx, y, cdt, dt)
    return lower


_reduction("amax", torch.amax, ["amax"], ["amax.default"], with_dtype=False)
onnx_lowering("amax")(_order_lowering("ReduceMax"))
_reduce_importers("ReduceMax", _to("amax"))

_reduction("amin", torch.amin, ["amin"], ["amin.default"], with_dtype=False)
onnx_lowering("amin")(_order_lowering("ReduceMin"))
_reduce_importers("ReduceMin", _to("amin"))


# ---- all, any -----------------------------------------------------------------------------------------
def _all_any_lowering(op):
    def lower(ctx, node):
        x = ctx.input("input")
        if ctx.dtype("input") != torch.bool:
            x = ctx.cast(x, torch.bool)  # nonzero (NaN included) is true
        dim = node.args["dim"]
        # as int32: min over an empty set is INT32_MAX (all() -> True), max is INT32_MIN (any() -> False)
        y = reduce(ctx, op, ctx.cast(x, torch.int32), _axes(dim, ctx.rank("input")),
                   node.args["keepdim"] and dim is not None)
        y = ctx.op("Greater", [y, ctx.const(0, torch.int32)])
        return cast_to(ctx, y, torch.bool, ctx.out_spec().dtype)
    return lower


_reduction("all", torch.all, ["all"], ["all.default", "all.dim", "all.dims"], with_dtype=False)
onnx_lowering("all")(_all_any_lowering("ReduceMin"))

_reduction("any", torch.any, ["any"], ["any.default", "any.dim", "any.dims"], with_dtype=False)
onnx_lowering("any")(_all_any_lowering("ReduceMax"))


# ---- argmax, argmin -----------------------------------------------------------------------------------
def _argminmax_lowering(op):
    def lower(ctx, node):
        dt = ctx.dtype("input")
        x = cast_to(ctx, ctx.input("input"), dt, _wide(dt, _ORDER_TYPES))
        return _arg(ctx, op, x, node.args["dim"], node.args["keepdim"])
    return lower


_reduction("argmax", torch.argmax, ["argmax"], ["argmax.default"], with_dtype=False)
onnx_lowering("argmax")(_argminmax_lowering("ArgMax"))

_reduction("argmin", torch.argmin, ["argmin"], ["argmin.default"], with_dtype=False)
onnx_lowering("argmin")(_argminmax_lowering("ArgMin"))


@onnx_import("ArgMax", "ArgMin")
def _arg_import(ctx):
    op = "argmax" if ctx.op_type == "ArgMax" else "argmin"
    x, axis, keep = ctx.input(0), int(ctx.attr("axis", 0)), bool(ctx.attr("keepdims", 1))
    if not ctx.attr("select_last_index", 0):
        return ctx.call(op, input=x, dim=axis, keepdim=keep)
    # the last of equal extremes: the first one in the reversed dim, counted from the end
    n = ctx.size(x, axis % ctx.rank(x))
    first = ctx.call(op, input=ctx.call("flip", input=x, dims=[axis]), dim=axis, keepdim=keep)
    return ctx.call("rsub", input=first, other=ctx.call("sub", input=n, other=1) if not isinstance(n, int)
                    else n - 1)


# ---- max, min: over all, along a dim (values, indices), or elementwise ----------------------------------
def _minmax(name, fn, elementwise):
    def impl(input, dim=None, keepdim=False):
        if dim is None:
            return fn(input)
        if isinstance(dim, torch.Tensor):  # torch.max(a, b) is the elementwise maximum
            return elementwise(input, dim)
        return fn(input, dim, keepdim)

    impl.__name__ = name
    impl.__doc__ = (f"torch.{name}: over all elements; along ``dim`` a (values, indices) pair; "
                    f"with a tensor, the elementwise {elementwise.__name__}.")
    register(name, family="reduce", functions=[fn], methods=[name], aten=[f"{name}.dim", f"{name}.default"],
             flops=per_input(1))(impl)


def _minmax_lowering(name):
    reduce_op, arg_op, elem_op, bool_op = {"max": ("ReduceMax", "ArgMax", "Max", "Or"),
                                           "min": ("ReduceMin", "ArgMin", "Min", "And")}[name]

    def lower(ctx, node):
        dim = node.args["dim"]
        if isinstance(dim, Value) and isinstance(dim.spec, TensorSpec):  # torch.max(a, b): elementwise
            dt = ctx.out_spec().dtype
            a = cast_to(ctx, ctx.input("input"), ctx.dtype("input"), dt)
            b = cast_to(ctx, ctx.input(dim), ctx.dtype(dim), dt)
            if dt == torch.bool:
                return ctx.op(bool_op, [a, b])
            cdt = _wide(dt, _ORDER_TYPES)
            return cast_to(ctx, ctx.op(elem_op, [cast_to(ctx, a, dt, cdt), cast_to(ctx, b, dt, cdt)]), cdt, dt)
        dt = ctx.dtype("input")
        cdt = _wide(dt, _ORDER_TYPES)
        x = cast_to(ctx, ctx.input("input"), dt, cdt)
        if dim is None:
            return cast_to(ctx, reduce(ctx, reduce_op, x, None, False), cdt, dt)
        r = ctx.rank("input")
        if r == 0:
            return [ctx.op("Identity", [ctx.input("input")]), ctx.op("Identity", [ctx.const(0)])]
        keep = node.args["keepdim"]
        values = cast_to(ctx, reduce(ctx, reduce_op, x, [int(dim) % r], keep), cdt, dt)
        return [values, _arg(ctx, arg_op, x, dim, keep)]
    return lower


_minmax("max", torch.max, torch.maximum)
onnx_lowering("max")(_minmax_lowering("max"))

_minmax("min", torch.min, torch.minimum)
onnx_lowering("min")(_minmax_lowering("min"))


# ---- std, var -----------------------------------------------------------------------------------------
def _stat(name, fn):
    def impl(input, dim=None, unbiased=None, keepdim=False, correction=None):
        if isinstance(dim, bool):  # torch.std(x, True): the unbiased flag in dim's place
            dim, unbiased = None, dim
        kw = {"keepdim": keepdim}
        if correction is not None:
            kw["correction"] = correction
        elif unbiased is not None:
            kw["correction"] = 1 if unbiased else 0
        return fn(input, dim, **kw)

    impl.__name__ = name
    impl.__doc__ = f"torch.{name} with Bessel's correction unless ``unbiased=False``/``correction=0``."
    register(name, family="reduce", functions=[fn], methods=[name], aten=[f"{name}.correction", f"{name}.dim"],
             flops=per_input(3))(impl)


def _count(ctx, x: str, axes) -> str:
    """Elements of ``x`` (input-shaped) over ``axes`` (None: all), a 0-d int64 (static when the dims are)."""
    shape = ctx.spec("input").shape
    dims = range(len(shape)) if axes is None else axes
    if all(isinstance(shape[d], int) for d in dims):
        return math.prod(shape[d] for d in dims)
    return reduce(ctx, "ReduceProd", concat1(ctx, [dim_of(ctx, "input", x, d) for d in dims]), None, False)


def _var(ctx, node):
    """(variance, compute dtype, output dtype) of the node's input with torch's correction rules."""
    a = node.args
    dim, unbiased = a["dim"], a["unbiased"]
    if isinstance(dim, bool):  # torch.var(x, False): the unbiased flag in dim's place
        dim, unbiased = None, dim
    corr = a["correction"] if a["correction"] is not None else (0 if unbiased is False else 1)
    dt = ctx.out_spec().dtype
    x, cdt = _input_as(ctx, dt, _SUM_TYPES)
    r = ctx.rank("input")
    axes = _axes(dim, r)
    mean = reduce(ctx, "ReduceMean", x, axes, True)
    d = ctx.op("Sub", [x, mean])
    ss = reduce(ctx, "ReduceSum", ctx.op("Mul", [d, d]), axes, a["keepdim"])
    n = _count(ctx, x, axes)
    if isinstance(n, int):
        den = ctx.const(float(max(0, n - corr)), cdt)
    else:  # max(0, N - correction)
        den = ctx.op("Max", [ctx.op("Sub", [ctx.cast(n, cdt), ctx.const(float(corr), cdt)]), ctx.const(0.0, cdt)])
    return ctx.op("Div", [ss, den]), cdt, dt


_stat("std", torch.std)


@onnx_lowering("std")
def _std_onnx(ctx, node):
    v, cdt, dt = _var(ctx, node)
    return cast_to(ctx, ctx.op("Sqrt", [v]), cdt, dt)


_stat("var", torch.var)


@onnx_lowering("var")
def _var_onnx(ctx, node):
    v, cdt, dt = _var(ctx, node)
    return cast_to(ctx, v, cdt, dt)


# ---- norm, vector_norm --------------------------------------------------------------------------------
def _vector_norm(ctx, node, ord, dim, keepdim, dtype):
    dt = ctx.out_spec().dtype
    x = ctx.input("input")
    if dtype is not None:
        x = cast_to(ctx, x, ctx.dtype("input"), dtype)
    have = dtype or ctx.dtype("input")
    cdt = _wide(have, _SUM_TYPES)
    x = cast_to(ctx, x, have, cdt)
    axes = _axes(dim, ctx.rank("input"))
    ord = float(ord)
    if ord == 0:  # number of nonzeros
        y = reduce(ctx, "ReduceSum", ctx.cast(ctx.cast(x, torch.bool), cdt), axes, keepdim)
    elif math.isinf(ord):
        y = reduce(ctx, "ReduceMax" if ord > 0 else "ReduceMin", ctx.op("Abs", [x]), axes, keepdim)
    elif ord == 1:
        y = reduce(ctx, "ReduceL1", x, axes, keepdim)
    elif ord == 2:
        y = reduce(ctx, "ReduceL2", x, axes, keepdim)
    else:  # (sum |x|^p)^(1/p)
        s = reduce(ctx, "ReduceSum", ctx.op("Pow", [ctx.op("Abs", [x]), ctx.const(ord, cdt)]), axes, keepdim)
        y = ctx.op("Pow", [s, ctx.const(1.0 / ord, cdt)])
    return cast_to(ctx, y, cdt, dt)


@register("norm", family="reduce", functions=[(torch.norm, no_out)], methods=["norm"], flops=per_input(2))
def norm(input, p="fro", dim=None, keepdim=False, dtype=None):
    return torch.norm(input, p, dim, keepdim, dtype=dtype)


@onnx_lowering("norm")
def _norm_onnx(ctx, node):
    a = node.args
    p, dim = a["p"], a["dim"]
    if p is None or p == "fro":
        if p == "fro" and isinstance(dim, (list, tuple)) and len(dim) > 2:
            ctx.unsupported("Frobenius norm over more than two dims (torch raises too)")
        p = 2
    elif isinstance(p, str):
        ctx.unsupported(f"matrix norm p={p!r} (needs singular values; ONNX has no SVD)")
    elif not isinstance(p, (int, float)):
        ctx.unsupported(f"norm with a run-time p {p!r}")
    return _vector_norm(ctx, node, p, dim, a["keepdim"], a["dtype"])


@register("vector_norm", family="reduce", functions=[torch.linalg.vector_norm], aten=["linalg_vector_norm.default"],
          flops=per_input(2))
def vector_norm(input, ord=2, dim=None, keepdim=False, dtype=None):
    return torch.linalg.vector_norm(input, ord, dim, keepdim, dtype=dtype)


@onnx_lowering("vector_norm")
def _vector_norm_onnx(ctx, node):
    a = node.args
    if not isinstance(a["ord"], (int, float)):
        ctx.unsupported(f"vector_norm with a run-time ord {a['ord']!r}")
    return _vector_norm(ctx, node, a["ord"], a["dim"], a["keepdim"], a["dtype"])


_reduce_importers("ReduceL1", lambda ctx, x, dims, keep: _reduced(ctx, "vector_norm", dims, input=x, ord=1,
                                                                  keepdim=keep),
                  over_no_axes=lambda ctx, x: ctx.call("abs", input=x))
_reduce_importers("ReduceL2", lambda ctx, x, dims, keep: _reduced(ctx, "vector_norm", dims, input=x, ord=2,
                                                                  keepdim=keep),
                  over_no_axes=lambda ctx, x: ctx.call("abs", input=x))


# ---- logsumexp ----------------------------------------------------------------------------------------
@register("logsumexp", family="reduce", functions=[torch.logsumexp], methods=["logsumexp"],
          aten=["logsumexp.default"], flops=per_input(3))
def logsumexp(input, dim, keepdim=False):
    return torch.logsumexp(input, dim, keepdim)


@onnx_lowering("logsumexp")
def _logsumexp_onnx(ctx, node):
    dt = ctx.out_spec().dtype
    x, cdt = _input_as(ctx, dt, _SUM_TYPES)
    r = ctx.rank("input")
    axes = _axes(node.args["dim"], r)
    # log(sum(exp(x - m))) + m with m the max (0 where it is infinite, so -inf rows stay -inf)
    m = reduce(ctx, "ReduceMax", x, axes, True)
    m = ctx.op("Where", [ctx.op("IsInf", [m]), ctx.const(0.0, cdt), m])
    s = reduce(ctx, "ReduceSum", ctx.op("Exp", [ctx.op("Sub", [x, m])]), axes, True)
    y = ctx.op("Add", [ctx.op("Log", [s]), m])
    if not node.args["keepdim"] and r > 0:
        y = squeeze(ctx, y, axes if axes is not None else range(r))
    return cast_to(ctx, y, cdt, dt)


_reduce_importers("ReduceLogSumExp", _to("logsumexp"))
_reduce_importers("ReduceLogSum", lambda ctx, x, dims, keep: ctx.call(
    "log", input=_reduced(ctx, "sum", dims, input=x, keepdim=keep)),
    over_no_axes=lambda ctx, x: ctx.call("log", input=x))


# ---- cumsum, cumprod ----------------------------------------------------------------------------------
def _scan(ctx, node, build):
    """A scan along ``dim`` as ``build(x, dim >= 0, rank, compute dtype)`` in a dtype onnxruntime computes,
    cast back; a 0-d input is its own scan."""
    dt = ctx.out_spec().dtype
    x, cdt = _input_as(ctx, dt, _SUM_TYPES)
    r = ctx.rank("input")
    if r == 0:
        return ctx.op("Identity", [cast_to(ctx, x, cdt, dt)])
    return cast_to(ctx, build(x, int(node.args["dim"]) % r, r, cdt), cdt, dt)


@register("cumsum", family="reduce", functions=[torch.cumsum], methods=["cumsum"], aten=["cumsum.default"],
          flops=per_input(1))
def cumsum(input, dim, dtype=None):
    return torch.cumsum(input, dim, dtype=dtype)


@onnx_lowering("cumsum")
def _cumsum_onnx(ctx, node):
    return _scan(ctx, node, lambda x, d, r, cdt: ctx.op("CumSum", [x, ctx.const(d)]))


@onnx_import("CumSum", "CumProd")
def _cumulative_import(ctx):
    """CumSum / CumProd along the axis input; ``reverse`` runs from the end (the dim flipped before and after),
    ``exclusive`` leaves each element out: the results shifted one place, the op's identity (0 or 1) first. An
    axis read at run time is moved last and back (the scan runs along a known dim)."""
    op, identity = ("cumsum", 0) if ctx.op_type == "CumSum" else ("cumprod", 1)
    x = ctx.input(0)
    r = ctx.rank(x)
    axis = ctx.ints(1, run_time=True)[0]
    if isinstance(axis, Value):
        x = ctx.call_unknown_shape("movedim", input=x, source=axis, destination=-1)
    d = r - 1 if isinstance(axis, Value) else int(axis) % max(r, 1)
    reverse, exclusive = bool(ctx.attr("reverse", 0)), bool(ctx.attr("exclusive", 0))
    if reverse:
        x = ctx.call("flip", input=x, dims=[d])
    y = ctx.call(op, input=x, dim=d, dtype=ctx.dtype(x))  # ONNX keeps the type (torch: int32 -> int64)
    if exclusive and r > 0:  # slices clamp: a dim of size 0 or 1 works too, and a symbolic one
        first = ctx.call("full_like", input=ctx.call("slice", input=x, dim=d, start=0, end=1), fill_value=identity)
        y = ctx.call("cat", tensors=[first, ctx.call("slice", input=y, dim=d, start=0, end=-1)], dim=d)
    if reverse:
        y = ctx.call("flip", input=y, dims=[d])
    if isinstance(axis, Value):
        y = ctx.call_unknown_shape("movedim", input=y, source=-1, destination=axis)
    return y


# ---- diff: differences of neighbours along a dim, n times -----------------------------------------------
def _diff_flops(node) -> int:
    """One subtraction per output element of each of the ``n`` passes: the dim shrinks by one per pass."""
    x, n = node.args["input"], int(node.args["n"])
    shp = tuple(dim_size(d) for d in shape(x))
    if not shp or n <= 0:
        return 0
    d = int(node.args["dim"]) % len(shp)
    extra = sum(dim_size(shape(v)[d]) for v in (node.args["prepend"], node.args["append"]) if isinstance(v, Value))
    length, rest = shp[d] + extra, math.prod(shp) // max(shp[d], 1) if shp[d] else 0
    return sum(max(length - k, 0) for k in range(1, n + 1)) * rest


@register("diff", family="reduce", functions=[torch.diff], methods=["diff"], aten=["diff.default"],
          flops=_diff_flops, n_tensor_params=1)
def diff(input, n=1, dim=-1, prepend=None, append=None):
    """``x[..., 1:] - x[..., :-1]`` along ``dim``, ``n`` times, after ``prepend``/``append`` are joined on (bools:
    ``!=``). HuggingFace's attention-mask code uses it to find packed sequences."""
    return torch.diff(input, n, dim, prepend, append)


@onnx_lowering("diff")
def _diff_onnx(ctx, node):
    r = ctx.rank("input")
    d = int(node.args["dim"]) % r
    parts = [ctx.input(v) for v in (node.args["prepend"], node.args["input"], node.args["append"])
             if isinstance(v, Value)]
    if any(v is not None and not isinstance(v, Value) for v in (node.args["prepend"], node.args["append"])):
        ctx.unsupported("diff with a python-number prepend/append")
    x = ctx.op("Concat", parts, axis=d) if len(parts) > 1 else parts[0]
    step = "Xor" if ctx.dtype("input") == torch.bool else "Sub"
    for _ in range(int(node.args["n"])):
        x = ctx.op(step, [slice_(ctx, x, [1], [INT64_MAX], [d]), slice_(ctx, x, [0], [-1], [d])])
    return x if int(node.args["n"]) > 0 else ctx.op("Identity", [x])


@register("cumprod", family="reduce", functions=[torch.cumprod], methods=["cumprod"], aten=["cumprod.default"],
          flops=per_input(1))
def cumprod(input, dim, dtype=None):
    return torch.cumprod(input, dim, dtype=dtype)


@onnx_lowering("cumprod")
def _cumprod_onnx(ctx, node):
    # no ONNX CumProd: y[..., i] = prod_j x[..., j] over j <= i, from an [..., n, n] lower-triangular copy
    def build(x, d, r, cdt):
        perm = [i for i in range(r) if i != d] + [d]
        y = transpose(ctx, x, perm)
        n = ctx.op("Squeeze", [dim_of(ctx, "input", x, d)])
        i = ctx.op("Range", [ctx.const(0), n, ctx.const(1)])
        tri = ctx.op("LessOrEqual", [unsqueeze(ctx, i, [0]), unsqueeze(ctx, i, [1])])  # tri[i, j] = j <= i
        w = ctx.op("Where", [tri, unsqueeze(ctx, y, [r - 1]), ctx.const(1, cdt)])
        p = reduce(ctx, "ReduceProd", w, [r], False)
        return transpose(ctx, p, [perm.index(k) for k in range(r)])

    return _scan(ctx, node, build)


# ---- topk, sort, argsort ------------------------------------------------------------------------------
def _topk(ctx, k, d, largest):
    """(values, indices) of TopK along ``d``, sorted, ties by lower index (torch's stable order)."""
    dt = ctx.dtype("input")
    cdt = _wide(dt, _ORDER_TYPES)
    x = cast_to(ctx, ctx.input("input"), dt, cdt)
    v, i = ctx.op("TopK", [x, k], n_out=2, axis=d, largest=int(bool(largest)), sorted=1)
    return cast_to(ctx, v, cdt, dt), i


@register("topk", family="reduce", functions=[torch.topk], methods=["topk"], aten=["topk.default"],
          flops=per_input(1))
def topk(input, k, dim=-1, largest=True, sorted=True):
    """(values, indices) of the k largest (or smallest) along ``dim``."""
    return torch.topk(input, k, dim, largest, sorted)


@onnx_lowering("topk")
def _topk_onnx(ctx, node):
    r = ctx.rank("input")
    if r == 0:
        return [ctx.op("Identity", [ctx.input("input")]), ctx.op("Identity", [ctx.const(0)])]
    return list(_topk(ctx, one(ctx, node.args["k"]), int(node.args["dim"]) % r, node.args["largest"]))


@onnx_import("TopK")
def _topk_import(ctx):
    """ONNX TopK: of equal values the lower index comes first (torch.topk leaves ties in any order), so a stable
    sort, cut to ``k``."""
    k = ctx.ints(1, run_time=True)[0]
    axis = int(ctx.attr("axis", -1))
    values, indices = ctx.call("sort", input=ctx.input(0), dim=axis, descending=bool(ctx.attr("largest", 1)),
                               stable=True)
    if isinstance(k, int) and k == ctx.size(values, axis % ctx.rank(values)):
        return [values, indices]  # all of them (argsort as torch.onnx writes it): no cut
    return [ctx.call("slice", input=t, dim=axis, start=0, end=k) for t in (values, indices)]


def _sort(ctx, node):
    r = ctx.rank("input")
    if r == 0:
        return ctx.op("Identity", [ctx.input("input")]), ctx.op("Identity", [ctx.const(0)])
    d = int(node.args["dim"]) % r
    return _topk(ctx, dim_of(ctx, "input", ctx.input("input"), d), d, node.args["descending"])


@register("sort", family="reduce", functions=[torch.sort], methods=["sort"], aten=["sort.default", "sort.stable"],
          flops=per_input(1))
def sort(input, dim=-1, descending=False, stable=False):
    return torch.sort(input, dim=dim, descending=descending, stable=stable)


@onnx_lowering("sort")
def _sort_onnx(ctx, node):
    return list(_sort(ctx, node))


@register("argsort", family="reduce", functions=[torch.argsort], methods=["argsort"], aten=["argsort.default"],
          flops=per_input(1))
def argsort(input, dim=-1, descending=False, stable=False):
    return torch.argsort(input, dim=dim, descending=descending, stable=stable)


@onnx_lowering("argsort")
def _argsort_onnx(ctx, node):
    return _sort(ctx, node)[1]


# ---- count_nonzero ------------------------------------------------------------------------------------
@register("count_nonzero", family="reduce", functions=[torch.count_nonzero], methods=["count_nonzero"],
          flops=zero)
def count_nonzero(input, dim=None):
    return torch.count_nonzero(input, dim)


@onnx_lowering("count_nonzero")
def _count_nonzero_onnx(ctx, node):
    x = ctx.input("input")
    if ctx.dtype("input") != torch.bool:
        x = ctx.cast(x, torch.bool)
    return reduce(ctx, "ReduceSum", ctx.cast(x, torch.int64), _axes(node.args["dim"], ctx.rank("input")), False)
