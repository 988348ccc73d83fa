"""``bridge.draw(g, path)``: a picture of a graph, in the format its file suffix names."""
from __future__ import annotations

import os

from ..analysis import node_costs
from ..analysis.costs import graph_dims
from ..analysis.topology import topology
from ..errors import ViewError
from ..fileio import atomic_write
from ..ir.graph import Graph
from ..progress import job, step
from .graphdata import MAX_NODES, auto_depth, collapse, graph_data

FORMATS = {".dot": "Graphviz DOT text", ".svg": "SVG (graphviz)", ".png": "PNG (graphviz)",
           ".mmd": "Mermaid flowchart text", ".html": "interactive HTML page"}


def check_target(path: str | os.PathLike, depth: int | None) -> str:
    """The drawing format's suffix of ``path`` (``ViewError`` for an unknown one, or a bad ``depth``)."""
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in FORMATS:
        raise ViewError(f"cannot draw to {path!r}: unknown suffix {suffix or '(none)'!r}. Use one of "
                        + ", ".join(f"{s} ({what})" for s, what in FORMATS.items()) + ".")
    if depth is not None and (not isinstance(depth, int) or depth < 1):
        raise ViewError(f"depth={depth!r}: give a module depth of 1 or more (1 = the top-level modules), or None "
                        "to draw every op.")
    return suffix


def draw(g: Graph, path: str | os.PathLike, *, depth: int | None = None, max_nodes: int = MAX_NODES,
         title: str | None = None, timeout: float | None = None, progress: bool | None = None) -> str:
    """Draw graph ``g`` to ``path`` (``bridge.draw`` also takes a model traced on ``args``/``kwargs``, or an
    ONNX file or ``ModelProto``); the suffix picks the format.

    - ``.dot``: Graphviz text; ``.svg``/``.png``: rendered by graphviz's ``dot`` (``ViewError`` if it is not
      installed); ``.mmd``: a Mermaid ``flowchart TD`` for Markdown; ``.html``: one self-contained page with the
      layer view and the graph view side by side (pan, zoom, fold/unfold, search, details panel).
    - ``depth``: fold every module that many levels down into one box (1: the top-level modules, the layer
      view); ``None`` draws every op, unless there are more than ``max_nodes``: then the drawing starts folded
      at the deepest depth that fits. In ``.html`` ``depth`` is the layer view's (default 1); the graph view
      next to it shows every op (folded the same way past ``max_nodes``).
    - Boxes are labelled with the op (or module path and type), output shape, parameters and FLOPs
      (``bridge.analysis.node_costs``); modules left unfolded are drawn as clusters, and so are the regions of
      a control-flow node (``cond``, ``while_loop``: shaded, folded by depth as modules are); the edges of skip
      connections (``bridge.topology``) are marked (red and dashed; dotted in Mermaid).
    - ``timeout``: seconds graphviz may take; ``progress``: a line on stderr naming the step (analysing, laying
      out) once the drawing takes a second (default: when stderr is a terminal; ``bridge.progress``).

    Returns the path written.
    """
    path = os.fspath(path)
    suffix = check_target(path, depth)
    with job(f"drawing {os.path.basename(path)}", enabled=progress):
        step(f"analysing {len(g.nodes)} ops")
        data = graph_data(g, _costs(g), topology(g).skip_connections)
        name = title or g.meta.get("model_type") or "graph"
        if suffix == ".html":
            from .html import to_html

            step("writing the page")
            _write(path, to_html(data, title=name, layer_depth=depth or 1, max_nodes=max_nodes))
            return path
        folded = collapse(data, depth if depth is not None else auto_depth(data, max_nodes))
        if suffix == ".mmd":
            from .mermaid import to_mermaid

            _write(path, to_mermaid(folded))
            return path
        from .dot import render, to_dot

        text = to_dot(folded, name)
        if suffix == ".dot":
            _write(path, text)
            return path
        step(f"graphviz laying out {len(folded.boxes)} boxes")
        render(text, suffix[1:], path, timeout)
        return path


def _costs(g: Graph) -> dict:
    """``node_costs`` of ``g`` and of every region in it (a region's symbolic dims sized as the graph's)."""
    costs = node_costs(g)
    dims = graph_dims(g)
    for node, _ in g.walk():
        for _, region in node.regions:
            costs.update(node_costs(region, dims))
    return costs


def _write(path: str, text: str) -> None:
    """Atomically (``bridge.fileio``): a failure leaves the drawing that was there, or none."""
    with atomic_write(path) as f:
        f.write(text)
