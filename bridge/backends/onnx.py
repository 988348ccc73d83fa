"""ONNX backend: a bridge Graph becomes an ``onnx.ModelProto``, each op lowering itself.

Lowerings live beside their ops (``@onnx_lowering("conv")`` in bridge/ops/*.py) and build nodes through
a ``LoweringContext``; this module owns everything that touches onnx: names, dtypes, initializers,
symbolic dims, metadata, checking and (atomic, optionally external-data) writing.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import warnings
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from .. import fileio
from ..errors import BridgeError, UnsupportedOpError
from ..ir.graph import Deferred, Graph, Node, Value, iter_values
from ..ir.spec import ScalarSpec, TensorSpec
from ..ops import registry
from ..ops._util import nested_items
from ..ops.onnx_helpers import BITS, ONNX_DTYPE
from .. import progress
from ..version import __version__

MIN_OPSET = 17
TWO_GB = 2**31

DTYPE = ONNX_DTYPE  # torch dtype -> TensorProto data type, defined once in the ops layer
_PY = {int: TensorProto.INT64, float: TensorProto.FLOAT, bool: TensorProto.BOOL}


class Unsupported(Exception):
    """Raised by a lowering for an argument combination it cannot express."""


def max_opset() -> int:
    """The newest default-domain opset that both onnx and the installed onnxruntime run.

    Found by loading a one-node model in onnxruntime at each opset, newest first; the answer is kept per
    installation of onnx and onnxruntime in ``~/.cache/bridge`` (``$XDG_CACHE_HOME``), so later processes need
    not import onnxruntime to export (28 MiB and 50 ms of a fresh process's first export)."""
    global _MAX_OPSET
    if _MAX_OPSET is None:
        key = _installation()
        cached = _read_cache().get(key) if key else None
        _MAX_OPSET = cached if isinstance(cached, int) and MIN_OPSET <= cached <= onnx.defs.onnx_opset_version() \
            else _probe_max_opset()
        if key and cached != _MAX_OPSET:
            _write_cache(key, _MAX_OPSET)
    return _MAX_OPSET


def _probe_max_opset() -> int:
    import onnxruntime as ort

    newest = onnx.defs.onnx_opset_version()
    opts = ort.SessionOptions()  # the smallest session: one thread, no arena, no optimization (9 MiB, not 28)
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.enable_cpu_mem_arena = False
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 4
    for op in range(newest, MIN_OPSET - 1, -1):
        g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", op)])
        m.ir_version = _ir_version(op)
        try:
            ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        except Exception:  # noqa: BLE001 - onnxruntime says no in many ways
            continue
        return op
    return MIN_OPSET


def _installation() -> str | None:
    """Which onnx and onnxruntime are installed, without importing onnxruntime: versions, and the place and time
    of onnxruntime's files (a reinstall changes them). None when onnxruntime cannot be found."""
    import importlib.util

    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or not spec.origin:
        return None
    try:
        stamp = os.stat(spec.origin).st_mtime_ns
    except OSError:
        return None
    return f"onnx {onnx.__version__} ({onnx.defs.onnx_opset_version()}); onnxruntime {spec.origin} {stamp}"


def _cache_path() -> str:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "bridge", "max_opset.json")


