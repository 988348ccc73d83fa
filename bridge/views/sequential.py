"""The sequential-layers view of a graph: ``to_sequential(g, stages=None, balance="flops")``.

- A **chain** (one tensor input, every node reads only the previous node's output, one output) becomes an
  ``nn.Sequential`` of real layers: a node traced from ``nn.Linear``/``nn.Conv2d``/``nn.BatchNorm2d``/
  ``nn.ReLU``/... becomes that layer again (rebuilt and checked by ``bridge.ops.layers``), a functional
  op becomes an ``OpCall`` layer holding its constant arguments. A graph with no module scopes at all (an
  ONNX import) gets real layers wherever one of the op's layer classes computes what the node computes. Child
  names are the layers' module paths (dots become ``_``) or, for functional ops, the op name; tensors are the
  graph's (state_dict *values* equal the model's, keys follow the child names). ``stages=k`` groups the layers
  into k inner ``nn.Sequential`` stages.
- Any other graph (a **DAG**: branches, skips, several inputs or outputs) becomes a ``StagedSequential`` of
  stage modules. The nodes keep their topological order and are cut into contiguous stages; each stage is a
  module generated from its part of the graph. One convention for every stage, as
  ``torch.distributed.pipelining`` stages have it: a stage takes its live values as positional arguments and
  returns the tuple of live values it passes on; the first stage takes the model's inputs (as the model does,
  keywords too), the last returns the model's output structure, so ``seq(*args, **kwargs)`` gives what
  ``model(*args, **kwargs)`` gives. Parameters keep their dotted names inside each stage
  (``"2.layer1.0.conv1.weight"``). Stage modules pickle (``bridge.backends.torch.GeneratedModule``).

Where to cut. The tensors live at a cut (defined before it, used after it) are what a stage passes on.
``stages=None`` gives the model's blocks (``block_cuts``): it cuts only where the fewest tensors are live, and
keeps a block's module call and a chain of single nodes together. ``stages=k`` balances k stages by
``balance``: ``"flops"``, ``"params"`` or ``"memory"`` (bytes of node outputs), per node from
``bridge.analysis.node_costs``. The *ideal* is the smallest possible largest stage over all contiguous splits
into k stages (computed exactly); cuts are then chosen to pass as few live tensors as possible while no stage
exceeds ``1.25 x`` that ideal. When every node costs 0 by that measure, nodes are counted instead.
"""
from __future__ import annotations

import copy
from bisect import bisect_right
from collections import OrderedDict, deque
from dataclasses import dataclass

import torch.nn as nn

from ..errors import TransformError
from ..ir.graph import Graph, Node, Value, iter_values, map_values

BALANCES = ("flops", "params", "memory")
SLACK = 1.25  # a stage may exceed the ideal largest stage by this factor to cut where fewer tensors are live


@dataclass
class StageInfo:
    """One stage: its nodes (first and last name), cost under the chosen balance (FLOPs when none was asked
    for), and the live values it takes and passes on."""

    index: int
    nodes: int
    first: str
    last: str
    cost: int
    inputs: list[str]
    outputs: list[str]


class StagedSequential(nn.Sequential):
    """An ``nn.Sequential`` of stages whose first stage takes the model's inputs (any number, keywords too).
    Every later stage takes the live values the stage before returns (a tuple) as positional arguments;
    ``forward`` unpacks them between stages.

    ``info`` lists a ``StageInfo`` per stage; ``ideal`` is the ideal largest stage cost (see the module doc).
    """

    info: list
    balance: str | None = None
    ideal: int | None = None

    def forward(self, *args, **kwargs):
        it = iter(self)
        x = next(it)(*args, **kwargs) if len(self) else (args[0] if len(args) == 1 else args)
        for stage in it:  # a stage module returns the tuple of what it passes on; a chain's stage one tensor
            x = stage(*x) if isinstance(x, tuple) else stage(x)
        return x

    def describe(self) -> str:
        """One line per stage: its nodes, cost and the live values passed in and out."""
        lines = []
        for s in self.info:
            span = f"%{s.first}" if s.nodes == 1 else f"%{s.first} .. %{s.last}" if s.nodes else "(none)"
            lines.append(f"stage {s.index}: {s.nodes} node{'' if s.nodes == 1 else 's'} {span}, "
                         f"{self.balance or 'flops'} {s.cost}; in ({', '.join(s.inputs)}) -> "
                         f"out ({', '.join(s.outputs)})")
        return "\n".join(lines)


