"""Pipeline stages for ``torch.distributed.pipelining``: ``bridge.to_pipeline`` (``split_pipeline`` on a graph).

``to_pipeline(model, args=(microbatch,), stages=k)`` traces the model once (training mode unless
``training=False``), cuts its graph into k contiguous stages balanced by a cost (``to_sequential``'s cut: the
largest stage within ``slack`` of the best contiguous split, fewest tensors crossing the cuts within that), and
returns a ``Pipeline``:

- ``stage_module(i)``: stage i as an ``nn.Module`` generated from its part of the graph. Stage 0 takes the model's
  inputs as the model does; a later stage takes the tensors live at its cut, positionally; every stage but the
  last returns the tuple of tensors live at its end; the last returns the model's output (a PipelineStage passes
  on tensors only: where the model returns another structure, such as a dict or HuggingFace's ModelOutput, the
  last stage returns its tensors, one tensor alone, which is what the schedule's ``loss_fn`` gets). Its parameters
  and buffers are copies of the model's (the model is never changed), under the model's own state_dict names, so
  ``model.load_state_dict(stage.state_dict(), strict=False)`` takes trained weights back.
- ``build_stage(i, device, group=None)``: a ``torch.distributed.pipelining.PipelineStage`` of that module on
  ``device``, with its input and output metadata given (no shape inference across ranks), for any schedule torch
  ships (GPipe, 1F1B, interleaved ones with several stages per rank).
- ``info``/``describe()``/``draw(path)``: the nodes of each stage, the tensors that cross each cut, the cost per
  stage.

Balances: "flops", "params", "memory" (bytes of node outputs) from ``bridge.analysis.node_costs``, or "time" (each
node run once on the example, after a warm-up, and timed). ``memory_limit`` (bytes, or "8GiB") bounds what a
stage holds while training, estimated as ``state_factor`` x its parameter bytes (default 4: weights, gradients and
Adam's two moments) plus its activations (node output bytes) for ``in_flight`` microbatches (default: the number
of stages, what 1F1B keeps at most); no split that fits raises ``TransformError``.

A parameter used by nodes in two stages (tied embeddings) would be two copies trained apart: refused with a
``TransformError`` naming it, before any stage is built.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from ..errors import TransformError
from ..ir.graph import Graph, Value, iter_values
from ..analysis.summary import human_bytes
from .sequential import StageInfo, _live_at, _subgraph, balanced_cuts, node_weights

BALANCES = ("flops", "params", "memory", "time")
SLACK = 1.02  # the largest stage may exceed the best split's by this much to cut fewer tensors (a pipeline runs at
# the speed of its largest stage: on ResNet-50 in 4 stages, 1.1 saved one crossing tensor for 10% of speed)


@dataclass
class Pipeline:
    """A model cut into pipeline stages (see the module doc). ``graph``: the traced graph; ``info``: a
    ``StageInfo`` per stage; ``ideal``: the largest stage cost of the best contiguous split."""

    graph: Graph
    cuts: list[int]
    info: list[StageInfo]
    balance: str
    ideal: int
    memory: list[int] | None = None  # estimated bytes per stage, where a memory limit was asked for

    def __post_init__(self):
        self._modules: dict[int, nn.Module] = {}

    @property
    def num_stages(self) -> int:
        return len(self.info)

    def __len__(self) -> int:
        return len(self.info)

    def stage_module(self, i: int) -> nn.Module:
        """Stage ``i``'s module (made once; its parameters and buffers are copies of the model's)."""
        if not 0 <= i < len(self.info):
            raise IndexError(f"stage {i} of a {len(self.info)}-stage pipeline")
        if i not in self._modules:
            from ..backends.torch import to_module

            a, b = self._bounds[i], self._bounds[i + 1]
            last = b == len(self.graph.nodes)
            outs = None if last and self._plain_output() else self._stage_values(i, "outputs")
            sub = _subgraph(self.graph, self.graph.nodes[a:b], self._stage_values(i, "inputs"), outs, first=i == 0,
                            index=i)
            if last and outs is not None and len(outs) == 1:  # one tensor in a structure: that tensor
                sub.set_outputs(list(sub.outputs))
            mod = to_module(sub)
            _own_state(mod)
            mod.train(bool(self.graph.meta.get("training", False)))
            self._modules[i] = mod
        return self._modules[i]

    def example_inputs(self, i: int, device: Any = None) -> tuple:
        """Tensors shaped as stage ``i`` takes them for one microbatch (zeros), each requiring grad where the
        value does in training (it depends on a trainable parameter): the stage then sends its gradient back."""
        grads = self._requires_grad()
        return tuple(_blank(v, device, id(v) in grads) for v in self._stage_values(i, "inputs"))

    def example_outputs(self, i: int, device: Any = None) -> tuple:
        """Tensors shaped as stage ``i`` returns them for one microbatch (zeros; requiring grad as above)."""
        grads = self._requires_grad()
        return tuple(_blank(v, device, id(v) in grads) for v in self._stage_values(i, "outputs"))

    def _requires_grad(self) -> set[int]:
        """ids of the values that require grad in training: floating-point values computed from a trainable
        parameter (not through ``detach``)."""
        if not self.graph.meta.get("training", False):
            return set()
        out = {id(c) for c in self.graph.constants if c.kind == "param" and c.const.requires_grad}
        for node in self.graph.nodes:
            if node.op != "detach" and any(id(v) in out for v in iter_values(node.args)):
                out.update(id(v) for v in node.outputs if v.is_tensor and (v.spec.dtype.is_floating_point or
                                                                            v.spec.dtype.is_complex))
        return out

    def build_stage(self, i: int, device: Any, group: Any = None):
        """A ``torch.distributed.pipelining.PipelineStage`` running stage ``i`` on ``device`` (the module moved
        there), for this rank's part of a schedule; ``group``: the process group (default: the world)."""
        from torch.distributed.pipelining import PipelineStage

        device = torch.device(device)
        mod = self.stage_module(i).to(device)
        return PipelineStage(mod, i, len(self.info), device, input_args=self.example_inputs(i, device),
                             output_args=self.example_outputs(i, device), group=group)

    def describe(self) -> str:
        """One line per stage: its nodes, cost, and the tensors it takes and passes on."""
        lines = [f"{len(self.info)} stages balanced by {self.balance} (largest {max(s.cost for s in self.info)}, "
                 f"best contiguous split {self.ideal})"]
        for k, s in enumerate(self.info):
            span = f"%{s.first}" if s.nodes == 1 else f"%{s.first} .. %{s.last}"
            mem = f", ~{human_bytes(self.memory[k])}" if self.memory else ""
            lines.append(f"stage {s.index}: {s.nodes} node{'' if s.nodes == 1 else 's'} {span}, {self.balance} "
                         f"{s.cost}{mem}; in ({', '.join(s.inputs)}) -> out ({', '.join(s.outputs)})")
        return "\n".join(lines)

    __str__ = describe

    @property
    def _bounds(self) -> list[int]:
        """Stage i is nodes ``_bounds[i]:_bounds[i + 1]``."""
        return [0, *self.cuts, len(self.graph.nodes)]

    def stage_of(self) -> dict[str, int]:
        """Node name -> its stage."""
        b = self._bounds
        return {n.name: s for s in range(len(b) - 1) for n in self.graph.nodes[b[s]:b[s + 1]]}

    def draw(self, path, **options):
        """Draw the graph (``bridge.draw``: .svg, .dot, .mmd, .html; its options) with each stage as the outermost
        cluster (``stage0``, ``stage1``, ...; ``depth=1`` folds each stage into one box), the tensors that cross a
        cut as the edges between clusters."""
        from ..ir.graph import Scope
        from .draw import draw

        g = self.graph.copy()
        for node, s in zip(g.nodes, self.stage_of().values()):
            node.scope = Scope(((f"stage{s}", f"Stage{s}"),
                                *((f"stage{s}.{p}", t) for p, t in node.scope.stack)))
        return draw(g, path, **options)

    def _plain_output(self) -> bool:
        """Whether the model returns a tensor or a flat tuple of tensors (what a PipelineStage can return)."""
        st = self.graph.output_struct
        leaves = st[1] if st[0] == "tuple" else [st]
        return all(x[0] == "leaf" for x in leaves) and all(isinstance(v, Value) and v.is_tensor
                                                             for v in self.graph.outputs)

    def _stage_values(self, i: int, which: str) -> list[Value]:
        """The values stage ``i`` takes ("inputs") or passes on ("outputs"; the last stage: the model's tensors)."""
        nodes = self.graph.nodes
        a, b = self._bounds[i], self._bounds[i + 1]
        if which == "inputs":
            return list(self.graph.inputs) if i == 0 else _live_at(self.graph, [a])[a]
        if b == len(nodes):
            return [v for v in iter_values(self.graph.outputs) if v.const is None]
        return _live_at(self.graph, [b])[b]


