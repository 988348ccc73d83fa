"""Removals: dropout (eval), identity-like ops (identity, detach, a cast to the same dtype, an expand or reshape to
the static shape a tensor has, ``contiguous`` of a tensor that already is), and reorders that undo each other
(``cancel_reorders``)."""
from __future__ import annotations

import math

from ..ir.graph import Graph, Value
from ..ir.spec import TensorSpec
from ..ops import registry
from . import register_pass


def _forward(g: Graph, node, src) -> bool:
    """Make ``node``'s users read ``src`` and erase it; False when it must stay."""
    out = node.outputs[0]
    if out.meta.get("is_output") and isinstance(src, Value) and (src.kind == "input" or src.meta.get("is_output")):
        return False  # keep it: an output must stay a distinct value
    g.replace_all_uses(out, src)
    g.erase_node(node)
    return True


@register_pass("remove_dropout")
def remove_dropout(g: Graph) -> tuple[Graph, bool]:
    changed = False
    for node in list(g.nodes):
        if node.op == "dropout" and not node.args.get("training"):
            changed |= _forward(g, node, node.args["input"])
    return g, changed


def _is_identity(node) -> bool:
    if node.op in ("identity", "detach"):
        return True
    if node.op == "contiguous":
        # only where the input is known to be contiguous: after a transpose/permute (shufflenet's channel
        # shuffle) a later ``view`` needs the copy, even through elementwise ops, which keep strides
        a = node.args["input"]
        return isinstance(a, Value) and a.producer is not None and registry.get(a.producer.op).contiguous_output
    if node.op in ("expand", "reshape", "view"):  # to the static shape it already has (a view of all of it)
        a = node.args["input"]
        return isinstance(a, Value) and isinstance(a.spec, TensorSpec) and a.spec.is_static and \
            node.outputs[0].spec == a.spec
    if node.op == "to":  # a cast to the dtype it already has
        a = node.args["input"]
        return isinstance(a, Value) and a.spec is not None and node.outputs[0].spec == a.spec and \
            node.args.get("device") is None
    return False


@register_pass("remove_identity")
def remove_identity(g: Graph) -> tuple[Graph, bool]:
    changed = False
    for node in list(g.nodes):
        if _is_identity(node):
            changed |= _forward(g, node, node.args["input"])
    return g, changed


# ---- chunks put back in order ------------------------------------------------------------------------------
# An ONNX LSTM/GRU stores its gates in another order than torch: bridge's export writes the reorder as Split and
# Concat of the torch parameter (so the file keeps the parameter), and the import reorders back the same way, so a
# round trip computes split -> cat -> unsqueeze -> cat -> select -> split -> cat of each weight on every call
# (twice the eager time on a small LSTM). Following which chunks of which tensor each value holds shows that the
# last cat is the parameter itself.
def _dim(d: int, rank: int) -> int:
    return d + rank if d < 0 else d


def _size(v, dim: int):
    shape = getattr(v.spec, "shape", None)
    if shape is None or dim >= len(shape) or not isinstance(shape[dim], int):
        return None
    return shape[dim]


def _take(segs: tuple, start: int, length: int) -> tuple:
    """The segments covering [start, start + length) of a list of (base, offset, length) segments."""
    out, pos = [], 0
    for base, off, n in segs:
        lo, hi = max(start, pos), min(start + length, pos + n)
        if lo < hi:
            out.append((base, off + lo - pos, hi - lo))
        pos += n
    return tuple(out)


def _merged(segs: list) -> tuple:
    """Adjacent segments of one base that continue each other become one."""
    out: list = []
    for base, off, n in segs:
        if out and out[-1][0] is base and out[-1][1] + out[-1][2] == off:
            out[-1] = (base, out[-1][1], out[-1][2] + n)
        else:
            out.append((base, off, n))
    return tuple(out)


