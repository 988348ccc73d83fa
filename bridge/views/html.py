"""One self-contained HTML page: the layer view and the graph view side by side, with pan and zoom, folding
and unfolding of modules (and of the regions of control-flow nodes, shaded clusters), search, and a side panel
with the shape, parameters and FLOPs of what is selected.

The page needs no network: its script and style (``bridge/views/assets/``) are inlined, and the graph is
embedded as JSON (``graph_data``). The layout runs in the browser (longest-path layering and barycentric
ordering, in ``view.js``), so folding or unfolding a module lays the view out again at once, and a page
needs neither graphviz nor a server.
"""
from __future__ import annotations

import html
import json
import os

from .graphdata import MAX_NODES, auto_depth, count_boxes

_ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")


def _asset(name: str) -> str:
    with open(os.path.join(_ASSETS, name), encoding="utf-8") as f:
        return f.read()


def script_json(obj) -> str:
    """``obj`` as JSON safe inside a ``<script>`` element: "</script>" or "<!--" in a name would end the element,
    so every '<' is escaped."""
    return json.dumps(obj, separators=(",", ":")).replace("<", "\\u003c")


def to_html(data: dict, *, title: str = "bridge", layer_depth: int = 1, max_nodes: int = MAX_NODES) -> str:
    """The page for ``graph_data``: the layer view folded at ``layer_depth``; the graph view shows every op,
    or, past ``max_nodes`` boxes, starts folded at the deepest module depth that fits."""
    modules = data["modules"]
    gdepth = auto_depth(data, max_nodes)
    config = {
        "layer_expanded": [p for p, m in modules.items() if m["depth"] < layer_depth and not m["leaf"]],
        "graph_expanded": [p for p, m in modules.items() if gdepth is None or (m["depth"] < gdepth and not m["leaf"])],
    }
    ops = sum(1 for n in data["nodes"] if n["kind"] == "op")
    regions = sum(1 for m in modules.values() if m.get("region"))
    stats = (f"{ops} ops, {len(modules) - regions} modules" + (f", {regions} regions" if regions else "")
             + (f"; graph view folded at depth {gdepth} ({count_boxes(data, gdepth)} boxes)" if gdepth else ""))
    t = html.escape(title)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="bridge">
<link rel="icon" href="data:,">
<title>{t}</title>
<style>
{_asset("view.css")}
</style>
</head>
<body>
<header>
  <h1>{t}</h1><span class="stats">{html.escape(stats)}</span><span class="legend">- - - skip connection</span>
  <div class="search"><input id="search" type="search" placeholder="search ops and modules (Enter: go)"
    autocomplete="off"><span id="search-count"></span><ul id="search-results"></ul></div>
</header>
<main>
  <section class="pane" id="layer-pane">
    <h2><span>Layer view <small>modules folded; click one to unfold it</small></span>
      <span class="zoom" id="layer-zoom"></span><button id="layer-fit" title="the whole graph (f)">fit</button>
      <button id="layer-open">unfold all</button><button id="layer-close">fold all</button></h2>
    <svg id="layer-svg" xmlns="http://www.w3.org/2000/svg">{_marker("layer")}</svg>
  </section>
  <section class="pane" id="graph-pane">
    <h2><span>Graph view <small>every op; click a cluster's title to fold it</small></span>
      <span class="zoom" id="graph-zoom"></span><button id="graph-fit" title="the whole graph (f)">fit</button>
      <button id="graph-open">unfold all</button><button id="graph-close">fold all</button></h2>
    <svg id="graph-svg" xmlns="http://www.w3.org/2000/svg">{_marker("graph")}</svg>
  </section>
  <aside id="panel"><p class="hint">Click an op or a module to see its shape, parameters and FLOPs.
    Drag to pan, scroll to zoom. A big graph opens at its inputs, zoomed in to read: <b>f</b> (or "fit") shows
    all of it, <b>h</b> goes back.</p></aside>
</main>
<script id="bridge-data" type="application/json">{script_json(data)}</script>
<script id="bridge-config" type="application/json">{script_json(config)}</script>
<script>
{_asset("view.js")}
</script>
</body>
</html>
"""


def _marker(name: str) -> str:
    return (f'<defs><marker id="arrow-{name}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
            'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#8a94a3"/>'
            '</marker></defs>')
