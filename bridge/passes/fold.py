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
    return all(v.is_const for v in iter_values(node.args))


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
