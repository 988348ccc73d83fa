"""ONNX helpers shared by every op family's lowerings and importers: defined once, here, in the ops layer.

Lowerings build ONNX through the backend's ``LoweringContext`` (``ctx.op``, ``ctx.const``, ``ctx.ints``,
``ctx.cast``) and importers through the frontend's ``ImportContext`` (``ctx.call``, ``ctx.input``,
``ctx.attr``): neither this module nor an op family imports onnx or a frontend/backend module. What both sides
need to agree on (ONNX element types, shapes followed as sizes) is defined here.

In the lowering helpers ``x`` is an ONNX value name; sizes are python ints (static) or run-time python-int
Values; a "1-D [1]" name is a one-element int64 tensor.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from ..ir.graph import Value
from ..ir.spec import ScalarSpec, TensorSpec

INT64_MAX = 2**63 - 1
INT64_MIN = -2**63

# torch dtype -> onnx.TensorProto.DataType (the numbers of onnx.proto; lowerings and importers do not import onnx)
ONNX_DTYPE = {
    torch.float32: 1, torch.uint8: 2, torch.int8: 3, torch.int16: 5, torch.int32: 6, torch.int64: 7,
    torch.bool: 9, torch.float16: 10, torch.float64: 11, torch.complex64: 14, torch.bfloat16: 16,
    torch.float8_e4m3fn: 17, torch.float8_e4m3fnuz: 18, torch.float8_e5m2: 19, torch.float8_e5m2fnuz: 20,
    torch.uint16: 4, torch.uint32: 12, torch.uint64: 13,
}
_TORCH_DTYPE = {v: k for k, v in ONNX_DTYPE.items()}
_ONNX_TYPE_NAMES = {0: "UNDEFINED", 8: "STRING", 15: "COMPLEX128",
                    21: "UINT4", 22: "INT4", 23: "FLOAT4E2M1", 24: "FLOAT8E8M0", 25: "UINT2", 26: "INT2"}
# dtypes numpy has no type of its own for: held as their bits (an integer of the same size) in numpy and in ONNX's
# raw data; ml_dtypes (which onnx uses) names the numpy types that read those bits
BITS = {torch.bfloat16: torch.int16, torch.float8_e4m3fn: torch.uint8, torch.float8_e4m3fnuz: torch.uint8,
        torch.float8_e5m2: torch.uint8, torch.float8_e5m2fnuz: torch.uint8}
FLOAT8 = (torch.float8_e4m3fn, torch.float8_e4m3fnuz, torch.float8_e5m2, torch.float8_e5m2fnuz)
# unsigned types torch stores but computes little in (no add, compare or shift kernels): see ``widened_op``
UNSIGNED_WIDE = (torch.uint16, torch.uint32, torch.uint64)
# ONNX ops importers compute on int64 for these types, cast back after: int64 holds every uint16/uint32 value,
# and the cast back wraps as unsigned arithmetic does. uint64 values past 2**63 are negative int64s, so uint64 takes
# only the ops whose result bits do not depend on that sign (the rest are refused)
WIDENED_OPS = {"Add", "Sub", "Mul", "Div", "Mod", "Max", "Min", "Sum", "Less", "LessOrEqual", "Greater",
               "GreaterOrEqual", "Equal", "BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitwiseNot", "BitShift", "Where",
               "Clip", "TopK", "ArgMax", "ArgMin", "ReduceMax", "ReduceMin", "ReduceSum"}
_SIGN_FREE = {"Add", "Sub", "Mul", "Sum", "Equal", "BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitwiseNot", "Where"}


def widened_op(op_type: str, dtypes, direction: str | None = None) -> torch.dtype | None:
    """The unsigned type (uint16/32/64) an ONNX node of ``op_type`` on inputs of ``dtypes`` computes on int64 for;
    None when it needs no widening. ``ValueError`` for a uint64 op whose result would differ on int64 bits
    (``direction``: a BitShift's)."""
    wide = next((d for d in dtypes if d in UNSIGNED_WIDE), None)
    if wide is None or op_type not in WIDENED_OPS:
        return None
    sign_free = op_type in _SIGN_FREE or op_type == "BitShift" and direction == "LEFT"
    if wide == torch.uint64 and not sign_free:
        raise ValueError(f"{op_type} on uint64: bridge computes uint64 as the bits of int64, on which {op_type} "
                         "differs for values of 2**63 and more")
    return wide
# the dtype ONNX gives a run-time python number (a traced ``x.size(0)`` is int64, a float float32)
PY_DTYPE = {int: torch.int64, float: torch.float32, bool: torch.bool}


class UnsupportedElementType(ValueError):
    """An ONNX element type with no torch dtype bridge computes in."""


def torch_dtype(elem_type: int) -> torch.dtype:
    """The torch dtype of an ONNX element type (``TensorProto.FLOAT`` -> ``torch.float32``)."""
    dt = _TORCH_DTYPE.get(int(elem_type))
    if dt is None:
        raise UnsupportedElementType(f"ONNX element type {_ONNX_TYPE_NAMES.get(int(elem_type), elem_type)}")
    return dt


def read_at_run_time(v) -> bool:
    """Is ``v`` a python number computed from a tensor's data when the module runs (an unbacked symbol: ``u0``),
    not a dim of a shape or arithmetic on dims?"""
    import re

    return isinstance(v, Value) and isinstance(v.spec, ScalarSpec) and bool(re.search(r"\bu\d+", v.spec.expr or ""))


class Dims(list):
    """A 1-D int64 tensor known as a list of sizes: python ints and run-time int scalars (Values); with
    ``scalar`` set, a 0-d one holding one size.

    ONNX import: ``Shape`` of a tensor with symbolic dims gives one; Gather, Concat, Slice, Unsqueeze, Squeeze
    and Cast keep it a list, so it reaches Reshape/Expand as sizes. Any other use materializes it as a tensor.
    """

    def __init__(self, items=(), scalar: bool = False):
        super().__init__(items)
        self.scalar = scalar


# ---- lowering: constants, shapes and sizes -------------------------------------------------------------
def i64(ctx, values) -> str:
    """A 1-D int64 constant of python ints."""
    return ctx.const([int(v) for v in values], torch.int64)


def unsqueeze(ctx, x: str, axes) -> str:
    return ctx.op("Unsqueeze", [x, i64(ctx, sorted(int(a) for a in axes))])


def squeeze(ctx, x: str, axes) -> str:
    return ctx.op("Squeeze", [x, i64(ctx, sorted(int(a) for a in axes))])


def one(ctx, v) -> str:
    """An int, run-time scalar Value or ONNX name (already 1-D of one element) as a 1-D int64 [1]."""
    if isinstance(v, (int, bool)):
        return ctx.const([int(v)])
    if isinstance(v, Value):
        return ctx.ints([v])
    return v


def concat1(ctx, items) -> str:
    """Sizes (ints, scalar Values, 1-D [1] names) as one 1-D int64 tensor."""
    return ctx.op("Concat", [one(ctx, v) for v in items], axis=0) if len(items) > 1 else one(ctx, items[0])


def slice_(ctx, x: str, starts, ends, axes, steps=None) -> str:
    """``Slice`` of ``x``; starts/ends may hold run-time sizes or 1-D [1] names; steps of all 1 are left out."""
    ins = [x, ctx.ints(starts) if all(not isinstance(s, str) for s in starts) else concat1(ctx, starts),
           ctx.ints(ends) if all(not isinstance(s, str) for s in ends) else concat1(ctx, ends),
           i64(ctx, axes)]
    if steps is not None and any(s != 1 for s in steps):
        ins.append(ctx.ints(steps))
    return ctx.op("Slice", ins)


def reduce(ctx, op: str, x: str, axes, keepdims=True) -> str:
    """``Reduce*`` over ``axes`` (None: all); axes are an input from opset 18 (ReduceSum: 13), else an
    attribute."""
    kd = int(bool(keepdims))
    if axes is None:
        return ctx.op(op, [x], keepdims=kd)
    if op == "ReduceSum" or ctx.opset >= 18:
        return ctx.op(op, [x, i64(ctx, axes)], keepdims=kd)
    return ctx.op(op, [x], axes=[int(a) for a in axes], keepdims=kd)


def transpose(ctx, x: str, perm) -> str:
    """``Transpose`` by ``perm``; ``x`` itself for the identity permutation."""
    perm = [int(p) for p in perm]
    if perm == list(range(len(perm))):
        return x
    return ctx.op("Transpose", [x], perm=perm)


def static(dims) -> bool:
    """Are all these sizes python ints?"""
    return all(isinstance(d, int) for d in dims)


def static_shape(ctx, key_or_value) -> tuple | None:
    """The shape of a tensor argument when every dim is an int, else None."""
    s = ctx.spec(key_or_value)
    return tuple(s.shape) if isinstance(s, TensorSpec) and s.is_static else None


def run_dim(ctx, x: str, d: int) -> str:
    """Dim ``d`` (>= 0) of ``x`` read at run time, 1-D of one element."""
    return ctx.op("Shape", [x], start=d, end=d + 1)


def dim_of(ctx, key_or_value, x: str, d: int) -> str:
    """Dim ``d`` of tensor ``x`` (the argument ``key_or_value``) as a 1-D int64 of one element: a constant
    when static."""
    s = ctx.spec(key_or_value)
    if isinstance(s, TensorSpec) and isinstance(s.shape[d], int):
        return ctx.const([s.shape[d]])
    return run_dim(ctx, x, d)


def s_add(ctx, a, b):
    """a + b on sizes that are ints (folded) or 1-D [1] ONNX names / scalar Values."""
    if isinstance(a, int) and isinstance(b, int):
        return a + b
    if isinstance(a, int) and a == 0:
        return b
    if isinstance(b, int) and b == 0:
        return a
    return ctx.op("Add", [one(ctx, a), one(ctx, b)])


def s_mul(ctx, a, b):
    """a * b on sizes, as ``s_add``."""
    if isinstance(a, int) and isinstance(b, int):
        return a * b
    return ctx.op("Mul", [one(ctx, a), one(ctx, b)])


def shape_items(shape) -> list:
    """A shape argument (tuple/list of ints and run-time scalars, or one int) as a list."""
    if isinstance(shape, (list, tuple)):
        return list(shape)
    return [shape]


def reshape(ctx, x: str, items) -> str:
    """Reshape to torch's ``view``/``reshape`` sizes (``-1`` inferred; a literal 0 is an empty dim)."""
    out = ctx.out_spec()
    if isinstance(out, TensorSpec) and out.is_static:
        items = list(out.shape)
    shape = ctx.ints(items)
    zero = any(isinstance(v, Value) or v == 0 for v in items)
    return ctx.op("Reshape", [x, shape], allowzero=1 if zero else None)


def positions(ctx, x: str, shape=None) -> str:
    """An int64 tensor shaped like ``x`` holding each element's flat position (0, 1, 2, ...): a constant when
    ``shape`` is static (onnxruntime folds what is computed from it), else computed at run time."""
    if shape is not None and static(shape):
        return ctx.const(torch.arange(math.prod(shape), dtype=torch.int64).reshape(tuple(shape)), torch.int64)
    n = ctx.op("Size", [x])
    r = ctx.op("Range", [ctx.const(0), n, ctx.const(1)])
    return ctx.op("Reshape", [r, ctx.op("Shape", [x])])


# ---- lowering: dtypes ------------------------------------------------------------------------------------
def out_dtype(ctx, i: int = 0) -> torch.dtype | None:
    """torch dtype of output ``i`` as ONNX holds it (a run-time python int is int64, a float float32)."""
    s = ctx.out_spec(i)
    return s.dtype if isinstance(s, TensorSpec) else PY_DTYPE.get(s.type)


def cast_to(ctx, name: str, have, want) -> str:
    """``name`` cast from ``have`` to ``want`` (no node when equal, or when ``want`` is None)."""
    return name if have == want or want is None else ctx.cast(name, want)


def as_dtype(ctx, key_or_value, dtype) -> str:
    """An argument (its name, a Value or a python number) as an ONNX tensor of ``dtype``."""
    a = ctx[key_or_value] if isinstance(key_or_value, str) else key_or_value
    if not isinstance(a, Value):
        return ctx.input(a, dtype=dtype)
    name = ctx.input(a)
    return name if ctx.dtype(a) == dtype else ctx.cast(name, dtype)


# ---- lowering: random numbers ------------------------------------------------------------------------------
RANDOM_MAX_OPSET = 21  # onnxruntime has no kernels for RandomUniform(Like)/RandomNormal(Like) from opset 22


def random_like(ctx, like: str, dtype: torch.dtype, normal: bool = False) -> str:
    """Uniform [0, 1) (or standard normal) numbers of ``dtype``, shaped as the tensor ``like`` (of ``dtype``)."""
    if ctx.opset > RANDOM_MAX_OPSET:
        ctx.unsupported(f"random numbers: onnxruntime runs RandomUniformLike/RandomNormalLike only up to opset "
                        f"{RANDOM_MAX_OPSET} (asked: {ctx.opset}); export with opset={RANDOM_MAX_OPSET}")
    op = "RandomNormalLike" if normal else "RandomUniformLike"
    if dtype in (torch.float32, torch.float64):
        return ctx.op(op, [like])
    return ctx.cast(ctx.op(op, [ctx.cast(like, torch.float32)]), dtype)


def tuple_n(v: Any, n: int) -> tuple:
    """An int or a sequence (a conv/pool argument) as an ``n``-tuple; a 1-sequence repeats, as torch expands it."""
    return (tuple(v) * n if len(v) == 1 else tuple(v)) if isinstance(v, (list, tuple)) else (v,) * n


# ---- complex values: in an ONNX file a float tensor with a trailing dim of 2 (real, imaginary) ------------
# onnxruntime has no complex kernels, so a complex tensor of shape S is written as a float tensor of shape S + [2]
# (complex64 as float32, complex128 as float64), as ONNX's DFT takes it and torch.onnx's exporter writes it. A
# non-negative axis of the complex tensor is the same axis of that float tensor; the lowerings of ops that accept
# complex tensors say so (``onnx_lowering(name, complex=True)``), and export refuses any other.
def is_complex(ctx, key_or_value) -> bool:
    """Is this argument a complex tensor (a float [..., 2] tensor in the file)?"""
    dt = ctx.dtype(key_or_value)
    return dt is not None and dt.is_complex


def complex_parts(ctx, x: str) -> tuple[str, str]:
    """The real and imaginary parts of the complex tensor named ``x``, each keeping the trailing dim (size 1), so
    that they broadcast against each other and join back with ``complex_join``."""
    return slice_(ctx, x, [0], [1], [-1]), slice_(ctx, x, [1], [2], [-1])


def complex_part(ctx, key_or_value, which: int) -> str:
    """Part ``which`` (0: real, 1: imaginary) of a complex argument, as a real tensor of its shape."""
    return squeeze(ctx, complex_parts(ctx, ctx.input(key_or_value))[which], [ctx.rank(key_or_value)])


def complex_join(ctx, re: str, im: str) -> str:
    """The complex tensor of parts ``re`` and ``im`` (each with the trailing dim of size 1)."""
    return ctx.op("Concat", [re, im], axis=-1)


def as_complex(ctx, key_or_value, dtype: torch.dtype) -> str:
    """An argument as a complex tensor of ``dtype`` in the file's form: a complex tensor as it is (cast when its
    precision differs), a real tensor or a python number with imaginary part 0."""
    a = ctx[key_or_value] if isinstance(key_or_value, str) else key_or_value
    real = dtype.to_real()
    if not isinstance(a, Value):
        return ctx.const([complex(a).real, complex(a).imag], real)
    if ctx.dtype(a).is_complex:
        return cast_to(ctx, ctx.input(a), ctx.dtype(a).to_real(), real)
    re = unsqueeze(ctx, as_dtype(ctx, a, real), [ctx.rank(a)])
    r = ctx.rank(a) + 1
    return ctx.op("Pad", [re, i64(ctx, [0] * r + [0] * (r - 1) + [1])])  # imaginary part: zeros


def conj(ctx, x: str, dtype: torch.dtype) -> str:
    """The complex conjugate of the complex tensor named ``x`` (of torch ``dtype``): the imaginary part negated."""
    return ctx.op("Mul", [x, ctx.const([1.0, -1.0], dtype.to_real())])