def to_sequential(g: Graph, stages: int | None = None, balance: str = "flops") -> nn.Sequential:
    """``g`` as an ``nn.Sequential``: real layers for a chain, stage modules for a DAG (see the module doc).

    ``stages=k`` balances k stages by ``balance`` ("flops", "params" or "memory"). Raises
    ``TransformError`` for a bad ``stages``/``balance`` or a graph with fewer nodes than stages.
    """
    if balance not in BALANCES:
        raise TransformError(f"to_sequential: balance must be one of {BALANCES}, not {balance!r}")
    if stages is not None and (not isinstance(stages, int) or isinstance(stages, bool) or stages < 1):
        raise TransformError(f"to_sequential: stages must be a positive int or None, not {stages!r}")
    nodes = g.nodes
    if stages is not None and stages > max(len(nodes), 1):
        raise TransformError(f"to_sequential: cannot cut {len(nodes)} nodes into {stages} non-empty stages; "
                             f"ask for at most {len(nodes)}")
    chain = chain_inputs(g)
    if chain is not None:
        layers = chain_layers(g, chain)
        if stages is None:
            return layers
        weights = node_weights(g, balance)
        cuts, ideal = balanced_cuts(g, stages, balance, weights)
        items = list(layers.named_children())
        return staged(g, cuts, balance, ideal, weights,
                      make=lambda a, b: nn.Sequential(OrderedDict(items[a:b])).train(layers.training))
    weights = node_weights(g, balance)
    if stages is None:
        cuts, ideal = block_cuts(g), None
    else:
        cuts, ideal = balanced_cuts(g, stages, balance, weights)
    return staged(g, cuts, balance, ideal, weights)


# ---- chains -------------------------------------------------------------------------------------------
def chain_inputs(g: Graph) -> list[Value] | None:
    """For a chain graph, the input each node reads (``[x, out_0, out_1, ...]``); None for anything else."""
    if len(g.inputs) != 1 or not g.inputs[0].is_tensor or g.output_struct != ("leaf", 0) or \
            len(g.outputs) != 1 or not isinstance(g.outputs[0], Value):
        return None
    prev = g.inputs[0]
    ins = []
    for node in g.nodes:
        live = {id(v) for v in iter_values(node.args) if v.const is None}
        if live != {id(prev)} or len(node.outputs) != 1 or not node.outputs[0].is_tensor or \
                prev.meta.get("is_output") or any(u is not node for u in prev.users):
            return None
        if node.op == "opaque" and not (isinstance(node.target, nn.Module) and len(node.args["args"]) == 1
                                        and node.args["args"][0] is prev and not node.args.get("kwargs")):
            return None
        ins.append(prev)
        prev = node.outputs[0]
    return ins if g.outputs[0] is prev else None


def chain_layers(g: Graph, inputs: list[Value]) -> nn.Sequential:
    """The layers of a chain graph (``inputs`` from ``chain_inputs``)."""
    from ..ops.layers import OpCall, op_call, rebuild_layer

    state = {n: c for c in g.constants for n in c.names}
    cache: dict = {}
    paths = {}
    for node in g.nodes:
        paths[node.scope.path] = paths.get(node.scope.path, 0) + 1
    named: dict[str, nn.Module] = {}
    suffix: dict[str, int] = {}
    unscoped = not any(n.scope for n in g.nodes)  # an ONNX import: every op's layer classes are tried
    for node, x in zip(g.nodes, inputs):
        if node.op == "opaque":
            layer = copy.deepcopy(node.target)
        else:
            layer = rebuild_layer(node, x, cache, state, any_class=unscoped)
            if layer is None:
                layer = op_call(node, x, cache)
        real = not isinstance(layer, OpCall)
        base = node.scope.path.replace(".", "_") if real and node.scope.path and paths[node.scope.path] == 1 \
            else node.op
        name = base
        while name in named:  # add, add_1, add_2, ...
            suffix[base] = suffix.get(base, 0) + 1
            name = f"{base}_{suffix[base]}"
        named[name] = layer
    seq = nn.Sequential(OrderedDict(named))
    seq.training = bool(g.meta.get("training", False))
    return seq


