"""One sample per canonical op: example inputs, and how to call every torch spelling the op claims.

``tests/ops/test_registry.py`` turns each (op, spelling) pair of the registry into a tiny ``nn.Module`` (see ``cases()``),
traces it with bridge and checks the graph against eager PyTorch. A sample gives

- ``inputs``: a function returning small example tensors (the test seeds torch before calling it);
- ``call(f, *inputs)``: how to call a function or method spelling ``f`` (a method is called as ``f(x, ...)``);
- ``sp``: per-spelling overrides keyed by spelling (``"F.relu"``, ``"Tensor.relu_"``, ``"nn.ReLU"``): another
  call, other inputs, the module to build for an ``nn.Module`` spelling, or a skip/xfail with its reason;
- ``random``: the output is random (rand, empty, dropout in training): compare shapes and dtypes only;
- ``dynamic``: symbolic dims (python-level ops only make nodes for run-time sizes);
- ``folds``: why the op may legitimately fold to a constant at trace time (no node);
- ``expr``: for ops with no fx-reachable spelling, an expression that reaches them (``x[:, 1:3]``).

How spellings are reached under torch.fx symbolic tracing:

- functions go through a ``torch.fx.wrap``-ed global, so the fx graph has exactly that callable as its target
  (``operator.iadd``, ``builtins.int``, ``math.floor`` and ``F.sigmoid`` are otherwise rewritten or refused by fx);
- methods are called as ``x.name(...)``; a python-level dunder (``Tensor.__rsub__``) is called through
  ``torch.Tensor`` so fx records the method, while a C-level dunder (``__add__``, ``__radd__``) reaches fx's own
  operator (``x.__radd__(y)`` is ``operator.add(y, x)``), which is the same canonical op;
- modules are called as layers (registered classes stay whole under fx).
"""
from __future__ import annotations

import builtins
import inspect
import math
import operator
import types
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

import bridge.ops
from tests.helpers import Fn as Expr  # an expression spelling is a module around it


# ---- inputs --------------------------------------------------------------------------------------
def r(*s):
    return torch.randn(*s)


def pos(*s):
    return torch.rand(*s) + 0.5


def unit(*s):
    return torch.rand(*s) * 1.8 - 0.9


def idx(hi, *s):
    return torch.randint(0, hi, s)


def ints(*s):
    return torch.randint(-8, 8, s)


def mask(*s):
    return torch.rand(*s) > 0.5


def perm_idx(rows, cols, k):
    """Distinct column indices per row (scatter without duplicate writes)."""
    return torch.rand(rows, cols).argsort(1)[:, :k]


def c(*extra, **kw):
    """call: the spelling on the inputs followed by constant arguments."""
    return lambda f, *xs: f(*xs, *extra, **kw)


def default_call(f, *xs):
    return f(*xs)


DYN0 = ({0: "n"},)  # first input's dim 0 symbolic


@dataclass
class Sp:
    """How one spelling differs from its op's sample."""
    call: Callable | None = None
    inputs: Callable | None = None
    make: Callable | None = None      # nn.Module spellings: build the layer
    random: bool | None = None
    dynamic: Any = None
    folds: str | None = None
    skip: str | None = None
    xfail: str | None = None
    wrap: bool = False                # fx itself cannot trace the plain call: record it through torch.fx.wrap


@dataclass
class Sample:
    op: str
    inputs: Callable
    call: Callable = default_call
    sp: dict = field(default_factory=dict)
    random: bool = False
    dynamic: Any = None
    folds: str | None = None
    returns_input: bool = False       # call already returns the written tensor (setitem)
    expr: Callable | None = None
    fx_unreachable: str | None = None  # why no fx spelling reaches the op (its ``expr`` is for torch.export)
    export_gap: str | None = None      # known failure on the torch.export path (a strict xfail there)
    export_absent: str | None = None   # why torch.export legitimately emits no node of this op


SAMPLES: dict[str, Sample] = {}


def S(op, inputs, call=default_call, **kw) -> Sample:
    if op in SAMPLES:
        raise ValueError(f"two samples for op {op!r}")
    SAMPLES[op] = s = Sample(op, inputs, call, **kw)
    return s


def mod(make, inputs=None, **kw) -> Sp:
    return Sp(make=make, inputs=inputs, **kw)


def _stats(m: nn.Module) -> nn.Module:
    """Non-trivial running statistics for norm layers."""
    with torch.no_grad():
        for name, b in m.named_buffers():
            if b.is_floating_point():
                b.copy_(torch.rand_like(b) + 0.5 if "var" in name else torch.randn_like(b))
    return m


