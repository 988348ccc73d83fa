"""Record frontend: the model runs once on the example inputs, and every torch call it makes is recorded.

For models torch.fx cannot trace symbolically (HuggingFace models branch on shapes and configs in python), this
costs one forward pass where torch.export costs make_fx, functionalization and fake tensors. The forward runs on
fake tensors first (static shapes, no data: no compute, so a large model's recording costs a fraction of its
forward); where that cannot serve (the forward reads a value, an op has no fake kernel, a size comes out
data-dependent, a tensor made outside the model would get symbolic sizes) it runs again, for real, on the
examples. A ``torch.overrides.TorchFunctionMode`` sees every torch function and Tensor method call (operators,
``x.shape`` and the other attributes included), and global module hooks give the module scope; the
recording becomes a ``torch.fx.Graph`` of the flattening wrapper (placeholders, ``get_attr`` of weights and
captured constants, ``call_function``/``call_method``/``call_module`` nodes with ``nn_module_stack`` and
``stack_trace`` meta), which the fx frontend's converter turns into a bridge Graph: op mapping, scopes, source
lines, opaque calls and outputs behave exactly as for fx. Registered layers (``nn.Linear``, ``nn.LSTM``, ...) and
``leaf_modules`` stay whole as ``call_module`` nodes, as fx keeps them. Each value the run computes is handed to
the converter as its node's example, as a fake tensor (shape, dtype, strides and views, no data), so shapes are
not propagated a second time and the run keeps no activation alive: its memory is one forward's.

Python control flow runs once, so the graph holds the branches and sizes the example took. That is right for
sizes when no dim is dynamic (``bridge.trace`` uses record only then), and never right for tensor values: a value
read into python from a tensor that depends on an input (``bool(t)``, ``t.item()``, ``t.tolist()``, ``int(t)``,
``t.numpy()``, ``__index__``, ``torch.equal``, ...) makes the recording refuse (``Refused``), and so does a size
that depends on such values (``x[mask]``, ``nonzero``), a write into a parameter, and functorch transforms
(``vmap``) whose wrapped tensors the recording cannot follow. ``bridge.trace`` then falls back to torch.export,
which keeps such code symbolic or says why it cannot. Reads of tensors that depend only on weights and constants
are constants and allowed. Like torch.export (non-strict), the forward runs with ``torch.compiler.is_exporting()``
true, so libraries skip their data-dependent fast paths (HuggingFace's mask checks) as they do for export.

The run leaves no trace: it uses copies of the inputs, no autograd, and restores the RNG state and the buffers'
contents afterwards (``bridge.trace`` puts the modules' attributes back).
"""
from __future__ import annotations

import builtins
import collections
import contextlib
import operator
import sys
import weakref
from typing import Any

import torch
import torch.fx as fx
from torch._subclasses.fake_tensor import FakeTensor

from ..errors import BridgeError
from ..ir.graph import Graph, Value, iter_values, map_values
from ..ir.spec import TensorSpec
from ..ops import registry
from . import fx as fx_frontend
from .common import (FakeCallMemo, GraphBuilder, _Call, _real_context, buffers_kept, is_inplace_call,
                     direct_fake, is_user_file, iter_tensors, plain_tensor, static_fake, tensor_owners)
from .signature import InputBinding, make_wrapper

_PREFIX = "m."


class Refused(Exception):
    """The recording cannot stand for the model on other inputs (it read a tensor's value, ...): ``bridge.trace``
    falls back to torch.export. Not a ``TraceError``, which would stop the fallback."""


class ForwardFailed(Exception):
    """The model's forward raised while running for real on the example inputs, so it fails in eager PyTorch too
    (``bridge.trace``'s hint then says to check the inputs). The original exception is the cause."""


class _FakeRunFailed(Exception):
    """The forward could not run on fake tensors (it read a value, an op has no fake kernel, a size came out
    symbolic): the recording runs again on the real examples."""