@register_pass("cancel_reorders")
def cancel_reorders(g: Graph) -> tuple[Graph, bool]:
    """A value that is a tensor's chunks concatenated back in their order (through any number of ``split`` and
    ``cat`` along one dim, ``cat`` of one tensor, ``select(unsqueeze(x, 0), 0, 0)``) becomes that tensor; the
    chunking left unused goes."""
    same: dict[int, Value] = {}  # id(value) -> the value it equals
    views: dict[int, tuple] = {}  # id(value) -> (dim, segments (base, offset, length) along dim)

    def resolve(v):
        while isinstance(v, Value) and id(v) in same:
            v = same[id(v)]
        return v

    def segments(v, dim: int):
        v = resolve(v)
        if not isinstance(v, Value):
            return None
        if id(v) in views and views[id(v)][0] == dim:
            return views[id(v)][1]
        n = _size(v, dim)
        return None if n is None else ((v, 0, n),)

    made = []  # the chunking nodes looked at: erased when nothing uses them any more
    for node in g.nodes:
        out = node.outputs[0] if node.outputs else None
        rank = len(getattr(out.spec, "shape", ()) or ()) if out is not None else 0
        if node.op == "cat" and isinstance(node.args.get("tensors"), (list, tuple)) and rank:
            tensors = node.args["tensors"]
            made.append(node)
            if len(tensors) == 1 and isinstance(tensors[0], Value) and tensors[0].spec == out.spec:
                same[id(out)] = resolve(tensors[0])
                continue
            dim = _dim(node.args.get("dim", 0), rank)
            segs = [segments(t, dim) for t in tensors]
            if all(s is not None for s in segs):
                views[id(out)] = (dim, _merged([x for s in segs for x in s]))
        elif node.op == "split" and isinstance(node.args.get("input"), Value) and rank:
            made.append(node)
            dim = _dim(node.args.get("dim", 0), rank)
            segs = segments(node.args["input"], dim)
            pos = 0
            for o in node.outputs:
                n = _size(o, dim)
                if segs is None or n is None:
                    break
                views[id(o)] = (dim, _take(segs, pos, n))
                pos += n
        elif (node.op == "select" and node.args.get("dim") == 0 or node.op == "getitem") \
                and type(node.args.get("index")) is int:  # x[k]: a select along dim 0
            picked = _unstacked(resolve(node.args.get("input")), node.args["index"], resolve)
            if picked is not None:
                made += [*picked[1], node]
                same[id(out)] = resolve(picked[0])
        elif node.op in _MOVES and out is not None:
            found = _moved_from(node)
            if found is not None:
                made += found[1]
                same[id(out)] = resolve(found[0])

    changed = False
    for node in list(g.nodes):
        for v in node.outputs:
            target = resolve(v) if id(v) in same else None
            if target is None and id(v) in views:
                dim, segs = views[id(v)]
                if len(segs) == 1 and segs[0][1] == 0 and segs[0][2] == _size(segs[0][0], dim) \
                        and segs[0][0].spec == v.spec:
                    target = segs[0][0]
            if target is None or target is v or not v._uses:
                continue
            if v.meta.get("is_output") and (target.kind == "input" or target.meta.get("is_output")):
                continue  # an output stays a distinct value
            g.replace_all_uses(v, target)
            changed = True
    if changed:
        looked = {id(n) for n in made}
        for node in reversed(list(g.nodes)):  # users before producers: a chain goes in one sweep
            if id(node) in looked and not any(v._uses or v.meta.get("is_output") for v in node.outputs):
                g.erase_node(node)
    return g, changed


def _unstacked(v, index: int, resolve):
    """``(x, nodes)`` where ``v`` is ``unsqueeze(x, 0)`` (index 0), a ``stack`` along dim 0 whose ``index``-th
    tensor is ``x``, or a ``cat`` along dim 0 whose ``index``-th part is ``unsqueeze(x, 0)`` (a stack written out,
    as an ONNX import does); else None."""
    p = v.producer if isinstance(v, Value) else None
    if p is None:
        return None
    if p.op == "unsqueeze":
        ok = p.args.get("dim") == 0 and index in (0, -1) and isinstance(p.args["input"], Value)
        return (p.args["input"], [p]) if ok else None
    if p.op == "stack" and p.args.get("dim", 0) == 0 and isinstance(p.args.get("tensors"), (list, tuple)):
        parts = p.args["tensors"]
        ok = -len(parts) <= index < len(parts) and isinstance(parts[index], Value)
        return (parts[index], [p]) if ok else None
    if p.op != "cat" or p.args.get("dim", 0) != 0 or not isinstance(p.args.get("tensors"), (list, tuple)):
        return None
    parts = [resolve(t) for t in p.args["tensors"]]
    ups = [t.producer if isinstance(t, Value) else None for t in parts]
    if not all(u is not None and u.op == "unsqueeze" and u.args.get("dim") == 0 for u in ups) \
            or not -len(ups) <= index < len(ups):
        return None
    x = ups[index].args["input"]
    return (x, [*ups, p]) if isinstance(x, Value) else None