# ---- elementwise ---------------------------------------------------------------------------------
_UNARY_INPUTS = {
    **dict.fromkeys(["log", "log2", "log10", "log1p", "sqrt", "rsqrt", "reciprocal"], lambda: (pos(2, 3),)),
    **dict.fromkeys(["asin", "acos", "erfinv", "atanh"], lambda: (unit(2, 3),)),
    "acosh": lambda: (pos(2, 3) + 0.5,),
    "logical_not": lambda: (mask(2, 3),),
    "bitwise_not": lambda: (ints(2, 3),),
    **dict.fromkeys(["isnan", "isinf", "isfinite"],
                    lambda: (torch.tensor([1.0, float("nan"), float("inf"), -float("inf"), -2.0]),)),
}
_MATH_SCALAR = Sp(call=lambda f, x: f(x.size(0) / 3), dynamic=DYN0)  # math.floor on a run-time size
for _op in ["relu", "sigmoid", "tanh", "silu", "mish", "hardswish", "hardsigmoid", "relu6", "selu", "logsigmoid",
            "softsign", "tanhshrink", "exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sqrt", "rsqrt", "abs",
            "neg", "reciprocal", "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh",
            "atanh", "erf", "erfinv", "floor", "ceil", "trunc", "sign", "frac", "square", "logical_not", "bitwise_not",
            "isnan", "isinf", "isfinite", "round"]:
    S(_op, _UNARY_INPUTS.get(_op, lambda: (r(2, 3) * 2,)),
      sp={f"math.{_op}": _MATH_SCALAR} if _op in ("floor", "ceil") else {"builtins.round": _MATH_SCALAR}
      if _op == "round" else {})

S("gelu", lambda: (r(2, 3),), c(approximate="tanh"), sp={"nn.GELU": mod(lambda: nn.GELU("tanh"))})
S("leaky_relu", lambda: (r(2, 3),), c(0.2), sp={"nn.LeakyReLU": mod(lambda: nn.LeakyReLU(0.2))})
S("elu", lambda: (r(2, 3),), c(0.5), sp={"nn.ELU": mod(lambda: nn.ELU(0.5))})
S("celu", lambda: (r(2, 3),), c(0.5), sp={"nn.CELU": mod(lambda: nn.CELU(0.5))})
S("shrink", lambda: (r(2, 3),), c(0.3), sp={"nn.Hardshrink": mod(lambda: nn.Hardshrink(0.3)),
                                            "nn.Softshrink": mod(lambda: nn.Softshrink(0.3))})
S("softplus", lambda: (r(2, 3),), c(2.0, 1.0), sp={"nn.Softplus": mod(lambda: nn.Softplus(2.0, 1.0))})
S("hardtanh", lambda: (r(2, 3),), c(-0.5, 0.5), sp={"nn.Hardtanh": mod(lambda: nn.Hardtanh(-0.5, 0.5))})
S("threshold", lambda: (r(2, 3),), c(0.1, 20.0), sp={"nn.Threshold": mod(lambda: nn.Threshold(0.1, 20.0))})
S("prelu", lambda: (r(2, 3, 4), pos(3) * 0.25),
  sp={"nn.PReLU": mod(lambda: nn.PReLU(3, 0.1), lambda: (r(2, 3, 4),))})
S("clamp", lambda: (r(2, 3),), c(-0.5, 0.5))
S("clamp_min", lambda: (r(2, 3),), c(0.1))
S("clamp_max", lambda: (r(2, 3),), c(0.1))

_BINARY_INPUTS = {
    **dict.fromkeys(["mul", "add", "sub", "rsub", "maximum", "minimum", "atan2"], lambda: (r(2, 3), r(2, 3))),
    **dict.fromkeys(["floordiv", "floor_divide", "remainder", "fmod"], lambda: (r(2, 3) * 4, pos(2, 3))),
    **dict.fromkeys(["div", "pow"], lambda: (pos(2, 3), pos(2, 3) * 2)),
    "rdiv": lambda: (pos(2, 3), r(2, 3)),
    **dict.fromkeys(["eq", "ne", "lt", "le", "gt", "ge", "bitwise_and", "bitwise_or", "bitwise_xor"],
                    lambda: (ints(2, 3), ints(2, 3))),
    **dict.fromkeys(["logical_and", "logical_or", "logical_xor"], lambda: (mask(2, 3), mask(2, 3))),
}
for _op, _inp in _BINARY_INPUTS.items():
    S(_op, _inp)

S("where", lambda: (mask(2, 3), r(2, 3), r(2, 3)), sp={"Tensor.where": Sp(call=lambda f, m, a, b: f(a, m, b))})
S("masked_fill", lambda: (r(2, 3), mask(2, 3)), c(0.5))
S("lerp", lambda: (r(2, 3), r(2, 3)), c(0.3))
S("addcmul", lambda: (r(2, 3), r(2, 3), r(2, 3)), c(value=0.5))
S("to", lambda: (r(2, 3), ints(2, 3)), lambda f, x, y: (f(x, "cpu", torch.float64), f(x, y), f(x, y.dtype),
                                                          f(x, y.device, torch.float16), f(x, dtype=y.dtype)))
S("to_float32", lambda: (ints(2, 3),))
for _op in ["to_float64", "to_float16", "to_bfloat16", "to_int64", "to_int32", "to_bool"]:
    S(_op, lambda: (r(2, 3) * 4,))
S("type_as", lambda: (r(2, 3) * 4, ints(2, 3)))

