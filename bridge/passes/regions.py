"""Passes and regions: how every pass reaches inside control flow, and what the passes do at a region's boundary.

Every registered pass runs inside the regions too (``in_regions``, applied by ``register_pass``): on each region
of each control-flow node, innermost first, as on a graph of its own, then on the graph. A region is closed
(bridge/ir/graph.py), so a pass inside it sees its inputs as inputs and its outputs as graph outputs: a pattern
never matches across the boundary and every region output stays used. A region inherits its host's trace context
(``trace_device``, ``dim_values``) for the passes that read it.

What crosses the boundary is done at the node that owns the regions, with the helpers here:

- ``invariant(node)``: the operands every region reads unchanged on every call (``cond``'s operands, the
  ``additional_inputs`` of ``while_loop`` and ``scan``, ``map``'s extra ``args``) and where they start among each
  region's inputs; ``drop_invariant`` removes one of them and the region inputs it feeds (dce when no region reads
  it, fold once a constant one is copied inside);
- ``prune_outputs(node)``: a ``cond`` output nobody reads (from every branch), a ``while_loop`` carried value
  nobody reads, inside or after the loop (dce);
- ``inline_region(node, key)``: the node replaced by one of its regions spliced in its place (fold, for a
  ``cond`` whose predicate is a constant).
"""
from __future__ import annotations

import functools
from typing import Any, Callable

from ..errors import GraphError
from ..ir.graph import Graph, Node, Value
from ..ops import registry
from ._inline import inline, place

# op -> (the argument holding its invariant operands, where they start among each region's inputs)
_INVARIANT: dict[str, tuple[str, Callable[[Node], int]]] = {
    "cond": ("operands", lambda node: 0),
    "while_loop": ("additional_inputs", lambda node: len(node.args["carried_inputs"])),
    "scan": ("additional_inputs", lambda node: len(node.args["init"]) + len(node.args["xs"])),
    "map": ("args", lambda node: len(node.args["xs"])),
}
_CONTEXT = ("trace_device", "dim_values")  # what a region inherits from its host for the passes


def in_regions(fn: Callable[[Graph], "tuple[Graph, bool]"]) -> Callable[[Graph], "tuple[Graph, bool]"]:
    """``fn`` run on every region of ``g`` (innermost first), then on ``g``; changed when any run changed."""

    @functools.wraps(fn)
    def run(g: Graph) -> tuple[Graph, bool]:
        changed = False
        for node in list(g.nodes):
            for key, region in node.regions:
                for k in _CONTEXT:
                    if k in g.meta and k not in region.meta:
                        region.meta[k] = g.meta[k]
                new, c = run(region)
                if new is not region:
                    node.args[key] = new
                changed |= c
        g, c = fn(g)
        return g, changed or c

    return run


def graphs(g: Graph, where: str = "") -> list[tuple[Graph, str]]:
    """``g`` and every region in it (nested ones too), each with where it is (``""`` for ``g``,
    ``"%cond.true_fn"``, ``"%cond.true_fn/%while_loop.body_fn"``): for the transformations that take arguments
    (replace_op, replace_module, rewrite), which apply to each graph on its own."""
    out = [(g, where)]
    for node in g.nodes:
        for key, region in node.regions:
            out += graphs(region, f"{where}/%{node.name}.{key}" if where else f"%{node.name}.{key}")
    return out


def used(v: Value) -> bool:
    return bool(v._uses) or bool(v.meta.get("is_output"))


def invariant(node: Node) -> tuple[str, int] | None:
    """``(argument name, first region input)`` of the node's invariant operands; None for a node without any (or
    whose regions do not line up with its operands)."""
    entry = _INVARIANT.get(node.op)
    if entry is None or not node.regions:
        return None
    key, start_of = entry
    try:
        operands, start = node.args[key], start_of(node)
    except (KeyError, TypeError):
        return None
    if not isinstance(operands, (list, tuple)):
        return None
    if any(len(r.inputs) != start + len(operands) for _, r in node.regions):
        return None
    return key, start


def drop_invariant(node: Node, j: int) -> None:
    """Remove the ``j``-th invariant operand of ``node`` and the region input it feeds in each region (unused)."""
    key, start = invariant(node)
    operands = list(node.args[key])
    del operands[j]
    node.graph.set_args(node, {**node.args, key: operands})
    for _, region in node.regions:
        _remove_input(region, region.inputs[start + j])


def _remove_input(region: Graph, v: Value) -> None:
    if used(v):
        raise GraphError(f"cannot remove region input %{v.name}: it is still read")
    region.inputs.remove(v)
    region._names.discard(v.name)
    region._changed()


def _drop_output(g: Graph, node: Node, k: int) -> None:
    v = node.outputs.pop(k)
    g._names.discard(v.name)
    node.out_struct = ("tuple", [("leaf", i) for i in range(len(node.outputs))])
    g._changed()


