"""ONNX frontend: an ONNX file or ``ModelProto`` becomes a bridge Graph of canonical registry ops.

Each ONNX op type is imported by a function beside the canonical op it maps to
(``@onnx_import("Conv")`` in bridge/ops/nn.py), through an ``ImportContext``: the node's inputs (graph Values,
or tensors known at import time), its attributes, the opset, and ``ctx.call(op, **args)`` that adds a canonical
node through the same ``GraphBuilder`` the torch frontends use (so shapes and dtypes come from the op's own
propagation). A node whose inputs are all known at import time (Constant nodes, shape arithmetic on static
shapes, integer initializers) is computed then and there: it folds to a constant instead of adding nodes.

- Graph inputs keep their ONNX names; a ``dim_param`` (or an unnamed dynamic dim) becomes a symbolic dim.
- Initializers become weights: under their recorded state_dict names (a file bridge wrote records them, with
  parameter/buffer kinds and tied names, in ``bridge.state``), else under their own names (floating point
  initializers as parameters, the rest as constants).
- The output structure a bridge-written file records (``bridge.output_structure``) is restored: dict, tuple,
  list; without it the outputs are one tensor or a tuple.
- Shapes computed at run time (``Shape`` of a symbolic dim, then Gather/Concat/...) are followed as lists of
  sizes, so a dynamic-batch ``Reshape`` stays a reshape by ``x.size(0)``.
- The subgraphs of If and Loop become regions (closed Graphs, ``RegionImport``), imported by the same machinery;
  what they read from enclosing graphs by name comes in as operands (``ImportContext.captures``). The importers
  that map If and Loop onto ``cond`` and ``while_loop`` are in bridge/ops/control.py. The checks and the list of
  op types without an importer cover nested subgraphs too.

Errors: ``OnnxError`` for a file that cannot be read (path and reason) or that is not a well-formed model
(``check_model``: tensor data that does not fit its dims, names defined twice or never, attributes of the wrong
type, corrupt ``bridge.*`` metadata, an opset newer than the installed onnx), ``UnsupportedOpError`` listing every
node whose op type has no importer (type, name, count) before anything is built.

Untrusted files: the importer never allocates memory from a file's declared sizes. Graph inputs become fake
tensors (a declared 10**6 x 10**6 input costs nothing until the graph runs on real data), a value known at import
time is computed only while the results stay small (``FOLD_LIMIT`` in all; else it stays a node, computed at run
time), and external data is read only from inside the model's folder (``bridge.backends.ort.load_onnx``).
"""
from __future__ import annotations

import collections
import contextlib
import functools
import json
import math
import os
import sys
from typing import Any

import numpy as np
import torch

from ..errors import BridgeError, OnnxError, TraceError, UnsupportedOpError
from ..ir import structure
from ..ir.graph import Graph, Value, iter_values, map_values
from ..ir.spec import ScalarSpec, TensorSpec
from ..ops import registry
from ..ops.onnx_helpers import (BITS, UNSIGNED_WIDE, WIDENED_OPS, Dims, UnsupportedElementType, torch_dtype,
                                widened_op)
from ..ops.shapes import holds_tensor, map_tensors, meta_empty, meta_like, tensors_in
from .common import GraphBuilder, NeedsRealValues

MIN_IMPORT_OPSET = 13
_EXAMPLE_SIZE = 2  # example size of a symbolic dim while propagating (>= 2: torch specializes 0 and 1)
# bytes of the values known at import time that are computed then (folded), in all: a larger one stays a node.
# Results up to _FREE_FOLD bytes (shape arithmetic) are always folded: importers need them as constants
FOLD_LIMIT = 2**28
_FREE_FOLD = 2**10
REAL_EXAMPLE_LIMIT = 2**30  # bytes of real example inputs when shapes depend on data (propagating real values)
_MAX_STRUCT_DEPTH = 64  # nesting of a recorded output structure
_MAX_RUN_TIME_INTS = 64  # elements of a shape/index input read at run time as python ints (one scalar each)
_INT64_MAX = 2**63 - 1
# the TensorProto field holding each element type's values when there is no raw_data, and values per element
_LITTLE = sys.byteorder == "little"  # ONNX's raw_data is little-endian
_EXTERNAL = 1  # TensorProto.EXTERNAL


def _numpy_types() -> dict:
    """ONNX element type -> the numpy dtype whose torch.from_numpy is bridge's torch dtype of it, for the types
    whose raw_data numpy reads as it is (bfloat16 and float8 are bits: ``_to_torch``)."""
    out = {}
    for elem in range(1, 17):
        try:
            want = torch_dtype(elem)
            got = np.dtype(torch.empty(0, dtype=want).numpy().dtype)
        except Exception:  # noqa: BLE001 - a type bridge or numpy has not
            continue
        if want not in BITS and torch.from_numpy(np.zeros(1, got)).dtype == want:
            out[elem] = got
    return out


_NUMPY_OF = _numpy_types()
_DATA_FIELD = {1: ("float_data", 1), 2: ("int32_data", 1), 3: ("int32_data", 1), 5: ("int32_data", 1),
               6: ("int32_data", 1), 7: ("int64_data", 1), 9: ("int32_data", 1), 10: ("int32_data", 1),
               11: ("double_data", 1), 14: ("float_data", 2), 16: ("int32_data", 1), 17: ("int32_data", 1),
               18: ("int32_data", 1), 19: ("int32_data", 1), 20: ("int32_data", 1)}


class ImportUnsupported(BridgeError):
    """Raised by an importer for an attribute combination it cannot express (``ctx.unsupported(why)``)."""


def check_tensor(t, what: str, source: str) -> torch.dtype:
    """The torch dtype of an ``onnx.TensorProto``, after checking that its data fits it: a known element type
    bridge computes in, dims >= 0, data in the file (not external), and exactly dims x element size of it."""
    from onnx import TensorProto

    if t.data_type == TensorProto.STRING:
        raise OnnxError(f"{source}: {what} is a string tensor; bridge imports numeric and bool tensors only. "
                        "Remove the strings from the model (pre- or post-process them outside it).")
    try:
        dtype = torch_dtype(t.data_type)
    except UnsupportedElementType as e:
        raise OnnxError(f"{source}: {what} has {e}, which bridge does not compute in (float16/32/64, bfloat16, "
                        "float8, complex64, bool, int8/16/32/64, uint8/16/32/64). Cast it in the tool that wrote "
                        "the file.") from None
    dims = list(t.dims)
    if any(d < 0 for d in dims):
        raise OnnxError(f"{source}: {what} has negative dims {dims}. The file is corrupt: re-export it.")
    if t.data_location == TensorProto.EXTERNAL:
        raise OnnxError(f"{source}: {what} keeps its data in an external file that was not read. Load the model "
                        "from its path, or pass base_dir= the folder holding its data.")
    n = math.prod(dims)
    if t.HasField("raw_data"):
        have, want, unit = len(t.raw_data), n * dtype.itemsize, "bytes"
    else:
        field, per = _DATA_FIELD[int(t.data_type)]
        have, want, unit = len(getattr(t, field)), n * per, f"values in {field}"
    if have != want:
        raise OnnxError(f"{source}: {what} holds {have} {unit}, but its dims {dims} of {dtype} need {want}. The "
                        "file is corrupt or was edited by hand: re-export it.")
    return dtype


def to_torch(t, what: str | None = None, source: str = "ONNX model") -> torch.Tensor:
    """An ``onnx.TensorProto`` as a torch tensor (a copy it owns); ``OnnxError`` naming ``what`` (default: the
    tensor's name) when its data does not fit its type and dims."""
    what = what or f"tensor {t.name!r}"
    dtype = _NUMPY_OF.get(int(t.data_type)) if _LITTLE else None
    if dtype is not None and t.HasField("raw_data") and t.data_location != _EXTERNAL:
        # the common case in one read of the bytes (protobuf hands out a copy of them each time they are read)
        raw, dims = t.raw_data, tuple(t.dims)
        if all(d >= 0 for d in dims) and len(raw) == math.prod(dims) * dtype.itemsize:
            return torch.from_numpy(np.frombuffer(raw, dtype=dtype).copy()).reshape(dims)
    check_tensor(t, what, source)  # says what does not fit
    try:
        return _to_torch(t)
    except Exception as e:  # noqa: BLE001 - numpy and onnx raise many kinds for inconsistent data
        raise OnnxError(f"{source}: {what} cannot be read: {type(e).__name__}: {e}. The file is corrupt: "
                        "re-export it.") from None