_DROP_IN = {1: lambda: (r(2, 3, 4),), 2: lambda: (r(2, 3, 4, 4),), 3: lambda: (r(2, 3, 2, 2, 2),)}
S("dropout", _DROP_IN[1], c(0.5, False), sp={
    "F.dropout2d": Sp(inputs=_DROP_IN[2]), "F.dropout3d": Sp(inputs=_DROP_IN[3]),
    "F.alpha_dropout": Sp(call=c(0.5)), "F.feature_alpha_dropout": Sp(call=c(0.5)),  # training=False by default
    "nn.Dropout": mod(lambda: nn.Dropout(0.5), random=True),
    "nn.Dropout1d": mod(lambda: nn.Dropout1d(0.5), random=True),
    "nn.Dropout2d": mod(lambda: nn.Dropout2d(0.5), _DROP_IN[2], random=True),
    "nn.Dropout3d": mod(lambda: nn.Dropout3d(0.5), _DROP_IN[3], random=True),
    "nn.AlphaDropout": mod(lambda: nn.AlphaDropout(0.5).eval()),  # eval: the identity, checked on values
    "nn.FeatureAlphaDropout": mod(lambda: nn.FeatureAlphaDropout(0.5), random=True)})

# ---- creation (a run-time size argument makes fx record the call) --------------------------------
S("arange", lambda: (r(2, 6),), lambda f, x: f(1, x.size(1), 2, dtype=torch.float32))
for _op in ["zeros", "ones", "empty", "rand", "randn"]:
    S(_op, lambda: (r(2, 3),), lambda f, x: f((x.size(0), 3), dtype=x.dtype), random=_op in ("empty", "rand", "randn"))
SAMPLES["empty"].sp["torch.empty_strided"] = Sp(call=lambda f, x: f((x.size(0), 3), (1, 2), dtype=x.dtype))
S("randperm", lambda: (r(5, 3),), lambda f, x: f(x.size(0)), random=True)
S("full", lambda: (r(2, 3),), lambda f, x: f((x.size(0), 3), 1.5))
for _op in ["zeros_like", "ones_like", "empty_like", "rand_like", "randn_like"]:
    S(_op, lambda: (r(2, 3),), random=_op in ("empty_like", "rand_like", "randn_like"))
S("full_like", lambda: (r(2, 3),), c(2.5))
for _op in ["new_zeros", "new_ones", "new_empty"]:
    S(_op, lambda: (ints(2, 3),), c(2, 3), random=_op == "new_empty")
S("new_full", lambda: (ints(2, 3),), c((2, 3), 7))
_LIST = "fx cannot trace torch.tensor([proxy, ...]) (it takes len() of the proxy)"
S("tensor", lambda: (r(2, 3),), lambda f, x: f([x.size(0), x.size(1)]),
  sp={"torch.tensor": Sp(wrap=True), "torch.as_tensor": Sp(wrap=True),
      "torch.scalar_tensor": Sp(call=lambda f, x: f(x.size(1)))},
  export_gap="torch.export lifts torch.tensor(...) of trace-time values into a constant: no tensor op remains")
S("new_tensor", lambda: (ints(2, 3),), lambda f, x: f(x, [1.5, x.size(1)]))
S("linspace", lambda: (r(2, 6),), lambda f, x: f(0.0, 1.0, x.size(1)))
S("eye", lambda: (r(2, 3),), lambda f, x: f(x.size(1), x.size(0)))

# ---- attention and matrix products ---------------------------------------------------------------
S("matmul", lambda: (r(2, 3, 4), r(4, 5)))
S("mm", lambda: (r(3, 4), r(4, 5)))
S("bmm", lambda: (r(2, 3, 4), r(2, 4, 5)))
S("addmm", lambda: (r(3, 5), r(3, 4), r(4, 5)), c(beta=0.5, alpha=2.0))
S("baddbmm", lambda: (r(2, 3, 5), r(2, 3, 4), r(2, 4, 5)), c(beta=0.5, alpha=2.0))
S("einsum", lambda: (r(2, 3, 4), r(2, 4, 5)), lambda f, a, b: f("bij,bjk->bik", a, b))
S("scaled_dot_product_attention", lambda: (r(1, 2, 4, 8), r(1, 2, 4, 8), r(1, 2, 4, 8)), c(is_causal=True))
S("multi_head_attention", lambda: (r(2, 3, 8), r(2, 4, 8), r(2, 4, 8)),
  sp={"nn.MultiheadAttention": mod(lambda: nn.MultiheadAttention(8, 2, batch_first=True).eval())})

# ---- layers --------------------------------------------------------------------------------------
S("linear", lambda: (r(2, 4), r(3, 4), r(3)), sp={"nn.Linear": mod(lambda: nn.Linear(4, 3), lambda: (r(2, 4),))})
S("bilinear", lambda: (r(2, 3), r(2, 4), r(5, 3, 4), r(5)),
  sp={"nn.Bilinear": mod(lambda: nn.Bilinear(3, 4, 5), lambda: (r(2, 3), r(2, 4)))})
S("identity", lambda: (r(2, 3),), sp={"nn.Identity": mod(nn.Identity)})

_SP = {1: (1, 2, 8), 2: (1, 2, 6, 6), 3: (1, 2, 4, 4, 4)}  # (N, C, *spatial) per rank


def _x(n, c=None):
    return lambda: (r(*(_SP[n] if c is None else (1, c) + _SP[n][2:])),)


