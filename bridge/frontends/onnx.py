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

Errors: ``OnnxError`` for a file that cannot be read (path and reason), ``UnsupportedOpError`` listing every
node whose op type has no importer (type, name, count) before anything is built.
"""
from __future__ import annotations

import collections
import json
import os
from typing import Any

import torch

from ..errors import BridgeError, OnnxError, UnsupportedOpError
from ..ir import structure
from ..ir.graph import Graph, Value, iter_values
from ..ir.spec import TensorSpec
from ..ops import registry
from ..ops.onnx_helpers import Dims, UnsupportedElementType, torch_dtype
from .common import GraphBuilder, NeedsRealValues

MIN_IMPORT_OPSET = 13
_EXAMPLE_SIZE = 2  # example size of a symbolic dim while propagating (>= 2: torch specializes 0 and 1)


class ImportUnsupported(BridgeError):
    """Raised by an importer for an attribute combination it cannot express (``ctx.unsupported(why)``)."""


def _tensor_dtype(elem_type: int) -> torch.dtype:
    try:
        return torch_dtype(elem_type)
    except UnsupportedElementType as e:
        raise ImportUnsupported(str(e)) from None


def to_torch(t) -> torch.Tensor:
    """An ``onnx.TensorProto`` as a torch tensor (a copy it owns)."""
    from onnx import TensorProto, numpy_helper

    if t.data_type == TensorProto.BFLOAT16:
        import numpy as np

        raw = np.frombuffer(t.raw_data, dtype=np.int16) if t.raw_data else np.asarray(t.int32_data, dtype=np.int16)
        return torch.from_numpy(raw.copy()).view(torch.bfloat16).reshape(tuple(t.dims))
    arr = numpy_helper.to_array(t)
    return torch.from_numpy(arr.copy()) if arr.ndim else torch.tensor(arr.item(), dtype=_tensor_dtype(t.data_type))


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

    def ints(self, i: int, *, required: bool = True) -> list | None:
        """Input ``i`` as a list of sizes: ints, or run-time int scalars when it comes from a symbolic shape."""
        v = self.raw(i)
        if v is None:
            return None
        if isinstance(v, Dims):
            return list(v)
        c = self.const(i)
        if c is None:
            if required:
                self.unsupported(f"input {i} ({self.node.input[i]}) must be known when importing (a constant or "
                                 "a shape), not computed from data at run time")
            return None
        return [int(x) for x in c.reshape(-1).tolist()]

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
        from onnx import helper

        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            return v.decode()
        if isinstance(v, list) and v and isinstance(v[0], bytes):
            return [x.decode() for x in v]
        if hasattr(v, "dims"):  # a TensorProto attribute
            return to_torch(v)
        return v

    # ---- building -----------------------------------------------------------------------------
    def call(self, op: str, **args) -> Any:
        """Canonical op ``op`` on ``args``: a node in the graph, or (all inputs known) its value now."""
        return self._imp.call(op, args, self.name)

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


class _Importer:
    def __init__(self, model, source: str, fake: bool = True):
        self.model = model
        self.source = source
        self.env: dict[str, Any] = {}
        self._const_values: dict[int, Value] = {}
        self.opset = _default_opset(model) or 0
        meta = {p.key: p.value for p in model.metadata_props}
        self.meta = meta
        dynamic, examples = self._inputs_plan()
        # fake tensors (symbolic dims) first; real zeros when an op's output shape depends on data
        self.b = GraphBuilder(fake=fake, dynamic=dynamic if fake else None)
        self.examples = examples

    def _inputs_plan(self):
        g = self.model.graph
        inits = {t.name for t in g.initializer}
        dynamic: dict[str, dict[int, str]] = {}
        examples = {}
        for vi in g.input:
            if vi.name in inits:
                continue  # old files list initializers as inputs too
            tt = vi.type.tensor_type
            if not vi.type.HasField("tensor_type"):
                raise OnnxError(f"{self.source}: graph input {vi.name!r} is not a tensor; only tensor inputs import")
            dtype = _tensor_dtype(tt.elem_type)
            shape = []
            if tt.HasField("shape"):
                for i, d in enumerate(tt.shape.dim):
                    if d.HasField("dim_value"):
                        shape.append(d.dim_value)
                    else:
                        dynamic.setdefault(vi.name, {})[i] = d.dim_param or f"{vi.name}_{i}"
                        shape.append(_EXAMPLE_SIZE)
            else:
                raise OnnxError(f"{self.source}: graph input {vi.name!r} has no shape; bridge needs the rank "
                                "(dims may be symbolic)")
            examples[vi.name] = torch.zeros(shape, dtype=dtype)
        return dynamic, examples

    # ---- state --------------------------------------------------------------------------------
    def _initializers(self):
        state = json.loads(self.meta["bridge.state"]) if "bridge.state" in self.meta else None
        self.state_recorded = state is not None
        order = []
        for t in self.model.graph.initializer:
            tensor = to_torch(t)
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
        if not any(True for _ in iter_values(args)):
            with torch.no_grad():
                return opdef.impl(**args)
        tensors, struct = structure.flatten(args, lambda o: isinstance(o, torch.Tensor))
        args = structure.unflatten(struct, [self._const_value(t) for t in tensors])
        return self.b.call(op, args, name=_value_name(name))

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
            self.b.example[id(v)] = self.b._to_example(t)
            self._const_values[id(t)] = v
        return v

    def run(self) -> Graph:
        g = self.model.graph
        with self.b.session():
            for name, ex in self.examples.items():
                self.env[name] = self.b.input(name, ex)
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
                res = fn(ctx)
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

    def _set_outputs(self, outs: list, names: list[str]) -> None:
        struct = self.meta.get("bridge.output_structure")
        by_name = dict(zip(names, range(len(outs))))
        if struct:
            spec = _struct_from_json(json.loads(struct), by_name)
            if spec is not None:
                self.b.graph.set_outputs(outs, spec)
                return
        self.b.graph.set_outputs(outs)


def _struct_from_json(j, by_name: dict[str, int]):
    """bridge's recorded output structure (see backends/onnx.py ``_struct_json``) as a structure spec."""
    if "output" in j:
        return ("leaf", by_name[j["output"]]) if j["output"] in by_name else None
    if "const" in j:
        return ("const", j["const"])
    if "tuple" in j or "list" in j:
        kind = "tuple" if "tuple" in j else "list"
        subs = [_struct_from_json(s, by_name) for s in j[kind]]
        return None if any(s is None for s in subs) else (kind, subs)
    if "dict" in j:
        keys = list(j["dict"])
        subs = [_struct_from_json(j["dict"][k], by_name) for k in keys]
        return None if any(s is None for s in subs) else ("dict", dict, tuple(keys), subs)
    return None


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


