"""Nodes back to torch layers: the inverse of the registry's module spellings.

``rebuild_layer(node, input)`` gives the real ``nn.Module`` a node came from (``nn.Linear``, ``nn.Conv2d``,
``nn.BatchNorm2d``, ``nn.ReLU``, ...) with the node's tensors as its parameters and buffers, or None. The
class is looked up among the op's registered module classes by the node's scope type; its constructor
arguments come from the node's arguments (names that match the constructor's) and, for layers with weights,
from the weight shapes. The result is *verified*: the registry's module adapter is run on the rebuilt
module and must give back exactly the node's canonical arguments, so a layer is only rebuilt when it
computes what the node computes.

``OpCall`` is the small module a functional op becomes (``torch.flatten(x, 1)`` -> ``Flatten``-like
``OpCall('flatten', start_dim=1)``): it holds the op's constant arguments and tensors and calls the op's
registry ``impl``. It is an ordinary picklable module (torch.save works).
"""
from __future__ import annotations

import inspect
import re
from typing import Any

import torch
import torch.nn as nn

from ..ir.graph import Node, Value, iter_values, map_values
from ..ir.spec import TensorSpec
from . import registry
from .registry import Attr


class _Input:
    """Marks where a layer's input goes in a node's arguments (a picklable singleton)."""

    def __repr__(self) -> str:
        return "<input>"

    def __reduce__(self):
        return "INPUT"


INPUT = _Input()


class _Tensor:
    """In an ``OpCall`` template: the module attribute holding a tensor argument."""

    __slots__ = ("attr",)

    def __init__(self, attr: str):
        self.attr = attr

    def __repr__(self) -> str:
        return self.attr

    def __getstate__(self):
        return self.attr

    def __setstate__(self, state):
        self.attr = state


class OpCall(nn.Module):
    """One canonical op as a layer: ``forward(x)`` is ``impl(**args)`` with ``x`` where the input was.

    ``op`` is the registry name; ``template`` the node's arguments with the input marked and tensors named
    (they are this module's parameters/buffers, so they appear in its state_dict).
    """

    def __init__(self, op: str, template: dict[str, Any], tensors: dict[str, tuple[torch.Tensor, str]]):
        super().__init__()
        self.op = op
        self.template = template
        for name, (t, kind) in tensors.items():
            if kind == "param":
                self.register_parameter(name, t if isinstance(t, nn.Parameter) else
                                        nn.Parameter(t.detach(), requires_grad=t.requires_grad))
            else:
                self.register_buffer(name, t, persistent=kind == "buffer")

    def forward(self, input):
        args = _fill(self.template, input, self)
        return registry.get(self.op).impl(**args)

    def extra_repr(self) -> str:
        opdef = registry.get(self.op)
        shown = []
        for k, v in self.template.items():
            if v is INPUT or (opdef is not None and k in opdef.defaults and _same(opdef.defaults[k], v)):
                continue
            shown.append(f"{k}={v!r}")
        return ", ".join([repr(self.op)] + shown)