def _to_torch(t) -> torch.Tensor:
    """``to_torch`` once the tensor is checked."""
    from onnx import numpy_helper

    dtype = torch_dtype(t.data_type)
    if dtype in BITS:  # bfloat16, float8: their bits, in raw_data or one per int32_data element
        import numpy as np

        bits = {torch.int16: np.int16, torch.uint8: np.uint8}[BITS[dtype]]
        raw = np.frombuffer(t.raw_data, dtype=bits) if t.raw_data else np.asarray(t.int32_data).astype(bits)
        return torch.from_numpy(raw.copy()).view(dtype).reshape(tuple(t.dims))
    arr = numpy_helper.to_array(t)
    return torch.from_numpy(arr.copy()) if arr.ndim else torch.tensor(arr.item(), dtype=torch_dtype(t.data_type))


class ImportContext:
    """What an importer sees: one ONNX node (``node``, ``op_type``, ``opset``), its inputs and attributes, and
    ``call`` to add canonical nodes. Inputs are ``Value`` (run time), ``torch.Tensor`` (known now), ``Dims``
    (a shape tensor followed as sizes) or None (an omitted optional input)."""

    def __init__(self, imp: "_Importer", node, opset: int):
        self._imp = imp
        self.node = node
        self.op_type = node.op_type
        self.opset = opset
        self.name = node.name or (node.output[0] if node.output else node.op_type)
        self.attrs = {a.name: a for a in node.attribute}

    # ---- inputs -------------------------------------------------------------------------------
    @property
    def n_inputs(self) -> int:
        return len(self.node.input)

    def has(self, i: int) -> bool:
        return i < len(self.node.input) and self.node.input[i] != ""

    def input(self, i: int) -> Value | torch.Tensor | Dims | None:
        """Input ``i``: a Value, a known tensor or sizes (Dims); None when omitted. Dims used as a tensor
        become one here."""
        v = self._imp.env[self.node.input[i]] if self.has(i) else None
        return self.materialize(v) if isinstance(v, Dims) else v

    def raw(self, i: int) -> Any:
        """Input ``i`` as stored: Dims stay Dims (for importers that follow shapes)."""
        return self._imp.env[self.node.input[i]] if self.has(i) else None

    def inputs(self) -> list:
        return [self.input(i) for i in range(self.n_inputs)]

    def const(self, i: int) -> torch.Tensor | None:
        """Input ``i``'s value when it is known at import time (constants, folded values, initializers)."""
        v = self.raw(i)
        if isinstance(v, torch.Tensor):
            return v
        if isinstance(v, Value) and v.const is not None:
            return v.const
        if isinstance(v, Dims) and all(isinstance(d, int) for d in v):
            return torch.tensor(v[0] if v.scalar else list(v), dtype=torch.int64)
        return None

    def ints(self, i: int, *, required: bool = True, run_time: bool = False) -> list | None:
        """Input ``i`` as a list of ints, or run-time int scalars when it comes from a symbolic shape.

        ``run_time``: the importer also takes values computed at run time (sizes, counts, bounds: what torch
        accepts as symbolic ints). A 0-d or 1-D integer input computed from data becomes one run-time scalar per
        element, read when the module runs (``item``): the node's output sizes are symbols in the IR, never the
        numbers of an example. Without it (axes, which decide the output's structure) such an input is refused."""
        v = self.raw(i)
        if v is None:
            return None
        if isinstance(v, Dims):
            return list(v)
        c = self.const(i)
        if c is None:
            if run_time:
                items = self.run_time_ints(v)
                if items is not None:
                    return items
            if required:
                self.unsupported(f"input {i} ({self.node.input[i]}) must be known when importing (a constant or "
                                 "a shape), not computed from data at run time")
            return None
        return [int(x) for x in c.reshape(-1).tolist()]

    def run_time_ints(self, v: Any) -> "Dims | None":
        """A run-time integer tensor (a Value) of static shape (0-d or 1-D, up to ``_MAX_RUN_TIME_INTS``
        elements) as run-time int scalars, read when the module runs; None for anything else, and when the import
        propagates real values (an op with no fake kernel: the values seen would be the example's zeros)."""
        s = self.spec(v)
        if not self._imp.b.fake:
            return None
        if s is None or not s.is_static or len(s.shape) > 1 or s.dtype.is_floating_point or s.dtype.is_complex \
                or s.dtype == torch.bool or math.prod(s.shape) > _MAX_RUN_TIME_INTS:
            return None
        if not s.shape:
            return Dims([self.call("item", input=v)], scalar=True)
        return Dims([self.call("item", input=self.call("select", input=v, dim=0, index=j)) for j in range(s.shape[0])])

    def spec(self, i_or_value: Any) -> TensorSpec | None:
        v = self.raw(i_or_value) if isinstance(i_or_value, int) else i_or_value
        if isinstance(v, Dims):
            return TensorSpec(() if v.scalar else (len(v),), torch.int64)
        if isinstance(v, Value):
            return v.spec if isinstance(v.spec, TensorSpec) else None
        if isinstance(v, torch.Tensor):
            return TensorSpec(tuple(v.shape), v.dtype)
        return None

    def shape(self, i_or_value: Any) -> tuple:
        s = self.spec(i_or_value)
        if s is None:
            self.unsupported("an input of unknown shape")
        return s.shape

    def rank(self, i_or_value: Any) -> int:
        return len(self.shape(i_or_value))

    def dtype(self, i_or_value: Any) -> torch.dtype:
        s = self.spec(i_or_value)
        return s.dtype if s is not None else torch.float32

    def size(self, x: Any, dim: int) -> int | Value:
        """Size of dim ``dim`` of ``x``: an int when static, else a run-time int scalar."""
        d = self.shape(x)[dim]
        if isinstance(d, int):
            return d
        return self.call("size", input=x, dim=dim % self.rank(x))

    def sizes(self, x: Any) -> list:
        return [self.size(x, i) for i in range(self.rank(x))]

    def axes(self, i: int, attr: str = "axes") -> list[int] | None:
        """Axes given as input ``i`` (newer opsets) or as attribute ``attr`` (older ones); None when absent."""
        if self.has(i):
            return [int(a) for a in self.ints(i)]
        a = self.attr(attr)
        return None if a is None else [int(x) for x in a]

    def mark_buffers(self, *indices: int) -> None:
        """Inputs ``indices`` are running statistics: buffers, not parameters (when the file does not say)."""
        if self._imp.state_recorded:
            return
        for i in indices:
            v = self.raw(i)
            if isinstance(v, Value) and v.kind == "param":
                v.kind = "buffer"

    # ---- attributes ---------------------------------------------------------------------------
    def attr(self, name: str, default: Any = None) -> Any:
        a = self.attrs.get(name)
        if a is None:
            return default
        kind = a.type  # the common kinds read directly: onnx.helper's reader costs more than the importer's work
        if kind == 2:  # INT
            return a.i
        if kind == 7:  # INTS
            return list(a.ints)
        if kind == 1:  # FLOAT
            return a.f
        from onnx import helper

        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            return v.decode()
        if isinstance(v, list) and v and isinstance(v[0], bytes):
            return [x.decode() for x in v]
        if hasattr(v, "dims"):  # a TensorProto attribute
            return to_torch(v, f"attribute {name!r} of node {self.name!r}", self._imp.source)
        return v

    # ---- building -----------------------------------------------------------------------------
    def call(self, op: str, **args) -> Any:
        """Canonical op ``op`` on ``args``: a node in the graph, or (all inputs known) its value now."""
        return self._imp.call(op, args, self.name)

    def call_unknown_shape(self, op: str, *, rank: int | None = None, dtype: torch.dtype | None = None,
                           **args) -> Value:
        """Canonical op ``op`` whose ``args`` hold numbers read when the module runs (``ints(..., run_time=True)``:
        axes, pads, sizes, scales) that torch must know to find the output's shape: a node whose output has
        ``rank`` and ``dtype`` (when not given: those of ``op`` with the ints replaced by 0, 1, 2, ..., valid axes
        of any input, and floats by 1.0), and sizes that are symbols known only when it runs (unbacked). The node
        computes ``op`` on the numbers it reads when the graph runs."""
        return self._imp.call_unknown_shape(op, args, self.name, rank, dtype)

    def materialize(self, dims: Dims) -> Value | torch.Tensor:
        return self._imp.materialize(dims, self.name)

    def dims_arith(self, op: str, fn) -> "Dims | None":
        """Add/Sub/Mul/Div of sizes (Dims, or known int tensors) kept as sizes: ``fn`` on two ints, canonical
        ``op`` on a run-time size; None when neither input is Dims."""
        a, b = self.raw(0), self.raw(1)
        if not (isinstance(a, Dims) or isinstance(b, Dims)):
            return None
        sides = []
        for i, v in enumerate((a, b)):
            if isinstance(v, Dims):
                sides.append(v)
                continue
            c = self.const(i)
            if c is None or c.is_floating_point() or c.dim() > 1:
                return None
            sides.append(Dims(c.reshape(-1).tolist(), scalar=c.dim() == 0))
        a, b = sides
        n = max(len(a), len(b))
        if len(a) not in (1, n) or len(b) not in (1, n):
            return None
        out = Dims(scalar=a.scalar and b.scalar)
        for i in range(n):
            x, y = a[i if len(a) > 1 else 0], b[i if len(b) > 1 else 0]
            out.append(fn(x, y) if isinstance(x, int) and isinstance(y, int) else self.call(op, input=x, other=y))
        return out

    def unsupported(self, why: str):
        raise ImportUnsupported(why)

    # ---- regions: the subgraphs of If, Loop and Scan (importers in bridge/ops/control.py) -------------------
    def subgraph(self, attr: str):
        """The subgraph (``GraphProto``) held in graph attribute ``attr``."""
        a = self.attrs.get(attr)
        if a is None or not a.HasField("g"):
            raise OnnxError(f"{self._imp.source}: node {self.name!r} ({self.op_type}) has no subgraph {attr!r}. The "
                            "file is corrupt: re-export it.")
        return a.g

    def captures(self, *attrs: str) -> list[tuple[str, Value]]:
        """What the subgraphs in attributes ``attrs`` (and those nested in them) read from enclosing graphs that
        is computed at run time, as (ONNX name, Value) in first-read order: the operands of the regions they
        become. Values known now (constants, static sizes) are not captured: a region holds them as its own."""
        names: dict[str, None] = {}
        for a in attrs:
            names.update(dict.fromkeys(outer_names(self.subgraph(a))))
        out = []
        for n in names:
            v = self._imp.env[n]
            if isinstance(v, Dims) and not all(isinstance(d, int) for d in v):
                v = self.materialize(v)
            if isinstance(v, Value):
                out.append((n, v))
        return out

    def region(self, name: str, inputs: list[tuple[str, Any]]) -> "RegionImport":
        """A region (a closed Graph of its own) named ``name`` whose inputs are ``inputs``: (name, a Value of this
        graph or an example tensor), in order. See ``RegionImport``."""
        return RegionImport(self, name, inputs)

    def inline(self, attr: str) -> list:
        """The outputs of subgraph ``attr`` imported into this graph (an If whose condition is known now)."""
        sub = self._imp.sub_importer(self._imp.b, collections.ChainMap({}, self._imp.env), self._imp._const_values)
        outs = sub.subgraph(self.subgraph(attr), [], self.name)
        self._imp._folded = sub._folded
        return outs

    def value(self, x: Any) -> Value:
        """``x`` (a Value, a tensor known now, or sizes) as a Value of the graph."""
        if isinstance(x, Dims):
            x = self.materialize(x)
        return x if isinstance(x, Value) else self._imp._const_value(x)

    def example(self, x: Any) -> Any:
        """The example (fake or real tensor) of a Value of the graph; a known tensor is its own."""
        return self._imp.b.example_of(x) if isinstance(x, Value) else x

    @property
    def fake(self) -> bool:
        """Shapes are propagated with fake tensors (symbolic sizes); else with real values."""
        return self._imp.b.fake

    def unbacked(self, example: torch.Tensor, dims) -> torch.Tensor:
        """A fake tensor like ``example`` whose dims ``dims`` are sizes known only at run time (fresh unbacked
        symbols): a value whose size differs between branches or iterations."""
        b = self._imp.b
        with b.mode:
            return torch.empty([b.mode.shape_env.create_unbacked_symint() if i in dims else d
                                for i, d in enumerate(example.shape)], dtype=example.dtype)

    def step(self, x: Value) -> torch.Tensor:
        """The example of one step of ``x`` (a Value) along dim 0: what a scan's region takes for it."""
        b = self._imp.b
        with b.mode if b.mode is not None else contextlib.nullcontext():
            return b.example_of(x)[0]

    def stacked(self, example: torch.Tensor, like: Value) -> torch.Tensor:
        """``example`` repeated along a new dim 0 as long as dim 0 of ``like`` (a Value): a scan's stacked
        output."""
        b = self._imp.b
        with b.mode if b.mode is not None else contextlib.nullcontext():
            n = b.example_of(like).shape[0]
            return example.unsqueeze(0).expand(n, *example.shape).clone()

    def add_result(self, op: str, args: dict, examples: tuple) -> Any:
        """A node of ``op`` (a control-flow op, whose regions the caller imported) with the example outputs the
        caller found: a tuple of Values."""
        return self._imp.b.add_result(op, args, examples, name=_value_name(self.name))