# ---- cuts -----------------------------------------------------------------------------------------------
def live_spans(g: Graph) -> dict[int, tuple[int, int]]:
    """``id(value) -> (d, u)`` for every run-time value that is used: defined by node ``d`` (-1: a graph
    input), last used by node ``u`` (``len(nodes)``: a graph output). It is live at cuts ``d+1 .. u``."""
    nodes = g.nodes
    pos = {id(node): i for i, node in enumerate(nodes)}
    last: dict[int, int] = {}
    for i, node in enumerate(nodes):
        for v in iter_values(node.args):
            if v.const is None:
                last[id(v)] = i
    for v in iter_values(g.outputs):
        if v.const is None:
            last[id(v)] = len(nodes)
    spans = {}
    for v in _defined(g):
        u = last.get(id(v))
        d = pos[id(v.producer)] if v.producer is not None else -1
        if u is not None and u > d:
            spans[id(v)] = (d, u)
    return spans


def live_counts(g: Graph) -> list[int]:
    """``live[p]``: how many values are defined before node p and used at or after it (p = 0..len(nodes))."""
    n = len(g.nodes)
    diff = [0] * (n + 2)
    for d, u in live_spans(g).values():
        diff[d + 1] += 1
        diff[u + 1] -= 1
    out, acc = [], 0
    for p in range(n + 1):
        acc += diff[p]
        out.append(acc)
    return out


def _defined(g: Graph):
    yield from g.inputs
    for node in g.nodes:
        yield from node.outputs


def min_live_cuts(g: Graph) -> list[int]:
    """Cut positions (1..n-1) where the fewest values are live."""
    live = live_counts(g)
    inner = live[1:len(g.nodes)]
    if not inner:
        return []
    low = min(inner)
    return [p for p in range(1, len(g.nodes)) if live[p] == low]


def block_cuts(g: Graph) -> list[int]:
    """The cuts of ``stages=None``: stages that are the model's blocks. Between the cuts where the fewest values
    are live (``min_live_cuts``) lie single nodes (a chain) and blocks of several nodes (branches inside). Cuts
    are dropped where

    - a part lies inside the module call that holds all of the block its stage started with (not the model's own
      forward): ResNet's ``relu`` after ``out += identity`` joins its ``BasicBlock``, the feed-forward half of
      a transformer layer joins its attention half;
    - single nodes follow single nodes: a chain is one stage (ResNet's stem ``conv1 .. maxpool``, its head);
    - in a graph without module scopes (an ONNX import), one single node follows a block: its closing activation.

    So torchvision's ResNet-18 gives 10 stages: stem, eight residual blocks, head (imported from ONNX too)."""
    nodes = g.nodes
    bounds = [0, *min_live_cuts(g), len(nodes)]
    unscoped = not any(n.scope for n in nodes)
    cuts: list[int] = []
    owner: tuple = ()  # the module call the current stage's first block lies in; () for a chain or the model
    chain = False  # the current stage is a chain of single nodes
    block_ends = False  # the current stage ends with a block
    for a, b in zip(bounds, bounds[1:]):
        stacks = [n.scope.stack for n in nodes[a:b]]
        single = b - a == 1
        if a > 0:
            if (owner and all(st[:len(owner)] == owner for st in stacks)) or (single and chain):
                continue
            if single and block_ends and unscoped:
                block_ends = False
                continue
            cuts.append(a)
        owner = () if single else _common_prefix(stacks)
        chain, block_ends = single, not single
    return cuts


def _common_prefix(stacks: list[tuple]) -> tuple:
    out = stacks[0]
    for st in stacks[1:]:
        k = 0
        while k < min(len(out), len(st)) and out[k] == st[k]:
            k += 1
        out = out[:k]
    return out


