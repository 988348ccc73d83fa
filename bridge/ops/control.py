"""Control flow: ops that own regions (subgraphs), as torch's higher-order ops do.

- ``cond(pred, true_fn, false_fn, operands)``: ``true_fn(*operands)`` when the 0-d ``pred`` is true, else
  ``false_fn(*operands)``; both regions return the same number of tensors of the same specs (``torch.cond``).
- ``while_loop(cond_fn, body_fn, carried_inputs, additional_inputs)``: while ``cond_fn(*carried, *additional)``
  (a 0-d bool) holds, ``carried = body_fn(*carried, *additional)``; returns the last ``carried``
  (``torch._higher_order_ops.while_loop``).
- ``scan(combine_fn, init, xs, additional_inputs)``: a carry threaded through the steps of dim 0 of ``xs``, the
  per-step outputs stacked (``torch._higher_order_ops.scan``); ``map(body_fn, xs, args)``: the region applied to
  each step of dim 0 of ``xs``, stacked (``torch._higher_order_ops.map``); ``associative_scan(combine_fn, xs,
  additional_inputs)``: inclusive scans of ``xs`` along dim 0 (``torch._higher_order_ops.associative_scan``).

Regions are closed ``Graph`` s held in the node's args (see bridge/ir/graph.py): operands carry in what they read.
Their ``impl`` runs the regions (each through its generated module); generated code writes the same as plain
``if``/``while`` (bridge/backends/torch.py). Costs: a ``cond`` costs its dearer branch; a ``while_loop`` one
iteration (its ``cond_fn`` and ``body_fn``), since the trip count is known only when it runs; a ``scan`` or
``map`` its region times the length of ``xs``.
"""
from __future__ import annotations

from typing import Any

import torch

from ..ir.graph import Value
from ..ir.spec import TensorSpec
from . import registry
from ._util import dim_size
from .onnx_helpers import INT64_MAX, slice_, squeeze
from .registry import onnx_import, onnx_lowering, register


def region_outputs(region, operands) -> tuple:
    """The flat outputs of running ``region`` on ``operands``: a Graph (through its generated module), or the
    function generated code passes for it."""
    out = region.run(*operands) if hasattr(region, "run") else region(*operands)
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _region_cost(region, field: str) -> int:
    """``flops`` or ``macs`` of one run of ``region``: its nodes' (nested regions through their own ops), with
    symbolic dims sized as the enclosing graph's are (the ``dim_values`` in force)."""
    total = 0
    for n in region.nodes:
        opdef = registry.get(n.op)
        fn = getattr(opdef, field) if opdef is not None else None
        total += int(fn(n)) if fn is not None else 0
    return total


def _inner(fact: str):
    """A control-flow node's ``effect`` / ``random`` fact: that of any node in its regions (nested ones too)."""
    def holds(node) -> bool:
        for _, region in node.regions:
            for n, _ in region.walk():
                opdef = registry.get(n.op)
                if opdef is None or getattr(opdef, fact)(n):
                    return True
        return False
    return holds


_FACTS = {"effect": _inner("has_effect"), "random": _inner("is_random")}


def _cond_cost(field):
    return lambda node: max(_region_cost(node.args["true_fn"], field), _region_cost(node.args["false_fn"], field))


def _loop_cost(field):
    return lambda node: _region_cost(node.args["cond_fn"], field) + _region_cost(node.args["body_fn"], field)


@register("cond", family="control", n_tensor_params=1, flops=_cond_cost("flops"), macs=_cond_cost("macs"),
          **_FACTS)
def cond(pred, true_fn, false_fn, operands):
    """``true_fn(*operands)`` if the 0-d tensor ``pred`` is true, else ``false_fn(*operands)`` (a tuple)."""
    return region_outputs(true_fn if bool(pred) else false_fn, operands)


@register("while_loop", family="control", n_tensor_params=0, flops=_loop_cost("flops"), macs=_loop_cost("macs"),
          **_FACTS)
def while_loop(cond_fn, body_fn, carried_inputs, additional_inputs: Any = ()):
    """``carried = body_fn(*carried, *additional_inputs)`` while ``cond_fn(*carried, *additional_inputs)`` holds;
    the last ``carried`` (a tuple)."""
    carried, extra = tuple(carried_inputs), tuple(additional_inputs)
    while bool(region_outputs(cond_fn, carried + extra)[0]):
        carried = region_outputs(body_fn, carried + extra)
    return carried



