"""What every drawing shows, computed once: boxes, edges, module clusters and costs, at a module depth.

Two views of one graph:

- the **graph view** (``depth=None``): one box per op, clusters for the modules they were called in;
- the **layer view** (``depth=d``): every module ``d`` levels down is folded into one box (its ops, params
  and FLOPs summed); an edge joins two boxes wherever a tensor crosses between them.

``graph_data`` is the JSON-able description the HTML page embeds (it folds and unfolds modules itself);
``collapse`` folds it at a depth for the static formats (DOT, SVG, PNG, Mermaid).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..ir.graph import Graph, Value, iter_values
from ..ir.printer import op_label

MAX_NODES = 500  # past this many op boxes a drawing starts folded to the deepest depth that fits


def shape_text(v: Value) -> str:
    """``f32[1, 8, 16, 16]``, or the scalar type, or ``?``."""
    return str(v.spec) if v.spec is not None else "?"


def human(n: float | int | None, unit: str = "") -> str:
    """``1234567`` -> ``1.23M`` (with ``unit`` appended); ``None`` -> ``?``."""
    if n is None:
        return "?"
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{suffix}{unit}"
    return f"{n:g}{unit}"


def skip_edges(skips) -> set[tuple[int, int]]:
    """``(id(value), id(consumer node))`` of every edge on the short path of each skip connection
    (``bridge.topology(g).skip_connections``): the edges a drawing marks as skips."""
    failed: set[tuple[int, int]] = set()

    def path(src: Value, target, length: int):
        if length == 1:
            return [(src, target)] if target in src._uses else None
        if (id(src), length) in failed:
            return None
        for user in src._uses:
            if user is target:
                continue
            for v in user.outputs:
                rest = path(v, target, length - 1)
                if rest:
                    return [(src, user), *rest]
        failed.add((id(src), length))
        return None

    out: set[tuple[int, int]] = set()
    for s in skips:
        for v, n in path(s.source, s.target, s.length) or ():
            out.add((id(v), id(n)))
    return out


def graph_data(g: Graph, costs: dict | None = None, skips=()) -> dict[str, Any]:
    """The graph as plain data: ``nodes`` (ops, graph inputs, graph outputs), ``edges`` and ``modules``.

    Each op node has ``id``, ``kind`` (``op``), ``op``, ``name``, ``shape`` (its outputs), ``scope`` (the module
    paths it was called in, outermost first), ``source`` and, when ``costs`` (``bridge.analysis.node_costs``)
    is given, ``flops``, ``macs``, ``params``, ``param_bytes`` and ``out_bytes``. Each edge is
    ``[src_id, dst_id, value_name, shape, skip]``, ``skip`` 1 on the short path of one of ``skips``
    (``bridge.topology(g).skip_connections``), else 0. ``modules`` maps a module path to its ``type``, ``parent`` path
    (``""`` at the top), ``depth`` (1 at the top) and ``leaf`` (no module called inside it).
    """
    nodes: list[dict] = []
    modules: dict[str, dict] = {}
    owner: dict[int, str] = {}  # id(Value) -> id of the box that produces it
    for v in g.inputs:
        nodes.append({"id": f"in:{v.name}", "kind": "input", "name": v.name, "op": "input",
                      "shape": shape_text(v), "scope": []})
        owner[id(v)] = f"in:{v.name}"
    edges: list[list] = []
    marked = skip_edges(skips)
    for n in g.nodes:
        nid = n.name
        parent = ""
        for depth, (path, type_) in enumerate(n.scope.stack, 1):
            if path not in modules:
                modules[path] = {"type": type_, "parent": parent, "depth": depth, "leaf": True}
            if parent:
                modules[parent]["leaf"] = False
            parent = path
        d: dict[str, Any] = {"id": nid, "kind": "op", "name": n.name, "op": op_label(n),
                             "shape": ", ".join(shape_text(v) for v in n.outputs),
                             "scope": [p for p, _ in n.scope.stack], "source": n.source}
        c = costs.get(n) if costs else None
        if c is not None:
            for f in ("flops", "macs", "params", "param_bytes", "out_bytes"):
                d[f] = getattr(c, f, None)
        nodes.append(d)
        seen: set[int] = set()
        for v in iter_values(n.args):
            src = owner.get(id(v))
            if src is not None and id(v) not in seen:
                seen.add(id(v))
                edges.append([src, nid, v.name, shape_text(v), int((id(v), id(n)) in marked)])
        for v in n.outputs:
            owner[id(v)] = nid
    for i, v in enumerate(iter_values(g.outputs)):
        oid = f"out:{i}"
        nodes.append({"id": oid, "kind": "output", "name": f"output {i}" if len(g.outputs) > 1 else "output",
                      "op": "output", "shape": shape_text(v), "scope": []})
        src = owner.get(id(v))
        if src is not None:
            edges.append([src, oid, v.name, shape_text(v), 0])
    return {"nodes": nodes, "edges": edges, "modules": modules,
            "model": g.meta.get("model_type") or "graph", "has_costs": costs is not None}


@dataclass
class Box:
    """One box of a drawing: an op, a folded module, a graph input or a graph output."""

    id: str
    kind: str                    # "op" | "module" | "input" | "output"
    title: str                   # op name / module path / input name
    subtitle: str                # op / module type
    shape: str                   # output shape(s)
    clusters: list[str]          # the unfolded modules it sits in, outermost first
    ops: int = 1                 # ops folded into it
    flops: int | None = None
    params: int | None = None
    members: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The label, one line per item: what, shape, cost."""
        out = [f"{self.title}" + (f" ({self.subtitle})" if self.subtitle and self.subtitle != self.title else "")]
        if self.shape:
            out.append(self.shape)
        cost = []
        if self.kind == "module":
            cost.append(f"{self.ops} op{'s' if self.ops != 1 else ''}")
        if self.params:
            cost.append(f"{human(self.params)} param{'s' if self.params != 1 else ''}")
        if self.flops is not None and self.kind in ("op", "module"):
            cost.append(f"{human(self.flops)} FLOPs")
        if cost:
            out.append(", ".join(cost))
        return out


