"""torch.export frontend: aten-level graphs, scope from ``nn_module_stack``; used when fx cannot trace.

Also converts an ``ExportedProgram`` a user already has (``bridge.trace(ep)``).
"""
from __future__ import annotations

import contextlib
import io
import logging
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensor
from torch.fx.node import map_arg

from ..errors import BridgeError
from ..ir import structure
from ..ir.graph import ATOMS, Graph, Value
from ..ops import registry
from .common import (GraphBuilder, add_unused_state, canonical_call, scope_from_stack, set_outputs, static_access,
                     tensor_owners, trace_into, user_frame)
from .signature import InputBinding, make_wrapper

_PREFIX = "m."
_SKIP_PREFIXES = ("aten._assert", "aten.sym_constrain_range", "aten._functional_assert",
                  "aten._assert_tensor_metadata")


def _is_leaf(o) -> bool:
    return isinstance(o, (torch.Tensor, torch.SymInt, torch.SymFloat, torch.SymBool))


def trace_export(model: torch.nn.Module, binding: InputBinding, *, dynamic=None, fake: bool = True,
                 data_dependent: str = "retry") -> Graph:
    wrapper = make_wrapper(model, binding, _is_leaf)
    dynamic_shapes = _dynamic_shapes(binding, dynamic or {})
    # an example that views another tensor (x[:, -2:] of a mask) makes the exported program fail to re-trace when
    # it is decomposed ("'NoneType' object has no attribute 'size'"): its own copy serves, the sizes are the same
    examples = tuple(t.clone() if isinstance(t, torch.Tensor) and t._is_view() else t for t in binding.examples)
    with _quiet_torch():
        ep = torch.export.export(wrapper, examples, dynamic_shapes=dynamic_shapes, strict=False)
        if _mutates(ep):  # x[i] = v, add_, fill_: functionalized (select_scatter, add, ...), one graph of values
            ep = ep.run_decompositions({})
    g = convert(ep, dict(zip(binding.names, binding.examples)), model, prefix=_PREFIX, fake=fake, dynamic=dynamic,
                out_spec=wrapper.out_spec, data_dependent=data_dependent)
    g.meta.update(input_binding=binding.params, model_type=type(model).__name__)
    return g


def _mutates(ep) -> bool:
    """Whether the program writes into a tensor (then it is functionalized: decomposing it again costs as much as
    the export). ``detach_`` writes no value (a cache rebuilt from its tensors detaches them in place): it is read
    as ``detach``."""
    for n in ep.graph.nodes:
        schema = getattr(n.target, "_schema", None)
        if n.op == "call_function" and schema is not None and schema.is_mutable and \
                n.target is not torch.ops.aten.detach_.default:
            return True
    return False


