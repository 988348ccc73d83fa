"""The op catalog: every canonical op with its family, torch spellings, FLOP rule and ONNX support, as the
Markdown table in docs/ops.md (``python -m bridge.ops.catalog > docs/ops.md`` regenerates it)."""
from __future__ import annotations

from .registry import all_ops


def _name(fn) -> str:
    mod = getattr(fn, "__module__", "") or ""
    short = {"torch.nn.functional": "F", "torch._C._nn": "F", "torch._C._VariableFunctions": "torch",
             "_operator": "operator", "torch.functional": "torch", "torch._C._special": "torch.special",
             "torch._C._linalg": "torch.linalg"}.get(mod, mod)
    return f"{short}.{getattr(fn, '__name__', repr(fn))}" if short else getattr(fn, "__name__", repr(fn))


def markdown() -> str:
    ops = all_ops()
    lines = [
        "# Op catalog",
        "",
        "Every canonical op bridge knows, generated from the registry (`python -m bridge.ops.catalog`). A call",
        "that none of these spellings matches becomes an `opaque` node: it still runs in torch, and every",
        "analysis and export names it.",
        "",
        f"{len(ops)} ops; {sum(1 for d in ops.values() if d.onnx)} with an ONNX lowering.",
        "",
        "| op | family | torch spellings | ONNX |",
        "| --- | --- | --- | --- |",
    ]
    for name in sorted(ops, key=lambda n: (ops[n].family, n)):
        d = ops[name]
        spellings = ([f"`{_name(f)}`" for f in d.functions] + [f"`Tensor.{m}`" for m in d.methods]
                     + [f"`nn.{c.__name__}`" for c in d.modules] + [f"`{q}`" for q in d.external])
        aten = f"{len(d.aten)} aten" if d.aten else ""
        cell = ", ".join(spellings[:8]) + (f" (+{len(spellings) - 8})" if len(spellings) > 8 else "")
        cell = "; ".join(x for x in (cell, aten) if x) or "-"
        lines.append(f"| `{name}` | {d.family} | {cell.replace('|', '&#124;')} | {'yes' if d.onnx else 'no'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
