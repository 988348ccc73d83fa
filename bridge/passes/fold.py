"""Constant folding: a node whose inputs are all constants is computed once and becomes a constant."""
from __future__ import annotations

import torch

from ..ir import structure
from ..ir.graph import Graph, iter_values, map_values
from ..ops import registry
from . import register_pass
from .cse import pure

MAX_ELEMENTS = 1 << 22  # don't materialize huge constants (16 MB of fp32)


def foldable(node) -> bool:
    # pure (cse's test: no randomness, no side effect); dropout is remove_dropout's business
    if not pure(node) or node.op == "dropout" or registry.get(node.op) is None:
        return False
    return all(v.const is not None for v in iter_values(node.args))


@register_pass("fold")
def fold(g: Graph) -> tuple[Graph, bool]:
    changed = False
    for node in list(g.nodes):
        if not foldable(node) or not all(v.is_tensor for v in node.outputs):
            continue
        args = map_values(node.args, lambda v: v.const)
        with torch.no_grad():
            result = registry.get(node.op).impl(**args)
        leaves, _ = structure.flatten(result, lambda o: isinstance(o, torch.Tensor))
        if len(leaves) != len(node.outputs) or sum(t.numel() for t in leaves) > MAX_ELEMENTS:
            continue
        for v, t in zip(node.outputs, leaves):
            c = g.add_constant(f"{v.name}_folded", t.detach(), kind="constant")
            g.replace_all_uses(v, c)
        g.erase_node(node)
        changed = True
    if changed:
        g.remove_unused_constants()
    return g, changed
