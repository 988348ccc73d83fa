"""The stable text form of a graph: one line per node with op, inputs, output type and module scope.

    graph(%x: f32[1, 3, 8, 8]) {
      %conv1 : f32[1, 4, 6, 6] = conv2d(%x, %conv1.weight, %conv1.bias)  # conv1 (Conv2d)
      return %conv1
    }
"""
from __future__ import annotations

from typing import Any

import torch

from .graph import Graph, Node, Value


def format_arg(a: Any) -> str:
    if isinstance(a, Value):
        return f"%{a.name}"
    if isinstance(a, list):
        return "[" + ", ".join(format_arg(x) for x in a) + "]"
    if isinstance(a, tuple):
        inner = ", ".join(format_arg(x) for x in a)
        return f"({inner}{',' if len(a) == 1 else ''})"
    if isinstance(a, dict):
        return "{" + ", ".join(f"{k!r}: {format_arg(v)}" for k, v in a.items()) + "}"
    if isinstance(a, slice):
        return ":".join("" if x is None else format_arg(x) for x in (a.start, a.stop, a.step)).rstrip(":") or ":"
    if isinstance(a, torch.dtype):
        return str(a).replace("torch.", "")
    if isinstance(a, torch.Tensor):
        return f"tensor(shape={list(a.shape)}, dtype={str(a.dtype).replace('torch.', '')})"
    if isinstance(a, float):
        return repr(a)
    if isinstance(a, Graph):  # a region: printed after its node's line
        return "<region>"
    if callable(a) and hasattr(a, "__name__"):
        return a.__name__
    return repr(a)


def format_node(node: Node, signature=None) -> str:
    """``%out : f32[...] = op(%a, %b, k=v)  # scope (Type)``; arguments equal to the op's defaults are left out."""
    from ..ops import registry

    opdef = registry.get(node.op)
    defaults = opdef.defaults if opdef is not None else {}
    parts, positional = [], True
    for i, (k, v) in enumerate(node.args.items()):
        if k in defaults and _is_default(defaults[k], v):
            positional = False
            continue
        if isinstance(v, Graph):  # a region: named here, printed after the node's line
            parts.append(k)
            continue
        if positional and (opdef is None or i < opdef.n_tensor_params):
            parts.append(format_arg(v))
        else:
            positional = False
            parts.append(f"{k}={format_arg(v)}")
    op = op_label(node)
    outs = ", ".join(f"%{v.name}" for v in node.outputs)
    types = ", ".join(str(v.spec) if v.spec is not None else "?" for v in node.outputs)
    line = f"{outs} : {types} = {op}({', '.join(parts)})"
    if node.scope:
        line += f"  # {node.scope.path or '<root>'} ({node.scope.type})"
    return line


def op_label(node) -> str:
    """The op as printed: its name, or ``opaque[<qualified target>]`` for an opaque call."""
    return node.op if node.op != "opaque" else f"opaque[{target_name(node.target)}]"


def target_name(t: Any) -> str:
    if isinstance(t, str):
        return t
    mod = getattr(t, "__module__", None) or ""
    name = getattr(t, "__qualname__", None) or getattr(t, "__name__", None) or type(t).__name__
    return f"{mod}.{name}" if mod and not mod.startswith("builtins") else name


def _same(a, b) -> bool:
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:
        return False


def _is_default(default, v) -> bool:
    """``v`` is the op's default: equal to it, or, for an int default such as conv's ``stride=1``, a tuple with
    that int for every spatial dim (``stride=(1, 1)``, as ``nn.Conv2d`` stores it: torch reads both the same)."""
    if type(default) is int and isinstance(v, (tuple, list)) and v:
        return all(type(x) is int and x == default for x in v)
    return _same(default, v)


def format_graph(g: Graph, head: str = "graph", indent: str = "") -> str:
    """The graph's text; a control-flow node's regions follow its line, indented, each as a graph of its own
    headed by its argument name (``true_fn(%x: f32[2, 4]) { ... }``)."""
    ins = ", ".join(f"%{v.name}: {v.spec}" for v in g.inputs)
    lines = [f"{indent}{head}({ins}) {{"]
    for n in g.nodes:
        lines.append(f"{indent}  " + format_node(n))
        for key, region in n.regions:
            lines.append(format_graph(region, key, indent + "    "))
    lines.append(f"{indent}  return {g.output_description()}")
    lines.append(f"{indent}}}")
    return "\n".join(lines)
