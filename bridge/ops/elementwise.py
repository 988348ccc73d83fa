"""Elementwise math, activations, comparisons, where/masked_fill and casts."""
from __future__ import annotations

import math
import operator

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._util import per_output, zero
from .registry import register

# ---- unary math and activations: (name, torch callables, methods, module, aten, flops/elem) -------
# Each impl takes (input) only; parametrized activations are defined below.
_UNARY = [
    ("relu", [F.relu, torch.relu], ["relu", "relu_"], nn.ReLU, ["relu.default"], 1),
    ("sigmoid", [torch.sigmoid, F.sigmoid], ["sigmoid", "sigmoid_"], nn.Sigmoid, ["sigmoid.default"], 4),
    ("tanh", [torch.tanh, F.tanh], ["tanh", "tanh_"], nn.Tanh, ["tanh.default"], 4),
    ("silu", [F.silu], [], nn.SiLU, ["silu.default"], 5),
    ("mish", [F.mish], [], nn.Mish, ["mish.default"], 6),
    ("hardswish", [F.hardswish], [], nn.Hardswish, ["hardswish.default"], 4),
    ("hardsigmoid", [F.hardsigmoid], [], nn.Hardsigmoid, ["hardsigmoid.default"], 3),
    ("relu6", [F.relu6], [], nn.ReLU6, [], 2),
    ("selu", [F.selu, torch.selu], [], nn.SELU, ["selu.default"], 5),
    ("logsigmoid", [F.logsigmoid], [], nn.LogSigmoid,
     [("log_sigmoid_forward.default", lambda a, k: (a, k, lambda out: (out, None)))], 5),  # (output, buffer)
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
    ("neg", [torch.neg, operator.neg], ["neg", "neg_", "__neg__"], None, ["neg.default"], 1),
    ("reciprocal", [torch.reciprocal], ["reciprocal", "reciprocal_"], None, ["reciprocal.default"], 1),
    ("sin", [torch.sin], ["sin"], None, ["sin.default"], 1),
    ("cos", [torch.cos], ["cos"], None, ["cos.default"], 1),
    ("tan", [torch.tan], ["tan"], None, ["tan.default"], 1),
    ("asin", [torch.asin], ["asin"], None, ["asin.default"], 1),
    ("acos", [torch.acos], ["acos"], None, ["acos.default"], 1),
    ("atan", [torch.atan], ["atan"], None, ["atan.default"], 1),
    ("sinh", [torch.sinh], ["sinh"], None, ["sinh.default"], 1),
    ("cosh", [torch.cosh], ["cosh"], None, ["cosh.default"], 1),
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
             aten=aten, flops=per_output(k))(impl)


for _row in _UNARY:
    _make_unary(*_row)


@register("round", family="elementwise", functions=[torch.round, round], methods=["round", "round_"],
          aten=["round.default", "round.decimals"], flops=per_output(1))
def round_(input, decimals=0):
    """round(input, decimals=0): half to even, as torch."""
    if isinstance(input, torch.Tensor):
        return torch.round(input, decimals=decimals)
    return round(input, decimals) if decimals else round(input)


@register("gelu", family="elementwise", functions=[F.gelu], aten=["gelu.default"],
          modules={nn.GELU: lambda m, a, kw: (a, {**kw, "approximate": m.approximate})},
          flops=per_output(8))
def gelu(input, approximate="none"):
    """gelu(input, approximate='none'|'tanh')."""
    return F.gelu(input, approximate=approximate)


@register("leaky_relu", family="elementwise", functions=[F.leaky_relu], aten=["leaky_relu.default"],
          modules={nn.LeakyReLU: lambda m, a, kw: (a, {**kw, "negative_slope": m.negative_slope})},
          flops=per_output(2))
def leaky_relu(input, negative_slope=0.01):
    return F.leaky_relu(input, negative_slope)


@register("elu", family="elementwise", functions=[F.elu], aten=["elu.default"],
          modules={nn.ELU: lambda m, a, kw: (a, {**kw, "alpha": m.alpha})}, flops=per_output(4))
def elu(input, alpha=1.0):
    return F.elu(input, alpha)


@register("celu", family="elementwise", functions=[F.celu], aten=["celu.default"],
          modules={nn.CELU: lambda m, a, kw: (a, {**kw, "alpha": m.alpha})}, flops=per_output(4))
def celu(input, alpha=1.0):
    return F.celu(input, alpha)


