"""Constant folding: a node whose inputs are all constants is computed once and becomes a constant.

Inside regions too (as every pass), and across their boundary: a ``cond`` whose predicate is a constant is
replaced by the branch it takes, spliced in its place; a constant invariant operand of a control-flow node (a
python value, or a constant tensor that is not a weight or buffer) is copied into each region as a constant of
its own and leaves the operands, and the regions are folded again (bridge/passes/regions.py)."""
from __future__ import annotations

import torch

from ..ir import structure
from ..ir.graph import Graph, Value, iter_values, map_values
from ..ops import registry
from . import register_pass
from .cse import pure
from .regions import constant_operand, drop_invariant, inline_region, invariant, used

MAX_ELEMENTS = 1 << 22  # don't materialize huge constants (16 MB of fp32)


def foldable(node) -> bool:
    # pure (cse's test: no randomness, no side effect); dropout is remove_dropout's business
    if not pure(node) or node.op == "dropout" or registry.get(node.op) is None:
        return False
    return all(v.is_const for v in iter_values(node.args))


@register_pass("fold")
def fold(g: Graph) -> tuple[Graph, bool]:
    changed = False
    for node in list(g.nodes):
        if node.regions and _fold_control(node):
            changed = True
            if node.graph is not g:
                continue
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


def _fold_control(node) -> bool:
    """Across a control-flow node's boundary (see the module doc); True when it changed."""
    inv = invariant(node)
    if inv is None:
        return False
    pred = node.args.get("pred") if node.op == "cond" else None
    if isinstance(pred, Value) and pred.is_const and pred.const.numel() == 1 or isinstance(pred, bool):
        inline_region(node, "true_fn" if bool(pred.const if isinstance(pred, Value) else pred) else "false_fn")
        return True
    key, start = inv
    changed = False
    for j in reversed(range(len(node.args[key]))):
        a = node.args[key][j]
        if not constant_operand(a):
            continue
        for _, region in node.regions:
            v = region.inputs[start + j]
            if used(v):
                region.replace_all_uses(v, region.add_constant(a.name, a.const) if isinstance(a, Value) else a)
        drop_invariant(node, j)
        changed = True
    if changed:
        for _, region in node.regions:
            fold(region)
    return changed


_TRACE_TIME = ("device", "dtype", "is_cuda", "layout", "ndim")


@register_pass("freeze_metadata")
def freeze_metadata(g: Graph) -> tuple[Graph, bool]:
    """``x.device``, ``x.dtype``, ``x.ndim`` (and ``is_cuda``, ``layout``) become their traced values, so what is
    built from them (``torch.arange(T, device=x.device)``, ``torch.ones(T, T, dtype=x.dtype).tril()``) can fold.

    For export: an ONNX file has fixed dtypes and no devices. The torch path keeps them run-time values, so
    the generated module follows ``.to()`` and ``.double()``; this pass is not for it."""
    device = g.meta.get("trace_device") or torch.device("cpu")
    changed = False
    for node in list(g.nodes):
        if node.op != "getattr" or node.args.get("name") not in _TRACE_TIME:
            continue
        x, out = node.args["input"], node.outputs[0]
        spec = getattr(x, "spec", None)
        if out.meta.get("is_output") or not getattr(spec, "dtype", None):
            continue
        name = node.args["name"]
        value = {"device": device, "dtype": spec.dtype, "is_cuda": device.type == "cuda", "layout": torch.strided,
                 "ndim": len(spec.shape)}[name]
        g.replace_all_uses(out, value)
        g.erase_node(node)
        changed = True
    return g, changed
