"""Dead code elimination: nodes whose outputs nobody uses (and that change nothing) go."""
from __future__ import annotations

from ..ir.graph import Graph
from . import register_pass

# ops whose call has an effect beyond their outputs: kept even when unused
_EFFECTFUL = {"batch_norm", "instance_norm"}  # training mode updates running stats in place


def _has_effect(node) -> bool:
    if node.op == "opaque":
        return True
    if node.op in _EFFECTFUL:
        return bool(node.args.get("training") or node.args.get("use_input_stats") and
                    node.args.get("running_mean") is not None)
    return False


@register_pass("dce")
def dce(g: Graph) -> tuple[Graph, bool]:
    changed = False
    for node in reversed(list(g.nodes)):
        if any(v._uses or v.meta.get("is_output") for v in node.outputs) or _has_effect(node):
            continue
        g.erase_node(node)
        changed = True
    return g, changed
