"""Sized recording: symbolic dims from the record frontend, which bakes every size the forward reads.

``bridge.trace(model, args, dynamic=..., frontend="record")`` records the forward at several sizes of the symbolic
dims: the example's, a few of bridge's own, and any the caller names (``check_sizes``), each on fake tensors where
they serve (no compute: a recording costs the same at any size). The recordings must be one graph but for sizes:
the same ops on the same values, with the same attributes and constants. Each size that differs between them (an
int argument of a node, a dim of a value) is fitted as a polynomial in the symbols with integer coefficients, one
or two terms of degree up to three (two past four symbols) and a constant (``batch*sequence``,
``past_sequence+sequence``, ``sequence-1``): the fewest terms that hold at every size recorded, and the only such
fit. The example's graph is kept, with those sizes computed at run time from the inputs' dims (``size`` nodes and
int arithmetic; shape ops in ONNX), so the graph holds at any size.

Where the recordings differ otherwise (python branched on a size, a loop ran a size's number of times, a constant
holds a size) or a size fits no such polynomial, the recording cannot stand for other sizes and refuses
(``Refused``, naming the node); ``frontend="export"`` keeps such code symbolic or says why it cannot. A branch
whose condition flips only at sizes no recording took is not seen: ``check_sizes`` names sizes that matter to
the caller (``bridge.export_decoder`` checks a prefill with no past and a one-token decode step).

A dim of ``dynamic=`` may be an expression of other symbols (``{1: "past_sequence+sequence"}``): its size follows
from theirs in every recording, and the graph's input says so; torch.export takes related dims as independent.
"""
from __future__ import annotations

import copy
import itertools
import random
import re
from fractions import Fraction
from typing import Any, Callable

import torch

from ..errors import BridgeError
from ..ir.graph import Graph, Node, Value
from ..ir.spec import ScalarSpec, TensorSpec
from ..ops import registry
from .record import Refused, trace_record
from .signature import InputBinding

_NAME = re.compile(r"[A-Za-z_]\w*")
_SYNTHETIC_RANGE = (2, 9)  # sizes of bridge's own recordings: small, so a recording that must run for real is cheap
_MAX_DEGREE = 3


class Dims:
    """The symbols of ``dynamic=`` and each input dim's expression over them (sympy), with the example's sizes."""

    def __init__(self, names: list[str], examples: list, dynamic: dict[str, dict[int, str]]):
        import sympy
        from sympy.parsing.sympy_parser import parse_expr

        self.symbols: list[str] = []
        for dims in dynamic.values():
            for text in dims.values():
                for s in _NAME.findall(text):
                    if s not in self.symbols:
                        self.symbols.append(s)
        self.sym = {s: sympy.Symbol(s, integer=True, nonnegative=True) for s in self.symbols}
        self.exprs: dict[tuple[str, int], Any] = {}
        for name, dims in dynamic.items():
            for d, text in dims.items():
                try:
                    expr = parse_expr(text, local_dict=dict(self.sym), evaluate=True)
                except Exception as e:  # noqa: BLE001 - sympy's parser raises many kinds
                    raise BridgeError(f"dynamic= gives dim {d} of {name!r} as {text!r}, which is neither a symbol nor "
                                      f"an expression of symbols ({type(e).__name__})") from e
                self.exprs[(name, d)] = expr
        self.sources: dict[str, tuple[str, int]] = {}  # symbol -> the first input dim it sizes by itself
        for (name, d), expr in self.exprs.items():
            if expr.is_Symbol and str(expr) not in self.sources:
                self.sources[str(expr)] = (name, d)
        alone = [s for s in self.symbols if s not in self.sources]
        if alone:
            raise BridgeError(f"dynamic= uses {alone} only inside expressions: each symbol must size some input dim "
                              "by itself, where the graph reads it")
        by_name = dict(zip(names, examples))
        self.example = {s: int(by_name[n].shape[d]) for s, (n, d) in self.sources.items()}
        for (name, d), expr in self.exprs.items():
            want = self.size(expr, self.example)
            if int(by_name[name].shape[d]) != want:
                raise BridgeError(f"dim {d} of {name!r} is {int(by_name[name].shape[d])} in the example, but "
                                  f"dynamic= says it is {dim_text(expr)} = {want}")

    def size(self, expr, sizes: dict[str, int]) -> int:
        if expr.is_Symbol:
            return sizes[str(expr)]
        return int(expr.subs({self.sym[s]: n for s, n in sizes.items()}))

    def runs(self, check_sizes=()) -> list[dict[str, int]]:
        """Sizes to record at: the example's first, then bridge's own, then ``check_sizes``."""
        checks = []
        for c in check_sizes:
            if set(c) != set(self.symbols):
                raise BridgeError(f"check_sizes gives {sorted(c)}; it must size each of {self.symbols}")
            checks.append({s: int(c[s]) for s in self.symbols})
        n = max(2, 3 - len(checks))  # four recordings at least: three unknowns of a fit and one to check it
        rng = random.Random(len(self.symbols))
        low, high = _SYNTHETIC_RANGE
        high = max(high, low + 2 * len(self.symbols))  # room for every symbol to take its own size
        out, seen = [dict(self.example)], {tuple(self.example.values())}
        while len(out) < 1 + n:
            run = {s: rng.randint(low, high) for s in self.symbols}
            key = tuple(run.values())
            if key not in seen and len(set(key)) == len(key):  # symbols of one run take distinct sizes
                seen.add(key)
                out.append(run)
        return out + checks

    def resized(self, binding: InputBinding, sizes: dict[str, int]) -> InputBinding:
        """``binding`` with its examples at ``sizes``: each dynamic dim cut, or tiled and cut (the values stay the
        example's kind: token ids in range, masks of ones)."""
        out = copy.copy(binding)
        out.examples = []
        for name, t in zip(binding.names, binding.examples):
            for (n, d), expr in self.exprs.items():
                if n == name:
                    t = _resize(t, d, self.size(expr, sizes))
            out.examples.append(t)
        return out


