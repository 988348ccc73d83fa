"""``bridge.trace``: any nn.Module (or fx.GraphModule, or torch.export ExportedProgram) into a bridge Graph."""
from __future__ import annotations

import traceback
from typing import Any

import torch

from .errors import BridgeError, TraceError
from .frontends.common import NeedsRealValues, normalize_dynamic, source_line, user_frame
from .ir.graph import Graph


def trace(model: Any, args: Any = (), kwargs: dict | None = None, *, dynamic: Any = None, frontend: str = "auto",
          leaf_modules=(), concrete_args: dict | None = None) -> Graph:
    """Trace ``model`` on example inputs into a bridge Graph.

    ``args``: a tensor or a tuple of forward's positional arguments; ``kwargs``: the keyword ones.
    ``dynamic``: symbolic dims, e.g. ``{"x": {0: "batch"}}`` (also ``{"x": [0]}``).
    ``frontend``: "fx" (torch.fx symbolic_trace), "export" (torch.export) or "auto" (fx, then export).
    ``leaf_modules``: module classes or dotted paths kept whole as opaque calls (fx only).

    Raises ``TraceError`` naming the user's source line when no frontend can trace the model.
    """
    if not isinstance(args, tuple):
        args = (args,)
    kwargs = dict(kwargs or {})
    if isinstance(model, torch.export.ExportedProgram):
        from .frontends.export import from_exported_program

        return from_exported_program(model, args, kwargs)
    if not isinstance(model, torch.nn.Module):
        raise TraceError(f"bridge.trace expects an nn.Module, fx.GraphModule or ExportedProgram, "
                         f"got {type(model).__name__}. Wrap a plain function in an nn.Module.")
    if frontend not in ("auto", "fx", "export"):
        raise BridgeError(f"frontend must be 'auto', 'fx' or 'export', not {frontend!r}")
    order = ["fx", "export"] if frontend == "auto" else [frontend]
    causes: dict[str, BaseException] = {}
    for name in order:
        try:
            g = _run_frontend(name, model, args, kwargs, dynamic, leaf_modules, concrete_args)
        except TraceError:
            raise
        except Exception as e:  # noqa: BLE001 - collected and reported together below
            causes[name] = e
            continue
        if causes:
            g.meta["fallback_reasons"] = {k: _one_line(v) for k, v in causes.items()}
        return g
    raise _trace_error(model, causes)


def _run_frontend(name, model, args, kwargs, dynamic, leaf_modules, concrete_args) -> Graph:
    from .frontends.signature import InputBinding

    names = InputBinding(model, args, kwargs).names
    dyn = normalize_dynamic(dynamic, names)
    device = next((a.device for a in _tensors(args, kwargs)), None)
    for fake in (True, False):
        try:
            if name == "fx":
                from .frontends import fx

                wrapper, fxg, binding = fx.fx_graph(model, args, kwargs, leaf_modules, concrete_args)
                g = fx.convert(wrapper, fxg, binding, fake=fake, dynamic=dyn)
            else:
                from .frontends import export

                g = export.trace_export(model, args, kwargs, dynamic=dyn, fake=fake)
        except NeedsRealValues:
            continue
        g.meta["trace_device"] = device
        g.meta["training"] = model.training
        return g
    raise AssertionError("unreachable")


def _tensors(args, kwargs):
    from .ir import structure

    leaves, _ = structure.flatten((args, kwargs), lambda o: isinstance(o, torch.Tensor))
    return leaves


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}"


_HINTS = {
    "TraceError": "",
    "TraceError_control_flow": "Data-dependent control flow: use torch.cond (torch.export) or torch.where, "
                               "pass the deciding value in concrete_args=, or mark the module a leaf with "
                               "leaf_modules=[...].",
}


def _trace_error(model, causes: dict[str, BaseException]) -> TraceError:
    loc = None
    for e in causes.values():
        loc = loc or _user_location(e)
    lines = [f"could not trace {type(model).__name__}"]
    if loc:
        lines[0] += f" at {loc}"
        src = source_line(loc)
        if src:
            lines.append(f"    {src}")
    for k, e in causes.items():
        lines.append(f"  {k}: {_one_line(e)}")
    lines.append("How to fix: " + _hint(causes))
    return TraceError("\n".join(lines), source=loc, causes=causes)


def _user_location(e: BaseException) -> str | None:
    """The innermost user frame of the exception chain; torch.export errors carry it in their text."""
    import re

    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        loc = user_frame(e.__traceback__) if e.__traceback__ else None
        if loc:
            return loc
        m = re.findall(r'File "([^"]+)", line (\d+)', str(e))
        for f, ln in reversed(m):
            cand = user_frame(f'File "{f}", line {ln}')
            if cand:
                return cand
        e = e.__cause__ or e.__context__
    return None


def _hint(causes: dict[str, BaseException]) -> str:
    text = " ".join(f"{type(e).__name__} {e}" for e in causes.values())
    if "symbolically traced variables cannot be used as inputs to control flow" in text or \
            "data-dependent" in text.lower() or "GuardOnDataDependent" in text or "control flow" in text:
        return ("the model branches on a tensor's value. Rewrite the branch with torch.where or torch.cond, "
                "pass the deciding argument in concrete_args= (fx), or keep the module whole with "
                "leaf_modules=[TheModule].")
    if "len(" in text or "iteration" in text.lower() or "Proxy" in text:
        return ("the model iterates over or takes len() of a traced tensor. Use frontend='export', pass sizes "
                "via concrete_args=, or keep the module whole with leaf_modules=[TheModule].")
    return ("make the failing line traceable (no python-side use of tensor values), or keep its module whole "
            "with leaf_modules=[TheModule].")
