"""Python-level ops: tensor metadata (size, dim, attributes) and opaque calls.

Metadata ops are folded to constants when shapes are static; under a symbolic dim they stay as nodes
that produce run-time python ints.

ONNX: run-time python scalars are 0-d tensors (int64, float32 or bool). dtype and device are trace-time facts:
lowerings read them from output specs, never from the ONNX graph.
"""
from __future__ import annotations

import builtins
import warnings

import torch

from ..ir.graph import Value
from ._util import zero
from .onnx_helpers import as_dtype, complex_part, out_dtype, run_dim
from .registry import onnx_lowering, register

_I64 = torch.int64


# ---- shared by several ops: sizes as 0-d int64 tensors ----------------------------------------------
def _scalar_dim(ctx, x, d):
    """Dim ``d`` of the tensor named ``x`` as a 0-d int64 tensor."""
    return ctx.op("Reshape", [run_dim(ctx, x, d), ctx.const([], _I64)])


def _dims(ctx, node):
    """One 0-d int64 per output of a shape tuple (``x.size()``, ``x.shape``): the dims that are not constants."""
    struct, x = node.out_struct, ctx.input("input")
    if struct[0] == "leaf":  # a rank-1 tensor's shape folded to one element
        return _scalar_dim(ctx, x, 0)
    outs = [None] * len(node.outputs)
    for d, sub in enumerate(struct[1]):
        if sub[0] == "leaf":
            outs[sub[1]] = _scalar_dim(ctx, x, d)
    return outs


# ---- size, dim, numel ----
@register("size", family="python", methods=["size"], aten=["sym_size.int"], flops=zero, pure_python=True)
def size(input, dim=None):
    """input.size() (a tuple) or input.size(dim)."""
    return tuple(input.size()) if dim is None else input.size(dim)


@onnx_lowering("size")
def _size_onnx(ctx, node):
    d = node.args["dim"]
    if d is None:
        return _dims(ctx, node)
    return _scalar_dim(ctx, ctx.input("input"), d % max(ctx.rank("input"), 1))


@register("dim", family="python", methods=["dim", "ndimension"], flops=zero, pure_python=True)
def dim(input):
    return input.dim()


@onnx_lowering("dim")
def _dim_onnx(ctx, node):
    return ctx.const(ctx.rank("input"), _I64)


@register("numel", family="python", functions=[torch.numel], methods=["numel", "nelement"],
          aten=["sym_numel.default"], flops=zero, pure_python=True)
def numel(input):
    return input.numel()


@onnx_lowering("numel")
def _numel_onnx(ctx, node):
    return ctx.op("Size", [ctx.input("input")])


# ---- item: a one-element tensor's value as a python number ----
@register("check", family="python", effect=True, flops=zero)
def check(condition, message=""):
    """Raise ``RuntimeError(message)`` when the run-time bool ``condition`` is false; returns it. torch.export's
    runtime assertions (``torch._check(...)`` on a size that depends on data) kept as checks in the graph."""
    if not condition:
        raise RuntimeError(message or "a runtime check of the traced model failed")
    return condition


@onnx_lowering("check")
def _check_onnx(ctx, node):
    warnings.warn(f"ONNX has no assertion: the file runs on where the model checks {node.args['message']!r} "
                  f"({node.describe()}); bridge's generated module and g.run keep the check", stacklevel=2)
    return ctx.input("condition")


@register("item", family="python", methods=["item"], aten=["item.default", "_local_scalar_dense.default"],
          flops=zero)
def item(input):
    """input.item(): a run-time python number (a symbol while tracing, never the value seen then)."""
    return input.item()


@onnx_lowering("item")
def _item_onnx(ctx, node):  # a 0-d tensor in the dtype ONNX holds python numbers in (int64, float32, bool)
    x = ctx.op("Reshape", [ctx.input("input"), ctx.const([], _I64)])
    return x if ctx.dtype("input") == out_dtype(ctx) else ctx.cast(x, out_dtype(ctx))


# ---- tensor attributes ----
@register("getattr", family="python", functions=[builtins.getattr], flops=zero, pure_python=True)
def getattr_(input, name):
    """input.<name> (shape, dtype, device, T, mT, ndim, ...)."""
    value = getattr(input, name)
    return tuple(value) if isinstance(value, torch.Size) else value


def _trace_time(ctx, node, what):
    """A dtype/device value: known when tracing, and read by consumers from their specs. It has no ONNX tensor;
    the name is never produced, so a graph that did need it fails the ONNX checker, naming it."""
    return ctx.fresh(f"{node.outputs[0].name}_{what}_is_trace_time_only")


