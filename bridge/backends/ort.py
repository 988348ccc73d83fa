"""onnxruntime: sessions, output comparison and divergence localization for ``bridge.verify`` (eager PyTorch
against onnxruntime on the same inputs, naming the first node that diverges when they disagree)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import InputError, OnnxError
from ..ir import structure


def load_onnx(path_or_proto: Any, *, base_dir: str | os.PathLike | None = None):
    """An ``onnx.ModelProto`` from a path, bytes or a proto; a corrupt or truncated file raises ``OnnxError``.

    External data is read by bridge, never by onnx (whose checks vary by version), and only from inside one
    folder: ``base_dir`` when given, else the model file's own folder. Bytes and a proto have no folder: their
    external data is refused unless ``base_dir`` is given (else a model handed over as bytes could pull any
    readable file into its weights). A proto given is not changed: external data is read into a copy.
    """
    import onnx

    folder = None if base_dir is None else os.fspath(base_dir)
    if isinstance(path_or_proto, onnx.ModelProto):
        model, source = path_or_proto, "<ModelProto>"
    elif not isinstance(path_or_proto, (bytes, bytearray, str, os.PathLike)):
        raise OnnxError(f"expected an ONNX file's path, its bytes or an onnx.ModelProto, got "
                        f"{type(path_or_proto).__name__}")
    else:
        is_bytes = isinstance(path_or_proto, (bytes, bytearray))
        source = f"<bytes> ({len(path_or_proto)} bytes)" if is_bytes else os.fspath(path_or_proto)
        try:
            if is_bytes:
                model = onnx.load_from_string(bytes(path_or_proto))
            else:
                if not os.path.exists(source):
                    raise OnnxError(f"ONNX file {source} does not exist")
                model = onnx.load(source, load_external_data=False)
                folder = folder if folder is not None else os.path.dirname(os.path.abspath(source))
        except OnnxError:
            raise
        except Exception as e:  # noqa: BLE001 - protobuf and onnx raise many kinds
            raise OnnxError(f"{source} is not a readable ONNX model (corrupt or truncated?): "
                            f"{type(e).__name__}: {e}. Re-export it, or check the download/copy.") from e
    if not model.graph.node and not model.graph.output:
        raise OnnxError(f"{source} holds no ONNX graph (empty or truncated file)")
    external = [(what, t) for what, t in _tensors(model.graph) if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        if folder is None:
            what, t = external[0]
            raise OnnxError(f"{source}: {what} keeps its data in an external file "
                            f"({_external_info(t, what, source).get('location')!r}; {len(external)} tensor(s) in "
                            "all). Bytes and a ModelProto have no folder, so bridge reads no file for them: pass "
                            "base_dir= the folder that holds the data (reads stay inside it), or load the model "
                            "from its path (bridge.to_onnx given a path returns a model whose weights refer to the "
                            "file it wrote: pass that path).")
        if model is path_or_proto:
            model = onnx.ModelProto()
            model.CopyFrom(path_or_proto)
            external = [(what, t) for what, t in _tensors(model.graph)
                        if t.data_location == onnx.TensorProto.EXTERNAL]
        _read_external(external, folder, source)
    return model


def check_file(path: str | os.PathLike) -> None:
    """What ``load_onnx`` checks of a file (readable, a graph, external data inside its folder and whole),
    without reading the weights into memory: for handing the path itself to onnxruntime (a model over 2 GB cannot
    be handed over as one serialized proto)."""
    import onnx

    source = os.fspath(path)
    if not os.path.exists(source):
        raise OnnxError(f"ONNX file {source} does not exist")
    try:
        model = onnx.load(source, load_external_data=False)
    except Exception:  # noqa: BLE001 - a file onnx cannot parse: load_onnx says what is wrong, typed
        load_onnx(path)
        raise
    if not model.graph.node and not model.graph.output:
        raise OnnxError(f"{source} holds no ONNX graph (empty or truncated file)")
    external = [(what, t) for what, t in _tensors(model.graph) if t.data_location == onnx.TensorProto.EXTERNAL]
    _read_external(external, os.path.dirname(os.path.abspath(source)), source, read=False)


_HOLDS_TENSORS = frozenset({0, 4, 5, 9, 10, 11, 12})  # AttributeProto: UNDEFINED, TENSOR(S), GRAPH(S), SPARSE_TENSOR(S)


def _tensors(graph, where: str = ""):
    """(description, TensorProto) of every tensor a graph holds: initializers (dense and sparse) and node
    attributes, subgraphs included."""
    for t in graph.initializer:
        yield f"initializer {t.name!r}{where}", t
    for s in graph.sparse_initializer:
        yield f"sparse initializer {s.values.name!r} (values){where}", s.values
        yield f"sparse initializer {s.values.name!r} (indices){where}", s.indices
    for node in graph.node:
        node_name = node.name or (node.output[0] if node.output else node.op_type)
        for a in node.attribute:
            if a.type not in _HOLDS_TENSORS:  # ints, floats, strings: nothing to look at (and no name to format)
                continue
            what = f"attribute {a.name!r} of node {node_name!r}{where}"
            if a.HasField("t"):
                yield what, a.t
            yield from ((what, t) for t in a.tensors)
            if a.HasField("sparse_tensor"):
                yield what, a.sparse_tensor.values
                yield what, a.sparse_tensor.indices
            for s in a.sparse_tensors:
                yield what, s.values
                yield what, s.indices
            sub = f" (in a subgraph of node {node_name!r})"
            if a.HasField("g"):
                yield from _tensors(a.g, sub)
            for g in a.graphs:
                yield from _tensors(g, sub)


def _external_info(t, what: str, source: str) -> dict:
    """A tensor's external-data entries (location, offset, length) with offset and length as ints >= 0."""
    info = {e.key: e.value for e in t.external_data}
    for key in ("offset", "length"):
        if key in info:
            try:
                info[key] = int(info[key])
            except ValueError:
                raise OnnxError(f"{source}: {what} has external-data {key} {info[key]!r}, not an integer. The file "
                                "is corrupt: re-export it.") from None
            if info[key] < 0:
                raise OnnxError(f"{source}: {what} has a negative external-data {key} ({info[key]}). The file is "
                                "corrupt: re-export it.")
    return info