def trace_record(model: torch.nn.Module, binding: InputBinding, leaf_modules=(), *, fake: bool = True) -> Graph:
    """A bridge Graph of ``model`` from one recorded forward on ``binding``'s examples: on fake tensors when that
    serves (and ``fake``), else on the examples themselves."""
    wrapper = make_wrapper(model, binding, lambda o: isinstance(o, torch.Tensor))
    runs = ["fake", "real"] if fake else ["real"]
    for run in runs:
        b = _RecordedBuilder()
        rec = b.rec = _Recorder(wrapper, binding, leaf_modules, b.mode)
        try:
            try:
                fxg = rec.run(fake=run == "fake")
            except _FakeRunFailed:
                continue
            with b.session():
                g = fx_frontend._convert(b, wrapper, fxg, binding, fake=True)
        finally:
            rec.forget()
            for k in [k for k in wrapper.__dict__ if k.startswith("_tensor_constant")]:
                del wrapper.__dict__[k]  # the run's captured constants: the graph holds them once converted
        g.meta["frontend"] = "record"
        g.meta["record_run"] = run
        return g
    raise AssertionError("unreachable")


# ---- what a torch call is, by the function TorchFunctionMode hands over -------------------------------------
_METHOD_WRAPPER = type(torch.Tensor.T.__get__)
_TENSOR_METHODS: dict[Any, str] = {}  # Tensor method (C or python) -> its name
for _cls in (torch._C.TensorBase, torch.Tensor):
    for _name, _fn in vars(_cls).items():
        try:
            if callable(_fn) and not isinstance(_fn, type):
                _TENSOR_METHODS[_fn] = _name
        except TypeError:  # unhashable
            pass

# Tensor dunders as the operator fx records for them (``x + y`` is ``operator.add``); True: arguments swapped
_BINARY = ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor", "lshift",
           "rshift")
_OPERATORS = {f"__{n}__": (getattr(operator, f"__{n}__"), False) for n in (
    *_BINARY, "eq", "ne", "lt", "le", "gt", "ge", "neg", "pos", "abs", "invert", "getitem", "setitem")}
_OPERATORS.update({f"__r{n}__": (getattr(operator, f"__{n}__"), True) for n in _BINARY})
_OPERATORS["__rdiv__"] = (operator.truediv, True)

# calls that read only a tensor's metadata, never its values: fine on any tensor (sizes are baked, see the doc)
_METADATA = frozenset({
    "size", "shape", "dim", "ndim", "ndimension", "numel", "nelement", "__len__", "stride", "storage_offset",
    "element_size", "itemsize", "nbytes", "dtype", "device", "layout", "is_floating_point", "is_complex",
    "is_signed", "is_contiguous", "is_cuda", "is_cpu", "is_meta", "is_mps", "is_xpu", "is_sparse", "is_quantized",
    "is_nested", "is_mkldnn", "is_inference", "requires_grad", "is_leaf", "grad_fn", "get_device", "data_ptr",
    "names", "_version", "__hash__", "_is_view", "is_shared", "is_pinned", "output_nr", "result_type",
    "is_same_size", "__repr__", "__str__", "__format__", "__reduce_ex__", "__dir__", "__sizeof__",
    "is_conj", "is_neg", "untyped_storage", "dim_order"})

# the first argument gives only its shape, dtype and device to the result
_SHAPE_ONLY = frozenset({"zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like",
                         "randint_like", "new_zeros", "new_ones", "new_empty", "new_full"})


def _name_of(func) -> str:
    if type(func) is _METHOD_WRAPPER:  # a tensor attribute: the getter of its descriptor
        return getattr(func.__self__, "__name__", None) or getattr(getattr(func.__self__, "fget", None),
                                                                  "__name__", "")
    return _TENSOR_METHODS.get(func) or getattr(func, "__name__", "")


