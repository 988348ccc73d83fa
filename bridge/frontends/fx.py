"""torch.fx frontend: ``symbolic_trace`` at module level, registered nn.Modules kept whole (with scope)."""
from __future__ import annotations

import functools
import math
import operator as _operator
import sys
from typing import Any

import torch
import torch.fx as fx
import torch.fx._symbolic_trace as _st
from torch.fx.node import map_arg

from ..ir import structure
from ..ir.graph import Graph, Scope, Value
from ..ops import registry
from .common import (GraphBuilder, add_unused_state, canonical_call, is_inplace_call, is_user_file,
                     scope_from_stack, set_outputs, static_access, tensor_owners, trace_into, user_frame)
from .signature import InputBinding, make_wrapper

_PREFIX = "m."
_getitem = _operator.getitem
_setitem = _operator.setitem


class BridgeTracer(fx.Tracer):
    """Keeps registered layers (Conv2d, LSTM, MultiheadAttention, ...) and user leaves whole; traces the rest."""

    def __init__(self, leaf_modules=()):
        super().__init__(autowrap_functions=_control_flow_functions())
        if _CHEAP_PATCHING:
            self._autowrap_search = []  # math's own functions get the prebuilt wrappers of _ClassPatcher
        self.record_stack_traces = False  # fx formats a whole stack per node; we keep only the user's frame
        self._leaf_classes = tuple(c for c in leaf_modules if isinstance(c, type))
        self._leaf_names = {c for c in leaf_modules if isinstance(c, str)}
        registry.load()  # before trace() patches torch's factories
        self.proxy_buffer_attributes = True  # self.mask[:, :T] with a traced T needs the buffer as a graph value

    def trace(self, root, concrete_args=None):
        if not _CHEAP_PATCHING or not isinstance(root, torch.nn.Module):
            return super().trace(root, concrete_args)
        _ClassPatcher.pending = {type(m) for m in root.modules()}
        saved, _st._Patcher = _st._Patcher, _ClassPatcher
        try:
            return super().trace(root, concrete_args)
        finally:
            _st._Patcher = saved
            _ClassPatcher.pending = None

    def create_node(self, *args, **kwargs):
        node = super().create_node(*args, **kwargs)
        f = sys._getframe(1)
        while f is not None and not is_user_file(f.f_code.co_filename):
            f = f.f_back
        if f is not None:
            node.meta["stack_trace"] = f'File "{f.f_code.co_filename}", line {f.f_lineno}'
        return node

    def proxy(self, node):
        return _Proxy(node, self)

    def call_module(self, m, forward, args, kwargs):
        alt = _TRACEABLE_FORWARD.get(type(m))
        if alt is not None:  # torch's transformer layers branch on tensors for their fused fast path
            forward = functools.partial(alt, m)
        return super().call_module(m, forward, args, kwargs)

    def is_leaf_module(self, m: torch.nn.Module, qualname: str) -> bool:
        if registry.is_op_module(m):
            return True
        if self._leaf_classes and isinstance(m, self._leaf_classes):
            return True
        name = qualname[len(_PREFIX):] if qualname.startswith(_PREFIX) else qualname
        return name in self._leaf_names


class _Proxy(fx.Proxy):
    """fx's Proxy plus item assignment: ``x[i] = v`` is recorded as ``operator.setitem``, an in-place write that
    conversion makes functional (after checking that no other view of ``x`` is read later)."""

    def __setitem__(self, key, value):
        self.tracer.create_proxy("call_function", _operator.setitem, (self, key, value), {})


class AliasedWrite(Exception):
    """An in-place write that another view of the same memory would see: fx cannot follow it (torch.export can)."""


