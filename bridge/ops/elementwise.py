"""Elementwise math, activations, comparisons, where/masked_fill and casts.

Each op's section holds its definition (spellings, execution, FLOPs, facts), then its ONNX lowering, then its
ONNX importer(s); ops generated from a table share one section with their lowering and importer tables.
"""
from __future__ import annotations

import math
import operator

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ir.graph import Value
from ..ir.spec import ScalarSpec, TensorSpec
from ._util import main_only, per_output, zero
from .onnx_helpers import (FLOAT8, Dims, UnsupportedElementType, as_complex, as_dtype, complex_join, complex_part,
                           complex_parts, i64, is_complex, out_dtype, random_like, torch_dtype)
from .onnx_helpers import reduce as onnx_reduce
from .registry import Attr, onnx_import, onnx_lowering, register


# ---- shared by several ops: unary dtype handling, torch's type promotion, division, importers ----------
def _unary(ctx, build):
    """``build(x, dtype)`` on the input, torch-style: an integer/bool input of a floating op is cast to the
    floating output dtype first; a result of another dtype than the output's is cast (``math.floor(x) -> int``)."""
    x, dt = ctx.input("input"), ctx.dtype("input")
    out = out_dtype(ctx)
    if not dt.is_floating_point and out.is_floating_point:
        x, dt = ctx.cast(x, out), out
    y = build(x, dt)
    return y if dt == out else ctx.cast(y, out)


def _result_type(ctx, *keys) -> torch.dtype:
    """torch's type promotion of one or two arguments: tensors of rank > 0 over 0-d tensors over python
    numbers (run-time python scalars count as python numbers), within the same category."""
    ops = []
    for k in keys:
        a = ctx[k] if isinstance(k, str) else k
        s = a.spec if isinstance(a, Value) else None
        if isinstance(s, TensorSpec):
            ops.append(torch.empty((1,) * s.rank, dtype=s.dtype, device="meta"))
        elif isinstance(s, ScalarSpec):
            ops.append(s.type(1))
        elif a is not None:
            ops.append(a)
    if not any(isinstance(o, torch.Tensor) for o in ops):  # python scalars only: python's own promotion
        ops[0] = torch.tensor(ops[0], device="meta")
    return ops[0].dtype if len(ops) == 1 else torch.result_type(*ops)


def _binary_inputs(ctx, a_key="input", b_key="other", dtype=None):
    """Both operands as ONNX names of one dtype: ``dtype``, else torch's promoted type of the two."""
    dt = dtype or _result_type(ctx, a_key, b_key)
    return as_dtype(ctx, a_key, dt), as_dtype(ctx, b_key, dt)


def _scaled(ctx, node, onnx_op: str, reverse: bool) -> str:
    """``input op alpha * other``, or with ``reverse`` ``other op alpha * input`` (rsub). Complex operands (add,
    sub) are (real, imaginary) pairs, a real one with imaginary part 0."""
    dt = out_dtype(ctx)
    if dt.is_complex:
        if isinstance(node.args["alpha"], complex):
            ctx.unsupported("a complex alpha")
        a, b = as_complex(ctx, "input", dt), as_complex(ctx, "other", dt)
        dt = dt.to_real()
    else:
        a, b = _binary_inputs(ctx, dtype=dt)
    if reverse:
        a, b = b, a
    if node.args["alpha"] != 1:
        b = ctx.op("Mul", [ctx.const(node.args["alpha"], dt), b])
    return ctx.op(onnx_op, [a, b])


def _trunc(ctx, x):
    # trunc(x) = sign(x) * floor(|x|)   (-0.5 -> -0.0, inf -> inf, nan -> nan)
    return ctx.op("Mul", [ctx.op("Sign", [x]), ctx.op("Floor", [ctx.op("Abs", [x])])])


def _where(ctx, cond, a, b, dtype):
    """Where(cond, a, b); for bools (onnxruntime has no bool Where) (cond and a) or (not cond and b)."""
    if dtype != torch.bool:
        return ctx.op("Where", [cond, a, b])
    return ctx.op("Or", [ctx.op("And", [cond, a]), ctx.op("And", [ctx.op("Not", [cond]), b])])


# integer-style division (div, floordiv, floor_divide, remainder)
def _opposite_signs(ctx, r, b, dt):
    """r != 0 and sign(r) != sign(b): where a truncating quotient/remainder needs the floor correction."""
    zero = ctx.const(0, dt)
    return ctx.op("And", [ctx.op("Not", [ctx.op("Equal", [r, zero])]),
                          ctx.op("Xor", [ctx.op("Less", [r, zero]), ctx.op("Less", [b, zero])])])


def _floor_divide(ctx, a, b, dt):
    """a // b with torch's (and python's) floor rounding, operands already of dtype ``dt``."""
    one = ctx.const(1, dt)
    if not dt.is_floating_point:  # truncating Div, minus one where the remainder has the other sign
        q = ctx.op("Div", [a, b])
        r = ctx.op("Mod", [a, b], fmod=1)
        return ctx.op("Where", [_opposite_signs(ctx, r, b, dt), ctx.op("Sub", [q, one]), q])
    # torch's div_floor_floating: exact for quotients that a/b would round up to an integer
    mod = ctx.op("Mod", [a, b], fmod=1)
    div = ctx.op("Div", [ctx.op("Sub", [a, mod]), b])
    div = ctx.op("Where", [_opposite_signs(ctx, mod, b, dt), ctx.op("Sub", [div, one]), div])
    fl = ctx.op("Floor", [div])
    fl = ctx.op("Where", [ctx.op("Greater", [ctx.op("Sub", [div, fl]), ctx.const(0.5, dt)]),
                          ctx.op("Add", [fl, one]), fl])
    q = ctx.op("Div", [a, b])
    zero = ctx.const(0, dt)
    fl = ctx.op("Where", [ctx.op("Equal", [div, zero]), ctx.op("Mul", [q, zero]), fl])  # copysign(0, a / b)
    return ctx.op("Where", [ctx.op("Equal", [b, zero]), q, fl])  # x / 0: the IEEE quotient


def _import_unary(op):
    return lambda ctx: ctx.call(op, input=ctx.input(0))


_SIZE_ARITH = {"add": operator.add, "sub": operator.sub, "mul": operator.mul}


def _import_binary(op):
    def imp(ctx):
        if op in _SIZE_ARITH:  # arithmetic on sizes (a Reshape's target computed from Shape) stays sizes
            sizes = ctx.dims_arith(op, _SIZE_ARITH[op])
            if sizes is not None:
                return sizes
        return ctx.call(op, input=ctx.input(0), other=ctx.input(1))

    return imp


def _import_variadic(op):
    def imp(ctx):  # variadic, broadcasting: a left fold of the binary op
        ins = [x for x in ctx.inputs() if x is not None]
        out = ins[0]
        for x in ins[1:]:
            out = ctx.call(op, input=out, other=x)
        return out

    return imp


# ---- unary math and activations: (name, torch callables, methods, module, aten, flops/elem) -------
# Each impl takes (input) only; parametrized activations are defined below.
_UNARY = [
    ("relu", [F.relu, torch.relu, torch.relu_], ["relu", "relu_"], nn.ReLU, ["relu.default"], 1),
    ("sigmoid", [torch.sigmoid, F.sigmoid, torch.sigmoid_], ["sigmoid", "sigmoid_"], nn.Sigmoid, ["sigmoid.default"], 4),
    ("tanh", [torch.tanh, F.tanh, torch.tanh_], ["tanh", "tanh_"], nn.Tanh, ["tanh.default"], 4),
    ("silu", [F.silu], [], nn.SiLU, ["silu.default"], 5),
    ("mish", [F.mish], [], nn.Mish, ["mish.default"], 6),
    ("hardswish", [F.hardswish], [], nn.Hardswish, ["hardswish.default"], 4),
    ("hardsigmoid", [F.hardsigmoid], [], nn.Hardsigmoid, ["hardsigmoid.default"], 3),
    ("relu6", [F.relu6], [], nn.ReLU6, [], 2),
    ("selu", [F.selu, torch.selu], [], nn.SELU, ["selu.default"], 5),
    ("logsigmoid", [F.logsigmoid], [], nn.LogSigmoid,
     [("log_sigmoid_forward.default", lambda a, k: (a, k, lambda out: (out, None))),  # (output, buffer)
      "log_sigmoid.default"], 5),
    ("softsign", [F.softsign], [], nn.Softsign, [], 3),
    ("tanhshrink", [F.tanhshrink], [], nn.Tanhshrink, [], 5),
    ("exp", [torch.exp], ["exp", "exp_"], None, ["exp.default"], 1),
    ("exp2", [torch.exp2], ["exp2"], None, ["exp2.default"], 1),
    ("expm1", [torch.expm1], ["expm1"], None, ["expm1.default"], 1),
    ("log", [torch.log], ["log", "log_"], None, ["log.default"], 1),
    ("log2", [torch.log2], ["log2"], None, ["log2.default"], 1),
    ("log10", [torch.log10], ["log10"], None, ["log10.default"], 1),
    ("log1p", [torch.log1p], ["log1p"], None, ["log1p.default"], 1),
    ("sqrt", [torch.sqrt], ["sqrt", "sqrt_"], None, ["sqrt.default"], 1),
    ("rsqrt", [torch.rsqrt], ["rsqrt", "rsqrt_"], None, ["rsqrt.default"], 2),
    ("abs", [torch.abs, operator.abs, abs], ["abs", "abs_", "__abs__"], None, ["abs.default"], 1),
    ("neg", [torch.neg, operator.neg], ["neg", "neg_", "__neg__"], None, ["neg.default", "_neg_view.default"], 1),
    ("reciprocal", [torch.reciprocal], ["reciprocal", "reciprocal_"], None, ["reciprocal.default"], 1),
    ("sin", [torch.sin], ["sin"], None, ["sin.default"], 1),
    ("cos", [torch.cos], ["cos"], None, ["cos.default"], 1),
    ("tan", [torch.tan], ["tan"], None, ["tan.default"], 1),
    ("asin", [torch.asin], ["asin"], None, ["asin.default"], 1),
    ("acos", [torch.acos], ["acos"], None, ["acos.default"], 1),
    ("atan", [torch.atan], ["atan"], None, ["atan.default"], 1),
    ("sinh", [torch.sinh], ["sinh"], None, ["sinh.default"], 1),
    ("cosh", [torch.cosh], ["cosh"], None, ["cosh.default"], 1),
    ("asinh", [torch.asinh, torch.arcsinh], ["asinh", "arcsinh"], None, ["asinh.default", "arcsinh.default"], 1),
    ("acosh", [torch.acosh, torch.arccosh], ["acosh", "arccosh"], None, ["acosh.default", "arccosh.default"], 1),
    ("atanh", [torch.atanh, torch.arctanh], ["atanh", "arctanh"], None, ["atanh.default", "arctanh.default"], 1),
    ("erf", [torch.erf, torch.special.erf], ["erf"], None, ["erf.default"], 1),
    ("erfinv", [torch.erfinv, torch.special.erfinv], ["erfinv"], None, ["erfinv.default"], 1),
    ("floor", [torch.floor, math.floor], ["floor", "floor_"], None, ["floor.default"], 1),
    ("ceil", [torch.ceil, math.ceil], ["ceil", "ceil_"], None, ["ceil.default"], 1),
    ("trunc", [torch.trunc, torch.fix], ["trunc", "fix"], None, ["trunc.default"], 1),
    ("sign", [torch.sign], ["sign"], None, ["sign.default"], 1),
    ("frac", [torch.frac], ["frac"], None, ["frac.default"], 1),
    ("square", [torch.square], ["square"], None, [], 1),
    ("logical_not", [torch.logical_not], ["logical_not"], None, ["logical_not.default"], 1),
    ("bitwise_not", [torch.bitwise_not, operator.invert], ["bitwise_not", "__invert__"], None,
     ["bitwise_not.default"], 1),
    ("isnan", [torch.isnan], ["isnan"], None, ["isnan.default"], 1),
    ("isinf", [torch.isinf], ["isinf"], None, ["isinf.default"], 1),
    ("isfinite", [torch.isfinite], ["isfinite"], None, ["isfinite.default"], 1),
]


