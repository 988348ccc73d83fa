"""The verbs that take what a user has: a model, an ONNX file, a torch function.

This is the top layer (beside ``trace.py`` and the CLI): each verb traces a model (``bridge.trace``) or imports an
ONNX file (``bridge.from_onnx``) here, then hands Graphs down to the backends, passes, analysis and views, which
take Graphs only. ``bridge.summary``, ``bridge.to_onnx``, ... are these functions.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from . import progress
from .errors import BridgeError
from .ir.graph import Graph
from .trace import gc_paused, trace

__all__ = ["as_graph", "to_onnx", "from_onnx", "verify", "summary", "topology", "diff", "report", "draw",
           "rewrite", "replace_module", "to_pipeline"]


def as_graph(model: Any, args: Any = (), kwargs: dict | None = None, *, training: bool = False,
             **trace_options) -> tuple[Graph, Any]:
    """(Graph, the nn.Module or None) from a Graph, an nn.Module traced on ``args``, or an ONNX file/proto.

    A module is traced in inference (eval) mode unless ``training``, as torch.onnx.export does; its own mode is
    left as it was."""
    if isinstance(model, Graph):
        return model, None
    if isinstance(model, nn.Module):
        with mode(model, training):
            return trace(model, args, kwargs, **trace_options), model
    if isinstance(model, torch.export.ExportedProgram):
        return trace(model, args, kwargs, **trace_options), None
    if isinstance(model, (str, os.PathLike, bytes)) or type(model).__name__ == "ModelProto":
        return from_onnx(model), None
    raise BridgeError(f"expected an nn.Module, a bridge Graph or an ONNX file/ModelProto, got {type(model).__name__}")


@contextlib.contextmanager
def mode(model: nn.Module, training: bool, *, warn: bool = True):
    """``model`` (every submodule) in training or eval mode inside the block, each module's own flag restored
    after. In training mode (and ``warn``), warn when that changes what the model computes (batch statistics,
    active dropout), naming the layers."""
    flags = [(m, m.training) for m in model.modules()]
    model.train(training)
    if training and warn:
        _warn_training(model)
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


def training_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(path, module)`` of the layers whose output depends on ``training``: batch norm (batch statistics, running
    stats updated), dropout (random; alpha dropouts too), instance norm that tracks running stats, and RNNs with
    dropout between layers. The CLI's ``--train`` warning reads the same list."""
    def depends(m: nn.Module) -> bool:
        if isinstance(m, nn.modules.instancenorm._InstanceNorm):
            return m.track_running_stats
        if isinstance(m, nn.RNNBase):
            return m.dropout > 0 and m.num_layers > 1
        return isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd))

    return [(path, m) for path, m in model.named_modules() if depends(m)]


def _warn_training(model: nn.Module) -> None:
    layers = [path or type(m).__name__ for path, m in training_layers(model)]
    if layers:
        shown = ", ".join(layers[:4]) + (f" and {len(layers) - 4} more" if len(layers) > 4 else "")
        warnings.warn(f"training mode: {len(layers)} layer(s) compute differently from inference ({shown}): batch "
                      "norm uses the batch's statistics and dropout is random. The graph is the training graph; "
                      "leave training=False (the default) for the graph you would deploy.", stacklevel=4)


