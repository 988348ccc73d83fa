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

``recompose``: one walk with a rule per op for the rest of what ONNX writes out (stack, unbind, roll,
masked_select, slice assignments, baddbmm/addmm, nearest upsampling, pixel_unshuffle, group_norm, bmm, a norm's unit
affine): each rule starts at the node that ends the written-out form, checks the whole form exactly and rewrites that
node in place. Rules read constants of the computation only, never a model's weights or buffers (an imported file's
initializers), whose values a user may replace.
"""
from __future__ import annotations

import math

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


# ---- one walk, a rule per op ----------------------------------------------------------------------------------
# What ONNX's op set has no single op for, written out by an exporter (bridge's, torch.onnx's) as several nodes and
# read back as the one torch op a model called: each rule starts at the node that ends the written-out form, checks
# the whole form (sizes and constant indices exactly), and rewrites that node in place (its name and scope stay).
def _fixed(v) -> bool:
    """Is ``v`` a constant of the computation, whose value a rule may read and build on? Not a weight or buffer of
    the model (an imported file's initializers are parameters): a user may load other values into those."""
    return isinstance(v, Value) and v.kind == "constant" and v.is_const


def _producer(v, op: str):
    """The node of op ``op`` that computes ``v`` (a Value of one output), else None."""
    p = v.producer if isinstance(v, Value) else None
    return p if p is not None and p.op == op and len(p.outputs) == 1 else None


def _only_read_by(v: Value, node) -> bool:
    return not v.meta.get("is_output") and len(v._uses) == 1 and node in v._uses


def _spec(v):
    return v.spec if isinstance(v, Value) and isinstance(v.spec, TensorSpec) else None


def _axis(d, rank: int):
    return d % rank if isinstance(d, int) and not isinstance(d, bool) and rank and -rank <= d < rank else None


def _erase_dead(g: Graph, *values) -> None:
    """Erase the producers of ``values`` (in order) that nothing reads any more."""
    for v in values:
        p = v.producer if isinstance(v, Value) else None
        if p is not None and p.graph is g and not any(o._uses or o.meta.get("is_output") for o in p.outputs):
            g.erase_node(p)


def _flattened(v):
    """``x`` where ``v`` is ``x`` flattened to one dim (``reshape(x, [-1])``, ``flatten(x)``), else None."""
    p = v.producer if isinstance(v, Value) else None
    if p is None or len(p.outputs) != 1 or _spec(p.args.get("input")) is None:
        return None
    if p.op in ("reshape", "view") and list(p.args.get("shape") or ()) == [-1]:
        return p.args["input"]
    if p.op == "flatten" and p.args.get("start_dim") in (0, -_spec(p.args["input"]).rank) and \
            p.args.get("end_dim") in (-1, _spec(p.args["input"]).rank - 1):
        return p.args["input"]
    return None


def _stack(g: Graph, node) -> bool:
    """``cat([unsqueeze(x, d) ...], d)`` -> ``stack([x ...], d)`` (ONNX has no stack)."""
    parts, out = node.args.get("tensors"), _spec(node.outputs[0])
    d = _axis(node.args.get("dim"), out.rank) if out is not None else None
    if d is None or not isinstance(parts, (list, tuple)) or not parts:
        return False
    xs = []
    for p in parts:
        u = _producer(p, "unsqueeze")
        if u is None or _axis(u.args.get("dim"), out.rank) != d:
            return False
        xs.append(u.args["input"])
    node.op = "stack"
    g.set_args(node, {"tensors": xs, "dim": d})
    _erase_dead(g, *parts)
    return True


def _bounds(s, length: int) -> tuple[int, int] | None:
    """(start, end) of a step-1 ``slice`` node over a dim of ``length``, clamped as python slices clamp."""
    start, end = s.args.get("start"), s.args.get("end")
    if s.args.get("step", 1) != 1 or not all(b is None or (type(b) is int) for b in (start, end)):
        return None
    start, end = 0 if start is None else start, length if end is None else end
    start, end = (b + length if b < 0 else b for b in (start, end))
    return min(max(start, 0), length), min(max(end, 0), length)


def _roll(g: Graph, node) -> bool:
    """``cat([x[..., L-s:], x[..., :L-s]], d)`` -> ``roll(x, s, d)`` (ONNX has no roll)."""
    parts, out = node.args.get("tensors"), _spec(node.outputs[0])
    d = _axis(node.args.get("dim"), out.rank) if out is not None else None
    if d is None or not isinstance(parts, (list, tuple)) or len(parts) != 2:
        return False
    a, b = (_producer(p, "slice") for p in parts)
    if a is None or b is None or a.args.get("input") is not b.args.get("input"):
        return False
    x = a.args["input"]
    xs = _spec(x)
    if xs is None or xs.rank != out.rank or _axis(a.args.get("dim"), xs.rank) != d or \
            _axis(b.args.get("dim"), xs.rank) != d or not isinstance(xs.shape[d], int):
        return False
    length = xs.shape[d]
    ba, bb = _bounds(a, length), _bounds(b, length)
    if ba is None or bb is None or ba[1] != length or bb != (0, ba[0]) or not 0 < ba[0] < length:
        return False
    node.op = "roll"
    g.set_args(node, {"input": x, "shifts": [length - ba[0]], "dims": [d]})
    _erase_dead(g, *parts)
    return True


def _unbind(g: Graph, node) -> bool:
    """``split(x, 1, d)`` with every piece read only by ``squeeze(piece, d)`` -> ``unbind(x, d)`` (ONNX has no
    unbind: a Split and a Squeeze per piece)."""
    x, xs = node.args.get("input"), _spec(node.args.get("input"))
    d = _axis(node.args.get("dim"), xs.rank) if xs is not None else None
    if d is None or not isinstance(xs.shape[d], int) or len(node.outputs) != xs.shape[d] or \
            node.args.get("split_size_or_sections") not in (1, [1] * len(node.outputs), (1,) * len(node.outputs)):
        return False
    squeezes = []
    for piece in node.outputs:
        if piece.meta.get("is_output"):
            return False
        for u in piece.users:
            dims = u.args.get("dim")
            dims = list(dims) if isinstance(dims, (list, tuple)) else [dims]
            if u.op != "squeeze" or len(u.outputs) != 1 or [_axis(k, xs.rank) for k in dims] != [d]:
                return False
            squeezes.append((node.outputs.index(piece), u))
    if not squeezes:
        return False
    spec = TensorSpec(xs.shape[:d] + xs.shape[d + 1:], xs.dtype)
    unbind = g.add_node("unbind", {"input": x, "dim": d}, outputs=[(p.name, spec) for p in node.outputs],
                        scope=node.scope, source=node.source, before=node)
    for i, u in squeezes:
        g.replace_all_uses(u.outputs[0], unbind.outputs[i])
        g.erase_node(u)
    g.erase_node(node)
    return True


def _masked_select(g: Graph, node) -> bool:
    """``index_select(x.flatten(), 0, nonzero(mask.flatten()).flatten())`` -> ``masked_select(x, mask)``: what
    ONNX's Compress (and bridge's export of ``x[mask]``) makes of it, for a mask of the input's shape."""
    if _axis(node.args.get("dim"), 1) != 0:
        return False
    x = _flattened(node.args.get("input"))
    nz = _flattened(node.args.get("index"))
    nz = _producer(nz, "nonzero")
    mask = _flattened(nz.args.get("input")) if nz is not None else None
    if x is None or mask is None or _spec(mask).dtype != torch.bool or _spec(mask).shape != _spec(x).shape:
        return False
    flat, index = node.args["input"], node.args["index"]
    node.op = "masked_select"
    g.set_args(node, {"input": x, "mask": mask})
    _erase_dead(g, flat, index, nz.outputs[0], nz.args["input"])
    return True


def _box(pos: torch.Tensor, shape: tuple) -> list[slice] | None:
    """Slices whose box in a tensor of ``shape`` holds exactly the row-major flat positions ``pos``, in their
    order (a ``Tensor.__setitem__`` of slices written as ScatterND); None when ``pos`` is no such box."""
    strides = [math.prod(shape[k + 1:]) for k in range(len(shape))]
    axes = []
    for k, n in enumerate(shape):
        u = torch.unique((pos // strides[k]) % n)  # sorted
        step = int(u[1] - u[0]) if len(u) > 1 else 1
        if step < 1 or not torch.equal(u, torch.arange(int(u[0]), int(u[-1]) + 1, step)):
            return None
        axes.append(u)
    if math.prod(len(u) for u in axes) != pos.numel():
        return None
    grid = torch.meshgrid(*axes, indexing="ij")
    if not torch.equal(sum(c * s for c, s in zip(grid, strides)).flatten(), pos):
        return None
    return [slice(None) if len(u) == n and int(u[0]) == 0 and (len(u) == 1 or int(u[1] - u[0]) == 1) else
            slice(int(u[0]), int(u[-1]) + 1, int(u[1] - u[0]) if len(u) > 1 else 1) for u, n in zip(axes, shape)]


def _box_write(s, shape: tuple):
    """(slices, value, sizes) that write what setitem node ``s`` writes at constant flat positions of a tensor of
    ``shape`` (flattened), when the positions form a box; ``sizes``: the box's, where a value of the positions'
    shape must be reshaped to it (else None). None when they form no box."""
    index, value = s.args.get("index"), s.args.get("value")
    if not isinstance(index, (list, tuple)) or len(index) != 1:
        return None
    pos = index[0]
    if not _fixed(pos) or pos.const.dtype not in (torch.int64, torch.int32):
        return None
    n = math.prod(shape)
    flat = pos.const.flatten().long()
    flat = torch.where(flat < 0, flat + n, flat)
    if not flat.numel() or int(flat.min()) < 0 or int(flat.max()) >= n:
        return None
    box = _box(flat, shape)
    if box is None:
        return None
    sizes = [len(range(*b.indices(d))) for b, d in zip(box, shape)]
    vs = _spec(value)
    if isinstance(value, Value) and vs is not None and math.prod(vs.shape) != 1:
        if tuple(vs.shape) != tuple(pos.spec.shape) or not vs.is_static:
            return None  # a value broadcast to the positions: left as it is
        return tuple(box), value, (sizes if list(vs.shape) != sizes else None)
    if not isinstance(value, (Value, int, float, bool)):
        return None
    return tuple(box), value, None


def _reshaped(g: Graph, value: Value, sizes: list, before) -> Value:
    if _fixed(value):
        return g.add_constant("const", value.const.reshape(sizes), kind="constant")
    return g.add_node("reshape", {"input": value, "shape": sizes}, scope=before.scope, before=before,
                      outputs=[(f"{before.name}_value", TensorSpec(tuple(sizes), value.spec.dtype))]).outputs[0]


def _setitem_box(g: Graph, node) -> bool:
    """``setitem(x.flatten(), (flat positions,), v).reshape(x.shape)`` (or a chain of such setitems) with constant
    positions that form boxes -> ``setitem(x, (slices), v)``: what ONNX's ScatterND (bridge's export of
    ``x[:, 1:3] = v``) makes of a slice assignment, which torch writes as a slice copy, not a scatter of flat
    indices."""
    out = _spec(node.outputs[0])
    if out is None or not out.is_static:
        return False
    chain, reader, v = [], node, node.args.get("input")
    while True:  # back to the setitem of the flattened x
        s = _producer(v, "setitem")
        if s is None or not _only_read_by(v, reader):
            return False
        chain.append(s)
        x = _flattened(s.args.get("input"))
        if x is not None:
            break
        reader, v = s, s.args.get("input")
    if _spec(x) != out:
        return False
    chain.reverse()
    writes = [_box_write(s, out.shape) for s in chain]  # every write a box, before anything changes
    if any(w is None for w in writes):
        return False
    flat_x, prev = chain[0].args["input"], x
    for s, (box, value, sizes) in zip(chain, writes):
        target = node if s is chain[-1] else s  # the last write: the reshape's node, name and scope
        if sizes is not None:
            value = _reshaped(g, value, sizes, target)
        target.op = "setitem"
        g.set_args(target, {"input": prev, "index": box, "value": value})
        if target is s:
            s.outputs[0].spec = out
        prev = target.outputs[0]
    g.erase_node(chain[-1])
    _erase_dead(g, flat_x)
    return True


def _coefficient(v):
    """(c, m) where ``v`` is ``mul(m, c)`` (either order) of a python number or one-element constant ``c`` read by
    nothing else; (1, v) otherwise."""
    p = _producer(v, "mul")
    if p is not None and not v.meta.get("is_output") and len(v._uses) == 1:
        a, o = p.args.get("input"), p.args.get("other")
        for c, m in ((o, a), (a, o)):
            if _scalar(c) and (not isinstance(c, Value) or _fixed(c)) and isinstance(m, Value) and _spec(m) == _spec(v):
                return (c.const.item() if isinstance(c, Value) else c), m
    return 1, v


def _baddbmm(g: Graph, node) -> bool:
    """``beta * a + alpha * (x @ y)`` (either order) -> ``baddbmm(a, x, y, beta, alpha)`` (3-d) or ``addmm`` (2-d):
    ONNX's Gemm takes 2-d matrices only, so torch.baddbmm (and addmm of scaled terms) is written out as MatMul,
    two Muls and an Add. A plain ``a + x @ y`` is left as it is."""
    out = _spec(node.outputs[0])
    if node.args.get("alpha", 1) != 1 or out is None or out.rank not in (2, 3) or not out.dtype.is_floating_point:
        return False
    terms = [node.args.get("input"), node.args.get("other")]
    for i in (0, 1):
        alpha, m = _coefficient(terms[i])
        beta, a = _coefficient(terms[1 - i])
        mm = _producer(m, "matmul") or _producer(m, "bmm")
        if mm is None or (alpha == 1 and beta == 1) or _spec(a) != out or _spec(m) != out:
            continue
        x, y = mm.args.get("input"), mm.args.get("other", mm.args.get("mat2"))
        if _spec(x) is None or _spec(y) is None or _spec(x).rank != out.rank or _spec(y).rank != out.rank or \
                _spec(x).dtype != out.dtype or _spec(y).dtype != out.dtype:
            continue
        if out.rank == 2:
            node.op = "addmm"
            g.set_args(node, {"input": a, "mat1": x, "mat2": y, "beta": beta, "alpha": alpha})
        else:
            node.op = "baddbmm"
            g.set_args(node, {"input": a, "batch1": x, "batch2": y, "beta": beta, "alpha": alpha})
        _erase_dead(g, *terms)
        _erase_dead(g, m)
        return True
    return False


def _nearest_index(length: int, out: int) -> torch.Tensor:
    """The input position torch's nearest interpolation reads for each of ``out`` positions from ``length``."""
    src = torch.arange(length, dtype=torch.float64).view(1, 1, length)
    return torch.nn.functional.interpolate(src, size=out, mode="nearest").flatten().long()


def _nearest_dim(node, rank: int):
    """(dim, out) where ``node`` is an ``index_select`` of a spatial dim (2 and on) by torch's nearest positions."""
    xs, idx = _spec(node.args.get("input")), node.args.get("index")
    d = _axis(node.args.get("dim"), rank) if xs is not None and xs.rank == rank else None
    if d is None or d < 2 or not _fixed(idx) or idx.const.dim() != 1 or \
            not isinstance(xs.shape[d], int) or idx.const.dtype not in (torch.int64, torch.int32):
        return None
    if not torch.equal(idx.const.long(), _nearest_index(xs.shape[d], idx.const.numel())):
        return None
    return d, idx.const.numel()


def _nearest(g: Graph, node) -> bool:
    """``index_select`` by torch's nearest positions along two or three spatial dims of a (N, C, *spatial)
    tensor -> ``interpolate(x, size, mode="nearest")``: an exporter writes an upsampling whose positions ONNX's
    Resize would compute differently as Gathers of constant positions."""
    out = _spec(node.outputs[0])
    if out is None or out.rank not in (4, 5) or _nearest_dim(node, out.rank) is None:
        return False
    users = node.outputs[0].users
    if len(users) == 1 and users[0].op == "index_select" and _nearest_dim(users[0], out.rank) is not None:
        return False  # the last of the chain rewrites it
    chain, v, sizes = [], node.outputs[0], {}
    while True:
        p = v.producer
        if p is None or p.op != "index_select" or (chain and not _only_read_by(v, chain[-1])):
            break
        hit = _nearest_dim(p, out.rank)
        if hit is None or hit[0] in sizes:
            break
        sizes[hit[0]] = hit[1]
        chain.append(p)
        v = p.args["input"]
    xs = _spec(v)
    if len(chain) < 2 or not all(isinstance(n, int) for n in xs.shape[2:]):
        return False
    node.op = "interpolate"
    g.set_args(node, {"input": v, "size": [sizes.get(d, xs.shape[d]) for d in range(2, out.rank)],
                      "scale_factor": None, "mode": "nearest", "align_corners": None,
                      "recompute_scale_factor": None, "antialias": False})
    _erase_dead(g, *[n.outputs[0] for n in chain[1:]])
    return True


def _pixel_unshuffle(g: Graph, node) -> bool:
    """``x.reshape(N, C, H/r, r, W/r, r).permute(0, 1, 3, 5, 2, 4).reshape(N, C*r*r, H/r, W/r)`` ->
    ``pixel_unshuffle(x, r)``: ONNX's SpaceToDepth orders channels the other way, so it is written out."""
    out = _spec(node.outputs[0])
    perm = _producer(node.args.get("input"), "permute")
    inner = _producer(perm.args.get("input"), "reshape") if perm is not None else None
    if out is None or out.rank != 4 or inner is None or list(perm.args.get("dims") or ()) != [0, 1, 3, 5, 2, 4]:
        return False
    x, six = inner.args.get("input"), _spec(inner.outputs[0])
    xs = _spec(x)
    if xs is None or xs.rank != 4 or six.rank != 6 or xs.dtype != out.dtype or \
            not all(isinstance(d, int) for d in xs.shape[1:] + six.shape[1:] + out.shape[1:]):
        return False
    n, c, h, w = xs.shape
    r = six.shape[3]
    if r < 1 or six.shape != (n, c, h // r, r, w // r, r) or h % r or w % r or out.shape != (n, c * r * r, h // r,
                                                                                             w // r):
        return False
    node.op = "pixel_unshuffle"
    g.set_args(node, {"input": x, "downscale_factor": r})
    _erase_dead(g, perm.outputs[0], inner.outputs[0])
    return True


def _bmm(g: Graph, node) -> bool:
    """``matmul`` of two 3-d tensors of one batch size -> ``bmm`` (ONNX has MatMul only; torch.matmul works out
    broadcasting first, which costs as much as a small bmm)."""
    a, b, out = _spec(node.args.get("input")), _spec(node.args.get("other")), _spec(node.outputs[0])
    if a is None or b is None or out is None or a.rank != 3 or b.rank != 3 or a.shape[0] != b.shape[0] or \
            a.dtype != b.dtype or out.dtype != a.dtype:
        return False
    node.op = "bmm"
    g.set_args(node, {"input": node.args["input"], "mat2": node.args["other"]})
    return True


def _const_filled(v, value: float) -> bool:
    """Is ``v`` None or a constant of the computation (not a weight or buffer of the model, which a user may
    load other values into) whose every element is ``value``?"""
    if v is None:
        return True
    return _fixed(v) and bool((v.const == value).all())


def _group_norm(g: Graph, node) -> bool:
    """``instance_norm(x.reshape(N, G, -1)).reshape(x.shape)`` (no affine, or ones and zeros) ->
    ``group_norm(x, G)``: ONNX before opset 21 has no GroupNormalization, so an exporter normalizes the groups as
    instances."""
    out, inorm = _spec(node.outputs[0]), _producer(node.args.get("input"), "instance_norm")
    if out is None or inorm is None or not _only_read_by(node.args["input"], node):
        return False
    a = inorm.args
    if a.get("running_mean") is not None or a.get("running_var") is not None or a.get("use_input_stats") is not True \
            or not _const_filled(a.get("weight"), 1.0) or not _const_filled(a.get("bias"), 0.0):
        return False
    inner = _producer(a.get("input"), "reshape")
    x = inner.args.get("input") if inner is not None else None
    xs, rs = _spec(x), _spec(inner.outputs[0]) if inner is not None else None
    if xs is None or xs != out or xs.rank < 3 or rs.rank != 3 or not _only_read_by(inner.outputs[0], inorm) or \
            not all(isinstance(d, int) for d in xs.shape[1:] + rs.shape[1:]):
        return False  # (the batch dim may be symbolic: the same on both sides)
    n, c = xs.shape[:2]
    groups = rs.shape[1]
    if rs.shape[0] != n or groups < 1 or c % groups or rs.shape[2] * groups != math.prod(xs.shape[1:]):
        return False
    node.op = "group_norm"
    g.set_args(node, {"input": x, "num_groups": groups, "weight": None, "bias": None, "eps": a.get("eps", 1e-5)})
    _erase_dead(g, inorm.outputs[0], inner.outputs[0])
    return True


def _per_channel(v, c: int, rank: int):
    """``w`` (shape (C,)) where ``v`` is ``w`` reshaped to (C, 1, ...) for a tensor of ``rank`` dims (a constant of
    that shape: its values as (C,)); None otherwise."""
    vs = _spec(v)
    if vs is None or tuple(vs.shape) != (c,) + (1,) * (rank - 2):
        return None
    p = _producer(v, "reshape")
    if p is not None and _spec(p.args.get("input")) is not None and tuple(_spec(p.args["input"]).shape) == (c,):
        return p.args["input"]
    return v if _fixed(v) else None


def _group_norm_affine(g: Graph, node) -> bool:
    """``group_norm(x, G) * w.reshape(C, 1, ...) + b.reshape(C, 1, ...)`` -> ``group_norm(x, G, w, b)``: the
    scale and shift nn.GroupNorm applies, which the written-out form applies after."""
    out = _spec(node.outputs[0])
    if out is None or node.args.get("alpha", 1) != 1 or out.rank < 3 or not isinstance(out.shape[1], int):
        return False
    c = out.shape[1]
    for m, b in ((node.args.get("input"), node.args.get("other")), (node.args.get("other"), node.args.get("input"))):
        mul = _producer(m, "mul")
        if mul is None or not _only_read_by(m, node):
            continue
        for gn_v, w in ((mul.args.get("input"), mul.args.get("other")), (mul.args.get("other"), mul.args.get("input"))):
            gn = _producer(gn_v, "group_norm")
            if gn is None or not _only_read_by(gn_v, mul) or gn.args.get("weight") is not None or \
                    gn.args.get("bias") is not None or _spec(gn_v) != out:
                continue
            weight, bias = _per_channel(w, c, out.rank), _per_channel(b, c, out.rank)
            if weight is None or bias is None or _spec(weight).dtype != out.dtype or _spec(bias).dtype != out.dtype:
                continue
            if _spec(weight).rank != 1:  # a constant of the computation shaped (C, 1, ...)
                weight = g.add_constant("const", weight.const.reshape(c), kind="constant")
            if _spec(bias).rank != 1:
                bias = g.add_constant("const", bias.const.reshape(c), kind="constant")
            node.op = "group_norm"
            g.set_args(node, {"input": gn.args["input"], "num_groups": gn.args["num_groups"], "weight": weight,
                              "bias": bias, "eps": gn.args["eps"]})
            _erase_dead(g, m, gn_v, w, b)
            return True
    return False


def _unit_affine(g: Graph, node) -> bool:
    """A norm's weight of ones and bias of zeros (what ONNX's LayerNormalization, InstanceNormalization and
    BatchNormalization need for a norm without affine parameters) -> none: the same numbers, one pass less."""
    a = node.args
    drop = {k: None for k, one in (("weight", 1.0), ("bias", 0.0))
            if a.get(k) is not None and _const_filled(a[k], one) and _spec(a[k]) is not None}
    if not drop:
        return False
    g.set_args(node, {**a, **drop})
    return True


_RULES = {"matmul": (_bmm,), "cat": (_stack, _roll), "split": (_unbind,), "index_select": (_masked_select, _nearest),
          "reshape": (_setitem_box, _pixel_unshuffle, _group_norm), "add": (_baddbmm, _group_norm_affine),
          "layer_norm": (_unit_affine,), "instance_norm": (_unit_affine,), "group_norm": (_unit_affine,),
          "batch_norm": (_unit_affine,)}


@register_pass("recompose")
def recompose(g: Graph) -> tuple[Graph, bool]:
    """The rules above, each at the node that ends its written-out form, in one walk."""
    changed = False
    for node in list(g.nodes):
        rules = _RULES.get(node.op)
        if rules is None or node.graph is not g:
            continue
        for rule in rules:
            if rule(g, node):
                changed = True
                break
    if changed:  # constants of the written-out forms (scalars, positions) that nothing reads now
        g.remove_unused_constants(["constant"])
    return g, changed