# ---- more control-flow ops (lead) --------------------------------------------------------------------------------
def _length(node, key: str) -> int:
    """Iterations of a scan or map: dim 0 of its first sequence input."""
    xs = node.args[key]
    return dim_size(xs[0].spec.shape[0]) if xs and getattr(xs[0], "spec", None) is not None else 1


def _scan_cost(field):
    return lambda node: _length(node, "xs") * _region_cost(node.args["combine_fn"], field)


def _assoc_cost(field):
    return lambda node: max(_length(node, "xs") - 1, 0) * _region_cost(node.args["combine_fn"], field)


def _map_cost(field):
    return lambda node: _length(node, "xs") * _region_cost(node.args["body_fn"], field)


def _stack(items: list, n: int) -> tuple:
    return tuple(torch.stack([it[i] for it in items]) for i in range(n))


@register("scan", family="control", n_tensor_params=0, flops=_scan_cost("flops"), macs=_scan_cost("macs"),
          **_FACTS)
def scan(combine_fn, init, xs, additional_inputs: Any = ()):
    """For each step ``t`` of dim 0 of ``xs``: ``carry, y = combine_fn(*carry, *(x[t] for x in xs),
    *additional_inputs)``, starting from ``init``; returns the last carry and the ``y`` of every step stacked
    (``torch._higher_order_ops.scan``). ``xs`` must not be empty along dim 0."""
    carry, extra, ys = tuple(init), tuple(additional_inputs), []
    n = len(carry)
    length = xs[0].shape[0]
    if length == 0:
        raise ValueError("scan over a sequence of length 0: there is no step to give the outputs' shapes")
    for t in range(length):
        out = region_outputs(combine_fn, carry + tuple(x[t] for x in xs) + extra)
        carry = out[:n]
        ys.append(out[n:])
    return carry + _stack(ys, len(ys[0]))


@register("associative_scan", family="control", n_tensor_params=0, flops=_assoc_cost("flops"),
          macs=_assoc_cost("macs"), **_FACTS)
def associative_scan(combine_fn, xs, additional_inputs: Any = ()):
    """The inclusive scan of each sequence in ``xs`` along dim 0 under ``combine_fn``: step ``t`` of the outputs
    is ``combine_fn(*(step t - 1 of the outputs), *(x[t] for x in xs), *additional_inputs)``, step 0 is
    ``x[0]`` (``torch._higher_order_ops.associative_scan``). Computed here one step after another, torch combines
    in a tree: the same numbers for the associative ``combine_fn`` torch requires, not for another."""
    extra = tuple(additional_inputs)
    if xs[0].shape[0] == 0:
        return tuple(x.clone() for x in xs)
    acc = tuple(x[0] for x in xs)
    steps = [acc]
    for t in range(1, xs[0].shape[0]):
        acc = region_outputs(combine_fn, acc + tuple(x[t] for x in xs) + extra)
        steps.append(acc)
    return _stack(steps, len(xs))


@register("map", family="control", n_tensor_params=0, flops=_map_cost("flops"), macs=_map_cost("macs"),
          **_FACTS)
def map_(body_fn, xs, args: Any = ()):
    """``body_fn(*(x[t] for x in xs), *args)`` for each step ``t`` of dim 0 of ``xs``, each output stacked
    (``torch._higher_order_ops.map``). ``xs`` must not be empty along dim 0."""
    extra = tuple(args)
    length = xs[0].shape[0]
    if length == 0:
        raise ValueError("map over a sequence of length 0: there is no step to give the outputs' shapes")
    outs = [region_outputs(body_fn, tuple(x[t] for x in xs) + extra) for t in range(length)]
    return _stack(outs, len(outs[0]))


# ---- ONNX lowering: cond -> If, while_loop -> Loop, scan and map -> Scan (helper H1) -------------------------------
# Regions become ONNX subgraphs through the context (``ctx.subgraph``, ``ctx.region``), which names every tensor of
# the model once: a subgraph reads outer tensors (operands, weights) by name, as ONNX's outer scope allows.


def _bool(ctx, name: str, spec) -> str:
    """``name`` as a bool tensor, as If and Loop take their conditions (a 0-d tensor holds the one element)."""
    return name if getattr(spec, "dtype", None) is torch.bool or getattr(spec, "type", None) is bool \
        else ctx.cast(name, torch.bool)


