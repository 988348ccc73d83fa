"""What both torch frontends share: building a Graph while propagating example values.

``GraphBuilder.call`` adds a node and at once runs the op's torch ``impl`` on the example values of its
inputs: fake tensors (shapes and dtypes, symbolic dims through a ShapeEnv) or real ones (cheaper for a small
static model; ops with no fake kernel need them). So shape inference is the op definition itself.

A size that depends on tensor values (``x[x > 0]``, ``nonzero``: the registry's ``data_dependent`` fact) stays
a symbol in the graph (``u0``, an unbacked size of torch's ShapeEnv), never the number seen at trace time: real
propagation hands such an op over to fake propagation (``NeedsSymbolicSizes``), and where the symbol cannot be
kept (an op must know the number) the trace stops with a ``TraceError`` naming both lines.
"""
from __future__ import annotations

import contextlib
import functools
import linecache
import operator
import os
import traceback
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensor

from ..errors import BridgeError, TraceError
from ..ir.graph import ATOMS, Graph, Node, Scope, Value, iter_values, map_values
from ..ir.spec import spec_of
from ..ir import structure
from ..ops import registry
from ..ops.shapes import fake_of_light, fast_result

_NOT_USER_DIRS = (os.path.dirname(os.path.abspath(torch.__file__)),                   # torch
                  os.path.dirname(os.path.dirname(os.path.abspath(__file__))))         # bridge


@functools.lru_cache(maxsize=4096)
def is_user_file(filename: str) -> bool:
    """A frame in the user's code: not torch, not bridge, not generated (``<eval_with_key>``, ``<string>``)."""
    return not (filename.startswith("<") or os.path.abspath(filename).startswith(_NOT_USER_DIRS))


class NeedsRealValues(Exception):
    """Raised when fake propagation cannot continue (an op with no fake kernel); the frontend retries with real
    tensors."""


class NeedsSymbolicSizes(Exception):
    """Raised by real propagation at an op whose output size depends on data; the frontend retries with fake
    tensors, where that size stays a symbol."""


class _Call:
    """What a fact's predicate reads of a call before its node exists: the canonical ``args``."""

    __slots__ = ("args",)

    def __init__(self, args):
        self.args = args


def normalize_dynamic(dynamic, names: list[str]) -> dict[str, dict[int, str]]:
    """Accept ``{"x": {0: "batch"}}``, ``{"x": [0]}``, ``{"x": {0: None}}`` or a tuple aligned with inputs."""
    if not dynamic:
        return {}
    if isinstance(dynamic, (list, tuple)):
        dynamic = dict(zip(names, dynamic))
    out: dict[str, dict[int, str]] = {}
    for name, dims in dynamic.items():
        if dims is None:
            continue
        if name not in names:
            raise BridgeError(f"dynamic= names input {name!r}, but the inputs are {names}")
        if isinstance(dims, (list, tuple, set)):
            dims = {int(d): None for d in dims}
        out[name] = {int(d): (sym if isinstance(sym, str) else (getattr(sym, "__name__", None) or f"{name}_{d}"))
                     for d, sym in dims.items()}
    return out


def check_dynamic_examples(names: list[str], examples: list, dynamic: dict[str, dict[int, str]]) -> None:
    """A symbolic dim needs an example size >= 2: torch specializes 0 and 1 (a size-1 dim broadcasts)."""
    for name, t in zip(names, examples):
        for d, sym in (dynamic.get(name) or {}).items():
            if not -t.dim() <= d < t.dim():
                raise BridgeError(f"dynamic= marks dim {d} of {name!r}, which has only {t.dim()} dims")
            if t.shape[d] < 2:
                raise BridgeError(f"dim {d} of {name!r} cannot become symbolic ({sym!r}) from an example of size "
                                  f"{t.shape[d]}: sizes 0 and 1 are special to torch (a size-1 dim broadcasts), so "
                                  f"the graph would be specialized. Give an example of size >= 2 in that dim.")


