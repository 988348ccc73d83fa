"""Op and layer replacement. Both change the graph in place and return ``(graph, changed)``, as a pass does.

    replace_op(g, "relu", "gelu")                    # every relu node becomes gelu(input)
    replace_op(g, "relu", "gelu", approximate="tanh")
    replace_module(g, nn.Linear, lambda lin: LoRALinear(lin, rank=4))

Both apply inside the regions of control-flow nodes too, each region on its own.

``replace_op`` renames the op of each node and maps arguments by parameter name (the new op's other
parameters take the given keywords, then its defaults). The new op must give the same output shape and dtype
(checked on meta tensors), since later nodes were shaped by it. A node that came from a layer of the old op
(scope type ``ReLU``) is recorded as coming from the new op's layer (``GELU``), so ``to_sequential`` builds
``nn.GELU`` there.

``replace_module`` finds the nodes traced from layers of class ``cls`` (their scope type is ``cls.__name__``
and their op is the one ``cls`` is registered as), rebuilds each original layer from its node (same weights,
``bridge.ops.layers.rebuild_layer``), calls ``factory(layer)`` for the user's module, traces that module
with ``bridge.trace`` on inputs shaped like the layer's, and inlines its graph in place of the node. Inlining
(not an opaque call of the module) keeps ``g.run``, ``g.to_module()`` and ONNX export working with no
knowledge of the user's class. Its parameters become graph parameters under the replaced layer's path
(``fc.lora_a`` for a ``lora_a`` parameter replacing layer ``fc``), its nodes are scoped under that path with
the user module's type.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn as nn

from ..errors import TransformError
from ..ir.graph import Graph, Node, Scope, Value, map_values
from ..ir.spec import TensorSpec
from ..ops import registry
from ..ops.layers import rebuild_layer
from ._inline import Splicer, Tracer, example_size, inline, nonconst_inputs, trace_at
from .regions import graphs


def _opdef(name: str):
    opdef = registry.get(name)
    if opdef is None:
        raise TransformError(f"unknown op {name!r}; the op catalog (docs/ops.md) lists every op")
    return opdef


def replace_op(g: Graph, old: str, new: str, **args: Any) -> tuple[Graph, bool]:
    """Every ``old`` node becomes a ``new`` node (see the module doc); ``args`` set ``new``'s other parameters."""
    old_def, new_def = _opdef(old), _opdef(new)
    unknown = [k for k in args if k not in new_def.params]
    if unknown:
        raise TransformError(f"replace_op: {new} has no parameter(s) {unknown}; its signature is {new_def.signature}")
    new_layers = [c.__name__ for c in new_def.modules]
    old_layers = {c.__name__ for c in old_def.modules}
    changed = False
    checked: set[str] = set()  # argument shapes already checked (a deep model repeats a few)
    for node, _ in g.walk():  # inside regions too
        if node.op != old:
            continue
        missing = [p for p in new_def.params if p not in args and p not in node.args and p not in new_def.defaults]
        if missing:
            raise TransformError(f"replace_op: {node.describe()} has no argument for {new}'s {missing}; pass them "
                                 f"as keywords (replace_op(g, {old!r}, {new!r}, {missing[0]}=...))")
        new_args = {p: args[p] if p in args else node.args[p] if p in node.args else new_def.defaults[p]
                    for p in new_def.params}
        key = repr((map_values(new_args, lambda v: (v.spec, id(v) if v.const is not None else None)),
                    [v.spec for v in node.outputs]))
        if key not in checked:
            _check_shapes(g, node, new, new_def, new_args)
            checked.add(key)
        node.graph.set_args(node, new_args)
        node.op = new
        if node.scope and node.scope.type in old_layers and new_layers:
            node.scope = Scope(node.scope.stack[:-1] + ((node.scope.path, new_layers[0]),))
        node.meta["replaced"] = old
        changed = True
    return g, changed


def _meta_example(a: Any, sizes: dict) -> Any:
    if isinstance(a, Value):
        if a.const is not None:
            return a.const.to("meta")
        if isinstance(a.spec, TensorSpec):
            try:
                shape = [example_size(d, sizes) for d in a.spec.shape]
            except Exception as e:  # noqa: BLE001 - a dim expression that cannot be sized: no check
                raise _NoCheck from e
            return torch.empty(shape, dtype=a.spec.dtype, device="meta")
        raise _NoCheck
    return a


class _NoCheck(Exception):
    pass