def _out_specs(region, node) -> list:
    """The specs of ``region``'s outputs (the node's, for an output that is a python constant)."""
    return [o.spec if isinstance(o, Value) else n.spec for o, n in zip(region.outputs, node.outputs)]


@onnx_lowering("cond", complex=True)
def _cond_onnx(ctx, node):
    # cond(p, t, f, ops) -> If(p) {then: t(ops)} {else: f(ops)}: the branches read the operands from the outer scope
    ops = [ctx.input(v) for v in ctx["operands"]]
    branches = {attr: ctx.subgraph(lambda r=ctx[key]: ctx.region(r, ops), _out_specs(ctx[key], node),
                                   name=f"{node.name}_{key}")
                for attr, key in (("then_branch", "true_fn"), ("else_branch", "false_fn"))}
    return ctx.op("If", [_bool(ctx, ctx.input("pred"), ctx.spec("pred"))], n_out=len(node.outputs), **branches)


@onnx_lowering("while_loop", complex=True)
def _while_loop_onnx(ctx, node):
    # while c(h, x): h = b(h, x) -> Loop(M="", cond=c(h0, x), h0) {body(i, _, h): h' = b(h, x); (c(h', x), h')}:
    # no trip count, the condition computed once before the loop and at the end of each iteration; the additional
    # inputs x are read from the outer scope, the carried values h are the loop-carried dependencies
    cond_fn, body_fn = ctx["cond_fn"], ctx["body_fn"]
    carried = [ctx.input(v) for v in ctx["carried_inputs"]]
    extra = [ctx.input(v) for v in ctx["additional_inputs"]]
    stop = cond_fn.outputs[0]
    cond_spec = stop.spec if isinstance(stop, Value) else None  # None: a python constant, cast to bool
    first = _bool(ctx, ctx.region(cond_fn, carried + extra)[0], cond_spec)
    flag = TensorSpec((), torch.bool)
    state = [(ctx.fresh(f"{v.name}_in"), v.spec) for v in body_fn.inputs[:len(carried)]]

    def body():
        new = ctx.region(body_fn, [nm for nm, _ in state] + extra)
        return [_bool(ctx, ctx.region(cond_fn, new + extra)[0], cond_spec), *new]

    graph = ctx.subgraph(body, [flag, *_out_specs(body_fn, node)], name=f"{node.name}_body",
                         inputs=[(ctx.fresh(f"{node.name}_iter"), TensorSpec((), torch.int64)),
                                 (ctx.fresh(f"{node.name}_cond"), flag), *state])
    return ctx.op("Loop", ["", first, *carried], n_out=len(node.outputs), body=graph)


@onnx_lowering("scan", complex=True)
def _scan_onnx(ctx, node):
    # scan(f, init, xs, extra) -> Scan(init, xs) {body(h, x_t): f(h, x_t, extra)}: the carry as state variables,
    # xs as scan inputs and the per-step outputs as scan outputs (dim 0, forward: Scan's defaults); the additional
    # inputs are read from the outer scope
    return _scan_like(ctx, node, ctx["combine_fn"], list(ctx["init"]), list(ctx["xs"]),
                      list(ctx["additional_inputs"]))


@onnx_lowering("map", complex=True)
def _map_onnx(ctx, node):
    # map(f, xs, args) -> Scan(xs) {body(x_t): f(x_t, args)}: a Scan with no state variables (a Loop would need a
    # trip count from Shape and a Gather per sequence in its body for what Scan's scan inputs give)
    return _scan_like(ctx, node, ctx["body_fn"], [], list(ctx["xs"]), list(ctx["args"]))


