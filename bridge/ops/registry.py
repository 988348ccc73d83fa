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
- ``family``: elementwise, nn, shape, reduce, attention, rnn, creation, python, spectral, control.
- facts that passes, codegen and analysis read (none of them keeps its own list of op names):
  ``random`` (two calls differ: CSE keeps both, folding leaves it), ``effect`` (a call changes state beyond
  its outputs, such as running statistics: DCE keeps it), ``commutative`` (``f(a, b) == f(b, a)``: the
  rewriter matches both orders), ``view`` (the output shares its first input's storage: memory analysis),
  ``fresh_output`` (the output is a new tensor its backward does not need: a later op may write into it),
  ``contiguous_output`` (always a new contiguous tensor: a ``contiguous`` after it does nothing) and
  ``inplace`` (the Tensor method that computes the op into its ``input``, such as ``"relu_"``: codegen uses
  it where the input dies there), ``data_dependent`` (the output's shape depends on the input's values, as
  ``nonzero`` or ``x[mask]``: tracing keeps that size symbolic, never the number seen at trace time; by default
  true when one of the op's aten overloads carries torch's ``dynamic_output_shape`` tag). ``random``,
  ``effect``, ``commutative`` and ``data_dependent`` are a bool or a predicate of the node
  (``lambda node: node.args["training"]``); read them through ``is_random``/``has_effect``/
  ``is_commutative``/``is_pure``/``is_data_dependent``.
- ``shape``: a faster way to the result on static fake tensors than fake dispatch, for common ops: ``"meta"``
  (the impl on the fakes' meta storage) or a rule; see ``shapes``. The impl stays the definition: a test checks
  each against it.
- ``onnx``: the lowering (``@onnx_lowering``); ONNX importers are kept apart, keyed by
  ``(domain, op_type, since_version)`` (``@onnx_import``), and chosen by the model's opset.

Registering a spelling twice, an op name twice or an importer twice for one version is refused.
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
    onnx_complex: bool = False  # the lowering handles complex tensors (float [..., 2] in the file): see onnx_lowering
    # facts (see the module doc): a bool, or a predicate of the node for those that depend on its arguments
    random: bool | Callable = False
    effect: bool | Callable = False
    commutative: bool | Callable = False
    view: bool = False
    fresh_output: bool = False
    contiguous_output: bool = False
    inplace: str | None = None
    data_dependent: bool | Callable | None = None  # None: from the aten overloads' tags (see the module doc)
    shape: str | Callable | None = None  # fast shape propagation on static fakes: "meta" or a rule (ops/shapes.py)

    def __post_init__(self):
        self._param_set = frozenset(self.params)
        kinds = [p.kind for p in self.signature.parameters.values()] if self.signature else []
        self._n_positional = sum(1 for k in kinds if k in (inspect.Parameter.POSITIONAL_ONLY,
                                                           inspect.Parameter.POSITIONAL_OR_KEYWORD))
        self._named_only = bool(kinds) and all(k in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                     inspect.Parameter.KEYWORD_ONLY) for k in kinds)

    def is_random(self, node) -> bool:
        """Do two calls of ``node`` give different values (random numbers, uninitialized memory)?"""
        return _holds(self.random, node)

    def has_effect(self, node) -> bool:
        """Does a call of ``node`` change state beyond its outputs (running statistics, unknown code)?"""
        return _holds(self.effect, node)

    def is_pure(self, node) -> bool:
        """Can two calls of ``node`` with equal arguments be merged, and an unused one dropped?"""
        return not (self.is_random(node) or self.has_effect(node))

    def is_commutative(self, node) -> bool:
        """Is ``node`` the same with its first two tensor arguments swapped?"""
        return _holds(self.commutative, node)

    def is_data_dependent(self, node) -> bool:
        """Does the output shape of ``node`` (anything with ``.args``) depend on its inputs' values?"""
        if self.data_dependent is None:
            self.data_dependent = any(_dynamic_output_shape(a) for a in self.aten)
        return _holds(self.data_dependent, node)

    def bind(self, args: tuple, kwargs: dict) -> dict[str, Any]:
        """Canonical arguments (every parameter, defaults filled) from a call ``impl(*args, **kwargs)``."""
        params = self.params
        if not args and self._named_only and kwargs.keys() <= self._param_set:  # keywords (importers): in order
            if len(kwargs) == len(params):
                return {p: kwargs[p] for p in params}
            defaults = self.defaults
            if all(p in kwargs or p in defaults for p in params):
                return {p: kwargs[p] if p in kwargs else defaults[p] for p in params}
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


def _holds(fact, node) -> bool:
    return bool(fact(node)) if callable(fact) else bool(fact)


def _dynamic_output_shape(aten_key: str) -> bool:
    """Does torch tag the aten overload ``"aten.name.overload"`` as having a data-dependent output shape?"""
    import torch

    _, name, overload = (aten_key.split(".") + ["default"])[:3]
    try:
        op = getattr(getattr(torch.ops.aten, name), overload)
    except (AttributeError, RuntimeError):
        return False
    return torch.Tag.dynamic_output_shape in op.tags


def register(name: str, *, family: str, functions=(), methods=(), modules=None, aten=(), flops=None,
             n_tensor_params: int = 1, pure_python: bool = False, external=(), macs=None, random=False,
             effect=False, commutative=False, view=False, fresh_output=False, contiguous_output=False,
             inplace=None, data_dependent=None):
    """Decorator defining canonical op ``name`` whose torch execution is the decorated function.

    ``functions``/``methods``/``aten`` entries are either the spelling or ``(spelling, adapter)`` where
    ``adapter(args, kwargs) -> (args, kwargs)`` rewrites the call into the impl's signature.
    ``external`` names functions of other libraries by ``"module.qualname"`` (torchvision's
    ``"torchvision.ops.stochastic_depth.stochastic_depth"``), known without importing those libraries.
    ``modules`` maps an nn.Module class to ``adapter(module, args, kwargs) -> (args, kwargs)`` where
    module tensors are given as ``Attr("weight")``. The facts (``random`` ... ``inplace``) are described in
    the module doc.
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
                      n_tensor_params=n_tensor_params, signature=sig, pure_python=pure_python, random=random,
                      effect=effect, commutative=commutative, view=view, fresh_output=fresh_output,
                      contiguous_output=contiguous_output, inplace=inplace, data_dependent=data_dependent)
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


def onnx_lowering(name: str, *, complex: bool = False):
    """Decorator: ``fn(ctx, node)`` lowers op ``name`` to ONNX through the context's ``ctx.op(...)``.

    Lowerings live beside their op and never import onnx: the context (bridge/backends/onnx.py) builds
    the protos. A lowering raises ``ctx.unsupported(why)`` for argument combinations it cannot express.
    ``complex``: the lowering also handles complex tensors, which an ONNX file holds as float tensors with a
    trailing dim of 2 (``onnx_helpers.complex_parts``); export refuses a node with a complex input or output
    whose lowering does not say so, since a lowering written for real tensors would compute a wrong number.
    """
    def deco(fn: Callable) -> Callable:
        opdef = _OPS.get(name)
        if opdef is None:
            raise BridgeError(f"ONNX lowering for unknown op {name!r}")
        if opdef.onnx is not None:
            raise BridgeError(f"op {name!r} has two ONNX lowerings")
        opdef.onnx = fn
        opdef.onnx_complex = complex
        return fn

    return deco


# (domain, op_type) -> [(since_version, importer)], sorted by version; "" is the default domain (ai.onnx)
_ONNX_IMPORT: dict[tuple[str, str], list[tuple[int, Callable]]] = {}


def onnx_import(*op_types: str, since: int = 1, domain: str = ""):
    """Decorator: ``fn(ctx)`` imports ONNX nodes of ``op_types`` in ``domain``, from opset ``since`` on, as
    canonical ops.

    ONNX defines an operator by (domain, op_type, since_version): register one importer per version whose
    meaning changed (``@onnx_import("Pad", since=18)`` beside the one for 13); a model is read with the newest
    importer whose ``since`` is at most its opset. Importers live beside the op they map to and never import
    onnx: ``ctx`` (the ONNX frontend's ``ImportContext``) gives the node's inputs (graph Values or tensors
    known at import time), attributes and opset, and ``ctx.call(op, **args)`` adds canonical nodes. ``fn``
    returns the node's outputs (one, or a list); it raises ``ctx.unsupported(why)`` for attribute
    combinations it cannot express.
    """
    domain = "" if domain == "ai.onnx" else domain

    def deco(fn: Callable) -> Callable:
        for t in op_types:
            versions = _ONNX_IMPORT.setdefault((domain, t), [])
            if any(v == since for v, _ in versions):
                raise BridgeError(f"ONNX op type {t!r} (domain {domain or 'ai.onnx'!r}) has two importers "
                                  f"since opset {since}")
            versions.append((since, fn))
            versions.sort(key=lambda e: e[0])
        return fn

    return deco


def onnx_importer(op_type: str, opset: int, domain: str = "") -> Callable | None:
    """The importer of ``op_type`` for a model of ``opset`` (in ``domain``): the newest registered at or
    below that opset; None when there is none."""
    _load()
    domain = "" if domain == "ai.onnx" else domain
    best = None
    for since, fn in _ONNX_IMPORT.get((domain, op_type), ()):
        if since <= opset:
            best = fn
    return best


def onnx_importers() -> dict[tuple[str, str, int], Callable]:
    """Every importer, keyed by (domain, op_type, since_version)."""
    _load()
    return {(d, t, v): fn for (d, t), versions in _ONNX_IMPORT.items() for v, fn in versions}


def for_onnx(op_type: str, opset: int | None = None) -> Callable | None:
    """The default-domain importer of ``op_type`` for ``opset`` (None: the newest). Kept for callers of the
    op-type-only lookup; new code calls ``onnx_importer``."""
    return onnx_importer(op_type, opset if opset is not None else 10**6)


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


def is_op_module(mod) -> bool:
    """Whether ``mod`` is one op: an instance of a registered module class whose forward is its class's. An instance
    whose forward was replaced (``norm.forward = scaled``) computes something else, and is traced into."""
    _load()
    return type(mod) in _BY_MODULE and "forward" not in vars(mod)


def for_aten(overload) -> tuple[OpDef, Callable | None] | None:
    _load()
    return _BY_ATEN.get(str(overload))


_loaded = False


def load() -> None:
    """Import the op definitions now. A frontend does before it patches torch's functions (fx's tracer makes
    ``torch.arange`` take traced sizes) or records: the registry keys spellings by the function objects it sees."""
    _load()


def _load() -> None:
    """Import the op definitions, once; their own torch calls go through no ``TorchFunctionMode``, and a load that
    failed halfway does not pass for a whole one."""
    global _loaded
    if not _loaded:
        _loaded = True
        import torch

        try:
            with torch._C.DisableTorchFunction():
                from . import (attention, control, creation, elementwise, nn, python, quantize,  # noqa: F401
                               reduce, rnn, shape, spectral)
                from . import shapes
                shapes.attach(_OPS)
        except BaseException:
            _loaded = False
            raise