def _read_cache() -> dict:
    try:
        with open(_cache_path(), encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(key: str, opset: int) -> None:
    """Best effort: a cache that cannot be written costs the next process a probe, nothing else."""
    path = _cache_path()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        data = {**_read_cache(), key: opset}
        with fileio.atomic_write(path, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
    except (OSError, BridgeError):
        pass


_MAX_OPSET: int | None = None


def check_opset(opset: Any) -> int:
    """``opset`` if bridge can write it: an int from MIN_OPSET up to the newest the installed onnx defines (its
    checker validates nothing newer); a ``BridgeError`` that says which opsets work otherwise."""
    newest = onnx.defs.onnx_opset_version()
    if not isinstance(opset, int) or isinstance(opset, bool) or not MIN_OPSET <= opset <= newest:
        raise BridgeError(f"opset {opset!r} cannot be written: bridge writes opsets {MIN_OPSET} to {newest} (the "
                          f"newest onnx {onnx.__version__} defines); the installed onnxruntime runs up to "
                          f"{max_opset()}, "
                          "the default. Give an opset in that range, or upgrade onnx and onnxruntime for a newer one.")
    return opset


class LoweringContext:
    """What a lowering sees: the IR node, the opset, and ``op``/``const`` to build ONNX."""

    def __init__(self, graph: Graph, opset: int, weights: list | None = None,
                 bad: Sequence[tuple[Node, str]] = ()):
        self.graph = graph
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []  # of the graph being built: the main graph, or a subgraph
        self.initializers: dict[str, onnx.TensorProto] = {}
        self.weights: set[str] = set()  # initializers whose bytes stream into the file (graph_to_onnx's weights)
        self._weight_list = weights  # graph_to_onnx's ``weights``: (name, tensor) of those, in order
        self.names: dict[int, str] = {}
        self._used: set[str] = set()
        self._consts: dict[tuple, str] = {}
        self.node: Node | None = None
        self.bad: list[tuple[Node, str]] = list(bad)  # nodes that cannot be lowered, found before or while lowering

    # ---- naming -------------------------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        base = hint.replace("%", "") or "v"
        name, i = base, 1
        while name in self._used:
            name, i = f"{base}_{i}", i + 1
        self._used.add(name)
        return name

    def bind(self, v: Value, name: str) -> None:
        self.names[id(v)] = name

    # ---- reading the IR node ------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        """The node's canonical argument ``key`` (a Value or a python constant)."""
        return self.node.args[key]

    def input(self, key_or_value: Any, dtype: torch.dtype | None = None) -> str | None:
        """ONNX name of an argument: a Value's tensor, or a constant (python number/list, tensor)."""
        a = self.node.args[key_or_value] if isinstance(key_or_value, str) else key_or_value
        if a is None:
            return None
        if isinstance(a, Value):
            return self.names[id(a)]
        return self.const(a, dtype=dtype)

    def spec(self, key_or_value: Any) -> TensorSpec | ScalarSpec | None:
        a = self.node.args[key_or_value] if isinstance(key_or_value, str) else key_or_value
        return a.spec if isinstance(a, Value) else None

    def rank(self, key_or_value: Any) -> int:
        s = self.spec(key_or_value)
        if isinstance(s, TensorSpec):
            return s.rank
        return 0

    def dtype(self, key_or_value: Any) -> torch.dtype | None:
        s = self.spec(key_or_value)
        if isinstance(s, TensorSpec):
            return s.dtype
        if isinstance(s, ScalarSpec):
            return {int: torch.int64, float: torch.float32, bool: torch.bool}.get(s.type)
        return None

    def out_spec(self, i: int = 0) -> TensorSpec | ScalarSpec | None:
        return self.node.outputs[i].spec

    # ---- building -----------------------------------------------------------------------------
    def const(self, value: Any, dtype: torch.dtype | None = None, hint: str = "const") -> str:
        """An initializer holding ``value`` (python number or nested list, numpy array, or tensor)."""
        if isinstance(value, torch.Tensor):
            arr = value.detach().cpu()
            if arr.is_complex():  # complex: float [..., 2] (real, imaginary), as the file holds complex tensors
                arr = torch.view_as_real(arr.resolve_conj())
            if dtype is not None:
                arr = arr.to(dtype)
            if arr.dtype in BITS:
                raise Unsupported(f"{str(arr.dtype).removeprefix('torch.')} constants")
            arr = arr.numpy()
        else:
            np_dtype = _np_dtype(dtype) if dtype is not None else None
            if np_dtype is None:
                flat = list(nested_items(value))
                np_dtype = np.bool_ if flat and all(isinstance(x, bool) for x in flat) else (
                    np.int64 if all(isinstance(x, (int, bool)) for x in flat) else np.float32)
            arr = np.asarray(value, dtype=np_dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key in self._consts:
            return self._consts[key]
        name = self.fresh(hint)
        self.initializers[name] = numpy_helper.from_array(arr, name)
        self._consts[key] = name
        return name

    def op(self, op_type: str, inputs: Sequence[str | None], n_out: int = 1, domain: str = "",
           name: str | None = None, **attrs) -> Any:
        """Add one ONNX node; returns its output name (or a list when ``n_out`` > 1)."""
        base = name or (self.node.outputs[0].name if self.node is not None and self.node.outputs else op_type)
        outs = [self.fresh(base if i == 0 and n_out == 1 else f"{base}_{i}") for i in range(n_out)]
        ins = [i if i is not None else "" for i in inputs]
        while ins and ins[-1] == "":
            ins.pop()
        attrs = {k: v for k, v in attrs.items() if v is not None}
        node = helper.make_node(op_type, ins, outs, name=self.fresh(f"{op_type}_{base}"), domain=domain or None,
                                **attrs)
        self.nodes.append(node)
        return outs[0] if n_out == 1 else outs

    def unsupported(self, why: str):
        raise Unsupported(why)

    # ---- common helpers for lowerings -----------------------------------------------------------
    def ints(self, values: Sequence[Any]) -> str:
        """A 1-D int64 tensor from python ints and run-time scalar Values (``[batch, -1]``)."""
        if all(not isinstance(v, Value) for v in values):
            return self.const([int(v) for v in values], torch.int64)
        parts = []
        for v in values:
            if isinstance(v, Value):
                parts.append(self.op("Reshape", [self.names[id(v)], self.const([1], torch.int64)]))
            else:
                parts.append(self.const([int(v)], torch.int64))
        return self.op("Concat", parts, axis=0)

    def cast(self, name: str, dtype: torch.dtype) -> str:
        return self.op("Cast", [name], to=DTYPE[dtype])

    # ---- lowering nodes, regions and subgraphs ---------------------------------------------------
    def constants(self, values: Iterable[Value]) -> None:
        """Bind graph or region constants to initializers of the main graph (subgraphs read them from the outer
        scope): names from their state_dict names; with graph_to_onnx's ``weights``, those of ``WEIGHT_BYTES`` or
        more are listed there instead, their bytes streamed into the file."""
        for c in values:
            if id(c) in self.names or (not c._uses and not c.meta.get("is_output")):
                continue
            nm = self.fresh(c.names[0] if c.names else c.name)
            self.bind(c, nm)
            t = c._const if isinstance(c._const, Deferred) else c.const.detach()  # a Deferred one: when written
            if t.dtype.is_complex:  # float [..., 2] (real, imaginary), as the file holds complex tensors
                t = torch.view_as_real(_tensor(t).resolve_conj())
            if self._weight_list is not None and t.numel() * t.element_size() >= WEIGHT_BYTES:
                self._weight_list.append((nm, t))  # its bytes go from the tensor to the file, not through the model
                self.weights.add(nm)
            else:
                self.initializers[nm] = _tensor_proto(_tensor(t), nm)

    def lower(self, nodes: Iterable[Node]) -> None:
        """Lower ``nodes`` in order into the graph being built. A node that cannot be lowered joins ``bad`` and
        its outputs get placeholder names, so the rest still lowers and every problem is listed at once."""
        bad_ids = {id(n) for n, _ in self.bad}
        for node in nodes:
            outer, self.node = self.node, node
            failed = id(node) in bad_ids
            try:
                res = None if failed else registry.get(node.op).onnx(self, node)
            except Unsupported as e:
                self.bad.append((node, f"{node.op}: {e}"))
                failed = True
            except _NodeFailed:
                raise  # a node inside a region: it names itself
            except Exception as e:  # noqa: BLE001 - a lowering bug must name its node
                raise _NodeFailed(f"while exporting {node.describe()} to ONNX opset {self.opset}: "
                                  f"{type(e).__name__}: {e}") from e
            finally:
                self.node = outer
            if failed:
                for v in node.outputs:
                    self.bind(v, self.fresh(v.name))
                continue
            outs = [res] if isinstance(res, str) else list(res)
            if len(outs) != len(node.outputs):
                raise _NodeFailed(f"while exporting {node.describe()}: lowering of {node.op} gave {len(outs)} "
                                  f"outputs for {len(node.outputs)}")
            for v, nm in zip(node.outputs, outs):
                self.bind(v, nm)

    def region(self, region: Graph, inputs: Sequence[str]) -> list[str]:
        """Lower the nodes of ``region`` (a control-flow node's subgraph) into the graph being built, its inputs
        read from the tensors named ``inputs``; returns the names of its outputs (a python constant output becomes
        an initializer). A region lowered twice (a loop condition, before the loop and in its body) gets fresh
        names each time."""
        if len(inputs) != len(region.inputs):
            raise BridgeError(f"region {region.meta.get('region', '')} of {self.node.describe()} takes "
                              f"{len(region.inputs)} inputs, given {len(inputs)}")
        for v, nm in zip(region.inputs, inputs):
            self.bind(v, nm)
        self.constants(region.constants)
        self.lower(region.nodes)
        return [self.names[id(o)] if isinstance(o, Value) else self.const(o) for o in region.outputs]

    def subgraph(self, build: Callable[[], Sequence[str]], outputs: Sequence[Any], *,
                 inputs: Sequence[tuple[str, Any]] = (), name: str = "body") -> onnx.GraphProto:
        """An ONNX subgraph (an If branch, a Loop body) for an op attribute: the nodes that ``build()`` adds (with
        ``region``, ``op``) go into it, and the names it returns are its outputs, of specs ``outputs``.
        ``inputs``: its graph inputs, ``(name, spec)`` (a Loop body's iteration number, condition and carried
        values; none for an If branch). Anything else it reads comes from the outer scope by name: one context
        names every tensor of the model, so names stay unique across the main graph and all subgraphs, and
        constants are initializers of the main graph. An output that is not made in the subgraph (an input, an
        outer value, a constant) or that repeats another gets an Identity, as a subgraph's outputs must be its
        own."""
        outer_nodes, self.nodes = self.nodes, []
        try:
            srcs = list(build())
            body = self.nodes
        finally:
            self.nodes = outer_nodes
        if len(srcs) != len(outputs):
            raise BridgeError(f"subgraph {name} of {self.node.describe()} gives {len(srcs)} outputs for "
                              f"{len(outputs)} specs")
        made = {o for n in body for o in n.output}
        names: list[str] = []
        for src in srcs:
            if src not in made or src in names:
                dst = self.fresh(f"{src}_out")
                body.append(helper.make_node("Identity", [src], [dst], name=self.fresh(f"Identity_{dst}")))
                src = dst
            names.append(src)
        return helper.make_graph(body, self.fresh(name), [_value_info(nm, s) for nm, s in inputs],
                                 [_value_info(nm, s) for nm, s in zip(names, outputs)])


class _NodeFailed(BridgeError):
    """A lowering failed on a node (a bug, not an unsupported case): its message names the node, also from inside
    a region, where the enclosing node's lowering lets it through unchanged."""


def _np_dtype(dtype: torch.dtype):
    return {torch.float32: np.float32, torch.float64: np.float64, torch.float16: np.float16,
            torch.int64: np.int64, torch.int32: np.int32, torch.int16: np.int16, torch.int8: np.int8,
            torch.uint8: np.uint8, torch.bool: np.bool_}.get(dtype)


# ---- whole-graph export ---------------------------------------------------------------------------
def _value_info(name: str, spec, symbols_ok: bool = True) -> onnx.ValueInfoProto:
    if isinstance(spec, TensorSpec):
        shape = [d if isinstance(d, int) else str(d) for d in spec.shape]
        if spec.dtype.is_complex:  # float [..., 2] (real, imaginary): onnxruntime has no complex tensors
            return helper.make_tensor_value_info(name, DTYPE[spec.dtype.to_real()], shape + [2])
        return helper.make_tensor_value_info(name, DTYPE[spec.dtype], shape)
    if isinstance(spec, ScalarSpec) and spec.type in _PY:
        return helper.make_tensor_value_info(name, _PY[spec.type], [])
    raise BridgeError(f"value {name} of type {spec} cannot be an ONNX graph input or output")


def output_names(g: Graph) -> list[str]:
    """Names for the flat outputs from the model's output structure: ``logits``, ``output_0``, ``hidden_1``."""
    names: list[str | None] = [None] * len(g.outputs)

    def go(spec, prefix):
        kind = spec[0]
        if kind == "leaf":
            names[spec[1]] = prefix or "output"
        elif kind in ("tuple", "list", "namedtuple", "structseq"):
            subs = spec[1] if kind in ("tuple", "list") else spec[2]
            fields = getattr(spec[1], "_fields", None) if kind == "namedtuple" else None
            for i, s in enumerate(subs):
                go(s, f"{prefix}_{fields[i]}" if fields and prefix else fields[i] if fields else
                   f"{prefix}_{i}" if prefix else f"output_{i}")
        elif kind in ("dict", "dataclass"):
            keys, subs = (spec[2], spec[3])
            for k, s in zip(keys, subs):
                go(s, f"{prefix}_{k}" if prefix else str(k))
        elif kind == "pytree":
            for k, s in zip(spec[4], spec[3]):
                go(s, f"{prefix}_{k}" if prefix else str(k))

    go(g.output_struct, "")
    seen: set[str] = set()
    out = []
    for i, n in enumerate(names):
        n = "".join(c if c.isalnum() or c in "_.-" else "_" for c in (n or f"output_{i}"))
        base, j = n, 1
        while n in seen:
            n, j = f"{base}_{j}", j + 1
        seen.add(n)
        out.append(n)
    return out


def unsupported_nodes(g: Graph) -> list[tuple[Node, str]]:
    """Every node with no ONNX lowering, those inside regions too, and why (listed all at once, before anything
    is written)."""
    bad = []
    for n in _enclosing(g):
        if n.op == "opaque":
            bad.append((n, f"opaque call {_target(n)}: {n.meta.get('why_opaque', 'no canonical op')}"))
        elif registry.get(n.op).onnx is None:
            bad.append((n, f"op '{n.op}' has no ONNX lowering"))
        elif not registry.get(n.op).onnx_complex and (kinds := _complex_kinds(n)):
            bad.append((n, f"op '{n.op}' has a complex {kinds}, and its ONNX lowering is for real tensors only (a "
                           "complex tensor is a float tensor with a trailing dim of 2 in the file): take .real, "
                           ".imag, .abs() or torch.view_as_real(...) before it"))
        elif axes := _run_time_axes(n):
            bad.append((n, f"op '{n.op}' takes its {' and '.join(axes)} from a value read when the model runs (an "
                           "ONNX file imported with axes computed at run time, or x.item() used as a dim); its ONNX "
                           "lowering needs the axes known when exporting. Make them constants"))
    return bad


_AXIS_PARAMS = ("dim", "dims", "axis", "source", "destination")


def _run_time_axes(n: Node) -> list[str]:
    """The axis arguments of node ``n`` (dim, dims, ...) that hold run-time python ints."""
    return [p for p in _AXIS_PARAMS if any(isinstance(v.spec, ScalarSpec) for v in iter_values(n.args.get(p)))]


def _complex_kinds(n: Node) -> str:
    """'input', 'output' or 'input and output' where node ``n`` has complex tensors; '' when it has none."""
    def cx(values):
        return any(isinstance(v.spec, TensorSpec) and v.spec.dtype.is_complex for v in values)
    return " and ".join(k for k, vs in (("input", n.inputs), ("output", n.outputs)) if cx(vs))


def _target(n: Node) -> str:
    t = n.args.get("target")
    return getattr(t, "__qualname__", None) or getattr(t, "__name__", None) or type(t).__name__ if not isinstance(
        t, str) else f"Tensor.{t}"


def _enclosing(g: Graph, where: str = "") -> dict[Node, str]:
    """Every node of ``g`` and of its regions, in execution order, with where it is: '' at the top level, else
    the region and its node (``true_fn of %cond``, ``body_fn of %while_loop, in true_fn of %cond``)."""
    out = {}
    for n in g.nodes:
        out[n] = where
        for key, region in n.regions:
            out.update(_enclosing(region, f"{key} of %{n.name}" + (f", in {where}" if where else "")))
    return out


def _describe_bad(items: Sequence[tuple[Node, str]], opset: int, where: dict[Node, str]) -> str:
    lines = [f"cannot export to ONNX opset {opset}: {len(items)} node(s) have no lowering"]
    for n, why in items:
        src = f" at {n.source}" if n.source else ""
        inside = f" in {where[n]}" if where.get(n) else ""
        lines.append(f"  {n.describe()}{inside}{src}: {why}")
    lines.append("What to do: replace these calls with supported torch ops (see docs/ops.md), keep the model's "
                 "ONNX-incompatible part outside the exported module, or register what is missing: a canonical op "
                 "for an opaque call (bridge.ops.registry.register, with its torch spellings) and its ONNX lowering "
                 "(@bridge.ops.registry.onnx_lowering(op_name)); docs/concepts.md, 'Adding an op', shows both.")
    return "\n".join(lines)


def graph_to_onnx(g: Graph, *, opset: int | None = None, name: str | None = None,
                  doc: str = "", value_names: dict | None = None, weights: list | None = None) -> onnx.ModelProto:
    """Lower every node; raise ``UnsupportedOpError`` listing all nodes that cannot be lowered.

    ``weights``: when given, the graph's constants of ``WEIGHT_BYTES`` or more are left out of the model and
    appended here as ``(initializer name, tensor)``, in order: the model is then checked and serialized without
    their bytes, which stream from the tensors into the file (``write``). Otherwise every constant is in the model.

    ``value_names``, when given, receives ``id(Value) -> ONNX tensor name`` for every value.
    """
    opset = opset or max_opset()
    check_opset(opset)
    where = _enclosing(g)
    ctx = LoweringContext(g, opset, weights, unsupported_nodes(g))
    # graph inputs keep the model's argument names; initializers keep parameter names
    for v in g.inputs:
        ctx.bind(v, ctx.fresh(v.name))
    onames = output_names(g)
    input_names = set(ctx._used)
    ctx._used.update(onames)  # the model's output names are kept for its outputs: no other tensor takes one
    ctx.constants(progress.track(g.constants, "initializers", min_total=1000))
    ctx.lower(progress.track(g.nodes, "lowering", min_total=1000))  # alone, or a step of an export's line
    if ctx.bad:
        order = {n: i for i, n in enumerate(where)}
        bad = sorted({id(n): (n, why) for n, why in reversed(ctx.bad)}.values(), key=lambda b: order[b[0]])
        raise UnsupportedOpError(_describe_bad(bad, opset, where), nodes=[n for n, _ in bad])

    # outputs: rename the producing tensors to the model's output names (Identity only when needed)
    outs, out_infos = [], []
    renames: dict[str, str] = {}
    for v, oname in zip(g.outputs, onames):
        if not isinstance(v, Value):
            continue  # python constants stay in the structure metadata
        src = ctx.names[id(v)]
        is_graph_input = any(src == ctx.names[id(i)] for i in g.inputs)
        is_constant = src in ctx.initializers or src in ctx.weights
        if oname in input_names:  # a graph input has that name: the output gets the next free one
            oname = ctx.fresh(oname)
        if is_constant or is_graph_input or src in renames:
            ctx.nodes.append(helper.make_node("Identity", [src], [oname], name=f"Identity_{oname}"))
        else:
            renames[src] = oname
        outs.append(oname)
        out_infos.append(_value_info(oname, v.spec))
    if renames:
        _rename(ctx.nodes, renames)
    same = _dedupe(ctx, set(outs))
    _drop_unread(ctx, set(outs))
    if value_names is not None:
        value_names.update({k: same.get(n, n) for k, v in ctx.names.items() for n in [renames.get(v, v)]})
    inputs = [_value_info(ctx.names[id(v)], v.spec) for v in g.inputs]
    graph = helper.make_graph(ctx.nodes, name or g.meta.get("model_type", "bridge"), inputs, out_infos,
                              initializer=list(ctx.initializers.values()))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="bridge", producer_version=__version__, doc_string=doc)
    model.ir_version = _ir_version(opset)
    _metadata(model, g, {nm: c for c in g.constants
                         if (nm := ctx.names.get(id(c))) in ctx.initializers or nm in ctx.weights})
    return model


# ops whose outputs differ between two nodes of the same inputs and attributes
_IMPURE = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial",
                     "Bernoulli", "Dropout"})