def from_exported_program(ep: torch.export.ExportedProgram, args: tuple = (), kwargs: dict | None = None) -> Graph:
    """A bridge Graph from an ExportedProgram; example inputs default to zeros of the recorded shapes."""
    users = [s for s in ep.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    flat_args = list(args) + list((kwargs or {}).values())
    placeholders = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    examples = {}
    for i, s in enumerate(users):
        if i < len(flat_args):
            examples[s.arg.name] = flat_args[i]
        else:
            val = placeholders[s.arg.name].meta.get("val")
            examples[s.arg.name] = torch.zeros([int(d) for d in val.shape], dtype=val.dtype)
    g = convert(ep, examples, ep.module(), prefix="", fake=True, dynamic=None, out_spec=None)
    g.meta.update(model_type="ExportedProgram")
    return g


@contextlib.contextmanager
def _quiet_torch():
    """torch.export logs partial graphs and symbolic-shape warnings while it fails; bridge reports failures itself."""
    names = ("torch._dynamo", "torch._export", "torch.export", "torch.fx.experimental.symbolic_shapes",
             "torch._subclasses", "torch.fx")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def _dynamic_shapes(binding: InputBinding, dynamic: dict) -> dict | None:
    if not dynamic:
        return None
    out = {}
    for name in binding.names:
        spec = dynamic.get(name)
        # Dim.DYNAMIC rather than named Dims: torch.export derives range constraints itself (x[1:] needs a
        # size >= 2) instead of refusing; bridge names the symbols from its own propagation
        out[name] = {d: torch.export.Dim.DYNAMIC for d in spec} if spec else None
    return out


def convert(ep, examples: dict, model: torch.nn.Module, *, prefix: str, fake: bool, dynamic, out_spec,
            data_dependent: str = "retry") -> Graph:
    b = GraphBuilder(fake=fake, dynamic=dynamic, data_dependent=data_dependent)
    with b.session():
        return _convert(b, ep, examples, model, prefix, fake, out_spec)


def _export_mode(ep):
    """torch.export's fake mode (with its ShapeEnv), from the placeholders' values; None where they have none."""
    for n in ep.graph.nodes:
        val = n.meta.get("val") if n.op == "placeholder" else None
        if isinstance(val, FakeTensor) and val.fake_mode.shape_env is not None:
            return val.fake_mode
    return None


def _convert(b: GraphBuilder, ep, examples: dict, model: torch.nn.Module, prefix: str, fake: bool, out_spec) -> Graph:
    sig = ep.graph_signature
    mode = _export_mode(ep) if fake else None
    if mode is not None:  # the program's own fake values serve as examples (see _node)
        b.adopt(mode)
    owners = tensor_owners(model)
    state = dict(ep.state_dict)
    state.update(getattr(ep, "constants", {}) or {})
    specs = {s.arg.name: s for s in sig.input_specs if hasattr(s.arg, "name")}
    env: dict[Any, Any] = {}
    mutations = [s for s in sig.output_specs if s.kind.name not in ("USER_OUTPUT",)]

    def strip(name: str) -> str:
        return name[len(prefix):] if prefix and name.startswith(prefix) else name

    for n in ep.graph.nodes:
        if n.op == "placeholder":
            spec = specs.get(n.name)
            kind = spec.kind.name if spec is not None else "USER_INPUT"
            if kind == "USER_INPUT":
                val = n.meta.get("val")
                adopted = mode is not None and isinstance(val, FakeTensor) and val.fake_mode is mode
                env[n] = b.input_of(n.name, val) if adopted else b.input(n.name, examples[n.name])
            elif kind in ("PARAMETER", "BUFFER", "CONSTANT_TENSOR"):
                t = state[spec.target]
                okind, names = owners.get(id(t), ("param" if kind == "PARAMETER" else
                                                  "buffer" if kind == "BUFFER" else "constant", [strip(spec.target)]))
                env[n] = b.constant(t, okind, names)
            else:  # tokens, custom objects: passed through as python values
                env[n] = state.get(getattr(spec, "target", None))
            continue
        if n.op == "output":
            # output specs are positional: buffer mutations, then the user's outputs
            flat = [env[a] if isinstance(a, torch.fx.Node) else a
                    for a, s in zip(n.args[0], sig.output_specs) if s.kind.name == "USER_OUTPUT"]
            set_outputs(b.graph, flat, out_spec if out_spec is not None else _from_treespec(ep.call_spec.out_spec))
            break
        _node(b, n, env, ep.graph_module, prefix)
    add_unused_state(b, model, owners)
    g = b.graph
    g.meta.update(frontend="export", symbols=dict(b.symbols), fake=fake,
                  buffer_mutations=[s.target for s in mutations if s.kind.name == "BUFFER_MUTATION"])
    return g


def _node(b: GraphBuilder, n: torch.fx.Node, env: dict, gm: torch.fx.GraphModule, prefix: str) -> None:
    """Convert one get_attr or call_function node of an exported graph (or of a region's subgraph) into ``b``."""
    if n.op == "get_attr":
        obj = getattr(gm, n.target)
        env[n] = b.constant(obj, "constant", [n.target]) if isinstance(obj, torch.Tensor) else obj
        return
    target = n.target
    tname = str(target)
    args = map_arg(n.args, lambda a: env[a])
    kwargs = map_arg(n.kwargs, lambda a: env[a])
    if tname == "aten._assert_scalar.default":
        env[n] = _check(b, args, n)
        return
    if tname.startswith(_SKIP_PREFIXES):
        env[n] = None
        return
    if target is _getitem:
        ok, val = static_access(args[0], "getitem", args[1])
        if ok:
            env[n] = val
            return
    scope = scope_from_stack(n.meta.get("nn_module_stack"), prefix)
    source = user_frame(n.meta.get("stack_trace"))
    if isinstance(target, torch._ops.HigherOrderOperator) and target.__name__ in _CONTROL:
        env[n] = _CONTROL[target.__name__](b, args, kwargs, scope=scope, source=source, name=n.name)
        return
    kind = "aten" if isinstance(target, torch._ops.OpOverload) else "function"
    opdef, canon, wrap = canonical_call(kind, target, args, kwargs)
    if opdef is None:  # an op export keeps whole (aten._weight_norm, a composite one): its decomposition instead
        done, result = trace_into(b, target, args, kwargs, scope=scope, source=source, name=n.name)
        if done:
            env[n] = result
            return
        canon = f"{canon}; {result}"
    result, _ = b.call_or_opaque(opdef, canon, target, args, kwargs, scope=scope, source=source, name=n.name,
                                 known=_same_value(b, n, kind, canon, wrap))
    env[n] = wrap(result) if wrap is not None else result


_DROPPED = frozenset({"layout", "pin_memory", "memory_format", "non_blocking"})  # kwargs canonical_call leaves out


_SYM = (torch.SymInt, torch.SymFloat, torch.SymBool)


def _plain(obj) -> bool:
    """Do a call's arguments hold only graph Values and python values (nested in lists, tuples, dicts)? Anything
    else (a secondary output bridge does not compute, ``NotComputed``, which refuses any use) makes the call run."""
    for a in (obj.values() if type(obj) is dict else obj):
        kind = type(a)
        if kind is Value or kind in ATOMS or kind in _SYM:
            continue
        if isinstance(a, (list, tuple, dict)) and _plain(a):  # (fx's immutable_list too)
            continue
        return False
    return True


def _same_value(b: GraphBuilder, n: torch.fx.Node, kind: str, canon, wrap) -> Any:
    """torch.export's value of node ``n`` where the canonical op computes exactly it: an aten overload registered to
    the op as it is (no adapter, none of its arguments left out), whose canonical arguments are ``_plain``, one
    tensor, of the builder's adopted mode. Fake dispatch of it again cost as much as the export (8 ms a reshape with
    symbolic sizes)."""
    val = n.meta.get("val")
    if kind != "aten" or wrap is not None or not isinstance(val, FakeTensor) or val.fake_mode is not b.mode or \
            _DROPPED & n.kwargs.keys() or not isinstance(canon, dict) or not _plain(canon):
        return None
    hit = registry.for_aten(n.target)
    return val if hit is not None and hit[1] is None else None


def _check(b: GraphBuilder, args, n: torch.fx.Node) -> Any:
    """torch's runtime assertion ``_assert_scalar(condition, message)`` as a ``check`` node, unless the condition
    is known to hold: a python True, or what torch knows of the sizes involved (an unbacked size's own range, which
    torch asserts for every nonzero or masked_select: ``u0 >= 0``)."""
    from torch.fx.experimental.symbolic_shapes import statically_known_true

    cond, message = (list(args) + [""])[:2]
    if not isinstance(cond, Value):
        if not cond:  # false already at trace time: the model fails on these inputs, as eager would
            raise BridgeError(f"a runtime assertion of the model fails on the example inputs: {message}")
        return None
    example = b.example_of(cond)
    if isinstance(example, torch.SymBool) and statically_known_true(example):
        return None
    return b.add_result("check", {"condition": cond, "message": str(message)}, example, name="check",
                        source=user_frame(n.meta.get("stack_trace")))


# ---- control flow: torch's higher-order ops become nodes with regions (bridge/ops/control.py) --------------------
def _region(b: GraphBuilder, gm: torch.fx.GraphModule, operands: list, name: str, where: dict) -> GraphBuilder:
    """The subgraph ``gm`` of a higher-order op as a region: a Graph of its own whose inputs take the examples of
    ``operands`` (the node's operands, in order), built in ``b``'s propagation mode and symbols. Returns the
    region's builder (its ``graph``, and the examples of its values). torch.export records no module stack and no
    user line inside a subgraph: its nodes get those of the node that owns the region (``where``)."""
    sub = b.region()
    env: dict[Any, Any] = {}
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(operands):
        raise BridgeError(f"region {name} takes {len(placeholders)} inputs but is given {len(operands)}")
    for ph, v in zip(placeholders, operands):
        env[ph] = sub.region_input(ph.name, v, b)
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            continue
        if n.op == "output":
            out = n.args[0]
            flat = [env[a] if isinstance(a, torch.fx.Node) else a
                    for a in (out if isinstance(out, (tuple, list)) else [out])]
            spec = ("tuple", [("leaf", i) for i in range(len(flat))]) if isinstance(out, (tuple, list)) else \
                ("leaf", 0)
            set_outputs(sub.graph, flat, spec)
            break
        _node(sub, n, env, gm, "")
    for node in sub.graph.nodes:
        if not node.scope and where.get("scope"):
            node.scope = where["scope"]
        node.source = node.source or where.get("source")
    sub.graph.meta.update(frontend="export", region=name)
    return sub


def _outputs(sub: GraphBuilder) -> tuple:
    return tuple(sub.example_of(v) if isinstance(v, Value) else v for v in sub.graph.outputs)


def _cond(b: GraphBuilder, args, kwargs, **where) -> Any:
    pred, true_gm, false_gm, operands = args
    operands = list(operands)
    true_b = _region(b, true_gm, operands, "true_fn", where)
    false_b = _region(b, false_gm, operands, "false_fn", where)
    if isinstance(pred, bool):  # decided at trace time
        pred = b.constant(torch.tensor(pred), "constant", ["pred"])
    taken = true_b
    if b.mode is None:  # real propagation: the examples downstream are the values of the branch taken
        taken = true_b if bool(b.example_of(pred)) else false_b
    return b.add_result("cond", {"pred": pred, "true_fn": true_b.graph, "false_fn": false_b.graph,
                                 "operands": operands}, _outputs(taken), **where)


def _while_loop(b: GraphBuilder, args, kwargs, **where) -> Any:
    cond_gm, body_gm, carried, additional = args
    carried, additional = list(carried), list(additional)
    cond_fn = _region(b, cond_gm, carried + additional, "cond_fn", where).graph
    body_fn = _region(b, body_gm, carried + additional, "body_fn", where).graph
    if b.mode is None:  # real propagation: run the loop
        from ..ops.control import while_loop

        examples = while_loop(cond_fn, body_fn, [b.example_of(v) for v in carried],
                              [b.example_of(v) for v in additional])
    else:  # fake: the carried values keep their specs through every iteration, as torch.while_loop requires
        examples = tuple(b.example_of(v) for v in carried)
    return b.add_result("while_loop", {"cond_fn": cond_fn, "body_fn": body_fn, "carried_inputs": carried,
                                       "additional_inputs": additional}, examples, **where)


def _steps(b: GraphBuilder, xs: list) -> list:
    """Examples of one step (index 0 along dim 0) of each sequence in ``xs``."""
    with (b.mode if b.mode is not None else contextlib.nullcontext()):
        return [b.example_of(x)[0] for x in xs]


def _stacked(b: GraphBuilder, step_examples, xs: list) -> tuple:
    """Examples of per-step outputs stacked along a new dim 0 as long as the sequences ``xs``."""
    length = b.example_of(xs[0]).shape[0]
    with (b.mode if b.mode is not None else contextlib.nullcontext()):
        return tuple(y.unsqueeze(0).expand(length, *y.shape).clone() for y in step_examples)


def _scan(b: GraphBuilder, args, kwargs, **where) -> Any:
    combine_gm, init, xs, additional = args
    init, xs, additional = list(init), list(xs), list(additional)
    sub = _region(b, combine_gm, init + _steps(b, xs) + additional, "combine_fn", where)
    args = {"combine_fn": sub.graph, "init": init, "xs": xs, "additional_inputs": additional}
    if b.mode is None:  # real propagation: run it
        from ..ops.control import scan

        examples = scan(sub.graph, [b.example_of(v) for v in init], [b.example_of(v) for v in xs],
                        [b.example_of(v) for v in additional])
    else:
        outs = _outputs(sub)
        examples = tuple(b.example_of(v) for v in init) + _stacked(b, outs[len(init):], xs)
    return b.add_result("scan", args, examples, **where)


def _map(b: GraphBuilder, args, kwargs, **where) -> Any:
    body_gm, xs, extra = args
    xs, extra = list(xs), list(extra)
    sub = _region(b, body_gm, _steps(b, xs) + extra, "body_fn", where)
    args = {"body_fn": sub.graph, "xs": xs, "args": extra}
    if b.mode is None:
        from ..ops.control import map_

        examples = map_(sub.graph, [b.example_of(v) for v in xs], [b.example_of(v) for v in extra])
    else:
        examples = _stacked(b, _outputs(sub), xs)
    return b.add_result("map", args, examples, **where)


def _associative_scan(b: GraphBuilder, args, kwargs, **where) -> Any:
    combine_gm, xs, additional = args
    xs, additional = list(xs), list(additional)
    steps = _steps(b, xs)
    sub = _region(b, combine_gm, steps + steps + additional, "combine_fn", where)
    args = {"combine_fn": sub.graph, "xs": xs, "additional_inputs": additional}
    if b.mode is None:
        from ..ops.control import associative_scan

        examples = associative_scan(sub.graph, [b.example_of(v) for v in xs], [b.example_of(v) for v in additional])
    else:  # the outputs have the sequences' specs
        with b.mode:
            examples = tuple(b.example_of(v).clone() for v in xs)
    return b.add_result("associative_scan", args, examples, **where)


_CONTROL = {"cond": _cond, "while_loop": _while_loop, "scan": _scan, "map_impl": _map,
            "associative_scan": _associative_scan}


def _from_treespec(ts) -> tuple:
    """A pytree TreeSpec as a bridge structure spec (leaves numbered in order)."""
    counter = [0]

    def go(s):
        if s.is_leaf():
            counter[0] += 1
            return ("leaf", counter[0] - 1)
        kids = [go(c) for c in (s.children() if hasattr(s, "children") else s.children_specs)]
        t = s.type
        if t is tuple:
            return ("tuple", kids)
        if t is list:
            return ("list", kids)
        if t is dict or (isinstance(t, type) and issubclass(t, dict)):
            return ("dict", t, tuple(s.context), kids)
        if isinstance(t, type) and issubclass(t, tuple) and hasattr(t, "_fields"):
            return ("namedtuple", t, kids)
        if isinstance(t, type) and structure.pytree_node(t) is not None:  # a registered class (a cache)
            return ("pytree", t, s.context, kids, tuple(str(i) for i in range(len(kids))))
        return ("tuple", kids)

    return go(ts)


import operator as _operator  # noqa: E402

_getitem = _operator.getitem
