"""``bridge.report``: the layer view and the graph view of one model side by side, with the numbers.

- **Layer view** (as a Keras ``model.summary()``): the layers in execution order. A layer is a run of
  consecutive nodes of the same innermost module call (a ``Conv2d``, a ``ReLU``), or one node outside any
  module; an op a container runs itself (the ``add`` of a residual block) is a layer of that container.
  Its numbers are its own nodes' (not its children's).
- **Graph view** (as Keras' "Connected to"): every node with the activations it reads.

Both views are one table: each layer's row sits beside its first node, so a layer lines up with the nodes
it became. Below: the topology, the totals of ``bridge.summary`` and which conversions work (generated
nn.Module, plain nn.Sequential, ONNX). As text (``str``), Markdown (``to_markdown``), JSON (``to_json``) and one
self-contained HTML page (``to_html``).
"""
from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from typing import Any

from ..ir.graph import Graph, Node
from ..ir.spec import dtype_short
from .costs import NodeCost
from .memory import activation_inputs
from .summary import Summary, _num, format_outputs, leaving, plain_text, summarize
from .topology import Topology, topology


@dataclass
class Layer:
    """One layer of the layer view: ``nodes`` are what it became in the graph view."""

    name: str
    type: str
    scope: str
    nodes: list[Node] = field(default_factory=list)
    output_shape: list = field(default_factory=list)
    output_dtype: list = field(default_factory=list)
    params: int = 0
    flops: int = 0

    def to_dict(self) -> dict:
        return {"name": self.name, "type": self.type, "scope": self.scope, "output_shape": self.output_shape,
                "output_dtype": self.output_dtype, "params": self.params, "flops": self.flops,
                "nodes": [n.name for n in self.nodes]}


