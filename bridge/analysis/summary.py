"""The per-layer table behind ``bridge.summary``: the one a user looks at first (as torchinfo's), from the graph.

Rows follow the module hierarchy down to ``depth`` (``by="module"``, the default) or are one per node
(``by="node"``). A module row is one *call* of the module: the consecutive nodes whose scope lies inside
it (a module called twice, as a shared ReLU, gives two rows; so does a one-op module such as ``nn.Linear``
called twice back to back, while two back-to-back calls of a container with nothing in between give one).
A node outside any module (``torch.flatten`` in ``forward``) is a row of its own; in a model with modules, a
run of two or more is one row of kind ``"ops"`` (a HuggingFace model's mask plumbing), while a model with no
modules keeps a row per op. Every number of a module row covers all its nodes, children included; the model
row (depth 0) covers the whole graph.

For other code (the layer view of pictures and reports), ``summarize(g).rows`` is the public layer view:
each ``Row`` has ``scope`` (dotted module path), ``type``, ``depth``, ``output_shape``, ``params``,
``flops``, ``macs``, and ``nodes`` (the graph nodes it covers); ``module_rows(g, depth)`` gives the same
rows for a Graph without building the table.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import BridgeError
from ..ir.graph import Graph, Node
from ..ir.spec import TensorSpec, dtype_short
from ..ops._util import dim_values, numel
from .costs import (NodeCost, first_param_uses, graph_dims, node_costs, param_key, per_iteration, trainable,
                    value_bytes)
from .memory import is_activation, liveness


@dataclass
class Row:
    """One row of the summary: a module call (``kind="module"``), a node (``"op"``), a run of top-level nodes
    (``"ops"``) or the model (``"model"``)."""

    name: str                 # what the table shows: the module's attribute path, or the node's name
    type: str                 # module class name, or the op
    kind: str                 # "model" | "module" | "op" | "ops"
    depth: int                # 0 for the model, 1 for its children, ...
    scope: str                # dotted module path ("" for the model and for ops outside any module)
    nodes: list[Node] = field(default_factory=list)
    output_shape: list = field(default_factory=list)   # one shape (list of int or symbol) per output tensor
    output_dtype: list = field(default_factory=list)
    params: int = 0
    trainable_params: int = 0
    flops: int = 0
    macs: int = 0
    output_bytes: int = 0      # bytes of the tensors leaving the row
    activation_bytes: int = 0  # bytes of every tensor its nodes write

    @property
    def frozen_params(self) -> int:
        return self.params - self.trainable_params

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "kind": self.kind, "depth": self.depth, "scope": self.scope,
                "output_shape": self.output_shape, "output_dtype": self.output_dtype, "params": self.params,
                "trainable_params": self.trainable_params, "frozen_params": self.frozen_params,
                "flops": self.flops, "macs": self.macs, "output_bytes": self.output_bytes,
                "activation_bytes": self.activation_bytes, "nodes": [n.name for n in self.nodes]}


class Summary:
    """The summary table: ``rows``, ``totals`` (a dict), ``str(s)`` (the table as plain text, exactly as rich lays
    out ``table()``), ``to_json()``, ``to_csv()``, ``to_dict()``, and ``table()`` (the ``rich.table.Table``)."""

    def __init__(self, graph: Graph, rows: list[Row], totals: dict[str, Any], *, by: str, depth: int | None,
                 costs: dict[Node, NodeCost]):
        self.graph = graph
        self.rows = rows
        self.totals = totals
        self.by = by
        self.depth = depth
        self.costs = costs

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.rows[0].type if self.rows else "", "by": self.by, "depth": self.depth,
                "rows": [r.to_dict() for r in self.rows], "totals": dict(self.totals)}

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def to_csv(self) -> str:
        """One line per row: name, type, kind, depth, scope, output shape, dtype and every number."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        cols = ["name", "type", "kind", "depth", "scope", "output_shape", "output_dtype", "params",
                "trainable_params", "frozen_params", "flops", "macs", "output_bytes", "activation_bytes"]
        w.writerow(cols)
        for r in self.rows:
            d = r.to_dict()
            d["output_shape"] = " ".join(format_shape(s) for s in r.output_shape)
            d["output_dtype"] = " ".join(r.output_dtype)
            w.writerow([d[c] for c in cols])
        return buf.getvalue()

    def table(self):
        """The summary as a ``rich.table.Table`` (numbers exact, with thousands separators)."""
        from rich import box
        from rich.table import Table
        from rich.text import Text

        title, columns, rows = self._cells()
        t = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", show_footer=False, pad_edge=False)
        for header, justify in columns:
            t.add_column(header, justify=justify, no_wrap=True)
        for cells in rows:
            t.add_row(*(Text(c) for c in cells))  # Text: "[batch, 8]" is data, not rich markup
        return t

    def _cells(self) -> tuple[str, list[tuple[str, str]], list[list[str]]]:
        """The table's title, its columns as (header, justify), and each row's cells as text: what ``table()``
        and the plain-text rendering both show."""
        columns = [("Layer (type)" if self.by == "module" else "Node (op)", "left")]
        if self.by == "node":
            columns.append(("Scope", "left"))
        columns.append(("Output", "left"))
        columns += [(col, "right") for col in ("Param #", "FLOPs", "MACs", "Activations (B)")]
        rows = []
        parents: list[str] = []  # the scope of the last row at each depth
        for r in self.rows:
            del parents[r.depth:]
            cells = [_label(r, self.by, parents[-1] if parents else "")] + (
                [r.scope or "-"] if self.by == "node" else [])
            parents.append(r.scope)
            cells += [format_outputs(r.output_shape, r.output_dtype) or "-",
                      _num(r.params), _num(r.flops), _num(r.macs), _num(r.activation_bytes)]
            rows.append(cells)
        return f"{self.rows[0].type} summary" if self.rows else "summary", columns, rows

    def footer(self) -> list[str]:
        """The totals below the table, one line each."""
        T = self.totals
        lines = [f"Total params: {T['params']:,} ({human_bytes(T['param_bytes'])})",
                 f"Trainable params: {T['trainable_params']:,}",
                 f"Frozen params: {T['frozen_params']:,}"]
        if T.get("unused_params"):
            lines.append(f"Unused params (no node reads them): {T['unused_params']:,}")
        lines += [f"FLOPs: {T['flops']:,}{_si(T['flops'])}",
                  f"MACs: {T['macs']:,}{_si(T['macs'])}",
                  *([f"Loops counted for one iteration (the trip count is known only at run time): "
                     f"{', '.join(T['per_iteration'])}"] if T.get("per_iteration") else []),
                  f"Input size: {human_bytes(T['input_bytes'])}; output size: {human_bytes(T['output_bytes'])}",
                  f"Activations written: {human_bytes(T['activation_bytes'])}; peak live: "
                  f"{human_bytes(T['peak_activation_bytes'])}" + (f" at {T['peak_at']}" if T.get("peak_at") else ""),
                  f"Parameter memory: {human_bytes(T['param_bytes'])}; buffers: {human_bytes(T['buffer_bytes'])}",
                  f"Estimated total (params + buffers + peak activations): {human_bytes(T['total_bytes'])}"]
        if T.get("opaque_nodes"):
            lines.append(f"Opaque nodes (costs not counted): {T['opaque_nodes']}")
        if T.get("dims"):
            lines.append("Symbolic dims sized as: " + ", ".join(f"{k}={v}" for k, v in T["dims"].items()))
        if T.get("unsized_dims"):
            lines.append("Symbolic dims with no size, counted as 1 (give dims={...}): " + ", ".join(T["unsized_dims"]))
        return lines

    def render(self, width: int = 1000) -> str:
        """The table and its totals as plain text (no colour codes); the table takes the width it needs, up to
        ``width`` columns."""
        text = simple_table(*self._cells(), width)
        if text is None:  # wide characters, or wider than ``width``: rich lays it out
            text = plain_text(self.table(), width)
        return text + "\n" + "\n".join(self.footer()) + "\n"

    def __str__(self) -> str:
        return self.render()

    def __rich__(self):
        from rich.console import Group
        from rich.text import Text

        return Group(self.table(), Text("\n".join(self.footer())))

    def __repr__(self) -> str:
        return (f"<bridge Summary: {len(self.rows)} rows, {self.totals['params']:,} params, "
                f"{self.totals['flops']:,} FLOPs>")