@onnx_lowering("getattr", complex=True)
def _getattr_onnx(ctx, node):
    name, r = node.args["name"], ctx.rank("input")
    if name == "shape":
        return _dims(ctx, node)
    if name == "ndim":
        return ctx.const(r, _I64)
    if name in ("dtype", "device", "layout", "is_cuda", "requires_grad"):
        return _trace_time(ctx, node, name)
    x = ctx.input("input")
    if name in ("data", "real") and not ctx.dtype("input").is_complex or name == "data":
        return ctx.op("Identity", [x])
    if name in ("real", "imag"):  # a complex tensor's part: the file holds (real, imaginary) pairs
        return complex_part(ctx, "input", int(name == "imag"))
    if name in ("T", "mT", "H", "mH") and not ctx.dtype("input").is_complex:
        perm = list(range(r))[::-1] if name in ("T", "H") else list(range(r - 2)) + [r - 1, r - 2]
        return ctx.op("Transpose", [x], perm=perm)
    ctx.unsupported(f"tensor attribute .{name} has no ONNX meaning")


# ---- python builtins on run-time scalars ----
def _builtin(fn):
    return fn, (lambda args, kwargs: ((fn, list(args)), {}))


_SYM_FORMS = {builtins.int: (torch.sym_int, 1), builtins.float: (torch.sym_float, 1),
              builtins.max: (torch.sym_max, 2), builtins.min: (torch.sym_min, 2)}


def _sym_form(sym, fn):
    """torch's ``sym_*`` spelling of a builtin (``torch.sym_max(a, b)``, as torch.export records it): the builtin."""
    return sym, (lambda args, kwargs: ((fn, list(args)), {}))


@register("python_call", family="python",
          functions=[_builtin(f) for f in (builtins.int, builtins.float, builtins.bool, builtins.len, builtins.max,
                                           builtins.min)] + [_sym_form(sym, fn) for fn, (sym, _) in _SYM_FORMS.items()],
          flops=zero)
def python_call(fn, args):
    """A python builtin on run-time scalars (``int(x.size(0) / 2)``).

    Symbolic sizes stay symbolic: ``int``/``float``/``max``/``min`` go through torch's ``sym_*`` forms and ``len``
    of a tensor is its first dim, where the builtins would specialize the size to its example value."""
    if fn is builtins.len and len(args) == 1 and isinstance(args[0], torch.Tensor):
        return args[0].shape[0]
    sym = _SYM_FORMS.get(fn)
    if sym is not None and len(args) == sym[1] and any(isinstance(a, (torch.SymInt, torch.SymFloat)) for a in args):
        return sym[0](*args)
    return fn(*args)


@onnx_lowering("python_call")
def _python_call_onnx(ctx, node):
    fn, args = node.args["fn"], list(node.args["args"])
    out = out_dtype(ctx)
    if fn is builtins.len and len(args) == 1 and isinstance(args[0], Value) and ctx.rank(args[0]) > 0:
        return _scalar_dim(ctx, ctx.input(args[0]), 0)
    if fn in (builtins.max, builtins.min):
        if len(args) == 1 and isinstance(args[0], (list, tuple)):
            args = list(args[0])
        if len(args) < 2 or any(isinstance(a, Value) and ctx.rank(a) > 0 for a in args):
            ctx.unsupported(f"{fn.__name__}() over the elements of a tensor")
        return ctx.op("Max" if fn is builtins.max else "Min", [as_dtype(ctx, a, out) for a in args])
    if fn in (builtins.int, builtins.float, builtins.bool) and len(args) == 1:
        a = args[0]
        if isinstance(a, Value) and ctx.rank(a) > 0:  # int(t) of a one-element tensor
            a_name = ctx.op("Reshape", [ctx.input(a), ctx.const([], _I64)])
            return a_name if ctx.dtype(a) == out else ctx.cast(a_name, out)
        # int() truncates toward zero as Cast does; bool() is "nonzero"
        return ctx.op("Identity", [ctx.input(a)]) if ctx.dtype(a) == out else as_dtype(ctx, a, out)
    ctx.unsupported(f"python call {getattr(fn, '__name__', fn)}() has no ONNX meaning")


# ---- opaque calls ----
@register("opaque", family="python", flops=zero, random=True, effect=True)
def opaque(target, args=(), kwargs=None):
    """A call bridge has no canonical op for. It still runs (``target(*args, **kwargs)``; a string target
    is a Tensor method of ``args[0]``), and every analysis and export names it."""
    if isinstance(target, str):
        return getattr(args[0], target)(*args[1:], **(kwargs or {}))
    return target(*args, **(kwargs or {}))