_UNARY_FACTS = {"relu": {"inplace": "relu_"}}  # facts of table ops (see registry.register)


def _make_unary(name, fns, methods, module, aten, k):
    # torch functions are called through the first one; ``input`` may be a python number (a run-time size)
    # for the math/operator/builtins spellings, which then compute it the python way
    fn0 = fns[0]
    py = next((f for f in fns if getattr(f, "__module__", None) in ("math", "_operator", "builtins")), None)

    def impl(input):
        return fn0(input) if py is None or isinstance(input, torch.Tensor) else py(input)

    impl.__name__ = name
    impl.__doc__ = f"{name}(input), elementwise."
    register(name, family="elementwise", functions=fns, methods=methods,
             modules={module: lambda m, a, kw: (a, kw)} if module else None,
             aten=aten, flops=per_output(k), **_UNARY_FACTS.get(name, {}))(impl)


for _row in _UNARY:
    _make_unary(*_row)


_UNARY_LOWERING = {  # canonical op -> ONNX op of the same meaning on one input
    "relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "exp": "Exp", "log": "Log", "sqrt": "Sqrt",
    "reciprocal": "Reciprocal", "sin": "Sin", "cos": "Cos", "tan": "Tan",
    "asin": "Asin", "acos": "Acos", "atan": "Atan", "sinh": "Sinh", "cosh": "Cosh", "asinh": "Asinh",
    "acosh": "Acosh", "atanh": "Atanh", "erf": "Erf",
    "floor": "Floor", "ceil": "Ceil", "hardswish": "HardSwish", "selu": "Selu", "softsign": "Softsign",
}  # sign, mish, bitwise_not, logical_not and isnan: below (NaN, opset, dtype)


def _unary_lowering(onnx_op):
    def build(ctx, x, dt):
        if not dt.is_floating_point and onnx_op in ("Floor", "Ceil"):  # floor/ceil of an integer tensor: itself
            return ctx.op("Identity", [x])
        if not dt.is_floating_point and onnx_op == "Relu":  # onnxruntime's Relu is float-only: max(x, 0)
            return ctx.op("Max", [x, ctx.const(0, dt)])
        return ctx.op(onnx_op, [x])
    return lambda ctx, node: _unary(ctx, lambda x, dt: build(ctx, x, dt))


for _name, _onnx_op in _UNARY_LOWERING.items():
    onnx_lowering(_name)(_unary_lowering(_onnx_op))
onnx_lowering("neg", complex=True)(_unary_lowering("Neg"))  # a complex tensor's [..., 2] pairs: both parts negated


@onnx_lowering("abs", complex=True)
def _abs_onnx(ctx, node):  # |a + bi| = sqrt(a^2 + b^2): the L2 norm of the trailing (real, imaginary) pair
    if is_complex(ctx, "input"):
        return onnx_reduce(ctx, "ReduceL2", ctx.input("input"), [ctx.rank("input")], keepdims=False)
    return _unary_lowering("Abs")(ctx, node)


def _float_lowering(name):
    """Register ``build(ctx, x, dtype)`` as the lowering of unary op ``name`` (see ``_unary``)."""
    def deco(build):
        onnx_lowering(name)(lambda ctx, node: _unary(ctx, lambda x, dt: build(ctx, x, dt)))
        return build
    return deco


def _horner(ctx, x, coeffs, dt):
    """coeffs[0] + x * (coeffs[1] + x * (...)), highest power last."""
    p = ctx.const(coeffs[-1], dt)
    for c in reversed(coeffs[:-1]):
        p = ctx.op("Add", [ctx.op("Mul", [p, x]), ctx.const(c, dt)])
    return p


def _small_or(ctx, x, dt, series, general, limit=0.1):
    """Where(|x| < limit, series(x), general(x)): a Taylor series where the closed form loses digits near 0."""
    small = ctx.op("Less", [ctx.op("Abs", [x]), ctx.const(limit, dt)])
    return ctx.op("Where", [small, ctx.op("Mul", [x, _horner(ctx, x, series, dt)]), general])


@_float_lowering("mish")
def _mish_onnx(ctx, x, dt):
    if ctx.opset >= 18:
        return ctx.op("Mish", [x])
    return ctx.op("Mul", [x, ctx.op("Tanh", [ctx.op("Softplus", [x])])])  # x * tanh(softplus(x))


@_float_lowering("logsigmoid")
def _logsigmoid_onnx(ctx, x, dt):
    # log(sigmoid(x)) = min(x, 0) - log(1 + exp(-|x|))   (no overflow either way)
    e = ctx.op("Exp", [ctx.op("Neg", [ctx.op("Abs", [x])])])
    return ctx.op("Sub", [ctx.op("Min", [x, ctx.const(0.0, dt)]),
                          ctx.op("Log", [ctx.op("Add", [e, ctx.const(1.0, dt)])])])


@_float_lowering("sign")
def _sign_onnx(ctx, x, dt):
    if dt == torch.bool:  # ONNX Sign has no bool kernel; a bool is its own sign
        return ctx.op("Identity", [x])
    s = ctx.op("Sign", [x])
    if not dt.is_floating_point:
        return s
    return ctx.op("Where", [ctx.op("IsNaN", [x]), ctx.const(0.0, dt), s])  # torch: sign(NaN) = 0


@_float_lowering("tanhshrink")
def _tanhshrink_onnx(ctx, x, dt):
    return ctx.op("Sub", [x, ctx.op("Tanh", [x])])  # x - tanh(x)


@_float_lowering("exp2")
def _exp2_onnx(ctx, x, dt):
    return ctx.op("Pow", [ctx.const(2.0, dt), x])


@_float_lowering("expm1")
def _expm1_onnx(ctx, x, dt):
    # exp(x) - 1, and its series x(1 + x/2 + x^2/6 + ...) near 0 where the subtraction cancels
    return _small_or(ctx, x, dt, [1.0, 1 / 2, 1 / 6, 1 / 24, 1 / 120, 1 / 720],
                     ctx.op("Sub", [ctx.op("Exp", [x]), ctx.const(1.0, dt)]))


@_float_lowering("log1p")
def _log1p_onnx(ctx, x, dt):
    # log(1 + x), and its series x(1 - x/2 + x^2/3 - ...) near 0 where 1 + x rounds
    return _small_or(ctx, x, dt, [1.0, -1 / 2, 1 / 3, -1 / 4, 1 / 5, -1 / 6, 1 / 7],
                     ctx.op("Log", [ctx.op("Add", [x, ctx.const(1.0, dt)])]))


@_float_lowering("log2")
def _log2_onnx(ctx, x, dt):
    return ctx.op("Div", [ctx.op("Log", [x]), ctx.const(math.log(2.0), dt)])


@_float_lowering("log10")
def _log10_onnx(ctx, x, dt):
    return ctx.op("Div", [ctx.op("Log", [x]), ctx.const(math.log(10.0), dt)])


@_float_lowering("rsqrt")
def _rsqrt_onnx(ctx, x, dt):
    return ctx.op("Reciprocal", [ctx.op("Sqrt", [x])])


_ERFINV_CENTRAL = [1.50140941, 0.246640727, -0.00417768164, -0.00125372503, 0.00021858087, -4.39150654e-06,
                   -3.5233877e-06, 3.43273939e-07, 2.81022636e-08]
_ERFINV_TAIL = [2.83297682, 1.00167406, 0.00943887047, -0.0076224613, 0.00573950773, -0.00367342844,
                0.00134934322, 0.000100950558, -0.000200214257]