def summarize(g: Graph, *, module: Any = None, depth: int | None = 3, by: str = "module",
              dims: dict[str, int] | None = None) -> Summary:
    """Per-layer table of graph ``g`` (``bridge.summary`` traces or imports a model first): output shapes and
    dtypes, parameters, FLOPs, MACs, activation bytes, and totals with parameter memory and peak activation
    memory. ``module``: the nn.Module ``g`` was traced from, if any (its parameters the trace never reached count
    as unused). ``depth``: how deep the module hierarchy goes (None: all the way; as torchinfo's ``depth``).
    ``by="node"``: one row per node instead. ``dims`` sizes symbolic dims (default: the traced example).

    What each number means: docs/analysis.md.
    """
    if by not in ("module", "node"):
        raise BridgeError(f"summary(by=...) is 'module' or 'node', not {by!r}")
    if depth is not None and depth < 0:
        raise BridgeError(f"summary(depth=...) is a depth >= 0 or None, not {depth!r}")
    costs = node_costs(g, dims)
    rows = module_rows(g, depth, costs=costs, dims=dims) if by == "module" else node_rows(g, costs=costs, dims=dims)
    return Summary(g, rows, totals(g, costs, module=module, dims=dims), by=by, depth=depth, costs=costs)


summary = summarize  # the name this function had when it also traced models (bridge.summary does that now)