def node_weights(g: Graph, balance: str) -> list[int]:
    """Per-node cost under ``balance`` (from ``bridge.analysis.node_costs``); all ones when they sum to 0."""
    from ..analysis.costs import node_costs

    field = {"flops": "flops", "params": "params", "memory": "out_bytes"}[balance]
    costs = node_costs(g)
    w = [int(getattr(costs[n], field)) for n in g.nodes]
    return w if sum(w) > 0 else [1] * len(w)


def ideal_split(weights: list[int], k: int, limit: tuple[list[int], int] | None = None) -> int:
    """The smallest possible largest part over every split of ``weights`` into k contiguous non-empty parts.
    ``limit``: ``(sizes, most)``, a second per-node measure no part may exceed in sum (a memory limit); raises
    ``TransformError`` where no split into k parts keeps to it."""
    sizes, most = limit if limit is not None else ([0] * len(weights), 0)
    if k > len(weights):
        raise TransformError(f"cannot split {len(weights)} nodes into {k} non-empty stages")

    def parts_needed(cap: int) -> int:
        parts, acc, size = 1, 0, 0
        for w, m in zip(weights, sizes):
            if acc + w > cap or (limit is not None and size + m > most):
                parts, acc, size = parts + 1, w, m
            else:
                acc, size = acc + w, size + m
        return parts

    big = next((i for i, m in enumerate(sizes) if limit is not None and m > most), None)
    if big is not None:
        raise TransformError(f"node {big} alone needs {sizes[big]}, over the limit of {most}")
    lo, hi = max(weights, default=0), sum(weights)
    if limit is not None and parts_needed(hi) > k:
        raise TransformError(f"no split into {k} stages keeps every stage within {most}: it takes at least "
                             f"{parts_needed(hi)} stages")
    while lo < hi:  # parts_needed is non-increasing in cap; any count between it and len(weights) is reachable
        mid = (lo + hi) // 2
        if parts_needed(mid) <= k:
            hi = mid
        else:
            lo = mid + 1
    return lo


def balanced_cuts(g: Graph, k: int, balance: str, weights: list[int] | None = None, *, slack: float = SLACK,
                  limit: tuple[list[int], int] | None = None) -> tuple[list[int], int]:
    """k-1 cut positions: every stage within ``slack x ideal``, fewest live values at the cuts; and the ideal.
    ``weights``: per-node costs when already computed (``node_weights``); ``limit``: ``(sizes, most)``, a
    per-node measure no stage may exceed in sum (see ``ideal_split``)."""
    weights = weights if weights is not None else node_weights(g, balance)
    n = len(weights)
    sizes, most = limit if limit is not None else ([0] * n, 0)
    if k <= 1 or n <= 1:
        if limit is not None and sum(sizes) > most:
            raise TransformError(f"one stage of {n} nodes needs {sum(sizes)}, over the limit of {most}")
        return [], sum(weights)
    ideal = ideal_split(weights, k, limit)
    cap = max(ideal, int(ideal * slack))
    live = live_counts(g)
    prefix, held = [0], [0]
    for w, m in zip(weights, sizes):
        prefix.append(prefix[-1] + w)
        held.append(held[-1] + m)
    inf = float("inf")
    # f[j][i]: fewest live values over the cuts of the first i nodes split into j stages, each <= cap (and limit)
    prev = [0.0] + [inf] * n  # j = 0 stages cover 0 nodes
    back: list[list[int]] = []
    for j in range(1, k + 1):
        cur = [inf] * (n + 1)
        arg = [-1] * (n + 1)
        dq: deque[int] = deque()  # candidates p (increasing), their f-values increasing
        nxt = 0  # next p to offer
        lo = 0
        for i in range(1, n + 1):
            while nxt <= i - 1:
                val = _val(prev, live, nxt)
                if prev[nxt] < inf:
                    while dq and _val(prev, live, dq[-1]) >= val:
                        dq.pop()
                    dq.append(nxt)
                nxt += 1
            while prefix[i] - prefix[lo] > cap or (limit is not None and held[i] - held[lo] > most):
                lo += 1
            while dq and dq[0] < lo:
                dq.popleft()
            if dq:
                cur[i] = _val(prev, live, dq[0])
                arg[i] = dq[0]
        back.append(arg)
        prev = cur
    if prev[n] == inf:  # cannot happen: the ideal split itself fits the cap
        raise TransformError(f"no split of {n} nodes into {k} stages fits {cap}")
    cuts, i = [], n
    for j in range(k, 0, -1):
        p = back[j - 1][i]
        if p > 0:
            cuts.append(p)
        i = p
    return sorted(cuts), ideal


