"""Activation memory from tensor liveness in execution order.

The walk (``liveness``) follows the nodes in the graph's order, as the generated forward runs them:

- the graph's tensor inputs are live from the start to the end (the caller holds them);
- a node's tensor outputs become live when it runs; one that nothing reads (and is not a graph output)
  dies at once, any other dies right after its last reader; graph outputs live to the end;
- a view op's output (the op's ``view`` fact: reshape, transpose, split, ...) shares its input's storage: it
  adds no bytes, and keeps that storage alive while any view of it is;
- so does a node that the generated forward runs in place (its op's ``inplace`` method, ``relu_``, ``add_``:
  its input dies there and is a fresh tensor), as eager's ``inplace=True`` layers and ``out += x`` do;
- weights, buffers and folded constants are not activations (they are the parameter memory).

``peak_bytes`` is the most bytes live at once (measured right after a node's outputs are allocated, while
its inputs are still held), ``width`` the most activation tensors live at once. One pass over the nodes and
their edges: O(nodes + edges).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..backends.torch import may_write_input
from ..ir.graph import Graph, Node, Value
from ..ops import registry
from ..ops._util import dim_values
from .costs import graph_dims, value_bytes



@dataclass(frozen=True)
class Liveness:
    """Result of the liveness walk. ``live_bytes``/``live_count``: after each node's outputs are allocated."""

    peak_bytes: int            # most activation bytes live at once
    peak_node: Node | None     # the node at which that peak is reached (None: the inputs alone)
    width: int                 # most activation tensors live at once
    width_node: Node | None
    input_bytes: int
    output_bytes: int
    live_bytes: dict           # Node -> bytes live after it allocated its outputs
    live_count: dict           # Node -> tensors live at that moment


def is_activation(v) -> bool:
    """A tensor that flows at run time: a graph input or a node output (not a weight, buffer or constant)."""
    return isinstance(v, Value) and v.is_tensor and v.kind in ("input", "node")


def activation_inputs(n: Node) -> list[Value]:
    """The distinct activations a node reads, in argument order."""
    seen, out = set(), []
    for v in n.inputs:
        if is_activation(v) and id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out


def liveness(g: Graph, dims: dict[str, int] | None = None) -> Liveness:
    """Walk ``g`` in execution order keeping the live activation tensors; see the module docstring."""
    nodes = g.nodes
    reads = [[v for v in node.inputs if is_activation(v)] for node in nodes]
    last: dict[int, int] = {}
    for i, ins in enumerate(reads):
        for v in ins:
            last[id(v)] = i
    outputs = {id(v) for v in g.outputs if isinstance(v, Value)}
    root: dict[int, int] = {}           # id(value) -> id(storage root value)
    refs: dict[int, int] = {}           # storage root -> live values on it
    size: dict[int, int] = {}           # storage root -> bytes
    live_bytes = live_count = 0
    per_bytes: dict[Node, int] = {}
    per_count: dict[Node, int] = {}

    def alloc(v: Value, base: Value | None) -> None:
        nonlocal live_bytes, live_count
        r = root.get(id(base)) if base is not None else None
        if r is None or r not in refs:
            r = id(v)
            size[r] = value_bytes(v)
            refs[r] = 0
            live_bytes += size[r]
        root[id(v)] = r
        refs[r] += 1
        live_count += 1

    def free(v: Value) -> None:
        nonlocal live_bytes, live_count
        r = root.pop(id(v), None)
        if r is None:
            return
        live_count -= 1
        refs[r] -= 1
        if refs[r] == 0:
            del refs[r]
            live_bytes -= size.pop(r)

    with dim_values(graph_dims(g, dims)):
        for v in g.inputs:
            if is_activation(v):
                alloc(v, None)
        input_bytes = live_bytes
        peak, peak_node, width, width_node = live_bytes, None, live_count, None
        for i, node in enumerate(nodes):
            ins = reads[i]
            base = ins[0] if ins and registry.get(node.op).view else None
            if base is None and may_write_input(node, i, last, outputs):
                base = node.args["input"]  # relu_/add_ in place, as the generated forward (and eager) does
            for v in node.outputs:
                if v.is_tensor:
                    alloc(v, base)
            per_bytes[node], per_count[node] = live_bytes, live_count
            if live_bytes > peak:
                peak, peak_node = live_bytes, node
            if live_count > width:
                width, width_node = live_count, node
            for v in ins:
                if last.get(id(v)) == i and id(v) not in outputs and v.kind != "input":
                    free(v)
            for v in node.outputs:
                if v.is_tensor and id(v) not in last and id(v) not in outputs:
                    free(v)
        output_bytes = sum(value_bytes(v) for v in {id(v): v for v in g.outputs if is_activation(v)}.values())
    return Liveness(peak, peak_node, width, width_node, input_bytes, output_bytes, per_bytes, per_count)


def measured_peak_bytes(g: Graph, args: tuple, kwargs: dict | None = None) -> int:
    """What ``liveness(g).peak_bytes - input_bytes`` estimates, measured: the most bytes CUDA's caching
    allocator holds beyond what was allocated before the call while the module generated from ``g`` runs on
    ``args`` (moved to the GPU), after one warm-up call so that library workspaces which persist (cuBLAS,
    cuDNN handles) are not counted. Needs CUDA."""
    import torch

    mod = g.to_module().cuda().eval()
    xs = tuple(a.cuda() if isinstance(a, torch.Tensor) else a for a in args)
    kw = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in (kwargs or {}).items()}
    with torch.no_grad():
        mod(*xs, **kw)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        mod(*xs, **kw)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