@register("softplus", family="elementwise", functions=[F.softplus], aten=["softplus.default"],
          modules={nn.Softplus: lambda m, a, kw: (a, {**kw, "beta": m.beta, "threshold": m.threshold})},
          flops=per_output(4))
def softplus(input, beta=1.0, threshold=20.0):
    return F.softplus(input, beta, threshold)


@register("hardtanh", family="elementwise", functions=[F.hardtanh], aten=["hardtanh.default"],
          modules={nn.Hardtanh: lambda m, a, kw: (a, {**kw, "min_val": m.min_val, "max_val": m.max_val})},
          flops=per_output(2))
def hardtanh(input, min_val=-1.0, max_val=1.0):
    return F.hardtanh(input, min_val, max_val)


@register("threshold", family="elementwise", functions=[F.threshold], aten=["threshold.default"],
          modules={nn.Threshold: lambda m, a, kw: (a, {**kw, "threshold": m.threshold, "value": m.value})},
          flops=per_output(1))
def threshold(input, threshold, value):
    return F.threshold(input, threshold, value)


@register("prelu", family="elementwise", functions=[F.prelu, torch.prelu], aten=["prelu.default"],
          modules={nn.PReLU: lambda m, a, kw: (a + (Attr("weight"),), kw)}, flops=per_output(2),
          n_tensor_params=2)
def prelu(input, weight):
    return F.prelu(input, weight)


@register("clamp", family="elementwise", functions=[torch.clamp, torch.clip],
          methods=["clamp", "clip", "clamp_", "clip_"], aten=["clamp.default", "clamp.Tensor"],
          flops=per_output(2))
def clamp(input, min=None, max=None):
    """clamp(input, min=None, max=None); bounds may be numbers or tensors."""
    return torch.clamp(input, min, max)


@register("clamp_min", family="elementwise", methods=["clamp_min", "clamp_min_"], aten=["clamp_min.default"],
          flops=per_output(1))
def clamp_min(input, min):
    return torch.clamp_min(input, min)


@register("clamp_max", family="elementwise", methods=["clamp_max", "clamp_max_"], aten=["clamp_max.default"],
          flops=per_output(1))
def clamp_max(input, max):
    return torch.clamp_max(input, max)


# ---- binary arithmetic: python operators, so tensors, python numbers and SymInts all work -----------
def _reflected(args, kwargs):
    """x.__rpow__(y) is y ** x: the operands swap."""
    x, other = args
    return (other, x), kwargs


def _arith(name, pyop, fns, methods, aten, doc):
    def impl(input, other):
        return pyop(input, other)

    impl.__name__ = name
    impl.__doc__ = doc
    register(name, family="elementwise", functions=fns, methods=methods, aten=aten, flops=per_output(1),
             n_tensor_params=2)(impl)


_arith("mul", operator.mul, [torch.mul, torch.multiply, operator.mul, operator.imul],
       ["mul", "multiply", "mul_", "__mul__", "__rmul__", "__imul__"], ["mul.Tensor", "mul.Scalar"], "input * other")
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
       ["bitwise_and", "__and__", "__iand__"], ["bitwise_and.Tensor", "bitwise_and.Scalar"], "input & other")
_arith("bitwise_or", operator.or_, [torch.bitwise_or, operator.or_, operator.ior],
       ["bitwise_or", "__or__", "__ior__"], ["bitwise_or.Tensor", "bitwise_or.Scalar"], "input | other")
_arith("bitwise_xor", operator.xor, [torch.bitwise_xor, operator.xor, operator.ixor],
       ["bitwise_xor", "__xor__"], ["bitwise_xor.Tensor", "bitwise_xor.Scalar"], "input ^ other")
_arith("logical_and", torch.logical_and, [torch.logical_and], ["logical_and"], ["logical_and.default"],
       "torch.logical_and(input, other)")
_arith("logical_or", torch.logical_or, [torch.logical_or], ["logical_or"], ["logical_or.default"],
       "torch.logical_or(input, other)")
_arith("logical_xor", torch.logical_xor, [torch.logical_xor], ["logical_xor"], ["logical_xor.default"],
       "torch.logical_xor(input, other)")
_arith("maximum", torch.maximum, [torch.maximum], ["maximum"], ["maximum.default"], "torch.maximum(input, other)")
_arith("minimum", torch.minimum, [torch.minimum], ["minimum"], ["minimum.default"], "torch.minimum(input, other)")
_arith("atan2", torch.atan2, [torch.atan2, torch.arctan2], ["atan2"], ["atan2.default"], "torch.atan2(input, other)")