# ops that only move elements (or not even that): a chain of them from x back to x's shape may be x itself
_MOVES = frozenset({"permute", "transpose", "t", "movedim", "swapaxes", "squeeze", "unsqueeze", "unflatten", "flatten",
                    "reshape", "view"})
_MOVE_CHECK_LIMIT = 1 << 20  # elements: the chain is run on an index tensor this big at most


def _moved_from(node):
    """``(x, chain)``: the value ``x`` a chain of element-moving ops ending at ``node`` leaves as it was (same
    shape and dtype, every element in its place: found by running the chain on the indices of its elements), and
    the chain's nodes; None if there is none."""
    import torch

    out = node.outputs[0]
    shape = getattr(out.spec, "shape", None)
    if len(node.outputs) != 1 or shape is None or not all(isinstance(d, int) for d in shape):
        return None
    chain, cur = [node], node
    while True:
        src = cur.args.get("input")
        if not isinstance(src, Value) or any(isinstance(a, Value) for k, a in cur.args.items() if k != "input"):
            return None
        if src.spec == out.spec:
            numel = math.prod(shape)
            if numel > _MOVE_CHECK_LIMIT:
                return None
            x = idx = torch.arange(numel).reshape(shape)
            try:
                for n in reversed(chain):
                    x = registry.get(n.op).impl(**{**n.args, "input": x})
            except Exception:  # noqa: BLE001 - an op that does not run on the indices: leave the chain
                return None
            if isinstance(x, torch.Tensor) and x.shape == idx.shape and torch.equal(x, idx):
                return src, chain  # else a longer chain may still bring every element back
        p = src.producer
        if p is None or p.op not in _MOVES or len(p.outputs) != 1 or len(src._uses) != 1:
            return None
        chain.append(p)
        cur = p


# ---- chains of moves composed ---------------------------------------------------------------------------------
# What ONNX makes of torch's pixel_shuffle/unshuffle, channel shuffles and head splits reads back as long chains of
# reshapes and transposes (SpaceToDepth: unflatten, unflatten, permute, flatten; then the exporter's channel
# reorder: reshape, permute, reshape). Any such chain is one reshape into the finest dims both ends need, one
# permute and one reshape: each op call and each copy a permute forces costs time in a small model.
_RESHAPES = frozenset({"reshape", "view", "flatten", "unflatten", "squeeze", "unsqueeze"})
_PERMUTES = frozenset({"permute", "transpose", "t"})


def _perm_of(node, rank: int) -> list[int] | None:
    if node.op == "permute":
        dims = node.args.get("dims")
        ok = isinstance(dims, (list, tuple)) and len(dims) == rank and all(isinstance(d, int) for d in dims)
        return [_dim(d, rank) for d in dims] if ok else None
    if node.op == "transpose" or (node.op == "t" and rank == 2):
        a, b = (node.args.get("dim0"), node.args.get("dim1")) if node.op == "transpose" else (0, 1)
        if not isinstance(a, int) or not isinstance(b, int):
            return None
        perm = list(range(rank))
        perm[_dim(a, rank)], perm[_dim(b, rank)] = perm[_dim(b, rank)], perm[_dim(a, rank)]
        return perm
    return list(range(rank)) if node.op == "t" else None