def _read_external(tensors: list, folder: str, source: str, *, read: bool = True) -> None:
    """Read each tensor's external data into ``raw_data``, from regular files inside ``folder`` only (with
    ``read=False``: only check that it could be, for a reader that opens the files itself, as onnxruntime does).

    A location must be relative and, symbolic links resolved, stay inside the folder; offset + length must lie
    inside the file, and the tensors reading one file may not read more than it holds in all (overlapping
    regions would let a small file fill any amount of memory). A file is opened without blocking on a FIFO and
    checked to be a regular file on the opened descriptor, so a device or a pipe is refused, not read forever."""
    import stat

    from onnx import TensorProto

    root = os.path.realpath(folder)
    opened: dict[str, list] = {}  # real path -> [file, its size, bytes read from it so far]
    try:
        for what, t in tensors:
            info = _external_info(t, what, source)
            location = info.get("location", "")
            if not location:
                raise OnnxError(f"{source}: {what} is marked as external data but names no location. The file is "
                                "corrupt: re-export it.")
            if os.path.isabs(location) or os.path.splitdrive(location)[0] or location.startswith(("/", "\\")):
                raise OnnxError(f"{source}: {what} gives an absolute external-data location ({location!r}); "
                                f"bridge reads external data only from inside {folder}. Move the data beside the "
                                "model and give its relative name.")
            path = os.path.realpath(os.path.join(root, location))
            if os.path.commonpath([root, path]) != root or path == root:
                raise OnnxError(f"{source}: {what} has external-data location {location!r}, which resolves to "
                                f"{path}, outside {folder} (through '..' or a symbolic link). bridge reads external "
                                "data only from inside the model's folder: move the data there.")
            entry = opened.get(path)
            if entry is None:
                try:
                    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
                except OSError as e:
                    raise OnnxError(f"{source}: {what} keeps its data in {location!r}, which cannot be opened in "
                                    f"{folder}: {e.strerror}. Copy the data file beside the model.") from None
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    os.close(fd)
                    raise OnnxError(f"{source}: {what} keeps its data in {location!r}, which is not a regular file "
                                    "(a directory, device or pipe). The file is corrupt or tampered with.")
                entry = opened[path] = [os.fdopen(fd, "rb"), st.st_size, 0]
            f, size, used = entry
            offset = info.get("offset", 0)
            length = info.get("length", size - offset)
            if offset + length > size or length < 0:
                raise OnnxError(f"{source}: {what} asks for bytes {offset}..{offset + max(length, 0)} of "
                                f"{location!r}, which holds {size} bytes. The data file is truncated or belongs to "
                                "another model: copy it again or re-export.")
            if used + length > size:
                raise OnnxError(f"{source}: {what}: the tensors stored in {location!r} ask for more bytes in all "
                                f"({used + length}) than it holds ({size}): their regions overlap. The file is "
                                "corrupt or tampered with: re-export it.")
            entry[2] = used + length
            if not read:
                continue
            f.seek(offset)
            data = f.read(length)
            if len(data) != length:
                raise OnnxError(f"{source}: {what}: reading {length} bytes of {location!r} gave {len(data)} "
                                "(the file changed while reading?)")
            t.raw_data = data
            del t.external_data[:]
            t.data_location = TensorProto.DEFAULT
    finally:
        for f, *_ in opened.values():
            f.close()