def _spelling(func, args: tuple) -> tuple[str, Any, tuple]:
    """``(fx op, target, args)`` as torch.fx would record the call."""
    if type(func) is _METHOD_WRAPPER:
        return "call_function", builtins.getattr, (args[0], _name_of(func))
    name = _TENSOR_METHODS.get(func)
    if name is None:
        return "call_function", func, args
    op = _OPERATORS.get(name)
    if op is not None:
        return "call_function", op[0], (args[1], args[0], *args[2:]) if op[1] else args
    return "call_method", name, args


def _frame_source() -> str | None:
    f = sys._getframe(2)
    while f is not None and not is_user_file(f.f_code.co_filename):
        f = f.f_back
    return f'File "{f.f_code.co_filename}", line {f.f_lineno}' if f is not None else None


def _where(source: str | None) -> str:
    if not source:
        return "an unknown line"
    import re

    m = re.match(r'File "(.*)", line (\d+)', source)
    return f"{m.group(1)}:{m.group(2)}" if m else source


# ---- recording ----------------------------------------------------------------------------------------------
_TAG = "_bridge_recorded"  # the attribute of a tensor that holds what the recording knows of it (a _Seen)


class _Seen:
    """What a recording knows of a tensor, kept on the tensor itself: its fx node, whether its values depend on an
    input, and whether a call made it while recording. It goes when the tensor goes, so a new tensor at a dead
    one's address is never taken for it, and the run need not keep its activations alive to keep ``id``s apart."""

    __slots__ = ("rec", "node", "tainted", "made", "fake", "direct")

    def __init__(self, rec):
        self.rec, self.node, self.tainted, self.made = rec, None, False, False
        self.fake, self.direct = None, False  # its fake tensor, and whether direct_fake made it


def _needed_bytes(t: torch.Tensor) -> int:
    """The bytes of storage ``t``'s sizes, strides and offset reach."""
    if t.numel() == 0:
        return 0
    last = t.storage_offset() + sum((n - 1) * st for n, st in zip(t.shape, t.stride()))
    return (last + 1) * t.element_size()


class _Entry:
    """A module call on the stack: its path in the model (None: not the model's), kept whole or not, the
    ``nn_module_stack`` inside it, and whether it runs inside a module kept whole."""

    __slots__ = ("path", "type", "leaf", "meta", "inner")

    def __init__(self, path, typ, leaf, meta, inner=False):
        self.path, self.type, self.leaf, self.meta, self.inner = path, typ, leaf, meta, inner