# ---- ONNX ---------------------------------------------------------------------------------------------
def to_onnx(model_or_graph: Any, path: str | os.PathLike | None = None, *, args: Any = (), kwargs: dict | None = None,
            opset: int | None = None, dynamic: Any = None, optimize: bool | Sequence[str] = True,
            external_data: bool | None = None, check_model: bool = True, training: bool = False):
    """Export a model (traced on ``args``) or a bridge Graph to ONNX; write it to ``path`` when given. Returns the
    ``onnx.ModelProto``: without ``path`` with every weight in it; with ``path``, its weights of 1 KiB or more
    refer to their bytes in the file written (ONNX external data), since the export copies each weight once, from
    its tensor into the file: ``onnx.load(path)`` gives the model with its weights.

    A model is exported in inference (eval) mode, as torch.onnx.export does, unless ``training=True`` (a warning
    names the layers that then compute differently); the model's own mode is left as it was. The file records
    the mode (``bridge.training`` in its metadata), and ``bridge.verify`` compares against that mode.
    ``optimize``: True for every inference optimization (batchnorm folding, constant folding, dropout and
    identity removal), False for none, or a list of pass names. ``external_data``: weights in
    ``NAME.onnx.<hash>.data`` beside the file (named by their content, so the model and its weights change
    together): always (True), never (False), or over 2 GB (None, the default; the weights are streamed there
    while lowering). Every write is atomic. A Graph given is not changed.
    """
    from .backends import onnx as backend
    from .passes import inference_passes, run_passes

    if opset is not None:
        backend.check_opset(opset)  # before tracing
    with gc_paused(), progress.job("exporting to ONNX"):  # a line on a terminal, once it takes a second
        own = not isinstance(model_or_graph, Graph)
        g = as_graph(model_or_graph, args, kwargs, training=training, dynamic=dynamic)[0] if own else model_or_graph
        if not own and g.meta.get("training"):
            _warn_training_graph(g)
        names = inference_passes() if optimize is True else ([] if not optimize else list(optimize))
        if names:
            progress.step("optimizing")
            g = run_passes(g, names, copy=not own)  # the caller's graph stays as it is
        return backend.export(g, path, opset=opset, external_data=external_data, check_model=check_model)


def _warn_training_graph(g: Graph) -> None:
    """A Graph traced from a model in training mode: say so where that changes the numbers."""
    nodes = [n for n in g.nodes if n.args.get("training") is True]
    if nodes:
        warnings.warn(f"this graph was traced in training mode: {len(nodes)} node(s) compute differently from "
                      f"inference ({', '.join(n.outputs[0].name for n in nodes[:4])}): batch statistics, random "
                      "dropout. Trace model.eval() (or pass the model to bridge.to_onnx, which exports eval mode) "
                      "for the graph you would deploy.", stacklevel=3)


def from_onnx(model: Any, *, base_dir: str | os.PathLike | None = None) -> Graph:
    """Import an ONNX model (path, bytes or ``onnx.ModelProto``) as a bridge Graph; see
    ``bridge.frontends.onnx.from_onnx``. External weights are read only from inside the model's folder, or from
    ``base_dir`` (required for bytes or a proto that reference external data).

    Passes read back what ONNX's op set made of the model:
    - ``cancel_reorders``: an ONNX LSTM/GRU keeps its gates in another order than torch, and a file that stores
      torch's weights reorders them in the graph, which the import reorders back: the imported layer reads the
      weights themselves;
    - ``compose_moves``: a chain of reshapes and transposes (what ONNX makes of pixel_unshuffle, channel
      shuffles, head splits) becomes at most reshape, permute, reshape;
    - ``fuse_linear``: Transpose, MatMul and Add of a Linear on a 3-D input become one ``linear`` again;
    - ``fuse_gelu``: GELU written out with erf or tanh, as opsets before 20 have it, becomes one ``gelu``;
    - ``fuse_adaptive_pool``: adaptive pooling to sizes that do not divide, written out per dim as slices and
      reductions, becomes one adaptive pooling;
    - ``cse`` computes once what the file computes twice (an exporter that wrote ``baddbmm`` as its own MatMul
      beside the model's ``bmm`` of the same tensors);
    - ``recompose``: what ONNX has no op for, written out as several nodes, becomes the one torch op again: stack
      (Unsqueezes and a Concat), unbind (Split and Squeezes), roll (two Slices and a Concat), masked_select
      (Compress of a flattened mask), a slice assignment (ScatterND at constant flat positions that form a box),
      baddbmm/addmm with scale factors (MatMul, Muls and an Add), nearest upsampling (Gathers at torch's nearest
      positions), pixel_unshuffle (Reshape, Transpose, Reshape), group_norm (InstanceNormalization of the groups
      and a scale and shift per channel); a norm's scale of ones and bias of zeros (ONNX requires them) go;
    - ``remove_identity`` and ``dce``: casts to the type a value has, expands and reshapes to the shape it has, and
      nodes nothing reads go."""
    from .frontends.onnx import from_onnx as import_onnx
    from .passes import import_passes, run_passes

    return run_passes(import_onnx(model, base_dir=base_dir), import_passes(), copy=False)