def _default_opset(model) -> int | None:
    """The version of the default-domain opset a model imports; None when it imports none."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _opset_of(model, domain: str) -> int:
    """The version of ``domain``'s opset the model imports (0 when it imports none: no importer applies)."""
    domain = "" if domain == "ai.onnx" else domain
    return next((o.version for o in model.opset_import if (o.domain if o.domain != "ai.onnx" else "") == domain), 0)


def _model_type(model) -> str:
    return model.graph.name or "OnnxModel"


# ---- reading ------------------------------------------------------------------------------------
def _load(model: Any):
    """(ModelProto, description for messages) from a path, bytes or a ModelProto; OnnxError when unreadable."""
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
    try:
        proto = load_onnx(model)
    except OnnxError as e:
        if source != "<bytes>":
            raise
        cause = e.__cause__
        why = f"{type(cause).__name__}: {cause}" if cause is not None else "no graph"
        raise OnnxError(f"<bytes> ({len(model)} bytes): not a readable ONNX model (corrupt or truncated?): "
                        f"{why}") from None
    if not proto.opset_import or not proto.graph.output:
        raise OnnxError(f"{source}: not an ONNX model (no opset import or no graph outputs). The file is truncated, "
                        "corrupt, or not an ONNX file.")
    return proto, source


def unsupported_nodes(model) -> list[tuple[str, str, int]]:
    """Every (op type, first node name, count) without an importer for the model's opset of its domain, in file
    order."""
    seen: dict[str, list] = collections.OrderedDict()
    for n in model.graph.node:
        domain = n.domain if n.domain not in ("", "ai.onnx") else ""
        key = f"{domain}::{n.op_type}" if domain else n.op_type
        if registry.onnx_importer(n.op_type, _opset_of(model, domain), domain) is None:
            entry = seen.setdefault(key, [n.name or (n.output[0] if n.output else ""), 0])
            entry[1] += 1
    return [(k, v[0], v[1]) for k, v in seen.items()]


def supported_op_types() -> list[str]:
    """The ONNX op types (default domain) bridge imports."""
    return sorted({t for d, t, _ in registry.onnx_importers() if d == ""})


def from_onnx(model: str | os.PathLike | bytes | Any) -> Graph:
    """Import an ONNX model (path, bytes or ``onnx.ModelProto``) as a bridge Graph of canonical ops.

    The graph runs (``g.run``), becomes a module (``g.to_module()``, state_dict keys = initializer names, or
    the original model's keys for a file bridge wrote), prints, checks and exports again (``bridge.to_onnx``).
    Graph inputs keep their names; ``dim_param`` dims become symbolic dims.

    Raises ``OnnxError`` for a file that cannot be read and ``UnsupportedOpError`` listing every op type that
    has no importer (with a node name and a count), before anything is built.
    """
    proto, source = _load(model)
    imp_opset = _default_opset(proto)
    if imp_opset is None or imp_opset < MIN_IMPORT_OPSET:
        raise OnnxError(f"{source}: default-domain opset {imp_opset} is below the lowest bridge imports "
                        f"({MIN_IMPORT_OPSET}). Convert it first: onnx.version_converter.convert_version(model, 17).")
    bad = unsupported_nodes(proto)
    if bad:
        lines = [f"cannot import {source}: {len(bad)} ONNX op type(s) have no importer"]
        lines += [f"  {t}: {c} node(s), e.g. {nm!r}" for t, nm, c in bad]
        lines.append("What to do: re-export the model at opset 17+ without these ops, or add an "
                     "@onnx_import(...) function beside the canonical op (see docs/onnx.md).")
        raise UnsupportedOpError("\n".join(lines), nodes=[t for t, _, _ in bad])
    try:
        return _Importer(proto, source).run()
    except NeedsRealValues:  # NonZero, Compress of run-time data: propagate real values (symbolic dims are lost)
        return _Importer(proto, source, fake=False).run()
