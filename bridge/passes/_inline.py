"""What the replacement passes share: tracing a module or function where it will go, splicing its graph in,
and putting new nodes where the nodes they replace were.

A replacement (``replace_module``'s user module, ``rewrite``'s replacement function) is traced with
``bridge.trace`` (which the verbs ``bridge.rewrite``/``bridge.replace_module`` hand down: passes take graphs and
never import the verb layer) on example tensors shaped like the values it will read (symbolic dims stay symbolic, under
the host graph's names and traced at the host's example sizes), so its nodes have the right shapes. Its graph
is then inlined: its nodes become host nodes (plain registry ops, so ``g.run``, ``to_module`` and ONNX export
work on the result), its weights host constants.
"""
from __future__ import annotations

import re
from typing import Any, Callable

import torch
import torch.nn as nn

from ..errors import BridgeError, TransformError
from ..ir.graph import Graph, Node, Scope, Value, iter_values, map_values
from ..ir.spec import TensorSpec
from ..ops._util import _SYMPY_FUNCS


Tracer = Callable[..., Graph]  # bridge.trace: (model, args, kwargs=None, *, dynamic=None) -> Graph


class FnModule(nn.Module):
    """A module whose forward is ``fn(*xs)``: how a pattern or replacement function is traced."""

    def __init__(self, fn: Callable):
        super().__init__()
        self.fn = fn

    def forward(self, *xs):
        return self.fn(*xs)


_IDENT = re.compile(r"^[A-Za-z_][A-Za-z_0-9]*$")


def example_size(dim: int | str, sizes: dict) -> int:
    """A dim's example size: an int as it is, a symbol its traced size (``g.meta["dim_values"]``, at least 2),
    an expression of symbols (``"2*batch"``, ``"Max(1, batch)"``: the functions FLOP formulas evaluate) at those
    sizes (raises when it cannot be)."""
    if isinstance(dim, int):
        return dim
    if _IDENT.match(dim):
        return max(2, int(sizes.get(dim, 2)))
    return int(eval(dim, {"__builtins__": {}}, {**_SYMPY_FUNCS, **sizes}))  # noqa: S307 - sympy-printed dims


def example_inputs(values: list[Value], g: Graph) -> tuple[tuple, tuple]:
    """Example tensors shaped like ``values`` and the matching ``dynamic=`` (aligned with them)."""
    sizes = g.meta.get("dim_values") or {}
    examples, dynamic = [], []
    for v in values:
        if not isinstance(v.spec, TensorSpec):
            raise TransformError(f"%{v.name} is a {v.spec} value, not a tensor: a replacement's inputs must be "
                                 "tensors")
        try:
            shape = [example_size(dim, sizes) for dim in v.spec.shape]
        except Exception as e:  # noqa: BLE001
            raise TransformError(f"%{v.name}: cannot size {v.spec} for tracing a replacement") from e
        # symbols stay dynamic; an expression of them is traced at its example size, static
        dyn = {d: dim for d, dim in enumerate(v.spec.shape) if isinstance(dim, str) and _IDENT.match(dim)}
        dt = v.spec.dtype
        t = torch.randn(shape, dtype=dt) if dt.is_floating_point or dt.is_complex else torch.zeros(shape, dtype=dt)
        examples.append(t)
        dynamic.append(dyn or None)
    return tuple(examples), tuple(dynamic)


def trace_at(fn_or_module: Any, values: list[Value], g: Graph, what: str, trace: Tracer) -> Graph:
    """``fn_or_module`` traced by ``trace`` (``bridge.trace``, handed down by the verb) on examples shaped like
    ``values`` (see the module doc)."""
    model = fn_or_module if isinstance(fn_or_module, nn.Module) else FnModule(fn_or_module)
    args, dynamic = example_inputs(values, g)
    try:
        with torch.no_grad():
            return trace(model, args, dynamic=dynamic if any(dynamic) else None)
    except BridgeError as e:
        shapes = ", ".join(f"%{v.name}: {v.spec}" for v in values)
        raise TransformError(f"{what} does not trace on inputs like ({shapes}): {e}") from e