class RegionImport:
    """A region being imported (``ImportContext.region``): a Graph of its own, built in the importer's propagation
    mode and symbols, whose inputs take the specs and examples of the given outer Values (or example tensors).
    ``run`` imports a subgraph into it: its formal inputs bound to Values of the region, the names it reads from
    enclosing graphs to the region inputs of the same names (its captures), or to values known now. ``call`` adds
    canonical nodes around it; ``finish`` sets the region's outputs."""

    def __init__(self, ctx: ImportContext, name: str, inputs: list[tuple[str, Any]]):
        outer = ctx._imp
        self.ctx, self.name = ctx, name
        self._imp = outer.sub_importer(outer.b.region(), {}, {})
        b = self._imp.b
        self.inputs: list[Value] = []
        for n, x in inputs:
            if isinstance(x, Value):
                v = b.region_input(_value_name(n), x, outer.b)
            else:
                v = b.graph.add_input(_value_name(n), b.spec(x))
                b.example[id(v)] = x
            self.inputs.append(v)
        self._by_name = {n: v for (n, _), v in zip(inputs, self.inputs)}
        self._outer_env = outer.env

    @property
    def graph(self) -> Graph:
        return self._imp.b.graph

    def run(self, attr: str, bind: list) -> list:
        """Import the subgraph in ``attr`` of the node: its formal inputs are ``bind`` (Values of this region);
        returns its outputs (Values of the region, tensors known now, or sizes)."""
        g = self.ctx.subgraph(attr)
        env = self._imp.env
        env.clear()
        for n in outer_names(g):
            v = self._by_name[n] if n in self._by_name else self._outer_env[n]
            if isinstance(v, Value) and n not in self._by_name or isinstance(v, Dims) and not all(
                    isinstance(d, int) for d in v):  # an importer bug: every run-time value must come in
                raise BridgeError(f"region {self.name} of node {self.ctx.name!r} reads {n!r} from outside, which "
                                  "is not among its inputs")
            env[n] = v
        return self._imp.subgraph(g, bind, self.ctx.name)

    def call(self, op: str, **args) -> Any:
        return self._imp.call(op, args, self.ctx.name)

    def spec(self, x: Any) -> TensorSpec | None:
        """The spec of a Value of the region, or of an example tensor (sizes as symbols, never guarded on)."""
        return x.spec if isinstance(x, Value) else self._imp.b.spec(x) if isinstance(x, torch.Tensor) else None

    def example(self, x: Any) -> Any:
        return self._imp.b.example_of(x) if isinstance(x, Value) else x

    def value(self, x: Any) -> Value:
        """``x`` (a Value of the region, a tensor known now, or sizes) as a Value of the region."""
        if isinstance(x, Dims):
            x = self._imp.materialize(x, self.ctx.name)
        return x if isinstance(x, Value) else self._imp._const_value(x)

    def finish(self, outputs: list, struct: tuple | None = None) -> Graph:
        """Set the region's outputs (a tuple of them, unless ``struct`` says otherwise); returns the region."""
        outs = [self.value(o) for o in outputs]
        g = self.graph
        g.set_outputs(outs, struct or ("tuple", [("leaf", i) for i in range(len(outs))]))
        g.meta.update(frontend="onnx", region=self.name)
        g.remove_unused_constants()
        self.ctx._imp._folded = self._imp._folded
        return g


