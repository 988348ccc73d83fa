"""Ops that ONNX's op set writes out, read back as the one op they were.

``fuse_linear``: a matmul by a transposed 2-D weight, plus a bias along the last dim, is one ``linear``.

    add(matmul(x, permute(w, [1, 0])), b)  ->  linear(x, w, b)     # b: shape (w.shape[0],), same dtype
    matmul(x, permute(w, [1, 0]))          ->  linear(x, w)

(``t(w)`` and ``transpose(w, 0, 1)`` count as the permute too; the add may have the bias on either side.) This is
what ONNX writes for a Linear on a 3-D input (Transpose, MatMul, Add, as torch.onnx and bridge export it), and
what ``decompose`` would give back before its weight is stored transposed: one fused kernel (addmm) instead of
three. The node keeps the add's name and scope (the layer's), so the graph reads as the model did.

``fuse_adaptive_pool``: adaptive max/avg pooling to sizes that do not divide the input, which ONNX writes out per
spatial dim as one Slice and ReduceMax/ReduceMean per output position and a Concat, is one
``adaptive_{max,avg}_pool{1,2,3}d`` again (torch's windows checked exactly).

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
        scaled = node.args["input"].producer if isinstance(node.args["input"], Value) else None
        if scaled is None or scaled.op not in ("mul", "div") or not any(
                _scalar(scaled.args.get(k)) for k in ("input", "other")):
            continue  # GELU scales erf's or tanh's input by a constant (x / sqrt(2), sqrt(2 / pi) * (...)): a plain
            # tanh activation is not a candidate, and trying its neighbourhood on sample values costs ~0.1 ms
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


# ---- adaptive pooling -----------------------------------------------------------------------------------------
# ONNX has no adaptive pooling over sizes that do not divide: bridge (and torch.onnx) write it out per spatial dim,
# one Slice + ReduceMax/ReduceMean per output position over torch's windows [floor(j*L/o), ceil((j+1)*L/o)), and a
# Concat (a box max/mean is separable). Read back, that is 2*o + 1 nodes per dim where torch has one kernel.
_STAGE_REDUCE = {"amax": "max", "mean": "avg"}


def _windows(length: int, out: int) -> list[tuple[int, int]]:
    return [((j * length) // out, -((-(j + 1) * length) // out)) for j in range(out)]


def _adaptive_stage(node):
    """(kind, x, axis, out) where ``node`` is ``cat`` along ``axis`` of the max/mean of ``x`` over each of torch's
    adaptive windows along ``axis`` in order (keepdim), else None."""
    if node.op != "cat" or len(node.outputs) != 1:
        return None
    parts, axis = node.args.get("tensors"), node.args.get("dim")
    if not isinstance(parts, (list, tuple)) or len(parts) < 2 or not isinstance(axis, int):
        return None
    kind = x = None
    bounds = []
    for p in parts:
        r = p.producer if isinstance(p, Value) else None
        if r is None or r.op not in _STAGE_REDUCE or not r.args.get("keepdim") or len(r.outputs) != 1:
            return None
        s = r.args.get("input")
        s = s.producer if isinstance(s, Value) else None
        if s is None or s.op != "slice" or s.args.get("step", 1) != 1:
            return None
        base = s.args.get("input")
        if not isinstance(base, Value) or not isinstance(base.spec, TensorSpec) or not base.spec.is_static:
            return None
        rank = base.spec.rank
        a = axis % rank if rank else None
        if a is None or not isinstance(s.args.get("dim"), int) or s.args["dim"] % rank != a or \
                list(r.args.get("dim") or ()) not in ([a], [a - rank]):
            return None
        if kind not in (None, _STAGE_REDUCE[r.op]) or x not in (None, base):
            return None
        kind, x = _STAGE_REDUCE[r.op], base
        lo, hi = s.args.get("start"), s.args.get("end")
        if not isinstance(lo, int) or not isinstance(hi, int):
            return None
        bounds.append((lo, hi))
    axis %= x.spec.rank
    if bounds != _windows(x.spec.shape[axis], len(parts)):
        return None
    return kind, x, axis, len(parts)


def _stage_nodes(node) -> list:
    """The cat, reductions and slices of a stage, the cat first."""
    reduces = [p.producer for p in node.args["tensors"]]
    return [node] + reduces + [r.args["input"].producer for r in reduces]


@register_pass("fuse_adaptive_pool")
def fuse_adaptive_pool(g: Graph) -> tuple[Graph, bool]:
    """Stages of written-out adaptive pooling (see above) on consecutive trailing dims of one tensor, ending in a
    tensor of rank 3 to 5, become one ``adaptive_{max,avg}_pool{1,2,3}d`` (dims with no stage keep their size)."""
    changed = False
    for node in list(g.nodes):
        if node.graph is not g:
            continue
        stage = _adaptive_stage(node)
        if stage is None:
            continue
        kind, x, axis, out = stage
        if axis != x.spec.rank - 1 and any(_adaptive_stage(u) is not None for u in _users_through_slices(node)):
            continue  # a later stage reads this one: the fused op is built from the last stage back
        sizes, replaced = {axis: out}, _stage_nodes(node)
        while True:  # earlier stages on earlier dims of the same reduction
            earlier = _adaptive_stage(x.producer) if x.producer is not None else None
            if earlier is None or earlier[0] != kind or earlier[2] >= min(sizes):
                break
            replaced += _stage_nodes(x.producer)
            kind, x, a, o = earlier
            sizes[a] = o
        rank = x.spec.rank  # (N, C, *spatial), or (C, *spatial) unbatched: spatial dims without a stage keep sizes
        first = 2 if rank >= 3 and min(sizes) >= 2 else 1
        n = rank - first
        if n not in (1, 2, 3) or min(sizes) < first:
            continue
        output_size = [sizes.get(d, x.spec.shape[d]) for d in range(rank - n, rank)]
        node.op = f"adaptive_{kind}_pool{n}d"
        g.set_args(node, {"input": x, "output_size": output_size} | (
            {"return_indices": False} if "return_indices" in registry.get(node.op).params else {}))
        for dead in replaced[1:]:  # the stages' nodes nothing else reads (a slice may serve a mean and a max)
            if dead.graph is g and not any(v._uses or v.meta.get("is_output") for v in dead.outputs):
                g.erase_node(dead)
        changed = True
    return g, changed


def _users_through_slices(node) -> list:
    """The nodes that read a stage's output through a slice and a reduction: a later stage's cat."""
    out = []
    for u in node.outputs[0].users:
        if u.op == "slice":
            for r in u.outputs[0].users:
                out.extend(r.outputs[0].users)
    return out