@onnx_lowering("associative_scan", complex=True)
def _associative_scan_onnx(ctx, node):
    # step 0 is x[0]; the others a Scan over x[1:] whose state is the last step (each step's output twice: as the
    # state and as a scan output), then x[:1] and the scan outputs concatenated. A sequence shorter than 2 at run
    # time leaves Scan nothing to step through: onnxruntime refuses it (an error, not a wrong number)
    region, xs = ctx["combine_fn"], [ctx.input(v) for v in ctx["xs"]]
    length = ctx["xs"][0].spec.shape[0]
    if isinstance(length, int) and length < 2:  # nothing to combine: the sequences themselves
        return [ctx.op("Identity", [x]) for x in xs]
    n = len(xs)
    firsts = [slice_(ctx, x, [0], [1], [0]) for x in xs]
    inputs = [(ctx.fresh(f"{v.name}_in"), v.spec) for v in region.inputs[:2 * n]]
    outer = [ctx.input(v) for v in ctx["additional_inputs"]]

    def body():
        outs = ctx.region(region, [nm for nm, _ in inputs] + outer)
        return outs + outs

    specs = [o.spec for o in region.outputs]
    graph = ctx.subgraph(body, specs + specs, inputs=inputs, name=f"{node.name}_body")
    scan = ctx.op("Scan", [squeeze(ctx, f, [0]) for f in firsts] + [slice_(ctx, x, [1], [INT64_MAX], [0]) for x in xs],
                  n_out=2 * n, body=graph, num_scan_inputs=n)
    return [ctx.op("Concat", [f, ys], axis=0) for f, ys in zip(firsts, scan[n:])]


def _scan_like(ctx, node, region, init: list, xs: list, extra: list):
    """ONNX Scan of ``region`` over dim 0 of ``xs`` with state ``init``, reading ``extra`` from the outer scope."""
    if not xs:
        ctx.unsupported("it has no sequence to step through (xs is empty); ONNX Scan takes at least one")
    inputs = [(ctx.fresh(f"{v.name}_in"), v.spec) for v in region.inputs[:len(init) + len(xs)]]
    outer = [ctx.input(v) for v in extra]
    if not all(isinstance(o, Value) for o in region.outputs):
        ctx.unsupported("its region returns a python constant; each step's outputs must be tensors")
    graph = ctx.subgraph(lambda: ctx.region(region, [nm for nm, _ in inputs] + outer),
                         [o.spec for o in region.outputs], inputs=inputs, name=f"{node.name}_body")
    return ctx.op("Scan", [ctx.input(v) for v in init + xs], n_out=len(node.outputs), body=graph,
                  num_scan_inputs=len(xs))


# ---- ONNX import: If -> cond, Loop -> while_loop, Scan -> scan (helper H2) ----------------------------------------
# An ONNX subgraph reads outer values by name; its region gets them as operands (``ctx.captures``: the values
# computed at run time it, or a subgraph nested in it, reads), and holds the values known at import time as its
# own constants. Each subgraph is imported with the main graph's machinery (bridge/frontends/onnx.py
# ``RegionImport``), so shapes and dtypes propagate the same way and symbolic sizes stay symbolic.


def _scalar(ctx, x, what: str):
    """A one-element tensor (an If condition, a Loop's trip count or condition) as the 0-d one torch wants."""
    shape = ctx.spec(x).shape
    if any(isinstance(d, int) and d != 1 for d in shape):
        ctx.unsupported(f"its {what} has shape {list(shape)}; ONNX takes a tensor of one element")
    return ctx.call("reshape", input=x, shape=[]) if shape else x


def _merged(ctx, examples: list, specs: list) -> list:
    """The example of each output of an If whose branches give ``examples`` (one list per branch, ``specs``
    theirs): a size that differs between them is known only at run time (an unbacked symbol); a dtype or rank
    that differs is refused."""
    out = []
    for i, (exs, ss) in enumerate(zip(zip(*examples), zip(*specs))):
        if len({s.dtype for s in ss}) > 1 or len({len(s.shape) for s in ss}) > 1:
            ctx.unsupported(f"output {i} is {ss[0]} in one branch and {ss[1]} in the other: the branches must "
                            "agree on its element type and rank")
        dims = {j for j in range(len(ss[0].shape)) if len({s.shape[j] for s in ss}) > 1}
        out.append(ctx.unbacked(exs[0], dims) if dims and ctx.fake else exs[0])
    return out


