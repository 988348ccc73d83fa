"""onnxruntime: sessions, output comparison and divergence localization for ``bridge.verify`` (eager PyTorch
against onnxruntime on the same inputs, naming the first node that diverges when they disagree)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import BridgeError, OnnxError
from ..ir import structure


def load_onnx(path_or_proto: Any):
    """An ``onnx.ModelProto`` from a path, bytes or a proto; a corrupt or truncated file raises ``OnnxError``."""
    import onnx

    if isinstance(path_or_proto, onnx.ModelProto):
        return path_or_proto
    try:
        if isinstance(path_or_proto, (bytes, bytearray)):
            return onnx.load_from_string(bytes(path_or_proto))
        path = os.fspath(path_or_proto)
        if not os.path.exists(path):
            raise OnnxError(f"ONNX file {path} does not exist")
        model = onnx.load(path, load_external_data=True)
    except OnnxError:
        raise
    except Exception as e:  # noqa: BLE001 - protobuf and onnx raise many kinds
        raise OnnxError(f"{path_or_proto} is not a readable ONNX model (corrupt or truncated?): "
                        f"{type(e).__name__}: {e}. Re-export it, or check the download/copy.") from e
    if not model.graph.node and not model.graph.output:
        raise OnnxError(f"{path_or_proto} holds no ONNX graph (empty or truncated file)")
    return model


def session(model_or_path: Any, providers=None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    providers = providers or ["CPUExecutionProvider"]
    if isinstance(model_or_path, (str, os.PathLike)):
        load_onnx(model_or_path)  # typed error for a bad file before onnxruntime's own
        return ort.InferenceSession(os.fspath(model_or_path), opts, providers=providers)
    model = load_onnx(model_or_path)
    return ort.InferenceSession(model.SerializeToString(), opts, providers=providers)


def _np(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
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
    proto = load_onnx(onnx_model)
    sess = session(proto)
    feeds = _feeds(sess, names, examples)
    got = sess.run(None, feeds)
    if len(got) != len(ref_leaves):
        raise BridgeError(f"the ONNX model has {len(got)} outputs, the model returns {len(ref_leaves)} tensors")
    outs = [_compare(meta.name, g_arr, _np(r), atol, rtol)
            for meta, g_arr, r in zip(sess.get_outputs(), got, ref_leaves)]
    return VerifyReport(outs, atol, rtol)


def _feeds(sess, names: list[str], examples: list[torch.Tensor]) -> dict:
    inputs = [i.name for i in sess.get_inputs()]
    by_name = dict(zip(names, examples))
    if all(n in by_name for n in inputs):
        return {n: _np(by_name[n]) for n in inputs}
    if len(inputs) == len(examples):  # a file from another exporter: inputs in order
        return {n: _np(t) for n, t in zip(inputs, examples)}
    raise BridgeError(f"the ONNX model takes inputs {inputs}; the model's tensor inputs are {names}")


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
    inputs ``args``/``kwargs`` (whose tensors are ``examples``, named ``names``); None when none does."""
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
    got = dict(zip(out_names, sess.run(None, feeds)))
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


def run_all(g, args, kwargs) -> dict[int, Any]:
    """Every value of the graph on these inputs (a debugging interpreter, not the execution path)."""
    from ..ir.graph import map_values
    from ..ops import registry

    vals: dict[int, Any] = {}
    leaves, _ = structure.flatten((args, kwargs), lambda o: isinstance(o, torch.Tensor))
    for v, t in zip(g.inputs, leaves):
        vals[id(v)] = t
    for c in g.constants:
        vals[id(c)] = c.const
    with torch.no_grad():
        for node in g.nodes:
            res = registry.get(node.op).impl(**map_values(node.args, lambda v: vals[id(v)]))
            for i, x in structure.extract(node.out_struct, res).items():
                vals[id(node.outputs[i])] = x
    return vals