class GraphBuilder:
    """``fake``: propagate fake tensors (else real ones). ``data_dependent``: what real propagation does at an op
    whose output size depends on data: "retry" (raise ``NeedsSymbolicSizes``: the caller retries with fake
    tensors), "refuse" (a ``TraceError``: fake propagation already failed), or "allow" (the size seen is kept).
    ``fast_shapes``: common ops get their results from ``ops.shapes`` instead of fake dispatch (the ONNX import:
    its graphs have no in-place op, it runs with grad mode off and on CPU). Its examples stay light until fake
    dispatch needs them (``example_of``): a constant's example is its real tensor, a fast result a plain meta
    tensor; each becomes a fake tensor of the mode the first time an op falls back to fake dispatch with it (a
    fake costs 7 us to make, more than the fast path's rule)."""

    def __init__(self, *, fake: bool = True, dynamic: dict[str, dict[int, str]] | None = None,
                 data_dependent: str = "allow", fast_shapes: bool = False):
        self.graph = Graph()
        self.fake = fake
        self.fast_shapes = fast_shapes and fake
        self.data_dependent = data_dependent
        self.dynamic = dynamic or {}
        self.symbols: dict[str, str] = {}  # ShapeEnv symbol -> user name
        self.example: dict[int, Any] = {}  # id(Value) -> example (fake or real) value
        self._light: set[int] = set()  # ids of Values whose example is light (fast_shapes: see the class doc)
        self._const_by_id: dict[int, Value] = {}
        if fake:
            from torch._subclasses.fake_tensor import FakeTensorMode
            from torch.fx.experimental.symbolic_shapes import ShapeEnv

            # no 0/1 specialization and no duck sizing: a symbolic dim stays symbolic whatever its example size,
            # and two symbolic dims with equal example sizes stay two symbols. A static model gets a ShapeEnv too:
            # it keeps data-dependent sizes as unbacked symbols
            env = ShapeEnv(specialize_zero_one=False, duck_shape=False)
            self.mode = FakeTensorMode(shape_env=env, allow_non_fake_inputs=True)
            self.memo = FakeCallMemo(self.mode)  # ops on static fakes by their arguments' layouts
        else:
            self.mode = self.memo = None

    def adopt(self, mode) -> None:
        """Propagate in ``mode`` (torch.export's fake mode, its ShapeEnv and symbols) instead of this builder's own:
        the exported program's values of its nodes then serve as the examples of the ops that compute the same
        (``call``'s ``known``), and what the builder computes itself is consistent with them."""
        mode.allow_non_fake_inputs = True  # constants captured by the model are real tensors
        self.mode, self.memo = mode, FakeCallMemo(mode)

    def input_of(self, name: str, example) -> Value:
        """A graph input whose example is a fake tensor of the adopted mode (torch.export's placeholder value); its
        dynamic dims name the mode's symbols."""
        if isinstance(example, torch.Tensor):
            self._name_symbols(example, self.dynamic.get(name))
        v = self.graph.add_input(name, self.spec(example))
        self.example[id(v)] = example
        return v

    # ---- example values -----------------------------------------------------------------------
    def _to_example(self, t: torch.Tensor, dyn: dict[int, str] | None = None):
        if not self.fake or not isinstance(t, torch.Tensor):
            return t
        if dyn:
            from torch.fx.experimental.symbolic_shapes import DimDynamic, StatelessSymbolicContext

            ctx = StatelessSymbolicContext(dynamic_sizes=[
                DimDynamic.DYNAMIC if i in dyn else DimDynamic.STATIC for i in range(t.dim())])
            ft = self.mode.from_tensor(t, symbolic_context=ctx)
            self._name_symbols(ft, dyn)
            return ft
        if self.fast_shapes and plain_tensor(t):  # each tensor converted once (the builder keeps one Value per
            f = direct_fake(self.mode, t)         # tensor): no need for the mode's memo of conversions
            if f is not None:
                return f
        return static_fake(self.mode, t)

    def _name_symbols(self, ft, dyn: dict[int, str] | None) -> None:
        """Name the ShapeEnv symbols of a fake input's dynamic dims by the user's names (the first name wins)."""
        for i, sym in (dyn or {}).items():
            s = ft.shape[i] if i < ft.dim() else None
            if isinstance(s, torch.SymInt) and s.node.expr.is_symbol:
                self.symbols.setdefault(str(s.node.expr), sym)

    @contextlib.contextmanager
    def session(self):
        """Wrap a whole conversion: real-value propagation runs without autograd and restores the RNG state
        (once, not per op: forking the RNG costs ~25 us)."""
        with (_real_context() if self.mode is None else contextlib.nullcontext()):
            yield self

    def spec(self, example) -> Any:
        return spec_of(example, self.symbols)

    # ---- building -----------------------------------------------------------------------------
    def input(self, name: str, example: torch.Tensor) -> Value:
        ex = self._to_example(example, self.dynamic.get(name))
        v = self.graph.add_input(name, self.spec(ex))
        self.example[id(v)] = ex
        return v

    def constant(self, tensor: torch.Tensor, kind: str, names: list[str]) -> Value:
        """One Value per distinct tensor object: shared weights stay one Value with several names."""
        key = id(tensor)
        if key in self._const_by_id:
            v = self._const_by_id[key]
            for n in names:
                if n not in v.names:
                    v.names.append(n)
            return v
        v = self.graph.add_constant(names[0], tensor, kind=kind, names=names)
        if self.fast_shapes:
            self.light_example(v, tensor)
        else:  # buffers may be written in place (batchnorm running stats): never let tracing touch the model's own
            self.example[id(v)] = self._to_example(tensor) if self.fake or kind != "buffer" else tensor.clone()
        self._const_by_id[key] = v
        return v

    def light_example(self, v: Value, tensor: torch.Tensor) -> None:
        """``v``'s example: a constant's tensor or a meta tensor, kept as it is until fake dispatch needs it
        (``fast_shapes``), else its fake."""
        if self.fast_shapes:
            self.example[id(v)] = tensor
            self._light.add(id(v))
        else:
            self.example[id(v)] = self._made_fake(tensor)

    def _made_fake(self, t: torch.Tensor):
        """A light example (a plain meta tensor, or a constant's own tensor) as a fake of the mode."""
        return fake_of_light(self.mode, t) if t.device.type == "meta" else self._to_example(t)

    def example_of(self, v: Value):
        """``v``'s example as fake dispatch takes it (a light one made a fake of the mode now, once)."""
        ex = self.example[id(v)]
        if self._light and id(v) in self._light:
            self._light.discard(id(v))
            ex = self.example[id(v)] = self._made_fake(ex)
        return ex

    def region(self) -> "GraphBuilder":
        """A builder for a region (a subgraph of a control-flow node of this graph): a graph of its own, in this
        builder's propagation mode and symbols."""
        sub = GraphBuilder.__new__(GraphBuilder)
        sub.__dict__.update(self.__dict__)
        sub.graph, sub.example, sub._const_by_id, sub._light = Graph(), {}, {}, set()
        return sub

    def region_input(self, name: str, operand: Any, outer: "GraphBuilder") -> Value:
        """A region input for the outer graph's ``operand`` (a Value of ``outer``): same spec and example."""
        ex = outer.example_of(operand) if isinstance(operand, Value) else operand
        v = self.graph.add_input(name, self.spec(ex))
        self.example[id(v)] = ex
        return v

    def call(self, op: str, args: dict[str, Any], *, scope: Scope | None = None, source: str | None = None,
             target: Any = None, name: str | None = None, known: Any = None) -> Any:
        """Add a node for ``op`` and return its result as a structure of Values (or a folded constant). ``known``:
        the op's result on these examples where the caller has it already (a fake tensor of this builder's mode:
        torch.export's value of the same op, see ``adopt``): not computed again."""
        opdef = registry.get(op)
        if not self.fake and self.data_dependent != "allow" and opdef.is_data_dependent(_Call(args)):
            if self.data_dependent == "retry":
                raise NeedsSymbolicSizes(f"{op} at {source or 'an unknown line'}")
            raise self._size_error(op, scope, source, None)
        if known is not None:
            return self.add_result(op, args, known, scope=scope, source=source, target=target, name=name)
        if self.fast_shapes and opdef.shape is not None:
            ex, example_as_is = self.example, self._example_as_is
            result = fast_result(opdef, {k: ex[id(a)] if type(a) is Value else a if type(a) in ATOMS else
                                         map_values(a, example_as_is) for k, a in args.items()}, self.mode)
            if result is not None:
                return self.add_result(op, args, result, scope=scope, source=source, target=target, name=name)
        ex_args = map_values(args, self.example_of)
        key = self.memo.key(op, ex_args) if self.memo is not None and op != "opaque" else None
        result = self.memo.get(key) if key is not None else None
        if result is None:
            result = self._compute(opdef, op, ex_args, target, scope, source)
            if key is not None:
                self.memo.store(key, result, ex_args)
        return self.add_result(op, args, result, scope=scope, source=source, target=target, name=name)

    def _compute(self, opdef, op: str, ex_args: dict[str, Any], target, scope, source) -> Any:
        """``op`` on the example values, in this builder's propagation mode."""
        try:
            restore = target if op == "opaque" else None  # registered layers run functionally: no buffer writes
            with _restoring(restore), (self.mode if self.mode is not None else contextlib.nullcontext()), \
                    (_python_dispatcher() if self.dynamic else contextlib.nullcontext()):
                return opdef.impl(**ex_args)
        except Exception as e:  # noqa: BLE001 - classify and re-raise below
            if self.fake and self.data_dependent != "allow" and _guards_data_dependent_size(e) \
                    and self._size_origin(e) is not None:  # a size in the graph, not a number read inside this op
                raise self._size_error(op, scope, source, e) from e
            if self.fake and _needs_real_values(e):
                raise NeedsRealValues(str(e)) from e
            raise

    def call_or_opaque(self, opdef, canon: Any, target: Any, args, kwargs, *, scope: Scope | None = None,
                       source: str | None = None, name: str | None = None, node_target: Any = None,
                       known: Any = None):
        """``opdef`` on its canonical arguments ``canon``; without an op (``canon`` then says why), an opaque call of
        ``target`` on ``args``/``kwargs``, its node recording why. Returns the result and the opaque node (or None)."""
        if opdef is None:
            why, op, canon = canon, "opaque", {"target": target, "args": list(args), "kwargs": dict(kwargs)}
        else:
            why, op = None, opdef.name
        before = len(self.graph.nodes)
        result = self.call(op, canon, scope=scope, source=source, name=name,
                           target=target if node_target is None else node_target,
                           known=known if opdef is not None else None)
        node = self.graph.nodes[-1] if op == "opaque" and len(self.graph.nodes) > before else None
        if node is not None:
            node.meta["why_opaque"] = why if isinstance(why, str) else "no canonical op"
        return result, node

    def add_result(self, op: str, args: dict[str, Any], result: Any, *, scope: Scope | None = None,
                   source: str | None = None, target: Any = None, name: str | None = None) -> Any:
        """A node for ``op`` whose example value ``result`` the caller computed, returned as a structure of Values
        (``result`` itself when it holds no tensor and no symbolic scalar: known at trace time, folded)."""
        if isinstance(result, torch.Tensor):  # most results: one tensor, a run-time value
            leaves, struct = [result], ("leaf", 0)
        else:
            leaves, struct = structure.flatten(result, _runtime_test(registry.get(op), args))
        if not leaves:
            return result
        base = name or op
        outs = [(base if len(leaves) == 1 else f"{base}_{i}", self.spec(x)) for i, x in enumerate(leaves)]
        node = self.graph.add_node(op, args, outputs=outs, out_struct=struct, scope=scope, source=source,
                                   target=target)
        for v, x in zip(node.outputs, leaves):
            self.example[id(v)] = x
            if self.fast_shapes and type(x) is torch.Tensor:  # a fast result: a plain meta tensor
                self._light.add(id(v))
        return structure.unflatten(struct, node.outputs)

    def _example_as_is(self, v: Value):
        return self.example[id(v)]

    def last_node(self) -> Node:
        return self.graph.nodes[-1]

    def _size_origin(self, e: Exception | None) -> Node | None:
        """The first node whose output size holds a data-dependent symbol that ``e`` guards on."""
        symbols = _unbacked_symbols(e)
        if not symbols:
            return None
        return next((n for n in self.graph.nodes for v in n.outputs
                     if symbols & _unbacked_symbols(str(getattr(v.spec, "shape", v.spec)))), None)

    def _size_error(self, op: str, scope: Scope | None, source: str | None, e: Exception) -> TraceError:
        """A TraceError for an op that needs a data-dependent size as a number: names its line, and the line
        (and op) where that size came from."""
        symbols = _unbacked_symbols(e)
        origin = self._size_origin(e)
        where = f" at {source}" if source else ""
        if scope is not None and scope.path:
            where += f" (in {scope.path}, {scope.type})"
        if e is None:  # real propagation after fake failed: the size could only be the number seen now
            lines = [f"could not trace: the output size of {op}{where} depends on tensor values, and shapes are "
                     "computed with real tensors here (another op has no fake-tensor kernel), so that size would "
                     "become the number seen while tracing"]
        else:
            lines = [f"could not trace: {op}{where} needs a size that depends on tensor values as a fixed number"]
        if source_line(source):
            lines.append(f"    {source_line(source)}")
        if origin is not None:
            lines.append(f"  that size ({', '.join(sorted(symbols))}) comes from {origin.op}"
                         + (f" at {origin.source}" if origin.source else ""))
            if source_line(origin.source):
                lines.append(f"    {source_line(origin.source)}")
        lines.append("bridge keeps such sizes symbolic, but this op cannot take a symbol there, and the number seen "
                     "while tracing would be wrong for other inputs. How to fix: keep shapes fixed and select with a "
                     "mask (torch.where, masked_fill) instead of x[mask] / nonzero, or keep this code in a submodule "
                     "and pass leaf_modules=[ThatSubmodule] (one opaque node, run eagerly).")
        return TraceError("\n".join(lines), source=source, causes={"fake": e} if e is not None else {})


