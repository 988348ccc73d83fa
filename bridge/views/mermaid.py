"""Mermaid ``flowchart TD`` text, to paste into Markdown (GitHub, GitLab and mkdocs-material render it)."""
from __future__ import annotations

import re

from .graphdata import Folded

_OPEN = {"op": '["', "module": '[["', "input": '(["', "output": '(["'}
_CLOSE = {"op": '"]', "module": '"]]', "input": '"])', "output": '"])'}
_REGION = "fill:#f6f3fb,stroke:#7b61a8"  # a region's subgraph: shaded, as in DOT


def _text(s: str) -> str:
    # Mermaid labels are quoted strings; entity codes keep quotes and angle brackets literal
    return s.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def to_mermaid(folded: Folded) -> str:
    """Mermaid text for a folded graph: one ``subgraph`` per unfolded module or region (regions shaded by a
    ``style`` line), one node per box, skip connections as dotted ``-. skip .->`` arrows."""
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

    lines = ["flowchart TD"] + folded.outline(
        lambda b: ident(b.id, "n_") + _OPEN[b.kind] + "<br/>".join(_text(s) for s in b.lines()) + _CLOSE[b.kind],
        lambda path, c: [f'subgraph {ident(path, "s_")}["{_text(c["label"] + " (" + c["type"] + ")")}"]'],
        "end",
        lambda a, b, skip: f"{ids['n_' + a]} {'-. skip .->' if skip else '-->'} {ids['n_' + b]}")
    lines += [f"  style {ids['s_' + p]} {_REGION}" for p, c in folded.clusters.items() if c["region"]]
    return "\n".join(lines) + "\n"