def _conv_in(n, transposed=False):
    w = (2, 3) + (3,) * n if transposed else (3, 2) + (3,) * n
    return lambda: (r(*_SP[n]), r(*w) * 0.3, r(3))


S("conv", _conv_in(2), c(1, 1), sp={
    "F.conv1d": Sp(inputs=_conv_in(1)), "F.conv3d": Sp(inputs=_conv_in(3)),
    "nn.Conv1d": mod(lambda: nn.Conv1d(2, 3, 3, padding=1, padding_mode="reflect"), _x(1)),
    "nn.Conv2d": mod(lambda: nn.Conv2d(2, 4, 3, stride=2, padding=1, groups=2, padding_mode="circular"), _x(2)),
    "nn.Conv3d": mod(lambda: nn.Conv3d(2, 3, 3, padding="same", bias=False), _x(3))})
S("conv_transpose", _conv_in(2, True), c(2, 1, 1), sp={
    "F.conv_transpose1d": Sp(inputs=_conv_in(1, True)), "F.conv_transpose3d": Sp(inputs=_conv_in(3, True)),
    "nn.ConvTranspose1d": mod(lambda: nn.ConvTranspose1d(2, 3, 3, stride=2, output_padding=1), _x(1)),
    "nn.ConvTranspose2d": mod(lambda: nn.ConvTranspose2d(2, 4, 3, stride=2, padding=1, groups=2), _x(2)),
    "nn.ConvTranspose3d": mod(lambda: nn.ConvTranspose3d(2, 3, 2, stride=2, bias=False), _x(3))})

for _n in (1, 2, 3):
    _d = f"{_n}d"
    S(f"max_pool{_d}", _x(_n), c(2), sp={f"nn.MaxPool{_d}": mod(
        lambda n=_n: getattr(nn, f"MaxPool{n}d")(3, stride=2, padding=1, return_indices=n == 2))})
    S(f"avg_pool{_d}", _x(_n), c(2), sp={f"nn.AvgPool{_d}": mod(
        lambda n=_n: getattr(nn, f"AvgPool{n}d")(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False,
                                                 **({"divisor_override": 2} if n > 1 else {})))})
    S(f"adaptive_avg_pool{_d}", _x(_n), c(3), sp={f"nn.AdaptiveAvgPool{_d}": mod(
        lambda n=_n: getattr(nn, f"AdaptiveAvgPool{n}d")(3))})
    S(f"adaptive_max_pool{_d}", _x(_n), c(3), sp={f"nn.AdaptiveMaxPool{_d}": mod(
        lambda n=_n: getattr(nn, f"AdaptiveMaxPool{n}d")(3, return_indices=n == 2))})
S("lp_pool2d", lambda: (pos(1, 2, 4, 4),), c(2.0, 2), sp={"nn.LPPool2d": mod(lambda: nn.LPPool2d(3.0, 2))})

S("batch_norm", lambda: (r(2, 3, 4), r(3), pos(3), r(3), r(3)), sp={
    "nn.BatchNorm1d": mod(lambda: _stats(nn.BatchNorm1d(3)).eval(), lambda: (r(2, 3, 4),)),
    "nn.BatchNorm2d": mod(lambda: nn.BatchNorm2d(3), lambda: (r(2, 3, 2, 2),)),  # training: batch statistics
    "nn.BatchNorm3d": mod(lambda: _stats(nn.BatchNorm3d(3, affine=False)).eval(), lambda: (r(2, 3, 2, 2, 2),)),
    "nn.SyncBatchNorm": mod(lambda: _stats(nn.SyncBatchNorm(3)).eval(), lambda: (r(2, 3, 4),))})
S("layer_norm", lambda: (r(2, 3, 4), r(4), r(4)), lambda f, x, w, b: f(x, (4,), w, b),
  sp={"nn.LayerNorm": mod(lambda: nn.LayerNorm(4, bias=False), lambda: (r(2, 3, 4),))})
S("group_norm", lambda: (r(2, 4, 3), r(4), r(4)), lambda f, x, w, b: f(x, 2, w, b),
  sp={"nn.GroupNorm": mod(lambda: nn.GroupNorm(2, 4), lambda: (r(2, 4, 3),))})
S("instance_norm", lambda: (r(2, 3, 5),), sp={
    "nn.InstanceNorm1d": mod(lambda: nn.InstanceNorm1d(3, affine=True)),
    "nn.InstanceNorm2d": mod(lambda: _stats(nn.InstanceNorm2d(3, track_running_stats=True)).eval(),
                             lambda: (r(2, 3, 2, 2),)),
    "nn.InstanceNorm3d": mod(lambda: nn.InstanceNorm3d(3), lambda: (r(2, 3, 2, 2, 2),))})
S("rms_norm", lambda: (r(2, 3, 4), r(4)), lambda f, x, w: f(x, (4,), w, 1e-6),
  sp={"nn.RMSNorm": mod(lambda: nn.RMSNorm(4), lambda: (r(2, 3, 4),))})
S("local_response_norm", lambda: (pos(1, 4, 3, 3),), c(2), sp={"nn.LocalResponseNorm": mod(
    lambda: nn.LocalResponseNorm(3, alpha=0.1, beta=0.5, k=2.0))})
