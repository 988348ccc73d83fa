"""torch.fx frontend: ``symbolic_trace`` at module level, registered nn.Modules kept whole (with scope)."""
from __future__ import annotations

import functools
import os
import sys
from typing import Any

import torch
import torch.fx as fx
from torch.fx.node import map_arg

from ..ir.graph import Graph, Scope
from ..ops import registry
from .common import (GraphBuilder, add_unused_state, canonical_call, is_inplace_call, scope_from_stack, set_outputs,
                     static_access, tensor_owners, user_frame)
from .signature import InputBinding, make_wrapper

_PREFIX = "m."
_SKIP_DIRS = (os.path.dirname(os.path.abspath(torch.__file__)),
              os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@functools.lru_cache(maxsize=4096)
def _not_user(filename: str) -> bool:
    return filename.startswith(_SKIP_DIRS) or filename.startswith("<")


class BridgeTracer(fx.Tracer):
    """Keeps registered layers (Conv2d, LSTM, MultiheadAttention, ...) and user leaves whole; traces the rest."""

    def __init__(self, leaf_modules=()):
        super().__init__()
        self.record_stack_traces = False  # fx formats a whole stack per node; we keep only the user's frame
        self._leaf_classes = tuple(c for c in leaf_modules if isinstance(c, type))
        self._leaf_names = {c for c in leaf_modules if isinstance(c, str)}
        self._registered = registry.module_classes()

    def create_node(self, *args, **kwargs):
        node = super().create_node(*args, **kwargs)
        f = sys._getframe(1)
        while f is not None and _not_user(f.f_code.co_filename):
            f = f.f_back
        if f is not None:
            node.meta["stack_trace"] = f'File "{f.f_code.co_filename}", line {f.f_lineno}'
        return node

    def is_leaf_module(self, m: torch.nn.Module, qualname: str) -> bool:
        if type(m) in self._registered:
            return True
        if self._leaf_classes and isinstance(m, self._leaf_classes):
            return True
        name = qualname[len(_PREFIX):] if qualname.startswith(_PREFIX) else qualname
        return name in self._leaf_names


def fx_graph(model: torch.nn.Module, args: tuple, kwargs: dict, leaf_modules=(), concrete_args=None):
    """The wrapper module, its fx graph, and the input binding (no conversion yet)."""
    binding = InputBinding(model, args, kwargs)
    wrapper = make_wrapper(model, binding, lambda o: isinstance(o, (torch.Tensor, fx.Proxy)))
    tracer = BridgeTracer(leaf_modules)
    graph = tracer.trace(wrapper, concrete_args=concrete_args)
    return wrapper, graph, binding


def convert(wrapper, fxg: fx.Graph, binding: InputBinding, *, fake: bool = True, dynamic=None) -> Graph:
    """Turn an fx graph of the wrapper into a bridge Graph, propagating example values node by node."""
    b = GraphBuilder(fake=fake, dynamic=dynamic)
    with b.session():
        return _convert(b, wrapper, fxg, binding, fake)


def _convert(b: GraphBuilder, wrapper, fxg: fx.Graph, binding: InputBinding, fake: bool) -> Graph:
    model = wrapper.m
    examples = dict(zip(binding.names, binding.examples))
    owners = tensor_owners(model)
    env: dict[fx.Node, Any] = {}

    def attr_value(qualname: str):
        obj = _fetch(wrapper, qualname)
        if isinstance(obj, torch.Tensor):
            kind, names = owners.get(id(obj), ("constant", [qualname[len(_PREFIX):] if qualname.startswith(_PREFIX)
                                                           else qualname]))
            return b.constant(obj, kind, names)
        return obj

    for n in fxg.nodes:
        if n.op == "placeholder":
            env[n] = b.input(n.target, examples[n.target])  # the parameter's name (fx renames "input")
            continue
        if n.op == "get_attr":
            env[n] = attr_value(n.target)
            continue
        if n.op == "output":
            set_outputs(b.graph, map_arg(n.args[0], lambda a: env[a]), wrapper.out_spec)
            break
        args = map_arg(n.args, lambda a: env[a])
        kwargs = map_arg(n.kwargs, lambda a: env[a])
        scope = scope_from_stack(n.meta.get("nn_module_stack"), _PREFIX)
        source = user_frame(n.meta.get("stack_trace"))
        module = None

        if n.op == "call_function" and n.target in (_getitem, getattr) and len(args) == 2:
            ok, val = static_access(args[0], "getitem" if n.target is _getitem else "getattr", args[1])
            if ok:
                env[n] = val
                continue
        if n.op == "call_module":
            module = wrapper.get_submodule(n.target)
            path = n.target[len(_PREFIX):]
            kind, target = "module", module
            if not scope or scope.path != path:
                scope = Scope(list(scope.stack) + [(path, type(module).__name__)])
        elif n.op == "call_method":
            kind, target = "method", n.target
        else:
            kind, target = "function", n.target

        def resolve(name, _path=n.target if n.op == "call_module" else ""):
            return attr_value(f"{_path}.{name}")

        opdef, canon, wrap = canonical_call(kind, target, args, kwargs, resolve, module)
        if opdef is None:
            op, canon = "opaque", {"target": target, "args": list(args), "kwargs": dict(kwargs)}
            why = canon
        else:
            op, why = opdef.name, None
        before = len(b.graph.nodes)
        name = n.target[len(_PREFIX):] if n.op == "call_module" else n.name
        result = b.call(op, canon, scope=scope, source=source, name=name,
                        target=module if module is not None else target)
        if op == "opaque" and len(b.graph.nodes) > before:
            node = b.graph.nodes[-1]
            node.meta["why_opaque"] = why if isinstance(why, str) else "no canonical op"
            if module is not None:
                node.meta["module_path"] = n.target[len(_PREFIX):]
        if wrap is not None:
            result = wrap(result)
        env[n] = result
        if is_inplace_call(kind, target, n.args, n.kwargs, module) and n.args and isinstance(n.args[0], fx.Node):
            env[n.args[0]] = result  # later readers of the written tensor see the new value
    add_unused_state(b, model, owners)
    g = b.graph
    g.meta.update(frontend="fx", symbols=dict(b.symbols), fake=fake, input_binding=binding.params,
                  model_type=type(model).__name__)
    return g


def _fetch(root, qualname: str):
    obj = root
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


import operator as _operator  # noqa: E402

_getitem = _operator.getitem
_setitem = _operator.setitem