@_float_lowering("erfinv")
def _erfinv_onnx(ctx, y, dt):
    # Giles' single-precision approximation ("Approximating the erfinv function", GPU Computing Gems, 2011),
    # refined by two Newton steps on erf(x) = y; erfinv(+-1) = +-inf, |y| > 1 gives NaN (log of a negative)
    f = torch.float32
    if dt != f:
        y = ctx.cast(y, f)
    one = ctx.const(1.0, f)
    w = ctx.op("Neg", [ctx.op("Log", [ctx.op("Mul", [ctx.op("Sub", [one, y]), ctx.op("Add", [one, y])])])])
    central = _horner(ctx, ctx.op("Sub", [w, ctx.const(2.5, f)]), _ERFINV_CENTRAL, f)
    tail = _horner(ctx, ctx.op("Sub", [ctx.op("Sqrt", [w]), ctx.const(3.0, f)]), _ERFINV_TAIL, f)
    x = ctx.op("Mul", [ctx.op("Where", [ctx.op("Less", [w, ctx.const(5.0, f)]), central, tail]), y])
    for _ in range(2):  # x -= (erf(x) - y) / (2/sqrt(pi) exp(-x^2))
        slope = ctx.op("Mul", [ctx.const(2 / math.sqrt(math.pi), f), ctx.op("Exp", [ctx.op("Neg", [
            ctx.op("Mul", [x, x])])])])
        x = ctx.op("Sub", [x, ctx.op("Div", [ctx.op("Sub", [ctx.op("Erf", [x]), y]), slope])])
    edge = ctx.op("Equal", [ctx.op("Abs", [y]), one])
    x = ctx.op("Where", [edge, ctx.op("Mul", [y, ctx.const(math.inf, f)]), x])
    return x if dt == f else ctx.cast(x, dt)


@_float_lowering("trunc")
def _trunc_onnx(ctx, x, dt):
    return _trunc(ctx, x) if dt.is_floating_point else ctx.op("Identity", [x])


@_float_lowering("frac")
def _frac_onnx(ctx, x, dt):
    return ctx.op("Sub", [x, _trunc(ctx, x)])  # x - trunc(x)


@_float_lowering("square")
def _square_onnx(ctx, x, dt):
    if dt == torch.bool:  # ONNX Mul has no bool kernel; x * x is x
        return ctx.op("Identity", [x])
    return ctx.op("Mul", [x, x])


@onnx_lowering("silu")
def _silu_onnx(ctx, node):
    x = ctx.input("input")
    return ctx.op("Mul", [x, ctx.op("Sigmoid", [x])])


@onnx_lowering("relu6")
def _relu6_onnx(ctx, node):
    dt = ctx.dtype("input")
    return ctx.op("Clip", [ctx.input("input"), ctx.const(0.0, dt), ctx.const(6.0, dt)])


@onnx_lowering("hardsigmoid")
def _hardsigmoid_onnx(ctx, node):
    return ctx.op("HardSigmoid", [ctx.input("input")], alpha=1.0 / 6, beta=0.5)


@onnx_lowering("bitwise_not")
def _bitwise_not_onnx(ctx, node):
    def build(x, dt):
        if dt == torch.bool:
            return ctx.op("Not", [x])
        if ctx.opset >= 18:
            return ctx.op("BitwiseNot", [x])
        if dt == torch.uint8:
            return ctx.op("Sub", [ctx.const(255, dt), x])
        return ctx.op("Sub", [ctx.op("Neg", [x]), ctx.const(1, dt)])  # two's complement: ~x = -x - 1
    return _unary(ctx, build)


onnx_import("BitwiseNot", since=18)(_import_unary("bitwise_not"))


@onnx_import("BitShift")
def _bitshift_import(ctx):
    """x shifted by y bits, on int64 and cast back (keeping the type's low bits): x * 2**y to the LEFT, floor(x /
    2**y) to the RIGHT (arithmetic for signed types). A shift below 0 or of the type's width or more gives 0, or
    to the RIGHT -1 for a negative x, as ONNX defines it."""
    x, y = ctx.input(0), ctx.input(1)
    dt = ctx.dtype(x)
    bits = 8 * torch.empty((), dtype=dt).element_size()
    x64, y64 = (ctx.call("to", input=v, dtype=torch.int64) for v in (x, y))
    out_of_range = ctx.call("logical_or", input=ctx.call("lt", input=y64, other=0),
                            other=ctx.call("ge", input=y64, other=min(bits, 63) if ctx.attr("direction") != "LEFT"
                                           else bits))
    if ctx.attr("direction") == "LEFT":  # 2**63 wraps to -2**63 in int64: x * that keeps the right low bit
        shifted = ctx.call("mul", input=x64, other=ctx.call("pow", input=2, other=ctx.call(
            "clamp", input=y64, min=0, max=63)))
        beyond = 0
    else:
        shifted = ctx.call("floor_divide", input=x64, other=ctx.call("pow", input=2, other=ctx.call(
            "clamp", input=y64, min=0, max=62)))
        beyond = ctx.call("where", condition=ctx.call("lt", input=x64, other=0), input=-1, other=0)
    return ctx.call("to", input=ctx.call("where", condition=out_of_range, input=beyond, other=shifted), dtype=dt)


@onnx_lowering("logical_not")
def _logical_not_onnx(ctx, node):
    return ctx.op("Not", [as_dtype(ctx, "input", torch.bool)])


def _never(ctx, x):
    """All False, shaped as x (integers are never NaN or infinite)."""
    return ctx.op("Not", [ctx.op("Equal", [x, x])])


def _isinf(ctx, x, dt):
    if dt == torch.float16 or dt == torch.bfloat16:  # onnxruntime's IsInf takes float and double
        x = ctx.cast(x, torch.float32)
    return ctx.op("IsInf", [x])


@onnx_lowering("isnan")
def _isnan_onnx(ctx, node):
    x, dt = ctx.input("input"), ctx.dtype("input")
    return ctx.op("IsNaN", [x]) if dt.is_floating_point else _never(ctx, x)


@onnx_lowering("isinf")
def _isinf_onnx(ctx, node):
    x, dt = ctx.input("input"), ctx.dtype("input")
    return _isinf(ctx, x, dt) if dt.is_floating_point else _never(ctx, x)


@onnx_lowering("isfinite")
def _isfinite_onnx(ctx, node):
    x, dt = ctx.input("input"), ctx.dtype("input")
    if not dt.is_floating_point:
        return ctx.op("Equal", [x, x])
    return ctx.op("Not", [ctx.op("Or", [ctx.op("IsNaN", [x]), _isinf(ctx, x, dt)])])


_UNARY_IMPORT = {"Abs": "abs", "Neg": "neg", "Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Sqrt": "sqrt",
                 "Exp": "exp", "Log": "log", "Erf": "erf", "Sign": "sign", "Floor": "floor", "Ceil": "ceil",
                 "Reciprocal": "reciprocal", "Sin": "sin", "Cos": "cos", "Tan": "tan", "Asin": "asin",
                 "Acos": "acos", "Atan": "atan", "Sinh": "sinh", "Cosh": "cosh", "Asinh": "asinh", "Acosh": "acosh",
                 "Atanh": "atanh", "Not": "logical_not",
                 "IsNaN": "isnan", "Softsign": "softsign", "HardSwish": "hardswish", "Mish": "mish"}
for _t, _op in _UNARY_IMPORT.items():
    onnx_import(_t)(_import_unary(_op))


_SELU_ALPHA, _SELU_GAMMA = 1.67326319217681884765625, 1.05070102214813232421875  # ONNX's defaults, torch's selu


@onnx_import("Selu")
def _selu_import(ctx):
    """gamma * elu(x, alpha): torch's selu where alpha and gamma are ONNX's defaults (torch's constants)."""
    alpha, gamma = float(ctx.attr("alpha", _SELU_ALPHA)), float(ctx.attr("gamma", _SELU_GAMMA))
    if math.isclose(alpha, _SELU_ALPHA, rel_tol=1e-7) and math.isclose(gamma, _SELU_GAMMA, rel_tol=1e-7):
        return ctx.call("selu", input=ctx.input(0))
    return ctx.call("mul", input=ctx.call("elu", input=ctx.input(0), alpha=alpha), other=gamma)


def _swish(ctx, x):
    """x * sigmoid(alpha * x), alpha the node's attribute (1 by default)."""
    alpha = float(ctx.attr("alpha", 1.0))
    gate = ctx.call("sigmoid", input=x if alpha == 1.0 else ctx.call("mul", input=x, other=alpha))
    return ctx.call("mul", input=x, other=gate)


@onnx_import("Swish", since=24)
def _swish_import(ctx):
    return _swish(ctx, ctx.input(0))


@onnx_import("SwiGLU")
def _swiglu_import(ctx):  # swish(a) * b
    return ctx.call("mul", input=_swish(ctx, ctx.input(0)), other=ctx.input(1))


@onnx_import("ThresholdedRelu", since=10)
def _thresholded_relu_import(ctx):  # x where x > alpha, else 0
    x = ctx.input(0)
    return ctx.call("threshold", input=x, threshold=float(ctx.attr("alpha", 1.0)), value=0.0)


@onnx_import("Mean")
def _mean_import(ctx):  # the elementwise mean of the inputs (broadcast): their sum over their count
    total = ctx.input(0)
    for i in range(1, ctx.n_inputs):
        total = ctx.call("add", input=total, other=ctx.input(i))
    return total if ctx.n_inputs == 1 else ctx.call("div", input=total, other=float(ctx.n_inputs))


@onnx_import("IsInf")
def _isinf_import(ctx):
    pos, neg = ctx.attr("detect_positive", 1), ctx.attr("detect_negative", 1)
    x = ctx.input(0)
    if pos and neg:
        return ctx.call("isinf", input=x)
    inf = ctx.call("isinf", input=x)
    side = ctx.call("gt" if pos else "lt", input=x, other=0)
    return ctx.call("logical_and", input=inf, other=side) if (pos or neg) else ctx.call("logical_and", input=inf,
                                                                                      other=False)


