"""The op registry: each canonical op is defined once, with everything bridge knows about it.

An ``OpDef`` holds
- ``impl``: how the op runs in torch. Its python signature *is* the op's canonical signature: a node's
  ``args`` map these parameter names to Values or constants. Shapes come from running ``impl`` on fake
  tensors, so the same definition gives execution and shape inference.
- spellings: the torch callables (``F.relu``, ``torch.relu``, ``operator.add``), Tensor method names
  (``"relu"``), ``nn.Module`` classes (``nn.ReLU``) and aten overloads (``"aten.relu.default"``) that
  mean this op. A spelling may carry an adapter that turns its call into canonical arguments.
- ``flops(node)``: floating point operations of one call (a multiply-add counts 2).
- ``macs(node)``: the multiply-accumulates among them (matrix products, convolutions, attention, RNN
  gates); None for ops that have none. ``flops`` of such an op is ``2 * macs`` plus its other work (bias).
- ``family``: elementwise, nn, shape, reduce, attention, rnn, creation, python.

Registering a spelling twice, or an op name twice, is refused.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import BridgeError

_OPS: dict[str, "OpDef"] = {}
_BY_FUNCTION: dict[Any, tuple["OpDef", Callable | None]] = {}
_BY_METHOD: dict[str, tuple["OpDef", Callable | None]] = {}
_BY_MODULE: dict[type, tuple["OpDef", Callable]] = {}
_BY_ATEN: dict[str, tuple["OpDef", Callable | None]] = {}
_BY_QUALNAME: dict[str, tuple["OpDef", Callable | None]] = {}  # third-party functions, by "module.qualname"


class Attr:
    """In a module adapter's result: 'the tensor attribute ``name`` of this module' (a weight or buffer)."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"Attr({self.name!r})"


@dataclass
class OpDef:
    name: str
    impl: Callable
    family: str
    flops: Callable | None = None
    macs: Callable | None = None
    doc: str = ""
    params: tuple[str, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)
    n_tensor_params: int = 1
    functions: list = field(default_factory=list)
    methods: list = field(default_factory=list)
    modules: list = field(default_factory=list)
    aten: list = field(default_factory=list)
    external: list = field(default_factory=list)  # "package.module.function" spellings of other libraries
    signature: inspect.Signature | None = None
    pure_python: bool = False  # computes on python scalars / metadata; folded when all inputs are known
    onnx: Callable | None = None  # onnx(ctx, node) -> output names; see bridge/backends/onnx.py

    def __post_init__(self):
        self._param_set = frozenset(self.params)
        kinds = [p.kind for p in self.signature.parameters.values()] if self.signature else []
        self._n_positional = sum(1 for k in kinds if k in (inspect.Parameter.POSITIONAL_ONLY,
                                                           inspect.Parameter.POSITIONAL_OR_KEYWORD))

    def bind(self, args: tuple, kwargs: dict) -> dict[str, Any]:
        """Canonical arguments (every parameter, defaults filled) from a call ``impl(*args, **kwargs)``."""
        params = self.params
        if len(args) <= self._n_positional and not any(k in params[:len(args)] for k in kwargs):
            # fast path (inspect's bind costs ~10 us a call): positional, then keywords, then defaults
            out = dict(zip(params, args))
            out.update(kwargs)
            if len(out) == len(params) or all(p in out or p in self.defaults for p in params):
                if len(out) <= len(params) and all(k in self._param_set for k in kwargs):
                    return {p: out[p] if p in out else self.defaults[p] for p in params}
        try:
            ba = self.signature.bind(*args, **kwargs)
        except TypeError as e:
            raise BridgeError(f"op {self.name}: cannot bind arguments ({e}); signature is {self.signature}") from e
        ba.apply_defaults()
        return dict(ba.arguments)