def split_pipeline(g: Graph, stages: int, *, balance: str = "flops", args: tuple = (), kwargs: dict | None = None,
                   memory_limit: int | str | None = None, state_factor: float = 4.0, in_flight: int | None = None,
                   slack: float = SLACK) -> Pipeline:
    """``g`` cut into ``stages`` pipeline stages balanced by ``balance`` (``bridge.to_pipeline`` traces a model
    and calls this; see the module doc). ``args``/``kwargs``: one microbatch, for ``balance="time"``."""
    if balance not in BALANCES:
        raise TransformError(f"to_pipeline: balance must be one of {BALANCES}, not {balance!r}")
    if not isinstance(stages, int) or isinstance(stages, bool) or stages < 1:
        raise TransformError(f"to_pipeline: stages must be a positive int, not {stages!r}")
    if not g.nodes or stages > len(g.nodes):
        raise TransformError(f"to_pipeline: cannot cut {len(g.nodes)} nodes into {stages} non-empty stages")
    if balance == "time":
        if not args and g.inputs:
            raise TransformError("to_pipeline: balance='time' runs the graph: give args= (one microbatch)")
        weights = node_times(g, args, kwargs or {})
    else:
        weights = node_weights(g, balance)
    limit = None
    if memory_limit is not None:
        most = parse_bytes(memory_limit)
        sizes = stage_memory_sizes(g, state_factor, in_flight or stages)
        big = [(n, m) for n, m in zip(g.nodes, sizes) if m > most]
        if big:
            listed = ", ".join(f"%{n.name} ({n.scope.path or n.op}) ~{human_bytes(m)}" for n, m in big[:5])
            raise TransformError(f"to_pipeline: {len(big)} node(s) alone need more than memory_limit "
                                 f"{human_bytes(most)}: {listed}")
        limit = (sizes, most)
    try:
        cuts, ideal = balanced_cuts(g, stages, balance, weights, slack=slack, limit=limit)
    except TransformError as e:
        need = f" (per stage: {state_factor:g} x parameter bytes + activations of {in_flight or stages} " \
               "microbatches)" if limit else ""
        raise TransformError(f"to_pipeline: {e}{need}. Use more stages, a larger memory_limit, or smaller "
                             "microbatches.") from None
    _refuse_shared(g, cuts)
    info = _stage_info(g, cuts, weights)
    memory = None
    if limit is not None:
        bounds = [0, *cuts, len(g.nodes)]
        memory = [sum(limit[0][a:b]) for a, b in zip(bounds, bounds[1:])]
    return Pipeline(graph=g, cuts=cuts, info=info, balance=balance, ideal=ideal, memory=memory)