@onnx_import("HardSigmoid")
def _hardsigmoid_import(ctx):  # max(0, min(1, alpha*x + beta)); torch's hardsigmoid is alpha=1/6, beta=1/2
    alpha, beta = float(ctx.attr("alpha", 0.2)), float(ctx.attr("beta", 0.5))
    if abs(alpha - 1 / 6) < 1e-7 and beta == 0.5:
        return ctx.call("hardsigmoid", input=ctx.input(0))
    y = ctx.call("add", input=ctx.call("mul", input=ctx.input(0), other=alpha), other=beta)
    return ctx.call("clamp", input=y, min=0.0, max=1.0)


# ---- round ----
@register("round", family="elementwise", functions=[torch.round, round], methods=["round", "round_"],
          aten=["round.default", "round.decimals"], flops=per_output(1))
def round_(input, decimals=0):
    """round(input, decimals=0): half to even, as torch."""
    if isinstance(input, torch.Tensor):  # the decimals overload has no integer kernel: torch.round(int) is a copy
        return torch.round(input, decimals=decimals) if decimals else torch.round(input)
    return round(input, decimals) if decimals else round(input)


@onnx_lowering("round")
def _round_onnx(ctx, node):
    d = node.args["decimals"]

    def build(x, dt):
        if not dt.is_floating_point:
            return ctx.op("Identity", [x])
        if d == 0:
            return ctx.op("Round", [x])  # half to even, as torch and python
        # torch: nearbyint(x * 10^d) / 10^d, or for d < 0 nearbyint(x / 10^-d) * 10^-d, in the input's dtype
        scale = ctx.const(float(10 ** abs(d)), dt)
        first, then = ("Mul", "Div") if d > 0 else ("Div", "Mul")
        return ctx.op(then, [ctx.op("Round", [ctx.op(first, [x, scale])]), scale])
    return _unary(ctx, build)


onnx_import("Round")(_import_unary("round"))


# ---- gelu ----
@register("gelu", family="elementwise", functions=[F.gelu], aten=["gelu.default"],
          modules={nn.GELU: lambda m, a, kw: (a, {**kw, "approximate": m.approximate})},
          flops=per_output(8))
def gelu(input, approximate="none"):
    """gelu(input, approximate='none'|'tanh')."""
    return F.gelu(input, approximate=approximate)


@onnx_lowering("gelu")
def _gelu_onnx(ctx, node):
    if ctx.opset >= 20:
        return ctx.op("Gelu", [ctx.input("input")], approximate=node.args["approximate"])
    x = ctx.input("input")
    dt = ctx.dtype("input")
    if node.args["approximate"] == "tanh":  # 0.5x(1+tanh(sqrt(2/pi)(x+0.044715x^3)))
        x3 = ctx.op("Mul", [ctx.op("Mul", [x, x]), x])
        inner = ctx.op("Mul", [ctx.op("Add", [x, ctx.op("Mul", [x3, ctx.const(0.044715, dt)])]),
                               ctx.const(0.7978845608028654, dt)])
        return ctx.op("Mul", [ctx.op("Mul", [x, ctx.const(0.5, dt)]),
                              ctx.op("Add", [ctx.op("Tanh", [inner]), ctx.const(1.0, dt)])])
    erf = ctx.op("Erf", [ctx.op("Mul", [x, ctx.const(0.7071067811865476, dt)])])
    return ctx.op("Mul", [ctx.op("Mul", [x, ctx.const(0.5, dt)]), ctx.op("Add", [erf, ctx.const(1.0, dt)])])


@onnx_import("Gelu")
def _gelu_import(ctx):
    return ctx.call("gelu", input=ctx.input(0), approximate=ctx.attr("approximate", "none"))


# ---- parametrized activations ----
@register("leaky_relu", family="elementwise", functions=[F.leaky_relu, F.leaky_relu_], aten=["leaky_relu.default"],
          modules={nn.LeakyReLU: lambda m, a, kw: (a, {**kw, "negative_slope": m.negative_slope})},
          flops=per_output(2))
def leaky_relu(input, negative_slope=0.01):
    return F.leaky_relu(input, negative_slope)


@onnx_lowering("leaky_relu")
def _leaky_relu_onnx(ctx, node):
    return ctx.op("LeakyRelu", [ctx.input("input")], alpha=float(node.args["negative_slope"]))


@onnx_import("LeakyRelu")
def _leaky_relu_import(ctx):
    return ctx.call("leaky_relu", input=ctx.input(0), negative_slope=float(ctx.attr("alpha", 0.01)))


@register("elu", family="elementwise", functions=[F.elu, F.elu_], aten=["elu.default"],
          modules={nn.ELU: lambda m, a, kw: (a, {**kw, "alpha": m.alpha})}, flops=per_output(4))
def elu(input, alpha=1.0):
    return F.elu(input, alpha)


@onnx_lowering("elu")
def _elu_onnx(ctx, node):
    return _unary(ctx, lambda x, dt: ctx.op("Elu", [x], alpha=float(node.args["alpha"])))


@onnx_import("Elu")
def _elu_import(ctx):
    return ctx.call("elu", input=ctx.input(0), alpha=float(ctx.attr("alpha", 1.0)))


@register("celu", family="elementwise", functions=[F.celu], aten=["celu.default"],
          modules={nn.CELU: lambda m, a, kw: (a, {**kw, "alpha": m.alpha})}, flops=per_output(4))
def celu(input, alpha=1.0):
    return F.celu(input, alpha)


@onnx_lowering("celu")
def _celu_onnx(ctx, node):
    return _unary(ctx, lambda x, dt: ctx.op("Celu", [x], alpha=float(node.args["alpha"])))


@onnx_import("Celu")
def _celu_import(ctx):
    return ctx.call("celu", input=ctx.input(0), alpha=float(ctx.attr("alpha", 1.0)))


@register("softplus", family="elementwise", functions=[F.softplus], aten=["softplus.default"],
          modules={nn.Softplus: lambda m, a, kw: (a, {**kw, "beta": m.beta, "threshold": m.threshold})},
          flops=per_output(4))
def softplus(input, beta=1.0, threshold=20.0):
    return F.softplus(input, beta, threshold)


@onnx_lowering("softplus")
def _softplus_onnx(ctx, node):
    beta, threshold = node.args["beta"], node.args["threshold"]

    def build(x, dt):
        # torch: x * beta > threshold ? x : log(1 + exp(x * beta)) / beta
        bx = x if beta == 1 else ctx.op("Mul", [x, ctx.const(float(beta), dt)])
        sp = ctx.op("Softplus", [bx])
        sp = sp if beta == 1 else ctx.op("Div", [sp, ctx.const(float(beta), dt)])
        return ctx.op("Where", [ctx.op("Greater", [bx, ctx.const(float(threshold), dt)]), x, sp])
    return _unary(ctx, build)


@onnx_import("Softplus")
def _softplus_import(ctx):  # ONNX Softplus is log(1 + exp(x)) with no threshold; torch's threshold 20 is exact in f32
    return ctx.call("softplus", input=ctx.input(0))


@register("hardtanh", family="elementwise", functions=[F.hardtanh, F.hardtanh_], aten=["hardtanh.default"],
          modules={nn.Hardtanh: lambda m, a, kw: (a, {**kw, "min_val": m.min_val, "max_val": m.max_val})},
          flops=per_output(2))
def hardtanh(input, min_val=-1.0, max_val=1.0):
    return F.hardtanh(input, min_val, max_val)


@onnx_lowering("hardtanh")
def _hardtanh_onnx(ctx, node):
    dt = ctx.dtype("input")
    return ctx.op("Clip", [ctx.input("input"), ctx.const(float(node.args["min_val"]), dt),
                           ctx.const(float(node.args["max_val"]), dt)])


@register("threshold", family="elementwise", functions=[F.threshold, F.threshold_], aten=["threshold.default"],
          modules={nn.Threshold: lambda m, a, kw: (a, {**kw, "threshold": m.threshold, "value": m.value})},
          flops=per_output(1))
def threshold(input, threshold, value):
    return F.threshold(input, threshold, value)


@onnx_lowering("threshold")
def _threshold_onnx(ctx, node):
    x, dt = ctx.input("input"), ctx.dtype("input")
    # torch: x <= threshold ? value : x   (NaN stays NaN)
    le = ctx.op("LessOrEqual", [x, as_dtype(ctx, "threshold", dt)])
    return ctx.op("Where", [le, as_dtype(ctx, "value", dt), x])


# ---- shrink: hardshrink and softshrink are one op, as ONNX Shrink is ----
def _hardshrink(args, kwargs):  # F.hardshrink(x, lambd=0.5): x where |x| > lambd, else 0
    return args[:1], {"lambd": args[1] if len(args) > 1 else kwargs.get("lambd", 0.5), "bias": 0.0}


def _softshrink(args, kwargs):  # F.softshrink(x, lambd=0.5): x -+ lambd where |x| > lambd, else 0
    lambd = args[1] if len(args) > 1 else kwargs.get("lambd", 0.5)
    return args[:1], {"lambd": lambd, "bias": lambd}


@register("shrink", family="elementwise",
          functions=[(F.hardshrink, _hardshrink), (F.softshrink, _softshrink)],
          methods=[("hardshrink", _hardshrink)],
          modules={nn.Hardshrink: lambda m, a, kw: (a, {"lambd": m.lambd, "bias": 0.0}),
                   nn.Softshrink: lambda m, a, kw: (a, {"lambd": m.lambd, "bias": m.lambd})},
          aten=[("hardshrink.default", _hardshrink), ("softshrink.default", _softshrink)],
          flops=per_output(2))