def _val(prev, live, p) -> float:
    return prev[p] + (live[p] if p > 0 else 0)


# ---- stages ---------------------------------------------------------------------------------------------
def staged(g: Graph, cuts: list[int], balance: str | None = None, ideal: int | None = None,
           weights: list[int] | None = None, make=None) -> StagedSequential:
    """A ``StagedSequential`` cutting ``g``'s nodes before each position in ``cuts``. ``make(a, b)``
    gives the module of the stage of nodes ``a:b`` (default: the module generated from its subgraph)."""
    from ..backends.torch import to_module

    nodes = g.nodes
    bounds = [0, *sorted(set(cuts)), len(nodes)]
    weights = weights if weights is not None else node_weights(g, balance or "flops")
    live_at = _live_at(g, bounds)
    modules, info = [], []
    for s, (a, b) in enumerate(zip(bounds, bounds[1:])):
        ins = list(g.inputs) if s == 0 else live_at[a]
        outs = None if b == len(nodes) else live_at[b]
        if make is None:
            modules.append(to_module(_subgraph(g, nodes[a:b], ins, outs, first=s == 0, index=s)))
        else:
            modules.append(make(a, b))
        info.append(StageInfo(s, b - a, nodes[a].name if b > a else "", nodes[b - 1].name if b > a else "",
                              sum(weights[a:b]), [v.name for v in ins],
                              [v.name for v in (outs if outs is not None else iter_values(g.outputs))]))
    seq = StagedSequential(*modules)
    seq.info, seq.balance, seq.ideal = info, balance, ideal
    return seq


def _live_at(g: Graph, bounds: list[int]) -> dict[int, list[Value]]:
    """``p -> the values live at cut p`` (in definition order) for every ``p`` of ``bounds``, in one sweep:
    each value goes to the cuts inside its span (bisected), not every cut scanning every value."""
    spans = live_spans(g)
    cuts = sorted(set(bounds))
    out: dict[int, list[Value]] = {p: [] for p in cuts}
    for v in _defined(g):
        span = spans.get(id(v))
        if span is not None:
            for p in cuts[bisect_right(cuts, span[0]):bisect_right(cuts, span[1])]:
                out[p].append(v)
    return out


def _subgraph(g: Graph, part: list[Node], ins: list[Value], outs: list[Value] | None, *, first: bool,
              index: int) -> Graph:
    sub = Graph()
    sub.meta = {k: v for k, v in g.meta.items() if k != "input_binding"}
    sub.meta["model_type"] = f"{g.meta.get('model_type', 'Graph')}Stage{index}"
    vmap: dict[int, Value] = {}
    for v in ins:
        vmap[id(v)] = sub.add_input(v.name, v.spec)
    if first:  # the model's inputs, as the model takes them; a later stage takes its live values positionally
        sub.input_defaults = dict(g.input_defaults)
        if "input_binding" in g.meta:
            sub.meta["input_binding"] = g.meta["input_binding"]

    def get(v: Value) -> Value:
        nv = vmap.get(id(v))
        if nv is None:
            if v.const is None:
                raise TransformError(f"to_sequential: %{v.name} is used in stage {index} but not passed to it "
                                     "(a bug in the cut)")
            nv = sub.add_constant(v.name, v.const, kind=v.kind, names=v.names)
            vmap[id(v)] = nv
        return nv

    for node in part:
        new = sub.add_node(node.op, map_values(node.args, get), outputs=[(v.name, v.spec) for v in node.outputs],
                           out_struct=node.out_struct, scope=node.scope, source=node.source, target=node.target)
        new.meta = dict(node.meta)
        for old, nv in zip(node.outputs, new.outputs):
            vmap[id(old)] = nv
    if outs is None:
        sub.set_outputs(map_values(g.outputs, get), g.output_struct)
    else:
        sub.set_outputs([get(v) for v in outs], ("tuple", [("leaf", i) for i in range(len(outs))]))
    return sub