class _Recorder(torch.overrides.TorchFunctionMode):
    """Runs the wrapper once and builds its fx graph. What it knows of a tensor is on the tensor (``_Seen``); the
    values computed are kept as fake tensors of ``mode`` (the converter's), for the converter."""

    def __init__(self, wrapper, binding: InputBinding, leaf_modules=(), mode=None):
        super().__init__()
        self.wrapper, self.binding, self.mode = wrapper, binding, mode
        self.model = wrapper.m
        self.graph = fx.Graph()
        self.seen: list = []                     # weak references to the tensors tagged, to untag them at the end
        self.written: list[torch.Tensor] = []    # tensors an in-place write filled with input-dependent values:
        self.tainted_storage: set[int] = set()   # kept alive, so their storages' addresses stay theirs
        self.results: dict[tuple, collections.deque] = {}  # (name, target) -> (fake values, tainted), in order
        self.inputs: dict[str, torch.Tensor] = {}
        self.calls = 0  # torch calls since the heap was last trimmed
        self.owners = tensor_owners(self.model)
        self.paths = {id(m): n for n, m in self.model.named_modules()}
        self._attrs: dict[int, str] | None = None
        self._constants = 0
        leaf_classes = tuple(c for c in leaf_modules if isinstance(c, type))
        leaf_names = {c for c in leaf_modules if isinstance(c, str)}
        registry.load()  # before the run: the recording sees every torch call
        self.is_leaf = lambda m, path: registry.is_op_module(m) or (bool(leaf_classes) and
                                                                    isinstance(m, leaf_classes)) or path in leaf_names
        self.stack: list[_Entry] = []
        self.meta: dict = {}
        self.leaf_depth = 0
        self.refusal: Refused | None = None
        self.fake_run = False  # running on fake tensors of ``mode``
        self.fake_failed: str | None = None  # why the fake run cannot serve (even if the model caught the error)
        self.model_fakes: list = []  # the fakes of the model's own tensors, alive while the recording is
        self.memo = FakeCallMemo(mode)  # a fake run's calls by their arguments' layouts: their results' layouts

    # ---- the run ----
    def run(self, fake: bool = False) -> fx.Graph:
        """Run the wrapper once, recording it; ``fake``: on fake tensors (``_FakeRunFailed`` where they cannot
        serve)."""
        self.fake_run = fake
        if fake:
            # the model's own tensors get static fakes now (converted on first use instead, they would get
            # symbolic sizes from the mode's ShapeEnv), made directly where they can be, and kept alive: the
            # mode's memo holds its fakes weakly, and a fake that died is made again at every use (three times
            # per weight: the run's first use and the converter's constant; a third of a recorded BERT's time)
            for t in [*self.model.parameters(), *self.model.buffers(), *self._attribute_tensors().values()]:
                self.model_fakes.append(static_fake(self.mode, t))
            flat = [self.mode.from_tensor(t, static_shapes=True) for t in self.binding.examples]
        else:
            with torch.no_grad():
                flat = [t.clone() for t in self.binding.examples]
        for name, t in zip(self.binding.names, flat):
            node = self.graph.placeholder(name)
            self._bind(node, t)
            self._seen(t).tainted = True
            self.inputs[name] = t
        hooks = [torch.nn.modules.module.register_module_forward_pre_hook(self._pre),
                 torch.nn.modules.module.register_module_forward_hook(self._post, with_kwargs=True,
                                                                       always_call=True)]
        try:
            with _real_context(), buffers_kept(self.model), _exporting(), \
                    (self.mode if fake else contextlib.nullcontext()), self:
                out = self.wrapper(*flat)
        except (Refused, BridgeError):
            raise
        except Exception as e:
            if self.refusal is not None:  # the model caught the refusal and failed otherwise
                raise self.refusal from e
            if fake:
                raise _FakeRunFailed(self.fake_failed or f"{type(e).__name__}: {e}") from e
            raise ForwardFailed(f"{type(e).__name__}: {e}") from e
        finally:
            for h in hooks:
                h.remove()
        if self.refusal is not None:  # raised inside forward, where the model's own code may have caught it
            raise self.refusal
        if self.fake_failed is not None:
            raise _FakeRunFailed(self.fake_failed)
        self.graph.output(tuple(self._arg(t, None) for t in out))
        return self.graph

    def _call(self, func, name: str, args, kwargs):
        """``func(*args, **kwargs)``; in a fake run, an error or a symbolic result says the run cannot serve
        (noted even where the model catches the error)."""
        if not self.fake_run:
            return func(*args, **kwargs)
        key = self.memo.key(func, args, kwargs)
        if key is not None:
            hit = self.memo.get(key)
            if hit is not None:
                return hit
        try:
            result = func(*args, **kwargs)
        except Exception as e:
            if self.fake_failed is None:
                self.fake_failed = f"{name}: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e) else ''}"
            raise
        if isinstance(result, (torch.SymInt, torch.SymFloat, torch.SymBool)) or (
                isinstance(result, (tuple, list)) and any(isinstance(r, torch.SymInt) for r in result)):
            self.fake_failed = f"{name} gave a symbolic value"
        elif key is not None:
            self.memo.store(key, result, (args, kwargs))
        return result

    def _refuse(self, msg: str) -> Refused:
        self.refusal = Refused(msg)
        return self.refusal

    # ---- module scope ----
    def _pre(self, module, args):
        if self.leaf_depth:  # a module inside one kept whole
            self.stack.append(_Entry(None, None, False, self.meta, inner=True))
            self.leaf_depth += 1
            return
        path = self.paths.get(id(module))
        leaf = path is not None and self.is_leaf(module, path)
        if path and not leaf:  # a scope; the model itself is none, and a module not in the model is none
            key = _PREFIX + path
            self.meta = {**self.meta, key if key not in self.meta else f"{key}@{len(self.stack)}": (key, type(module))}
        self.stack.append(_Entry(path, type(module), leaf, self.meta))
        self.leaf_depth += leaf

    def _post(self, module, args, kwargs, result):
        self.calls += 1
        if self.calls >= _TRIM_EVERY and _trim is not None:
            self.calls = 0
            _trim(0)
        entry = self.stack.pop()
        self.meta = self.stack[-1].meta if self.stack else {}
        if entry.inner or entry.leaf:
            self.leaf_depth -= 1
        if entry.leaf and self.refusal is None:
            target = _PREFIX + entry.path if entry.path else "m"
            node = self._node("call_module", target, tuple(args), dict(kwargs), _frame_source())
            self._outputs(node, result, (entry.path, id(module)), self._any_tainted(iter_tensors((args, kwargs))))
        return None

    # ---- torch calls ----
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.calls += 1
        if self.leaf_depth:  # inside a module kept whole: its ops are not the graph's
            return self._made(self._call(func, "a call inside a module kept whole", args, kwargs), (args, kwargs))
        if func is torch.Tensor.__iter__:  # a loop over a tensor: its rows, as torch.export unrolls it
            return iter(self.__torch_function__(torch.Tensor.unbind, types, (args[0],)))
        name = _name_of(func)
        if name in _METADATA:
            return self._call(func, name, args, kwargs)
        inputs = iter_tensors((args, kwargs))
        for t in inputs:
            if torch._C._functorch.is_functorch_wrapped_tensor(t):
                raise self._refuse(f"a functorch transform (vmap, grad) runs at {_where(_frame_source())}: the "
                                   "recording cannot follow its wrapped tensors")
        kind, target, fargs = _spelling(func, args)
        inplace = is_inplace_call("method" if kind == "call_method" else "function", target, fargs, kwargs)
        if inplace and fargs and isinstance(fargs[0], torch.Tensor):
            written = fargs[0]
            base = written._base if written._is_view() else written
            if isinstance(base, torch.nn.Parameter) or self.owners.get(id(base), ("",))[0] == "param":
                raise self._refuse(f"{name} at {_where(_frame_source())} writes into a parameter")
        result = self._made(self._call(func, name, args, kwargs), inputs)
        outputs = iter_tensors(result)
        if name in _SHAPE_ONLY:
            tainted = self._any_tainted(iter_tensors((args[1:], kwargs)))
        else:
            tainted = self._any_tainted(inputs)
        if not outputs and not inplace:
            if tainted and not isinstance(result, (type(None), str, torch.dtype, torch.device)):
                src = _where(_frame_source())
                raise self._refuse(f"{name}() at {src} reads the value of a tensor that depends on the inputs "
                                   f"(got {type(result).__name__}): the graph would keep this example's value")
            return result
        if self.refusal is not None:
            return result
        node = self._node(kind, target, fargs, kwargs, _frame_source())
        key = (node.name, target if isinstance(target, str) else id(target))
        if inplace:  # the canonical op returns the written tensor, which holders of it now see
            written = fargs[0]
            self._outputs(node, written, key, tainted)
            if tainted:
                self.tainted_storage.add(self._storage_key(written))
                self.written.append(written)
        else:
            self._outputs(node, result, key, tainted)
        return result

    def _made(self, result, inputs):
        """Note the tensors a call made (not those it returns as they came: ``x.to(x.dtype)`` is ``x``)."""
        given = {id(t) for t in iter_tensors(inputs)}
        for t in iter_tensors(result):
            if id(t) not in given:
                self._seen(t).made = True
        return result

    def _seen(self, t: torch.Tensor, create: bool = True) -> _Seen | None:
        """What this recording knows of ``t`` (a fresh record when ``create``; None otherwise)."""
        seen = t.__dict__.get(_TAG)
        if seen is None or seen.rec is not self:
            if not create:
                return None
            seen = t.__dict__[_TAG] = _Seen(self)
            self.seen.append(weakref.ref(t))
        return seen

    def forget(self) -> None:
        """Take the records off the tensors that outlive the recording (weights, buffers, cached tensors)."""
        for ref in self.seen:
            t = ref()
            if t is not None and isinstance(t.__dict__.get(_TAG), _Seen) and t.__dict__[_TAG].rec is self:
                del t.__dict__[_TAG]
        self.seen.clear()
        self.model_fakes.clear()

    def fake(self, result):
        """``result`` with each tensor as a fake tensor (shape, dtype, strides, views of the same base), for the
        converter: the real values are not kept."""
        with torch._C.DisableTorchFunction():
            return torch.utils._pytree.tree_map_only(torch.Tensor, self._fake, result)

    def _fake(self, t: torch.Tensor, made: bool = False):
        """The fake of ``t``, made once per tensor. A tensor a recorded call made (or ``made``) gets one directly
        (its layout alone), and a view of it a view of that fake: ``_base`` is what the converter's alias tracking
        reads. The model's tensors, the inputs and whatever else go through the mode's ``from_tensor``, which
        gives the same tensor the same fake everywhere."""
        if self.fake_run:  # the run's own values are fakes of the mode already; the model's tensors get theirs
            if not all(type(n) is int for n in (*t.shape, *t.stride(), t.storage_offset())):
                self.fake_failed = "a size came out symbolic (data-dependent)"
                raise _FakeRunFailed(self.fake_failed)
            if not (isinstance(t, FakeTensor) and t.fake_mode is self.mode):
                return self.mode.from_tensor(t, static_shapes=True)
            base = t._base if t._is_view() else None
            if base is not None and not isinstance(base, FakeTensor):
                # a view the run took of a real tensor (a buffer's row): autograd made the real tensor its base;
                # the converter tracks aliases by base, so the view becomes one of that tensor's fake
                with torch._C.DisableTorchFunction(), self.mode:
                    return self.mode.from_tensor(base, static_shapes=True).as_strided(
                        t.shape, t.stride(), t.storage_offset())
            return t
        seen = self._seen(t, create=False)
        if seen is not None and seen.fake is not None:
            f = seen.fake
            if f.shape == t.shape and f.stride() == t.stride() and f.dtype == t.dtype and \
                    f.storage_offset() == t.storage_offset():
                return f
        f = None
        if (made or (seen is not None and seen.made)) and plain_tensor(t):
            if not t._is_view():
                if t.storage_offset() == 0 and t.untyped_storage().nbytes() == _needed_bytes(t):
                    f = direct_fake(self.mode, t)
            else:
                base = t._base
                if base.dtype == t.dtype and plain_tensor(base) and self._made_here(base):
                    fb = self._fake(base, made=True)
                    if self._seen(base).direct:
                        with self.mode, torch.set_grad_enabled(t.requires_grad):
                            f = fb.as_strided(t.shape, t.stride(), t.storage_offset())
        seen = self._seen(t)
        seen.direct = f is not None
        seen.fake = f if f is not None else self.mode.from_tensor(t, static_shapes=True)
        return seen.fake

    def _made_here(self, base: torch.Tensor) -> bool:
        """Whether the base of a view a recorded call made was made during the run: by a recorded call, or inside
        one (``scaled_dot_product_attention`` returns a view of a tensor python never saw), and so is no
        weight, buffer, module attribute or input (which are seen, or the model's)."""
        seen = self._seen(base, create=False)
        if seen is not None:
            return seen.made
        if id(base) in self.owners:
            return False
        if self._attrs is None:
            self._attrs = self._attributes()
        return id(base) not in self._attrs

    # ---- building the fx graph ----
    def _node(self, kind: str, target, args: tuple, kwargs: dict, source: str | None) -> fx.Node:
        node = self.graph.create_node(kind, target, tuple(self._arg(a, source) for a in args),
                                      {k: self._arg(v, source) for k, v in kwargs.items()})
        node.meta["nn_module_stack"] = self.meta
        if source:
            node.meta["stack_trace"] = source
        return node

    def _arg(self, a, source):
        if isinstance(a, torch.Tensor):
            seen = self._seen(a, create=False)
            return seen.node if seen is not None and seen.node is not None else self._constant(a, source)
        if isinstance(a, (tuple, list)):
            out = [self._arg(x, source) for x in a]
            if isinstance(a, list):
                return out
            return type(a)(*out) if hasattr(a, "_fields") else tuple(out)
        if isinstance(a, dict):
            return {k: self._arg(v, source) for k, v in a.items()}
        if isinstance(a, slice):
            return slice(self._arg(a.start, source), self._arg(a.stop, source), self._arg(a.step, source))
        return a

    def _constant(self, t: torch.Tensor, source) -> fx.Node:
        """A tensor no recorded call made: a weight, a module's tensor attribute, or a constant captured from
        outside (made before the forward). A tensor made while recording that the graph does not hold (made
        inside a module kept whole) is refused: as a constant it would be this example's value."""
        seen = self._seen(t, create=False)
        if seen is not None and seen.made:
            raise self._refuse(f"a tensor made while recording but not recorded (inside a module kept whole) is "
                               f"used at {_where(source)}")
        owner = self.owners.get(id(t))
        if owner is not None:
            qualname = _PREFIX + owner[1][0]
        else:
            if self._attrs is None:
                self._attrs = self._attributes()
            attr = self._attrs.get(id(t))
            if attr is not None:
                qualname = _PREFIX + attr
            else:
                qualname = f"_tensor_constant{self._constants}"
                self._constants += 1
                self.wrapper.__dict__[qualname] = t  # the converter fetches it from the wrapper by name
        node = self.graph.get_attr(qualname)
        self._bind(node, t)
        return node

    def _attribute_tensors(self) -> dict[str, torch.Tensor]:
        """Dotted name -> tensor the model's modules hold as plain attributes (neither parameter nor buffer)."""
        return {f"{path}.{k}" if path else k: v for path, m in self.model.named_modules()
                for k, v in vars(m).items() if isinstance(v, torch.Tensor)}

    def _attributes(self) -> dict[int, str]:
        """id -> dotted name of the tensors the model's modules hold as plain attributes."""
        return {id(v): name for name, v in self._attribute_tensors().items()}

    def _bind(self, node: fx.Node, t: torch.Tensor) -> None:
        self._seen(t).node = node

    def _outputs(self, node: fx.Node, result, key: tuple, tainted: bool) -> None:
        """Map every tensor of ``result`` to ``node`` (or a ``getitem`` of it) and keep its fake for conversion."""
        self.results.setdefault(key, collections.deque()).append((self.fake(result), tainted))
        self._map(node, node, result, tainted)

    def _map(self, node: fx.Node, n: fx.Node, r, tainted: bool) -> None:
        """``_outputs``' walk (a method, not a recursive closure: no reference cycle holding ``result``)."""
        if isinstance(r, torch.Tensor):
            self._bind(n, r)
            if tainted:
                self._seen(r).tainted = True
        elif isinstance(r, (tuple, list)):
            for i, x in enumerate(r):
                if iter_tensors(x):
                    item = self.graph.call_function(operator.getitem, (n, i))
                    item.meta.update(node.meta)
                    self._map(node, item, x, tainted)
        elif iter_tensors(r):
            raise self._refuse(f"{node.target} returns tensors inside a {type(r).__name__}")

    def _storage_key(self, t: torch.Tensor) -> int:
        """The memory ``t`` lives in: its address (a fake tensor has none: its storage's identity)."""
        return t.untyped_storage()._cdata if self.fake_run else t.untyped_storage().data_ptr()

    def _any_tainted(self, tensors) -> bool:
        for t in tensors:
            seen = self._seen(t, create=False)
            if seen is not None and seen.tainted:
                return True
            if self.tainted_storage and self._storage_key(t) in self.tainted_storage:
                return True
        return False