def plain_tensor(t: torch.Tensor) -> bool:
    """A dense tensor of torch.Tensor itself, with no conjugate or negative bit: its fake is its layout alone."""
    return type(t) is torch.Tensor and t.layout is torch.strided and not (
        t.is_quantized or t.is_nested or t.is_mkldnn or t.is_conj() or t.is_neg() or t.device.type == "meta")


def direct_fake(mode, t: torch.Tensor):
    """A fake tensor of ``mode`` with ``t``'s sizes, strides, dtype and device, made directly around a meta tensor
    (a few µs; ``mode.from_tensor`` describes the whole tensor and its views: 80-230 µs, a third of a recorded
    GPT-2's overhead). None where this torch's FakeTensor cannot be made so; the caller then uses from_tensor."""
    global _DIRECT
    if _DIRECT is False:
        return None
    try:
        meta = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")
        f = FakeTensor(mode, meta, t.device)
        if _DIRECT is None and not (isinstance(f, FakeTensor) and f.fake_mode is mode and f.shape == t.shape and
                                    f.stride() == t.stride() and f.dtype == t.dtype and f.device == t.device):
            raise TypeError("unexpected FakeTensor")
        _DIRECT = True  # this torch's FakeTensor is made so: no need to look again
    except Exception:  # noqa: BLE001 - a torch whose FakeTensor takes other arguments: from_tensor serves
        _DIRECT = False
        return None
    if t.requires_grad:
        f.requires_grad_(True)
    return f


