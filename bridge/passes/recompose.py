"""Ops that ONNX's op set writes out, read back as the one op they were.

``fuse_linear``: a matmul by a transposed 2-D weight, plus a bias along the last dim, is one ``linear``.

    add(matmul(x, permute(w, [1, 0])), b)  ->  linear(x, w, b)     # b: shape (w.shape[0],), same dtype
    matmul(x, permute(w, [1, 0]))          ->  linear(x, w)

(``t(w)`` and ``transpose(w, 0, 1)`` count as the permute too; the add may have the bias on either side.) This is
what ONNX writes for a Linear on a 3-D input (Transpose, MatMul, Add, as torch.onnx and bridge export it), and
what ``decompose`` would give back before its weight is stored transposed: one fused kernel (addmm) instead of
three. The node keeps the add's name and scope (the layer's), so the graph reads as the model did.

``fuse_gelu``: GELU written with ``erf`` (``x * 0.5 * (1 + erf(x / sqrt(2)))``, as ONNX before opset 20 has it)
or with ``tanh`` (the approximation GPT-2 uses), in whatever order of multiplications and divisions an exporter
chose, is one ``gelu``. A candidate (elementwise ops from one tensor ``x`` through an ``erf``/``tanh`` to one
result, with only scalar constants beside) is run on sample values and replaced only where it gives
``F.gelu``'s numbers.
"""
from __future__ import annotations

import torch

from ..ir.graph import Graph, Value, iter_values
from ..ir.spec import TensorSpec
from ..ops import registry
from . import register_pass


def _transposed_weight(v) -> Value | None:
    """``w`` where ``v`` is ``permute(w, [1, 0])`` / ``t(w)`` / ``transpose(w, 0, 1)`` of a 2-D ``w``."""
    p = v.producer if isinstance(v, Value) else None
    if p is None or len(p.outputs) != 1:
        return None
    w = p.args.get("input")
    if not isinstance(w, Value) or not isinstance(w.spec, TensorSpec) or w.spec.rank != 2:
        return None
    if p.op == "permute" and list(p.args.get("dims") or ()) in ([1, 0], [-1, -2], [1, -2], [-1, 0]):
        return w
    if p.op == "t":
        return w
    if p.op == "transpose" and {p.args.get("dim0"), p.args.get("dim1")} in ({0, 1}, {-1, -2}, {0, -1}, {1, -2}):
        return w
    return None


def _bias_of(node, m: Value) -> Value | None:
    """The bias when ``node`` is ``add(m, b)`` or ``add(b, m)`` with alpha 1 and ``b`` of shape (out,)."""
    if node.op != "add" or node.args.get("alpha", 1) != 1:
        return None
    a, o = node.args.get("input"), node.args.get("other")
    b = o if a is m else a if o is m else None
    if not isinstance(b, Value) or b is m or not isinstance(b.spec, TensorSpec) or b.spec.rank != 1:
        return None
    ms = m.spec
    if b.spec.dtype != ms.dtype or b.spec.shape[0] != ms.shape[-1] or node.outputs[0].spec != ms:
        return None
    return b


@register_pass("fuse_linear")
def fuse_linear(g: Graph) -> tuple[Graph, bool]:
    changed = False
    for node in list(g.nodes):
        if node.graph is not g or node.op != "matmul" or len(node.outputs) != 1:
            continue
        x, m = node.args.get("input"), node.outputs[0]
        w = _transposed_weight(node.args.get("other"))
        if w is None or not isinstance(x, Value) or not isinstance(x.spec, TensorSpec) or x.spec.rank < 1 \
                or not isinstance(m.spec, TensorSpec) or x.spec.dtype != w.spec.dtype:
            continue
        users = m.users
        bias = _bias_of(users[0], m) if len(users) == 1 and not m.meta.get("is_output") else None
        target = users[0] if bias is not None else node  # the add becomes the linear: its name, its scope
        transposed = node.args["other"]
        target.op = "linear"
        g.set_args(target, {"input": x, "weight": w, "bias": bias})
        if target is not node:
            g.erase_node(node)
        if not transposed._uses and not transposed.meta.get("is_output"):
            g.erase_node(transposed.producer)
        changed = True
    return g, changed


# ---- GELU ---------------------------------------------------------------------------------------------------
_ELEMENTWISE = frozenset({"mul", "div", "add", "sub", "pow", "erf", "tanh", "neg"})
_GELU_NODES = 12  # the most nodes a written-out GELU takes (the tanh form: 8 or 9)
_SAMPLES = torch.linspace(-6.0, 6.0, 97)


