"""``bridge.trace``: any nn.Module (or fx.GraphModule, or torch.export ExportedProgram) into a bridge Graph."""
from __future__ import annotations

import contextlib
import gc
import traceback
from typing import Any

import torch

from . import progress
from .errors import BridgeError, TraceError
from .frontends.common import (NeedsRealValues, NeedsSymbolicSizes, check_dynamic_examples, normalize_dynamic,
                               source_line, user_frame)
from .ir.graph import Graph


@contextlib.contextmanager
def gc_paused():
    """Python's cyclic collector paused inside the block. Tracing and exporting allocate many small objects (fx
    nodes, Values, protos) that live until the call ends; the collector's passes over that growing heap made the
    time per node grow with the graph (+40% per layer at 4096 layers), and in a process that has imported large
    libraries (torchvision, transformers) one full pass costs 0.1-0.2 s by itself. The work it defers runs at its
    next pass after the block."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def trace(model: Any, args: Any = (), kwargs: dict | None = None, *, dynamic: Any = None, frontend: str = "auto",
          leaf_modules=(), concrete_args: dict | None = None, shapes: str = "auto", check_sizes=()) -> Graph:
    """Trace ``model`` on example inputs into a bridge Graph.

    ``args``: a tensor or a tuple of forward's positional arguments; ``kwargs``: the keyword ones.
    ``dynamic``: symbolic dims, e.g. ``{"x": {0: "batch"}}`` (also ``{"x": [0]}``).
    A dim may be an expression of other symbols (``{1: "past_sequence+sequence"}``): frontend "record" only.
    ``frontend``: "fx" (torch.fx symbolic_trace), "record" (one forward, its torch calls recorded: on fake tensors,
    or for real where they cannot serve; it refuses a forward that reads values of tensors that depend on the
    inputs; with ``dynamic=``, recorded at several sizes and each size that differs fitted as a polynomial of the
    symbols, refused where the recordings differ otherwise), "export" (torch.export) or "auto" (fx, then record
    when no dim is dynamic, then export; record alone when a dim is an expression).
    ``check_sizes``: with "record" and ``dynamic=``, more sizes to record at (``{symbol: size}`` each), where a
    branch on a size matters (sizes 0 and 1 included).
    ``leaf_modules``: module classes or dotted paths fx does not trace through (fx only): each is traced into
    at the ATen level on fake tensors instead, and stays one opaque call (run eagerly) where that fails, as it
    does for code that reads tensor values.
    ``shapes``: how shapes propagate: "fake" (fake tensors: no memory, no compute), "real" (the example
    inputs run once, RNG state restored), or "auto": real for an eval-mode model with static shapes
    whose weights and inputs take under 256 MB (cheaper than fake-tensor dispatch there), else fake.
    A size that depends on tensor values (``x[x > 0]``, ``nonzero``) stays a symbol (``u0``); where an op needs
    it as a number, ``TraceError`` names the line.

    The model is traced in the mode it is in, as torch.fx does (``bridge.to_onnx`` and the other verbs trace eval
    mode unless ``training=True``), and left as it was: attributes a forward stores while tracing (caches) are
    put back. Raises ``TraceError`` naming the user's source line when no frontend can trace the model.
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
    if frontend not in ("auto", "fx", "record", "export"):
        raise BridgeError(f"frontend must be 'auto', 'fx', 'record' or 'export', not {frontend!r}")
    order = ["fx", "record", "export"] if frontend == "auto" else [frontend]
    causes: dict[str, BaseException] = {}
    if shapes not in ("auto", "fake", "real"):
        raise BridgeError(f"shapes must be 'auto', 'fake' or 'real', not {shapes!r}")
    from .frontends.signature import InputBinding

    binding = InputBinding(model, args, kwargs)
    dyn = normalize_dynamic(dynamic, binding.names)  # a bad dynamic= fails here, once, for every frontend
    check_dynamic_examples(binding.names, binding.examples, dyn)
    related = [f"{n}[{d}] = {s}" for n, dims in dyn.items() for d, s in dims.items() if not s.isidentifier()]
    if related:  # only recordings at several sizes relate one dim to others
        if frontend not in ("auto", "record"):
            raise BridgeError(f"dynamic= gives dims as expressions of other symbols ({', '.join(related)}): only "
                              f"frontend='record' relates dims; torch.fx and torch.export take each as independent")
        order = ["record"]
    elif dyn and "record" in order and frontend == "auto":  # bridge's own choice: torch's symbolic tracers
        order.remove("record")
    if check_sizes and not (dyn and frontend in ("record", "auto") and "record" in order):
        raise BridgeError("check_sizes= names sizes for the record frontend's recordings of symbolic dims: pass it "
                          "with frontend='record' and dynamic=")
    with gc_paused(), progress.job(f"tracing {type(model).__name__}"):  # a line on a terminal, after a second
        state = _ModelState(model)
        for name in order:
            try:
                g = _run_frontend(name, model, binding, dyn, leaf_modules, concrete_args, shapes, check_sizes,
                                  state.restore)
            except TraceError:
                raise
            except Exception as e:  # noqa: BLE001 - collected and reported together below
                causes[name] = e
                continue
            finally:  # a forward that caches (a dict of attention biases) stored fx proxies or fake tensors there
                state.restore()
            if causes:
                g.meta["fallback_reasons"] = {k: _one_line(v) for k, v in causes.items()}
            return g
    raise _trace_error(model, causes)