def verify(model: nn.Module, onnx_model: Any, args: Any = (), kwargs: dict | None = None, *,
           atol: float = 1e-5, rtol: float = 1e-4, localize: bool = True, training: bool | None = None):
    """Run ``model`` eagerly and ``onnx_model`` in onnxruntime on the same inputs and compare every output.

    The model runs in the mode the file was exported in (its ``bridge.training`` metadata; eval for a file
    without it), or in the mode ``training`` gives; its own mode is left as it was.
    Tolerance per output: ``|a - b| <= atol * max(1, max|ref|) + rtol * |ref|``. On mismatch (and with
    ``localize``), bridge's own export of the model is run with every intermediate value as an output to
    name the first node whose value diverges. Returns a ``VerifyReport``.
    """
    from .backends import ort
    from .frontends.common import buffers_kept
    from .frontends.signature import InputBinding
    from .ir import structure

    if not isinstance(args, tuple):
        args = (args,)
    kwargs = dict(kwargs or {})
    binding = InputBinding(model, args, kwargs)
    head = ort.header(onnx_model)  # inputs and metadata, without the weights: read once
    # inputs that do not fit the file: an InputError naming the input, before the model runs on them
    ort.check_inputs(ort.file_inputs(head), binding.names, binding.examples,
                     os.fspath(onnx_model) if isinstance(onnx_model, (str, os.PathLike)) else "the ONNX model")
    if training is None:  # the mode the file was exported in (its bridge.training metadata)
        training = any(p.key == "bridge.training" and p.value == "true" for p in head.metadata_props)
    # the file's mode, said in the report's notes: no warning
    with mode(model, training, warn=False), buffers_kept(model), torch.no_grad(), torch.random.fork_rng():
        ref = model(*args, **kwargs)
    ref_leaves, _ = structure.flatten(ref, lambda o: isinstance(o, torch.Tensor))
    rep = ort.compare_outputs(onnx_model, binding.names, binding.examples, ref_leaves, atol=atol, rtol=rtol)
    rep.notes.append(f"compared in {'training' if training else 'inference (eval)'} mode")
    if not rep.ok and localize:
        try:
            with mode(model, training, warn=False):
                g = trace(model, args, kwargs)
            rep.first_divergence = ort.first_divergence(g, binding.names, binding.examples, args, kwargs,
                                                        atol=atol, rtol=rtol)
        except Exception as e:  # noqa: BLE001 - localization is best effort; the comparison stands
            rep.notes.append(f"(could not localize the divergence: {type(e).__name__}: {e})")
    return rep


# ---- analysis -------------------------------------------------------------------------------------------
def summary(model: Any, args: Any = (), kwargs: dict | None = None, *, depth: int | None = 3, by: str = "module",
            dims: dict[str, int] | None = None, training: bool = False, **trace_options):
    """Per-layer table of a model: output shapes and dtypes, parameters, FLOPs, MACs, activation bytes, and
    totals with parameter memory and peak activation memory.

    ``model``: an ``nn.Module`` (traced on ``args``/``kwargs`` in eval mode unless ``training``, as torchinfo does;
    ``trace_options`` go to ``bridge.trace``), a bridge ``Graph``, or an ONNX file path / ``onnx.ModelProto``.
    ``depth``: how deep the module hierarchy goes (None: all the way; as torchinfo's ``depth``). ``by="node"``:
    one row per node instead. ``dims`` sizes symbolic dims (default: the example the graph was traced with).

    What each number means: docs/analysis.md.
    """
    from .analysis.summary import summarize

    with gc_paused():
        g, module = as_graph(model, args, kwargs, training=training, **trace_options)
        return summarize(g, module=module, depth=depth, by=by, dims=dims)


