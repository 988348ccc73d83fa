"""Common subexpression elimination: two pure nodes with the same op and equal arguments compute the same
thing, so the later one's outputs are replaced by the earlier one's and the later node goes.

One walk in topological order with a dict keyed by a hashable signature of ``(op, args)``: Values and
tensors by identity, python constants structurally (with their type, so ``1``, ``1.0`` and ``True`` stay
apart). A node with a constant that cannot be hashed is left alone. Because users are rewritten before
they are reached, chains of duplicates (``relu(x + 1)`` twice) collapse in a single walk. Inside each region
too (as every pass); two control-flow nodes are never merged.
"""
from __future__ import annotations

from typing import Any

import torch

from ..ir.graph import ATOMS, Graph, Node, Value, iter_values
from ..ops import registry
from . import register_pass



class _Unhashable(Exception):
    pass


_FIRST = object()


def pure(node: Node) -> bool:
    """Can two calls of ``node`` with the same arguments be merged (no randomness, no side effect)? The op's
    ``random`` and ``effect`` facts say (dropout and recurrent dropout in training mode, batch norm updating its
    running statistics, random factories, opaque calls); a control-flow node is pure when every node in its
    regions is (its op's facts say so too)."""
    opdef = registry.get(node.op)
    return opdef is not None and opdef.is_pure(node)


_PLAIN = ATOMS - {float}  # hashable, and equal only to equal values of their type (floats: by repr, below)


def _key(a: Any) -> Any:
    t = type(a)
    if t is Value:
        return ("%", id(a))
    if t in _PLAIN:
        return (t, a)
    if isinstance(a, Value):
        return ("%", id(a))
    if isinstance(a, torch.Tensor):
        return ("tensor", id(a))
    if isinstance(a, float):
        return ("float", repr(a))  # 0.0 and -0.0 differ; nan equals nan
    if isinstance(a, (list, tuple)):
        return (type(a).__name__, tuple(_key(x) for x in a))
    if isinstance(a, dict):
        return ("dict", tuple((k, _key(v)) for k, v in a.items()))
    if isinstance(a, slice):
        return ("slice", _key(a.start), _key(a.stop), _key(a.step))
    try:
        hash(a)
    except TypeError as e:
        raise _Unhashable from e
    return (type(a), a)


def signature(node: Node) -> tuple | None:
    """A hashable key equal for nodes that compute the same thing; None when there is none."""
    try:
        return (node.op, len(node.outputs), tuple((k, _key(v)) for k, v in node.args.items()))
    except _Unhashable:
        return None


@register_pass("cse")
def cse(g: Graph) -> tuple[Graph, bool]:
    changed = False
    seen: dict[tuple, Node] = {}
    # the op and the Values it reads: a node no earlier node shares them with has no duplicate, and its full
    # signature (constants walked and hashed) is made only once a second node shares them
    alone: dict[tuple, Node | None] = {}
    for node in list(g.nodes):
        if node.regions or not pure(node):  # control flow is never merged (inside its regions, cse runs too)
            continue
        reads = (node.op, len(node.outputs), tuple(map(id, iter_values(node.args))))
        earlier = alone.get(reads, _FIRST)
        if earlier is _FIRST:
            alone[reads] = node
            continue
        if earlier is not None:  # the first node reading them: its signature now
            alone[reads] = None
            sig = signature(earlier)
            if sig is not None:
                try:
                    seen.setdefault(sig, earlier)
                except TypeError:
                    pass
        sig = signature(node)
        if sig is None:
            continue
        try:
            first = seen.setdefault(sig, node)
        except TypeError:  # a constant whose __hash__ lies (hashable container of unhashables)
            continue
        if first is node:
            continue
        if any(v.meta.get("is_output") for v in node.outputs) and \
                any(v.meta.get("is_output") for v in first.outputs):
            continue  # keep graph outputs distinct values
        for old, new in zip(node.outputs, first.outputs):
            g.replace_all_uses(old, new)
        g.erase_node(node)
        changed = True
    return g, changed