class _ModelState:
    """Every module's attributes, and the contents of the dicts, lists and sets among them (caches, hook tables,
    ``_parameters``/``_buffers``/``_modules``), to put back after tracing: a forward runs on proxies and fake
    tensors while tracing, and whatever it stores in the model must not outlive the trace."""

    _CONTAINERS = (dict, list, set)

    def __init__(self, model: torch.nn.Module):
        self.saved = [(m, dict(m.__dict__), self._contents(m.__dict__, 3)) for m in model.modules()]

    def _contents(self, d: dict, depth: int) -> dict:
        """id(container) -> (container, its items) for the containers reachable from ``d``'s values."""
        out: dict[int, tuple] = {}
        todo = [(v, depth) for v in d.values()]
        while todo:
            v, left = todo.pop()
            if not isinstance(v, self._CONTAINERS) or id(v) in out or left == 0:
                continue
            items = dict(v) if isinstance(v, dict) else list(v)
            out[id(v)] = (v, items)
            todo.extend((x, left - 1) for x in (items.values() if isinstance(items, dict) else items))
        return out

    def restore(self) -> None:
        for m, attrs, contents in self.saved:
            d = m.__dict__
            if d.keys() != attrs.keys() or any(d[k] is not v for k, v in attrs.items()):
                d.clear()
                d.update(attrs)
            for obj, items in contents.values():
                if isinstance(obj, dict):
                    if obj.keys() != items.keys() or any(obj[k] is not v for k, v in items.items()):
                        obj.clear()
                        obj.update(items)
                elif isinstance(obj, list):
                    if len(obj) != len(items) or any(a is not b for a, b in zip(obj, items)):
                        obj[:] = items
                elif obj != set(items):
                    obj.clear()
                    obj.update(items)


_REAL_LIMIT = 256 * 2**20


def _use_fake(model, examples, dyn, shapes: str) -> bool:
    if shapes != "auto":
        return shapes == "fake"
    if dyn or model.training:
        return True
    size = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    size += sum(t.numel() * t.element_size() for t in examples)
    return size > _REAL_LIMIT