_DIRECT = None  # True once direct_fake made a right fake in this torch, False once it failed


def static_fake(mode, t: torch.Tensor):
    """``mode``'s fake of a real tensor ``t`` with static sizes, memoized in the mode (which holds its fakes
    weakly: keep the result alive to keep it memoized). Made directly where it can be: ``from_tensor`` costs
    80-230 us a tensor."""
    converter = mode.fake_tensor_converter
    f = converter._get_memo(t) if hasattr(converter, "_get_memo") else None
    plain = plain_tensor(t.data if type(t) is torch.nn.Parameter else t)
    if f is None and plain and hasattr(converter, "set_tensor_memo"):
        f = direct_fake(mode, t)
        if f is not None:
            converter.set_tensor_memo(t, f)
    return f if f is not None else mode.from_tensor(t, static_shapes=True)


class FakeCallMemo:
    """Calls on fake tensors, memoized by their arguments' layouts.

    FakeTensorMode costs 0.1-3 ms a call (each call's ATen ops dispatched in python, each op's cache key built from
    its arguments); a model repeats its calls (BERT-base's 12 layers make the same calls on the same shapes), and a
    call whose tensor arguments have the layouts of an earlier call's (sizes, strides, offset, dtype, device,
    requires_grad; the other arguments equal), where that call's result was fresh tensors, gets fresh fakes of those
    layouts directly (a few us). Fresh: memory no argument and no other result sees (a view of memory the call
    made, as a linear's output on a 3-d input views its matrix product, is fresh; an argument returned, detached or
    viewed is not), no value kept (a fake carries none unless torch keeps a small constant), static sizes."""

    _LEAVES = (int, float, bool, str, type(None), torch.dtype, torch.device, torch.layout, torch.memory_format,
               type(Ellipsis))

    def __init__(self, mode):
        self.mode = mode
        self.results: dict[tuple, tuple] = {}

    def key(self, func, args, kwargs=None):
        """A hashable description of the call; None where an argument has none (a module, a callable, a symbolic
        size, a tensor with no strides, a fake that carries a constant)."""
        if _autocast_on():  # autocast picks result dtypes by state the arguments do not show: no memo
            return None
        out = [func, torch.get_default_dtype(), torch.is_grad_enabled()]
        try:
            if not self._describe(args, out) or not self._describe(kwargs, out):
                return None
            key = tuple(out)
            hash(key)
        except Exception:  # noqa: BLE001 - a symbolic size (unhashable), a tensor with no strides: no key
            return None
        return key

    def _describe(self, obj, out: list) -> bool:
        if isinstance(obj, torch.Tensor):
            if getattr(obj, "constant", None) is not None or obj.layout is not torch.strided or \
                    not all(type(n) is int for n in (*obj.shape, *obj.stride(), obj.storage_offset())):
                return False  # a symbolic size or offset: no key (hashing or comparing it would guard on it)
            out.append((type(obj), tuple(obj.shape), obj.stride(), obj.storage_offset(), obj.dtype, obj.device,
                        obj.requires_grad))
            return True
        if type(obj) in self._LEAVES:
            out.append((type(obj), obj))  # 1, 1.0 and True are equal keys, but give int, float and bool results
            return True
        if isinstance(obj, (tuple, list)):
            out.append((type(obj), len(obj)))
            return all(self._describe(x, out) for x in obj)
        if isinstance(obj, dict):
            out.append((dict, tuple(obj)))
            return all(self._describe(x, out) for x in obj.values())
        if isinstance(obj, slice):
            out.append(slice)
            return self._describe((obj.start, obj.stop, obj.step), out)
        return False

    def get(self, key):
        """Fresh fakes for a call seen before, or None."""
        described = self.results.get(key)
        if described is None:
            return None
        from torch.utils._mode_utils import no_dispatch

        container, layouts = described
        fakes = []
        with no_dispatch():  # plain meta tensors, not made through the fake mode a caller may be in
            for shape, stride, dtype, device, requires_grad in layouts:
                f = FakeTensor(self.mode, torch.empty_strided(shape, stride, dtype=dtype, device="meta"), device)
                if requires_grad:
                    f.requires_grad_(True)
                fakes.append(f)
        return fakes[0] if container is None else container(fakes)

    def store(self, key, result, arguments) -> None:
        """Remember ``result`` of the call ``key`` on ``arguments`` where it is fresh fakes of the mode."""
        single = isinstance(result, torch.Tensor)
        leaves = [result] if single else list(result) if type(result) in (tuple, list) else None
        if not leaves or not all(isinstance(t, FakeTensor) and t.fake_mode is self.mode for t in leaves):
            return
        try:
            storages = {t.untyped_storage()._cdata for t in iter_tensors(arguments)}
        except Exception:  # noqa: BLE001 - an argument with no storage (sparse, nested): not memoized
            return
        described = []
        for t in leaves:
            # sizes, strides and offset must be plain ints, checked by type first: comparing a data-dependent
            # (unbacked) size would guard on it, which torch refuses
            if t.layout is not torch.strided or t.is_quantized or t.is_nested or \
                    not all(type(n) is int for n in (*t.shape, *t.stride(), t.storage_offset())):
                return
            if t.is_conj() or t.is_neg() or t.constant is not None or t.storage_offset() != 0 or \
                    t.untyped_storage()._cdata in storages:
                return
            storages.add(t.untyped_storage()._cdata)
            described.append((tuple(t.shape), t.stride(), t.dtype, t.device, t.requires_grad))
        self.results[key] = (None if single else type(result), tuple(described))