def _fill(obj: Any, input: Any, mod: nn.Module) -> Any:
    if obj is INPUT:
        return input
    if isinstance(obj, _Tensor):
        return getattr(mod, obj.attr)
    if isinstance(obj, list):
        return [_fill(o, input, mod) for o in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(_fill(o, input, mod) for o in obj)
    if isinstance(obj, dict):
        return {k: _fill(v, input, mod) for k, v in obj.items()}
    return obj


def _same(a, b) -> bool:
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # noqa: BLE001
        return False


def op_call(node: Node, input: Value, tensor_cache: dict[int, torch.Tensor] | None = None) -> OpCall:
    """The ``OpCall`` layer of ``node`` whose one non-constant argument is ``input``."""
    tensors: dict[str, tuple[torch.Tensor, str]] = {}
    by_value: dict[int, str] = {}
    cache = tensor_cache if tensor_cache is not None else {}

    def mark(v: Value):
        if v is input:
            return INPUT
        if v.const is None:
            raise ValueError(f"{node.describe()}: argument %{v.name} is neither the input nor a constant")
        if id(v) not in by_value:
            base = _attr_name(v.names[0] if v.names else v.name)
            name, i = base, 1
            while name in tensors or hasattr(nn.Module, name) or name in ("op", "template"):
                name, i = f"{base}_{i}", i + 1
            t = cache.get(id(v))
            if t is None:
                t = nn.Parameter(v.const.detach(), requires_grad=v.const.requires_grad) if v.kind == "param" \
                    else v.const
                cache[id(v)] = t
            tensors[name] = (t, v.kind)
            by_value[id(v)] = name
        return _Tensor(by_value[id(v)])

    return OpCall(node.op, map_values(node.args, mark), tensors)


def _attr_name(dotted: str) -> str:
    leaf = dotted.rsplit(".", 1)[-1]
    out = "".join(c if c.isalnum() or c == "_" else "_" for c in leaf) or "t"
    return out if out[0].isalpha() or out[0] == "_" else "t_" + out


# ---- real layers ------------------------------------------------------------------------------------
def _shape(a: Any) -> tuple | None:
    return tuple(a.const.shape) if isinstance(a, Value) and a.const is not None else None


def _linear(a):
    w = _shape(a["weight"])
    return dict(in_features=w[1], out_features=w[0], bias=a["bias"] is not None)


def _conv(a):
    w, g = _shape(a["weight"]), a["groups"]
    return dict(in_channels=w[1] * g, out_channels=w[0], kernel_size=w[2:], bias=a["bias"] is not None)


def _conv_t(a):
    w, g = _shape(a["weight"]), a["groups"]
    return dict(in_channels=w[0], out_channels=w[1] * g, kernel_size=w[2:], bias=a["bias"] is not None)


def _bn(a):
    ref = a["running_mean"] if a["running_mean"] is not None else a["weight"]
    return dict(num_features=_shape(ref)[0], affine=a["weight"] is not None,
                track_running_stats=a["running_mean"] is not None, momentum=a["momentum"] or None)


def _ln(a):
    out = dict(normalized_shape=tuple(a["normalized_shape"]), elementwise_affine=a["weight"] is not None)
    if "bias" in inspect.signature(nn.LayerNorm).parameters:
        out["bias"] = a["bias"] is not None
    return out


def _gn(a):
    return dict(num_channels=_shape(a["weight"])[0] if a["weight"] is not None else 0,
                affine=a["weight"] is not None)


def _emb(a):
    w = _shape(a["weight"])
    return dict(num_embeddings=w[0], embedding_dim=w[1])


def _prelu(a):
    return dict(num_parameters=_shape(a["weight"])[0] if _shape(a["weight"]) else 1)


# constructor arguments a node's arguments do not name directly, by module class
_SHAPED = {nn.Linear: _linear, nn.Conv1d: _conv, nn.Conv2d: _conv, nn.Conv3d: _conv,
           nn.ConvTranspose1d: _conv_t, nn.ConvTranspose2d: _conv_t, nn.ConvTranspose3d: _conv_t,
           nn.BatchNorm1d: _bn, nn.BatchNorm2d: _bn, nn.BatchNorm3d: _bn, nn.LayerNorm: _ln,
           nn.GroupNorm: _gn, nn.Embedding: _emb, nn.PReLU: _prelu}


def candidate_classes(node: Node, any_class: bool = False) -> list[type]:
    """The registered module classes of ``node``'s op named like its scope type (``Linear`` -> nn.Linear);
    with ``any_class``, every class registered for the op (for graphs that carry no scopes, as ONNX imports)."""
    opdef = registry.get(node.op)
    if opdef is None:
        return []
    if any_class:
        return list(opdef.modules)
    return [c for c in opdef.modules if node.scope and c.__name__ == node.scope.type]


def rebuild_layer(node: Node, input: Value, tensor_cache: dict[int, torch.Tensor] | None = None,
                  state: dict[str, Value] | None = None, any_class: bool = False) -> nn.Module | None:
    """The real layer ``node`` was traced from, holding the node's tensors, or None (see the module doc).

    ``input`` is the node's one non-constant tensor argument; every other Value argument must be a constant.
    ``tensor_cache`` (id(Value) -> Parameter/tensor) makes a constant used by two layers one tensor.
    ``state`` (dotted name -> constant Value, e.g. the graph's constants by name) supplies what the layer
    holds but its node does not read (``num_batches_tracked``), looked up under the node's module path.
    ``any_class`` tries every layer class of the op, not only the one the scope names (the check above still
    decides: a 4-d conv weight verifies as ``nn.Conv2d`` only).
    """
    if len(node.outputs) != 1:
        return None
    for cls in candidate_classes(node, any_class):
        if not _rank_fits(cls, input):
            continue
        m = _construct(cls, node)
        if m is None:
            continue
        for training in (False, True):
            m.train(training)
            attrs = _verify(m, node, input)
            if attrs is not None:
                _load(m, attrs, tensor_cache if tensor_cache is not None else {}, state or {}, node.scope.path)
                return m
    return None


_ND = re.compile(r"([123])d$")


def _rank_fits(cls: type, input: Value) -> bool:
    """An N-d layer (``Conv2d``, ``BatchNorm1d``, ``MaxPool3d``) takes inputs of rank N+1 or N+2; its adapter
    alone cannot tell (``conv`` is one op for every N)."""
    m = _ND.search(cls.__name__)
    rank = input.spec.rank if isinstance(input.spec, TensorSpec) else None
    return m is None or rank is None or rank in (int(m.group(1)) + 1, int(m.group(1)) + 2)


def _construct(cls: type, node: Node) -> nn.Module | None:
    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return None
    kwargs = {k: _plain(v) for k, v in node.args.items()
              if k in params and k != "self" and not any(True for _ in iter_values(v))}
    try:
        if cls in _SHAPED:
            kwargs.update(_SHAPED[cls](node.args))
        kwargs = {k: v for k, v in kwargs.items() if k in params}
        with torch.device("meta"):  # weights are replaced by the node's: never allocate or initialize them
            return cls(**kwargs)
    except Exception:  # noqa: BLE001 - a constructor that does not take these arguments: no real layer
        return None


def _plain(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


class _Sentinel:
    pass


def _verify(m: nn.Module, node: Node, input: Value) -> dict[str, Value] | None:
    """``{attribute: constant Value}`` when the registry's adapter on ``m`` gives back ``node.args``, else None."""
    opdef = registry.get(node.op)
    hit = registry.for_module(m)
    if hit is None or hit[0] is not opdef:
        return None
    x = _Sentinel()
    try:
        args, kwargs = hit[1](m, (x,), {})
        bound = opdef.bind(args, kwargs)
    except Exception:  # noqa: BLE001 - the adapter inspects its input: not a layer we can check
        return None
    attrs: dict[str, Value] = {}
    if set(bound) != set(node.args):
        return None
    for k, want in node.args.items():
        got = bound[k]
        if got is x:
            if want is not input:
                return None
        elif isinstance(got, Attr):
            t = getattr(m, got.name, None)
            if not (isinstance(want, Value) and want.const is not None and isinstance(t, torch.Tensor)
                    and tuple(t.shape) == tuple(want.const.shape)):
                return None
            attrs[got.name] = want
        elif isinstance(want, Value) or any(True for _ in iter_values(want)):
            return None
        elif not equal_constants(got, want):
            return None
    return attrs


def equal_constants(a: Any, b: Any) -> bool:
    """Two python constant arguments are equal: lists equal tuples element-wise, ``2`` equals ``2.0``, a bool
    only a bool, tensors by dtype, shape and values."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(equal_constants(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and \
            a.shape == b.shape and bool(torch.equal(a, b))
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001
        return False


def _load(m: nn.Module, attrs: dict[str, Value], cache: dict[int, torch.Tensor], state: dict[str, Value],
          path: str) -> None:
    """Put the node's tensors into ``m`` (shared storage, as ``Graph.to_module``)."""
    for name, v in attrs.items():
        t = cache.get(id(v))
        if name in m._parameters:
            if t is None or not isinstance(t, nn.Parameter):
                t = nn.Parameter(v.const.detach(), requires_grad=v.const.requires_grad)
            m._parameters[name] = t
        else:
            t = v.const if t is None else t
            m._buffers[name] = t
        cache.setdefault(id(v), t)
    # what the node does not read but the layer holds (num_batches_tracked): the graph's tensor of that name,
    # else zeros, off the meta device
    for table in (m._parameters, m._buffers):
        for name, t in list(table.items()):
            if t is None or not t.is_meta:
                continue
            v = state.get(f"{path}.{name}" if path else name)
            if v is not None and tuple(v.const.shape) == tuple(t.shape) and v.const.dtype == t.dtype:
                new = v.const
            else:
                new = torch.zeros(t.shape, dtype=t.dtype)
            table[name] = nn.Parameter(new.detach(), requires_grad=t.requires_grad) if table is m._parameters \
                else new