S("normalize", lambda: (r(2, 3),), c(p=1.0, dim=0))
S("softmax", lambda: (r(2, 3, 4),), c(1), sp={"nn.Softmax": mod(lambda: nn.Softmax(dim=1)),
                                               "nn.Softmax2d": mod(nn.Softmax2d)})
S("log_softmax", lambda: (r(2, 3, 4),), c(1), sp={"nn.LogSoftmax": mod(lambda: nn.LogSoftmax(dim=-1))})
S("embedding", lambda: (idx(5, 2, 3), r(5, 4)),
  sp={"nn.Embedding": mod(lambda: nn.Embedding(5, 4, padding_idx=0), lambda: (idx(5, 2, 3),))})
S("embedding_bag", lambda: (idx(5, 2, 3),),
  sp={"nn.EmbeddingBag": mod(lambda: nn.EmbeddingBag(5, 4, mode="max"))})
S("one_hot", lambda: (idx(5, 2, 3),), c(5))

_UP = lambda: (r(1, 2, 3, 3),)  # noqa: E731
S("interpolate", _UP, c(scale_factor=2, mode="bilinear", align_corners=False), sp={
    "F.upsample_nearest": Sp(call=c(scale_factor=2)), "F.upsample_bilinear": Sp(call=c(scale_factor=2)),
    "nn.Upsample": mod(lambda: nn.Upsample(scale_factor=2, mode="bicubic")),
    "nn.UpsamplingNearest2d": mod(lambda: nn.UpsamplingNearest2d(size=(4, 5))),
    "nn.UpsamplingBilinear2d": mod(lambda: nn.UpsamplingBilinear2d(scale_factor=2))})

_pad_sp = {"torch.constant_pad_nd": Sp(call=c((1, 2, 0, 1), 0.5))}
for _name in ("ZeroPad", "ConstantPad", "ReflectionPad", "ReplicationPad", "CircularPad"):
    for _n in (1, 2, 3):
        _pad_sp[f"nn.{_name}{_n}d"] = mod(
            lambda name=_name, n=_n: getattr(nn, f"{name}{n}d")(*((1, 0.5) if name == "ConstantPad" else (1,))),
            lambda n=_n: (r(*(1, 2) + (3,) * n),))
S("pad", lambda: (r(1, 2, 4, 4),), c((1, 2, 0, 1), value=0.5), sp=_pad_sp)
S("pixel_shuffle", lambda: (r(1, 8, 2, 2),), c(2), sp={"nn.PixelShuffle": mod(lambda: nn.PixelShuffle(2))})
S("pixel_unshuffle", lambda: (r(1, 2, 4, 4),), c(2), sp={"nn.PixelUnshuffle": mod(lambda: nn.PixelUnshuffle(2))})
S("channel_shuffle", lambda: (r(1, 4, 2, 2),), c(2), sp={"nn.ChannelShuffle": mod(lambda: nn.ChannelShuffle(2))})
S("unfold", lambda: (r(1, 2, 4, 4),), c(2), sp={"nn.Unfold": mod(lambda: nn.Unfold(2, padding=1, stride=2))})
S("fold", lambda: (r(1, 8, 4),), c((3, 3), 2), sp={"nn.Fold": mod(lambda: nn.Fold((3, 3), 2))})
S("cosine_similarity", lambda: (r(2, 3), r(2, 3)), sp={"nn.CosineSimilarity": mod(lambda: nn.CosineSimilarity(0))})
S("pairwise_distance", lambda: (r(2, 3), r(2, 3)),
  sp={"nn.PairwiseDistance": mod(lambda: nn.PairwiseDistance(p=1.0, keepdim=True))})
S("grid_sample", lambda: (r(1, 2, 4, 4), unit(1, 3, 3, 2) * 1.2), c(padding_mode="border", align_corners=False))
S("cdist", lambda: (r(2, 5, 3), r(2, 4, 3)), c(p=1.0))
S("pdist", lambda: (r(5, 3),))

# ---- recurrent -----------------------------------------------------------------------------------
S("lstm", lambda: (r(2, 3, 4),), sp={"nn.LSTM": mod(
    lambda: nn.LSTM(4, 5, num_layers=2, batch_first=True, bidirectional=True).eval())})
S("gru", lambda: (r(3, 2, 4),), sp={"nn.GRU": mod(lambda: nn.GRU(4, 5).eval())})
S("rnn", lambda: (r(3, 4),), sp={"nn.RNN": mod(lambda: nn.RNN(4, 5, nonlinearity="relu").eval())})  # unbatched

# ---- reductions ----------------------------------------------------------------------------------
for _op in ["sum", "mean", "nansum", "amax", "amin", "argmax", "argmin", "prod", "max", "min", "std", "var", "all",
            "any"]:  # along a dim, over everything, keeping the dim
    S(_op, (lambda: (mask(2, 3, 4),)) if _op in ("all", "any") else (lambda: (r(2, 3, 4),)),
      lambda f, x: (f(x, 1), f(x), f(x, dim=2, keepdim=True)))