class _Importer:
    def __init__(self, model, source: str, fake: bool = True):
        self.model = model
        self.source = source
        self.env: dict[str, Any] = {}
        self._const_values: dict[int, Value] = {}
        self._fold_mode = None
        self._folded = 0  # bytes folded so far, results over _FREE_FOLD (see FOLD_LIMIT)
        self.opset = _default_opset(model) or 0
        self.meta = {p.key: p.value for p in model.metadata_props}
        dynamic, self.declared = self._inputs_plan()
        if not fake:
            self._check_real_examples()
        # fake tensors (symbolic dims) first, keeping data-dependent sizes (NonZero, Compress) symbolic; real zeros
        # only for an op fake tensors cannot run, and then a data-dependent size is refused, never baked in
        self.b = GraphBuilder(fake=fake, dynamic=dynamic if fake else None,
                              data_dependent="allow" if fake else "refuse", fast_shapes=True)

    def _inputs_plan(self):
        """The symbolic dims of each graph input and its declared (shape, dtype), a symbolic dim at its example
        size. Only declarations: no tensor is made here."""
        g = self.model.graph
        inits = {t.name for t in g.initializer}
        dynamic: dict[str, dict[int, str]] = {}
        declared = {}
        for vi in g.input:
            if vi.name in inits:
                continue  # old files list initializers as inputs too
            what = f"{self.source}: graph input {vi.name!r}"
            if vi.type.WhichOneof("value") is None:
                raise OnnxError(f"{what} has no type; bridge needs its element type and rank (dims may be "
                                "symbolic). Declare it in the tool that wrote the file.")
            if not vi.type.HasField("tensor_type"):
                raise OnnxError(f"{what} is a {vi.type.WhichOneof('value')}, not a tensor; only tensor inputs "
                                "import")
            tt = vi.type.tensor_type
            try:
                dtype = torch_dtype(tt.elem_type)
            except UnsupportedElementType as e:
                raise OnnxError(f"{what} has {e}, which bridge does not compute in (float16/32/64, bfloat16, "
                                "float8, complex64, bool, int8/16/32/64, uint8/16/32/64)") from None
            shape = []
            if not tt.HasField("shape"):
                raise OnnxError(f"{what} has no shape; bridge needs the rank (dims may be symbolic)")
            for i, d in enumerate(tt.shape.dim):
                if d.HasField("dim_value"):
                    if d.dim_value < 0:
                        raise OnnxError(f"{what} declares dim {i} as {d.dim_value}; a size is >= 0 (a dynamic "
                                        "dim is a dim_param or left unset). The file is corrupt: re-export it.")
                    shape.append(d.dim_value)
                else:
                    dynamic.setdefault(vi.name, {})[i] = d.dim_param or f"{vi.name}_{i}"
                    shape.append(_EXAMPLE_SIZE)
            if math.prod(shape) * dtype.itemsize > _INT64_MAX:
                raise OnnxError(f"{what} declares shape {shape} of {dtype}: more bytes than any tensor can hold "
                                "(2**63). The file is corrupt: re-export it with the real sizes, or symbolic ones.")
            declared[vi.name] = (shape, dtype)
        return dynamic, declared

    def _check_real_examples(self) -> None:
        """Real values propagate through zeros of the declared input shapes: refuse shapes too big for that."""
        total = sum(math.prod(shape) * dtype.itemsize for shape, dtype in self.declared.values())
        if total > REAL_EXAMPLE_LIMIT:
            sizes = ", ".join(f"{n!r} {shape}" for n, (shape, _) in self.declared.items())
            raise OnnxError(f"{self.source}: an output shape depends on data (NonZero, Compress, ...), so bridge "
                            f"propagates real values, from zeros of the declared input shapes ({sizes}): "
                            f"{total} bytes, over the {REAL_EXAMPLE_LIMIT} bytes bridge allocates for that. What "
                            "to do: declare the large dims symbolic (dim_param) in the file, or smaller.")

    def _input(self, name: str) -> Value:
        """Graph input ``name`` with its example: real zeros when propagating real values, else a meta tensor (a fake
        once fake dispatch needs it), which allocates nothing whatever the declared sizes."""
        shape, dtype = self.declared[name]
        if not self.b.fake:
            return self.b.input(name, torch.zeros(shape, dtype=dtype))
        dyn = self.b.dynamic.get(name)
        if dyn:  # the ShapeEnv's symbols, made on a small tensor of the symbolic dims alone
            syms = self.b._to_example(torch.empty([_EXAMPLE_SIZE] * len(dyn)), dict(enumerate(dyn.values())))
            by_dim = dict(zip(dyn, syms.shape))
            shape = [by_dim.get(i, d) for i, d in enumerate(shape)]
        ex = meta_empty(shape, dtype)  # light: a fake of the mode only if fake dispatch needs it (see GraphBuilder)
        v = self.b.graph.add_input(name, self.b.spec(ex))
        self.b.light_example(v, ex)
        return v

    # ---- state --------------------------------------------------------------------------------
    def _initializers(self):
        state = _state_from_json(self.meta, self.source)
        self.state_recorded = state is not None
        order = []
        for t in self.model.graph.initializer:
            tensor = to_torch(t, f"initializer {t.name!r}", self.source)
            if state is not None:
                entry = state.get(t.name)
                if entry is None:
                    self.env[t.name] = tensor  # a constant of the lowering: known, folds
                    continue
                kind, names = entry[0], list(entry[1])
            elif tensor.is_floating_point():
                kind, names = "param", [_state_name(t.name)]
            else:
                self.env[t.name] = tensor
                continue
            if kind == "param" and state is not None and tensor.is_floating_point():
                # trainable, as in the model bridge exported; another file does not say which initializers are
                # parameters (running statistics may reach BatchNormalization through Tile/Reshape): frozen
                tensor.requires_grad_(True)
            self.env[t.name] = self.b.constant(tensor, kind, names)
            order.extend(names)
        self.b.graph.meta["state_order"] = order

    # ---- nodes --------------------------------------------------------------------------------
    def call(self, op: str, args: dict, name: str) -> Any:
        opdef = registry.get(op)
        args = opdef.bind((), args)  # every parameter, defaults filled: the canonical form of a node
        if not iter_values(args):
            size = self._fold_size(opdef, args)
            if size <= _FREE_FOLD or self._folded + size <= FOLD_LIMIT:
                self._folded += size if size > _FREE_FOLD else 0
                with torch.no_grad():
                    return opdef.impl(**args)
            if not self.b.fake:
                raise OnnxError(f"{self.source}: node {name!r} computes a {op} of {size} bytes from values known "
                                f"at import time; with the {self._folded} bytes computed before, that is over the "
                                f"{FOLD_LIMIT} bytes bridge computes while importing, and the model's shapes depend "
                                "on data, so it cannot stay a node computed at run time.")
            # too big to compute while importing: a node, computed (and allocated) only when the graph runs
        if holds_tensor(args):
            tensors, struct = structure.flatten(args, lambda o: isinstance(o, torch.Tensor))
            if tensors:  # tensors known now: constants of the graph
                args = structure.unflatten(struct, [self._const_value(t) for t in tensors])
        return self.b.call(op, args, name=_value_name(name))

    def call_unknown_shape(self, op: str, args: dict, name: str, rank: int | None, dtype: torch.dtype | None
                           ) -> Value:
        """See ``ImportContext.call_unknown_shape``."""
        if not self.b.fake:
            raise OnnxError(f"{self.source}: node {name!r} ({op}) reads axes or pads when the module runs, and "
                            "the model's shapes depend on data in a way fake tensors cannot follow (see the other "
                            "nodes), so bridge cannot import it. What to do: make them constants in the file.")
        opdef = registry.get(op)
        args = opdef.bind((), args)
        tensors, struct = structure.flatten(args, lambda o: isinstance(o, torch.Tensor))
        args = structure.unflatten(struct, [self._const_value(t) for t in tensors])
        axes = iter(range(_MAX_RUN_TIME_INTS))

        def probe(v: Value):  # run-time ints as 0, 1, 2, ..., floats as 1.0; tensors of symbolic sizes as static
            if isinstance(v.spec, ScalarSpec):
                return 1.0 if v.spec.type is float else next(axes)
            ex = self.b.example_of(v)
            return ex if v.spec.is_static else torch.empty([_EXAMPLE_SIZE] * ex.dim(), dtype=ex.dtype)

        with self.b.mode:
            if rank is None or dtype is None:
                out = opdef.impl(**map_values(args, probe))  # the output's dtype and rank
                rank, dtype = out.dim() if rank is None else rank, out.dtype if dtype is None else dtype
            env = self.b.mode.shape_env
            out = torch.empty([env.create_unbacked_symint() for _ in range(rank)], dtype=dtype)
        return self.b.add_result(op, args, out, name=_value_name(name))

    def _fold_size(self, opdef, args: dict) -> int:
        """Bytes of an op's result on values known now, found on fake tensors (nothing allocated); 0 when the
        sizes depend on the values themselves (small inputs give small results: computed as before)."""
        from torch._subclasses.fake_tensor import FakeTensorMode

        try:  # on meta tensors first: a few us where a fake mode converts each argument (0.1-0.6 ms a fold)
            with torch.no_grad():
                res = opdef.impl(**map_tensors(args, meta_like))
            if not all(t.device.type == "meta" for t in tensors_in(res)):
                raise TypeError("a tensor made on another device")
        except Exception:  # noqa: BLE001 - a value read, a tensor made inside: the fake mode says
            if self._fold_mode is None:
                self._fold_mode = FakeTensorMode(allow_non_fake_inputs=True)
            try:
                with self._fold_mode, torch.no_grad():
                    res = opdef.impl(**args)
            except Exception:  # noqa: BLE001 - data-dependent sizes, or an op fake tensors cannot run
                return 0
        leaves, _ = structure.flatten(res, lambda o: isinstance(o, torch.Tensor))
        return sum(t.numel() * t.element_size() for t in leaves)

    def materialize(self, dims: Dims, name: str) -> Value | torch.Tensor:
        """Sizes as a 1-D (or, ``scalar``, 0-d) int64 tensor: known now, or a ``tensor`` node named ``name``."""
        data = dims[0] if dims.scalar else list(dims)
        if all(isinstance(d, int) for d in dims):
            return torch.tensor(data, dtype=torch.int64)
        return self.call("tensor", {"data": data, "dtype": torch.int64}, name)

    def _const_value(self, t: torch.Tensor) -> Value:
        v = self._const_values.get(id(t))
        if v is None:  # the Value holds ``t`` (v.const), so the id stays unique while the import runs
            v = self.b.graph.add_constant("const", t, kind="constant")
            self.b.light_example(v, t)
            self._const_values[id(t)] = v
        return v

    def sub_importer(self, b: GraphBuilder, env, const_values: dict) -> "_Importer":
        """An importer for a subgraph: this one's model, opset and settings, building into ``b`` with the names
        in ``env``."""
        sub = _Importer.__new__(_Importer)
        sub.__dict__.update(self.__dict__)
        sub.b, sub.env, sub._const_values = b, env, const_values
        return sub

    def subgraph(self, g, bind: list, where: str) -> list:
        """Import the nodes of subgraph ``g`` (a ``GraphProto``) with its formal inputs bound to ``bind``; its
        outputs (Values, tensors known now, or sizes)."""
        if len(g.input) != len(bind):
            raise OnnxError(f"{self.source}: subgraph {g.name!r} of node {where!r} takes {len(g.input)} inputs, but "
                            f"its node gives it {len(bind)}. The file is corrupt: re-export it.")
        for vi, v in zip(g.input, bind):
            self.env[vi.name] = v
        for t in g.initializer:
            self.env[t.name] = to_torch(t, f"initializer {t.name!r} of subgraph {g.name!r}", self.source)
        self._nodes(g.node)
        return [self.env[o.name] for o in g.output]

    def run(self) -> Graph:
        g = self.model.graph
        # grad mode off: the examples carry no autograd history (the Values do not track it), so common ops take
        # ops.shapes' fast path
        with self.b.session(), torch.no_grad():
            for name in self.declared:
                self.env[name] = self._input(name)
            self._initializers()
            self._nodes(g.node)
            outs = []
            for o in g.output:
                if o.name not in self.env:
                    raise OnnxError(f"{self.source}: graph output {o.name!r} is produced by no node")
                v = self.env[o.name]
                if isinstance(v, Dims):
                    v = self.materialize(v, o.name)
                if isinstance(v, torch.Tensor):
                    v = self._const_value(v)
                outs.append(v)
            self._set_outputs(outs, [o.name for o in g.output])
        graph = self.b.graph
        graph.meta.update(frontend="onnx", symbols=dict(self.b.symbols), fake=self.b.fake,
                          model_type=self.meta.get("bridge.model_type") or _model_type(self.model),
                          onnx_opset=self.opset)
        graph.remove_unused_constants()
        return graph

    def _nodes(self, nodes) -> None:
        for node in nodes:
            ctx = ImportContext(self, node, self.opset)
            fn = registry.onnx_importer(node.op_type, _opset_of(self.model, node.domain), node.domain)
            try:
                res = self._widened(ctx, fn) if not node.domain else fn(ctx)
            except ImportUnsupported as e:
                raise UnsupportedOpError(f"cannot import ONNX node {ctx.name!r} ({node.op_type}, opset {self.opset}) "
                                         f"from {self.source}: {e}. What to do: re-export the model without this "
                                         "construct, or add the case to its importer (see docs/onnx.md).") from e
            except (BridgeError, OnnxError, NeedsRealValues):
                raise
            except Exception as e:  # noqa: BLE001 - an importer bug or an inconsistent file must name the node
                raise OnnxError(f"while importing ONNX node {ctx.name!r} ({node.op_type}) from {self.source}: "
                                f"{type(e).__name__}: {e}") from e
            outs = list(res) if isinstance(res, (list, tuple)) and not isinstance(res, Dims) else [res]
            for i, oname in enumerate(node.output):
                if not oname:
                    continue
                if i >= len(outs) or outs[i] is None:
                    raise UnsupportedOpError(f"cannot import ONNX node {ctx.name!r} ({node.op_type}): its output "
                                             f"{i} ({oname!r}) is used but bridge does not compute it")
                self.env[oname] = outs[i]

    def _widened(self, ctx: ImportContext, fn) -> Any:
        """``fn(ctx)``, on int64 copies of uint16/32/64 inputs where torch has no kernels for the op on them
        (``widened_op``): its int64 results cast back to that type, which wraps as unsigned arithmetic does."""
        if ctx.op_type not in WIDENED_OPS:  # most nodes: nothing to look at
            return fn(ctx)
        dtypes = [ctx.dtype(i) for i in range(ctx.n_inputs) if ctx.has(i)]
        try:
            wide = widened_op(ctx.op_type, dtypes, ctx.attr("direction") if ctx.op_type == "BitShift" else None)
        except ValueError as e:
            ctx.unsupported(str(e))
        if wide is None:
            return fn(ctx)
        env = self.env
        saved = {n: env[n] for n in ctx.node.input if n and ctx.spec(env[n]) is not None
                 and ctx.spec(env[n]).dtype in UNSIGNED_WIDE}
        try:
            for n, v in saved.items():
                env[n] = self.call("to", {"input": v, "dtype": torch.int64}, ctx.name)
            res = fn(ctx)
        finally:
            env.update(saved)
        def back(v):  # an int64 result as the unsigned type (bool results, of comparisons, stay)
            s = ctx.spec(v)
            return self.call("to", {"input": v, "dtype": wide}, ctx.name) if s is not None and s.dtype == torch.int64 \
                else v

        if ctx.op_type in ("TopK", "ArgMax", "ArgMin"):  # their indices stay int64
            return [back(res[0]), res[1]] if ctx.op_type == "TopK" else res
        return [back(v) for v in res] if isinstance(res, (list, tuple)) else back(res)

    def _set_outputs(self, outs: list, names: list[str]) -> None:
        self.b.graph.set_outputs(outs, output_structure(self.meta, names, self.source))