@register("add", family="elementwise",
          functions=[torch.add, operator.add, operator.iadd], methods=["add", "add_", "__add__", "__radd__", "__iadd__"],
          aten=["add.Tensor", "add.Scalar"], flops=per_output(1), n_tensor_params=2)
def add(input, other, alpha=1):
    """input + alpha * other."""
    return input + other if alpha == 1 else torch.add(input, other, alpha=alpha)


@register("sub", family="elementwise",
          functions=[torch.sub, torch.subtract, operator.sub, operator.isub],
          methods=["sub", "subtract", "sub_", "__sub__", "__isub__"],
          aten=["sub.Tensor", "sub.Scalar"], flops=per_output(1), n_tensor_params=2)
def sub(input, other, alpha=1):
    """input - alpha * other."""
    return input - other if alpha == 1 else torch.sub(input, other, alpha=alpha)


@register("rsub", family="elementwise", methods=["__rsub__"], aten=["rsub.Scalar", "rsub.Tensor"],
          flops=per_output(1), n_tensor_params=2)
def rsub(input, other, alpha=1):
    """other - alpha * input."""
    return other - input if alpha == 1 else torch.rsub(input, other, alpha=alpha)


@register("div", family="elementwise",
          functions=[torch.div, torch.divide, torch.true_divide, operator.truediv, operator.itruediv],
          methods=["div", "divide", "true_divide", "div_", "__truediv__", "__itruediv__"],
          aten=["div.Tensor", "div.Scalar", "div.Tensor_mode"], flops=per_output(1), n_tensor_params=2)
def div(input, other, rounding_mode=None):
    """input / other, with rounding_mode None | 'trunc' | 'floor'."""
    if rounding_mode is None:
        return input / other
    return torch.div(input, other, rounding_mode=rounding_mode)


@register("rdiv", family="elementwise", methods=["__rtruediv__", "__rdiv__"], flops=per_output(1), n_tensor_params=2)
def rdiv(input, other):
    """other / input."""
    return other / input


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


@register("masked_fill", family="elementwise", functions=[torch.masked_fill],
          methods=["masked_fill", "masked_fill_"], aten=["masked_fill.Scalar", "masked_fill.Tensor"],
          flops=per_output(1), n_tensor_params=2)
def masked_fill(input, mask, value):
    return torch.masked_fill(input, mask, value)


@register("lerp", family="elementwise", functions=[torch.lerp], methods=["lerp"],
          aten=["lerp.Scalar", "lerp.Tensor"], flops=per_output(3), n_tensor_params=3)
def lerp(input, end, weight):
    return torch.lerp(input, end, weight)


@register("addcmul", family="elementwise", functions=[torch.addcmul], methods=["addcmul"],
          aten=["addcmul.default"], flops=per_output(3), n_tensor_params=3)
def addcmul(input, tensor1, tensor2, value=1):
    return torch.addcmul(input, tensor1, tensor2, value=value)


# ---- casts ----------------------------------------------------------------------------------------
def _to_arg_kind(r) -> str | None:
    """What a positional argument of ``x.to(...)`` is; traced ones are Values (``y.dtype``, ``y.device``, ``y``)."""
    from ..ir.graph import Value
    from ..ir.spec import ScalarSpec, TensorSpec

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


def _fixed_cast(name, dtype, methods):
    def impl(input):
        return input.to(dtype)

    impl.__name__ = name
    impl.__doc__ = f"input.to({dtype})"
    register(name, family="elementwise", methods=methods, flops=zero)(impl)


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


@register("dropout", family="elementwise",
          functions=[(fn, _dropout_fn(kind)) for fn, kind in _DROPOUT_KINDS.items()]
          + [(torch.dropout, lambda a, kw: ((a[0],), {"p": a[1], "training": a[2]}))],
          aten=[("dropout.default", lambda a, kw: ((a[0],), {"p": a[1], "training": a[2]}))],
          modules={cls: _dropout_module(kind) for cls, kind in _DROPOUT_MODULES.items()},
          flops=zero)
def dropout(input, p=0.5, training=True, kind="dropout"):
    """Dropout of the given ``kind`` (dropout, dropout2d, alpha_dropout, ...); the identity unless ``training``."""
    return getattr(F, kind)(input, p, training) if training else input


from .registry import Attr  # noqa: E402  (used by module adapters above at call time)