for _op in ["logsumexp", "cumsum", "cumprod", "count_nonzero"]:
    S(_op, lambda: (r(2, 3, 4),), c(1))
S("diff", lambda: (r(2, 3, 4),), c(1, 1))
S("norm", lambda: (r(2, 3),), c(1, 1))
S("vector_norm", lambda: (r(2, 3),), c(3, 1, True))
S("topk", lambda: (r(2, 5),), c(2))
S("sort", lambda: (r(2, 5),), c(1, True))
S("argsort", lambda: (r(2, 5),), c(1, True))

# ---- shape ---------------------------------------------------------------------------------------
S("flatten", lambda: (r(2, 3, 4),), c(1), sp={"nn.Flatten": mod(nn.Flatten)})
S("unflatten", lambda: (r(2, 4, 3),), c(1, (2, 2)), sp={"nn.Unflatten": mod(lambda: nn.Unflatten(1, (2, 2)))})
S("view", lambda: (r(2, 6),), lambda f, x: (f(x, 3, -1), f(x, (4, 3)), f(x, torch.int32)))
S("reshape", lambda: (r(2, 6),), c((3, 4)), sp={"Tensor.reshape": Sp(call=c(4, -1))})
S("view_as", lambda: (r(2, 6), r(3, 4)))
S("permute", lambda: (r(2, 3, 4),), c((2, 0, 1)), sp={"Tensor.permute": Sp(call=c(2, 0, 1))})
S("transpose", lambda: (r(2, 3, 4),), c(0, 2))
S("t", lambda: (r(2, 3),))
S("movedim", lambda: (r(2, 3, 4),), c(0, 2))
S("squeeze", lambda: (r(2, 1, 3),), c(1))
S("unsqueeze", lambda: (r(2, 3),), c(1))
S("expand", lambda: (r(1, 3),), c(2, -1), sp={"torch.broadcast_to": Sp(call=c((2, 3))),
                                              "Tensor.broadcast_to": Sp(call=c((2, 3)))})
S("expand_as", lambda: (r(1, 3), r(2, 3)))
S("repeat", lambda: (r(2, 3),), c(2, 1))
S("tile", lambda: (r(2, 3),), c((2, 1)), sp={"Tensor.tile": Sp(call=c(2, 1))})
S("repeat_interleave", lambda: (r(2, 3),), c(2, dim=0))
S("cat", lambda: (r(2, 3), r(2, 2)), lambda f, a, b: f([a, b], 1))
S("stack", lambda: (r(2, 3), r(2, 3)), lambda f, a, b: f([a, b], 1))
S("hstack", lambda: (r(2, 3), r(2, 2)), lambda f, a, b: f([a, b]))
S("vstack", lambda: (r(2, 3), r(1, 3)), lambda f, a, b: f((a, b)))
S("split", lambda: (r(5, 3),), c(2))
S("chunk", lambda: (r(5, 3),), c(2))
S("tensor_split", lambda: (r(5, 3),), c(3))
S("unbind", lambda: (r(2, 3),), c(1))
S("getitem", lambda: (r(3, 4),), c((slice(1, None), None, 0)), expr=lambda x: x[[2, 0]])  # expr: aten.index
S("setitem", lambda: (r(3, 4), r(4)), lambda f, x, v: _second(f(x, 1, v), x), returns_input=True)
S("select", lambda: (r(3, 4),), c(1, 2))
S("slice", lambda: (r(3, 4),), expr=lambda x: x[:, 1:3],
  fx_unreachable="fx records x[:, 1:3] as getitem; only aten.slice.Tensor maps to slice")
S("narrow", lambda: (r(3, 4),), c(1, 1, 2))
S("index_select", lambda: (r(3, 4), idx(4, 3)), lambda f, x, i: f(x, 1, i))
S("gather", lambda: (r(3, 4), idx(4, 3, 2)), lambda f, x, i: f(x, 1, i))
S("scatter", lambda: (r(3, 4), perm_idx(3, 4, 2), r(3, 2)), lambda f, x, i, s: f(x, 1, i, s))
S("scatter_add", lambda: (r(3, 4), idx(4, 3, 3), r(3, 3)), lambda f, x, i, s: f(x, 1, i, s))
S("scatter_reduce", lambda: (r(3, 4), idx(4, 3, 3), r(3, 3)),
  lambda f, x, i, s: f(x, 1, i, s, "mean", include_self=False))
S("masked_scatter", lambda: (r(3, 4), mask(3, 4), r(12)))
S("as_strided", lambda: (r(3, 4),), c((2, 3), (1, 2), 1))
S("unfold_dim", lambda: (r(3, 7),), c(1, 3, 2))
S("masked_select", lambda: (r(3, 4), mask(3, 4)))
S("nonzero", lambda: (mask(3, 4),))
S("unique", lambda: (idx(4, 3, 5),), c(return_inverse=True, return_counts=True),
  sp={"torch.unique": Sp(call=c(dim=1, return_counts=True), inputs=lambda: (idx(2, 3, 6),))})
