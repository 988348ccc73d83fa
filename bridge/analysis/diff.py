"""What ``bridge.diff`` shows: what differs between two models, graphs or ONNX files, structurally and numerically.

Nodes are matched in three rounds, each over the nodes still unmatched, in execution order:

1. by **scope and op**: the k-th ``conv`` inside ``layer1.0.conv1`` of one graph is the k-th of the other;
2. by **structure**: same op, reading the partners of the same activations (functional code outside modules);
3. by **scope and position**: the k-th remaining node inside a module of one graph is the k-th of the other
   (a layer whose op changed: ``act`` was ``relu`` and is now ``gelu``);
4. by **order**: a longest common subsequence of the remaining ops (graphs without module scopes, such as an
   ONNX import; skipped past 4M table cells).

What is left is *removed* (only in ``a``) or *added* (only in ``b``). A matched pair is *changed* when the
op, a non-tensor argument (stride, eps, ...), the wiring (which inputs it reads), a weight (shape or
values), an output shape/dtype or, for control flow (``cond``, ``while_loop``, ...), a region differs: two
regions are diffed as graphs, and what differs inside is listed under ``region <name>``.

Given inputs, both graphs run on them: every output is compared and, when one differs, the matched nodes'
values are compared in execution order to name the first node whose values diverge (as ``bridge.verify``
localizes an ONNX
mismatch, with the same debugging interpreter, ``bridge.backends.ort.run_all``).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ..ir.graph import Graph, Node, Value
from .memory import is_activation
from .topology import _node_dict


@dataclass
class NodeChange:
    """A matched pair of nodes that differ: ``changes`` maps what differs to ``(in a, in b)``."""

    a: Node
    b: Node
    changes: dict[str, tuple]

    def __str__(self) -> str:
        what = "; ".join(f"{k}: {_fmt(x)} -> {_fmt(y)}" for k, (x, y) in self.changes.items())
        return f"~ %{self.a.name} ({_where(self.a)}): {what}"


@dataclass
class ValueDiff:
    """How far apart two tensors are: largest absolute difference and the scale of the reference."""

    name: str
    max_abs: float
    scale: float
    ok: bool
    note: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "max_abs": self.max_abs, "scale": self.scale, "ok": self.ok, "note": self.note}


@dataclass
class Diff:
    """The result of ``bridge.diff``. Empty (``not diff.changed_anything``) for a model against itself."""

    a: Graph
    b: Graph
    matched: list[tuple[Node, Node]]
    added: list[Node]
    removed: list[Node]
    changed: list[NodeChange]
    outputs: list[ValueDiff] | None = None          # with inputs: one per graph output
    first_divergence: dict | None = None            # with inputs: the first matched node whose values differ
    tolerance: dict = field(default_factory=dict)

    @property
    def structurally_equal(self) -> bool:
        return not (self.added or self.removed or self.changed)

    @property
    def numerically_equal(self) -> bool | None:
        """None when no inputs were given; else whether every output is within tolerance."""
        return None if self.outputs is None else all(o.ok for o in self.outputs)

    @property
    def changed_anything(self) -> bool:
        return not self.structurally_equal or self.numerically_equal is False

    def __bool__(self) -> bool:
        return self.changed_anything

    def to_dict(self) -> dict[str, Any]:
        return {"matched": len(self.matched),
                "added": [_node_dict(n) for n in self.added],
                "removed": [_node_dict(n) for n in self.removed],
                "changed": [{"a": _node_dict(c.a), "b": _node_dict(c.b),
                             "changes": {k: [_jsonable(x), _jsonable(y)] for k, (x, y) in c.changes.items()}}
                            for c in self.changed],
                "outputs": None if self.outputs is None else [o.to_dict() for o in self.outputs],
                "first_divergence": self.first_divergence, "tolerance": self.tolerance,
                "structurally_equal": self.structurally_equal, "numerically_equal": self.numerically_equal}

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def __str__(self) -> str:
        lines = [f"diff: {len(self.matched)} nodes matched, {len(self.added)} added, {len(self.removed)} removed, "
                 f"{len(self.changed)} changed"]
        lines += [f"- %{n.name} {n.op} ({_where(n)})" for n in self.removed]
        lines += [f"+ %{n.name} {n.op} ({_where(n)})" for n in self.added]
        lines += [str(c) for c in self.changed]
        if self.outputs is not None:
            for o in self.outputs:
                lines.append(f"output {o.name}: max abs diff {o.max_abs:.3g} (scale {o.scale:.3g}) "
                             f"{'ok' if o.ok else 'DIFFERS'}" + (f" ({o.note})" if o.note else ""))
            fd = self.first_divergence
            if fd:
                lines.append(f"first divergence: %{fd['a_node']} {fd['op']} ({fd['scope'] or '<root>'}), "
                             f"max abs diff {fd['max_abs']:.3g}" + (f" ({fd['note']})" if fd.get("note") else ""))
            elif self.numerically_equal:
                lines.append("values: every matched node within tolerance")
        return "\n".join(lines)


def diff_graphs(ga: Graph, gb: Graph, args: Any = None, kwargs: dict | None = None, *, atol: float = 1e-5,
                rtol: float = 1e-4) -> Diff:
    """Structural (and, given ``args``, numeric) difference of two graphs (``bridge.diff`` traces or imports
    models and files first). See the module docstring.

    A tensor is within tolerance when ``max|x - ref| <= atol * max(1, max|ref|) + rtol * max|ref|``.
    """
    pairs = match(ga, gb)
    b_of = {id(x): y for x, y in pairs}
    matched_b = {id(y) for _, y in pairs}
    vmap = _value_map(ga, gb, pairs)
    changed = []
    for x, y in pairs:
        ch = _changes(x, y, vmap)
        if ch:
            changed.append(NodeChange(x, y, ch))
    out = Diff(ga, gb, pairs, added=[n for n in gb.nodes if id(n) not in matched_b],
               removed=[n for n in ga.nodes if id(n) not in b_of], changed=changed,
               tolerance={"atol": atol, "rtol": rtol})
    if args is not None:
        _numeric(out, args, kwargs, atol, rtol)
    return out


diff = diff_graphs  # the name this function had when it also traced models (bridge.diff does that now)


def match(a: Graph, b: Graph) -> list[tuple[Node, Node]]:
    """Matched node pairs (a's execution order): scope and op, then structure, then scope and position."""
    pairs: dict[int, Node] = {}
    rev: dict[int, Node] = {}

    def pair(x: Node, y: Node) -> None:
        pairs[id(x)] = y
        rev[id(y)] = x

    # 1. scope + op + occurrence
    def keyed(g: Graph, key) -> dict:
        seen: dict = {}
        out = {}
        for n in g.nodes:
            if id(n) in pairs or id(n) in rev:
                continue
            k = key(n)
            i = seen.get(k, 0)
            seen[k] = i + 1
            out[(k, i)] = n
        return out

    kb = keyed(b, lambda n: (n.scope.path, n.op))
    for k, x in keyed(a, lambda n: (n.scope.path, n.op)).items():
        if k in kb:
            pair(x, kb[k])
    # 2. structure: same op reading the partners of the same activations (repeat while it finds more)
    vmap = _value_map(a, b, [(x, pairs[id(x)]) for x in a.nodes if id(x) in pairs])
    while True:
        by_key: dict = {}
        for y in b.nodes:
            if id(y) not in rev:
                by_key.setdefault((y.op, tuple(id(v) for v in y.inputs if is_activation(v))), []).append(y)
        found = 0
        for x in a.nodes:
            if id(x) in pairs:
                continue
            ins = [vmap.get(id(v)) for v in x.inputs if is_activation(v)]
            if any(v is None for v in ins):
                continue
            cands = by_key.get((x.op, tuple(id(v) for v in ins)))
            if cands:
                y = cands.pop(0)
                pair(x, y)
                for vx, vy in zip(x.outputs, y.outputs):
                    vmap[id(vx)] = vy
                found += 1
        if not found:
            break
    # 3. scope + position among what is left (an op replaced inside a module)
    kb = keyed(b, lambda n: n.scope.path)
    for k, x in keyed(a, lambda n: n.scope.path).items():
        if k in kb and k[0]:  # only inside a module: root-level leftovers are added/removed
            pair(x, kb[k])
    # 4. order: the longest common subsequence of ops among what is left (graphs without scopes, such as an
    # ONNX import against its model: a fused batch norm is then one removed node, not a shifted chain)
    ua = [x for x in a.nodes if id(x) not in pairs]
    ub = [y for y in b.nodes if id(y) not in rev]
    if ua and ub and len(ua) * len(ub) <= _LCS_LIMIT:
        for x, y in _lcs(ua, ub):
            pair(x, y)
    return [(x, pairs[id(x)]) for x in a.nodes if id(x) in pairs]


_LCS_LIMIT = 4_000_000  # cells of the LCS table; beyond it the leftovers stay added/removed


def _lcs(xs: list[Node], ys: list[Node]) -> list[tuple[Node, Node]]:
    """Pairs of equal-op nodes along a longest common subsequence of the two op sequences."""
    ox, oy = [n.op for n in xs], [n.op for n in ys]
    m = len(oy)
    rows = [[0] * (m + 1)]
    for i in range(len(ox)):
        prev, cur, o = rows[-1], [0] * (m + 1), ox[i]
        for j in range(m):
            cur[j + 1] = prev[j] + 1 if o == oy[j] else max(prev[j + 1], cur[j])
        rows.append(cur)
    out, i, j = [], len(ox), m
    while i and j:
        if ox[i - 1] == oy[j - 1] and rows[i][j] == rows[i - 1][j - 1] + 1:
            out.append((xs[i - 1], ys[j - 1]))
            i, j = i - 1, j - 1
        elif rows[i - 1][j] >= rows[i][j - 1]:
            i -= 1
        else:
            j -= 1
    return out[::-1]


def _value_map(a: Graph, b: Graph, pairs) -> dict[int, Value]:
    """id(value of a) -> its partner in b: inputs by position, weights by name, outputs of matched nodes."""
    m: dict[int, Value] = {}
    for x, y in zip(a.inputs, b.inputs):
        m[id(x)] = y
    names = {}
    for c in b.constants:
        for nm in c.names or [c.name]:
            names.setdefault(nm, c)
    for c in a.constants:
        hit = next((names[nm] for nm in (c.names or [c.name]) if nm in names), None)
        if hit is not None:
            m[id(c)] = hit
    for x, y in pairs:
        for vx, vy in zip(x.outputs, y.outputs):
            m[id(vx)] = vy
    return m


def _changes(x: Node, y: Node, vmap: dict[int, Value]) -> dict[str, tuple]:
    ch: dict[str, tuple] = {}
    if x.op != y.op:
        ch["op"] = (x.op, y.op)
    keys = set(x.args) | set(y.args) if x.op == y.op else set(x.args) & set(y.args)  # another op: shared args
    for k in sorted(keys):
        ax, ay = x.args.get(k), y.args.get(k)
        if isinstance(ax, Graph) or isinstance(ay, Graph):
            rc = _region_changes(ax, ay)
            if rc is not None:
                ch[f"region {k}"] = rc
            continue
        if _has_value(ax) or _has_value(ay):
            continue
        if not _same(ax, ay):
            ch[f"attr {k}"] = (ax, ay)
    ins_x = [v for v in x.inputs if is_activation(v)]
    ins_y = [v for v in y.inputs if is_activation(v)]
    if [id(vmap.get(id(v))) for v in ins_x] != [id(v) for v in ins_y]:
        ch["inputs"] = ([_vname(v) for v in ins_x], [_vname(v) for v in ins_y])
    wx = [v for v in x.inputs if v.kind in ("param", "buffer", "constant")]
    wy = [v for v in y.inputs if v.kind in ("param", "buffer", "constant")]
    if [_spec(v) for v in wx] != [_spec(v) for v in wy]:
        ch["weight shapes"] = ([_spec(v) for v in wx], [_spec(v) for v in wy])
    elif not all(_same_tensor(p.const, q.const) for p, q in zip(wx, wy)):
        ch["weights"] = ([v.name for v in wx], "values differ")
    sx, sy = [_spec(v) for v in x.outputs], [_spec(v) for v in y.outputs]
    if sx != sy:
        ch["output"] = (sx, sy)
    return ch


def _region_changes(ra: Any, rb: Any) -> tuple | None:
    """What differs between two regions of matched control-flow nodes, each side as a list (``["%relu op=relu"]``
    against ``["%relu op=gelu"]``): their inputs, outputs and nodes, diffed as graphs; None when nothing does."""
    if not (isinstance(ra, Graph) and isinstance(rb, Graph)):
        return (str(ra) if not isinstance(ra, Graph) else "a region", str(rb) if not isinstance(rb, Graph)
                else "a region")
    d = diff_graphs(ra, rb)
    sa, sb = [], []
    for what, xs, ys in (("inputs", ra.inputs, rb.inputs), ("outputs", ra.outputs, rb.outputs)):
        fx = [_spec(v) if isinstance(v, Value) else repr(v) for v in xs]
        fy = [_spec(v) if isinstance(v, Value) else repr(v) for v in ys]
        if fx != fy:
            sa.append(f"{what} ({', '.join(fx)})")
            sb.append(f"{what} ({', '.join(fy)})")
    sa += [f"%{n.name} {n.op}" for n in d.removed]
    sb += [f"%{n.name} {n.op}" for n in d.added]
    for c in d.changed:
        sa.append(f"%{c.a.name} " + ", ".join(f"{k}={_fmt(x)}" for k, (x, _) in c.changes.items()))
        sb.append(f"%{c.b.name} " + ", ".join(f"{k}={_fmt(y)}" for k, (_, y) in c.changes.items()))
    return (sa, sb) if sa or sb else None


def _numeric(d: Diff, args, kwargs, atol, rtol) -> None:
    from ..backends.ort import run_all

    args = args if isinstance(args, tuple) else (args,)
    va, vb = run_all(d.a, args, kwargs or {}), run_all(d.b, args, kwargs or {})
    outs = []
    for i, (oa, ob) in enumerate(zip(d.a.outputs, d.b.outputs)):
        name = oa.name if isinstance(oa, Value) else str(i)
        ta = va.get(id(oa)) if isinstance(oa, Value) else oa
        tb = vb.get(id(ob)) if isinstance(ob, Value) else ob
        outs.append(compare(name, tb, ta, atol, rtol))
    if len(d.a.outputs) != len(d.b.outputs):
        outs.append(ValueDiff("count", math.inf, 0.0, False,
                              f"{len(d.a.outputs)} outputs in a, {len(d.b.outputs)} in b"))
    d.outputs = outs
    if all(o.ok for o in outs):
        return  # the outputs agree: intermediate differences (a fused batch norm) are not a divergence
    for x, y in d.matched:
        for vx, vy in zip(x.outputs, y.outputs):
            if id(vx) not in va or id(vy) not in vb:
                continue
            r = compare(vx.name, vb[id(vy)], va[id(vx)], atol, rtol)
            if not r.ok:
                d.first_divergence = {"a_node": x.name, "b_node": y.name, "op": x.op, "scope": x.scope.path,
                                      "max_abs": r.max_abs, "note": r.note}
                return


def compare(name: str, got: Any, ref: Any, atol: float, rtol: float) -> ValueDiff:
    """``got`` against ``ref``: tensors by max abs difference (shapes and dtypes must agree), else by ==."""
    if isinstance(ref, torch.Tensor) and isinstance(got, torch.Tensor):
        if tuple(got.shape) != tuple(ref.shape):
            return ValueDiff(name, math.inf, 0.0, False, f"shape {list(ref.shape)} vs {list(got.shape)}")
        if ref.numel() == 0:
            return ValueDiff(name, 0.0, 0.0, True)
        r, g_ = ref.detach().double(), got.detach().double()
        if not (ref.is_floating_point() or ref.is_complex()):
            same = torch.equal(ref, got)
            return ValueDiff(name, 0.0 if same else float((r - g_).abs().max()), float(r.abs().max()), same)
        finite = torch.isfinite(r) & torch.isfinite(g_)
        if not torch.equal(torch.isfinite(r), torch.isfinite(g_)) or not torch.equal(r[~finite], g_[~finite]):
            return ValueDiff(name, math.inf, float(r[finite].abs().max()) if finite.any() else 0.0, False,
                             "non-finite values differ")
        scale = float(r[finite].abs().max()) if finite.any() else 0.0
        err = float((r[finite] - g_[finite]).abs().max()) if finite.any() else 0.0
        return ValueDiff(name, err, scale, err <= atol * max(1.0, scale) + rtol * scale)
    same = _same(ref, got)
    return ValueDiff(name, 0.0 if same else math.inf, 0.0, same, "" if same else f"{ref!r} vs {got!r}")


# ---- helpers ----------------------------------------------------------------------------------------
def _has_value(obj) -> bool:
    from ..ir.graph import iter_values

    return bool(iter_values(obj))


def _same(x, y) -> bool:
    if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
        return isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and _same_tensor(x, y)
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return True
    if isinstance(x, bool) != isinstance(y, bool):
        return False
    if isinstance(x, (list, tuple)) or isinstance(y, (list, tuple)):
        # one spelling of a per-dim argument: (1, 1) and [1, 1] agree, and so do 3 and [3, 3]
        xs = list(x) if isinstance(x, (list, tuple)) else None
        ys = list(y) if isinstance(y, (list, tuple)) else None
        if xs is None:
            xs = [x] * len(ys)
        if ys is None:
            ys = [y] * len(xs)
        return len(xs) == len(ys) and all(_same(p, q) for p, q in zip(xs, ys))
    if isinstance(x, float) or isinstance(y, float):
        if isinstance(x, (int, float)) and isinstance(y, (int, float)):
            return math.isclose(x, y, rel_tol=1e-6, abs_tol=0.0)  # float32 storage rounds eps = 1e-5
    try:
        return bool(x == y)
    except Exception:  # noqa: BLE001 - objects whose == raises or is ambiguous compare by identity
        return x is y


def _same_tensor(x, y) -> bool:
    if x is y:
        return True
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        return x is None and y is None
    if x.shape != y.shape or x.dtype != y.dtype or x.device.type == "meta" or y.device.type == "meta":
        return x.shape == y.shape and x.dtype == y.dtype and x.device.type == y.device.type == "meta"
    return bool(torch.equal(x.detach().cpu(), y.detach().cpu()))


def _spec(v: Value) -> str:
    return str(v.spec)


def _vname(v: Value) -> str:
    return f"%{v.name}"


def _where(n: Node) -> str:
    return n.scope.path if n.scope else "<root>"


def _fmt(x) -> str:
    if isinstance(x, list):
        return "[" + ", ".join(str(i) for i in x) + "]"
    return str(x)


def _jsonable(x):
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    if isinstance(x, (list, tuple)):
        return [_jsonable(i) for i in x]
    return str(x)