def _resize(t: torch.Tensor, d: int, n: int) -> torch.Tensor:
    have = t.shape[d]
    if n > have:
        reps = [1] * t.dim()
        reps[d] = -(-n // have)
        t = t.repeat(*reps)
    return t.narrow(d, 0, n).clone()


def dim_text(expr) -> str:
    """A dim as bridge writes symbolic dims (sympy's printing, without spaces: ``past_sequence+sequence``)."""
    return str(expr).replace(" ", "")


def trace_sized(model: torch.nn.Module, binding: InputBinding, dynamic: dict[str, dict[int, str]], leaf_modules=(),
                check_sizes=(), between: Callable[[], None] = lambda: None) -> Graph:
    """A Graph with ``dynamic``'s symbolic dims from recordings of ``model`` at several sizes (see the module doc).
    ``between``: called after each recording (the caller puts back what a forward stored in the model)."""
    dims = Dims(binding.names, binding.examples, dynamic)
    runs = dims.runs(check_sizes)
    graphs = []
    for i, sizes in enumerate(runs):
        try:
            g = trace_record(model, binding if i == 0 else dims.resized(binding, sizes), leaf_modules)
        finally:
            between()
        if graphs:  # another path: no need to record at the sizes left
            _same_ops(graphs[0], g)
        graphs.append(g)
    g = _Fit(dims, runs, graphs).graph()
    g.meta["record_sizes"] = runs
    return g


# ---- fitting sizes ------------------------------------------------------------------------------------------
class _Fit:
    """Graph 0 made symbolic by comparing it with the others, value by value."""

    def __init__(self, dims: Dims, runs: list[dict[str, int]], graphs: list[Graph]):
        self.dims, self.graphs = dims, graphs
        self.points = [tuple(r[s] for s in dims.symbols) for r in runs]
        self.runs = runs
        self.memo: dict[tuple, Any] = {}
        self.same: dict[int, Value] = {}  # id of a value of a later recording -> graph 0's
        self.g0 = graphs[0] if graphs else None
        self.sizes: dict[Any, Value] = {}  # expression -> graph 0's Value computing it
        self.made: list[Node] = []  # the nodes computing them
        n = len(dims.symbols)
        degree = _MAX_DEGREE if n <= 4 else 2  # the pairs to try grow as the square of the monomials
        self.monomials = [m for deg in range(1, degree + 1)
                          for m in itertools.combinations_with_replacement(range(n), deg)]
        self.columns = {m: [_mono(m, p) for p in self.points] for m in self.monomials}

    # -- the polynomial of a size seen at every recording --
    def fit(self, values: tuple[int, ...], where: str):
        hit = self.memo.get(values)
        if hit is None:
            hit = self.memo[values] = self._fit(values)
        if isinstance(hit, str):
            raise Refused(f"{where}: {hit}")
        return hit

    def _fit(self, values):
        import sympy

        if len(set(values)) == 1:
            return sympy.Integer(values[0])
        sizes = ", ".join(f"{v} at {self._say(r)}" for v, r in zip(values, self.runs))
        for terms in (1, 2):
            found = []
            for ms in itertools.combinations(self.monomials, terms):
                cols = [self.columns[m] for m in ms]
                coef = _solve(cols, values)
                if coef is not None:
                    found.append((ms, coef))
            if len(found) > 1:
                return (f"a size ({sizes}) fits {len(found)} polynomials of the symbols alike: record at more sizes "
                        "(check_sizes=) to tell them apart")
            if found:
                ms, coef = found[0]
                expr = sympy.Integer(coef[-1])
                for m, c in zip(ms, coef):
                    expr += c * sympy.Mul(*[self.dims.sym[self.dims.symbols[i]] for i in m])
                return expr
        return f"a size ({sizes}) is no polynomial of the symbols with one or two terms"

    def _say(self, run: dict[str, int]) -> str:
        return ", ".join(f"{k}={v}" for k, v in run.items())

    # -- graph 0, symbolic --
    def graph(self) -> Graph:
        g0, others = self.g0, self.graphs[1:]  # the same ops as g0: trace_sized checks each as it is recorded
        for g in others:
            for a, b in zip(g0.inputs, g.inputs):
                self.same[id(b)] = a
            for a, b in zip(g0.constants, g.constants):
                self._constant(a, b)
        for v in g0.inputs:  # the inputs' specs say what dynamic= said
            if isinstance(v.spec, TensorSpec):
                shape = list(v.spec.shape)
                for (name, d), expr in self.dims.exprs.items():
                    if name == v.name:
                        shape[d] = dim_text(expr)
                v.spec = TensorSpec(tuple(shape), v.spec.dtype)
        new_args: list[tuple[Node, dict]] = []
        peer_nodes = [g.nodes for g in others]
        for i, node in enumerate(list(g0.nodes)):  # sizes' nodes are added as it goes
            peers = [nodes[i] for nodes in peer_nodes]
            where = f"{node.describe()}{f' at {node.source}' if node.source else ''}"
            for p in peers:
                if p.op != node.op or len(p.outputs) != len(node.outputs) or p.out_struct != node.out_struct or \
                        node.regions:
                    raise Refused(f"the recordings at other sizes differ at {where}: python took another path "
                                  f"(a branch or loop on a size): {p.describe()} there")
            args = self._args(node.args, [p.args for p in peers], where)
            if args is not node.args:
                new_args.append((node, args))
            for k, v in enumerate(node.outputs):
                for p in peers:
                    self.same[id(p.outputs[k])] = v
                v.spec = self._spec(v, [p.outputs[k] for p in peers], where)
        for g in others:
            if len(g.outputs) != len(g0.outputs) or g.output_struct != g0.output_struct:
                raise Refused("the recordings at other sizes return other outputs")
        for k, o in enumerate(g0.outputs):
            for g in others:
                b = g.outputs[k]
                if isinstance(o, Value) != isinstance(b, Value) or (
                        isinstance(o, Value) and self.same.get(id(b)) is not o) or (
                        not isinstance(o, Value) and not _equal(o, b)):
                    raise Refused(f"output {k} differs between the recordings at other sizes")
        for node, args in new_args:
            g0.set_args(node, args)
        if self.made:  # the sizes' nodes read only the inputs' dims: first
            rest = [n for n in g0.nodes if n not in set(self.made)]
            g0.nodes = self.made + rest
        return g0.check()

    def _constant(self, a: Value, b: Value) -> None:
        if a.kind != b.kind or a.spec != b.spec:
            raise Refused(f"constant %{a.name} differs between the recordings at other sizes: it holds a size")
        if a.kind == "constant" and a is not b:
            ta, tb = a.const, b.const
            if not (ta.device.type == "meta" or tb.device.type == "meta" or _fake(ta) or _fake(tb)) and \
                    not torch.equal(ta, tb):
                raise Refused(f"constant %{a.name} differs between the recordings at other sizes: it holds a size")
        self.same[id(b)] = a

    def _spec(self, v: Value, peers: list[Value], where: str):
        spec = v.spec
        if isinstance(spec, TensorSpec):
            shapes = [p.spec.shape if isinstance(p.spec, TensorSpec) else None for p in peers]
            if any(s is None or len(s) != len(spec.shape) for s in shapes) or \
                    any(p.spec.dtype != spec.dtype for p in peers):
                raise Refused(f"%{v.name} of {where} has another rank or dtype at other sizes")
            out = []
            for d, n in enumerate(spec.shape):
                seen = (n, *(s[d] for s in shapes))
                if not all(isinstance(x, int) for x in seen):
                    raise Refused(f"%{v.name} of {where} has a symbolic dim in a recording")
                expr = self.fit(seen, f"dim {d} of %{v.name} ({where})")
                out.append(int(expr) if expr.is_Integer else dim_text(expr))
            return TensorSpec(tuple(out), spec.dtype)
        if any(p.spec != spec for p in peers):
            raise Refused(f"%{v.name} of {where} differs at other sizes")
        return spec

    def _args(self, a, peers: list, where: str):
        """``a`` with each int that differs between the recordings replaced by the Value computing it; ``a``
        itself when nothing changed."""
        if isinstance(a, Value):
            for p in peers:
                if not isinstance(p, Value) or self.same.get(id(p)) is not a:
                    raise Refused(f"{where} reads other values in the recordings at other sizes")
            return a
        if isinstance(a, bool) or a is None or isinstance(a, (str, torch.dtype, torch.device)):
            if any(type(p) is not type(a) or p != a for p in peers):
                raise Refused(f"{where} has other arguments at other sizes ({a!r})")
            return a
        if isinstance(a, int):
            if any(type(p) is not int for p in peers):
                raise Refused(f"{where} has other arguments at other sizes ({a!r})")
            seen = (a, *peers)
            if len(set(seen)) == 1:
                return a
            expr = self.fit(seen, f"an argument of {where}")
            return int(expr) if expr.is_Integer else self._value(expr)
        if isinstance(a, (list, tuple)):
            if any(type(p) is not type(a) or len(p) != len(a) for p in peers):
                raise Refused(f"{where} has other arguments at other sizes")
            items = [self._args(x, [p[k] for p in peers], where) for k, x in enumerate(a)]
            if all(x is y for x, y in zip(items, a)):
                return a
            return type(a)(*items) if hasattr(a, "_fields") else type(a)(items)
        if isinstance(a, dict):
            if any(not isinstance(p, dict) or p.keys() != a.keys() for p in peers):
                raise Refused(f"{where} has other arguments at other sizes")
            items = {k: self._args(x, [p[k] for p in peers], where) for k, x in a.items()}
            return a if all(items[k] is a[k] for k in a) else items
        if isinstance(a, slice):
            if any(not isinstance(p, slice) for p in peers):
                raise Refused(f"{where} has other arguments at other sizes")
            return slice(*(self._args(getattr(a, k), [getattr(p, k) for p in peers], where)
                           for k in ("start", "stop", "step")))
        if isinstance(a, float):
            if any(not _equal(p, a) for p in peers):
                raise Refused(f"{where} has an argument that differs at other sizes ({a!r}): a number computed "
                              "from a size")
            return a
        if any(not _equal(p, a) for p in peers):
            raise Refused(f"{where} has an argument that differs at other sizes ({type(a).__name__})")
        return a

    # -- sizes computed at run time --
    def _value(self, expr) -> Value:
        """The Value of graph 0 computing ``expr`` from the inputs' dims (made once per expression)."""
        v = self.sizes.get(expr)
        if v is not None:
            return v
        if expr.is_Symbol:
            name, d = self.dims.sources[str(expr)]
            x = next(i for i in self.g0.inputs if i.name == name)
            v = self._node("size", {"input": x, "dim": d}, f"size_{expr}", expr)
        elif expr.is_Add or expr.is_Mul:
            op = "add" if expr.is_Add else "mul"
            const, rest = expr.as_coeff_Add() if expr.is_Add else expr.as_coeff_Mul()
            parts = rest.as_ordered_terms() if expr.is_Add else rest.as_ordered_factors()
            v = self._operand(parts[0])
            for p in parts[1:]:
                v = self._node(op, {"input": v, "other": self._operand(p)}, op, None)
            if const != (0 if expr.is_Add else 1):
                v = self._node(op, {"input": v, "other": int(const)}, op, None)
            v.spec = ScalarSpec(int, dim_text(expr))
        elif expr.is_Pow:
            base, n = self._operand(expr.base), int(expr.exp)
            v = base
            for _ in range(n - 1):
                v = self._node("mul", {"input": v, "other": base}, "mul", None)
            v.spec = ScalarSpec(int, dim_text(expr))
        else:
            raise Refused(f"a size {dim_text(expr)} bridge cannot compute")
        self.sizes[expr] = v
        return v

    def _operand(self, expr):
        return int(expr) if expr.is_Integer else self._value(expr)

    def _node(self, op: str, args: dict, name: str, expr) -> Value:
        spec = ScalarSpec(int, dim_text(expr) if expr is not None else None)
        node = self.g0.add_node(op, registry.get(op).bind((), args), outputs=[(f"sym_{name}", spec)])
        self.made.append(node)
        return node.output


def _same_ops(g0: Graph, g: Graph) -> None:
    """Refuse a recording whose inputs, constants or ops (in order) are not graph 0's: python took another path."""
    if len(g.inputs) == len(g0.inputs) and len(g.constants) == len(g0.constants) and len(g.nodes) == len(g0.nodes) \
            and all(a.op == b.op for a, b in zip(g0.nodes, g.nodes)):
        return
    for a, b in zip(g0.nodes, g.nodes):
        if a.op != b.op:
            raise Refused(f"the recordings at other sizes differ at {a.describe()}"
                          f"{f' at {a.source}' if a.source else ''}: python took another path (a branch or loop on "
                          f"a size): {b.describe()} there")
    raise Refused(f"the recordings at other sizes have {len(g.nodes)} nodes, not {len(g0.nodes)}: python took "
                  "another path (a loop over a size)")


def _mono(m: tuple[int, ...], point: tuple[int, ...]) -> int:
    out = 1
    for i in m:
        out *= point[i]
    return out


def _solve(cols: list[list[int]], values: tuple[int, ...]) -> list[int] | None:
    """Integer ``c`` with ``sum(c[j] * cols[j][i]) + c[-1] == values[i]`` at every point ``i``, when exactly one
    exists (else None): Gaussian elimination over fractions."""
    k = len(cols) + 1
    rows = [[Fraction(c[i]) for c in cols] + [Fraction(1), Fraction(values[i])] for i in range(len(values))]
    r = 0
    for c in range(k):
        p = next((i for i in range(r, len(rows)) if rows[i][c] != 0), None)
        if p is None:
            return None  # a column the points cannot tell from the others: not one solution
        rows[r], rows[p] = rows[p], rows[r]
        piv = rows[r][c]
        rows[r] = [x / piv for x in rows[r]]
        for i in range(len(rows)):
            if i != r and rows[i][c] != 0:
                f = rows[i][c]
                rows[i] = [x - f * y for x, y in zip(rows[i], rows[r])]
        r += 1
    if any(row[-1] != 0 for row in rows[r:]):  # a point the solution misses
        return None
    coef = [rows[i][-1] for i in range(k)]
    if any(c.denominator != 1 for c in coef) or any(c == 0 for c in coef[:-1]):
        return None
    return [int(c) for c in coef]


def _fake(t) -> bool:
    from torch._subclasses.fake_tensor import FakeTensor

    return isinstance(t, FakeTensor)


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and \
            a.dtype == b.dtype and (_fake(a) or _fake(b) or torch.equal(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (a != a and b != b)
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # noqa: BLE001 - an object whose == is not a bool
        return a is b

