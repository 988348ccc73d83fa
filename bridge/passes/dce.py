"""Dead code elimination: nodes whose outputs nobody uses (and that change nothing) go."""
from __future__ import annotations

from ..ir.graph import Graph
from ..ops import registry
from . import register_pass

def _has_effect(node) -> bool:
    """A call with an effect beyond its outputs (the op's ``effect`` fact: running statistics updated in training
    mode, an opaque call) is kept even when unused."""
    return registry.get(node.op).has_effect(node)


@register_pass("dce")
def dce(g: Graph) -> tuple[Graph, bool]:
    changed = False
    for node in reversed(list(g.nodes)):
        if any(v._uses or v.meta.get("is_output") for v in node.outputs) or _has_effect(node):
            continue
        g.erase_node(node)
        changed = True
    return g, changed
