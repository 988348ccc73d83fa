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
    if mod == "torch._C._fft":  # torch.fft.rfft is torch._C._fft.fft_rfft
        return f"torch.fft.{fn.__name__.removeprefix('fft_')}"
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
        "ONNX **complex**: the lowering also takes complex tensors (float `[..., 2]` pairs in the file, docs/onnx.md);",
        "export refuses a complex tensor at any other op.",
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
                     f"{('yes, complex' if d.onnx_complex else 'yes') if d.onnx else 'no'} |")
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
    return "\n".join(lines + _core_aten_section() + _opinfo_section()) + "\n"


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


def claimed_opinfos(op_db) -> list:
    """The OpInfos of torch's ``op_db`` whose function or Tensor method maps to a canonical op: those the OpInfo
    consistency test (tests/ops/test_opinfo.py) runs."""
    from .registry import for_function, for_method

    out = []
    for oi in op_db:
        mv = getattr(oi, "method_variant", None)
        if (oi.op is not None and for_function(oi.op)) or \
                (mv is not None and getattr(mv, "__name__", None) and for_method(mv.__name__)):
            out.append(oi)
    return out


OPINFO_DTYPES = ("float32", "int64", "bool")
OPINFO_PATHS = ("trace", "run", "onnx", "import")


def _opinfo_section() -> list[str]:
    """PyTorch's OpInfo database against bridge: what tests/ops/test_opinfo.py checks, and its exclusion list
    (bridge/ops/opinfo_exclusions.py) with the reasons."""
    import warnings

    import torch
    from torch.testing._internal.common_methods_invocations import op_db

    from .opinfo_exclusions import EXCLUDED, UNDEFINED_VALUES

    ops = claimed_opinfos(op_db)
    counts: dict[str, int] = {}  # "name[.variant][:dtype]" -> samples
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for oi in ops:
            name = oi.name + (f".{oi.variant_test_name}" if oi.variant_test_name else "")
            for dt in OPINFO_DTYPES:
                if getattr(torch, dt) in oi.supported_dtypes("cpu"):
                    counts[name + (f":{dt}" if dt != "float32" else "")] = \
                        sum(1 for _ in oi.sample_inputs("cpu", getattr(torch, dt), requires_grad=False))
    per_dtype = {dt: sum(n for k, n in counts.items() if k.partition(":")[2] in ((dt,) if dt != "float32" else ("",)))
                 for dt in OPINFO_DTYPES}
    lines = [
        "",
        "## OpInfo consistency",
        "",
        f"PyTorch's own OpInfo database (`torch.testing._internal.common_methods_invocations.op_db`, torch "
        f"{torch.__version__.split('+')[0]}: {len(op_db)} OpInfos), as torch.onnx tests its exporter: the "
        f"{len(ops)} OpInfos whose function or Tensor method bridge claims run their CPU sample inputs "
        f"({', '.join(f'{per_dtype[dt]} {dt}' for dt in OPINFO_DTYPES)}) through every path, each compared with",
        "eager PyTorch on the same sample: `trace` (canonical ops only, no `opaque` node), `run` (`g.run`), `onnx`",
        "(`bridge.to_onnx`, run in onnxruntime) and `import` (`bridge.from_onnx` of that file, run in torch).",
        "Tolerance: `atol * max(1, max|ref|) + rtol * |ref|` with the project's 1e-5, loosened to the OpInfo's own",
        "`toleranceOverride` for the dtype where the database gives one. `tests/ops/test_opinfo.py` checks the first",
        "float32 sample of each OpInfo by default and every sample with `-m slow`; `benchmarks/opinfo.py` prints the",
        "outcomes. A case listed below must fail (the list only shrinks); any other must pass.",
        "",
        "| path | samples that must pass | OpInfo / dtype pairs excluded |",
        "| --- | --- | --- |",
    ]
    for i, path in enumerate(OPINFO_PATHS):
        out = {k for k, paths in EXCLUDED.items() if set(paths) & set(OPINFO_PATHS[:i + 1])}
        lines.append(f"| `{path}` | {sum(n for k, n in counts.items() if k not in out)} | "
                     f"{sum(1 for k in EXCLUDED if path in EXCLUDED[k])} |")
    lines += [
        "",
        f"{len(EXCLUDED)} exclusions (OpInfo `name[.variant]`, `:dtype` when not float32; "
        "`bridge/ops/opinfo_exclusions.py`):",
        "",
        "| OpInfo | path | why |",
        "| --- | --- | --- |",
    ]
    for key in sorted(EXCLUDED):
        for path, why in EXCLUDED[key].items():
            lines.append(f"| `{key}` | {path} | {why.replace('|', '&#124;')} |")
    lines += ["", "Values undefined by torch (shapes and dtypes compared only): "
              + ", ".join(f"`{n}`" for n in sorted(UNDEFINED_VALUES)) + f" ({next(iter(UNDEFINED_VALUES.values()))})."]
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