# ---- bridge's metadata ----------------------------------------------------------------------------------
# A file bridge wrote records what ONNX cannot say (backends/onnx.py ``_metadata``). A value that does not parse,
# has the wrong shape or does not fit the graph is an OnnxError naming the key: the numbers would still be right
# without it, but the names and structure the user asked bridge to keep would silently not be. ``bridge.model_type``
# is free text (a label: printed, and the generated module's class name).
def _meta_error(source: str, key: str, why: str) -> OnnxError:
    return OnnxError(f"{source}: metadata {key!r} {why}. bridge writes this key and reads it back; a value it "
                     "cannot use means the file was changed after bridge wrote it. What to do: re-export the model "
                     f"with bridge, or delete {key!r} from model.metadata_props to import it as a plain ONNX model.")


def _meta_json(meta: dict, key: str, source: str) -> Any:
    """The JSON value of metadata ``key``; None when absent."""
    text = meta.get(key)
    if text is None:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        raise _meta_error(source, key, f"is not valid JSON ({type(e).__name__}: {e})") from None


def _state_from_json(meta: dict, source: str) -> dict | None:
    """``bridge.state``: {initializer: [kind, [state_dict names]]} with kind "param" or "buffer", each name a
    dotted path claimed once, and no name inside another (``fc`` and ``fc.weight``)."""
    key = "bridge.state"
    state = _meta_json(meta, key, source)
    if state is None:
        return None
    if not isinstance(state, dict):
        raise _meta_error(source, key, f"is a JSON {type(state).__name__}, not an object")
    owner: dict[str, str] = {}
    for init, entry in state.items():
        ok = (isinstance(entry, list) and len(entry) == 2 and entry[0] in ("param", "buffer")
              and isinstance(entry[1], list) and entry[1] and all(isinstance(n, str) for n in entry[1]))
        if not ok:
            raise _meta_error(source, key, f"gives {init!r} the entry {json.dumps(entry)[:80]}, not "
                              '["param" or "buffer", [its state_dict names]]')
        for n in entry[1]:
            if not all(n.split(".")):
                raise _meta_error(source, key, f"gives {init!r} the state_dict name {n!r}, which has an empty part")
            if n in owner:
                raise _meta_error(source, key, f"gives the state_dict name {n!r} to both {owner[n]!r} and {init!r}")
            owner[n] = init
    for n in owner:
        parts = n.split(".")
        for i in range(1, len(parts)):
            if ".".join(parts[:i]) in owner:
                raise _meta_error(source, key, f"names both {'.'.join(parts[:i])!r} and {n!r}: a tensor cannot "
                                  "also be a module holding tensors")
    return state