# ---- cheaper patching while tracing -------------------------------------------------------------
# fx.Tracer.trace patches nn.Module.__call__ and __getattr__ on nn.Module itself, and wraps every math
# function anew. Setting a dunder on nn.Module rewrites that slot in every loaded nn.Module subclass (0.1-0.3
# ms per patch and per revert, more with large libraries imported), and the math wrappers cost ~0.4 ms: most of
# an fx trace of a small model. _ClassPatcher patches the model's own module classes instead (same calls
# intercepted: every module of the model is an instance of one of them) and reuses math wrappers built once.
# It also wraps torch's factories (below).
# It stands in for fx's patcher only during BridgeTracer.trace; the internals it needs are checked first.
_CHEAP_PATCHING = all(hasattr(_st, n) for n in ("_Patcher", "_PatchedFn", "_create_wrapped_func")) and \
    all(hasattr(_st._Patcher, n) for n in ("patch", "patch_method"))

# torch's factories take sizes as python ints, where fx gives Proxies (``torch.ones(T, T)`` with a traced T):
# while tracing they are wrapped like math's functions, so a call with a Proxy becomes a node.
_FACTORIES = ("arange", "zeros", "ones", "empty", "full", "rand", "randn", "eye", "linspace")

if _CHEAP_PATCHING:
    _MATH_WRAPPERS = {name: _st._create_wrapped_func(fn) for name, fn in vars(math).items()
                      if not name.startswith("_") and callable(fn)}
    _FACTORY_WRAPPERS = {name: _st._create_wrapped_func(getattr(torch, name)) for name in _FACTORIES}

    class _PatchedClassAttr(_st._PatchedFn):
        """``cls.name = new_fn`` where ``cls`` inherits ``name``; reverting deletes it, so inheritance is back."""

        def patch(self):
            setattr(self.frame_dict, self.fn_name, self.new_fn)

        def revert(self):
            delattr(self.frame_dict, self.fn_name)

    class _ClassPatcher(_st._Patcher):
        pending: set | None = None  # the module classes of the trace this patcher is made for

        def __init__(self):
            super().__init__()
            self._classes, _ClassPatcher.pending = _ClassPatcher.pending, None  # a nested trace gets fx's own
            if self._classes is not None:
                for name, fn in _MATH_WRAPPERS.items():
                    self.patch(vars(math), name, fn)
                for name, fn in _FACTORY_WRAPPERS.items():
                    self.patch(vars(torch), name, fn)

        def patch_method(self, cls, name, new_fn, deduplicate=True):
            classes = self._classes
            if cls is not torch.nn.Module or classes is None or not _inherits(classes, name):
                return super().patch_method(cls, name, new_fn, deduplicate)
            new_fn.__fx_already_patched = deduplicate
            for c in classes:
                self.patches_made.append(_PatchedClassAttr(c, name, None, new_fn))
                self.patches_made[-1].patch()


def _inherits(classes, name: str) -> bool:
    """Every class gets ``name`` from nn.Module itself (no class between overrides it)."""
    for c in classes:
        for k in c.__mro__:
            if k is torch.nn.Module:
                break
            if name in k.__dict__:
                return False
    return True