def shrink(input, lambd=0.5, bias=0.0):
    """x - bias where x > lambd, x + bias where x < -lambd, else 0 (ONNX Shrink): ``F.hardshrink`` is bias 0,
    ``F.softshrink`` bias = lambd. Two FLOPs per element: a comparison and the shift."""
    if bias == 0:
        return F.hardshrink(input, lambd)
    if bias == lambd:
        return F.softshrink(input, lambd)
    zero = torch.zeros((), dtype=input.dtype, device=input.device)
    return torch.where(input > lambd, input - bias, torch.where(input < -lambd, input + bias, zero))


@onnx_lowering("shrink")
def _shrink_onnx(ctx, node):
    return ctx.op("Shrink", [ctx.input("input")], lambd=float(node.args["lambd"]), bias=float(node.args["bias"]))


@onnx_import("Shrink", since=9)
def _shrink_import(ctx):
    return ctx.call("shrink", input=ctx.input(0), lambd=float(ctx.attr("lambd", 0.5)),
                    bias=float(ctx.attr("bias", 0.0)))


@register("prelu", family="elementwise", functions=[F.prelu, torch.prelu], aten=["prelu.default"],
          modules={nn.PReLU: lambda m, a, kw: (a + (Attr("weight"),), kw)}, flops=per_output(2),
          n_tensor_params=2)
def prelu(input, weight):
    return F.prelu(input, weight)


@onnx_lowering("prelu")
def _prelu_onnx(ctx, node):
    r, w = ctx.rank("input"), ctx.input("weight")
    wshape = ctx.spec("weight").shape
    if r >= 2 and ctx.rank("weight") == 1 and wshape[0] != 1:  # one slope per channel (dim 1)
        w = ctx.op("Reshape", [w, ctx.const([-1] + [1] * (r - 2), torch.int64)])
    elif r == 0:  # a 0-d input stays 0-d in torch; PRelu would broadcast it to the slope's (1,)
        w = ctx.op("Reshape", [w, ctx.const([], torch.int64)])
    return ctx.op("PRelu", [ctx.input("input"), w])


@onnx_import("PRelu")
def _prelu_import(ctx):  # slope broadcasts: where(x < 0, x * slope, x)
    x, s = ctx.input(0), ctx.input(1)
    neg = ctx.call("lt", input=x, other=0)
    return ctx.call("where", condition=neg, input=ctx.call("mul", input=x, other=s), other=x)


# ---- clamping ----
@register("clamp", family="elementwise", functions=[torch.clamp, torch.clip],
          methods=["clamp", "clip", "clamp_", "clip_"], aten=["clamp.default", "clamp.Tensor"],
          flops=per_output(2))
def clamp(input, min=None, max=None):
    """clamp(input, min=None, max=None); bounds may be numbers or tensors."""
    return torch.clamp(input, min, max)


@onnx_lowering("clamp")
def _clamp_onnx(ctx, node):
    lo, hi = node.args["min"], node.args["max"]
    dt = out_dtype(ctx)
    x = as_dtype(ctx, "input", dt)
    if lo is None and hi is None:
        ctx.unsupported("clamp with neither min nor max")
    if lo is not None and hi is not None and not isinstance(lo, Value) and not isinstance(hi, Value):
        return ctx.op("Clip", [x, ctx.const(lo, dt), ctx.const(hi, dt)])  # (a missing Clip bound clips infinities)
    if lo is not None:  # min(max(x, lo), hi), as torch (hi wins where lo > hi; NaN propagates)
        x = ctx.op("Max", [x, as_dtype(ctx, "min", dt)])
    if hi is not None:
        x = ctx.op("Min", [x, as_dtype(ctx, "max", dt)])
    return x


def _scalar(t):
    return None if t is None else t.reshape(-1)[0].item()


@onnx_import("Clip")
def _clip_import(ctx):
    for i in (1, 2):
        if ctx.has(i) and ctx.const(i) is None:  # run-time bounds: clamp takes tensors
            return ctx.call("clamp", input=ctx.input(0), min=ctx.input(1), max=ctx.input(2))
    lo, hi = _scalar(ctx.const(1)), _scalar(ctx.const(2))
    if lo is None and hi is None:  # no bounds: the identity
        return ctx.raw(0)
    if lo == 0 and hi == 6 and ctx.dtype(0).is_floating_point:
        return ctx.call("relu6", input=ctx.input(0))
    if lo is not None and hi is None and lo == 0:
        return ctx.call("relu", input=ctx.input(0))
    return ctx.call("clamp", input=ctx.input(0), min=lo, max=hi)


@register("clamp_min", family="elementwise", functions=[torch.clamp_min], methods=["clamp_min", "clamp_min_"],
          aten=["clamp_min.default", "clamp_min.Tensor"], flops=per_output(1))
def clamp_min(input, min):
    return torch.clamp_min(input, min)


@onnx_lowering("clamp_min")
def _clamp_min_onnx(ctx, node):
    dt = out_dtype(ctx)  # ONNX Max has no bool kernel: the larger of two bools is their disjunction
    return ctx.op("Or" if dt == torch.bool else "Max", [as_dtype(ctx, "input", dt), as_dtype(ctx, "min", dt)])


@register("clamp_max", family="elementwise", functions=[torch.clamp_max], methods=["clamp_max", "clamp_max_"],
          aten=["clamp_max.default", "clamp_max.Tensor"], flops=per_output(1))
def clamp_max(input, max):
    return torch.clamp_max(input, max)


@onnx_lowering("clamp_max")
def _clamp_max_onnx(ctx, node):
    dt = out_dtype(ctx)  # ONNX Min has no bool kernel: the smaller of two bools is their conjunction
    return ctx.op("And" if dt == torch.bool else "Min", [as_dtype(ctx, "input", dt), as_dtype(ctx, "max", dt)])


# ---- binary arithmetic: python operators, so tensors, python numbers and SymInts all work -----------
def _reflected(args, kwargs):
    """x.__rpow__(y) is y ** x: the operands swap."""
    x, other = args
    return (other, x), kwargs


def _arith(name, pyop, fns, methods, aten, doc, k=1, **facts):
    """A binary op of ``k`` FLOPs per output element."""
    def impl(input, other):
        return pyop(input, other)

    impl.__name__ = name
    impl.__doc__ = doc
    register(name, family="elementwise", functions=fns, methods=methods, aten=aten, flops=per_output(k),
             n_tensor_params=2, **facts)(impl)


_arith("mul", operator.mul, [torch.mul, torch.multiply, operator.mul, operator.imul],
       ["mul", "multiply", "mul_", "__mul__", "__rmul__", "__imul__"], ["mul.Tensor", "mul.Scalar"], "input * other",
       commutative=True)
_arith("floordiv", operator.floordiv, [operator.floordiv, operator.ifloordiv],
       ["__floordiv__", ("__rfloordiv__", _reflected)], [], "input // other (python floor division)")
_arith("floor_divide", operator.floordiv, [torch.floor_divide], ["floor_divide", "floor_divide_"],
       ["floor_divide.default"], "torch.floor_divide(input, other)")
_arith("remainder", operator.mod, [torch.remainder, operator.mod, operator.imod],
       ["remainder", "__mod__", "remainder_"], ["remainder.Tensor", "remainder.Scalar"], "input % other")
_arith("fmod", torch.fmod, [torch.fmod], ["fmod"], ["fmod.Tensor", "fmod.Scalar"], "torch.fmod(input, other)")
_arith("pow", operator.pow, [torch.pow, operator.pow, operator.ipow],
       ["pow", "pow_", "__pow__", ("__rpow__", _reflected)], ["pow.Tensor_Tensor", "pow.Tensor_Scalar", "pow.Scalar"],
       "input ** other")
_arith("eq", operator.eq, [torch.eq, operator.eq], ["eq", "__eq__"], ["eq.Tensor", "eq.Scalar"], "input == other")
_arith("ne", operator.ne, [torch.ne, operator.ne, torch.not_equal], ["ne", "__ne__"], ["ne.Tensor", "ne.Scalar"],
       "input != other")
_arith("lt", operator.lt, [torch.lt, operator.lt, torch.less], ["lt", "__lt__"], ["lt.Tensor", "lt.Scalar"],
       "input < other")
_arith("le", operator.le, [torch.le, operator.le, torch.less_equal], ["le", "__le__"], ["le.Tensor", "le.Scalar"],
       "input <= other")
_arith("gt", operator.gt, [torch.gt, operator.gt, torch.greater], ["gt", "__gt__"], ["gt.Tensor", "gt.Scalar"],
       "input > other")
_arith("ge", operator.ge, [torch.ge, operator.ge, torch.greater_equal], ["ge", "__ge__"],
       ["ge.Tensor", "ge.Scalar"], "input >= other")
_arith("bitwise_and", operator.and_, [torch.bitwise_and, operator.and_, operator.iand],
       ["bitwise_and", "__and__", "__iand__"], ["bitwise_and.Tensor", "bitwise_and.Scalar", "__and__.Tensor", "__and__.Scalar"], "input & other")
_arith("bitwise_or", operator.or_, [torch.bitwise_or, operator.or_, operator.ior],
       ["bitwise_or", "__or__", "__ior__"], ["bitwise_or.Tensor", "bitwise_or.Scalar", "__or__.Tensor", "__or__.Scalar"], "input | other")
_arith("bitwise_xor", operator.xor, [torch.bitwise_xor, operator.xor, operator.ixor],
       ["bitwise_xor", "__xor__"], ["bitwise_xor.Tensor", "bitwise_xor.Scalar", "__xor__.Tensor", "__xor__.Scalar"], "input ^ other")
_arith("logical_and", torch.logical_and, [torch.logical_and], ["logical_and"], ["logical_and.default"],
       "torch.logical_and(input, other)")
_arith("logical_or", torch.logical_or, [torch.logical_or], ["logical_or"], ["logical_or.default"],
       "torch.logical_or(input, other)")
_arith("logical_xor", torch.logical_xor, [torch.logical_xor], ["logical_xor"], ["logical_xor.default"],
       "torch.logical_xor(input, other)")
_arith("maximum", torch.maximum, [torch.maximum], ["maximum"], ["maximum.default", "max.other"],
       "torch.maximum(input, other); torch.max(input, other) is aten max.other")
_arith("minimum", torch.minimum, [torch.minimum], ["minimum"], ["minimum.default", "min.other"],
       "torch.minimum(input, other); torch.min(input, other) is aten min.other")
_arith("atan2", torch.atan2, [torch.atan2, torch.arctan2], ["atan2", "arctan2"], ["atan2.default", "arctan2.default"],
       "torch.atan2(input, other): the angle of the point (other, input), in [-pi, pi]. Three FLOPs per element: "
       "the division input / other, its arctangent and the quadrant's correction by +-pi.", k=3)


def _binary_lowering(onnx_op, bool_op=None):
    """``onnx_op`` on the promoted operands; ``bool_op`` where the result is bool (ONNX Max/Min have no bool kernel:
    on bools they are Or/And)."""
    def lower(ctx, node):
        if bool_op and out_dtype(ctx) == torch.bool:
            return ctx.op(bool_op, list(_binary_inputs(ctx, dtype=torch.bool)))
        a, b = _binary_inputs(ctx)
        return ctx.op(onnx_op, [a, b])
    return lower


for _name, (_onnx_op, _bool_op) in {"pow": ("Pow", None), "maximum": ("Max", "Or"), "minimum": ("Min", "And")}.items():
    onnx_lowering(_name)(_binary_lowering(_onnx_op, _bool_op))


@onnx_lowering("mul", complex=True)
def _mul_onnx(ctx, node):
    dt = out_dtype(ctx)
    if dt == torch.bool:  # ONNX Mul has no bool kernel: a product of bools is their conjunction
        return ctx.op("And", list(_binary_inputs(ctx, dtype=torch.bool)))
    if not dt.is_complex:
        return ctx.op("Mul", list(_binary_inputs(ctx)))
    # on (real, imaginary) pairs: a real factor scales both parts; (a + bi)(c + di) = (ac - bd) + (ad + bc)i
    real = [k for k in ("input", "other") if not is_complex(ctx, k) and not isinstance(ctx[k], complex)]
    if real:
        (k,) = real
        r = as_dtype(ctx, k, dt.to_real())
        r = ctx.op("Unsqueeze", [r, i64(ctx, [ctx.rank(k)])]) if isinstance(ctx[k], Value) else r
        return ctx.op("Mul", [as_complex(ctx, "other" if k == "input" else "input", dt), r])
    (a, b), (c, d) = complex_parts(ctx, as_complex(ctx, "input", dt)), complex_parts(ctx, as_complex(ctx, "other", dt))
    re = ctx.op("Sub", [ctx.op("Mul", [a, c]), ctx.op("Mul", [b, d])])
    return complex_join(ctx, re, ctx.op("Add", [ctx.op("Mul", [a, d]), ctx.op("Mul", [b, c])]))


def _compare_lowering(onnx_op):
    def lower(ctx, node):
        dt = _result_type(ctx, "input", "other")
        if dt == torch.bool and onnx_op != "Equal":  # ONNX orders numbers only: False < True as 0 < 1
            dt = torch.uint8
        return ctx.op(onnx_op, list(_binary_inputs(ctx, dtype=dt)))
    return lower


for _name, _onnx_op in {"eq": "Equal", "lt": "Less", "le": "LessOrEqual", "gt": "Greater",
                        "ge": "GreaterOrEqual"}.items():
    onnx_lowering(_name)(_compare_lowering(_onnx_op))


def _logical_lowering(onnx_op):
    def lower(ctx, node):  # any dtype: nonzero is True
        return ctx.op(onnx_op, list(_binary_inputs(ctx, dtype=torch.bool)))
    return lower


for _name, _onnx_op in {"logical_and": "And", "logical_or": "Or", "logical_xor": "Xor"}.items():
    onnx_lowering(_name)(_logical_lowering(_onnx_op))


@onnx_lowering("ne")
def _ne_onnx(ctx, node):
    a, b = _binary_inputs(ctx)
    return ctx.op("Not", [ctx.op("Equal", [a, b])])


def _floor_divide_onnx(ctx, node):
    dt = out_dtype(ctx)
    a, b = _binary_inputs(ctx, dtype=dt)
    return _floor_divide(ctx, a, b, dt)


onnx_lowering("floordiv")(_floor_divide_onnx)
onnx_lowering("floor_divide")(_floor_divide_onnx)


@onnx_lowering("remainder")
def _remainder_onnx(ctx, node):
    dt = out_dtype(ctx)
    a, b = _binary_inputs(ctx, dtype=dt)
    # a - floor(a / b) * b: fmod, plus b where it has the other sign than b (torch and python)
    r = ctx.op("Mod", [a, b], fmod=1)
    return ctx.op("Where", [_opposite_signs(ctx, r, b, dt), ctx.op("Add", [r, b]), r])


@onnx_lowering("fmod")
def _fmod_onnx(ctx, node):
    dt = out_dtype(ctx)
    return ctx.op("Mod", list(_binary_inputs(ctx, dtype=dt)), fmod=1)


def _bitwise_lowering(logical, bitwise):
    def lower(ctx, node):
        dt = out_dtype(ctx)
        a, b = _binary_inputs(ctx, dtype=dt)
        if dt == torch.bool:
            return ctx.op(logical, [a, b])
        if ctx.opset < 18:
            ctx.unsupported(f"{bitwise} of integers needs opset 18 or newer (asked: {ctx.opset})")
        return ctx.op(bitwise, [a, b])
    return lower


for _name, _ops in {"bitwise_and": ("And", "BitwiseAnd"), "bitwise_or": ("Or", "BitwiseOr"),
                    "bitwise_xor": ("Xor", "BitwiseXor")}.items():
    onnx_lowering(_name)(_bitwise_lowering(*_ops))


@onnx_lowering("atan2")
def _atan2_onnx(ctx, node):
    dt = out_dtype(ctx)
    return atan2_onnx(ctx, *_binary_inputs(ctx, dtype=dt), dt)


def atan2_onnx(ctx, y: str, x: str, dt: torch.dtype) -> str:
    """atan2(y, x) of two ONNX tensors of float ``dt`` (ONNX has no Atan2; ``angle`` of a complex tensor uses it)."""
    zero, one = ctx.const(0.0, dt), ctx.const(1.0, dt)

    def signbit(v):  # v < 0, or v is -0.0 (1 / -0.0 = -inf)
        return ctx.op("Or", [ctx.op("Less", [v, zero]), ctx.op("Less", [ctx.op("Div", [one, v]), zero])])

    # atan(y / x), moved to the quadrant of (x, y); both zero or both infinite: their signs stand in for them
    both_zero = ctx.op("And", [ctx.op("Equal", [y, zero]), ctx.op("Equal", [x, zero])])
    both_inf = ctx.op("And", [ctx.op("IsInf", [y]), ctx.op("IsInf", [x])])
    neg_x, neg_y = signbit(x), signbit(y)
    sign_x = ctx.op("Where", [neg_x, ctx.const(-1.0, dt), one])
    x2 = ctx.op("Where", [ctx.op("Or", [both_zero, both_inf]), sign_x, x])
    y2 = ctx.op("Where", [both_inf, ctx.op("Sign", [y]), y])
    q = ctx.op("Atan", [ctx.op("Div", [y2, x2])])
    turn = ctx.op("Where", [neg_y, ctx.const(-math.pi, dt), ctx.const(math.pi, dt)])
    return ctx.op("Where", [neg_x, ctx.op("Add", [q, turn]), q])


@onnx_import("Pow")
def _pow_import(ctx):
    """ONNX's Pow keeps the base's element type (int32 ** float32 is int32); torch promotes to the wider one."""
    y = ctx.call("pow", input=ctx.input(0), other=ctx.input(1))
    base = ctx.dtype(0)
    return y if ctx.dtype(y) == base else ctx.call("to", input=y, dtype=base)


_BINARY_IMPORT = {"Mul": "mul", "Equal": "eq", "Greater": "gt", "Less": "lt", "GreaterOrEqual": "ge",
                  "LessOrEqual": "le", "And": "logical_and", "Or": "logical_or", "Xor": "logical_xor",
                  "BitwiseAnd": "bitwise_and", "BitwiseOr": "bitwise_or", "BitwiseXor": "bitwise_xor"}
for _t, _op in _BINARY_IMPORT.items():
    onnx_import(_t)(_import_binary(_op))


@onnx_import("Mod")
def _mod_import(ctx):  # fmod=1: sign of the dividend (C fmod); fmod=0: sign of the divisor (python %)
    return ctx.call("fmod" if ctx.attr("fmod", 0) else "remainder", input=ctx.input(0), other=ctx.input(1))


onnx_import("Max")(_import_variadic("maximum"))
onnx_import("Min")(_import_variadic("minimum"))


# ---- add, sub, rsub: input op alpha * other ----
@register("add", family="elementwise",
          functions=[torch.add, operator.add, operator.iadd], methods=["add", "add_", "__add__", "__radd__", "__iadd__"],
          aten=["add.Tensor", "add.Scalar"], flops=per_output(1), n_tensor_params=2,
          commutative=lambda node: node.args.get("alpha", 1) == 1, fresh_output=True, inplace="add_")
def add(input, other, alpha=1):
    """input + alpha * other."""
    return input + other if alpha == 1 else torch.add(input, other, alpha=alpha)


@onnx_lowering("add", complex=True)
def _add_onnx(ctx, node):
    if out_dtype(ctx) == torch.bool:  # ONNX Add has no bool kernel: a sum of bools is a disjunction
        a, b = _binary_inputs(ctx, dtype=torch.bool)
        if not node.args["alpha"]:  # alpha=False: input, broadcast
            b = ctx.op("And", [b, ctx.const(False)])
        return ctx.op("Or", [a, b])
    return _scaled(ctx, node, "Add", reverse=False)  # input + alpha * other