S("flip", lambda: (r(2, 3),), c((0, 1)), sp={"Tensor.flip": Sp(call=c(0, 1))})
S("roll", lambda: (r(2, 3),), c(1, 1))
S("tril", lambda: (r(3, 3),), c(-1))
S("triu", lambda: (r(3, 3),), c(1))
S("contiguous", lambda: (r(2, 3),), export_absent="torch.export drops contiguous() of a contiguous tensor")
S("clone", lambda: (r(2, 3),))
S("detach", lambda: (r(2, 3),))
S("diagonal", lambda: (r(3, 4),), c(1))


# ---- spectral: FFTs and complex values -----------------------------------------------------------
def cx(*s):
    return torch.randn(*s, dtype=torch.complex64)


S("fft_c2c", lambda: (cx(4, 6),), c(norm="ortho"))
S("fft_r2c", lambda: (r(4, 6),), c(norm="forward"))
S("fft_c2r", lambda: (cx(4, 5),))
S("view_as_real", lambda: (cx(2, 3),))
S("view_as_complex", lambda: (r(2, 3, 2),))
for _op in ["real", "imag", "conj", "angle"]:
    S(_op, lambda: (cx(2, 3),))


def _second(a, b):
    return b


# ---- python-level ops: nodes only for run-time (symbolic) sizes ----------------------------------
S("size", lambda: (r(2, 3),), c(0), dynamic=DYN0)
S("dim", lambda: (r(2, 3),), dynamic=DYN0, folds="a tensor's rank is static, so dim() is a trace-time constant")
S("numel", lambda: (r(2, 3),), dynamic=DYN0)
S("item", lambda: (r(2, 3),), lambda f, x: x * f(x.sum()))  # a run-time number, never the traced value
S("getattr", lambda: (r(2, 3),), c("shape"), dynamic=DYN0)
S("python_call", lambda: (r(2, 3),), dynamic=DYN0, sp={
    "builtins.int": Sp(call=lambda f, x: f(x.size(0) / 2)),
    "builtins.float": Sp(call=lambda f, x: f(x.size(0))),
    "builtins.bool": Sp(call=lambda f, x: f(x.size(0)), folds="bool() of a size is decided by a shape guard"),
    "builtins.len": Sp(call=lambda f, x: f(x)),
    "builtins.max": Sp(call=lambda f, x: f(x.size(0), 3)),
    "builtins.min": Sp(call=lambda f, x: f(x.size(0), x.size(1))),
    # torch's sym_* forms, as torch.export records them (Mistral's mask code calls torch.sym_max)
    "torch.sym_max": Sp(call=lambda f, x: f(x.size(0), 3)),
    "torch.sym_min": Sp(call=lambda f, x: f(x.size(0), x.size(1))),
    "torch.sym_float": Sp(call=lambda f, x: f(x.size(0))),
    "F._sym_int": Sp(call=lambda f, x: f(x.size(0) / 2))})
S("opaque", lambda: (r(3, 4),), expr=lambda x: torch.logcumsumexp(x, 0))


def _checked(x):
    h = x[x > -10]
    torch._check(h.numel() >= 2)  # torch.export keeps it as a runtime assertion on the data-dependent size
    return h[:2] * 2


S("check", lambda: (r(5),), expr=_checked, fx_unreachable="torch.export's runtime assertions (aten._assert_scalar)")


# ---- control flow: torch's higher-order ops, which torch.export traces (fx cannot) ---------------------------
def _loop(x):
    from torch._higher_order_ops import while_loop

    return while_loop(lambda i, h: i < 3, lambda i, h: (i + 1, h * 2 + 1), (torch.zeros((), dtype=torch.int64), x))


def _scan(x):
    from torch._higher_order_ops.scan import scan

    last, ys = scan(lambda h, xt: (torch.tanh(h + xt), h * xt), torch.zeros_like(x[0]), x)
    return last, ys


def _map(x):
    from torch._higher_order_ops.map import map as map_

    return map_(lambda xt, y: xt.sin() + y, x, x.sum(0))


def _associative_scan(x):
    from torch._higher_order_ops.associative_scan import associative_scan

    return associative_scan(lambda a, b: torch.maximum(a, b), x, dim=1)  # combine_fn must be associative


_HOP = "a higher-order op: fx cannot trace it, torch.export does"
S("cond", lambda: (r(2, 3),), expr=lambda x: torch.cond(x.sum() > 0, lambda t: t.sin(), lambda t: t.cos() * 2, (x,)),
  fx_unreachable=_HOP)
S("while_loop", lambda: (r(3),), expr=_loop, fx_unreachable=_HOP)
S("scan", lambda: (r(4, 3),), expr=_scan, fx_unreachable=_HOP)
S("map", lambda: (r(4, 3),), expr=_map, fx_unreachable=_HOP)
S("associative_scan", lambda: (r(3, 5),), expr=_associative_scan, fx_unreachable=_HOP)


# ---- cases: one per (op, spelling) ---------------------------------------------------------------
_NAMESPACES = [("builtins", builtins), ("operator", operator), ("math", math), ("F", F), ("torch", torch),
               ("torch.special", torch.special), ("torch.linalg", torch.linalg)]
_KEYS: dict[int, str] = {}


