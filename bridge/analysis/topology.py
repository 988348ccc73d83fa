"""The shape of a graph: chain or DAG, where it branches and merges, its skip connections, depth and width.

Only activations count as edges: tensors that flow at run time (graph inputs and node outputs). Weights,
buffers and constants are not edges, and neither are python scalars (``x.size(0)`` feeding a ``view``), so
``x.view(x.size(0), -1)`` stays one step of a chain. A node that produces no tensor (``size``) is left out.

Definitions (``Topology``'s fields):

- **branch point**: an activation read by two or more consumers (nodes, or the graph outputs).
- **merge point**: a node that reads two or more distinct activations (``add`` of a residual, ``cat``).
- **skip connection**: for a merge point ``m`` whose inputs meet, going backwards, at a branch point
  ``b`` (their nearest common ancestor), the path from ``b`` into ``m`` that is shorter than another path
  from ``b`` into ``m``: it jumps over the nodes of the longer one. A ResNet block gives one (the
  identity, or the projection ``downsample`` when it is shorter than the residual), a DenseNet ``cat`` of
  k feature maps k - 1 (every earlier map skips the layers after it); two parallel branches of equal
  length (Inception) none. Where several groups of inputs meet at once, each group other than the one
  holding the longest path gives one skip.
  Path lengths are measured with levels (the longest path from the graph inputs): ``level(p) - level(b) + 1``.
- **depth**: the number of nodes on the longest path from an input to an output.
- **width**: the most activation tensors live at once in execution order (see ``bridge.analysis.memory``).
- **is_chain**: one input, one output, no branch and no merge.
- **control_flow**: the nodes that own regions (``cond``, ``while_loop``, ...). Each is one node of the graph it
  is in, reading its operands and writing its outputs: what its regions do is not part of this topology.
- **sequential**: the graph can be a plain ``nn.Sequential``: a chain whose every node reads the previous
  node's output; ``why_not_sequential`` says why not, naming the first offending node, e.g.
  ``"layer1.0: add merges two paths (layer1.0.bn2, maxpool)"``.

Cost: one pass over the nodes and edges for levels, branch and merge points, plus, per merge point, a
backward search by decreasing level that stops where its inputs meet (a residual block's nodes).
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

from ..ir.graph import Graph, Node, Value
from .memory import activation_inputs, is_activation, liveness


@dataclass(frozen=True)
class Skip:
    """A skip connection: from the branch point ``source`` into the merge point ``target``, through
    ``length`` edges (1: a direct edge), over a longer path of ``over`` edges."""

    source: Value
    target: Node
    length: int
    over: int

    def __str__(self) -> str:
        return f"{_where_value(self.source)} -> {_where(self.target)} ({self.length} step(s) over {self.over})"


@dataclass
class Topology:
    is_chain: bool
    branch_points: list[Value]       # activations read by two or more consumers
    merge_points: list[Node]         # nodes reading two or more distinct activations
    skip_connections: list[Skip]
    depth: int                       # nodes on the longest input -> output path
    width: int                       # most activation tensors live at once
    sequential: bool                 # expressible as a plain nn.Sequential
    why_not_sequential: str | None
    reasons: list[str] = field(default_factory=list)  # every reason it is not an nn.Sequential, in node order
    control_flow: list[Node] = field(default_factory=list)  # nodes owning regions (cond, while_loop, ...)

    @property
    def kind(self) -> str:
        return "chain" if self.is_chain else "DAG"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "is_chain": self.is_chain, "depth": self.depth, "width": self.width,
                "branch_points": [_value_dict(v) for v in self.branch_points],
                "merge_points": [_node_dict(n) for n in self.merge_points],
                "skip_connections": [{"source": _value_dict(s.source), "target": _node_dict(s.target),
                                      "length": s.length, "over": s.over} for s in self.skip_connections],
                "sequential": self.sequential, "why_not_sequential": self.why_not_sequential,
                "reasons": list(self.reasons), "control_flow": [_node_dict(n) for n in self.control_flow]}

    def __str__(self) -> str:
        lines = [f"{self.kind}: depth {self.depth}, width {self.width}, {len(self.branch_points)} branch point(s), "
                 f"{len(self.merge_points)} merge point(s), {len(self.skip_connections)} skip connection(s)"
                 + (f", control flow ({len(self.control_flow)} node(s))" if self.control_flow else "")]
        lines += [f"  branch  {_where_value(v)} -> {len(_consumers(v))} consumers" for v in self.branch_points]
        lines += [f"  merge   {_where(n)}: {n.op} of {len(activation_inputs(n))}" for n in self.merge_points]
        lines += [f"  skip    {s}" for s in self.skip_connections]
        lines += [f"  control {_where(n)}: {n.op} ({', '.join(k for k, _ in n.regions)})" for n in self.control_flow]
        lines.append("  nn.Sequential: " + ("yes" if self.sequential else f"no ({self.why_not_sequential})"))
        return "\n".join(lines)


def topology(g: Graph) -> Topology:
    """Topology of a Graph (``bridge.topology`` also takes a model or an ONNX file); see the module docstring."""
    nodes = [n for n in g.nodes if any(v.is_tensor for v in n.outputs)]
    outputs = [v for v in g.outputs if is_activation(v)]
    level: dict[int, int] = {}      # id(value) -> level of its producer (inputs and sources: 0)
    for v in g.inputs:
        level[id(v)] = 0
    branch, merges, reasons = [], [], []
    acts: dict[int, list[Value]] = {}  # id(node) -> the activations it reads (computed once)
    depth = 0
    prev: Value | None = g.inputs[0] if len(g.inputs) == 1 else None
    for n in nodes:
        ins = acts[id(n)] = activation_inputs(n)
        lv = 1 + max((level.get(id(v), 0) for v in ins), default=0)
        for v in n.outputs:
            level[id(v)] = lv
        depth = max(depth, lv)
        if len(ins) >= 2:
            merges.append(n)
            reasons.append(f"{_where(n)}: {n.op} merges {_count(len(ins))} paths "
                           f"({', '.join(_short(v) for v in ins)})")
        elif not ins:
            reasons.append(f"{_where(n)}: {n.op} starts a new path (it reads no activation)")
        elif prev is not None and ins[0] is not prev:
            reasons.append(f"{_where(n)}: {n.op} reads {_short(ins[0])}, not the previous layer's output")
        tensor_outs = [v for v in n.outputs if v.is_tensor]
        for v in tensor_outs:
            if _n_consumers(v) >= 2:
                c = _consumers(v)
                branch.append(v)
                reasons.append(f"{_where(n)}: the output of {n.op} feeds {_count(len(c))} consumers "
                               f"({', '.join(c)})")
        prev = tensor_outs[0] if len(tensor_outs) == 1 else None
        if len(tensor_outs) > 1 and sum(1 for v in tensor_outs if _n_consumers(v)) > 1:
            reasons.append(f"{_where(n)}: {n.op} gives {len(tensor_outs)} tensors that are used apart")
    for v in g.inputs:
        if is_activation(v) and len(_consumers(v)) >= 2:
            branch.insert(0, v)
            reasons.insert(0, f"input {v.name} feeds {_count(len(_consumers(v)))} consumers "
                              f"({', '.join(_consumers(v))})")
    n_in = sum(1 for v in g.inputs if is_activation(v))
    if n_in != 1:
        reasons.insert(0, f"the graph has {n_in} tensor inputs")
    if len(outputs) != 1:
        reasons.insert(0, f"the graph has {len(outputs)} tensor outputs")
    elif prev is not None and outputs[0] is not prev:
        reasons.append(f"the output {_short(outputs[0])} is not the last layer's output")
    is_chain = n_in == 1 and len(outputs) == 1 and not branch and not merges
    skips = [s for m in merges for s in _skips(m, level, acts)]
    live = liveness(g)
    first = _first_reason(reasons)
    return Topology(is_chain=is_chain, branch_points=branch, merge_points=merges, skip_connections=skips,
                    depth=depth, width=live.width, sequential=not reasons, why_not_sequential=first,
                    reasons=reasons, control_flow=[n for n in g.nodes if n.regions])


def _first_reason(reasons: list[str]) -> str | None:
    """A merge explains a DAG best ("layer1.0: add merges two paths"); then anything else, in node order."""
    if not reasons:
        return None
    for r in reasons:
        if " merges " in r:
            return r
    return reasons[0]


def _skips(m: Node, level: dict[int, int], acts: dict[int, list[Value]]) -> list[Skip]:
    """Skip connections into merge point ``m``: search backwards from its inputs by decreasing level; where
    two groups of inputs meet (their nearest common ancestor ``b``), the shorter path into ``m`` is a skip
    if another is longer."""
    ins = acts[id(m)]
    group = list(range(len(ins)))              # union-find over input indices

    def find(i):
        while group[i] != i:
            group[i] = group[group[i]]
            i = group[i]
        return i

    tags: dict[int, set] = {}
    vals: dict[int, Value] = {}
    heap: list = []
    for i, v in enumerate(ins):
        tags.setdefault(id(v), set()).add(i)
        if id(v) not in vals:
            vals[id(v)] = v
            heapq.heappush(heap, (-level.get(id(v), 0), id(v)))
    joined = 1
    out: list[Skip] = []
    while heap and joined < len(ins):
        _, vid = heapq.heappop(heap)
        v, here = vals[vid], tags[vid]
        roots = {find(i) for i in here}
        if len(roots) >= 2:
            lengths = {i: level.get(id(ins[i]), 0) - level.get(vid, 0) + 1 for i in here}
            longest = max(lengths.values())
            main = find(max(here, key=lambda k: lengths[k]))
            for r in roots:  # every other group that meets here skips over the longest path by its shortest
                if r == main:
                    continue
                i = min((i for i in here if find(i) == r), key=lambda k: lengths[k])
                if lengths[i] < longest:
                    out.append(Skip(v, m, lengths[i], longest))
            first, *rest = roots
            for r in rest:
                group[r] = first
                joined += 1
        p = v.producer
        if p is None:
            continue
        for u in acts.get(id(p)) or activation_inputs(p):
            if id(u) not in tags:
                tags[id(u)] = set()
                vals[id(u)] = u
                heapq.heappush(heap, (-level.get(id(u), 0), id(u)))
            tags[id(u)] |= here
    return out


def _n_consumers(v: Value) -> int:
    """How many consumers ``_consumers`` would name, without building the names."""
    return sum(1 for u in v._uses if any(o.is_tensor for o in u.outputs)) + (1 if v.meta.get("is_output") else 0)


def _consumers(v: Value) -> list[str]:
    """Names of what reads an activation: consumer nodes that produce tensors (by scope), and the graph output."""
    names = [_where(u) for u in v.users if any(o.is_tensor for o in u.outputs)]
    if v.meta.get("is_output"):
        names.append("output")
    return names


def _where(n: Node) -> str:
    """A node's module path, or ``%name`` outside any module."""
    return n.scope.path or f"%{n.name}"


def _short(v: Value) -> str:
    """``%name`` of an activation (a node output's name is its node's), ``input x`` of a graph input."""
    return f"%{v.name}" if v.producer is not None else f"input {v.name}"


def _where_value(v: Value) -> str:
    """Where an activation comes from: the producing node's module path (or ``%name``), or the input."""
    return _where(v.producer) if v.producer is not None else f"input {v.name}"


def _count(k: int) -> str:
    return {2: "two", 3: "three", 4: "four"}.get(k, str(k))


def _node_dict(n: Node) -> dict:
    return {"node": n.name, "op": n.op, "scope": n.scope.path, "type": n.scope.type}


def _value_dict(v: Value) -> dict:
    d = {"value": v.name}
    if v.producer is not None:
        d.update(_node_dict(v.producer))
    return d