def _run_frontend(name, model, binding, dyn, leaf_modules, concrete_args, shapes="auto", check_sizes=(),
                  restore=lambda: None) -> Graph:
    examples = binding.examples
    # fake propagation keeps data-dependent sizes symbolic; real propagation (cheaper for small static models, and
    # the only way for ops with no fake kernel) hands them over to fake, and refuses them once fake has failed
    modes = [True, False] if _use_fake(model, examples, dyn, shapes) else [False, True, False]
    if name == "fx":  # trace once; only the value propagation is redone with real values
        from .frontends import fx

        wrapper, fxg = fx.fx_graph(model, binding, leaf_modules, concrete_args)
    fake_failed = False
    for fake in modes:
        policy = "refuse" if fake_failed else "retry"
        try:
            if name == "fx":
                g = fx.convert(wrapper, fxg, binding, fake=fake, dynamic=dyn, data_dependent=policy)
            elif name == "record" and dyn:  # recordings at several sizes, fitted
                from .frontends import sized

                g = sized.trace_sized(model, binding, dyn, leaf_modules, check_sizes, restore)
            elif name == "record":  # one run: its values are the examples, so no propagation mode applies
                from .frontends import record

                g = record.trace_record(model, binding, leaf_modules)
            else:
                from .frontends import export

                g = export.trace_export(model, binding, dynamic=dyn, fake=fake, data_dependent=policy)
        except NeedsRealValues as e:
            if dyn:
                raise BridgeError(f"symbolic dims need shapes computed without data, but an op here has no "
                                  f"fake-tensor kernel ({e}). Trace without dynamic= (one graph per input shape), "
                                  "or keep that computation in a leaf module.") from e
            fake_failed = True
            continue
        except NeedsSymbolicSizes:
            continue  # on to fake propagation
        g.meta["trace_device"] = next((a.device for a in examples), None)
        g.meta["trace_float_dtype"] = next((a.dtype for a in examples if a.is_floating_point()), None)
        g.meta["training"] = model.training
        # the example size of each symbolic dim: analysis sizes costs at the traced example
        g.meta["dim_values"] = {sym: int(t.shape[d]) for name, t in zip(binding.names, examples)
                                for d, sym in (dyn.get(name) or {}).items()
                                if isinstance(t, torch.Tensor) and sym.isidentifier()}
        return g
    raise AssertionError("unreachable")


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}"


def _trace_error(model, causes: dict[str, BaseException]) -> TraceError:
    loc, owner = None, None
    for e in causes.values():
        loc = _user_location(e)
        if loc:
            owner = next((fr.f_locals.get("self") for f, ln, fr in _frames(e)
                          if fr is not None and f"{f}:{ln}" == loc), None)
            break
    src = source_line(loc)
    if not isinstance(owner, torch.nn.Module):
        owner = None
    lines = [f"could not trace {type(model).__name__}"]
    if loc:
        lines[0] += f" at {loc}"
        path = next((n for n, m in model.named_modules() if m is owner), None) if owner is not None else None
        if path:
            lines[0] += f" (in {path}, {type(owner).__name__})"
        if src:
            lines.append(f"    {src}")
    for k, e in causes.items():
        lines.append(f"  {k}: {_one_line(e)}")
    lines.append("How to fix: " + _hint(causes, src, owner, owner is model))
    return TraceError("\n".join(lines), source=loc, causes=causes)


def _frames(e: BaseException):
    """``(file, line, frame or None)`` of every frame in the exception chain, innermost last per exception;
    an exception without a traceback (torch.export re-raises) gives the ``File "...", line N`` of its text."""
    import re

    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if e.__traceback__ is not None:
            yield from ((fr.f_code.co_filename, ln, fr) for fr, ln in traceback.walk_tb(e.__traceback__))
        yield from ((f, int(ln), None) for f, ln in re.findall(r'File "([^"]+)", line (\d+)', str(e)))
        e = e.__cause__ or e.__context__


def _user_location(e: BaseException) -> str | None:
    """``file:line`` of the innermost user frame of the exception chain.

    A user frame is outside torch and bridge, and not in the stdlib or an installed library (numpy, ...)
    unless its file also runs a module's method (a model shipped in a package, e.g. transformers)."""
    import os
    import sysconfig

    libs = tuple({os.path.abspath(p) + os.sep for k, p in sysconfig.get_paths().items()
                  if k in ("stdlib", "platstdlib", "purelib", "platlib")})
    seen, chain = set(), e
    while chain is not None and id(chain) not in seen:  # the first exception that points at user code wins
        seen.add(id(chain))
        only = chain.__cause__, chain.__context__
        chain.__cause__ = chain.__context__ = None  # look at this exception alone
        try:
            cands = [(f, ln, fr) for f, ln, fr in _frames(chain) if user_frame(f'File "{f}", line {ln}')]
        finally:
            chain.__cause__, chain.__context__ = only
        model_files = {f for f, _, fr in cands if fr is not None and isinstance(fr.f_locals.get("self"),
                                                                                torch.nn.Module)}
        pick = [c for c in cands if c[0] in model_files or not os.path.abspath(c[0]).startswith(libs)] or cands
        if pick:
            return f"{pick[-1][0]}:{pick[-1][1]}"
        chain = chain.__cause__ or chain.__context__
    return None