def module_rows(g: Graph, depth: int | None = None, *, costs: dict[Node, NodeCost] | None = None,
                dims: dict[str, int] | None = None) -> list[Row]:
    """Rows by module hierarchy down to ``depth`` (None: all), in execution order, the model row first."""
    costs = costs if costs is not None else node_costs(g, dims)
    root = Row(name=_model_name(g), type=_model_name(g), kind="model", depth=0, scope="")
    rows = [root]
    open_: list[tuple[tuple, Row]] = []
    for node in g.nodes:
        stack = node.scope.stack if depth is None else node.scope.stack[:depth]
        j = 0
        while j < len(open_) and j < len(stack) and open_[j][0] == stack[j]:
            j += 1
        if j and j == len(stack) == len(node.scope.stack) and _is_call(node) and _is_call(open_[j - 1][1].nodes[-1]):
            j -= 1  # a module that is one op (Linear, ReLU) called again right away: a second call, a new row
        del open_[j:]
        root.nodes.append(node)
        if not stack:
            if depth is None or depth >= 1:
                rows.append(Row(name=node.name, type=node.op, kind="op", depth=1, scope="", nodes=[node]))
            continue
        for k in range(j, len(stack)):
            path, typ = stack[k]
            r = Row(name=path, type=typ, kind="module", depth=k + 1, scope=path)
            rows.append(r)
            open_.append((stack[k], r))
        for _, r in open_:
            r.nodes.append(node)
    if any(n.scope for n in g.nodes):  # a model with modules: its loose top-level ops are plumbing between them
        rows = _fold_op_runs(rows)
    _fill(g, rows, costs, dims)
    return rows


def _fold_op_runs(rows: list[Row]) -> list[Row]:
    """Each run of two or more consecutive top-level op rows (no module called between them) becomes one row
    of kind ``"ops"``: the mask and position plumbing of a HuggingFace model is one row, not dozens. Rows next
    to each other in ``rows`` are consecutive in the graph (a node inside a module opens a module row)."""
    out: list[Row] = []
    for r in rows:
        prev = out[-1] if out else None
        if r.kind == "op" and prev is not None and prev.kind in ("op", "ops"):
            if prev.kind == "op":
                prev = out[-1] = Row(name="", type="", kind="ops", depth=1, scope="", nodes=list(prev.nodes))
            prev.nodes += r.nodes
        else:
            out.append(r)
    for r in out:
        if r.kind == "ops":
            r.name = f"%{r.nodes[0].name}..%{r.nodes[-1].name}"
            r.type = _op_mix(r.nodes)
    return out


def _op_mix(nodes: list[Node], kinds: int = 3) -> str:
    """``"12 ops: arange x4, getitem x4, add x2, ..."``: how many nodes, and their ops, the most frequent first
    (ties in order of appearance), ``kinds`` of them at most."""
    counts: dict[str, int] = {}
    for n in nodes:
        counts[n.op] = counts.get(n.op, 0) + 1
    top = sorted(counts.items(), key=lambda kv: -kv[1])  # stable: ties keep their order of appearance
    listed = ", ".join(op if k == 1 else f"{op} x{k}" for op, k in top[:kinds])
    return f"{len(nodes)} ops: {listed}" + (", ..." if len(top) > kinds else "")


def node_rows(g: Graph, *, costs: dict[Node, NodeCost] | None = None, dims: dict[str, int] | None = None) -> list[Row]:
    """One row per node (depth: its module nesting), the model row first."""
    costs = costs if costs is not None else node_costs(g, dims)
    rows = [Row(name=_model_name(g), type=_model_name(g), kind="model", depth=0, scope="", nodes=list(g.nodes))]
    rows += [Row(name=n.name, type=n.op, kind="op", depth=len(n.scope.stack) + 1, scope=n.scope.path, nodes=[n])
             for n in g.nodes]
    _fill(g, rows, costs, dims)
    return rows