def _scalar(a) -> bool:
    """A python number or a constant of one element: what a written-out GELU multiplies and adds."""
    if isinstance(a, (int, float)) and not isinstance(a, bool):
        return True
    return isinstance(a, Value) and a.is_const and a.const is not None and a.const.numel() == 1


def _ancestors(v: Value, depth: int) -> list[Value]:
    """``v`` and the values it is computed from through elementwise ops, up to ``depth`` ops back."""
    out, frontier = [v], [v]
    for _ in range(depth):
        nxt = []
        for u in frontier:
            p = u.producer
            if p is not None and p.op in _ELEMENTWISE:
                nxt += [a for a in iter_values(p.args) if not _scalar(a) and a not in out and a not in nxt]
        out += nxt
        frontier = nxt
    return out


def _region(x: Value, sink, order: list, pos: dict) -> list | None:
    """The nodes between ``x`` and ``sink`` (in graph order) when each reads only ``x``, values of the region and
    scalars, and nothing outside reads a value inside but ``sink``'s; else None."""
    start = pos[id(x.producer)] + 1 if x.producer is not None else 0
    if pos[id(sink)] - start > 8 * _GELU_NODES:  # too far apart to be one GELU
        return None
    nodes, inside = [], {id(x)}
    for n in order[start:pos[id(sink)] + 1]:
        if n.graph is not sink.graph:  # erased by an earlier fusion
            continue
        if n is sink or len(nodes) < _GELU_NODES:
            if n.op in _ELEMENTWISE and all(id(a) in inside or _scalar(a) for a in iter_values(n.args)) \
                    and any(id(a) in inside for a in iter_values(n.args)):
                nodes.append(n)
                inside.add(id(n.outputs[0]))
        if n is sink:
            break
    if not nodes or nodes[-1] is not sink:
        return None
    # only the nodes sink depends on
    need, keep = {id(sink.outputs[0])}, []
    for n in reversed(nodes):
        if id(n.outputs[0]) in need:
            keep.append(n)
            need |= {id(a) for a in iter_values(n.args) if isinstance(a, Value)}
    keep.reverse()
    mine = {id(n) for n in keep}
    for n in keep[:-1]:
        v = n.outputs[0]
        if v.meta.get("is_output") or any(id(u) not in mine for u in v.users):
            return None
    return keep if len(keep) <= _GELU_NODES and any(n.op in ("erf", "tanh") for n in keep) else None


def _gelu_kind(x: Value, nodes: list) -> str | None:
    """"none" or "tanh" when ``nodes`` compute ``F.gelu(x)`` with that approximation, checked on sample values."""
    dtype = x.spec.dtype
    env = {id(x): _SAMPLES.to(dtype)}
    try:
        for n in nodes:
            args = {k: (env[id(a)] if isinstance(a, Value) and id(a) in env else
                        a.const if isinstance(a, Value) else a) for k, a in n.args.items()}
            env[id(n.outputs[0])] = registry.get(n.op).impl(**args)
    except Exception:  # noqa: BLE001 - not something these samples can run: not a GELU
        return None
    got = env[id(nodes[-1].outputs[0])]
    for kind in ("none", "tanh"):
        want = torch.nn.functional.gelu(env[id(x)], approximate=kind)
        if got.shape == want.shape and got.dtype == want.dtype and torch.allclose(got, want, rtol=1e-5, atol=1e-6):
            return kind
    return None


@register_pass("fuse_gelu")
def fuse_gelu(g: Graph) -> tuple[Graph, bool]:
    changed = False
    order = list(g.nodes)
    pos = {id(n): i for i, n in enumerate(order)}
    for node in order:
        if node.graph is not g or node.op not in ("erf", "tanh"):
            continue
        # the result: elementwise steps after the erf/tanh, the last one with x's spec; x: a tensor before it
        done = False
        for x in _ancestors(node.args["input"], 5):
            if done or not isinstance(x.spec, TensorSpec) or not x.spec.dtype.is_floating_point:
                continue
            sink, frontier = None, [node]
            for _ in range(4):
                nxt = [u for f in frontier for u in f.outputs[0].users if u.op in _ELEMENTWISE]
                for u in nxt:
                    if u.outputs[0].spec == x.spec:
                        region = _region(x, u, order, pos)
                        kind = _gelu_kind(x, region) if region else None
                        if kind:
                            sink = (u, region, kind)
                frontier = nxt
            if sink is None:
                continue
            u, region, kind = sink
            u.op = "gelu"
            g.set_args(u, {"input": x, "approximate": kind})
            for n in reversed(region[:-1]):
                if n.graph is g and not any(v._uses or v.meta.get("is_output") for v in n.outputs):
                    g.erase_node(n)
            changed = done = True
    return g, changed