@dataclass
class Folded:
    """A drawing at one depth: boxes, deduplicated edges between them, and the clusters left unfolded."""

    boxes: dict[str, Box]
    edges: list[tuple[str, str, str]]   # (src box, dst box, shape of the tensor crossing)
    skips: set[tuple[str, str]]         # the edges on a skip connection's short path
    clusters: dict[str, dict]           # unfolded module path -> {"type", "parent"}
    depth: int | None                   # None: every op is a box

    def nesting(self) -> tuple[dict[str, list[str]], dict[str, list[Box]]]:
        """The unfolded clusters under each cluster path (``""``: the top) and the boxes directly inside each."""
        children: dict[str, list[str]] = {}
        for path, c in self.clusters.items():
            if path:  # the root module (a model that is one layer, nn.Linear) is the top itself, not a cluster in it
                children.setdefault(c["parent"], []).append(path)
        inside: dict[str, list[Box]] = {}
        for b in self.boxes.values():
            inside.setdefault(b.clusters[-1] if b.clusters else "", []).append(b)
        return children, inside

    def outline(self, box, open_cluster, close: str, edge) -> list[str]:
        """The body lines of a text drawing (DOT, Mermaid): ``box(b)`` per box and, per unfolded cluster,
        ``open_cluster(path, type)`` (its opening lines), the cluster's contents indented by two more spaces
        and ``close``; then ``edge(a, b, skip)`` per edge. Every line is indented two spaces at the top."""
        children, inside = self.nesting()
        lines: list[str] = []

        def emit(path: str, indent: str) -> None:
            lines.extend(indent + box(b) for b in inside.get(path, []))
            for child in children.get(path, []):
                lines.extend(indent + s for s in open_cluster(child, self.clusters[child]["type"]))
                emit(child, indent + "  ")
                lines.append(indent + close)

        emit("", "  ")
        lines.extend("  " + edge(a, b, (a, b) in self.skips) for a, b, _shape in self.edges)
        return lines


