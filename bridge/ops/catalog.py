"""The op catalog: every canonical op with its family, torch spellings, facts and ONNX lowering, then every ONNX
op type bridge imports with the versions its importers start at, as the Markdown tables of docs/ops.md
(``python -m bridge.ops.catalog > docs/ops.md`` regenerates it)."""
from __future__ import annotations

from .registry import all_ops, onnx_importers


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
        "Facts, which passes, codegen and analysis read from the registry: **random** (CSE and folding keep every",
        "call), **effect** (changes state beyond its outputs: DCE keeps it), **commutative** (the rewriter matches",
        "both operand orders), **view** (shares its input's storage), **fresh** (a new tensor a later op may write",
        "into), **contiguous** (a new contiguous tensor), **inplace** `method` (codegen writes into a dying input),",
        "**data-dependent** (the output's size depends on the input's values: it stays a symbol, `u0`).",
        "A fact that depends on the node's arguments (dropout is random only in training) is marked *when*.",
        "",
        "| op | family | torch spellings | facts | ONNX |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in sorted(ops, key=lambda n: (ops[n].family, n)):
        d = ops[name]
        spellings = ([f"`{_name(f)}`" for f in d.functions] + [f"`Tensor.{m}`" for m in d.methods]
                     + [f"`nn.{c.__name__}`" for c in d.modules] + [f"`{q}`" for q in d.external])
        aten = f"{len(d.aten)} aten" if d.aten else ""
        cell = ", ".join(spellings[:8]) + (f" (+{len(spellings) - 8})" if len(spellings) > 8 else "")
        cell = "; ".join(x for x in (cell, aten) if x) or "-"
        lines.append(f"| `{name}` | {d.family} | {cell.replace('|', '&#124;')} | {_facts(d)} | "
                     f"{'yes' if d.onnx else 'no'} |")
    importers: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for (domain, op_type, since), fn in onnx_importers().items():
        importers.setdefault((domain, op_type), []).append((since, fn.__module__.rsplit(".", 1)[-1]))
    lines += [
        "",
        "## ONNX import",
        "",
        f"{len(importers)} ONNX op types import (`bridge.from_onnx`), each by the importer beside its op in the family",
        "file named here. ONNX defines an operator by (domain, op type, since version): a model is read with the",
        "newest importer whose version is at most the model's opset (files below opset 13 are refused first).",
        "",
        "| ONNX op type | importer versions | family |",
        "| --- | --- | --- |",
    ]
    for (domain, op_type), versions in sorted(importers.items()):
        since = ", ".join(str(v) for v, _ in sorted(versions))
        fams = ", ".join(sorted({f for _, f in versions}))
        lines.append(f"| `{domain + '::' if domain else ''}{op_type}` | {since} | {fams} |")
    return "\n".join(lines + _core_aten_section()) + "\n"


def _core_aten_section() -> list[str]:
    """PyTorch's Core ATen opset, as bridge/ops/core_aten.py classifies it for the installed torch."""
    import torch

    from . import core_aten

    cov = core_aten.coverage()
    lines = [
        "",
        "## Core ATen",
        "",
        f"PyTorch's Core ATen opset (torch {torch.__version__.split('+')[0]}: {sum(len(v) for v in cov.values())} "
        f"overloads tagged `core`, the operators torch.export decomposes to): {len(cov['mapped'])} are canonical "
        "ops' aten spellings, with ONNX lowerings. The others:",
        "",
        "| operator | why it has no canonical op |",
        "| --- | --- |",
    ]
    lines += [f"| `{op}` | {core_aten.EXCLUDED[op]} |" for op in cov["excluded"]]
    lines += [f"| `{op}` | not yet: {core_aten.NOT_YET[op]} |" for op in cov["not_yet"]]
    lines += [f"| `{op}` | unknown to this bridge (a newer torch): not yet mapped |" for op in cov["unknown"]]
    return lines


def _facts(d) -> str:
    out = []
    for fact in ("random", "effect", "commutative"):
        v = getattr(d, fact)
        if v:
            out.append(fact + (" *when*" if callable(v) else ""))
    out += [label for fact, label in (("view", "view"), ("fresh_output", "fresh"), ("contiguous_output", "contiguous"))
            if getattr(d, fact)]
    if d.inplace:
        out.append(f"inplace `{d.inplace}`")
    if callable(d.data_dependent) or d.is_data_dependent(None):
        out.append("data-dependent" + (" *when*" if callable(d.data_dependent) else ""))
    return ", ".join(out) or "-"


if __name__ == "__main__":
    print(markdown(), end="")
