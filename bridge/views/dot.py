"""Graphviz: DOT text (no dependency) and SVG/PNG rendered by the ``dot`` binary (Debian package graphviz).

Boxes are labelled with what they are (op, or module path and type), their output shape and their cost;
modules left unfolded are nested ``cluster_`` subgraphs, so the drawing reads like the code; the regions of a
control-flow node (a ``cond``'s branches, a loop's ``cond_fn`` and ``body_fn``) are shaded clusters beside it,
the operands running into them and their outputs into the node; the edges of skip connections are red and dashed.
"""
from __future__ import annotations

import os
import shutil
import subprocess

from ..errors import ViewError
from ..fileio import atomic_write
from .graphdata import Folded

_FILL = {"op": "#eef3fb", "module": "#fdf1dc", "input": "#e3f4e1", "output": "#f7e1e1"}
_SHAPE = {"op": "box", "module": "box3d", "input": "oval", "output": "oval"}
_REGION_FILL = "#f1ecf8"  # a folded region
_MODULE = 'style="rounded,dashed"; color="#8899aa"; fontsize=10;'
_REGION = 'style="rounded,filled"; color="#7b61a8"; fillcolor="#f6f3fb"; fontsize=10;'  # a branch or loop body


def quote(s: str) -> str:
    """A DOT string literal."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(folded: Folded, title: str = "bridge") -> str:
    """DOT text for a folded graph: nested clusters by module scope and region, one node per box, one edge per
    crossing."""
    lines = [f"digraph {quote(title)} {{",
             '  graph [rankdir=TB, fontname="Helvetica", fontsize=11, nodesep=0.25, ranksep=0.35, '
             f'labeljust=l, label={quote(title)}, labelloc=t];',
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10, penwidth=0.8];',
             '  edge [arrowsize=0.6, penwidth=0.8, color="#555555"];']
    lines += folded.outline(
        lambda b: f"{quote(b.id)} [label={quote(chr(10).join(b.lines()))}, shape={_SHAPE[b.kind]}, "
                  f'fillcolor="{_REGION_FILL if b.region else _FILL[b.kind]}"];',
        lambda path, c: [f"subgraph {quote('cluster_' + path)} {{",
                         f'  label={quote(c["label"] + " (" + c["type"] + ")")}; '
                         + (_REGION if c["region"] else _MODULE)],
        "}",
        lambda a, b, skip: f"{quote(a)} -> {quote(b)}" + (' [color="#d62728", style=dashed, penwidth=1.2]'
                                                          if skip else "") + ";")
    lines.append("}")
    return "\n".join(lines) + "\n"


def dot_binary() -> str:
    """The path of graphviz's ``dot``, or ``ViewError`` saying how to install it."""
    exe = shutil.which("dot")
    if exe is None:
        raise ViewError("drawing .svg or .png needs the graphviz 'dot' program, which is not on PATH. Install "
                        "graphviz (Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz), or "
                        "write .dot, .mmd or .html, which need nothing.")
    return exe


def render(dot_text: str, fmt: str, path: str | os.PathLike, timeout: float | None = None) -> None:
    """Run ``dot -T<fmt>`` on ``dot_text`` and write the result to ``path``, atomically: dot writes to the
    temporary file of ``bridge.fileio.atomic_write``, so a failed or timed-out layout leaves what was there."""
    exe = dot_binary()
    with atomic_write(path, "wb") as f:
        try:
            r = subprocess.run([exe, f"-T{fmt}"], input=dot_text.encode(), stdout=f, stderr=subprocess.PIPE,
                               timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ViewError(f"graphviz dot took over {timeout:.0f} s on this graph; draw it folded to a module "
                            "depth (depth=1 or --depth 1) or write .html, which lays out in the browser.") from None
        if r.returncode != 0:
            raise ViewError(f"graphviz dot -T{fmt} failed (exit {r.returncode}): "
                            f"{r.stderr.decode(errors='replace').strip()[:2000]}")