def _dedupe(ctx: "LoweringContext", outputs: set[str]) -> dict[str, str]:
    """Drop each node of the main graph that repeats an earlier one (same op, inputs and attributes: a node of
    ONNX's default domain, without subgraphs, not random); what read its outputs reads the first one's. Each
    lowering builds what it needs, so small computations repeat (every symbolic reshape builds its shape from the
    sizes: a GPT-2 medium decoder step had 1,907 nodes, 1,262 without the repeats, most of them Reshape and Concat).
    Nodes are in topological order, so a repeat's inputs are already renamed when it is reached. Returns the
    renames (dropped output -> kept one)."""
    seen: dict[tuple, onnx.NodeProto] = {}
    renames: dict[str, str] = {}
    kept = []
    for n in ctx.nodes:
        if renames:
            n.input[:] = [renames.get(i, i) for i in n.input]
        if n.domain not in ("", "ai.onnx") or n.op_type in _IMPURE or any(o in outputs for o in n.output) \
                or any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute):
            kept.append(n)
            continue
        key = (n.op_type, tuple(n.input), len(n.output),
               tuple(a.SerializeToString(deterministic=True) for a in n.attribute))
        first = seen.setdefault(key, n)
        if first is n:
            kept.append(n)
        else:
            renames.update(zip(n.output, first.output))
    if renames:
        ctx.nodes[:] = kept
        _rename(ctx.nodes, renames)  # subgraphs read outer tensors by name
    return renames


