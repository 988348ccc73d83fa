"""Pattern rewriting: ``bridge.rewrite(g, pattern, replacement)`` with both written as small torch functions.

    report = bridge.rewrite(g, lambda x: torch.relu(x) * 2, lambda x: F.gelu(x) * 2)
    print(report)            # every match: the nodes it covered, their module scopes, what the inputs bound

How it works:

- The pattern is traced once with ``bridge.trace`` on ``inputs`` (example tensors; by default one float32
  tensor of shape (2, 4) per parameter of the function). Pattern inputs are wildcards: each binds one tensor
  value of the graph (the same input twice must bind the same value). Shapes do not take part in matching,
  but shape-derived arguments recorded by the trace do (a ``view`` size, a reduction dim): give ``inputs`` of
  the right shape for such patterns.
- A match is a set of graph nodes with the pattern's ops and dataflow: arguments that are pattern nodes'
  outputs must be the matched nodes' outputs, python constants must be equal (``2`` matches ``2.0``; bools
  only bools), constant tensors must be equal. ``add``/``mul`` match with their two tensor operands either
  way round (``commutative=False`` turns that off). Nodes inside a match other than its output must not be
  used outside it. Matches do not overlap; they are taken in graph order. They are found inside each region of a
  control-flow node too (``Match.region`` says which), never across a region's boundary.
- The replacement is traced at each match on inputs shaped like the bound values (once per distinct input
  shape) and inlined where the match was; its nodes take the scope of the matched output node. The graph is
  changed in place.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..ops import registry
from ..ops.layers import equal_constants
from ..errors import TransformError
from ..ir.graph import Graph, Node, Value
from ..passes.dce import dce
from ._inline import FnModule, Splicer, Tracer, inline, trace_at, uses_outside
from .regions import graphs


@dataclass
class Match:
    """One match: ``output`` is the matched output node's value name, ``nodes`` every matched node (graph
    order), ``scopes`` their module scopes, ``bindings`` pattern input name -> graph value name."""

    output: str
    nodes: list[str]
    scopes: list[str]
    bindings: dict[str, str]
    region: str = ""  # the region it is in ("%cond.true_fn"), "" for the graph itself

    def __str__(self) -> str:
        binds = ", ".join(f"{k}=%{v}" for k, v in self.bindings.items())
        where = "; ".join(dict.fromkeys(self.scopes)) or "<root>"
        inside = f" (region {self.region})" if self.region else ""
        return f"%{self.output}: {' '.join('%' + n for n in self.nodes)} ({binds}) in {where}{inside}"


@dataclass
class RewriteReport:
    """What ``rewrite`` did: ``graph`` (changed in place) and every ``Match``."""

    graph: Graph
    matches: list[Match] = field(default_factory=list)
    pattern: str = ""

    def __len__(self) -> int:
        return len(self.matches)

    def __iter__(self):
        return iter(self.matches)

    def __str__(self) -> str:
        head = f"{len(self.matches)} match{'es' if len(self.matches) != 1 else ''} of {self.pattern}"
        return "\n".join([head] + ["  " + str(m) for m in self.matches])


def trace_pattern(pattern: Callable, inputs: tuple | None, trace: Tracer) -> Graph:
    """The pattern's graph (traced by ``trace`` on ``inputs``, default one (2, 4) float32 tensor per parameter),
    dead code removed."""
    if inputs is None:
        try:
            n = len([p for p in inspect.signature(pattern).parameters.values()
                     if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)])
        except (TypeError, ValueError) as e:
            raise TransformError(f"cannot read the parameters of pattern {pattern!r}; pass inputs=") from e
        gen = torch.Generator().manual_seed(0)
        inputs = tuple(torch.randn(2, 4, generator=gen) for _ in range(n))
    elif not isinstance(inputs, tuple):
        inputs = (inputs,)
    try:
        with torch.no_grad():
            p = trace(FnModule(pattern), inputs)
    except Exception as e:  # noqa: BLE001
        raise TransformError(f"the pattern does not trace on inputs of shapes {[tuple(t.shape) for t in inputs]}: "
                             f"{e}; pass inputs= shaped for it") from e
    dce(p)
    if len(p.outputs) != 1 or not isinstance(p.outputs[0], Value) or p.outputs[0].producer is None:
        raise TransformError(f"a pattern must compute one tensor from its inputs; this one returns "
                             f"{p.output_description()}")
    used = {id(v) for n in p.nodes for v in n.inputs}
    unused = [v.name for v in p.inputs if id(v) not in used]
    if unused:
        raise TransformError(f"pattern inputs {unused} are not used by the pattern")
    return p


class _State:
    __slots__ = ("nodes", "values", "taken")

    def __init__(self, taken: set):
        self.nodes: dict[Node, Node] = {}    # pattern node -> graph node
        self.values: dict[int, Value] = {}   # id(pattern input) -> graph value
        self.taken = taken                   # graph nodes already in a match

    def copy(self) -> "_State":
        s = _State(self.taken)
        s.nodes, s.values = dict(self.nodes), dict(self.values)
        return s


class Matcher:
    """Finds the matches of a traced pattern graph in a graph (see the module doc)."""

    def __init__(self, pattern: Graph, commutative: bool = True):
        self.p = pattern
        self.anchor = pattern.outputs[0].producer
        self.wild = {id(v) for v in pattern.inputs}
        self.commutative = commutative

    def find(self, g: Graph) -> list[_State]:
        taken: set = set()
        found = []
        for h in g.nodes:
            if h.op != self.anchor.op or h in taken:
                continue
            st = self._node(self.anchor, h, _State(taken))
            if st is None or len(st.nodes) != len(self.p.nodes):
                continue
            inside = set(st.nodes.values())
            if any(uses_outside(n, inside) for n in inside if n is not h):
                continue
            taken.update(inside)
            found.append(st)
        return found

    def _node(self, pn: Node, hn: Node, st: _State) -> _State | None:
        if pn in st.nodes:
            return st if st.nodes[pn] is hn else None
        if hn in st.taken or hn in st.nodes.values() or pn.op != hn.op or len(pn.outputs) != len(hn.outputs) or \
                set(pn.args) != set(hn.args):
            return None
        st = st.copy()
        st.nodes[pn] = hn
        orders = [list(pn.args)]
        first = list(pn.args)[:2]
        if self.commutative and len(first) == 2 and registry.get(pn.op).is_commutative(pn) and \
                all(isinstance(pn.args[k], Value) for k in first):  # a + b == b + a (add with alpha 1, mul)
            orders.append(first[::-1] + [k for k in pn.args if k not in first])
        for keys in orders:
            trial = st
            for pk, hk in zip(list(pn.args), keys):
                trial = self._arg(pn.args[pk], hn.args[hk], trial)
                if trial is None:
                    break
            if trial is not None:
                return trial
        return None

    def _arg(self, pa: Any, ha: Any, st: _State) -> _State | None:
        if isinstance(pa, Value):
            if not isinstance(ha, Value):
                return None
            if id(pa) in self.wild:
                bound = st.values.get(id(pa))
                if bound is not None:
                    return st if bound is ha else None
                if not ha.is_tensor:
                    return None
                st = st.copy()
                st.values[id(pa)] = ha
                return st
            if pa.const is not None:
                c = ha.const
                ok = c is not None and c.dtype == pa.const.dtype and c.shape == pa.const.shape and \
                    bool(torch.equal(c, pa.const))
                return st if ok else None
            if pa.producer is None or ha.producer is None:
                return None
            if pa.producer.outputs.index(pa) != ha.producer.outputs.index(ha):
                return None
            return self._node(pa.producer, ha.producer, st)
        if isinstance(ha, Value):
            return None
        if isinstance(pa, (list, tuple)):
            if not isinstance(ha, (list, tuple)) or len(pa) != len(ha):
                return None
            for a, b in zip(pa, ha):
                st = self._arg(a, b, st)
                if st is None:
                    return None
            return st
        if isinstance(pa, dict):
            if not isinstance(ha, dict) or pa.keys() != ha.keys():
                return None
            for k in pa:
                st = self._arg(pa[k], ha[k], st)
                if st is None:
                    return None
            return st
        return st if equal_constants(pa, ha) else None


def rewrite(g: Graph, pattern: Callable, replacement: Callable, *, trace: Tracer, inputs: tuple | None = None,
            commutative: bool = True) -> RewriteReport:
    """Replace every match of ``pattern`` in ``g`` by ``replacement`` (both torch functions of the same
    tensors, in the same order, traced by ``trace``: ``bridge.rewrite`` hands down ``bridge.trace``); returns a
    ``RewriteReport`` of every match. See the module doc."""
    p = trace_pattern(pattern, inputs, trace)
    matcher = Matcher(p, commutative)
    report = RewriteReport(g, pattern=_describe(pattern, p))
    cache: dict[tuple, Graph] = {}  # the replacement traced, by the shapes it is bound to
    for host, where in graphs(g):  # the graph, then each region on its own: no match crosses a region's boundary
        _rewrite_in(host, where, g, matcher, replacement, trace, report, cache)
    return report


def _rewrite_in(host: Graph, where: str, g: Graph, matcher: Matcher, replacement: Callable, trace: Tracer,
                report: RewriteReport, cache: dict) -> None:
    """The matches in ``host`` (``g`` or a region of it, at ``where``) replaced; ``g`` sizes symbolic dims."""
    p = matcher.p
    found = matcher.find(host)
    if not found:
        return
    with Splicer(host) as splice:
        order = {n: i for i, n in enumerate(splice.original)}
        consts: dict[int, Value] = {}  # the replacement's constant tensors, one graph constant each
        for st in found:
            anchor = st.nodes[matcher.anchor]
            matched = sorted(st.nodes.values(), key=order.__getitem__)
            bound = [splice.current(st.values[id(v)]) for v in p.inputs]  # an earlier match's output: its new value
            report.matches.append(Match(anchor.outputs[0].name, [n.name for n in matched],
                                        [str(n.scope) for n in matched],
                                        {v.name: b.name for v, b in zip(p.inputs, bound)}, where))
            key = tuple((b.spec.shape, b.spec.dtype) for b in bound)
            sub = cache.get(key)
            if sub is None:
                sub = cache[key] = trace_at(replacement, bound, g, "the replacement", trace)
                if len(sub.outputs) != 1 or sub.output_struct != ("leaf", 0):
                    raise TransformError(f"the replacement must return one tensor, as the pattern does; it returns "
                                         f"{sub.output_description()}")
            old = anchor.outputs[matcher.anchor.outputs.index(p.outputs[0])]
            out = sub.outputs[0]  # checked before this match adds anything
            if isinstance(out, Value):
                spec = bound[sub.inputs.index(out)].spec if out in sub.inputs else out.spec
                if isinstance(old.spec, type(spec)) and spec != old.spec:
                    raise TransformError(f"the replacement gives {spec} at {anchor.describe()}, where the pattern "
                                         f"gave {old.spec}")
            (y,), added = inline(host, sub, bound, scope=anchor.scope, scope_path=None, source=anchor.source,
                                 base=old.name, const_prefix=f"{old.name}_", const_cache=consts)
            splice.swap(anchor, old, y, added, erase=matched)


def _describe(fn: Callable, p: Graph) -> str:
    ops = " -> ".join(n.op for n in p.nodes)
    return f"{getattr(fn, '__name__', 'pattern')} ({ops})"