def _hint(causes: dict[str, BaseException], code: str = "", owner: torch.nn.Module | None = None,
          owner_is_root: bool = False) -> str:
    """What to do, judged first by the failing line's code, then by the frontends' messages."""
    import re

    text = " ".join(f"{type(e).__name__}: {e}" for e in causes.values())
    code = code.strip()
    if owner is not None and not owner_is_root:
        name = type(owner).__name__
        leaf = f"keep {name} whole with leaf_modules=[{name}] (one opaque node, run eagerly)"
    else:
        leaf = "move that code into a submodule and keep it whole with leaf_modules=[ThatSubmodule] " \
               "(one opaque node, run eagerly)"
    kind = None
    if re.match(r"(if|elif|while|assert)\b", code) or re.search(r"\bif\b.*\belse\b", code):
        kind = "branch"
    elif re.match(r"for\b", code) or "len(" in code:
        kind = "loop"
    elif re.search(r"\.numpy\(|\bnp\.|\bnumpy\.", code) or re.search(r"__array|\.numpy\(\) is not supported", text):
        kind = "numpy"
    elif re.search(r"\.item\(\)|\.tolist\(\)|\b(int|float)\(", code):
        kind = "item"
    elif "data-dependent expression" in text:  # a number read out of a tensor, used where torch needs it fixed
        kind = "item"
    elif "Constraints violated" in text or "specialized" in text and "dynamic" in text.lower():
        kind = "specialized"
    elif "cannot be iterated" in text or "len() " in text:
        kind = "loop"
    elif "inputs to control flow" in text or "Could not guard on data-dependent" in text:
        kind = "branch"
    elif "specialized integer" in text or "not 'Proxy'" in text:
        kind = "item"
    elif len({_one_line(e) for e in causes.values()}) == 1 and all(isinstance(e, BridgeError)
                                                                    for e in causes.values()):
        kind = "usage"
    elif len(causes) > 1 and (len({_one_line(e) for e in causes.values()}) == 1
                              or type(causes.get("record")).__name__ == "ForwardFailed"):
        kind = "eager"  # every frontend failed alike, or the model's forward failed when it ran for real
    if kind == "branch":
        return ("the model branches on a tensor's value, so the graph would depend on the data. Compute both "
                "sides and pick with torch.where, use torch.cond (frontend='export'), pass the deciding argument "
                f"as a python value in concrete_args= (fx), or {leaf}.")
    if kind == "loop":
        why = ("the model loops over a tensor (or takes its len()) whose length depends on the data, which "
               "neither fx nor torch.export can unroll." if "export" in causes else
               "torch.fx cannot loop over a tensor or take its len(); frontend='auto' or 'export' unrolls loops "
               "over tensors of static size.")
        return (f"{why} Vectorize the loop with tensor ops (masks, torch.where, gather/scatter), loop over a "
                f"python range of a fixed size, or {leaf}.")
    if kind == "numpy":
        return ("the line hands tensor data to numpy (or another non-torch library), which no tracer can see "
                "into. Use the torch equivalent (torch.sin for np.sin, torch.fft for np.fft, ...) so the op lands "
                f"in the graph, or {leaf}.")
    if kind == "item":
        return ("a python number is read out of a tensor (.item(), .tolist(), int(t)) and used as a size, so "
                "the graph's shapes would depend on the data. Pass the number in as a plain python argument "
                "(fx: concrete_args={'n': 5}), keep shapes fixed and select with masks (torch.where, masked_fill), "
                f"or {leaf}.")
    if kind == "specialized":
        return ("a dim given in dynamic= was specialized to a constant: torch treats example sizes 0 and 1 as "
                "fixed, and a model that reshapes to a literal size fixes that dim too. Trace with an example size "
                "of 2 or more for that dim, or leave it out of dynamic=.")
    if kind == "usage":
        return "change the argument of bridge.trace that the message above names; every frontend refused it."
    if kind == "eager":
        return ("every frontend hit the same error, which the model most likely raises in eager PyTorch too: "
                "check that the example inputs have the shapes and dtypes the model expects.")
    return ("make the failing line traceable (no python-side use of tensor values), or keep its module whole "
            f"with leaf_modules=[...]: {leaf}.")