def totals(g: Graph, costs: dict[Node, NodeCost], *, module: Any = None, dims: dict[str, int] | None = None) -> dict:
    """The summary's totals (see docs/analysis.md for each key)."""
    owned = first_param_uses(g)
    used = [v for vs in owned.values() for v in vs]
    seen = {param_key(v) for v in used}
    unused = []
    for c in g.params:  # parameters of the graph no node reads
        if param_key(c) not in seen:
            seen.add(param_key(c))
            unused.append(c)
    extra = 0
    if module is not None:  # parameters of the module the trace never reached
        ids = {id(c.const) for c in g.params}
        extra_params = [p for p in module.parameters() if id(p) not in ids]
        extra = sum(p.numel() for p in extra_params)
        extra_trainable = sum(p.numel() for p in extra_params if p.requires_grad)
        extra_bytes = sum(p.numel() * p.element_size() for p in extra_params)
    else:
        extra_trainable = extra_bytes = 0
    live = liveness(g, dims)
    with dim_values(graph_dims(g, dims)):
        p_all = used + unused
        n_params = sum(numel(v) for v in p_all) + extra
        n_train = sum(numel(v) for v in p_all if trainable(v)) + extra_trainable
        param_bytes = sum(value_bytes(v) for v in p_all) + extra_bytes
        buffer_bytes = sum(value_bytes(v) for v in g.buffers)
        constant_bytes = sum(value_bytes(v) for v in g.constants if v.kind == "constant")
    out = {"params": n_params, "trainable_params": n_train, "frozen_params": n_params - n_train,
           "unused_params": sum(numel(v) for v in unused) + extra,
           "param_bytes": param_bytes, "buffer_bytes": buffer_bytes, "constant_bytes": constant_bytes,
           "flops": sum(c.flops for c in costs.values()), "macs": sum(c.macs for c in costs.values()),
           "input_bytes": live.input_bytes, "output_bytes": live.output_bytes,
           "activation_bytes": sum(c.out_bytes for c in costs.values()),
           "peak_activation_bytes": live.peak_bytes,
           "peak_at": _describe(live.peak_node) if live.peak_node is not None else "the inputs",
           "total_bytes": param_bytes + buffer_bytes + constant_bytes + live.peak_bytes,
           "nodes": len(g.nodes), "opaque_nodes": len(g.opaque_nodes())}
    loops = [_describe(n) for n, c in costs.items() if c.per_iteration]
    if loops:
        out["per_iteration"] = loops  # their flops and macs are one iteration's
    dv = graph_dims(g, dims)
    if dv:
        out["dims"] = dv
    unsized = sorted(_symbols(g) - set(dv))
    if unsized:
        out["unsized_dims"] = unsized  # counted as 1: the numbers are per unit of these dims
    return out


def _symbols(g: Graph) -> set[str]:
    """The symbol names in the graph's tensor shapes (``"2*batch"`` -> ``batch``)."""
    import re

    from ..ops._util import _SYMPY_FUNCS

    names: set[str] = set()
    for v in g.values():
        for d in getattr(v.spec, "shape", ()) if isinstance(v.spec, TensorSpec) else ():
            if not isinstance(d, int):
                names.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", str(d)))
    return names - set(_SYMPY_FUNCS)


# ---- helpers ----------------------------------------------------------------------------------------
def _fill(g: Graph, rows: list[Row], costs: dict[Node, NodeCost], dims) -> None:
    owned = first_param_uses(g)
    with dim_values(graph_dims(g, dims)):
        for r in rows:
            for n in r.nodes:
                c = costs[n]
                r.params += c.params
                r.trainable_params += sum(numel(v) for v in owned.get(n, ()) if trainable(v))
                r.flops += c.flops
                r.macs += c.macs
                r.activation_bytes += c.out_bytes
            if r.kind == "model":
                outs = list({id(v): v for v in g.outputs if is_activation(v)}.values())
            else:
                outs = leaving(r.nodes)
            r.output_shape = [list(v.spec.shape) for v in outs]
            r.output_dtype = [dtype_short(v.spec.dtype) for v in outs]
            r.output_bytes = sum(value_bytes(v) for v in outs)


def leaving(nodes: list[Node]) -> list:
    """The tensors the nodes write that something outside them reads (or that are graph outputs)."""
    inside = set(nodes)
    return [v for n in nodes for v in n.outputs
            if v.is_tensor and (v.meta.get("is_output") or any(u not in inside for u in v.users))]