@onnx_import("If")
def _if_import(ctx):
    known = ctx.const(0)
    if known is not None:  # decided now: the branch taken, inline
        if known.numel() != 1:
            ctx.unsupported(f"its condition has {known.numel()} elements; ONNX takes a tensor of one element")
        return ctx.inline("then_branch" if bool(known.reshape(())) else "else_branch")
    pred = _scalar(ctx, ctx.input(0), "condition")
    captures = ctx.captures("then_branch", "else_branch")
    regions, examples, specs = {}, [], []
    for attr, key in (("then_branch", "true_fn"), ("else_branch", "false_fn")):
        r = ctx.region(key, captures)
        regions[key] = r.finish(r.run(attr, []))
        examples.append([r.example(v) for v in regions[key].outputs])
        specs.append([v.spec for v in regions[key].outputs])
    if len(specs[0]) != len(specs[1]):
        ctx.unsupported(f"its branches give {len(specs[0])} and {len(specs[1])} outputs")
    if ctx.fake:
        out = _merged(ctx, examples, specs)
    else:  # real values: those of the branch the example takes
        out = examples[0] if bool(ctx.example(pred)) else examples[1]
    return list(ctx.add_result("cond", {"pred": pred, **regions, "operands": [v for _, v in captures]},
                               tuple(out)))


@onnx_import("Loop")
def _loop_import(ctx):
    """``Loop(M, cond, v...)`` as ``while_loop`` over (iteration number, cond, v..., scans...): the cond_fn is
    ``iter < M and cond`` (either part when the other is not given), the body the Loop's body (its iteration
    number and condition bound to the carried ones) then ``iter + 1``. Each scan output is carried as its rows so
    far (from an empty tensor, one more row per iteration). A carried value whose size changes between
    iterations gets a size known only at run time there."""
    if not ctx.has(0) and not ctx.has(1):
        ctx.unsupported("it has neither a trip count nor a condition, so it never ends")
    body = ctx.subgraph("body")
    n_v = ctx.n_inputs - 2
    n_scan = len(body.output) - 1 - n_v
    if n_scan < 0 or len(body.input) != n_v + 2:
        ctx.unsupported(f"its body takes {len(body.input)} inputs and gives {len(body.output)} outputs for "
                        f"{n_v} loop-carried values")
    if not ctx.fake and n_scan:
        ctx.unsupported("its scan outputs grow by a row per iteration, which needs symbolic sizes, and this "
                        "model's shapes are propagated with real values (another op has no fake-tensor kernel)")
    trip = ctx.const(0) if ctx.has(0) else None
    if trip is not None:
        if trip.numel() != 1:
            ctx.unsupported(f"its trip count has {trip.numel()} elements; ONNX takes a tensor of one element")
        trip = trip.reshape(())
    elif ctx.has(0):
        trip = _scalar(ctx, ctx.input(0), "trip count")
    trip_at_run_time = trip is not None and not isinstance(trip, torch.Tensor)  # else known now, or none
    cond = _scalar(ctx, ctx.input(1), "condition") if ctx.has(1) else torch.tensor(True)
    inits = [ctx.value(torch.tensor(0)), ctx.value(cond)] + [ctx.value(ctx.input(i)) for i in range(2, 2 + n_v)]
    captures = ctx.captures("body") + ([("trip_count", trip)] if trip_at_run_time else [])
    names = [vi.name for vi in body.input]
    examples = [ctx.example(v) for v in inits]  # of the carried values as they enter each iteration
    free: dict[int, set] = {}  # the dims of carried values whose size changes between iterations
    rows: list | None = None  # the specs of the scan outputs' rows, once known
    for _ in range(3 + sum(len(ctx.spec(v).shape) for v in inits)):  # each round frees a dim or finds the rows
        r = ctx.region("body_fn", list(zip(names, examples)) + captures)
        outs = [r.value(o) for o in r.run("body", r.inputs[:2 + n_v])]
        v_out, scans = outs[1:1 + n_v], outs[1 + n_v:]
        grow = _grown(ctx, [r.spec(x) for x in examples[2:2 + n_v]], [v.spec for v in v_out], free)
        for i, dims in grow.items():
            free.setdefault(i, set()).update(dims)
            examples[2 + i] = ctx.unbacked(examples[2 + i], free[i])
        if grow:
            continue
        if [v.spec for v in scans] != rows:  # (again) the scans' initial values: no rows yet
            rows = [v.spec for v in scans]
            # rows of a static shape: (0, *row); else zero-sized in every dim, made (0, *row) in the body
            empty = [torch.empty((0, *(s.shape if s.is_static else [0] * len(s.shape))), dtype=s.dtype)
                     for s in rows]
            inits[2 + n_v:] = [ctx.value(e) for e in empty]
            examples[2 + n_v:] = [ctx.unbacked(e, {0} if s.is_static else set(range(e.dim()))) if ctx.fake else e
                                  for e, s in zip(empty, rows)]
            names[2 + n_v:] = [f"{ctx.node.output[n_v + j] or 'scan'}_rows" for j in range(n_scan)]
            continue
        break
    else:
        ctx.unsupported("its loop-carried values do not settle to one shape")
    appended = []
    for acc, s in zip(r.inputs[2 + n_v:2 + n_v + n_scan], scans):
        if not s.spec.is_static:  # the rows so far as (rows, *row): the empty start takes the row's shape
            acc = r.call("reshape", input=acc, shape=[r.call("size", input=acc, dim=0)] + [
                d if isinstance(d, int) else r.call("size", input=s, dim=i) for i, d in enumerate(s.spec.shape)])
        appended.append(r.call("cat", tensors=[acc, r.call("unsqueeze", input=s, dim=0)]))
    step = r.call("add", input=r.inputs[0], other=torch.tensor(1))
    body_fn = r.finish([step, _region_scalar(ctx, r, outs[0]), *v_out, *appended])
    c = ctx.region("cond_fn", list(zip(names, examples)) + captures)
    go = c.inputs[1] if ctx.has(1) else None
    if trip is not None:
        below = c.call("lt", input=c.inputs[0], other=c.inputs[-1] if trip_at_run_time else trip)
        go = below if go is None else c.call("logical_and", input=below, other=go)
    cond_fn = c.finish([go], ("leaf", 0))
    if ctx.fake:
        out = examples
    else:  # real values: run the loop on them
        out = while_loop(cond_fn, body_fn, [ctx.example(v) for v in inits], [ctx.example(v) for _, v in captures])
    res = ctx.add_result("while_loop", {"cond_fn": cond_fn, "body_fn": body_fn, "carried_inputs": inits,
                                        "additional_inputs": [v for _, v in captures]}, tuple(out))
    return list(res)[2:]