def _check_shapes(g: Graph, node: Node, new: str, new_def, new_args: dict) -> None:
    """The new op must give the old node's output shape and dtype (later nodes were shaped by it)."""
    sizes = g.meta.get("dim_values") or {}
    try:
        ex = map_values(new_args, lambda v: _meta_example(v, sizes))
    except _NoCheck:
        return  # python-valued inputs: nothing to check on meta tensors
    try:
        out = new_def.impl(**ex)
    except Exception as e:  # noqa: BLE001 - the op refuses these arguments
        raise TransformError(f"replace_op: {new} cannot take the arguments of {node.describe()}: {e}") from e
    outs = [out] if isinstance(out, torch.Tensor) else list(out) if isinstance(out, (tuple, list)) else [out]
    for v, o in zip(node.outputs, outs):
        if isinstance(v.spec, TensorSpec) and isinstance(o, torch.Tensor):
            try:
                want = [example_size(d, sizes) for d in v.spec.shape]
            except Exception:  # noqa: BLE001 - a dim expression that cannot be sized: no check
                continue
            if list(o.shape) != want or o.dtype != v.spec.dtype:
                raise TransformError(f"replace_op: {new} on the inputs of {node.describe()} gives "
                                     f"{str(o.dtype).replace('torch.', '')}{list(o.shape)}, not {v.spec}; an "
                                     "op can only be replaced by one with the same output shape and dtype")
    if len(outs) != len(node.outputs):
        raise TransformError(f"replace_op: {new} gives {len(outs)} outputs where {node.describe()} has "
                             f"{len(node.outputs)}")


def replace_module(g: Graph, cls: type, factory: Callable[[nn.Module], nn.Module], *,
                   trace: Tracer) -> tuple[Graph, bool]:
    """Every layer of class ``cls`` becomes ``factory(layer)``, traced by ``trace`` (``bridge.replace_module``
    hands down ``bridge.trace``) and inlined (see the module doc)."""
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TransformError(f"replace_module: cls must be an nn.Module class, not {cls!r}")
    op = next((d.name for d in registry.all_ops().values() if cls in d.modules), None)
    if op is None:
        raise TransformError(f"replace_module: {cls.__name__} is not a layer bridge traces as one op (its "
                             "forward becomes several nodes); rewrite its pattern with bridge.rewrite instead")
    made: dict[str, nn.Module] = {}  # module path -> the user's module replacing that layer
    changed = False
    for host, _ in graphs(g):  # the graph, then each region on its own
        changed |= _replace_in(host, g, op, cls, factory, trace, made)
    return g, changed


def _replace_in(host: Graph, g: Graph, op: str, cls: type, factory: Callable, trace: Tracer, made: dict) -> bool:
    """replace_module in ``host`` (``g`` or a region of it; ``g`` sizes symbolic dims)."""
    with Splicer(host) as splice:
        consts: dict[int, Value] = {}    # id(tensor) -> graph constant: a shared layer's weights stay one value
        for node in splice.original:
            if node.op != op or node.scope.type != cls.__name__ or len(node.outputs) != 1:
                continue
            ins = nonconst_inputs(node)
            if len(ins) != 1:
                continue  # the layer reads several run-time values: not one input to hand the new module
            path = node.scope.path
            new_mod = made.get(path) if path else None
            if new_mod is None:  # a layer called twice (shared) is replaced by one module, shared the same way
                layer = rebuild_layer(node, ins[0])
                if layer is None:
                    raise TransformError(f"replace_module: cannot rebuild the {cls.__name__} of {node.describe()} "
                                         "from its node to hand to the factory")
                new_mod = factory(layer)
                if not isinstance(new_mod, nn.Module):
                    raise TransformError(f"replace_module: the factory returned {type(new_mod).__name__} for "
                                         f"{node.describe()}, not an nn.Module")
                new_mod.train(layer.training)
                made[path] = new_mod
            sub = trace_at(new_mod, ins, g, f"the {type(new_mod).__name__} replacing {node.describe()}", trace)
            outs = sub.outputs
            if len(outs) != 1 or sub.output_struct != ("leaf", 0):
                raise TransformError(f"replace_module: the {type(new_mod).__name__} replacing {node.describe()} must "
                                     f"return one tensor, it returns {sub.output_description()}")
            old = node.outputs[0]
            if isinstance(outs[0], Value) and isinstance(old.spec, TensorSpec) and outs[0].spec != old.spec:
                raise TransformError(f"replace_module: the {type(new_mod).__name__} replacing {node.describe()} gives "
                                     f"{outs[0].spec}, not {old.spec}")
            scope = Scope(node.scope.stack[:-1] + ((path, type(new_mod).__name__),))
            (y,), added = inline(host, sub, ins, scope=scope, scope_path=path, source=node.source, base=old.name,
                                 const_prefix=f"{path}." if path else "", const_cache=consts)
            splice.swap(node, old, y, added)
    return bool(splice.placed)