def _drop_unread(ctx: "LoweringContext", outputs: set[str]) -> None:
    """Initializers no node reads (in any subgraph) and no output is: a constant whose lowering left it out (an
    empty tensor ``torch.cat`` skips, as a new key/value cache's first layer is) stays out of the file."""
    read = set(outputs)
    stack = list(ctx.nodes)
    while stack:
        n = stack.pop()
        read.update(n.input)
        for a in n.attribute:
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                stack.extend(sub.node)
    for nm in [nm for nm in ctx.initializers if nm not in read]:
        del ctx.initializers[nm]
    if ctx._weight_list is not None:
        ctx._weight_list[:] = [(nm, t) for nm, t in ctx._weight_list if nm in read or nm not in ctx.weights]
        ctx.weights &= read


def _rename(nodes: Iterable[onnx.NodeProto], renames: dict[str, str]) -> None:
    """Rename tensors in ``nodes`` and in their subgraphs, which read outer tensors by name."""
    for n in nodes:
        n.input[:] = [renames.get(i, i) for i in n.input]
        n.output[:] = [renames.get(o, o) for o in n.output]
        for a in n.attribute:
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                _rename(sub.node, renames)


def _ir_version(opset: int) -> int:
    """The lowest IR version that carries this opset: older onnxruntime builds refuse newer IR versions."""
    return helper.find_min_ir_version_for([helper.make_opsetid("", opset)], ignore_unknown=True)