def fold_point(scope: list[str], modules: dict, depth: int | None) -> int | None:
    """Where a node with this scope folds at ``depth``: the index in ``scope`` of the module whose box it is
    drawn in (the module ``depth`` levels down, or a leaf module above that), or None (drawn as itself)."""
    if depth is None:
        return None
    for i, path in enumerate(scope):
        if i + 1 == depth or modules[path]["leaf"]:
            return i
    return None


def count_boxes(data: dict, depth: int | None) -> int:
    """How many boxes ``collapse(data, depth)`` draws."""
    seen = set()
    for n in data["nodes"]:
        i = fold_point(n["scope"], data["modules"], depth)
        seen.add(n["id"] if i is None else "m:" + n["scope"][i])
    return len(seen)


def auto_depth(data: dict, max_nodes: int = MAX_NODES) -> int | None:
    """``None`` (every op) when the graph has at most ``max_nodes`` boxes, else the deepest module depth whose
    layer view fits (at least 1)."""
    if count_boxes(data, None) <= max_nodes:
        return None
    deepest = max((m["depth"] for m in data["modules"].values()), default=1)
    for depth in range(deepest, 0, -1):
        if count_boxes(data, depth) <= max_nodes:
            return depth
    return 1


def collapse(data: dict, depth: int | None) -> Folded:
    """Fold every module ``depth`` levels down, and every leaf module above that, into one box (``None``:
    fold nothing)."""
    boxes: dict[str, Box] = {}
    where: dict[str, str] = {}
    modules = data["modules"]
    for n in data["nodes"]:
        sc = n["scope"]
        at = fold_point(sc, modules, depth)
        if at is not None:
            path = sc[at]
            bid = f"m:{path}"
            b = boxes.get(bid)
            if b is None:
                kind = modules[path]["type"]
                b = boxes[bid] = Box(bid, "module", path or kind, kind, "", sc[:at], 0,
                                     flops=0 if data["has_costs"] else None, params=0 if data["has_costs"] else None)
            b.ops += 1
            b.members.append(n["id"])
            if b.flops is not None:
                b.flops += n.get("flops") or 0
            if b.params is not None:
                b.params += n.get("params") or 0
        else:
            bid = n["id"]
            boxes[bid] = Box(bid, n["kind"], n["name"], n["op"] if n["kind"] == "op" else "", n["shape"], list(sc),
                             flops=n.get("flops"), params=n.get("params"), members=[bid])
        where[n["id"]] = bid
    edges: dict[tuple[str, str], str] = {}
    skips: set[tuple[str, str]] = set()  # a folded edge is a skip when every tensor on it is on a skip's path
    plain: set[tuple[str, str]] = set()
    out_shapes: dict[str, list[str]] = {}
    for src, dst, _name, shape, skip in data["edges"]:
        a, b = where[src], where[dst]
        if a == b:
            continue
        if (a, b) not in edges:
            edges[(a, b)] = shape
        (skips if skip else plain).add((a, b))
        if boxes[a].kind == "module" and shape not in out_shapes.setdefault(a, []):
            out_shapes[a].append(shape)
    for bid, shapes in out_shapes.items():
        boxes[bid].shape = shapes[0] + (f" (+{len(shapes) - 1} more)" if len(shapes) > 1 else "")
    clusters: dict[str, dict] = {}
    for b in boxes.values():
        for path in b.clusters:
            clusters.setdefault(path, {"type": modules[path]["type"], "parent": modules[path]["parent"]})
    return Folded(boxes, [(a, b, s) for (a, b), s in edges.items()], skips - plain, clusters, depth)
