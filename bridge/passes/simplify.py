"""Inference-time removals: dropout (eval) and identity-like ops."""
from __future__ import annotations

from ..ir.graph import Graph, Value
from . import register_pass


def _forward(g: Graph, node, src) -> None:
    out = node.outputs[0]
    if out.meta.get("is_output") and isinstance(src, Value) and (src.kind == "input" or src.meta.get("is_output")):
        return  # keep it: an output must stay a distinct value
    g.replace_all_uses(out, src)
    g.erase_node(node)


@register_pass("remove_dropout")
def remove_dropout(g: Graph) -> tuple[Graph, bool]:
    changed = False
    for node in list(g.nodes):
        if node.op == "dropout" and not node.args.get("training"):
            before = len(g.nodes)
            _forward(g, node, node.args["input"])
            changed |= len(g.nodes) < before
    return g, changed


def _is_identity(node) -> bool:
    if node.op in ("identity", "contiguous", "detach"):
        return True
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
            before = len(g.nodes)
            _forward(g, node, node.args["input"])
            changed |= len(g.nodes) < before
    return g, changed