def output_structure(meta: dict, names: list[str], source: str = "ONNX model") -> tuple | None:
    """``bridge.output_structure`` (see backends/onnx.py ``_struct_json``) as a structure spec over the graph
    outputs ``names``; None when the file records none (the outputs are one tensor or a tuple)."""
    key = "bridge.output_structure"
    j = _meta_json(meta, key, source)
    if j is None:
        return None
    by_name = {n: i for i, n in enumerate(names)}
    used: set[str] = set()

    def build(j, depth: int):
        if depth > _MAX_STRUCT_DEPTH:
            raise _meta_error(source, key, f"nests deeper than {_MAX_STRUCT_DEPTH} levels")
        kinds = [k for k in ("output", "const", "tuple", "list", "dict") if isinstance(j, dict) and k in j]
        if len(kinds) != 1 or set(j) - {kinds[0], "type"}:
            raise _meta_error(source, key, f"holds {json.dumps(j)[:80]}, which is none of {{\"output\": name}}, "
                              '{"const": value}, {"tuple" or "list": [...]}, {"dict": {...}}')
        kind, body = kinds[0], j[kinds[0]]
        if kind == "output":
            if body not in by_name:
                raise _meta_error(source, key, f"names the output {body!r}, which the graph does not have "
                                  f"(its outputs: {names})")
            used.add(body)
            return ("leaf", by_name[body])
        if kind == "const":
            return ("const", body)
        if kind in ("tuple", "list"):
            if not isinstance(body, list):
                raise _meta_error(source, key, f"gives a {kind} as a JSON {type(body).__name__}, not a list")
            return (kind, [build(x, depth + 1) for x in body])
        if not isinstance(body, dict):
            raise _meta_error(source, key, f"gives a dict as a JSON {type(body).__name__}, not an object")
        return ("dict", dict, tuple(body), [build(x, depth + 1) for x in body.values()])

    spec = build(j, 0)
    missing = [n for n in names if n not in used]
    if missing:
        raise _meta_error(source, key, f"leaves out the graph outputs {missing}")
    return spec


def _state_name(name: str) -> str:
    """An initializer name as a state_dict key: dotted identifiers (``onnx::Conv_12`` -> ``onnx__Conv_12``)."""
    parts = []
    for p in name.split("."):
        p = "".join(c if c.isalnum() or c == "_" else "_" for c in p) or "_"
        parts.append(p if not p[0].isdigit() or not parts else p)
    out = ".".join(parts)
    return out if out and not out[0].isdigit() else f"_{out}"


def _value_name(name: str) -> str:
    base = name.strip("/").replace("/", "_").replace("::", "_").replace(":", "_")
    return base or "v"


# ops whose versions below opset N onnx's version converter turns into a model with other inputs: refused
_NOT_UPGRADED = {"Scan": (9, "its opset-8 form steps a batch of sequences (a batch dim and a sequence_lens input), "
                          "which onnx's version converter drops from the model's inputs")}


def _refuse_unconvertible(proto, opset: int, source: str) -> None:
    """``UnsupportedOpError`` for a node of an op in ``_NOT_UPGRADED`` below its version there."""
    for n in (n for g in _graphs(proto.graph) for n in g.node):
        if n.domain in ("", "ai.onnx") and n.op_type in _NOT_UPGRADED and opset < _NOT_UPGRADED[n.op_type][0]:
            since, why = _NOT_UPGRADED[n.op_type]
            name = n.name or (n.output[0] if n.output else n.op_type)
            raise UnsupportedOpError(f"cannot import ONNX node {name!r} ({n.op_type}, opset {opset}) from {source}: "
                                     f"{why}. What to do: re-export the model at opset {since} or newer (ideally "
                                     f"{MIN_IMPORT_OPSET}+).", nodes=[f"{n.op_type} (opset {opset})"])


def _upgrade(proto, opset: int, source: str):
    """A model below opset ``MIN_IMPORT_OPSET``, converted to it by onnx's version converter (its adapters rewrite
    each op whose definition changed: Squeeze's axes attribute becoming an input, Upsample becoming Resize, ...)."""
    from onnx import version_converter

    try:
        return version_converter.convert_version(proto, MIN_IMPORT_OPSET)
    except Exception as e:  # noqa: BLE001 - the converter's C++ errors are plain RuntimeErrors
        msg = str(e).strip().splitlines()
        raise OnnxError(f"{source}: default-domain opset {opset} is below the lowest bridge imports "
                        f"({MIN_IMPORT_OPSET}), and onnx's version converter could not convert it "
                        f"({msg[0] if msg else type(e).__name__}). Re-export the model at opset 13 or newer.") from e


def _default_opset(model) -> int | None:
    """The version of the default-domain opset a model imports; None when it imports none."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _opset_of(model, domain: str) -> int:
    """The version of ``domain``'s opset the model imports (0 when it imports none: no importer applies)."""
    domain = "" if domain == "ai.onnx" else domain
    return next((o.version for o in model.opset_import if (o.domain if o.domain != "ai.onnx" else "") == domain), 0)


def _model_type(model) -> str:
    return model.graph.name or "OnnxModel"


