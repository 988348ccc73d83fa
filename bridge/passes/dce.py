"""Dead code elimination: nodes whose outputs nobody uses (and that change nothing) go.

Inside regions too (as every pass). At a control-flow node: an invariant operand no region reads goes with the
region inputs it feeds (for a ``cond``, unread in both branches), and so do a ``cond`` output nothing reads (from
every branch) and a ``while_loop`` carried value read neither by the loop nor after it (bridge/passes/regions.py).
"""
from __future__ import annotations

from ..ir.graph import Graph
from . import register_pass
from .regions import drop_invariant, has_effect, invariant, prune_outputs, used


@register_pass("dce")
def dce(g: Graph) -> tuple[Graph, bool]:
    changed = False
    for node in reversed(list(g.nodes)):
        if any(used(v) for v in node.outputs) or has_effect(node):  # an effect: kept even when unused
            if node.regions:
                changed |= _prune_interface(node)
            continue
        g.erase_node(node)
        changed = True
    return g, changed


def _prune_interface(node) -> bool:
    """The unread outputs and operands of a control-flow node go (see the module doc); its regions are cleaned
    again after (an output dropped may leave its producer dead)."""
    changed = prune_outputs(node, dce)
    inv = invariant(node)
    if inv is not None:
        key, start = inv
        for j in reversed(range(len(node.args[key]))):
            if not any(used(r.inputs[start + j]) for _, r in node.regions):
                drop_invariant(node, j)
                changed = True
    if changed:
        for _, region in node.regions:
            dce(region)
    return changed