def inline(g: Graph, sub: Graph, inputs: list[Value], *, scope: Scope, scope_path: str | None, source: str | None,
           base: str, const_prefix: str, const_cache: dict[int, Value] | None = None,
           own_scope: bool = False) -> tuple[list[Any], list[Node]]:
    """Copy ``sub``'s nodes into ``g`` reading ``inputs``; returns ``sub``'s flat outputs as host values and the
    new nodes (appended: place them with ``place``).

    Node scopes: ``scope`` then, when ``scope_path`` is given, ``sub``'s own module stack under that path; with
    ``own_scope`` (``sub`` is a region of ``g``'s model, its scopes are ``g``'s), a node's own scope where it has one.
    Weights become host constants named ``const_prefix + name`` (so a replacement layer's parameters sit under
    the replaced layer's path), one per tensor across the calls sharing ``const_cache`` (id(tensor) -> host
    constant); values are named ``base_<name>``.
    """
    cache = const_cache if const_cache is not None else {}
    if len(inputs) != len(sub.inputs):
        raise TransformError(f"the replacement takes {len(sub.inputs)} tensors but {len(inputs)} are given")
    vmap: dict[int, Any] = {id(s): h for s, h in zip(sub.inputs, inputs)}

    def get(v: Value) -> Value:
        h = vmap.get(id(v))
        if h is None:  # a weight or constant of the replacement
            h = cache.get(id(v.const))
            if h is None:
                names = [const_prefix + n for n in (v.names or [v.name])]
                h = cache[id(v.const)] = g.add_constant(names[0], v.const, kind=v.kind, names=names)
            vmap[id(v)] = h
        return h

    added = []
    for n in sub.nodes:
        stack = scope.stack
        if own_scope and n.scope:
            stack = n.scope.stack
        elif scope_path is not None:
            stack = stack + tuple((f"{scope_path}.{p}" if p else scope_path, t) for p, t in n.scope.stack)
        new = g.add_node(n.op, map_values(n.args, get), outputs=[(f"{base}_{v.name}", v.spec) for v in n.outputs],
                         out_struct=n.out_struct, scope=Scope(stack), source=source or n.source, target=n.target)
        new.meta = dict(n.meta)
        for old, nv in zip(n.outputs, new.outputs):
            vmap[id(old)] = nv
        added.append(new)
    outs = [get(o) if isinstance(o, Value) else o for o in sub.outputs]
    return outs, added


class Splicer:
    """The one splicing mechanism of the passes that swap nodes for new ones (decompose, replace_module,
    rewrite). New nodes are appended as they are built (``add_node`` at the end is O(1)); ``swap`` moves the
    uses of the replaced value to the new one, erases the replaced nodes and gives the new value the old name
    (``%fc`` is still the layer's output); leaving the ``with Splicer(g)`` block puts each group of new nodes
    where the node it replaced was, in one sweep, and drops the constants nothing reads any more; on an
    error too, so the swaps made before it leave a valid graph."""

    def __init__(self, g: Graph):
        self.g = g
        self.original = list(g.nodes)
        self.placed: dict[Node, list[Node]] = {}
        self.moved: dict[int, Any] = {}  # id(replaced value) -> what replaced it

    def current(self, v: Value) -> Any:
        """``v``, or what replaced it: a later match may read an earlier match's output."""
        return self.moved.get(id(v), v)

    def swap(self, anchor: Node, old: Value, new: Any, added: list[Node], erase: list[Node] | None = None) -> None:
        """``new`` (computed by the appended ``added``) replaces ``old``; ``erase`` (graph order, default
        ``[anchor]``) goes, and ``added`` will stand where ``anchor`` was."""
        name = old.name
        self.g.replace_all_uses(old, new)
        self.moved[id(old)] = new
        for n in reversed(erase or [anchor]):
            self.g.erase_node(n)
        if isinstance(new, Value) and new.producer is not None:
            self.g.rename(new, name)
        self.placed[anchor] = added

    def __enter__(self) -> "Splicer":
        return self

    def __exit__(self, *exc) -> None:
        if self.placed:
            place(self.g, self.original, self.placed)
            self.g.remove_unused_constants()


def place(g: Graph, original: list[Node], placed: dict[Node, list[Node]]) -> None:
    """Put each group of appended nodes just before the node it is keyed by (one linear sweep); nodes of
    ``original`` that were erased drop out."""
    order: list[Node] = []
    seen = set()
    for n in original:
        group = placed.get(n)
        if group:
            order.extend(group)
            seen.update(id(x) for x in group)
        if n.graph is g:
            order.append(n)
            seen.add(id(n))
    order.extend(n for n in g.nodes if id(n) not in seen)
    g.nodes = order


def uses_outside(node: Node, inside: set) -> bool:
    return any(v.meta.get("is_output") or any(u not in inside for u in v.users) for v in node.outputs)


def nonconst_inputs(node: Node) -> list[Value]:
    out, seen = [], set()
    for v in iter_values(node.args):
        if v.const is None and id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out