onnx_import("Add")(_import_binary("add"))
onnx_import("Sum")(_import_variadic("add"))


@register("sub", family="elementwise",
          functions=[torch.sub, torch.subtract, operator.sub, operator.isub],
          methods=["sub", "subtract", "sub_", "__sub__", "__isub__"],
          aten=["sub.Tensor", "sub.Scalar"], flops=per_output(1), n_tensor_params=2, fresh_output=True)
def sub(input, other, alpha=1):
    """input - alpha * other."""
    return input - other if alpha == 1 else torch.sub(input, other, alpha=alpha)


@onnx_lowering("sub", complex=True)
def _sub_onnx(ctx, node):
    return _scaled(ctx, node, "Sub", reverse=False)  # input - alpha * other


onnx_import("Sub")(_import_binary("sub"))


@register("rsub", family="elementwise", methods=["__rsub__"], aten=["rsub.Scalar", "rsub.Tensor"],
          flops=per_output(1), n_tensor_params=2)
def rsub(input, other, alpha=1):
    """other - alpha * input."""
    return other - input if alpha == 1 else torch.rsub(input, other, alpha=alpha)


@onnx_lowering("rsub")
def _rsub_onnx(ctx, node):
    return _scaled(ctx, node, "Sub", reverse=True)  # other - alpha * input


# ---- true division ----
def _scalar_mode(args, kwargs):
    """aten.div.Scalar_mode(self, other: Scalar, *, rounding_mode): the divisor a python number, as div's
    ``other`` may be; ``rounding_mode`` passed by keyword or position."""
    if len(args) > 2:
        args, kwargs = args[:2], {**kwargs, "rounding_mode": args[2]}
    return args, kwargs


@register("div", family="elementwise",
          functions=[torch.div, torch.divide, torch.true_divide, operator.truediv, operator.itruediv],
          methods=["div", "divide", "true_divide", "div_", "__truediv__", "__itruediv__"],
          aten=["div.Tensor", "div.Scalar", "div.Tensor_mode", ("div.Scalar_mode", _scalar_mode)],
          flops=per_output(1), n_tensor_params=2)
def div(input, other, rounding_mode=None):
    """input / other, with rounding_mode None | 'trunc' | 'floor'."""
    if rounding_mode is None:
        return input / other
    return torch.div(input, other, rounding_mode=rounding_mode)


@onnx_lowering("div")
def _div_onnx(ctx, node):
    mode = node.args["rounding_mode"]
    if mode is None:  # true division: integers divide as floats
        return ctx.op("Div", list(_binary_inputs(ctx, dtype=out_dtype(ctx))))
    a, b = _binary_inputs(ctx)
    dt = _result_type(ctx, "input", "other")
    if mode == "floor":
        return _floor_divide(ctx, a, b, dt)
    if not dt.is_floating_point:  # integer Div truncates
        return ctx.op("Div", [a, b])
    return _trunc(ctx, ctx.op("Div", [a, b]))  # trunc(a / b), as torch


@onnx_import("Div")
def _div_import(ctx):  # integer Div truncates toward zero
    sizes = ctx.dims_arith("floordiv", operator.floordiv)  # sizes are >= 0: floor is trunc
    if sizes is not None:
        return sizes
    a, b = ctx.input(0), ctx.input(1)
    integer = not ctx.dtype(a).is_floating_point and not ctx.dtype(b).is_floating_point
    return ctx.call("div", input=a, other=b, rounding_mode="trunc" if integer else None)


@register("rdiv", family="elementwise", methods=["__rtruediv__", "__rdiv__"], flops=per_output(1), n_tensor_params=2)
def rdiv(input, other):
    """other / input."""
    return other / input


@onnx_lowering("rdiv")
def _rdiv_onnx(ctx, node):
    a, b = _binary_inputs(ctx, dtype=out_dtype(ctx))
    return ctx.op("Div", [b, a])


# ---- selection and fused arithmetic ----
def _where_method(args, kwargs):
    """x.where(cond, y) is torch.where(cond, x, y)."""
    x, cond, *rest = args
    return (cond, x, *rest), kwargs


@register("where", family="elementwise", functions=[torch.where], methods=[("where", _where_method)],
          aten=["where.self", "where.ScalarOther", "where.ScalarSelf", "where.Scalar"],
          flops=per_output(1), n_tensor_params=3)
def where(condition, input, other):
    """torch.where(condition, input, other)."""
    return torch.where(condition, input, other)


@onnx_lowering("where")
def _where_onnx(ctx, node):
    a, b = _binary_inputs(ctx, dtype=out_dtype(ctx))
    return _where(ctx, as_dtype(ctx, "condition", torch.bool), a, b, out_dtype(ctx))


@onnx_import("Where")
def _where_import(ctx):
    return ctx.call("where", condition=ctx.input(0), input=ctx.input(1), other=ctx.input(2))


@register("masked_fill", family="elementwise", functions=[torch.masked_fill],
          methods=["masked_fill", "masked_fill_"], aten=["masked_fill.Scalar", "masked_fill.Tensor"],
          flops=per_output(1), n_tensor_params=2)
def masked_fill(input, mask, value):
    return torch.masked_fill(input, mask, value)


@onnx_lowering("masked_fill")
def _masked_fill_onnx(ctx, node):
    dt = ctx.dtype("input")
    return _where(ctx, as_dtype(ctx, "mask", torch.bool), as_dtype(ctx, "value", dt), ctx.input("input"), dt)


@register("lerp", family="elementwise", functions=[torch.lerp], methods=["lerp"],
          aten=["lerp.Scalar", "lerp.Tensor"], flops=per_output(3), n_tensor_params=3)
def lerp(input, end, weight):
    return torch.lerp(input, end, weight)


@onnx_lowering("lerp")
def _lerp_onnx(ctx, node):
    dt = out_dtype(ctx)
    a, b = as_dtype(ctx, "input", dt), as_dtype(ctx, "end", dt)
    w, wv = as_dtype(ctx, "weight", dt), node.args["weight"]
    diff = ctx.op("Sub", [b, a])
    # torch: |w| < 0.5 ? a + w (b - a) : b - (b - a)(1 - w)
    low = ctx.op("Add", [a, ctx.op("Mul", [w, diff])])
    high = ctx.op("Sub", [b, ctx.op("Mul", [diff, ctx.op("Sub", [ctx.const(1.0, dt), w])])])
    if not isinstance(wv, Value):
        return low if abs(wv) < 0.5 else high
    return ctx.op("Where", [ctx.op("Less", [ctx.op("Abs", [w]), ctx.const(0.5, dt)]), low, high])


@register("addcmul", family="elementwise", functions=[torch.addcmul], methods=["addcmul"],
          aten=["addcmul.default"], flops=per_output(3), n_tensor_params=3)
def addcmul(input, tensor1, tensor2, value=1):
    return torch.addcmul(input, tensor1, tensor2, value=value)


@onnx_lowering("addcmul")
def _addcmul_onnx(ctx, node):
    dt = out_dtype(ctx)
    t1, t2 = as_dtype(ctx, "tensor1", dt), as_dtype(ctx, "tensor2", dt)
    v = node.args["value"]
    prod = t1 if not isinstance(v, Value) and v == 1 else ctx.op("Mul", [as_dtype(ctx, "value", dt), t1])
    return ctx.op("Add", [as_dtype(ctx, "input", dt), ctx.op("Mul", [prod, t2])])  # input + value * t1 * t2


# ---- casts: a device move is nothing in ONNX ----
def _to_arg_kind(r) -> str | None:
    """What a positional argument of ``x.to(...)`` is; traced ones are Values (``y.dtype``, ``y.device``, ``y``)."""
    if isinstance(r, Value):
        if isinstance(r.spec, TensorSpec):
            return "tensor"
        t = r.spec.type if isinstance(r.spec, ScalarSpec) else None
        return "dtype" if t is torch.dtype else "device" if t in (torch.device, str, int) else None
    if isinstance(r, torch.dtype):
        return "dtype"
    if isinstance(r, (str, torch.device, int)) and not isinstance(r, bool):
        return "device"
    if isinstance(r, torch.Tensor):
        return "tensor"
    return None


def _to_adapter(args, kwargs):
    """x.to(dtype) / x.to(device) / x.to(device, dtype) / x.to(other) -> to(x, dtype=, device=).

    ``x.to(other)`` with a traced ``other`` takes its (static) dtype; the device follows ``x``, as everywhere in a
    bridge graph (one device, moved as a whole by ``.to()`` of the generated module)."""
    x, *rest = args
    kwargs = dict(kwargs)
    kwargs.pop("non_blocking", None)
    kwargs.pop("copy", None)
    kwargs.pop("memory_format", None)
    dtype, device = kwargs.pop("dtype", None), kwargs.pop("device", None)
    for r in rest:
        kind = _to_arg_kind(r)
        if kind == "dtype":
            dtype = r
        elif kind == "device":
            device = r
        elif kind == "tensor":
            dtype, device = (r.dtype, r.device) if isinstance(r, torch.Tensor) else (r.spec.dtype, device)
        elif not isinstance(r, bool):  # non_blocking / copy given positionally are bools
            raise NotImplementedError(f"x.to() argument {r!r}")
    return (x,), {"dtype": dtype, "device": device}


@register("to", family="elementwise", methods=[("to", _to_adapter)],
          aten=["_to_copy.default", "to.dtype", ("to.dtype_layout", lambda a, k: (a, {
              "dtype": k.get("dtype"), "device": k.get("device")})), ("to.device", lambda a, k: (
                  (a[0],), {"device": a[1], "dtype": a[2] if len(a) > 2 else k.get("dtype")}))],
          flops=zero)
def to(input, dtype=None, device=None):
    """Cast to ``dtype`` and/or move to ``device`` (``None`` keeps it)."""
    return input.to(device=device, dtype=dtype)