# ---- costs -----------------------------------------------------------------------------------------------
def node_times(g: Graph, args: tuple, kwargs: dict, repeat: int = 3) -> list[int]:
    """Nanoseconds each node takes on the example (its op run ``repeat`` times on the example values after one
    warm-up run of the whole graph, the fastest kept); at least 1 each."""
    from ..backends.ort import run_all

    run_all(g, args, kwargs)  # warm-up: lazy initializations, allocator
    times: dict[int, float] = {}
    run_all(g, args, kwargs, times=times, repeat=repeat)
    return [max(1, int(times.get(id(n), 0) * 1e9)) for n in g.nodes]


def stage_memory_sizes(g: Graph, state_factor: float, in_flight: int) -> list[int]:
    """Per node, the bytes it adds to its stage while training: ``state_factor`` x the parameter bytes it is the
    first user of, plus its output bytes for ``in_flight`` microbatches."""
    from ..analysis.costs import node_costs

    costs = node_costs(g)
    return [int(state_factor * costs[n].param_bytes + in_flight * costs[n].out_bytes) for n in g.nodes]


_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6, "mib": 2**20,
          "g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tb": 10**12, "tib": 2**40}


def parse_bytes(x: int | float | str) -> int:
    """Bytes from an int or a string such as "8GiB", "512 MB", "1.5g"."""
    if isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0:
        return int(x)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(x))
    if not m or m.group(2).lower() not in _UNITS or float(m.group(1)) <= 0:
        raise TransformError(f"memory_limit: expected a positive number of bytes or a size such as '8GiB', not {x!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


# ---- stages ----------------------------------------------------------------------------------------------
def _stage_info(g: Graph, cuts: list[int], weights: list[int]) -> list[StageInfo]:
    nodes = g.nodes
    bounds = [0, *cuts, len(nodes)]
    live = _live_at(g, bounds)
    info = []
    for s, (a, b) in enumerate(zip(bounds, bounds[1:])):
        ins = list(g.inputs) if s == 0 else live[a]
        outs = [v for v in iter_values(g.outputs) if v.const is None] if b == len(nodes) else live[b]
        info.append(StageInfo(s, b - a, nodes[a].name, nodes[b - 1].name, sum(weights[a:b]),
                              [v.name for v in ins], [v.name for v in outs]))
    return info


def _refuse_shared(g: Graph, cuts: list[int]) -> None:
    """A parameter read in two stages would be two copies, trained apart: refuse, naming them."""
    bounds = [0, *cuts, len(g.nodes)]
    where: dict[int, tuple[Value, set[int]]] = {}
    for s, (a, b) in enumerate(zip(bounds, bounds[1:])):
        for node in g.nodes[a:b]:
            for v in iter_values(node.args):
                if v.const is not None and v.kind == "param":
                    where.setdefault(id(v), (v, set()))[1].add(s)
    shared = [(v, sorted(st)) for v, st in where.values() if len(st) > 1]
    if shared:
        listed = "; ".join(f"{' = '.join(v.names)} (stages {', '.join(map(str, st))})" for v, st in shared)
        raise TransformError(f"to_pipeline: {len(shared)} parameter(s) are used in more than one stage, where each "
                             f"stage would train its own copy: {listed}. Untie them (one copy per use) before "
                             "splitting, or choose stages/balance so that their users share a stage.")


def _own_state(mod: nn.Module) -> None:
    """Give a generated stage module copies of its parameters and buffers (they are the model's own tensors), so
    training the stage never changes the model."""
    memo: dict[int, torch.Tensor] = {}
    for m in mod.modules():
        for k, p in list(m._parameters.items()):
            if p is not None:
                if id(p) not in memo:
                    memo[id(p)] = nn.Parameter(p.detach().clone(), requires_grad=p.requires_grad)
                m._parameters[k] = memo[id(p)]
        for k, b in list(m._buffers.items()):
            if b is not None:
                if id(b) not in memo:
                    memo[id(b)] = b.detach().clone()
                m._buffers[k] = memo[id(b)]


def _blank(v: Value, device: Any, requires_grad: bool = False) -> torch.Tensor:
    spec = v.spec
    shape = [int(d) for d in spec.shape]
    t = torch.zeros(shape, dtype=spec.dtype, device=device if device is not None else "cpu")
    return t.requires_grad_(requires_grad)