def _grown(ctx, had: list, gives: list, free: dict, what: str = "loop-carried value") -> dict:
    """{index: dims} of the carried values (``what``: a Loop's, a Scan's state variables) whose sizes the body
    changes (beyond the dims already ``free``); a dtype or rank it changes is refused."""
    grow = {}
    for i, (a, b) in enumerate(zip(had, gives)):
        if a.dtype != b.dtype or len(a.shape) != len(b.shape):
            ctx.unsupported(f"{what} {i} enters the body as {a} and leaves it as {b}: a value carried "
                            "through a loop keeps its element type and rank")
        dims = {j for j, (x, y) in enumerate(zip(a.shape, b.shape)) if x != y and j not in free.get(i, ())}
        if dims:
            if not ctx.fake:
                ctx.unsupported(f"{what} {i} changes shape ({a} to {b}), which needs symbolic sizes, "
                                "and this model's shapes are propagated with real values (another op has no "
                                "fake-tensor kernel)")
            grow[i] = dims
    return grow


def _region_scalar(ctx, r, x):
    """The body's condition output as a 0-d bool in region ``r``."""
    s = r.spec(x)
    if s is None or s.dtype != torch.bool:
        ctx.unsupported(f"its body's condition output is {s}, not a bool tensor")
    return r.call("reshape", input=x, shape=[]) if s.shape else x


def _axes(ctx, attr: str, n: int, default: int, what: str) -> list:
    """Attribute ``attr`` of a Scan: one int per ``what`` (``n`` of them), ``default`` for each when absent."""
    vals = ctx.attr(attr)
    if vals is None:
        return [default] * n
    if len(vals) != n:
        ctx.unsupported(f"its {attr} has {len(vals)} entries for {n} {what}s")
    return [int(v) for v in vals]


def _axis(ctx, axis: int, rank: int, what: str) -> int:
    if not -rank <= axis < rank:
        ctx.unsupported(f"{what} has rank {rank}, so its axis {axis} is out of range")
    return axis % rank


def _direction(ctx, d: int, attr: str) -> bool:
    if d not in (0, 1):
        ctx.unsupported(f"its {attr} holds {d}; a direction is 0 (forward) or 1 (reverse)")
    return bool(d)


