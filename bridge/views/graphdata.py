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

from ..ir.graph import Graph, Node, Value, iter_values
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

    Regions (the branches of a ``cond``, the body of a loop) are clusters too, kept in ``modules`` under the key
    ``node:arg`` (``cond:true_fn``; a nested one under its region's key and a ``/``), with ``region`` (the arg),
    ``node`` (the id of the control-flow node), ``label`` (``true_fn of %cond``) and ``type`` (the op). A node in
    a region has the region in its ``scope`` and ``outer``, the ids of the control-flow nodes around it, and an id
    prefixed with the region's key; a module called in a region is keyed under it too, with its path as ``label``.
    Each region input that an operand feeds and the region reads is an ``input`` node in the region, with an edge
    from the operand's producer; each region output has an edge to the control-flow node, which comes after its
    regions. Costs of region nodes come from ``costs`` as for any node (``node_costs`` of the region); the
    control-flow node's own cost already counts its regions, so a folded box counts a region node only when its
    control-flow node is not in the same box.
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

    def cluster(key: str, entry: dict) -> None:
        if key not in modules:
            modules[key] = entry
        if entry["parent"]:
            modules[entry["parent"]]["leaf"] = False

    def add_nodes(graph: Graph, key: str, base: list[str], outer: list[str], shared: tuple) -> None:
        """The nodes of ``graph`` (the top, or the region ``key`` inside the clusters ``base``, within the
        control-flow nodes ``outer`` whose scope stack is ``shared``)."""
        for n in graph.nodes:
            nid = f"{key}/{n.name}" if key else n.name
            stack = n.scope.stack
            common = 0
            while common < min(len(stack), len(shared)) and stack[common] == shared[common]:
                common += 1
            scope = list(base)
            for path, type_ in stack[common:]:
                k = f"{key}/{path}" if key else path
                cluster(k, {"type": type_, "parent": scope[-1] if scope else "", "depth": len(scope) + 1,
                            "leaf": True, **({"label": path} if key else {})})
                scope.append(k)
            regions = n.regions
            operands = region_operands(n) if regions else None
            for arg, region in regions:
                rk = region_key(key, n, arg)
                cluster(rk, {"type": n.op, "parent": scope[-1] if scope else "", "depth": len(scope) + 1,
                             "leaf": False, "label": f"{arg} of %{n.name}", "region": arg, "node": nid})
                inside, around = scope + [rk], outer + [nid]
                for v, src in zip(region.inputs, operands or ()):
                    sid = owner.get(id(src)) if isinstance(src, Value) else None
                    if sid is None or not (v._uses or v.meta.get("is_output")):
                        continue  # a weight (not a box, as at the top) or an input the region never reads
                    iid = f"{rk}/in:{v.name}"
                    nodes.append({"id": iid, "kind": "input", "name": v.name, "op": "input", "shape": shape_text(v),
                                  "scope": inside, "outer": around})
                    owner[id(v)] = iid
                    edges.append([sid, iid, src.name, shape_text(src), 0])
                add_nodes(region, rk, inside, around, stack)
                seen_out: set[int] = set()
                for v in iter_values(region.outputs):
                    src = owner.get(id(v))
                    if src is not None and id(v) not in seen_out:
                        seen_out.add(id(v))
                        edges.append([src, nid, v.name, shape_text(v), 0])
            d: dict[str, Any] = {"id": nid, "kind": "op", "name": n.name, "op": op_label(n),
                                 "shape": ", ".join(shape_text(v) for v in n.outputs), "scope": scope,
                                 "source": n.source}
            if outer:
                d["outer"] = outer
            if regions:
                d["regions"] = [region_key(key, n, arg) for arg, _ in regions]
            c = costs.get(n) if costs else None
            if c is not None:
                for f in ("flops", "macs", "params", "param_bytes", "out_bytes"):
                    d[f] = getattr(c, f, None)
                if getattr(c, "per_iteration", False):
                    d["per_iteration"] = True  # its flops are one iteration's of a loop
            nodes.append(d)
            # the operands feed the regions' inputs; the rest (a cond's predicate) comes into the node itself
            direct = n.args if operands is None else {
                k: a for k, a in n.args.items() if not isinstance(a, (list, tuple))}
            seen: set[int] = set()
            for v in iter_values(direct):
                src = owner.get(id(v))
                if src is not None and id(v) not in seen:
                    seen.add(id(v))
                    edges.append([src, nid, v.name, shape_text(v), int((id(v), id(n)) in marked)])
            for v in n.outputs:
                owner[id(v)] = nid

    add_nodes(g, "", [], [], ())
    for i, v in enumerate(iter_values(g.outputs)):
        oid = f"out:{i}"
        nodes.append({"id": oid, "kind": "output", "name": f"output {i}" if len(g.outputs) > 1 else "output",
                      "op": "output", "shape": shape_text(v), "scope": []})
        src = owner.get(id(v))
        if src is not None:
            edges.append([src, oid, v.name, shape_text(v), 0])
    return {"nodes": nodes, "edges": edges, "modules": modules,
            "model": g.meta.get("model_type") or "graph", "has_costs": costs is not None}


def region_key(outer: str, node: Node, arg: str) -> str:
    """A region's cluster key: ``cond:true_fn``, under the key of the region around it (``outer``, ``""`` at the
    top). No module path or node name holds a ``:`` (graphviz takes an id that starts with ``%`` for an anonymous
    one, so keys do not)."""
    return f"{outer}/{node.name}:{arg}" if outer else f"{node.name}:{arg}"


def region_operands(node: Node) -> list | None:
    """The values that feed the inputs of ``node``'s regions, in order: its list arguments one after another
    (``operands`` of a ``cond``; ``carried_inputs + additional_inputs`` of a ``while_loop``; ``init + xs +
    additional_inputs`` of a ``scan``; ``xs + args`` of a ``map``), or None where their count is not every
    region's input count (the node's arguments are then drawn as edges into the node itself)."""
    values = [v for a in node.args.values() if isinstance(a, (list, tuple)) for v in a]
    return values if all(len(r.inputs) == len(values) for _, r in node.regions) else None


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
    region: bool = False         # a folded region (a cond's branch, a loop's body)
    per_iteration: bool = False  # its FLOPs count one iteration of a loop (``NodeCost.per_iteration``)

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
            cost.append(f"{human(self.flops)} FLOPs" + (" per iteration" if self.per_iteration else ""))
        if cost:
            out.append(", ".join(cost))
        return out


@dataclass
class Folded:
    """A drawing at one depth: boxes, deduplicated edges between them, and the clusters left unfolded."""

    boxes: dict[str, Box]
    edges: list[tuple[str, str, str]]   # (src box, dst box, shape of the tensor crossing)
    skips: set[tuple[str, str]]         # the edges on a skip connection's short path
    clusters: dict[str, dict]           # unfolded module path -> {"type", "parent", "label", "region"}
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
        ``open_cluster(path, cluster)`` (its opening lines; ``cluster`` as in ``clusters``), the cluster's contents
        indented by two more spaces and ``close``; then ``edge(a, b, skip)`` per edge. Every line is indented two
        spaces at the top."""
        children, inside = self.nesting()
        lines: list[str] = []

        def emit(path: str, indent: str) -> None:
            lines.extend(indent + box(b) for b in inside.get(path, []))
            for child in children.get(path, []):
                lines.extend(indent + s for s in open_cluster(child, self.clusters[child]))
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
                m = modules[path]
                b = boxes[bid] = Box(bid, "module", m.get("label", path) or m["type"], m["type"], "", sc[:at], 0,
                                     flops=0 if data["has_costs"] else None, params=0 if data["has_costs"] else None,
                                     region=bool(m.get("region")))
            b.ops += int(n["kind"] == "op")  # a region's inputs fold in with it, but are no ops
            b.members.append(n["id"])
        else:
            bid = n["id"]
            boxes[bid] = Box(bid, n["kind"], n["name"], n["op"] if n["kind"] == "op" else "", n["shape"], list(sc),
                             flops=n.get("flops"), params=n.get("params"), members=[bid],
                             per_iteration=bool(n.get("per_iteration")))
        where[n["id"]] = bid
    for n in data["nodes"]:  # a folded box's costs; a control-flow node's cost counts its regions' nodes already
        b = boxes[where[n["id"]]]
        if b.kind == "module" and not any(where[o] == b.id for o in n.get("outer", ())):
            if b.flops is not None:
                b.flops += n.get("flops") or 0
            if b.params is not None:
                b.params += n.get("params") or 0
            b.per_iteration |= bool(n.get("per_iteration"))
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
            m = modules[path]
            clusters.setdefault(path, {"type": m["type"], "parent": m["parent"], "label": m.get("label", path),
                                       "region": m.get("region")})
    return Folded(boxes, [(a, b, s) for (a, b), s in edges.items()], skips - plain, clusters, depth)