def session(model_or_path: Any, providers=None, *, source: str | None = None):
    """An onnxruntime ``InferenceSession`` (CPU unless ``providers``); a model onnxruntime refuses to load raises
    ``OnnxError`` with its reason, naming ``source`` (default: the path, or 'the ONNX model')."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # its errors come back as exceptions, said once by bridge
    providers = providers or ["CPUExecutionProvider"]
    source = source or _source(model_or_path)
    if isinstance(model_or_path, (str, os.PathLike)):
        check_file(model_or_path)  # typed error for a bad file before onnxruntime's own
        model: Any = os.fspath(model_or_path)
    else:
        model = load_onnx(model_or_path).SerializeToString()
    try:
        return ort.InferenceSession(model, opts, providers=providers)
    except Exception as e:  # noqa: BLE001 - onnxruntime's own exception types (Fail, InvalidGraph, ...)
        raise OnnxError(f"onnxruntime cannot load {source}: {_ort_message(e)}. Check that the file comes from a "
                        "supported exporter and opset (bridge.backends.onnx.max_opset()), or re-export it.") from None


def _source(model_or_path: Any) -> str:
    """How messages name an ONNX model: its path, or 'the ONNX model' for bytes and protos."""
    return os.fspath(model_or_path) if isinstance(model_or_path, (str, os.PathLike)) else "the ONNX model"


def _ort_message(e: BaseException) -> str:
    """onnxruntime's message without its ``[ONNXRuntimeError] : 2 : INVALID_ARGUMENT :`` prefix and source
    locations, on one line."""
    import re

    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", str(e).strip())
    text = re.sub(r"/\S*onnxruntime\S*:\d+ [^.]*?(was false\.)? ", "", text)  # C++ file:line and assertion
    return " ".join(text.split())


_ORT_TYPE = {torch.float32: "float", torch.float64: "double", torch.float16: "float16", torch.bfloat16: "bfloat16",
             torch.int64: "int64", torch.int32: "int32", torch.int16: "int16", torch.int8: "int8",
             torch.uint8: "uint8", torch.bool: "bool", torch.complex64: "complex64", torch.complex128: "complex128"}


def _describe(shape, dtype: str) -> str:
    return f"{dtype}[{', '.join('?' if d is None else str(d) for d in shape)}]"


def check_inputs(inputs: list[tuple[str, list, str]], names: list[str], examples: list[torch.Tensor],
                 source: str = "the ONNX model") -> dict[str, torch.Tensor]:
    """Each ONNX input name with the example to feed it: ``examples`` (the model's tensor inputs, named ``names``)
    checked against ``inputs`` (the file's ``(name, shape, element type)``: a dim an int, a symbol or None; a type as
    onnxruntime writes it, ``tensor(float)``): the same count, matching names (or, for a file from another
    exporter, the same order), rank, element type, static dims, and one size per symbolic dim. A mismatch raises
    ``InputError`` naming the input, what the file expects and what was given, before onnxruntime runs."""
    # a complex example is fed as the file holds it: float [..., 2] (real, imaginary)
    examples = [torch.view_as_real(t.resolve_conj()) if t.is_complex() else t for t in examples]
    file_names = [n for n, _, _ in inputs]
    listing = ", ".join(f"{n}: {_describe(shape, t.removeprefix('tensor(').removesuffix(')'))}"
                        for n, shape, t in inputs)
    if len(inputs) != len(examples):
        raise InputError(f"{source} takes {len(inputs)} input(s) ({listing}), but the model was given "
                         f"{len(examples)} tensor input(s) ({', '.join(names) or 'none'}). Verify the model against a "
                         "file exported from it, with the inputs it was exported with.")
    order = file_names if set(file_names) == set(names) else None  # else: another exporter's names, in order
    by_name = dict(zip(names, examples))
    sizes: dict[str, tuple[str, int]] = {}  # symbolic dim -> (first input that sized it, its size)
    for i, (name, shape, otype) in enumerate(inputs):
        t = by_name[name] if order is not None else examples[i]
        given_name = name if order is not None else names[i]
        want = otype.removeprefix("tensor(").removesuffix(")")
        got = _describe(list(t.shape), _ORT_TYPE.get(t.dtype, str(t.dtype).replace("torch.", "")))
        head = (f"input {name!r} of {source} is {_describe(shape, want)}, but "
                + (f"the model's input {given_name!r}" if given_name != name else "it") + f" was given {got}")
        if t.dtype in _ORT_TYPE and _ORT_TYPE[t.dtype] != want:
            raise InputError(f"{head}: another element type. Give inputs of the dtype the file was exported with.")
        if t.dim() != len(shape):
            raise InputError(f"{head}: rank {t.dim()}, not {len(shape)}. Give inputs of the shape the file was "
                             "exported with.")
        for d, (want_d, got_d) in enumerate(zip(shape, t.shape)):
            if isinstance(want_d, int) and want_d >= 0 and want_d != got_d:
                raise InputError(f"{head}: dim {d} is fixed at {want_d} in the file. Give that size, or re-export "
                                 f"with the dim dynamic (dynamic={{{name!r}: {{{d}: 'dim{d}'}}}}, or --dynamic "
                                 f"{name}:{d} on the command line).")
            if isinstance(want_d, str) and want_d:
                first, size = sizes.setdefault(want_d, (name, int(got_d)))
                if size != got_d:
                    raise InputError(f"{head}: dim {d} is the symbolic dim {want_d!r}, which input {first!r} "
                                     f"gives size {size}. Inputs that share a symbolic dim need the same size.")
    return {name: by_name[name] for name in file_names} if order is not None else dict(zip(file_names, examples))


def _session_inputs(sess) -> list[tuple[str, list, str]]:
    return [(i.name, list(i.shape), i.type) for i in sess.get_inputs()]


def header(onnx_model: Any):
    """An ONNX model (a path, bytes or ``ModelProto``) without its external weights: its inputs, outputs and
    metadata, read once for the checks made before anything runs on it."""
    import onnx

    if isinstance(onnx_model, (str, os.PathLike)):
        try:
            return onnx.load(os.fspath(onnx_model), load_external_data=False)
        except Exception:  # noqa: BLE001 - a file onnx cannot parse: load_onnx says what is wrong, typed
            load_onnx(onnx_model)
            raise
    return onnx_model if isinstance(onnx_model, onnx.ModelProto) else load_onnx(onnx_model)


def file_inputs(onnx_model: Any) -> list[tuple[str, list, str]]:
    """``(name, shape, element type)`` of an ONNX model's inputs (a path, bytes or ``ModelProto``; see ``header``),
    as ``check_inputs`` takes them: for checking inputs before anything runs on them."""
    import onnx

    model = header(onnx_model)
    inits = {t.name for t in model.graph.initializer}
    out = []
    for vi in model.graph.input:
        if vi.name in inits:  # an old-style file lists its weights as inputs too
            continue
        tt = vi.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]
        out.append((vi.name, shape, f"tensor({onnx.TensorProto.DataType.Name(tt.elem_type).lower()})"))
    return out


def run(sess, feeds: dict, source: str = "the ONNX model") -> list:
    """``sess.run`` on ``feeds``; onnxruntime's own failure (a node that cannot run on these inputs) raises
    ``OnnxError`` naming the node onnxruntime names, or ``InputError`` for inputs it refuses."""
    import re

    import onnxruntime as ort

    opts = ort.RunOptions()
    opts.log_severity_level = 4  # said once, by the exception below
    try:
        return sess.run(None, feeds, opts)
    except Exception as e:  # noqa: BLE001 - onnxruntime's own exception types (Fail, InvalidArgument, ...)
        msg = _ort_message(e)
        node = re.search(r"running (\S+) node\. Name:'([^']*)'(?: Status Message: )?(.*)", msg)
        if node:
            raise OnnxError(f"onnxruntime failed in {source} at node {node.group(2)!r} ({node.group(1)}): "
                            f"{node.group(3) or msg}. The inputs fit the file's declared inputs; the node's own "
                            "constraints (a symbolic dim two inputs must share, a size the export fixed) do not "
                            "hold for them. Give inputs like those the file was exported with.") from None
        cls = InputError if type(e).__name__ == "InvalidArgument" else OnnxError
        raise cls(f"onnxruntime cannot run {source} on these inputs: {msg}.") from None


def _np(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    if t.is_complex():  # an ONNX file holds a complex tensor as float [..., 2] (real, imaginary)
        t = torch.view_as_real(t.resolve_conj())
    return t.numpy() if t.dtype != torch.bfloat16 else t.float().numpy()


@dataclass
class OutputDiff:
    name: str
    shape: tuple
    max_abs: float
    max_rel: float
    ok: bool


@dataclass
class VerifyReport:
    outputs: list[OutputDiff]
    atol: float
    rtol: float
    first_divergence: dict | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outputs)

    @property
    def max_abs(self) -> float:
        return max((o.max_abs for o in self.outputs), default=0.0)

    def __str__(self) -> str:
        lines = [f"{'OK' if self.ok else 'MISMATCH'}: eager PyTorch vs onnxruntime "
                 f"(atol {self.atol:g} x output scale, rtol {self.rtol:g})"]
        for o in self.outputs:
            lines.append(f"  {o.name:24s} {str(list(o.shape)):20s} max abs {o.max_abs:.3e}  max rel {o.max_rel:.3e}"
                         f"  {'ok' if o.ok else 'DIFFERS'}")
        if self.first_divergence:
            d = self.first_divergence
            lines.append(f"first diverging node: {d['node']} ({d['scope']}) op {d['op']}"
                         f"{' at ' + d['source'] if d.get('source') else ''}: max abs {d['max_abs']:.3e}")
        lines.extend(self.notes)
        return "\n".join(lines)


def compare_outputs(onnx_model: Any, names: list[str], examples: list[torch.Tensor], ref_leaves: list,
                    *, atol: float = 1e-5, rtol: float = 1e-4) -> VerifyReport:
    """Run ``onnx_model`` in onnxruntime on ``examples`` (the model's tensor inputs, named ``names``) and compare
    each output with ``ref_leaves`` (the reference outputs, flat). Tolerance per output:
    ``|a - b| <= atol * max(1, max|ref|) + rtol * |ref|``."""
    source = _source(onnx_model)
    sess = session(onnx_model, source=source)  # a path goes to onnxruntime as a path: it may be over 2 GB
    feeds = _feeds(sess, names, examples, source)
    if len(sess.get_outputs()) != len(ref_leaves):
        raise OnnxError(f"{source} has {len(sess.get_outputs())} output(s) "
                        f"({', '.join(o.name for o in sess.get_outputs())}), but the model returns "
                        f"{len(ref_leaves)} tensor(s): it is not an export of this model.")
    got = run(sess, feeds, source)
    outs = [_compare(meta.name, g_arr, _np(r), atol, rtol)
            for meta, g_arr, r in zip(sess.get_outputs(), got, ref_leaves)]
    return VerifyReport(outs, atol, rtol)


def _feeds(sess, names: list[str], examples: list[torch.Tensor], source: str = "the ONNX model") -> dict:
    """The session's feeds: each example under its ONNX input, checked first (``check_inputs``)."""
    return {n: _np(t) for n, t in check_inputs(_session_inputs(sess), names, examples, source).items()}


def _compare(name, got: np.ndarray, ref: np.ndarray, atol: float, rtol: float) -> OutputDiff:
    if got.shape != ref.shape:
        return OutputDiff(name, tuple(ref.shape), float("inf"), float("inf"), False)
    if ref.dtype == np.bool_ or got.dtype == np.bool_:
        bad = float(np.sum(got != ref))
        return OutputDiff(name, tuple(ref.shape), bad, bad, bad == 0)
    g, r = got.astype(np.float64), ref.astype(np.float64)
    diff = np.abs(g - r)
    scale = max(1.0, float(np.abs(r).max())) if r.size else 1.0
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = float((diff / np.maximum(np.abs(r), 1e-12)).max()) if diff.size else 0.0
    ok = bool(np.all(diff <= atol * scale + rtol * np.abs(r))) and not np.isnan(g).any() == (not np.isnan(r).any())
    return OutputDiff(name, tuple(ref.shape), max_abs, max_rel, ok)


def first_divergence(g, names: list[str], examples: list[torch.Tensor], args: tuple, kwargs: dict, *,
                     atol: float, rtol: float) -> dict | None:
    """First node of ``g`` (in execution order) whose onnxruntime value differs from its torch value, on the
    inputs ``args``/``kwargs`` (whose tensors are ``examples``, named ``names``); None when none does.
    A mismatch inside a control-flow region (a branch, a loop or scan body) is reported at its region node: a
    value inside a region has one value per branch taken or per step, and a subgraph's values cannot be outputs
    of the ONNX graph."""
    from .onnx import _value_info

    values = run_all(g, args, kwargs)
    proto, onnx_names = _export_with_names(g)
    extra = []
    for node in g.nodes:
        for v in node.outputs:
            nm = onnx_names.get(id(v))
            if nm and v.is_tensor and id(v) in values:
                extra.append((node, v, nm))
    existing = {o.name for o in proto.graph.output}
    for node, v, nm in extra:
        if nm not in existing:
            proto.graph.output.append(_value_info(nm, v.spec))
            existing.add(nm)
    sess = session(proto)
    feeds = _feeds(sess, names, examples)
    out_names = [o.name for o in sess.get_outputs()]
    got = dict(zip(out_names, run(sess, feeds)))
    for node, v, nm in extra:
        d = _compare(nm, got[nm], _np(values[id(v)]), atol, rtol)
        if not d.ok:
            return {"node": f"%{v.name}", "op": node.op, "scope": str(node.scope), "source": node.source,
                    "max_abs": d.max_abs}
    return None


def _export_with_names(g):
    from .onnx import graph_to_onnx

    names: dict[int, str] = {}
    return graph_to_onnx(g, value_names=names), names


def run_all(g, args, kwargs, *, times: dict[int, float] | None = None, repeat: int = 1) -> dict[int, Any]:
    """Every value of the graph on these inputs (a debugging interpreter, not the execution path). ``times``: a
    dict that gets each node's seconds (``id(node)`` -> the fastest of ``repeat`` runs of its op)."""
    import time

    from ..ir.graph import map_values
    from ..ops import registry

    vals: dict[int, Any] = {}
    leaves, _ = structure.flatten((args, kwargs), lambda o: isinstance(o, torch.Tensor))
    for v, t in zip(g.inputs, leaves):
        vals[id(v)] = t
    for c in g.constants:  # timed runs write into copies of the buffers (running statistics), never the model's
        vals[id(c)] = c.const.clone() if times is not None and c.kind != "param" else c.const
    with torch.no_grad(), torch.random.fork_rng():
        for node in g.nodes:
            opdef = registry.get(node.op)
            impl, node_args = opdef.impl, map_values(node.args, lambda v: vals[id(v)])
            best = float("inf")
            for _ in range(repeat if times is not None and not opdef.has_effect(node) else 1):
                t0 = time.perf_counter()
                res = impl(**node_args)
                best = min(best, time.perf_counter() - t0)
            if times is not None:
                times[id(node)] = best
            for i, x in structure.extract(node.out_struct, res).items():
                vals[id(node.outputs[i])] = x
    return vals