def _is_call(n: Node) -> bool:
    """The node is one whole call of the module of its innermost scope (a registry op spelled as a module)."""
    import torch

    return isinstance(n.target, torch.nn.Module) and bool(n.scope)


def _model_name(g: Graph) -> str:
    return str(g.meta.get("model_type") or g.meta.get("onnx_graph_name") or "Graph")


def _describe(n: Node) -> str:
    return f"%{n.name} ({n.scope.path})" if n.scope else f"%{n.name}"


def _label(r: Row, by: str, parent: str = "") -> str:
    """The first cell of a row: a module by its path below its parent row's (``layer.0`` under ``encoder``,
    ``h.0`` under a GPT-2 model: a ModuleList is never called, so it has no row), an op by its node name, a
    folded run of ops by their count and kinds."""
    if r.kind == "model":
        return f"{r.type}"
    typ = f"{r.type}, per iteration" if r.kind == "op" and per_iteration(r.nodes[0]) else r.type
    if by == "node":
        return f"{'  ' * max(r.depth - 1, 0)}%{r.name} ({typ})"
    indent = f"{'  ' * (r.depth - 1)}└─"
    if r.kind == "ops":
        return f"{indent}{r.type}"
    if r.kind == "module":
        short = r.name[len(parent) + 1:] if parent and r.name.startswith(parent + ".") else r.name
    else:
        short = f"%{r.name}"
    return f"{indent}{short} ({typ})"


def plain_text(renderable, width: int) -> str:
    """A rich renderable as plain text: no colour codes, no trailing spaces."""
    from rich.console import Console

    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None, force_terminal=False, no_color=True,
            legacy_windows=False).print(renderable)
    return "\n".join(line.rstrip() for line in buf.getvalue().rstrip().splitlines())


def simple_table(title: str, columns: list[tuple[str, str]], rows: list[list[str]], width: int) -> str | None:
    """The text ``plain_text`` gives for a rich ``Table(title, box=SIMPLE_HEAD, title_justify="left",
    pad_edge=False)`` of no-wrap ``columns`` (header, "left" or "right") and ``rows``, laid out here directly
    (rich takes ~0.2 ms a row, the bulk of a summary of a large model); None where rich's layout could differ: a
    character that is not one cell wide (only printable ASCII and the tree's box lines are), a title rich would
    read as markup or wrap, or a table wider than ``width``."""
    cells = [h for h, _ in columns] + [c for row in rows for c in row]
    if not all(_one_cell_each(c) for c in cells) or not _one_cell_each(title) or any(ch in title for ch in "[]:"):
        return None
    widths = [max(len(c) for c in col) for col in zip([h for h, _ in columns], *rows)]
    inner = sum(widths) + 3 * (len(widths) - 1)  # cells, one space of padding each side and a separator between
    if inner + 2 > width or len(title) > inner + 2:
        return None

    def line(texts):
        return " " + "   ".join(t.ljust(w) if j == "left" else t.rjust(w)
                                for t, w, (_, j) in zip(texts, widths, columns))

    out = [title, "", line([h for h, _ in columns]), " " + "─" * inner] + [line(r) for r in rows]
    return "\n".join(text.rstrip() for text in out)


def _one_cell_each(text: str) -> bool:
    """Every character of ``text`` takes one terminal cell: printable ASCII, or the tree's box lines."""
    return text.isprintable() and (text.isascii() or all(ch.isascii() or ch in "└─" for ch in text))


def format_outputs(shapes, dtypes) -> str:
    """``f32[2, 8, 16, 16]`` per output tensor, comma-separated."""
    return ", ".join(f"{dt}{format_shape(sh)}" for sh, dt in zip(shapes, dtypes))


def format_shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _num(n: int) -> str:
    return f"{n:,}" if n else "--"


def _si(n: float) -> str:
    """`` (4.09 G)`` for a large count; nothing below a thousand."""
    for unit, k in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= k:
            return f" ({n / k:.2f} {unit})"
    return ""


def human_bytes(n: int) -> str:
    """Bytes in the largest binary unit that keeps the number >= 1 (B, KiB, MiB, GiB)."""
    for unit, k in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= k:
            return f"{n / k:.2f} {unit}"
    return f"{n} B"


__all__ = ["summarize", "summary", "Summary", "Row", "module_rows", "node_rows", "totals", "format_shape",
           "format_outputs"]