def _autocast_on() -> bool:
    check = getattr(torch._C, "_is_any_autocast_enabled", None)
    return True if check is None else check()


def iter_tensors(obj, out: list | None = None) -> list[torch.Tensor]:
    """The tensors in ``obj`` (nested tuples, lists, dicts, slices). Recursion through the function itself, not a
    closure: a recursive closure is a reference cycle that would hold every call's tensors until the cyclic
    collector runs (an export pauses it)."""
    out = [] if out is None else out
    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif isinstance(obj, (tuple, list)):
        for x in obj:
            iter_tensors(x, out)
    elif isinstance(obj, dict):
        for x in obj.values():
            iter_tensors(x, out)
    elif isinstance(obj, slice):
        iter_tensors((obj.start, obj.stop, obj.step), out)
    return out


def _python_dispatcher():
    """Symbolic sizes reach C++ kernels (LSTM, multi-head attention) only through the python dispatcher."""
    from torch._dispatch.python import enable_python_dispatcher

    return enable_python_dispatcher()


def _restoring(target):
    """An opaque module runs for real while tracing: put its buffers back afterwards (running stats,
    counters), so tracing never changes the model."""
    return buffers_kept(target) if isinstance(target, torch.nn.Module) else contextlib.nullcontext()


@contextlib.contextmanager
def buffers_kept(module: torch.nn.Module):
    """Running ``module`` inside the block (batch norm in training mode updates its running statistics) leaves
    its buffers as they were."""
    saved = [(b, b.detach().clone()) for b in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, old in saved:
                b.copy_(old)


@contextlib.contextmanager
def _real_context():
    """Real propagation leaves no trace: no autograd graph, and the RNG state is restored afterwards."""
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        yield


def _runtime_test(opdef, args):
    """Which parts of an op's result stay run-time values in the graph (the rest is folded to constants)."""
    if opdef.name == "getattr":  # a tensor's device and dtype stay run-time: the module follows .to() and .double()
        return lambda x: _is_runtime_value(x) or isinstance(x, (torch.device, torch.dtype))
    if opdef.pure_python or not any(True for _ in iter_values(args)):
        return _is_runtime_value  # metadata of static shapes, or arithmetic on constants: known now
    # a python number computed from tensor data (x.item(), int(t)) is a run-time value, never baked in
    return lambda x: _is_runtime_value(x) or isinstance(x, (bool, int, float, complex))


def _is_runtime_value(x) -> bool:
    return isinstance(x, (torch.Tensor, torch.SymInt, torch.SymFloat, torch.SymBool))


def _unbacked_symbols(e: Exception | str | None) -> set[str]:
    """The data-dependent size symbols (``u0``, ``u12``) named in an exception chain or a spec's text."""
    import re

    if e is None:
        return set()
    text = e if isinstance(e, str) else " ".join(str(c) for c in _chain(e))
    return set(re.findall(r"\bu\d+\b", text))


def _guards_data_dependent_size(e: Exception) -> bool:
    """A branch or check on a size that depends on data (an unbacked symbol) that cannot stay symbolic."""
    return any(type(c).__name__ in ("GuardOnDataDependentSymNode", "PendingUnbackedSymbolNotFound")
               for c in _chain(e))


def _needs_real_values(e: Exception) -> bool:
    """Fake tensors cannot run this op (no fake kernel, a data-dependent output torch cannot make symbolic):
    real tensors can."""
    chain = list(_chain(e))
    names = {type(c).__name__ for c in chain}
    return bool(names & {"DataDependentOutputException", "DynamicOutputShapeException",
                         "GuardOnDataDependentSymNode", "UnsupportedOperatorException",
                         "UnsupportedFakeTensorException"}) or any("no fake impl registered" in str(c) for c in chain)


def _chain(e: BaseException):
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def user_frame(stack: str | list | None) -> str | None:
    """``file:line`` of the innermost frame outside torch and bridge in a stack trace."""
    if not stack:
        return None
    frames = traceback.extract_tb(stack) if hasattr(stack, "tb_frame") else None
    if frames is None and isinstance(stack, str):
        import re

        frames = [(f, int(ln)) for f, ln in re.findall(r'File "([^"]+)", line (\d+)', stack)]
    elif frames is not None:
        frames = [(f.filename, f.lineno) for f in frames]
    best = None
    for f, ln in frames or []:
        if is_user_file(f):
            best = (f, ln)
    if best is None:
        return None
    return f"{best[0]}:{best[1]}"


def source_line(loc: str | None) -> str:
    if not loc:
        return ""
    f, _, ln = loc.rpartition(":")
    try:
        return linecache.getline(f, int(ln)).strip()
    except ValueError:
        return ""


# ---- turning one torch call into canonical arguments ---------------------------------------------
_INPLACE_OPERATORS = frozenset({operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.ifloordiv,
                                operator.imod, operator.ipow, operator.iand, operator.ior, operator.ixor,
                                operator.setitem, operator.imatmul})
_AUGMENTED = {"add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "and", "or", "xor", "matmul", "lshift",
              "rshift"}


def is_inplace_call(kind: str, target: Any, args: tuple, kwargs: dict, module=None) -> bool:
    """Does this call write into its first argument (``x.add_(y)``, ``x += y``, ``F.relu(x, inplace=True)``)?"""
    if kind == "module":
        return bool(getattr(module, "inplace", False))
    if kind == "method":  # x.add_(y), and the augmented-assignment dunders x.__imul__(y)
        return (target.endswith("_") and not target.endswith("__")) or target == "__setitem__" or (
            target.startswith("__i") and target.endswith("__") and target[3:-2] in _AUGMENTED)
    if kind == "function":
        try:
            if target in _INPLACE_OPERATORS:
                return True
        except TypeError:
            pass
        if getattr(target, "__module__", None) in ("operator", "_operator"):  # operator.and_ (a & b) is not in place
            return False
        name = getattr(target, "__name__", "")  # torch.relu_, F.leaky_relu_
        return (name.endswith("_") and not name.endswith("__")) or bool(kwargs.get("inplace", False))
    return False


def canonical_call(kind: str, target: Any, args: tuple, kwargs: dict, resolve_attr=None, module=None):
    """Map a torch call to ``(opdef, canonical_args, wrap)``, or ``(None, reason, None)`` when no op fits.

    ``kind`` is "function", "method", "module" or "aten". ``resolve_attr(name)`` turns a module adapter's
    ``Attr`` into a Value. ``wrap`` rebuilds the spelling's own result structure from the op's.
    """
    if kind == "function":
        hit = registry.for_function(target)
    elif kind == "method":
        hit = registry.for_method(target)
    elif kind == "module":
        hit = registry.for_module(module)
    else:
        hit = registry.for_aten(target)
    if hit is None:
        return None, "no canonical op for this call", None
    opdef, adapter = hit
    kwargs = dict(kwargs)
    kwargs.pop("inplace", None)
    wrap = None
    try:
        if kind == "module":
            res = adapter(module, tuple(args), kwargs)
        elif adapter is not None:
            res = adapter(tuple(args), kwargs)
        else:
            res = (tuple(args), kwargs)
        if len(res) == 3:
            args, kwargs, wrap = res
        else:
            args, kwargs = res
        if kind == "aten":
            kwargs = {("input" if k == "self" else k): v for k, v in kwargs.items()
                      if k not in ("layout", "pin_memory", "memory_format", "non_blocking")}
        if resolve_attr is not None:
            args = tuple(_resolve(a, resolve_attr) for a in args)
            kwargs = {k: _resolve(v, resolve_attr) for k, v in kwargs.items()}
        canon = opdef.bind(tuple(args), kwargs)
    except (BridgeError, NotImplementedError, TypeError, ValueError, IndexError, KeyError) as e:
        return None, f"{opdef.name}: {e}", None
    return opdef, canon, wrap


def _resolve(a, resolve_attr):
    if isinstance(a, registry.Attr):
        return resolve_attr(a.name)
    if isinstance(a, list):
        return [_resolve(x, resolve_attr) for x in a]
    if isinstance(a, tuple) and not hasattr(a, "_fields"):
        return tuple(_resolve(x, resolve_attr) for x in a)
    return a


def static_access(container: Any, how: str, key: Any) -> tuple[bool, Any]:
    """``container[key]`` / ``container.key`` done at trace time when the container is a python structure of
    Values (a multi-output op's result) rather than a single tensor Value."""
    if isinstance(container, Value) or any(isinstance(k, Value) for k in iter_values(key)):
        return False, None
    try:
        return True, (container[key] if how == "getitem" else getattr(container, key))
    except Exception:  # noqa: BLE001 - let the op path report it
        return False, None


def scope_from_stack(stack: dict | None, strip: str = "") -> Scope:
    """Scope from an ``nn_module_stack`` meta dict ({key: (path, type)}), minus the wrapper prefix."""
    if not stack:
        return Scope()
    out = []
    for key, (path, typ) in stack.items():
        path = str(path)
        if str(key).startswith("_empty_nn_module_stack") or (strip and path in ("", strip.rstrip("."))):
            continue  # the flattening wrapper and export's placeholder entries are not the user's modules
        if strip and path.startswith(strip):
            path = path[len(strip):]
        tname = typ.__name__ if isinstance(typ, type) else str(typ).rsplit(".", 1)[-1]
        out.append((path, tname))
    return Scope(out)


def non_persistent_buffers(model: torch.nn.Module) -> set[str]:
    out = set()
    for mname, mod in model.named_modules(remove_duplicate=False):
        for b in getattr(mod, "_non_persistent_buffers_set", ()):
            out.add(f"{mname}.{b}" if mname else b)
    return out


def add_unused_state(b: GraphBuilder, model: torch.nn.Module, owners: dict) -> None:
    """Register every parameter and buffer of the model, used or not (``num_batches_tracked``, say), so the
    generated module's state_dict has exactly the model's keys. Tensors inside opaque modules stay there."""
    b.graph.meta["non_persistent"] = non_persistent_buffers(model)
    in_state_dict = list(model.state_dict(keep_vars=True))
    known = set(in_state_dict)
    b.graph.meta["state_order"] = in_state_dict + [  # non-persistent buffers last
        n for n, _ in model.named_buffers(remove_duplicate=False) if n not in known]
    inside_opaque = {id(t) for n in b.graph.nodes if n.op == "opaque" and isinstance(n.target, torch.nn.Module)
                     for t in list(n.target.parameters()) + list(n.target.buffers())}
    seen = {id(c.const) for c in b.graph.constants}
    tensors = dict(model.named_parameters(remove_duplicate=False))
    tensors.update(model.named_buffers(remove_duplicate=False))
    for name, t in tensors.items():
        if t is None or id(t) in seen or id(t) in inside_opaque:
            continue
        kind, names = owners[id(t)]
        b.constant(t, kind, names)
        seen.add(id(t))


def tensor_owners(model: torch.nn.Module) -> dict[int, tuple[str, list[str]]]:
    """id(tensor) -> ("param" | "buffer", every qualified name it has in the model)."""
    owners: dict[int, tuple[str, list[str]]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(p), ("param", []))[1].append(name)
    for name, buf in model.named_buffers(remove_duplicate=False):
        owners.setdefault(id(buf), ("buffer", []))[1].append(name)
    return owners


def set_outputs(g: Graph, flat_out, spec: tuple) -> None:
    """Graph outputs from the wrapper's flat outputs and its recorded structure; a flat output that is itself
    a structure of Values (a multi-output op returned whole) is spliced in."""
    values: list = []

    def expand(i: int):
        sub_leaves, sub_spec = structure.flatten(flat_out[i], lambda o: isinstance(o, Value))
        base = len(values)
        values.extend(sub_leaves)
        return structure.map_leaves(sub_spec, lambda j: ("leaf", base + j))

    final = structure.map_leaves(spec, expand)
    refuse_not_computed(final)
    g.set_outputs(values, final)


_ASSERTS = ("aten._assert", "aten.sym_constrain_range", "aten._functional_assert", "aten._assert_tensor_metadata")


class _NotInlined(Exception):
    pass


class _NoDataReads(torch.overrides.TorchFunctionMode):
    """Refuses reading a tensor's values into python while ``trace_into`` traces: under functionalization a fake
    tensor's ``.numpy()`` gives stray memory instead of failing, and the trace would keep it as a constant."""

    _READS = {torch.Tensor.numpy, torch.Tensor.__array__, torch.Tensor.tolist, torch.Tensor.item,
              torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__bool__, torch.Tensor.__index__}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self._READS:
            raise RuntimeError(f"Tensor.{func.__name__} reads tensor values, which a traced graph cannot keep")
        return func(*args, **(kwargs or {}))


def trace_into(b: GraphBuilder, target: Any, args: tuple, kwargs: dict, *, scope: Scope | None, source: str | None,
               name: str, module: torch.nn.Module | None = None, module_path: str = "") -> tuple[bool, Any]:
    """A call with no canonical op traced into ATen ops (``make_fx``, functionalized) and added as canonical nodes,
    under the call's scope and source line: a python function ``torch.fx.wrap`` keeps whole (torchvision's Swin),
    a Tensor method, a module kept whole (``module``: its parameters and buffers, under ``module_path``, become
    the graph's own weights, not copies), or an ATen operator with a decomposition in torch. ATen operators that
    have no canonical op are decomposed with torch's own decompositions (``torch._decomp``), as torch.export does.

    Tracing runs on fake tensors, so the call's python control flow may depend on shapes (the example's, or the
    graph's symbolic ones) but never on tensor values: a branch on data makes the trace fail, and the call stays
    whole rather than keeping the example's branch. ``(True, result)``, or ``(False, why)`` (nothing added) when it
    cannot be traced or an op has no canonical op and no decomposition: then the caller keeps the call whole."""
    from torch.fx.experimental.proxy_tensor import make_fx

    leaves, spec = structure.flatten((list(args), dict(kwargs)), lambda o: isinstance(o, Value))
    state: list[tuple[str, torch.Tensor]] = []
    if module is not None:  # passed in as inputs: the graph's weight Values, not constants captured by the trace
        state = list(module.named_parameters(remove_duplicate=False)) + \
            list(module.named_buffers(remove_duplicate=False))
    if not leaves and not state:
        return False, "no tensor arguments"
    n_in = len(leaves)

    def call(*tensors):
        a, k = structure.unflatten(spec, list(tensors[:n_in]))
        if module is None:
            return target(*a, **k)
        return torch.func.functional_call(module, {n: t for (n, _), t in zip(state, tensors[n_in:])}, tuple(a), k,
                                          tie_weights=False, strict=True)

    # the graph's own Value where a weight has one already; otherwise its example, and a Value only once inlined
    known = [b._const_by_id.get(id(t)) for _, t in state]
    examples = [b.example_of(v) for v in leaves] + [b.example_of(v) if v is not None else b._to_example(t)
                                                   for v, (_, t) in zip(known, state)]
    core: dict | None = None  # torch's decomposition tables, read only when an op needs one
    decompose: dict = {}
    for _ in range(8):  # each round decomposes the ATen ops the last one left without a canonical op
        try:
            with (b.mode if b.mode is not None else contextlib.nullcontext()), _real_context(), _NoDataReads():
                # b.mode's tensors are fake already; real examples are faked here, so no value is read either way
                gm = make_fx(torch.func.functionalize(call, remove="mutations"), decomposition_table=decompose,
                             tracing_mode="real" if b.mode is not None else "fake")(*examples)
        except Exception as e:  # noqa: BLE001 - not traceable: the call stays whole
            return False, f"could not be traced into: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        missing = {n.target for n in gm.graph.nodes if n.op == "call_function"
                   and n.target is not operator.getitem and not str(n.target).startswith(_ASSERTS)
                   and registry.for_aten(n.target) is None}
        if not missing:
            break
        if core is None:
            from torch._decomp import core_aten_decompositions, decomposition_table

            # into Core ATen first; torch's other decompositions may leave prims
            core = {**decomposition_table, **core_aten_decompositions()}
        more = {op: core[op] for op in missing if op in core and op not in decompose}
        if not more:
            break
        decompose.update(more)
    if missing:
        names = sorted(str(t) for t in missing)
        return False, f"traced into, but {', '.join(names)} {'has' if len(names) == 1 else 'have'} no canonical op " \
                      "and no decomposition in torch"
    weights = [b.constant(t, "param" if isinstance(t, torch.nn.Parameter) else "buffer",
                          [f"{module_path}.{n}" if module_path else n]) for n, t in state]
    before = len(b.graph.nodes)
    env: dict = {}
    inputs = iter(leaves + weights)
    try:
        for n in gm.graph.nodes:
            if n.op == "placeholder":
                env[n] = next(inputs)
            elif n.op == "get_attr":
                obj = getattr(gm, n.target)
                env[n] = b.constant(obj, "constant", [f"{name}.{n.target}"]) if isinstance(obj, torch.Tensor) else obj
            elif n.op == "output":
                return True, torch.fx.node.map_arg(n.args[0], lambda a: env[a])
            elif str(n.target).startswith(_ASSERTS):
                env[n] = None
            else:
                a = torch.fx.node.map_arg(n.args, lambda x: env[x])
                k = torch.fx.node.map_arg(n.kwargs, lambda x: env[x])
                if n.target is operator.getitem:
                    ok, val = static_access(a[0], "getitem", a[1])
                    if ok:
                        env[n] = val
                        continue
                opdef, canon, wrap = canonical_call("aten", n.target, a, k)
                if opdef is None:
                    raise _NotInlined(f"{n.target}: {canon}")
                res = b.call(opdef.name, canon, scope=scope, source=source, name=f"{name}_{n.name}", target=n.target)
                env[n] = wrap(res) if wrap is not None else res
    except (_NotInlined, BridgeError, NeedsRealValues, NeedsSymbolicSizes) as e:
        for node in reversed(b.graph.nodes[before:]):
            b.graph.erase_node(node)
        for v, old in zip(weights, known):  # weights first seen here: not the graph's when the call stays whole
            if old is None and not v._uses:
                b.graph.constants.remove(v)
                b.graph._names.discard(v.name)
                b._const_by_id.pop(id(v.const), None)
        if isinstance(e, (NeedsRealValues, NeedsSymbolicSizes)):
            raise
        return False, f"traced into, but {e}"
    raise AssertionError("an fx graph ends with its output")


def refuse_not_computed(spec: tuple) -> None:
    """An output the model returns that an aten spelling's canonical op does not compute (``native_layer_norm``'s
    mean) is refused by name, not returned as a placeholder."""
    from ..ops._util import NotComputed

    def go(sp):
        if sp[0] == "const":
            if isinstance(sp[1], NotComputed):
                sp[1].refuse()
            return
        for sub in sp[-1] if sp[0] != "leaf" and isinstance(sp[-1], list) else ():
            go(sub)

    go(spec)
