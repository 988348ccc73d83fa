"""Inference-time removals: dropout (eval) and identity-like ops (identity, detach, a cast to the same dtype,
``contiguous`` of a tensor that already is)."""
from __future__ import annotations

from ..ir.graph import Graph, Value
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