def topology(model: Any, args: Any = (), kwargs: dict | None = None, *, training: bool = False):
    """Topology of a Graph (or of a model traced on ``args``, or an ONNX file): chain or DAG, branch and merge
    points, skip connections, depth and width; see ``bridge.analysis.topology``."""
    from .analysis.topology import topology as graph_topology

    return graph_topology(as_graph(model, args, kwargs, training=training)[0])


def diff(a: Any, b: Any, args: Any = None, kwargs: dict | None = None, *, atol: float = 1e-5, rtol: float = 1e-4,
         training: bool = False, **trace_options):
    """Structural (and, given ``args``, numeric) difference of ``a`` and ``b``: nn.Modules (traced on
    ``args``), bridge Graphs or ONNX files / ModelProtos, in any mix. See ``bridge.analysis.diff``.

    A tensor is within tolerance when ``max|x - ref| <= atol * max(1, max|ref|) + rtol * max|ref|``.
    """
    from .analysis.diff import diff_graphs

    targs = () if args is None else args
    ga, _ = as_graph(a, targs, kwargs, training=training, **trace_options)
    gb, _ = as_graph(b, targs, kwargs, training=training, **trace_options)
    return diff_graphs(ga, gb, args, kwargs, atol=atol, rtol=rtol)


def report(model: Any, args: Any = (), kwargs: dict | None = None, *, depth: int | None = None,
           dims: dict[str, int] | None = None, training: bool = False, **trace_options):
    """The layer view beside the graph view of ``model`` (nn.Module traced on ``args``, Graph or ONNX
    file), with topology, costs and conversions; see ``bridge.analysis.report``. ``depth``: layers are module
    calls at most that many levels down (default: the innermost modules)."""
    from .analysis.report import build_report

    return build_report(summary(model, args, kwargs, depth=depth, dims=dims, training=training, **trace_options))


# ---- views --------------------------------------------------------------------------------------------
def draw(model_or_graph: Any, path: str | os.PathLike, *, args: Any = (), kwargs: dict | None = None,
         training: bool = False, **options) -> str:
    """Draw a graph (or a model traced on ``args``/``kwargs``, or an ONNX file or ``ModelProto``) to ``path``;
    the suffix picks the format (.dot, .svg, .png, .mmd, .html). ``options`` (depth, max_nodes, title, timeout,
    progress) are those of ``bridge.views.draw.draw``. Returns the path written."""
    from .views.draw import check_target, draw as draw_graph

    check_target(path, options.get("depth"))  # a bad suffix or depth fails before any tracing
    with progress.job(f"drawing {os.path.basename(os.fspath(path))}", enabled=options.get("progress")):
        return draw_graph(as_graph(model_or_graph, args, kwargs, training=training)[0], path, **options)


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


def to_pipeline(model: Any, args: Any = (), kwargs: dict | None = None, *, stages: int, balance: str = "flops",
                training: bool = True, memory_limit: int | str | None = None, state_factor: float = 4.0,
                in_flight: int | None = None, slack: float | None = None, **trace_options):
    """``model`` (an nn.Module traced on one microbatch ``args``/``kwargs``, in training mode unless ``training``
    is False; or a bridge Graph) cut into ``stages`` stages for ``torch.distributed.pipelining``, balanced by
    ``balance`` ("flops", "params", "memory" or "time"), each within ``memory_limit`` (bytes or "8GiB") where
    given. Returns a ``bridge.views.pipeline.Pipeline``: ``build_stage(i, device, group)`` for each rank,
    ``stage_module(i)``, ``describe()``, ``draw(path)``. The model is never changed. See
    [Pipeline parallelism](pipeline.md)."""
    from .views.pipeline import SLACK, split_pipeline

    args = args if isinstance(args, tuple) else (args,)
    if isinstance(model, nn.Module):
        with mode(model, training, warn=False):
            g = trace(model, args, kwargs, **trace_options)
    elif isinstance(model, Graph):
        g = model
    else:
        raise BridgeError(f"to_pipeline takes an nn.Module or a bridge Graph, not {type(model).__name__}")
    return split_pipeline(g, stages, balance=balance, args=args, kwargs=kwargs, memory_limit=memory_limit,
                          state_factor=state_factor, in_flight=in_flight, slack=SLACK if slack is None else slack)