# ---- checking ------------------------------------------------------------------------------------
def check_model(model, source: str = "ONNX model", *, tensors: bool = True) -> None:
    """Refuse, with an ``OnnxError`` naming the tensor, node, input or key, a model the importer would otherwise
    misread or crash on: an IR version or default-domain opset newer than the installed onnx knows, an opset
    imported twice, tensor data that does not fit its type and dims, a sparse initializer, a name defined twice
    (not SSA) or used before anything defines it, a graph output nothing produces, a node with more or fewer
    inputs or outputs than its op takes, or an attribute its op does not have, of the wrong type, or missing.
    Graph input declarations and ``bridge.*`` metadata are checked where they are read (``_Importer``), and so are
    initializers with ``tensors=False`` (the import reads each once, checking it: protobuf copies a tensor's
    bytes every time they are read)."""
    import onnx

    if model.ir_version > onnx.IR_VERSION:
        raise OnnxError(f"{source}: IR version {model.ir_version} is newer than the installed onnx "
                        f"{onnx.__version__} reads ({onnx.IR_VERSION}); fields it does not know would be dropped. "
                        "What to do: upgrade onnx (pip install -U onnx), or re-export the model for an older IR.")
    seen: dict[str, int] = {}
    for o in model.opset_import:
        domain = "" if o.domain == "ai.onnx" else o.domain
        if domain in seen:
            raise OnnxError(f"{source}: imports the opset of domain {domain or 'ai.onnx'!r} twice (versions "
                            f"{seen[domain]} and {o.version}). The file is corrupt: re-export it.")
        seen[domain] = o.version
    newest = onnx.defs.onnx_opset_version()
    if seen.get("", 0) > newest:
        raise OnnxError(f"{source}: default-domain opset {seen['']} is newer than the installed onnx "
                        f"{onnx.__version__} knows ({newest}), so its operators cannot be checked or read. What to "
                        f"do: upgrade onnx (pip install -U onnx), or convert the model down: "
                        f"onnx.version_converter.convert_version(model, {newest}).")
    for g in _graphs(model.graph):  # the main graph, then the subgraphs of If and Loop nodes, nested ones too
        if g.sparse_initializer:
            raise OnnxError(f"{source}: sparse initializer {g.sparse_initializer[0].values.name!r} (and "
                            f"{len(g.sparse_initializer)} in all): bridge imports dense tensors only. Store it dense "
                            "(onnx.numpy_helper.from_array of the dense array) in the tool that wrote the file.")
        for t in g.initializer if tensors else ():
            check_tensor(t, f"initializer {t.name!r}", source)
        for node in g.node:
            _check_node(node, seen.get(node.domain if node.domain != "ai.onnx" else "", 0), source)
    _check_names(model.graph, source)


def _subgraphs(node) -> list:
    """The subgraphs (``GraphProto``) in a node's attributes: an If's branches, a Loop's body."""
    return [g for a in node.attribute if a.type in (5, 10)  # GRAPH, GRAPHS
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs)]


def _graphs(g):
    """``g`` and every subgraph nested in its nodes, depth first."""
    stack = [g]
    while stack:
        g = stack.pop()
        yield g
        for node in g.node:
            stack.extend(_subgraphs(node))


def outer_names(g) -> list[str]:
    """The names subgraph ``g`` (and the subgraphs nested in it) reads from enclosing graphs, in first-read
    order: what it uses that it does not define (inputs, initializers, node outputs)."""
    defined = {vi.name for vi in g.input} | {t.name for t in g.initializer}
    seen: dict[str, None] = {}
    for node in g.node:
        for x in node.input:
            if x and x not in defined:
                seen.setdefault(x)
        for sub in _subgraphs(node):
            for x in outer_names(sub):
                if x not in defined:
                    seen.setdefault(x)
        defined.update(node.output)
    for o in g.output:
        if o.name not in defined:
            seen.setdefault(o.name)
    return list(seen)


def _check_names(g, source: str, outer: frozenset = frozenset()) -> None:
    """Every name defined once (graph inputs, initializers, node outputs: SSA), every node input defined before
    the node (topological order), every graph output defined. In a subgraph, names of the enclosing graphs
    defined before its node (``outer``) count as defined."""
    defined: dict[str, Any] = {}  # name -> what defines it (a description, or the node)
    for t in g.initializer:
        if t.name in defined:
            raise OnnxError(f"{source}: two initializers are named {t.name!r}. The file is corrupt: re-export it.")
        defined[t.name] = f"initializer {t.name!r}"
    inputs = set()
    for vi in g.input:
        if vi.name in inputs:
            raise OnnxError(f"{source}: two graph inputs are named {vi.name!r}. The file is corrupt: re-export it.")
        inputs.add(vi.name)
        defined.setdefault(vi.name, f"graph input {vi.name!r}")  # an initializer may be listed as an input too
    for node in g.node:
        for i, x in enumerate(node.input):
            if x and x not in defined and x not in outer:
                name = node.name or (node.output[0] if node.output else node.op_type)
                later = {o for n in g.node for o in n.output if o}
                why = ("is produced by a later node: the nodes are not in topological order" if x in later else
                       "is produced by no node and is no graph input or initializer")
                raise OnnxError(f"{source}: input {i} ({x!r}) of node {name!r} ({node.op_type}) {why}. The file is "
                                "corrupt: re-export it.")
        for sub in _subgraphs(node):
            _check_names(sub, source, outer | defined.keys())
        for x in node.output:
            if not x:
                continue
            if x in defined:
                name = node.name or (node.output[0] if node.output else node.op_type)
                first = defined[x]
                if not isinstance(first, str):  # a node: described only here, where an error needs it
                    first = f"the output of node {first.name or (first.output[0] if first.output else first.op_type)!r}"
                raise OnnxError(f"{source}: node {name!r} ({node.op_type}) outputs {x!r}, already defined as "
                                f"{first}; each name is defined once in ONNX (SSA). The file is corrupt: "
                                "re-export it.")
            defined[x] = node
    for o in g.output:
        if o.name not in defined and o.name not in outer:
            raise OnnxError(f"{source}: graph output {o.name!r} is produced by no node and is no graph input or "
                            "initializer. The file is corrupt: re-export it.")


def _check_node(node, opset: int, source: str) -> None:
    """A node of a known ONNX op against its schema at the model's opset: input/output counts and attributes.
    Ops onnx does not define at that opset are left to the importer lookup (``unsupported_nodes``)."""
    from onnx import AttributeProto

    domain = "" if node.domain == "ai.onnx" else node.domain
    rule = _node_rule(node.op_type, opset, domain)
    if rule is None:  # not an ONNX op at this opset
        return
    lo_in, hi_in, lo_out, hi_out, types, required = rule
    if lo_in <= len(node.input) <= hi_in and lo_out <= len(node.output) <= hi_out:  # the common case, in python
        given = [(a.name, a.type) for a in node.attribute]
        if all(types.get(n) == t for n, t in given) and len({n for n, _ in given}) == len(given) and \
                all(any(r == n for n, _ in given) for r in required):
            return
    schema = _schema(node.op_type, opset, domain)  # something is off: say what, below
    attributes, required = _attributes(node.op_type, opset, domain)
    name = node.name or (node.output[0] if node.output else node.op_type)
    what = f"{source}: node {name!r} ({node.op_type}, opset {opset})"
    n_in = len(node.input)
    if n_in > schema.max_input:
        _other_version(node, name, schema, opset, domain, source, n_inputs=n_in)
    if not schema.min_input <= n_in <= schema.max_input:
        raise OnnxError(f"{what} has {n_in} inputs; {node.op_type} takes {schema.min_input} to "
                        f"{schema.max_input}. The file is corrupt: re-export it.")
    if not schema.min_output <= len(node.output) <= schema.max_output:
        raise OnnxError(f"{what} has {len(node.output)} outputs; {node.op_type} gives {schema.min_output} to "
                        f"{schema.max_output}. The file is corrupt: re-export it.")
    given = set()
    for a in node.attribute:
        if a.name in given:
            raise OnnxError(f"{what} has two attributes named {a.name!r}. The file is corrupt: re-export it.")
        given.add(a.name)
        spec = attributes.get(a.name)
        if spec is None:
            _other_version(node, name, schema, opset, domain, source, attribute=a.name)
            raise OnnxError(f"{what} has an attribute {a.name!r}, which {node.op_type} does not have in any "
                            f"version (at opset {opset} it has {sorted(schema.attributes) or 'none'}). The file is "
                            "corrupt: re-export it.")
        if int(a.type) != int(spec.type):
            type_name = {v: k for k, v in AttributeProto.AttributeType.items()}
            raise OnnxError(f"{what}: attribute {a.name!r} is {type_name.get(int(a.type), a.type)}, but "
                            f"{node.op_type} takes {type_name.get(int(spec.type), spec.type)}. The file is corrupt: "
                            "re-export it.")
    for a_name in required:
        if a_name not in given:
            raise OnnxError(f"{what} lacks its required attribute {a_name!r}. The file is corrupt: re-export it.")