# ---- torch's transformer layers, as their documented slow path ----------------------------------
# Their forward checks a dozen tensor properties to pick a fused kernel, which fx cannot trace. The math is
# the slow path below; masks go to multi-head attention unchanged, which canonicalizes them itself.
def _encoder_layer(m, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
    x = src
    if m.norm_first:
        x = x + m._sa_block(m.norm1(x), src_mask, src_key_padding_mask, is_causal=is_causal)
        return x + m._ff_block(m.norm2(x))
    x = m.norm1(x + m._sa_block(x, src_mask, src_key_padding_mask, is_causal=is_causal))
    return m.norm2(x + m._ff_block(x))


def _encoder(m, src, mask=None, src_key_padding_mask=None, is_causal=None):
    out = src
    for layer in m.layers:
        out = layer(out, src_mask=mask, src_key_padding_mask=src_key_padding_mask, is_causal=bool(is_causal))
    return m.norm(out) if m.norm is not None else out


def _decoder_layer(m, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                   memory_key_padding_mask=None, tgt_is_causal=False, memory_is_causal=False):
    x = tgt
    if m.norm_first:
        x = x + m._sa_block(m.norm1(x), tgt_mask, tgt_key_padding_mask, tgt_is_causal)
        x = x + m._mha_block(m.norm2(x), memory, memory_mask, memory_key_padding_mask, memory_is_causal)
        return x + m._ff_block(m.norm3(x))
    x = m.norm1(x + m._sa_block(x, tgt_mask, tgt_key_padding_mask, tgt_is_causal))
    x = m.norm2(x + m._mha_block(x, memory, memory_mask, memory_key_padding_mask, memory_is_causal))
    return m.norm3(x + m._ff_block(x))


def _decoder(m, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
             memory_key_padding_mask=None, tgt_is_causal=None, memory_is_causal=False):
    out = tgt
    for layer in m.layers:
        out = layer(out, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                    tgt_key_padding_mask=tgt_key_padding_mask, memory_key_padding_mask=memory_key_padding_mask,
                    tgt_is_causal=bool(tgt_is_causal), memory_is_causal=memory_is_causal)
    return m.norm(out) if m.norm is not None else out


def _transformer(m, src, tgt, src_mask=None, tgt_mask=None, memory_mask=None, src_key_padding_mask=None,
                 tgt_key_padding_mask=None, memory_key_padding_mask=None, src_is_causal=None, tgt_is_causal=None,
                 memory_is_causal=False):
    memory = m.encoder(src, mask=src_mask, src_key_padding_mask=src_key_padding_mask, is_causal=src_is_causal)
    return m.decoder(tgt, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                     tgt_key_padding_mask=tgt_key_padding_mask, memory_key_padding_mask=memory_key_padding_mask,
                     tgt_is_causal=tgt_is_causal, memory_is_causal=memory_is_causal)


# Known difference: under no_grad, eager's fused encoder path writes zeros at padded positions (nested tensors);
# the slow path leaves values there. Unpadded positions, and everything downstream of a padding mask, agree.
_TRACEABLE_FORWARD = {torch.nn.TransformerEncoderLayer: _encoder_layer, torch.nn.TransformerEncoder: _encoder,
                      torch.nn.TransformerDecoderLayer: _decoder_layer, torch.nn.TransformerDecoder: _decoder,
                      torch.nn.Transformer: _transformer}


def _control_flow_functions() -> tuple:
    """torch's control-flow operators as a model calls them. fx records each call as one node instead of running
    it on proxies (scan would run, see no sequence among the proxies and return its initial carry: a silently
    wrong graph); recording fails on the function arguments, so fx refuses the model and torch.export, which
    traces these operators into regions, takes it."""
    from torch._higher_order_ops.associative_scan import associative_scan
    from torch._higher_order_ops.map import map as map_
    from torch._higher_order_ops.scan import scan
    from torch._higher_order_ops.while_loop import while_loop

    return (torch.cond, while_loop, scan, associative_scan, map_)


def fx_graph(model: torch.nn.Module, binding: InputBinding, leaf_modules=(), concrete_args=None):
    """The flattening wrapper and its fx graph (no conversion yet)."""
    wrapper = make_wrapper(model, binding, lambda o: isinstance(o, (torch.Tensor, fx.Proxy)))
    tracer = BridgeTracer(leaf_modules)
    graph = tracer.trace(wrapper, concrete_args=concrete_args)
    return wrapper, graph


def convert(wrapper, fxg: fx.Graph, binding: InputBinding, *, fake: bool = True, dynamic=None,
            data_dependent: str = "retry") -> Graph:
    """Turn an fx graph of the wrapper into a bridge Graph, propagating example values node by node
    (``fake``, ``data_dependent``: see ``GraphBuilder``)."""
    b = GraphBuilder(fake=fake, dynamic=dynamic, data_dependent=data_dependent)
    with b.session():
        return _convert(b, wrapper, fxg, binding, fake)


def _convert(b: GraphBuilder, wrapper, fxg: fx.Graph, binding: InputBinding, fake: bool) -> Graph:
    model = wrapper.m
    examples = dict(zip(binding.names, binding.examples))
    owners = tensor_owners(model)
    env: dict[fx.Node, Any] = {}
    aliases = _Aliases(b, fxg, env, lifetimes=None if fake else _Lifetimes(b, fxg, env))

    def attr_value(qualname: str):
        obj = _fetch(wrapper, qualname)
        if isinstance(obj, torch.Tensor):
            kind, names = owners.get(id(obj), ("constant", [qualname[len(_PREFIX):] if qualname.startswith(_PREFIX)
                                                           else qualname]))
            return b.constant(obj, kind, names)
        return obj

    for n in fxg.nodes:
        if aliases.lifetimes is not None:
            aliases.lifetimes.step(n)
        if n.op == "placeholder":
            env[n] = b.input(n.target, examples[n.target])  # the parameter's name (fx renames "input")
            aliases.add(n, env[n])
            continue
        if n.op == "get_attr":
            env[n] = attr_value(n.target)
            aliases.add(n, env[n])
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
                aliases.add(n, val)
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
        if opdef is None:  # a function fx kept whole (torch.fx.wrap), a method or a kept module: its ops instead
            fn = target if kind == "function" else module if kind == "module" else _method_call(target)
            done, result = trace_into(b, fn, args, kwargs, scope=scope, source=source, name=n.name.replace(".", "_"),
                                      module=module, module_path=n.target[len(_PREFIX):] if module is not None else "")
            if done:
                env[n] = result
                aliases.add(n, result)
                continue
            canon = f"{canon}; {result}"
        name = n.target[len(_PREFIX):] if n.op == "call_module" else n.name
        result, opaque = b.call_or_opaque(opdef, canon, target, args, kwargs, scope=scope, source=source, name=name,
                                          node_target=module)
        if opaque is not None and module is not None:
            opaque.meta["module_path"] = n.target[len(_PREFIX):]
        if wrap is not None:
            result = wrap(result)
        env[n] = result
        aliases.add(n, result)
        if is_inplace_call(kind, target, n.args, n.kwargs, module) and n.args and isinstance(n.args[0], fx.Node):
            aliases.write(n, env[n.args[0]], result, source)  # later readers of the written tensor see the result
    add_unused_state(b, model, owners)
    g = b.graph
    g.meta.update(frontend="fx", symbols=dict(b.symbols), fake=fake, input_binding=binding.params,
                  model_type=type(model).__name__)
    return g


def _method_call(name: str):
    """A Tensor method as a function of the tensor and the method's arguments (for ``trace_into``)."""
    def call(self, *args, **kwargs):
        return getattr(self, name)(*args, **kwargs)
    call.__name__ = name
    return call


class _Aliases:
    """Which fx nodes hold tensors sharing memory (a view and its base, ``x.contiguous()`` and ``x``), from the
    example values. Conversion turns an in-place write into a new value for the written node only, which is
    right unless another alias of that memory is read after the write: then this refuses, and ``trace`` falls
    back to torch.export, which functionalizes views properly. ``x[i] += v`` (a view written, then stored back
    into ``x[i]``) is the one write through a view that stays correct and is allowed."""

    def __init__(self, b: GraphBuilder, fxg: fx.Graph, env: dict, lifetimes: "_Lifetimes | None" = None):
        self.b, self.env, self.lifetimes = b, env, lifetimes
        self.pos = {n: i for i, n in enumerate(fxg.nodes)}
        self.groups: dict[int, list[fx.Node]] = {}

    def _root(self, v) -> int | None:
        ex = self.b.example.get(id(v)) if isinstance(v, Value) else None
        if not isinstance(ex, torch.Tensor):
            return None
        return id(ex._base if ex._is_view() else ex)

    def add(self, n: fx.Node, result) -> None:
        values = [result] if isinstance(result, Value) else structure.flatten(result, _is_value)[0]
        if self.lifetimes is not None:
            self.lifetimes.hold(values)
        for v in values:
            r = self._root(v)
            if r is not None:
                self.groups.setdefault(r, []).append(n)

    def write(self, n: fx.Node, written: Value, result, source) -> None:
        """``n`` wrote into ``written`` in place: every node holding that same tensor (``h`` and ``h.add_(x)``)
        now holds ``result``; a node holding another view of its memory must not be read afterwards."""
        src, here = n.args[0], self.pos[n]
        same = []
        for m in self.groups.get(self._root(written), ()):
            if m is n:  # the write's own result (x.transpose_() is a view of x)
                continue
            if self.env.get(m) is written:
                same.append(m)
            elif not _stores_back(n, src) and any(self.pos[u] > here for u in m.users):
                raise AliasedWrite(f"{source or n.name}: {n.target if isinstance(n.target, str) else n.name} writes "
                                   f"in place into memory that {m.name} also sees, and {m.name} is read afterwards")
        for m in same + [src]:
            if self.lifetimes is not None:  # m holds the result now, not the value it held
                self.lifetimes.release(self.env.get(m))
            self.env[m] = result
            self.add(m, result)


class _Lifetimes:
    """Real example values go once no later fx node reads them: a model's activations would all be kept until the
    end of the conversion otherwise (+150 MiB on ResNet-50 at 224x224). A value goes when every fx node whose
    result holds it has had its last reader (an output of ``split`` lives on in its ``getitem``)."""

    def __init__(self, b: GraphBuilder, fxg: fx.Graph, env: dict):
        self.b, self.env = b, env
        last: dict[fx.Node, fx.Node] = {}
        for n in fxg.nodes:
            last[n] = n  # a result no node reads goes right after it is made
            for a in n.all_input_nodes:
                last[a] = n
        self.dying: dict[fx.Node, list[fx.Node]] = {}
        for a, n in last.items():
            if a.op != "output":
                self.dying.setdefault(n, []).append(a)
        self.holders: dict[int, int] = {}  # id(Value) -> fx nodes whose result holds it (re-holding counts again)
        self.prev: fx.Node | None = None

    def hold(self, values) -> None:
        for v in values:
            if v.kind == "node":
                self.holders[id(v)] = self.holders.get(id(v), 0) + 1

    def step(self, n: fx.Node) -> None:
        """Before converting ``n``: the results whose last reader was the node before it go."""
        prev, self.prev = self.prev, n
        for a in self.dying.pop(prev, ()) if prev is not None else ():
            self.release(self.env.get(a))

    def release(self, held) -> None:
        """One holder of each value in ``held`` is gone; a value no fx node holds any more loses its example."""
        for v in [held] if isinstance(held, Value) else structure.flatten(held, _is_value)[0]:
            if v.kind == "node" and id(v) in self.holders:
                self.holders[id(v)] -= 1
                if self.holders[id(v)] <= 0:
                    del self.holders[id(v)]
                    self.b.example.pop(id(v), None)


def _is_value(o) -> bool:
    return isinstance(o, Value)


def _stores_back(n: fx.Node, src: fx.Node) -> bool:
    """``x[i] += v``: ``t = x[i]; t = t.__iadd__(v); x[i] = t``, the write through the view stored back."""
    if not (src.op == "call_function" and src.target is _getitem and len(n.users) == 1):
        return False
    (s,) = n.users
    return (s.op == "call_function" and s.target is _setitem and len(s.args) == 3 and s.args[0] is src.args[0]
            and s.args[2] is n and s.args[1] == src.args[1])


def _fetch(root, qualname: str):
    obj = root
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj

