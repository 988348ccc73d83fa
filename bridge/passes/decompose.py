"""Decompose composite ops into primitive ones (not run by default: it undoes what runtimes fuse).

    linear(x, w, b)          -> matmul(x, w.T) + b          # w constant: w.T is stored as a parameter
    addmm(c, a, b, beta, al) -> beta * c + al * matmul(a, b)
    gelu(x)                  -> x * (1 + erf(x / sqrt(2))) * 0.5
    gelu(x, 'tanh')          -> x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3))) * 0.5
    silu(x)                  -> x * sigmoid(x)
    layer_norm(x, s, w, b)   -> (x - mean(x)) / sqrt(var(x, correction=0) + eps) * w + b   over the last len(s) dims

Each new node keeps the replaced node's ``scope`` and ``source``; the last one takes over its output name.
Output specs are computed here from the replaced node's (elementwise steps keep the input's spec, keepdim
reductions put 1 in the reduced dims). ``layer_norm`` is decomposed for float32/float64 only (a fused
half-precision layer_norm accumulates in float32; the decomposed one would not).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from ..ir.graph import Graph, Node, Value
from ..ir.spec import TensorSpec
from ..ops import registry
from . import register_pass
from ._inline import Splicer


class _Builder:
    """Adds the nodes replacing ``node`` (appended; the pass puts them in place afterwards)."""

    def __init__(self, g: Graph, node: Node):
        self.g, self.node, self.added = g, node, []
        self.base = node.outputs[0].name

    def __call__(self, op: str, spec: TensorSpec | None, **args: Any) -> Value:
        opdef = registry.get(op)
        full = {p: args[p] if p in args else opdef.defaults[p] for p in opdef.params}
        n = self.g.add_node(op, full, outputs=[(f"{self.base}_{op}", spec)], scope=self.node.scope,
                            source=self.node.source)
        self.added.append(n)
        return n.outputs[0]


def _spec(a: Any) -> TensorSpec | None:
    return a.spec if isinstance(a, Value) and isinstance(a.spec, TensorSpec) else None


def _num(a: Any) -> bool:
    return isinstance(a, (int, float)) and not isinstance(a, bool)


def _linear(b: _Builder) -> Value | None:
    x, w, bias = (b.node.args[k] for k in ("input", "weight", "bias"))
    ws, out = _spec(w), b.node.outputs[0].spec
    if ws is None or ws.rank != 2 or not isinstance(x, Value):
        return None
    t_spec = TensorSpec((ws.shape[1], ws.shape[0]), ws.dtype)
    if w.const is not None:  # fold the transpose: a parameter (or buffer) with a name of its own
        wt = b.g.add_constant(f"{w.name}_t", w.const.detach().t().contiguous(),
                              kind=w.kind if w.kind in ("param", "buffer") else "constant",
                              names=[f"{n}_t" for n in w.names])
    else:
        wt = b("t", t_spec, input=w)
    y = b("matmul", out, input=x, other=wt)
    if bias is not None:
        y = b("add", out, input=y, other=bias)
    return y


def _addmm(b: _Builder) -> Value | None:
    c, m1, m2, beta, alpha = (b.node.args[k] for k in ("input", "mat1", "mat2", "beta", "alpha"))
    if not (_num(beta) and _num(alpha)):
        return None
    out = b.node.outputs[0].spec
    y = b("matmul", out, input=m1, other=m2)
    if alpha != 1:
        y = b("mul", out, input=y, other=alpha)
    if beta == 0:  # torch ignores ``input`` then (nan and inf included)
        return y
    if beta != 1:
        c = b("mul", _spec(c), input=c, other=beta)
    return b("add", out, input=c, other=y)


def _gelu(b: _Builder) -> Value | None:
    x, approximate = b.node.args["input"], b.node.args["approximate"]
    s = b.node.outputs[0].spec
    if approximate == "none":
        inner = b("erf", s, input=b("mul", s, input=x, other=math.sqrt(0.5)))
    elif approximate == "tanh":
        cube = b("mul", s, input=b("mul", s, input=x, other=x), other=x)
        inner = b("add", s, input=x, other=b("mul", s, input=cube, other=0.044715))
        inner = b("tanh", s, input=b("mul", s, input=inner, other=math.sqrt(2.0 / math.pi)))
    else:
        return None
    return b("mul", s, input=b("mul", s, input=x, other=b("add", s, input=inner, other=1.0)), other=0.5)


def _silu(b: _Builder) -> Value | None:
    x, s = b.node.args["input"], b.node.outputs[0].spec
    return b("mul", s, input=x, other=b("sigmoid", s, input=x))


def _layer_norm(b: _Builder) -> Value | None:
    x, shape, w, bias, eps = (b.node.args[k] for k in ("input", "normalized_shape", "weight", "bias", "eps"))
    xs, out = _spec(x), b.node.outputs[0].spec
    if xs is None or xs.dtype not in (torch.float32, torch.float64) or not _num(eps) or \
            not isinstance(shape, (list, tuple)) or not all(isinstance(d, int) for d in shape) or \
            not 0 < len(shape) <= xs.rank:
        return None
    k = len(shape)
    dims = list(range(-k, 0))
    stat = TensorSpec(tuple(xs.shape[:-k]) + (1,) * k, xs.dtype)
    mu = b("mean", stat, input=x, dim=dims, keepdim=True)
    centered = b("sub", xs, input=x, other=mu)
    var = b("var", stat, input=x, dim=dims, keepdim=True, correction=0)  # biased, as layer_norm
    std = b("sqrt", stat, input=b("add", stat, input=var, other=float(eps)))
    y = b("div", xs, input=centered, other=std)
    if w is not None:
        y = b("mul", out, input=y, other=w)
    if bias is not None:
        y = b("add", out, input=y, other=bias)
    return y


RULES: dict[str, Callable[[_Builder], Value | None]] = {
    "linear": _linear, "addmm": _addmm, "gelu": _gelu, "silu": _silu, "layer_norm": _layer_norm,
}


@register_pass("decompose")
def decompose(g: Graph) -> tuple[Graph, bool]:
    with Splicer(g) as splice:
        for node in splice.original:
            rule = RULES.get(node.op)
            if rule is None or len(node.outputs) != 1:
                continue
            b = _Builder(g, node)
            y = rule(b)
            if y is None:  # a rule decides before it adds anything
                continue
            splice.swap(node, node.outputs[0], y, b.added)
    return g, bool(splice.placed)
