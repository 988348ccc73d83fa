"""The verbs that take what a user has: a model, an ONNX file, a torch function.

This is the top layer (beside ``trace.py`` and the CLI): each verb traces a model (``bridge.trace``) or imports an
ONNX file (``bridge.from_onnx``) here, then hands Graphs down to the backends, passes, analysis and views, which
take Graphs only. ``bridge.summary``, ``bridge.to_onnx``, ... are these functions.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from .errors import BridgeError
from .ir.graph import Graph
from .trace import trace

__all__ = ["as_graph", "to_onnx", "from_onnx", "verify", "summary", "topology", "diff", "report", "draw",
           "rewrite", "replace_module"]


def as_graph(model: Any, args: Any = (), kwargs: dict | None = None, **trace_options) -> tuple[Graph, Any]:
    """(Graph, the nn.Module or None) from a Graph, an nn.Module traced on ``args``, or an ONNX file/proto."""
    if isinstance(model, Graph):
        return model, None
    if isinstance(model, (nn.Module, torch.export.ExportedProgram)):
        return trace(model, args, kwargs, **trace_options), model if isinstance(model, nn.Module) else None
    if isinstance(model, (str, os.PathLike, bytes)) or type(model).__name__ == "ModelProto":
        return from_onnx(model), None
    raise BridgeError(f"expected an nn.Module, a bridge Graph or an ONNX file/ModelProto, got {type(model).__name__}")


# ---- ONNX ---------------------------------------------------------------------------------------------
def to_onnx(model_or_graph: Any, path: str | os.PathLike | None = None, *, args: Any = (), kwargs: dict | None = None,
            opset: int | None = None, dynamic: Any = None, optimize: bool | Sequence[str] = True,
            external_data: bool | None = None, check_model: bool = True):
    """Export a model (traced on ``args``) or a bridge Graph to ONNX; write it to ``path`` when given. Returns the
    ``onnx.ModelProto``.

    ``optimize``: True for every inference optimization (batchnorm folding, constant folding, dropout and
    identity removal), False for none, or a list of pass names. ``external_data``: weights in
    ``NAME.onnx.data`` beside the file: always (True), never (False), or over 2 GB (None, the default; the
    weights are streamed there while lowering). Every write is atomic. A Graph given is not changed.
    """
    from .backends import onnx as backend
    from .passes import inference_passes, run_passes

    with backend.gc_paused():
        own = not isinstance(model_or_graph, Graph)
        g = trace(model_or_graph, args, kwargs, dynamic=dynamic) if own else model_or_graph
        names = inference_passes() if optimize is True else ([] if not optimize else list(optimize))
        if names:
            g = run_passes(g, names, copy=not own)  # the caller's graph stays as it is
        return backend.export(g, path, opset=opset, external_data=external_data, check_model=check_model)


def from_onnx(model: Any) -> Graph:
    """Import an ONNX model (path, bytes or ``onnx.ModelProto``) as a bridge Graph; see
    ``bridge.frontends.onnx.from_onnx``."""
    from .frontends.onnx import from_onnx as import_onnx

    return import_onnx(model)


def verify(model: nn.Module, onnx_model: Any, args: Any = (), kwargs: dict | None = None, *,
           atol: float = 1e-5, rtol: float = 1e-4, localize: bool = True):
    """Run ``model`` eagerly and ``onnx_model`` in onnxruntime on the same inputs and compare every output.

    Tolerance per output: ``|a - b| <= atol * max(1, max|ref|) + rtol * |ref|``. On mismatch (and with
    ``localize``), bridge's own export of the model is run with every intermediate value as an output to
    name the first node whose value diverges. Returns a ``VerifyReport``.
    """
    from .backends import ort
    from .frontends.signature import InputBinding
    from .ir import structure

    if not isinstance(args, tuple):
        args = (args,)
    kwargs = dict(kwargs or {})
    with torch.no_grad():
        ref = model(*args, **kwargs)
    ref_leaves, _ = structure.flatten(ref, lambda o: isinstance(o, torch.Tensor))
    binding = InputBinding(model, args, kwargs)
    rep = ort.compare_outputs(onnx_model, binding.names, binding.examples, ref_leaves, atol=atol, rtol=rtol)
    if not rep.ok and localize:
        try:
            g = trace(model, args, kwargs)
            rep.first_divergence = ort.first_divergence(g, binding.names, binding.examples, args, kwargs,
                                                        atol=atol, rtol=rtol)
        except Exception as e:  # noqa: BLE001 - localization is best effort; the comparison stands
            rep.notes.append(f"(could not localize the divergence: {type(e).__name__}: {e})")
    return rep


# ---- analysis -------------------------------------------------------------------------------------------
def summary(model: Any, args: Any = (), kwargs: dict | None = None, *, depth: int | None = 3, by: str = "module",
            dims: dict[str, int] | None = None, **trace_options):
    """Per-layer table of a model: output shapes and dtypes, parameters, FLOPs, MACs, activation bytes, and
    totals with parameter memory and peak activation memory.

    ``model``: an ``nn.Module`` (traced on ``args``/``kwargs``; ``trace_options`` go to ``bridge.trace``), a
    bridge ``Graph``, or an ONNX file path / ``onnx.ModelProto``. ``depth``: how deep the module hierarchy
    goes (None: all the way; as torchinfo's ``depth``). ``by="node"``: one row per node instead.
    ``dims`` sizes symbolic dims (default: the example the graph was traced with).

    What each number means: docs/analysis.md.
    """
    from .analysis.summary import summarize

    g, module = as_graph(model, args, kwargs, **trace_options)
    return summarize(g, module=module, depth=depth, by=by, dims=dims)


def topology(model: Any, args: Any = (), kwargs: dict | None = None):
    """Topology of a Graph (or of a model traced on ``args``, or an ONNX file): chain or DAG, branch and merge
    points, skip connections, depth and width; see ``bridge.analysis.topology``."""
    from .analysis.topology import topology as graph_topology

    return graph_topology(as_graph(model, args, kwargs)[0])


def diff(a: Any, b: Any, args: Any = None, kwargs: dict | None = None, *, atol: float = 1e-5, rtol: float = 1e-4,
         **trace_options):
    """Structural (and, given ``args``, numeric) difference of ``a`` and ``b``: nn.Modules (traced on
    ``args``), bridge Graphs or ONNX files / ModelProtos, in any mix. See ``bridge.analysis.diff``.

    A tensor is within tolerance when ``max|x - ref| <= atol * max(1, max|ref|) + rtol * max|ref|``.
    """
    from .analysis.diff import diff_graphs

    targs = () if args is None else args
    ga, _ = as_graph(a, targs, kwargs, **trace_options)
    gb, _ = as_graph(b, targs, kwargs, **trace_options)
    return diff_graphs(ga, gb, args, kwargs, atol=atol, rtol=rtol)


def report(model: Any, args: Any = (), kwargs: dict | None = None, *, depth: int | None = None,
           dims: dict[str, int] | None = None, **trace_options):
    """The layer view beside the graph view of ``model`` (nn.Module traced on ``args``, Graph or ONNX
    file), with topology, costs and conversions; see ``bridge.analysis.report``. ``depth``: layers are module
    calls at most that many levels down (default: the innermost modules)."""
    from .analysis.report import build_report

    return build_report(summary(model, args, kwargs, depth=depth, dims=dims, **trace_options))


# ---- views --------------------------------------------------------------------------------------------
def draw(model_or_graph: Any, path: str | os.PathLike, *, args: Any = (), kwargs: dict | None = None,
         **options) -> str:
    """Draw a graph (or a model traced on ``args``/``kwargs``, or an ONNX file or ``ModelProto``) to ``path``;
    the suffix picks the format (.dot, .svg, .png, .mmd, .html). ``options`` (depth, max_nodes, title, timeout,
    progress) are those of ``bridge.views.draw.draw``. Returns the path written."""
    from .views.draw import check_target, draw as draw_graph

    check_target(path, options.get("depth"))  # a bad suffix or depth fails before any tracing
    return draw_graph(as_graph(model_or_graph, args, kwargs)[0], path, **options)


# ---- transformations that trace the user's code -----------------------------------------------------------
def rewrite(g: Graph, pattern: Callable, replacement: Callable, *, inputs: tuple | None = None,
            commutative: bool = True):
    """Replace every match of ``pattern`` in ``g`` by ``replacement`` (both torch functions of the same
    tensors, in the same order), in place; returns a ``RewriteReport`` of every match. See
    ``bridge.passes.rewrite``."""
    from .passes.rewrite import rewrite as rewrite_graph

    return rewrite_graph(g, pattern, replacement, inputs=inputs, commutative=commutative, trace=trace)


def replace_module(g: Graph, cls: type, factory: Callable[[nn.Module], nn.Module]) -> tuple[Graph, bool]:
    """Every layer of class ``cls`` becomes ``factory(layer)``, traced and inlined, in place; see
    ``bridge.passes.replace``."""
    from .passes.replace import replace_module as replace_in_graph

    return replace_in_graph(g, cls, factory, trace=trace)