def _canonical(in_shape: list[int], steps: list) -> tuple[list[int], list[int]] | None:
    """``(atoms, perm)``: the chain ``steps`` (``("reshape", shape)``, ``("permute", perm)``) of a tensor of
    ``in_shape`` is ``reshape(atoms)``, ``permute(perm)``, ``reshape(out shape)``; None where a reshape splits the
    dims another way than the chain's earlier dims divide."""
    sizes: list[int] = []  # atom id -> size
    groups: list[list[int]] = []  # current dims -> their atoms, major first
    for d in in_shape:
        groups.append([len(sizes)] if d != 1 else [])
        if d != 1:
            sizes.append(d)
    order = [a for grp in groups for a in grp]  # the atoms in the input's order
    for kind, arg in steps:
        if kind == "permute":
            groups = [groups[p] for p in arg]
            continue
        seq, new, i = [a for grp in groups for a in grp], [], 0
        for t in arg:
            grp, prod = [], 1
            while prod < t:
                if i >= len(seq):
                    return None
                a = seq[i]
                if prod * sizes[a] <= t:
                    grp.append(a)
                    prod *= sizes[a]
                    i += 1
                    continue
                need = t // prod
                if t % prod or sizes[a] % need:
                    return None
                major, minor = len(sizes), len(sizes) + 1  # split atom a: a's major part first
                sizes += [need, sizes[a] // need]
                seq[i:i + 1] = [major, minor]
                k = order.index(a)
                order[k:k + 1] = [major, minor]
                grp.append(major)
                prod *= need
                i += 1
            if prod != t:
                return None
            new.append(grp)
        if i != len(seq):
            return None
        groups = new
    out = [a for grp in groups for a in grp]
    return [sizes[a] for a in order], [order.index(a) for a in out]


@register_pass("compose_moves")
def compose_moves(g: Graph) -> tuple[Graph, bool]:
    """A chain of three or more reshapes and permutes (each value read by the next alone; static shapes) becomes
    reshape, permute, reshape (fewer where fewer do), checked on the indices of the elements first."""
    import torch

    changed = False
    for node in list(g.nodes):
        if node.graph is not g or node.op not in _RESHAPES | _PERMUTES or len(node.outputs) != 1:
            continue
        out = node.outputs[0]
        if len(out._uses) == 1 and not out.meta.get("is_output") and \
                next(iter(out._uses)).op in _RESHAPES | _PERMUTES:
            continue  # not the chain's end: its end takes it in
        chain, cur = [node], node
        while True:
            src = cur.args.get("input")
            p = src.producer if isinstance(src, Value) else None
            if p is None or p.op not in _RESHAPES | _PERMUTES or len(p.outputs) != 1 or len(src._uses) != 1 or \
                    src.meta.get("is_output"):
                break
            chain.append(p)
            cur = p
        chain.reverse()
        x = chain[0].args.get("input")
        shapes = [getattr(getattr(v, "spec", None), "shape", None) for v in [x] + [n.outputs[0] for n in chain]]
        if len(chain) < 3 or not all(s is not None and all(isinstance(d, int) for d in s) for s in shapes) or \
                any(isinstance(a, Value) for n in chain for k, a in n.args.items() if k != "input"):
            continue
        steps = [("permute", _perm_of(n, len(before))) if n.op in _PERMUTES else ("reshape", list(after))
                 for n, before, after in zip(chain, shapes, shapes[1:])]
        found = None if any(arg is None for _, arg in steps) else _canonical(list(shapes[0]), steps)
        if found is not None:
            atoms, perm = found
            identity = perm == sorted(perm)
            plan = [] if identity else [("reshape", atoms), ("permute", perm)]
            if list(shapes[-1]) != ([atoms[p] for p in perm] if plan else list(shapes[0])):
                plan.append(("reshape", list(shapes[-1])))
            if plan and plan[0] == ("reshape", list(shapes[0])):
                plan.pop(0)
            numel = math.prod(shapes[0])
            if len(plan) >= len(chain) or not plan or numel > _MOVE_CHECK_LIMIT:
                continue
            idx = torch.arange(numel).reshape(shapes[0])
            want, got = idx, idx
            for n in chain:
                want = registry.get(n.op).impl(**{**n.args, "input": want})
            for kind, arg in plan:
                got = got.reshape(arg) if kind == "reshape" else got.permute(arg)
            if want.shape != got.shape or not torch.equal(want, got):
                continue
            dtype = out.spec.dtype
            v = x
            for kind, arg in plan[:-1]:
                spec_shape = arg if kind == "reshape" else [v.spec.shape[p] for p in arg]
                v = g.add_node(kind, {"input": v, "shape" if kind == "reshape" else "dims": list(arg)},
                               outputs=[(f"{node.name}_{kind}", TensorSpec(tuple(spec_shape), dtype))],
                               before=node).output
            kind, arg = plan[-1]
            node.op = kind
            g.set_args(node, {"input": v, "shape" if kind == "reshape" else "dims": list(arg)})
            for dead in reversed(chain[:-1]):
                if not any(w._uses or w.meta.get("is_output") for w in dead.outputs):
                    g.erase_node(dead)
            changed = True
    return g, changed

