"""torch.export frontend: aten-level graphs, scope from ``nn_module_stack``; used when fx cannot trace.

Also converts an ``ExportedProgram`` a user already has (``bridge.trace(ep)``).
"""
from __future__ import annotations

import contextlib
import io
import logging
from typing import Any

import torch
from torch.fx.node import map_arg

from ..ir.graph import Graph
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
    with _quiet_torch():
        ep = torch.export.export(wrapper, tuple(binding.examples), dynamic_shapes=dynamic_shapes, strict=False)
        if _mutates(ep):  # x[i] = v, add_, fill_: functionalized (select_scatter, add, ...), one graph of values
            ep = ep.run_decompositions({})
    g = convert(ep, dict(zip(binding.names, binding.examples)), model, prefix=_PREFIX, fake=fake, dynamic=dynamic,
                out_spec=wrapper.out_spec, data_dependent=data_dependent)
    g.meta.update(input_binding=binding.params, model_type=type(model).__name__)
    return g


def _mutates(ep) -> bool:
    for n in ep.graph.nodes:
        schema = getattr(n.target, "_schema", None)
        if n.op == "call_function" and schema is not None and schema.is_mutable:
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


def _convert(b: GraphBuilder, ep, examples: dict, model: torch.nn.Module, prefix: str, fake: bool, out_spec) -> Graph:
    sig = ep.graph_signature
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
                env[n] = b.input(n.name, examples[n.name])
            elif kind in ("PARAMETER", "BUFFER", "CONSTANT_TENSOR"):
                t = state[spec.target]
                okind, names = owners.get(id(t), ("param" if kind == "PARAMETER" else
                                                  "buffer" if kind == "BUFFER" else "constant", [strip(spec.target)]))
                env[n] = b.constant(t, okind, names)
            else:  # tokens, custom objects: passed through as python values
                env[n] = state.get(getattr(spec, "target", None))
            continue
        if n.op == "get_attr":
            obj = getattr(ep.graph_module, n.target)
            env[n] = b.constant(obj, "constant", [n.target]) if isinstance(obj, torch.Tensor) else obj
            continue
        if n.op == "output":
            # output specs are positional: buffer mutations, then the user's outputs
            flat = [env[a] if isinstance(a, torch.fx.Node) else a
                    for a, s in zip(n.args[0], sig.output_specs) if s.kind.name == "USER_OUTPUT"]
            set_outputs(b.graph, flat, out_spec if out_spec is not None else _from_treespec(ep.call_spec.out_spec))
            break
        target = n.target
        tname = str(target)
        if tname.startswith(_SKIP_PREFIXES):
            env[n] = None
            continue
        args = map_arg(n.args, lambda a: env[a])
        kwargs = map_arg(n.kwargs, lambda a: env[a])
        if target is _getitem:
            ok, val = static_access(args[0], "getitem", args[1])
            if ok:
                env[n] = val
                continue
        scope = scope_from_stack(n.meta.get("nn_module_stack"), prefix)
        source = user_frame(n.meta.get("stack_trace"))
        kind = "aten" if isinstance(target, torch._ops.OpOverload) else "function"
        opdef, canon, wrap = canonical_call(kind, target, args, kwargs)
        if opdef is None:  # an op export keeps whole (aten._weight_norm, a composite one): its decomposition instead
            done, result = trace_into(b, target, args, kwargs, scope=scope, source=source, name=n.name)
            if done:
                env[n] = result
                continue
            canon = f"{canon}; {result}"
        if opdef is None:
            why = canon
            op, canon = "opaque", {"target": target, "args": list(args), "kwargs": dict(kwargs)}
        else:
            op, why = opdef.name, None
        before = len(b.graph.nodes)
        result = b.call(op, canon, scope=scope, source=source, name=n.name, target=target)
        if op == "opaque" and len(b.graph.nodes) > before:
            b.graph.nodes[-1].meta["why_opaque"] = why
        env[n] = wrap(result) if wrap is not None else result
    add_unused_state(b, model, owners)
    g = b.graph
    g.meta.update(frontend="export", symbols=dict(b.symbols), fake=fake,
                  buffer_mutations=[s.target for s in mutations if s.kind.name == "BUFFER_MUTATION"])
    return g


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
        return ("tuple", kids)

    return go(ts)


import operator as _operator  # noqa: E402

_getitem = _operator.getitem
