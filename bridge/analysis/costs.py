"""Per-node costs: the one cost model every analysis, picture and pass reads.

``node_costs(g)`` gives each node a ``NodeCost``:

- ``flops`` and ``macs`` come from the op registry (``OpDef.flops(node)``, ``OpDef.macs(node)``, defined
  next to each op in ``bridge/ops/<family>.py``); nothing is recounted here.
- ``params``/``param_bytes``: the parameter elements (and their bytes) this node is the *first user* of,
  in execution order, so a weight shared by two layers is counted once, at its first use. Buffers
  (batch-norm running statistics) and folded constants are not parameters.
- ``out_bytes``: bytes of the node's tensor outputs.
- Control flow (a node owning regions) is one node: a ``cond`` costs its dearer branch, a ``scan``/``map`` its
  region times the sequence length (the ops' callbacks, bridge/ops/control.py); a ``while_loop`` one iteration,
  since its trip count is known only when it runs: ``per_iteration`` marks it (and a node whose regions hold
  one). The weights its regions read come in as operands, so they are counted at the node like any other's.

Symbolic dims (``"batch"``) are sized at the example the graph was traced with (``g.meta["dim_values"]``,
recorded by ``bridge.trace``), or by ``dims=`` (``{"batch": 8}``); a symbol with no known size counts as 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..ir.graph import Graph, Node, Value
from ..ir.spec import TensorSpec
from ..ops import registry
from ..ops._util import dim_values, numel


@dataclass(frozen=True)
class NodeCost:
    """What one node costs. See the module docstring for how each field is counted."""

    flops: int        # floating point ops of the node (a multiply-add counts 2), from the op registry
    macs: int         # multiply-accumulates among them (matmul/conv/attention/RNN-like ops; 0 where none)
    params: int       # parameter elements this node is the first user of (shared weights counted once)
    param_bytes: int
    out_bytes: int    # bytes of the node's tensor outputs (symbolic dims: evaluated at the traced example)
    per_iteration: bool = False  # the flops and macs count one iteration of a loop (a while_loop, or holding one)


def node_costs(g: Graph, dims: dict[str, int] | None = None) -> dict[Node, NodeCost]:
    """``{node: NodeCost}`` for every node of ``g``, in execution order.

    ``dims`` sizes symbolic dims (default: the example sizes ``bridge.trace`` recorded). Totals over the
    dict's values are the graph's totals: each parameter element is counted at exactly one node.
    """
    owned = first_param_uses(g)
    out: dict[Node, NodeCost] = {}
    with dim_values(graph_dims(g, dims)):
        for node in g.nodes:
            opdef = registry.get(node.op)
            flops = int(opdef.flops(node)) if opdef is not None and opdef.flops is not None else 0
            macs = int(opdef.macs(node)) if opdef is not None and opdef.macs is not None else 0
            params = owned.get(node, ())
            out[node] = NodeCost(flops=flops, macs=macs,
                                 params=sum(numel(p) for p in params),
                                 param_bytes=sum(value_bytes(p) for p in params),
                                 out_bytes=sum(value_bytes(v) for v in node.outputs),
                                 per_iteration=per_iteration(node))
    return out


_PER_ITERATION = frozenset({"while_loop"})  # loops whose cost callback counts one iteration (trip count unknown)


def per_iteration(node: Node) -> bool:
    """Does ``node``'s cost count one iteration of a loop whose trip count is known only at run time?"""
    return node.op in _PER_ITERATION or any(per_iteration(n) for _, r in node.regions for n in r.nodes)


def graph_dims(g: Graph, dims: dict[str, int] | None = None) -> dict[str, int]:
    """Sizes of the symbolic dims: the traced example's (``g.meta["dim_values"]``), overridden by ``dims``."""
    return {**(g.meta.get("dim_values") or {}), **(dims or {})}


def first_param_uses(g: Graph) -> dict[Node, list[Value]]:
    """The parameters each node uses first (in execution order). A weight is one Value however many
    modules share it; two Values over one tensor (same storage, shape and strides) also count once."""
    seen: set = set()
    owned: dict[Node, list[Value]] = {}
    for node in g.nodes:
        for v in _reads(node):
            if v.kind != "param":
                continue
            key = param_key(v)
            if key in seen:
                continue
            seen.add(key)
            owned.setdefault(node, []).append(v)
    return owned


def _reads(node: Node):
    """The values ``node`` reads: its inputs, and the constants of its regions (a region's own weights, as an ONNX
    import may give)."""
    yield from node.inputs
    for _, region in node.regions:
        for n, _ in region.walk():
            yield from (v for v in n.inputs if v.is_const)


def trainable(v: Value) -> bool:
    """A parameter is trainable when its tensor requires grad (a frozen one has ``requires_grad=False``)."""
    return bool(isinstance(v.const, torch.Tensor) and v.const.requires_grad)


def value_bytes(v: Any) -> int:
    """Bytes of a tensor Value (its elements, symbolic dims sized by ``dim_values``, times the element size);
    0 for non-tensors."""
    if isinstance(v, Value) and isinstance(v.spec, TensorSpec):
        return numel(v) * _itemsize(v.spec.dtype)
    return 0


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size() if not hasattr(dtype, "itemsize") else dtype.itemsize


def param_key(v: Value):
    """Identity of a parameter's tensor: its storage, offset, shape, strides and dtype (or the Value)."""
    t = v.const
    if isinstance(t, torch.Tensor) and t.device.type != "meta" and not _is_fake(t):
        try:
            return ("storage", t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape),
                    tuple(t.stride()), t.dtype)
        except (RuntimeError, NotImplementedError):
            pass
    return ("value", id(v))


def _is_fake(t: torch.Tensor) -> bool:
    return type(t).__name__ == "FakeTensor"