def function_key(fn) -> str:
    """A readable name of a torch callable: ``F.relu``, ``torch.relu``, ``operator.add``, ``math.floor``."""
    if not _KEYS:
        for prefix, ns in _NAMESPACES:
            names = sorted(dir(ns), key=lambda n: (n.startswith("_"), n))
            for name in names:
                obj = getattr(ns, name, None)
                if callable(obj):
                    _KEYS.setdefault(id(obj), f"{prefix}.{name}")
    return _KEYS.get(id(fn)) or f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', fn)}"


def spelling_key(kind: str, target) -> str:
    if kind == "function":
        return function_key(target)
    if kind == "method":
        return f"Tensor.{target}"
    if kind == "module":
        return f"nn.{target.__name__}"
    return kind


_WRAPPED: dict[int, Callable] = {}


def fx_recorded(fn) -> Callable:
    """``fn`` called through a ``torch.fx.wrap``-ed global: symbolic tracing records exactly ``fn`` as the target."""
    if id(fn) not in _WRAPPED:
        ns = {"__name__": f"op_samples_wrap_{len(_WRAPPED)}", "_fn": fn}
        exec("import torch.fx\ntorch.fx.wrap('_fn')\n"
             "def call(*args, **kwargs):\n    return _fn(*args, **kwargs)\n", ns)
        _WRAPPED[id(fn)] = ns["call"]
    return _WRAPPED[id(fn)]


def fx_sees(fn) -> bool:
    """Does fx symbolic tracing record a call of ``fn`` on a Proxy as ``fn`` itself (via ``__torch_function__``)?"""
    if getattr(fn, "__module__", None) in ("_operator", "operator", "builtins", "math"):
        return False
    if isinstance(fn, types.FunctionType):  # python-level torch function: only if it dispatches itself
        try:
            return "handle_torch_function(" in inspect.getsource(fn)
        except (OSError, TypeError):
            return False
    return True  # C-level torch functions dispatch __torch_function__


def function_caller(fn) -> Callable:
    """``fn`` as user code calls it where fx records it as ``fn``; otherwise through ``torch.fx.wrap``."""
    return fn if fx_sees(fn) else fx_recorded(fn)


def method_caller(name: str) -> Callable:
    """``x.name(...)``; a python-level dunder through ``torch.Tensor`` so fx records the method itself."""
    raw = inspect.getattr_static(torch.Tensor, name, None)
    if name.startswith("__") and isinstance(raw, types.FunctionType):
        return getattr(torch.Tensor, name)
    return lambda self, *a, **k: getattr(self, name)(*a, **k)


def is_inplace(kind: str, target) -> bool:
    if kind == "method":
        return (target.endswith("_") and not target.endswith("__")) or target in (
            "__setitem__", "__iadd__", "__isub__", "__imul__", "__itruediv__", "__iand__", "__ior__", "__ixor__")
    if kind == "function":
        return getattr(target, "__module__", None) in ("_operator", "operator") and (
            target.__name__.startswith("i") and target.__name__ not in ("invert", "index", "is_", "is_not")
            or target.__name__ == "setitem")
    return False


class Call(nn.Module):
    """forward(*xs) = call(f, *xs); for an in-place spelling also the written first input."""

    def __init__(self, f, call, inplace: bool):
        super().__init__()
        self.f, self.call, self.inplace = f, call, inplace

    def forward(self, *xs):
        out = self.call(self.f, *xs)
        return (out, xs[0]) if self.inplace else out




@dataclass
class Case:
    op: str
    kind: str           # function | method | module | expr
    key: str
    target: Any
    make: Callable      # () -> nn.Module to trace
    inputs: Callable    # () -> tuple of inputs
    random: bool
    dynamic: Any
    folds: str | None
    skip: str | None
    xfail: str | None

    @property
    def id(self) -> str:
        return f"{self.op}-{self.key}"


def spellings(opdef) -> list[tuple[str, Any]]:
    return ([("function", f) for f in opdef.functions] + [("method", m) for m in opdef.methods]
            + [("module", m) for m in opdef.modules])


def cases() -> list[Case]:
    out = []
    for name, opdef in bridge.ops.all_ops().items():
        s = SAMPLES.get(name)
        if s is None:
            continue  # test_every_op_has_a_sample reports it
        pairs = spellings(opdef) + ([("expr", None)] if s.expr is not None else [])
        for kind, target in pairs:
            key = spelling_key(kind, target)
            o = s.sp.get(key, Sp())
            if kind == "module":
                make = o.make or target
            elif kind == "expr":
                make = (lambda fn=s.expr: Expr(fn))
            else:
                f = (fx_recorded(target) if o.wrap else function_caller(target)) if kind == "function" \
                    else method_caller(target)
                inplace = is_inplace(kind, target) and not s.returns_input
                make = (lambda f=f, call=o.call or s.call, inplace=inplace: Call(f, call, inplace))
            out.append(Case(
                op=name, kind=kind, key=key, target=target, make=make, inputs=o.inputs or s.inputs,
                random=s.random if o.random is None else o.random,
                dynamic=o.dynamic if o.dynamic is not None else s.dynamic,
                folds=o.folds or s.folds, skip=o.skip or (s.fx_unreachable if kind == "expr" else None),
                xfail=o.xfail))
    return out