def _drop_region_output(region: Graph, k: int) -> None:
    outs = list(region.outputs)
    del outs[k]
    region.set_outputs(outs, ("tuple", [("leaf", i) for i in range(len(outs))]))


def prune_outputs(node: Node, clean: Callable[[Graph], Any]) -> bool:
    """Drop the outputs of a ``cond`` or ``while_loop`` that nothing reads (see the module doc), running ``clean``
    (dce) on the regions after; at least one output stays (a node nothing reads at all is dce's to erase). True
    when one went."""
    g = node.graph
    if node.op == "cond" and all(r.output_struct[0] == "tuple" for _, r in node.regions):
        dead = [k for k in range(len(node.outputs)) if not used(node.outputs[k])]
        if len(dead) == len(node.outputs):
            dead = dead[1:]
        for k in reversed(dead):
            for _, region in node.regions:
                _drop_region_output(region, k)
            _drop_output(g, node, k)
        if dead:
            for _, region in node.regions:
                clean(region)
        return bool(dead)
    if node.op != "while_loop" or invariant(node) is None:
        return False
    dead = sorted(_dead_carried(node))
    if not dead or len(dead) == len(node.outputs):
        return False
    cond_fn, body_fn = node.args["cond_fn"], node.args["body_fn"]
    carried = list(node.args["carried_inputs"])
    for k in reversed(dead):
        del carried[k]
        _drop_region_output(body_fn, k)
        _drop_output(g, node, k)
    g.set_args(node, {**node.args, "carried_inputs": carried})
    clean(body_fn)  # what computed the dropped values goes: the inputs are unread then
    for k in reversed(dead):
        for region in (cond_fn, body_fn):
            _remove_input(region, region.inputs[k])
    return True


def _dead_carried(node: Node) -> set[int]:
    """The carried values of a ``while_loop`` that nothing reads after the loop, its ``cond_fn`` does not read, and
    its ``body_fn`` reads only (through pure nodes) to compute carried values of the same set."""
    cond_fn, body_fn = node.args["cond_fn"], node.args["body_fn"]
    n = len(node.outputs)
    if len(body_fn.outputs) != n or body_fn.output_struct[0] != "tuple":
        return set()
    dead = {k for k in range(n) if not used(node.outputs[k]) and not used(cond_fn.inputs[k])}
    reach = {k: _reaches(body_fn, body_fn.inputs[k]) for k in dead}
    while True:
        keep = {k for k in dead if not reach[k] <= dead}
        if not keep:
            return dead
        dead -= keep


def _reaches(region: Graph, v: Value) -> set[int]:
    """The output positions of ``region`` that ``v`` flows into; ``{-1}`` too when it flows into a node with an
    effect."""
    seen, out = {id(v)}, set()
    for n in region.nodes:
        if any(id(a) in seen for a in n.inputs):
            seen.update(id(o) for o in n.outputs)
            if has_effect(n):
                out.add(-1)
    out.update(i for i, o in enumerate(region.outputs) if isinstance(o, Value) and id(o) in seen)
    return out


def has_effect(node: Node) -> bool:
    """A call with an effect beyond its outputs (the op's ``effect`` fact: running statistics updated in training
    mode, an opaque call; for a control-flow node, of a node in its regions)."""
    opdef = registry.get(node.op)
    return opdef is None or opdef.has_effect(node)


def inline_region(node: Node, key: str) -> None:
    """Replace ``node`` by its region ``key`` run on its invariant operands (a ``cond`` branch), spliced in its
    place; its nodes keep their scope, or take the node's where they have none, and its outputs the node's
    names."""
    g = node.graph
    region = node.args[key]
    arg, _ = invariant(node)
    original = list(g.nodes)
    outs, added = inline(g, region, list(node.args[arg]), scope=node.scope, scope_path=None, source=node.source,
                         base=node.name, const_prefix="", own_scope=True)
    renames = []
    for old, new in zip(node.outputs, outs):
        if old.meta.get("is_output") and isinstance(new, Value) and (new.kind == "input" or new.meta.get("is_output")):
            new = _identity(g, new, node, added)  # a graph output stays a distinct value
        g.replace_all_uses(old, new)
        if isinstance(new, Value) and new.producer is not None and new.producer in added:
            renames.append((new, old.name))
    g.erase_node(node)
    for new, name in renames:
        g.rename(new, name)
    place(g, original, {node: added})


def _identity(g: Graph, v: Value, node: Node, added: list) -> Value:
    n = g.add_node("identity", {"input": v}, outputs=[(v.name, v.spec)], scope=node.scope, source=node.source)
    added.append(n)
    return n.output


def constant_operand(a: Any) -> bool:
    """An operand fold copies into the regions: a python constant, or a constant tensor that is not a weight or a
    buffer (those stay operands: they are the model's state, its ``state_dict`` and its parameter count)."""
    if isinstance(a, Value):
        return a.is_const and a.kind == "constant"
    return True