def _malloc_trim():
    """glibc's ``malloc_trim``, or None elsewhere. The fakes the recording keeps are small long-lived allocations
    among the forward's short-lived activations on the C heap, which then cannot shrink: GPT-2 medium's recording
    held 360 MiB of freed activation memory. Trimming after every few dozen calls hands those pages back (27 MiB
    peak, about 0.4 ms a trim)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


_trim = _malloc_trim()
_TRIM_EVERY = 32  # torch calls between trims, checked when a module call ends


@contextlib.contextmanager
def _exporting():
    """``torch.compiler.is_compiling()`` and ``is_exporting()`` true while recording, as torch.export's non-strict
    mode sets them: libraries then avoid reading tensor values for fast paths (and skip ``torch.compile``)."""
    import torch.compiler as tc

    old = tc._is_compiling_flag, tc._is_exporting_flag
    tc._is_compiling_flag = tc._is_exporting_flag = True
    try:
        yield
    finally:
        tc._is_compiling_flag, tc._is_exporting_flag = old


# ---- conversion with the recorded values --------------------------------------------------------------------
class _RecordedBuilder(GraphBuilder):
    """Fake-tensor propagation that takes each recorded call's value (its fake) instead of computing it again. A
    call the converter does not map one to one (traced into ATen ops, say) computes its fake from the examples as
    usual. The fakes come from the converter's own fake mode (``rec.fake``), which gives the inputs' copies and the
    model's tensors the same fakes here, so the converter's view tracking sees the memory the run shared."""

    rec: _Recorder

    def __init__(self):
        super().__init__(fake=True, data_dependent="allow")

    def input(self, name: str, example: torch.Tensor) -> Value:
        return super().input(name, self.rec.inputs[name])

    def _to_example(self, t, dyn=None):
        if isinstance(t, FakeTensor) and t.fake_mode is self.mode:  # a fake run's input
            return t
        return super()._to_example(t, dyn)

    def call(self, op: str, args: dict[str, Any], *, scope=None, source=None, target=None, name=None,
             known=None) -> Any:
        opdef = registry.get(op)
        queue = self.rec.results.get((name, target if isinstance(target, str) else id(target)))
        if not queue:
            return super().call(op, args, scope=scope, source=source, target=target, name=name, known=known)
        result, tainted = queue.popleft()
        if tainted and (opdef.is_data_dependent(_Call(args)) or self._sizes_from_values(opdef, args)):
            raise Refused(f"the output size of {op} at {_where(source)} depends on the values of a tensor that "
                          "depends on the inputs, and the recording baked the sizes that follow from it")
        return self.add_result(op, args, result, scope=scope, source=source, target=target, name=name)

    def _sizes_from_values(self, opdef, args: dict[str, Any]) -> bool:
        """Whether an integer tensor computed from the inputs sets a size of this call (``x.view(n, -1)`` with
        ``n`` a 0-d tensor: torch reads its value inside the op, where no python read is seen). Such a call is
        propagated on fakes: a size then comes out data-dependent (unbacked), or the propagation cannot say; both
        mean the recorded sizes hold only for this example."""
        if not any(not v.is_const and isinstance(v.spec, TensorSpec) and not (v.spec.dtype.is_floating_point or
                                                                               v.spec.dtype.is_complex)
                   for v in iter_values(args)):
            return False
        from torch.fx.experimental.symbolic_shapes import free_unbacked_symbols

        try:
            with self.mode:
                out = opdef.impl(**map_values(args, self.example_of))
        except Exception:  # noqa: BLE001 - a size fake tensors cannot compute is one the values decide
            return True
        return any(free_unbacked_symbols(t) for t in iter_tensors(out))