def _cast_onnx(ctx, node):
    dt = out_dtype(ctx)
    x = ctx.input("input")
    return ctx.op("Identity", [x]) if ctx.dtype("input") == dt else ctx.cast(x, dt)


@onnx_lowering("to", complex=True)
def _to_onnx(ctx, node):
    dt = out_dtype(ctx)
    if dt.is_complex:  # (real, imaginary) pairs: a real input gets imaginary part 0
        y = as_complex(ctx, "input", dt)
        return ctx.op("Identity", [y]) if y == ctx.input("input") else y
    if is_complex(ctx, "input"):  # to a real dtype: torch keeps the real part
        return ctx.cast(complex_part(ctx, "input", 0), dt)
    return _cast_onnx(ctx, node)


def _fixed_cast(name, dtype, methods):
    def impl(input):
        return input.to(dtype)

    impl.__name__ = name
    impl.__doc__ = f"input.to({dtype})"
    register(name, family="elementwise", methods=methods, flops=zero)(impl)
    onnx_lowering(name)(_cast_onnx)


_fixed_cast("to_float32", torch.float32, ["float"])
_fixed_cast("to_float64", torch.float64, ["double"])
_fixed_cast("to_float16", torch.float16, ["half"])
_fixed_cast("to_bfloat16", torch.bfloat16, ["bfloat16"])
_fixed_cast("to_int64", torch.int64, ["long"])
_fixed_cast("to_int32", torch.int32, ["int"])
_fixed_cast("to_bool", torch.bool, ["bool"])


@register("type_as", family="elementwise", methods=["type_as"], flops=zero, n_tensor_params=2)
def type_as(input, other):
    return input.type_as(other)


onnx_lowering("type_as")(_cast_onnx)


@onnx_import("Cast")
def _cast_import(ctx):
    try:
        dtype = torch_dtype(ctx.attr("to"))
    except UnsupportedElementType as e:
        ctx.unsupported(str(e))  # the same ImportUnsupported the frontend raises
    if isinstance(ctx.raw(0), Dims) and dtype == torch.int64:
        return ctx.raw(0)
    return onnx_cast(ctx, ctx.input(0), dtype)


@onnx_import("CastLike")
def _cast_like_import(ctx):
    return onnx_cast(ctx, ctx.input(0), ctx.dtype(1))


def onnx_cast(ctx, x, dtype):
    """ONNX Cast of ``x`` to ``dtype``. To a float8 type from a wider float: with ``saturate`` (the default) values
    beyond the type's range, infinities included, become its largest value; without, they become NaN (infinity
    for float8_e5m2), as torch's conversion does except to float8_e4m3fn, where it saturates: there, values past
    464 (half-way from its largest value, 448, to the next step) become NaN first."""
    if dtype in FLOAT8 and ctx.dtype(x).is_floating_point and ctx.dtype(x) not in FLOAT8:
        if ctx.attr("saturate", 1):
            big = float(torch.finfo(dtype).max)
            x = ctx.call("clamp", input=x, min=-big, max=big)
        elif dtype == torch.float8_e4m3fn:
            beyond = ctx.call("gt", input=ctx.call("abs", input=x), other=464.0)
            x = ctx.call("where", condition=beyond, input=torch.tensor(math.nan, dtype=ctx.dtype(x)), other=x)
    if isinstance(x, Value) and ctx.dtype(x) == dtype:
        return x  # a cast to the type it has: the value itself
    return ctx.call("to", input=x, dtype=dtype)


@onnx_import("Identity")
def _identity_import(ctx):
    return ctx.raw(0)


# ---- dropout ----
_DROPOUT_KINDS = {F.dropout: "dropout", F.dropout1d: "dropout1d", F.dropout2d: "dropout2d",
                  F.dropout3d: "dropout3d", F.alpha_dropout: "alpha_dropout",
                  F.feature_alpha_dropout: "feature_alpha_dropout"}
_DROPOUT_MODULES = {nn.Dropout: "dropout", nn.Dropout1d: "dropout1d", nn.Dropout2d: "dropout2d",
                    nn.Dropout3d: "dropout3d", nn.AlphaDropout: "alpha_dropout",
                    nn.FeatureAlphaDropout: "feature_alpha_dropout"}


def _dropout_fn(kind):
    # F.alpha_dropout and F.feature_alpha_dropout default to training=False, the other functions to True
    default_training = not kind.endswith("alpha_dropout")

    def adapt(args, kwargs):
        kwargs = {**kwargs, "kind": kind}
        if len(args) < 3 and "training" not in kwargs:
            kwargs["training"] = default_training
        return args, kwargs
    return adapt


def _dropout_module(kind):
    return lambda m, args, kwargs: (args, {**kwargs, "p": m.p, "training": m.training, "kind": kind})


def _stochastic_depth(args, kwargs):
    b = dict(zip(("input", "p", "mode", "training"), args), **kwargs)
    return (b["input"], b["p"], b.get("training", True)), {"kind": f"stochastic_depth_{b['mode']}"}


def _aten_native_dropout(args, kwargs):
    """native_dropout(input, p, train) -> (out, mask): the op's output, and a mask it does not compute (ATen's
    ``train=None`` means training)."""
    b = dict(zip(("input", "p", "train"), args), **kwargs)
    train = True if b.get("train") is None else bool(b["train"])
    return (b["input"],), {"p": b["p"], "training": train}, main_only("native_dropout", "mask")


@register("dropout", family="elementwise",
          functions=[(fn, _dropout_fn(kind)) for fn, kind in _DROPOUT_KINDS.items()]
          + [(torch.dropout, lambda a, kw: ((a[0],), {"p": a[1], "training": a[2]}))],
          aten=[("dropout.default", lambda a, kw: ((a[0],), {"p": a[1], "training": a[2]})),
                ("native_dropout.default", _aten_native_dropout)],
          modules={cls: _dropout_module(kind) for cls, kind in _DROPOUT_MODULES.items()},
          external=[("torchvision.ops.stochastic_depth.stochastic_depth", _stochastic_depth)],
          flops=zero, random=lambda node: bool(node.args.get("training")))
def dropout(input, p=0.5, training=True, kind="dropout"):
    """Dropout of the given ``kind`` (dropout, dropout2d, alpha_dropout, ..., and torchvision's stochastic depth
    as ``stochastic_depth_row``/``_batch``); the identity unless ``training``."""
    if not training:
        return input
    if kind.startswith("stochastic_depth_"):  # drop whole samples (row) or the whole batch
        survival = 1.0 - p
        size = [input.shape[0]] + [1] * (input.dim() - 1) if kind.endswith("row") else [1] * input.dim()
        noise = torch.empty(size, dtype=input.dtype, device=input.device).bernoulli_(survival)
        return input * (noise / survival if survival > 0 else noise)
    return getattr(F, kind)(input, p, training)


_ALPHA = 1.7580993408473766  # -SELU's negative saturation value (torch's alpha dropout)


@onnx_lowering("dropout")
def _dropout_onnx(ctx, node):
    p, kind = float(node.args["p"]), node.args["kind"]
    x, dt = ctx.input("input"), ctx.dtype("input")
    if not node.args["training"] or p == 0:
        return ctx.op("Identity", [x])
    if kind.startswith("stochastic_depth"):
        ctx.unsupported("stochastic depth in training mode (random); export the model in eval mode")
    if p == 1:
        return ctx.op("Mul", [x, ctx.const(0.0, dt)])
    r = ctx.rank("input")
    like = x  # the noise's shape: the input's, or (N, C, 1, ...) for the feature (channel-wise) kinds
    if kind in ("dropout1d", "dropout2d", "dropout3d", "feature_alpha_dropout"):
        batched = {"dropout1d": r == 3, "dropout3d": r == 5, "dropout2d": r in (3, 4)}.get(kind, r >= 2)
        keep = 2 if batched else 1
        if r > keep:
            shape = ctx.op("Concat", [ctx.op("Slice", [ctx.op("Shape", [x]), i64(ctx, [0]), i64(ctx, [keep])]),
                                      i64(ctx, [1] * (r - keep))], axis=0)
            like = ctx.op("Expand", [ctx.const(0.0, dt), shape])
    noise = random_like(ctx, like, dt, normal=False)  # bernoulli(1 - p): keep where u >= p
    noise = ctx.cast(ctx.op("GreaterOrEqual", [noise, ctx.const(p, dt)]), dt)
    if kind not in ("alpha_dropout", "feature_alpha_dropout"):
        return ctx.op("Mul", [x, ctx.op("Div", [noise, ctx.const(1 - p, dt)])])  # x * noise / (1 - p)
    # torch: a = 1/sqrt((alpha^2 p + 1)(1 - p)); x * noise * a + (noise - 1) * alpha * a + alpha * a * p
    a = 1.0 / math.sqrt((_ALPHA * _ALPHA * p + 1) * (1 - p))
    b = ctx.op("Add", [ctx.op("Mul", [ctx.op("Sub", [noise, ctx.const(1.0, dt)]), ctx.const(_ALPHA * a, dt)]),
                       ctx.const(_ALPHA * a * p, dt)])
    return ctx.op("Add", [ctx.op("Mul", [x, ctx.op("Mul", [noise, ctx.const(a, dt)])]), b])


@onnx_import("Dropout")
def _dropout_import(ctx):  # inference: the identity, and a mask output, when asked for, all true
    if ctx.has(2):  # training_mode (opset 12+): random dropout unless it is known to be false
        mode = ctx.const(2)
        if mode is None or bool(mode.reshape(-1)[0]):
            ctx.unsupported("Dropout in training mode (training_mode input true or computed at run time): "
                            "re-export the model in eval mode")
    if len(ctx.node.output) > 1 and ctx.node.output[1]:
        x = ctx.input(0)
        return [x, ctx.call("full_like", input=x, fill_value=True, dtype=torch.bool)]
    return ctx.raw(0)
