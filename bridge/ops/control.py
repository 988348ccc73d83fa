"""Control flow: ops that own regions (subgraphs), as torch's higher-order ops do.

- ``cond(pred, true_fn, false_fn, operands)``: ``true_fn(*operands)`` when the 0-d ``pred`` is true, else
  ``false_fn(*operands)``; both regions return the same number of tensors of the same specs (``torch.cond``).
- ``while_loop(cond_fn, body_fn, carried_inputs, additional_inputs)``: while ``cond_fn(*carried, *additional)``
  (a 0-d bool) holds, ``carried = body_fn(*carried, *additional)``; returns the last ``carried``
  (``torch._higher_order_ops.while_loop``).

Regions are closed ``Graph`` s held in the node's args (see bridge/ir/graph.py): operands carry in what they read.
Their ``impl`` runs the regions (each through its generated module); generated code writes the same as plain
``if``/``while`` (bridge/backends/torch.py). Costs: a ``cond`` costs its dearer branch; a ``while_loop`` one
iteration (its ``cond_fn`` and ``body_fn``), since the trip count is known only when it runs.
"""
from __future__ import annotations

from typing import Any

from .registry import register


def region_outputs(region, operands) -> tuple:
    """The flat outputs of running ``region`` (a Graph) on ``operands``."""
    out = region.run(*operands)
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _region_cost(region, field: str) -> int:
    from ..analysis.costs import node_costs

    return sum(getattr(c, field) for c in node_costs(region).values())


def _cond_cost(field):
    return lambda node: max(_region_cost(node.args["true_fn"], field), _region_cost(node.args["false_fn"], field))


def _loop_cost(field):
    return lambda node: _region_cost(node.args["cond_fn"], field) + _region_cost(node.args["body_fn"], field)


@register("cond", family="control", n_tensor_params=1, flops=_cond_cost("flops"), macs=_cond_cost("macs"))
def cond(pred, true_fn, false_fn, operands):
    """``true_fn(*operands)`` if the 0-d tensor ``pred`` is true, else ``false_fn(*operands)`` (a tuple)."""
    return region_outputs(true_fn if bool(pred) else false_fn, operands)


@register("while_loop", family="control", n_tensor_params=0, flops=_loop_cost("flops"), macs=_loop_cost("macs"))
def while_loop(cond_fn, body_fn, carried_inputs, additional_inputs: Any = ()):
    """``carried = body_fn(*carried, *additional_inputs)`` while ``cond_fn(*carried, *additional_inputs)`` holds;
    the last ``carried`` (a tuple)."""
    carried, extra = tuple(carried_inputs), tuple(additional_inputs)
    while bool(region_outputs(cond_fn, carried + extra)[0]):
        carried = region_outputs(body_fn, carried + extra)
    return carried