@onnx_import("Scan", since=9)
def _scan_import(ctx):
    """``Scan(state..., xs...)`` (opset 9 on) as ``scan``: its state variables are the ``init``, its scan inputs
    the ``xs`` and the outer values its body reads the ``additional_inputs``. The node always steps forward along
    dim 0: a scan input's axis is moved to dim 0 (and the input flipped, for a reverse one) before it, a scan
    output's dim 0 moved to its axis (flipped first, for a prepended one) after it. A state variable whose size
    changes between iterations gets a size known only at run time."""
    body = ctx.subgraph("body")
    n_scan = int(ctx.attr("num_scan_inputs"))
    n_state = ctx.n_inputs - n_scan
    n_y = len(body.output) - n_state
    if n_scan < 1 or n_state < 0 or n_y < 0 or len(body.input) != ctx.n_inputs:
        ctx.unsupported(f"it has {ctx.n_inputs} inputs with num_scan_inputs={n_scan}, and its body takes "
                        f"{len(body.input)} inputs and gives {len(body.output)} outputs: a Scan has at least one "
                        "scan input, and its body takes each state variable and scan input and gives each state "
                        "variable, then its scan outputs")
    if not all(ctx.has(i) for i in range(ctx.n_inputs)):
        ctx.unsupported("an input is left out; a Scan's inputs are all required")
    in_axes = _axes(ctx, "scan_input_axes", n_scan, 0, "scan input")
    in_rev = [_direction(ctx, d, "scan_input_directions")
              for d in _axes(ctx, "scan_input_directions", n_scan, 0, "scan input")]
    out_axes = _axes(ctx, "scan_output_axes", n_y, 0, "scan output")
    out_rev = [_direction(ctx, d, "scan_output_directions")
               for d in _axes(ctx, "scan_output_directions", n_y, 0, "scan output")]
    xs = []
    for i in range(n_scan):
        x = ctx.input(n_state + i)
        a = _axis(ctx, in_axes[i], ctx.rank(x), f"scan input {i}")
        if a:
            x = ctx.call("movedim", input=x, source=a, destination=0)
        if in_rev[i]:
            x = ctx.call("flip", input=x, dims=[0])
        xs.append(ctx.value(x))
    lengths = {ctx.spec(x).shape[0] for x in xs}
    if 0 in lengths:
        ctx.unsupported("its scan inputs have length 0: a scan needs a step to give its outputs' shapes")
    if len({d for d in lengths if isinstance(d, int)}) > 1:
        ctx.unsupported(f"its scan inputs have different lengths ({sorted(lengths, key=str)}) along their axes")
    inits = [ctx.value(ctx.input(i)) for i in range(n_state)]
    captures = ctx.captures("body")
    names = [vi.name for vi in body.input]
    steps = [ctx.step(x) for x in xs]
    examples = [ctx.example(v) for v in inits]  # of the state variables as they enter each step
    free: dict[int, set] = {}  # the dims of state variables whose size changes between steps
    for _ in range(1 + sum(len(ctx.spec(v).shape) for v in inits)):  # each round frees a dim, or settles
        r = ctx.region("combine_fn", list(zip(names, examples + steps)) + captures)
        outs = [r.value(o) for o in r.run("body", r.inputs[:n_state + n_scan])]
        grow = _grown(ctx, [r.spec(x) for x in examples], [v.spec for v in outs[:n_state]], free,
                      "state variable")
        if not grow:
            break
        for i, dims in grow.items():
            free.setdefault(i, set()).update(dims)
            examples[i] = ctx.unbacked(examples[i], free[i])
    else:
        ctx.unsupported("its state variables do not settle to one shape")
    combine_fn = r.finish(outs)
    extra = [v for _, v in captures]
    if ctx.fake:
        out = examples + [ctx.stacked(r.example(y), xs[0]) for y in outs[n_state:]]
    else:  # real values: run it on them
        out = scan(combine_fn, [ctx.example(v) for v in inits], [ctx.example(x) for x in xs],
                   [ctx.example(v) for v in extra])
    res = list(ctx.add_result("scan", {"combine_fn": combine_fn, "init": inits, "xs": xs,
                                       "additional_inputs": extra}, tuple(out)))
    for j in range(n_y):
        y = res[n_state + j]
        if out_rev[j]:
            y = ctx.call("flip", input=y, dims=[0])
        a = _axis(ctx, out_axes[j], ctx.rank(y), f"scan output {j}")
        res[n_state + j] = ctx.call("movedim", input=y, source=0, destination=a) if a else y
    return res