class Report:
    """``layers`` (layer view), ``summary`` (``bridge.summary`` at full depth), ``topology``, ``conversions``."""

    def __init__(self, s: Summary, topo: Topology, layers: list[Layer], conversions: dict[str, Any]):
        self.summary = s
        self.graph: Graph = s.graph
        self.topology = topo
        self.layers = layers
        self.conversions = conversions

    @property
    def costs(self) -> dict[Node, NodeCost]:
        return self.summary.costs

    # ---- the aligned two-view table -------------------------------------------------------------
    _COLUMNS = ("#", "Layer (type)", "Output", "Param #", "Node", "Op", "Connected to", "FLOPs")

    def table_rows(self) -> list[list[str]]:
        rows = []
        for i, layer in enumerate(self.layers, start=1):
            for j, n in enumerate(layer.nodes):
                left = ["", "", "", ""] if j else [str(i), f"{layer.name} ({layer.type})",
                                                   format_outputs(layer.output_shape, layer.output_dtype),
                                                   _num(layer.params)]
                rows.append(left + [f"%{n.name}", n.op, ", ".join(_src(v) for v in activation_inputs(n)) or "-",
                                    _num(self.costs[n].flops)])
        return rows

    def table(self):
        from rich import box
        from rich.table import Table
        from rich.text import Text

        t = Table(title=f"{self.summary.rows[0].type}: layer view | graph view", box=box.SIMPLE_HEAD,
                  title_justify="left", pad_edge=False)
        for c in self._COLUMNS:
            t.add_column(c, justify="right" if c in ("#", "Param #", "FLOPs") else "left", no_wrap=True)
        for r in self.table_rows():
            t.add_row(*(Text(c) for c in r))  # Text: "[batch, 8]" is data, not rich markup
        return t

    def conversion_lines(self) -> list[str]:
        c = self.conversions
        lines = [f"nn.Module (generated forward): {c['module']}",
                 "nn.Sequential: " + ("yes" if c["sequential"] else f"no ({c['why_not_sequential']})")]
        onnx = c["onnx"]
        lines.append("ONNX: " + ("yes" if onnx is True else f"no ({onnx})"))
        return lines

    def to_text(self, width: int = 1000) -> str:
        parts = [plain_text(self.table(), width), "", "Topology", _indent(str(self.topology)), "", "Totals",
                 _indent("\n".join(self.summary.footer())), "", "Conversions",
                 _indent("\n".join(self.conversion_lines()))]
        return "\n".join(parts) + "\n"

    def to_markdown(self) -> str:
        name = self.summary.rows[0].type
        out = [f"# {name}", "", "## Layer view | graph view", "",
               "| " + " | ".join(self._COLUMNS) + " |", "| " + " | ".join(
                   "---:" if c in ("#", "Param #", "FLOPs") else "---" for c in self._COLUMNS) + " |"]
        for r in self.table_rows():
            out.append("| " + " | ".join(_md(x) for x in r) + " |")
        out += ["", "## Topology", ""] + [f"- {line.strip()}" for line in str(self.topology).splitlines()]
        out += ["", "## Totals", ""] + [f"- {line}" for line in self.summary.footer()]
        out += ["", "## Conversions", ""] + [f"- {line}" for line in self.conversion_lines()]
        return "\n".join(out) + "\n"

    def to_html(self) -> str:
        """One self-contained page (no script, no network): the two-view table, each layer's cells spanning the
        rows of the nodes it became, then topology, totals and conversions. Every name is escaped."""
        e = html.escape
        name = self.summary.rows[0].type
        head = "".join(f'<th class="{"num" if c in ("#", "Param #", "FLOPs") else "txt"}'
                       f'{" sep" if c == "Param #" else ""}">{e(c)}</th>' for c in self._COLUMNS)
        body = []
        for i, layer in enumerate(self.layers, start=1):
            span = len(layer.nodes)
            for j, n in enumerate(layer.nodes):
                cells = ""
                if j == 0:
                    cells = (f'<td class="num layer" rowspan="{span}">{i}</td>'
                             f'<td class="layer" rowspan="{span}">{e(layer.name)} <span class="type">'
                             f'({e(layer.type)})</span></td>'
                             f'<td class="layer" rowspan="{span}">'
                             f'{e(format_outputs(layer.output_shape, layer.output_dtype))}</td>'
                             f'<td class="num layer sep" rowspan="{span}">{e(_num(layer.params))}</td>')
                cells += (f'<td class="node">%{e(n.name)}</td><td>{e(n.op)}</td>'
                          f'<td>{e(", ".join(_src(v) for v in activation_inputs(n)) or "-")}</td>'
                          f'<td class="num">{e(_num(self.costs[n].flops))}</td>')
                body.append(f'<tr class="{"first" if j == 0 else "more"}">{cells}</tr>')

        def items(lines):
            return "<ul>" + "".join(f"<li>{e(line.strip())}</li>" for line in lines) + "</ul>"

        return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="generator" content="bridge">
<title>{e(name)}: bridge report</title>
<style>
body {{ font: 13px/1.4 system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1d2430;
  margin: 16px; }}