@functools.lru_cache(maxsize=4096)
def _schema(op_type: str, opset: int, domain: str):
    """onnx's schema of an op at an opset (None where onnx defines none), looked up once per process."""
    from onnx import defs

    try:
        return defs.get_schema(op_type, opset, domain)
    except defs.SchemaError:
        return None


@functools.lru_cache(maxsize=4096)
def _node_rule(op_type: str, opset: int, domain: str) -> tuple | None:
    """What ``_check_node`` checks every node against, as python values (reading them from onnx's schema costs a
    call into C++ each): input and output counts, each attribute's type by name, the required attributes."""
    schema = _schema(op_type, opset, domain)
    if schema is None:
        return None
    attributes, required = _attributes(op_type, opset, domain)
    return (schema.min_input, schema.max_input, schema.min_output, schema.max_output,
            {n: int(spec.type) for n, spec in attributes.items()}, required)


@functools.lru_cache(maxsize=4096)
def _attributes(op_type: str, opset: int, domain: str) -> tuple[dict, tuple]:
    """The attributes of an op's schema by name (onnx builds that dict anew on each read) and the required ones."""
    attributes = dict(_schema(op_type, opset, domain).attributes)
    return attributes, tuple(n for n, spec in attributes.items() if spec.required)


def _other_version(node, name: str, schema, opset: int, domain: str, source: str, *, n_inputs: int = 0,
                   attribute: str | None = None) -> None:
    """A node written for another version of its op: more inputs than it takes at the model's opset, or an
    attribute it lacks there, which another version has (Pad-18's ``axes`` input in an opset-17 model,
    ReduceMean's ``axes`` attribute at opset 18, where it became an input). ``UnsupportedOpError`` naming what and
    where it belongs: the importer of the model's version would read the node as something else (axes left out:
    all axes). Returns when no version has it (the file is corrupt)."""
    from onnx import defs

    where = []  # the opsets whose version of the op has it
    for version in range(1, defs.onnx_opset_version() + 1):
        try:
            other = defs.get_schema(node.op_type, version, domain)
        except defs.SchemaError:  # no such op yet
            continue
        if other.since_version != schema.since_version and (
                other.max_input >= n_inputs if attribute is None else attribute in other.attributes):
            where.append(version)
            if attribute is None:
                break  # the first version that takes that many inputs
    if not where:
        return
    if attribute is None:
        other = defs.get_schema(node.op_type, where[0], domain)
        names = [other.inputs[min(i, len(other.inputs) - 1)].name for i in range(schema.max_input, n_inputs)]
        given = (f"{', '.join(names)} given as an input{'s' if len(names) > 1 else ''}, but {node.op_type} takes "
                 f"at most {schema.max_input} input(s) at opset {opset}: the {' and '.join(names)} input comes with "
                 f"opset {other.since_version}")
    else:
        as_input = [i for i, x in enumerate(schema.inputs) if x.name == attribute]
        given = (f"{attribute} given as an attribute, which {node.op_type} has at opsets {where[0]} to {where[-1]}, "
                 f"not at opset {opset}" + (f" (there it is input {as_input[0]})" if as_input else ""))
    raise UnsupportedOpError(f"cannot import ONNX node {name!r} ({node.op_type}, opset {opset}) from {source}: "
                             f"{given}. The file mixes opsets: re-export it for one opset.", nodes=[node.op_type])


# ---- reading ------------------------------------------------------------------------------------
def _load(model: Any, base_dir: str | os.PathLike | None = None):
    """(ModelProto, description for messages) from a path, bytes or a ModelProto; OnnxError when unreadable.
    External data is read from inside ``base_dir`` (default: a path's own folder) only; see ``load_onnx``."""
    import onnx

    from ..backends.ort import load_onnx

    if isinstance(model, onnx.ModelProto):
        source = "<ModelProto>"
    elif isinstance(model, (bytes, bytearray, memoryview)):
        model, source = bytes(model), "<bytes>"
    elif isinstance(model, (str, os.PathLike)):
        source = os.fspath(model)
    else:
        raise OnnxError(f"from_onnx expects a path, bytes or an onnx.ModelProto, got {type(model).__name__}")
    proto = load_onnx(model, base_dir=base_dir)
    if not proto.opset_import or not proto.graph.output:
        raise OnnxError(f"{source}: not an ONNX model (no opset import or no graph outputs). The file is truncated, "
                        "corrupt, or not an ONNX file.")
    return proto, source


def unsupported_nodes(model) -> list[tuple[str, str, int]]:
    """Every (op type, first node name, count) without an importer for the model's opset of its domain, in file
    order (the main graph's nodes, then those of subgraphs)."""
    seen: dict[str, list] = collections.OrderedDict()
    known: dict[tuple[str, str], bool] = {}  # (op type, domain): has an importer (looked up once per op type)
    for n in (n for g in _graphs(model.graph) for n in g.node):
        domain = n.domain if n.domain not in ("", "ai.onnx") else ""
        op_type = n.op_type
        ok = known.get((op_type, domain))
        if ok is None:
            ok = known[op_type, domain] = registry.onnx_importer(op_type, _opset_of(model, domain), domain) is not None
        if not ok:
            key = f"{domain}::{op_type}" if domain else op_type
            entry = seen.setdefault(key, [n.name or (n.output[0] if n.output else ""), 0])
            entry[1] += 1
    return [(k, v[0], v[1]) for k, v in seen.items()]


def supported_op_types() -> list[str]:
    """The ONNX op types (default domain) bridge imports."""
    return sorted({t for d, t, _ in registry.onnx_importers() if d == ""})


def from_onnx(model: str | os.PathLike | bytes | Any, *, base_dir: str | os.PathLike | None = None) -> Graph:
    """Import an ONNX model (path, bytes or ``onnx.ModelProto``) as a bridge Graph of canonical ops.

    The graph runs (``g.run``), becomes a module (``g.to_module()``, state_dict keys = initializer names, or
    the original model's keys for a file bridge wrote), prints, checks and exports again (``bridge.to_onnx``).
    Graph inputs keep their names; ``dim_param`` dims become symbolic dims.

    External data (weights in files beside the model) is read only from inside one folder: ``base_dir``, by
    default the model file's own folder. Bytes and a ModelProto have no folder: their external data is refused
    unless ``base_dir`` is given.

    Raises ``OnnxError`` for a file that cannot be read or is not a well-formed model (``check_model``) and
    ``UnsupportedOpError`` listing every op type that has no importer (with a node name and a count), before
    anything is built.
    """
    proto, source = _load(model, base_dir)
    imp_opset = _default_opset(proto)
    if imp_opset is None:
        raise OnnxError(f"{source}: the model imports no default-domain (ai.onnx) opset; bridge imports models of "
                        f"the standard ONNX ops at opset {MIN_IMPORT_OPSET} and newer")
    if imp_opset < MIN_IMPORT_OPSET:
        _refuse_unconvertible(proto, imp_opset, source)
        proto = _upgrade(proto, imp_opset, source)
    check_model(proto, source, tensors=False)
    bad = unsupported_nodes(proto)
    if bad:
        lines = [f"cannot import {source}: {len(bad)} ONNX op type(s) have no importer"]
        lines += [f"  {t}: {c} node(s), e.g. {nm!r}" for t, nm, c in bad]
        lines.append("What to do: re-export the model at opset 17+ without these ops, or add an "
                     "@onnx_import(...) function beside the canonical op (see docs/onnx.md).")
        raise UnsupportedOpError("\n".join(lines), nodes=[t for t, _, _ in bad])
    try:
        return _Importer(proto, source).run()
    except NeedsRealValues:  # an op fake tensors cannot run: propagate real values
        try:
            return _Importer(proto, source, fake=False).run()
        except TraceError as e:  # a size that depends on data would become the number seen now: refused
            raise OnnxError(f"cannot import {source}: {e}") from e