def _tensor_proto(t: torch.Tensor, name: str, data: bool = True) -> onnx.TensorProto:
    """``t`` (on the CPU) as an initializer; with ``data=False`` only its name, type and dims (the header that
    ``write`` completes with the bytes)."""
    if data and t.dtype not in BITS:
        return numpy_helper.from_array(t.contiguous().numpy(), name)
    tp = onnx.TensorProto()
    tp.name = name
    tp.data_type = DTYPE[t.dtype]
    tp.dims.extend(t.shape)
    if data:
        tp.raw_data = _raw(t).tobytes()
    return tp


def _tensor(t: torch.Tensor | Deferred) -> torch.Tensor:
    """``t`` on the CPU; a ``Deferred`` one computed (and not kept: the caller lets it go once written)."""
    return (t.compute() if isinstance(t, Deferred) else t).cpu()


def _raw(t: torch.Tensor) -> memoryview:
    """The bytes of ``t`` (contiguous, on the CPU) as ONNX's raw_data holds them: little-endian, bfloat16 and
    float8 as their bits; a view of the tensor's memory, no copy."""
    t = t.contiguous()
    if t.dtype in BITS:
        t = t.view(BITS[t.dtype])
    return memoryview(t.numpy().reshape(-1)).cast("B")


def _metadata(model: onnx.ModelProto, g: Graph, inits: dict[str, Value]) -> None:
    names = output_names(g)
    struct = _struct_json(g.output_struct, names, g.outputs)
    # the model's state behind each initializer (kind and every state_dict name), so ONNX import gives back the
    # model's state_dict keys; initializers not listed are constants of the lowering
    state = {nm: [c.kind, list(c.names)] for nm, c in inits.items() if c.kind in ("param", "buffer") and c.names}
    props = {"bridge.output_structure": json.dumps(struct),  # dict keys in the model's order
             "bridge.model_type": str(g.meta.get("model_type", "")),
             # the mode the model was traced in: bridge.verify runs the model in that mode
             "bridge.training": "true" if g.meta.get("training") else "false",
             "bridge.state": json.dumps(state, sort_keys=True)}
    for k, v in sorted(props.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v


def _struct_json(spec, names, outputs):
    kind = spec[0]
    if kind == "leaf":
        o = outputs[spec[1]]
        return {"output": names[spec[1]]} if isinstance(o, Value) else {"const": _jsonable(o)}
    if kind == "const":
        return {"const": _jsonable(spec[1])}
    if kind in ("tuple", "list"):
        return {kind: [_struct_json(s, names, outputs) for s in spec[1]]}
    if kind in ("namedtuple", "structseq"):
        return {"tuple": [_struct_json(s, names, outputs) for s in spec[2]], "type": spec[1].__name__}
    keys = spec[4] if kind == "pytree" else spec[2]  # a pytree-registered class (a cache): its children by name
    return {"dict": {str(k): _struct_json(s, names, outputs) for k, s in zip(keys, spec[3])},
            "type": spec[1].__name__}


def _jsonable(v):
    if isinstance(v, (int, float, str, bool)) or v is None:
        return v
    return repr(v)


# ---- checking and writing -------------------------------------------------------------------------
WEIGHT_BYTES = 1024  # a constant this big or bigger is a weight: its bytes go from the tensor to the file


def check(model: onnx.ModelProto, weights: Sequence[tuple[str, torch.Tensor]] = ()) -> None:
    """onnx.checker (full) and strict ONNX shape inference of ``model``. ``weights`` (``graph_to_onnx``'s, not in
    ``model``) take part by name, type and shape only: as graph inputs of a copy of the weight-less model, so no
    weight byte is copied or serialized to check them."""
    if weights:
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        probe.graph.input.extend(helper.make_tensor_value_info(nm, DTYPE[t.dtype], list(t.shape))
                                 for nm, t in weights)
        model = probe
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _key(message, field: str) -> bytes:
    """The protobuf key of a length-delimited field (wire type 2) of ``message``."""
    return _varint(message.DESCRIPTOR.fields_by_name[field].number << 3 | 2)


def _serialize(f, model: onnx.ModelProto, weights: Sequence[tuple[str, torch.Tensor]]) -> list[int]:
    """Write ``model`` with ``weights`` as initializers to ``f`` in one pass: the weight-less model is serialized
    once, and each weight's bytes go from its tensor's memory into the file as the ``raw_data`` of its
    initializer, which protobuf's encoding lets us frame by hand (a message is its fields in any order; the graph
    field comes last, with the weights after its other fields). Returns each weight's offset in the file."""
    head = onnx.ModelProto()
    head.CopyFrom(model)
    head.ClearField("graph")
    graph = model.graph.SerializeToString(deterministic=True)
    init, raw = _key(onnx.GraphProto, "initializer"), _key(onnx.TensorProto, "raw_data")
    frames = []
    for nm, t in weights:
        header = _tensor_proto(t, nm, data=False).SerializeToString(deterministic=True)
        n = t.numel() * t.element_size()
        body = header + raw + _varint(n)
        frames.append((init + _varint(len(body) + n) + body, t, n))
    f.write(head.SerializeToString(deterministic=True))
    f.write(_key(onnx.ModelProto, "graph") + _varint(len(graph) + sum(len(fr) + n for fr, _, n in frames)))
    f.write(graph)
    offsets = []
    for frame, t, _ in progress.track(frames, "writing weights", total=sum(n for _, _, n in frames),
                                      size=lambda fr: fr[2]):
        f.write(frame)
        offsets.append(f.tell())
        f.write(_raw(_tensor(t)))
    return offsets


def _reference(model: onnx.ModelProto, weights, location: str, offsets: Sequence[int]) -> None:
    """Append ``weights`` to ``model`` as initializers that refer to their bytes in file ``location`` (ONNX
    external data: location, offset, length), so the model returned holds the graph without a copy of them."""
    for (nm, t), offset in zip(weights, offsets):
        tp = _tensor_proto(t, nm, data=False)
        _point(tp, location, offset, t.numel() * t.element_size())
        model.graph.initializer.append(tp)


def _point(tp: onnx.TensorProto, location: str, offset: int, length: int) -> None:
    """Make ``tp`` refer to ``length`` bytes at ``offset`` of file ``location`` (ONNX external data)."""
    tp.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tp.external_data.add()
        entry.key, entry.value = k, v


def save(model: onnx.ModelProto, path: str | os.PathLike, *, external_data: bool | None = None) -> None:
    """Write atomically (``bridge.fileio``): a failure leaves the file that was there, or none. Over 2 GB (or when
    asked) the weights go to a file beside it named after their content (``_save_pair``); ``model`` itself is
    left as it was."""
    path = os.fspath(path)
    if external_data is None:
        external_data = sum(t.ByteSize() for t in _tensors(model.graph)) >= TWO_GB - 2**26
    if external_data:
        moved = []  # (tensor, its bytes): given back to the caller's model afterwards

        def fill(f):
            for t in _tensors(model.graph):
                raw = t.raw_data
                if t.data_location != TensorProto.EXTERNAL and len(raw) >= 1024:
                    moved.append((t, raw, t.HasField("data_location")))
                    t.ClearField("raw_data")
                    _point(t, _PENDING, f.tell(), len(raw))
                    f.write(raw)
            return model

        try:
            _save_pair(path, fill)
        finally:
            for t, raw, had_location in moved:
                t.ClearField("external_data")
                if had_location:
                    t.data_location = TensorProto.DEFAULT
                else:
                    t.ClearField("data_location")
                t.raw_data = raw
        return
    folder, base = _model_folder(path)
    old = _old_weights(folder, base)
    with fileio.atomic_write(path, "wb") as f:
        f.write(model.SerializeToString(deterministic=True))
    _remove_old_weights(path, folder, old)


# ---- a model and its weights file change together ----------------------------------------------------------
_PENDING = "<weights file: named after its content once written>"  # the location until then


def _data_template(base: str) -> str:
    """The weights file of model file ``base``: ``base.<16 hex digits of its sha256>.data`` (docs/onnx.md)."""
    return base.replace("{", "{{").replace("}", "}}") + ".{}.data"


def _ours(base: str) -> re.Pattern:
    return re.compile(re.escape(base) + r"\.[0-9a-f]{16}\.data")


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """The initializers of ``graph`` and of its nodes' subgraphs (If branches, Loop and Scan bodies)."""
    yield from graph.initializer
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("g"):
                yield from _tensors(a.g)
            for sub in a.graphs:
                yield from _tensors(sub)


def _locations(model: onnx.ModelProto) -> set[str]:
    return {e.value for t in _tensors(model.graph) if t.data_location == TensorProto.EXTERNAL
            for e in t.external_data if e.key == "location"}


def _model_folder(path: str) -> tuple[str, str]:
    """(folder, file name) of the model file ``path`` names (through a link, as ``fileio.atomic_write`` writes),
    the folder made if missing."""
    real = os.path.realpath(path) if os.path.islink(path) else path
    folder, base = os.path.split(os.path.abspath(real))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise fileio.write_error(path, e) from e
    return folder, base


def _old_weights(folder: str, base: str) -> set[str]:
    """The weights files of the model now at ``folder/base`` that bridge wrote for it (named by
    ``_data_template``): to remove once a new model has replaced it. The old model is read only when such files
    are there; one that cannot be read gives none."""
    ours = _ours(base)
    try:
        if not any(ours.fullmatch(n) for n in os.listdir(folder)):
            return set()
        old = onnx.load(os.path.join(folder, base), load_external_data=False)
    except Exception:  # noqa: BLE001 - no model there or one that cannot be read: nothing of ours to remove
        return set()
    return {loc for loc in _locations(old) if ours.fullmatch(loc)}


def _remove_old_weights(path: str, folder: str, names: Iterable[str]) -> None:
    """The last step of a write: the old model's weights files in ``folder`` go. The new model is in place, so a
    file that cannot be removed is a warning naming it, not a failed write."""
    for name in sorted(names):
        try:
            os.unlink(os.path.join(folder, name))
        except FileNotFoundError:
            pass
        except OSError as e:
            warnings.warn(f"{path!r} was written, but the weights file of the model it replaced, "
                          f"{os.path.join(folder, name)!r}, could not be removed ({e.strerror or e}): nothing uses "
                          "it any more, remove it by hand.", stacklevel=3)


def _save_pair(path: str, fill) -> onnx.ModelProto:
    """Write model file ``path`` and its weights file so that they change together; returns the model.

    ``fill(f)`` writes the weights to ``f`` (a ``fileio.HashedFile``), referring to them by location ``_PENDING``,
    and returns the model. The weights are renamed into place first, under their content's name
    (``_data_template``), beside the old ones; the model then atomically replaces the old model: that is the
    commit. Before it the old model and its weights are intact, after it the new ones are; a failure before it
    removes the new weights file (unless the old model uses the same one). The old model's weights file goes last,
    if bridge wrote it for this model and the new one does not use it."""
    folder, base = _model_folder(path)
    old = _old_weights(folder, base)
    like = next((os.path.join(folder, n) for n in sorted(old)), os.path.join(folder, base))
    with fileio.hashed_write(folder, _data_template(base), like=like) as data:
        model = fill(data)
    name = os.path.basename(data.name)
    used = _relocate(model, name)
    if not used and data.created:  # no tensor of 1 KiB or more: the model is one file after all
        with contextlib.suppress(OSError):
            os.unlink(data.name)
    try:
        with fileio.atomic_write(path, "wb") as f:
            f.write(model.SerializeToString(deterministic=True))
    except BaseException:
        if used and data.created:
            with contextlib.suppress(OSError):
                os.unlink(data.name)
        raise
    _remove_old_weights(path, folder, old - {name} if used else old)
    return model


def _relocate(model: onnx.ModelProto, name: str) -> bool:
    """Point the tensors written to the weights file at its final ``name``; False when there are none."""
    used = False
    for t in _tensors(model.graph):
        for e in t.external_data:
            if e.key == "location" and e.value == _PENDING:
                e.value, used = name, True
    return used


def export(g: Graph, path: str | os.PathLike | None = None, *, opset: int | None = None,
           external_data: bool | None = None, check_model: bool = True) -> onnx.ModelProto:
    """``g`` as an ONNX model, checked (``check_model``) and written atomically to ``path`` when given.

    ``g`` is lowered as it is (``bridge.to_onnx`` runs the inference passes first). The model is checked without
    its weights (``check``), and each weight's bytes go once, from its tensor to the file. ``external_data``:
    weights in ``NAME.onnx.<hash>.data`` beside the file, named after their content so the two files change
    together: always (True), never (False), or over 2 GB (None).

    Returns the model. Without ``path`` it holds every weight. With ``path`` its weights of ``WEIGHT_BYTES`` or
    more refer to where their bytes lie in the files written (ONNX external data, relative to the model's
    folder: in the ``.onnx`` itself, or in its weights file), so the export never holds a second copy of them;
    ``onnx.load(path)`` reads the model with its weights.
    """
    weight_bytes = sum(c.spec.nbytes() or 0 for c in g.constants if c._uses)  # from the specs: nothing computed
    external = external_data or (external_data is None and weight_bytes >= TWO_GB - 2**26)
    if external and path is None:
        raise BridgeError(f"the model's weights take {weight_bytes / 2**30:.2f} GiB: over 2 GB an ONNX model "
                          "needs a path, its weights go to a file beside it (NAME.onnx.<hash>.data)")
    weights: list[tuple[str, torch.Tensor]] = []
    proto = graph_to_onnx(g, opset=opset, weights=weights)  # steps of to_onnx's progress line on a terminal
    if check_model:
        progress.step("checking")
        check(proto, weights)  # before anything is written: a model that fails leaves the old file
    if path is None:
        proto.graph.initializer.extend(_tensor_proto(_tensor(t), nm) for nm, t in weights)
        return proto
    path = os.fspath(path)
    if external:
        def fill(f):
            _reference(proto, weights, _PENDING, _stream(f, weights))
            return proto
        return _save_pair(path, fill)
    folder, base = _model_folder(path)
    old = _old_weights(folder, base)
    with fileio.atomic_write(path, "wb") as f:
        offsets = _serialize(f, proto, weights)
    _remove_old_weights(path, folder, old)
    _reference(proto, weights, base, offsets)
    return proto


def _stream(f, weights) -> list[int]:
    """Write each weight's bytes to ``f``, one after the other; returns their offsets."""
    offsets = []
    for _, t in progress.track(weights, "writing weights", total=sum(t.numel() * t.element_size() for _, t in weights),
                               size=lambda w: w[1].numel() * w[1].element_size()):
        offsets.append(f.tell())
        f.write(_raw(_tensor(t)))
    return offsets
