"""Mermaid ``flowchart TD`` text, to paste into Markdown (GitHub, GitLab and mkdocs-material render it)."""
from __future__ import annotations

import re

from .graphdata import Folded

_OPEN = {"op": '["', "module": '[["', "input": '(["', "output": '(["'}
_CLOSE = {"op": '"]', "module": '"]]', "input": '"])', "output": '"])'}


def _text(s: str) -> str:
    # Mermaid labels are quoted strings; entity codes keep quotes and angle brackets literal
    return s.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def to_mermaid(folded: Folded) -> str:
    """Mermaid text for a folded graph: one ``subgraph`` per unfolded module, one node per box, skip
    connections as dotted ``-. skip .->`` arrows."""
    ids: dict[str, str] = {}
    taken: set[str] = set()

    def ident(key: str, prefix: str) -> str:
        # boxes (n_) and clusters (s_) live apart: an op and a module may share a name
        if prefix + key not in ids:
            base = prefix + re.sub(r"\W", "_", key)
            name, i = base, 1
            while name in taken:
                name, i = f"{base}_{i}", i + 1
            taken.add(name)
            ids[prefix + key] = name
        return ids[prefix + key]

    lines = ["flowchart TD"]
    children, inside = folded.nesting()

    def emit(path: str, indent: str) -> None:
        for b in inside.get(path, []):
            label = "<br/>".join(_text(s) for s in b.lines())
            lines.append(f"{indent}{ident(b.id, 'n_')}{_OPEN[b.kind]}{label}{_CLOSE[b.kind]}")
        for child in children.get(path, []):
            title = _text(f"{child} ({folded.clusters[child]['type']})")
            lines.append(f'{indent}subgraph {ident(child, "s_")}["{title}"]')
            emit(child, indent + "  ")
            lines.append(f"{indent}end")

    emit("", "  ")
    for a, b, _shape in folded.edges:
        arrow = "-. skip .->" if (a, b) in folded.skips else "-->"
        lines.append(f"  {ids['n_' + a]} {arrow} {ids['n_' + b]}")
    return "\n".join(lines) + "\n"