def register(name: str, *, family: str, functions=(), methods=(), modules=None, aten=(), flops=None,
             n_tensor_params: int = 1, pure_python: bool = False, external=(), macs=None):
    """Decorator defining canonical op ``name`` whose torch execution is the decorated function.

    ``functions``/``methods``/``aten`` entries are either the spelling or ``(spelling, adapter)`` where
    ``adapter(args, kwargs) -> (args, kwargs)`` rewrites the call into the impl's signature.
    ``external`` names functions of other libraries by ``"module.qualname"`` (torchvision's
    ``"torchvision.ops.stochastic_depth.stochastic_depth"``), known without importing those libraries.
    ``modules`` maps an nn.Module class to ``adapter(module, args, kwargs) -> (args, kwargs)`` where
    module tensors are given as ``Attr("weight")``.
    """

    def deco(impl: Callable) -> Callable:
        if name in _OPS:
            raise BridgeError(f"op {name!r} is registered twice")
        sig = inspect.signature(impl)
        for p in sig.parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise BridgeError(f"op {name!r}: impl must have a fixed signature (no *args/**kwargs)")
        opdef = OpDef(name=name, impl=impl, family=family, flops=flops, macs=macs, doc=inspect.getdoc(impl) or "",
                      params=tuple(sig.parameters),
                      defaults={k: p.default for k, p in sig.parameters.items() if p.default is not p.empty},
                      n_tensor_params=n_tensor_params, signature=sig, pure_python=pure_python)
        for entry in functions:
            fn, ad = entry if isinstance(entry, tuple) else (entry, None)
            if any(f is fn for f in opdef.functions):  # aliases such as F.prelu is torch.prelu
                continue
            _put(_BY_FUNCTION, fn, (opdef, ad), name)
            opdef.functions.append(fn)
        for entry in methods:
            m, ad = entry if isinstance(entry, tuple) else (entry, None)
            _put(_BY_METHOD, m, (opdef, ad), name)
            opdef.methods.append(m)
        for entry in external:
            q, ad = entry if isinstance(entry, tuple) else (entry, None)
            _put(_BY_QUALNAME, q, (opdef, ad), name)
            opdef.external.append(q)
        for cls, ad in (modules or {}).items():
            _put(_BY_MODULE, cls, (opdef, ad), name)
            opdef.modules.append(cls)
        for entry in aten:
            a, ad = entry if isinstance(entry, tuple) else (entry, None)
            key = a if a.startswith("aten.") else f"aten.{a}"
            _put(_BY_ATEN, key, (opdef, ad), name)
            opdef.aten.append(key)
        _OPS[name] = opdef
        impl.opdef = opdef
        return impl

    return deco


def onnx_lowering(name: str):
    """Decorator: ``fn(ctx, node)`` lowers op ``name`` to ONNX through the context's ``ctx.op(...)``.

    Lowerings live beside their op and never import onnx: the context (bridge/backends/onnx.py) builds
    the protos. A lowering raises ``ctx.unsupported(why)`` for argument combinations it cannot express.
    """
    def deco(fn: Callable) -> Callable:
        opdef = _OPS.get(name)
        if opdef is None:
            raise BridgeError(f"ONNX lowering for unknown op {name!r}")
        if opdef.onnx is not None:
            raise BridgeError(f"op {name!r} has two ONNX lowerings")
        opdef.onnx = fn
        return fn

    return deco


_ONNX_IMPORT: dict[str, Callable] = {}


def onnx_import(*op_types: str):
    """Decorator: ``fn(ctx)`` imports ONNX nodes of ``op_types`` (default domain) as canonical ops.

    Importers live beside the op they map to and never import onnx: ``ctx`` (bridge/frontends/onnx.py) gives
    the node's inputs (graph Values or tensors known at import time), attributes and opset, and ``ctx.call(op,
    **args)`` adds canonical nodes. ``fn`` returns the node's outputs (one, or a list); it raises
    ``ctx.unsupported(why)`` for attribute combinations it cannot express. One importer per op type.
    """
    def deco(fn: Callable) -> Callable:
        for t in op_types:
            if t in _ONNX_IMPORT:
                raise BridgeError(f"ONNX op type {t!r} has two importers")
            _ONNX_IMPORT[t] = fn
        return fn

    return deco


def for_onnx(op_type: str) -> Callable | None:
    """The importer of ONNX op type ``op_type``, or None."""
    _load()
    return _ONNX_IMPORT.get(op_type)


def onnx_importers() -> dict[str, Callable]:
    _load()
    return dict(_ONNX_IMPORT)


def _put(table: dict, key, val, name) -> None:
    if key in table:
        raise BridgeError(f"spelling {key!r} of op {name!r} is already registered to op {table[key][0].name!r}")
    table[key] = val


def get(name: str) -> OpDef | None:
    _load()
    return _OPS.get(name)


def all_ops() -> dict[str, OpDef]:
    _load()
    return dict(_OPS)


def for_function(fn) -> tuple[OpDef, Callable | None] | None:
    _load()
    try:
        hit = _BY_FUNCTION.get(fn)
    except TypeError:  # unhashable
        return None
    if hit is None and _BY_QUALNAME:
        hit = _BY_QUALNAME.get(f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', '')}")
    return hit


def for_method(name: str):
    _load()
    return _BY_METHOD.get(name)


def for_module(mod) -> tuple[OpDef, Callable] | None:
    _load()
    return _BY_MODULE.get(type(mod))


def module_classes() -> tuple[type, ...]:
    _load()
    return tuple(_BY_MODULE)


def for_aten(overload) -> tuple[OpDef, Callable | None] | None:
    _load()
    return _BY_ATEN.get(str(overload))


_loaded = False


def _load() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        from . import (attention, creation, elementwise, nn, python, reduce, rnn,  # noqa: F401
                       shape)