h1 {{ font-size: 18px; }} h2 {{ font-size: 15px; margin-top: 20px; }}
table {{ border-collapse: collapse; font-variant-numeric: tabular-nums; }}
th, td {{ padding: 2px 8px; text-align: left; vertical-align: top; white-space: nowrap; }}
thead {{ position: sticky; top: 0; background: #f6f8fb; }}
thead th {{ border-bottom: 1px solid #b9c2cf; }}
.views th.group {{ text-align: center; }}
.num {{ text-align: right; }}
tr.first td {{ border-top: 1px solid #e3e7ed; }}
td.layer {{ background: #fbfcfd; }}
.sep {{ border-right: 2px solid #b9c2cf; }}
.type {{ color: #5b6678; }}
td.node {{ font-family: ui-monospace, Menlo, Consolas, monospace; }}
</style>
</head>
<body>
<h1>{e(name)}</h1>
<p>{len(self.layers)} layers, {len(self.graph.nodes)} nodes. Each layer sits beside the nodes it became.</p>
<h2>Layer view | graph view</h2>
<table class="views">
<thead><tr><th class="group sep" colspan="4">Layer view</th><th class="group" colspan="4">Graph view</th></tr>
<tr>{head}</tr></thead>
<tbody>
{chr(10).join(body)}
</tbody>
</table>
<h2>Topology</h2>
{items(str(self.topology).splitlines())}
<h2>Totals</h2>
{items(self.summary.footer())}
<h2>Conversions</h2>
{items(self.conversion_lines())}
</body>
</html>
"""

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.summary.rows[0].type,
                "layers": [layer.to_dict() for layer in self.layers],
                "nodes": [{"node": n.name, "op": n.op, "scope": n.scope.path,
                           "output_shape": [list(v.spec.shape) for v in n.outputs if v.is_tensor],
                           "connected_to": [_src(v) for v in activation_inputs(n)],
                           "params": self.costs[n].params, "flops": self.costs[n].flops, "macs": self.costs[n].macs}
                          for n in self.graph.nodes],
                "topology": self.topology.to_dict(), "totals": dict(self.summary.totals),
                "conversions": dict(self.conversions)}

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        return f"<bridge Report: {len(self.layers)} layers, {len(self.graph.nodes)} nodes, {self.topology.kind}>"


def build_report(s: Summary) -> Report:
    """The layer view beside the graph view of the summarized graph (``bridge.report`` traces or imports a model
    and summarizes it first), with topology, costs and conversions; see the module docstring."""
    g = s.graph
    topo = topology(g)
    return Report(s, topo, layers(g, s), conversions(g, topo))


def report(g: Graph, *, depth: int | None = None, dims: dict[str, int] | None = None) -> Report:
    """The report of graph ``g`` (the name this function had when it also traced models; ``bridge.report`` does
    that now)."""
    return build_report(summarize(g, depth=depth, dims=dims))


def layers(g: Graph, s: Summary) -> list[Layer]:
    """The layer view: runs of consecutive nodes with the same innermost summary row."""
    innermost: dict[int, Any] = {}
    for r in s.rows[1:]:  # rows come parents first, so the last row holding a node is its innermost
        for n in r.nodes:
            innermost[id(n)] = r
    out: list[Layer] = []
    current = None
    for n in g.nodes:
        r = innermost.get(id(n))
        if out and r is current and r is not None and r.kind != "op":
            out[-1].nodes.append(n)
        else:
            current = r
            if r is None or r.kind == "op":
                out.append(Layer(name=f"%{n.name}", type=n.op, scope=n.scope.path, nodes=[n]))
            else:  # a module call, or a folded run of top-level ops (named %first..%last)
                out.append(Layer(name=r.name, type=r.type, scope=r.scope, nodes=[n]))
    costs = s.costs
    for layer in out:
        layer.params = sum(costs[n].params for n in layer.nodes)
        layer.flops = sum(costs[n].flops for n in layer.nodes)
        outs = leaving(layer.nodes)
        layer.output_shape = [list(v.spec.shape) for v in outs]
        layer.output_dtype = [dtype_short(v.spec.dtype) for v in outs]
    return out


def conversions(g: Graph, topo: Topology | None = None) -> dict[str, Any]:
    """Which conversions work: the generated nn.Module always (opaque nodes run their original callables),
    a plain nn.Sequential when the topology allows, ONNX when every node has a lowering (those inside control-flow
    regions too)."""
    from ..ops import registry

    topo = topo or topology(g)
    missing = [(n, outer) for n, outer in g.walk()
               if registry.get(n.op) is None or registry.get(n.op).onnx is None]
    onnx: Any = True
    if missing:
        onnx = f"{len(missing)} node(s) without an ONNX lowering: " + ", ".join(
            f"%{n.name} {n.op} ({n.scope.path or '<root>'}{f', in %{outer[-1].name}' if outer else ''})"
            for n, outer in missing[:5]) + (" ..." if len(missing) > 5 else "")
    opaque = g.opaque_nodes()
    module = "yes" if not opaque else f"yes ({len(opaque)} opaque node(s) run eagerly)"
    return {"module": module, "sequential": topo.sequential, "why_not_sequential": topo.why_not_sequential,
            "onnx": onnx}


def _src(v) -> str:
    return f"%{v.producer.name}" if v.producer is not None and len(v.producer.outputs) == 1 else f"%{v.name}"


def _md(x: str) -> str:
    return x.replace("|", "\\|") if x else " "


def _indent(text: str) -> str:
    return "\n".join("  " + line if line else line for line in text.splitlines())
