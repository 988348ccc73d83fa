"""Binding a model's example inputs to its forward signature, and the flattening wrapper both frontends trace.

The wrapper takes one argument per tensor leaf of the inputs (named after the forward parameters:
``x``, ``mask``, ``pair_0``/``pair_1`` for a tuple argument), calls the model with the original
structure, and returns the output flattened to a tuple of leaves, recording the structure. So
tuple/list/dict/dataclass (HuggingFace ModelOutput) outputs and nested inputs work the same for fx
and torch.export.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any

import torch

from ..errors import TraceError
from ..ir import structure

P = inspect.Parameter


def _is_tensor(o) -> bool:
    return isinstance(o, torch.Tensor)


class InputBinding:
    """How flat tensor inputs map back to the model's ``forward(*args, **kwargs)``."""

    def __init__(self, model: torch.nn.Module, args: tuple, kwargs: dict):
        fwd = model.forward
        try:
            sig = inspect.signature(fwd)
            ba = sig.bind(*args, **kwargs)
        except (TypeError, ValueError) as e:
            raise TraceError(f"the example inputs do not fit {type(model).__name__}.forward{_sig(fwd)}: {e}. "
                             "Pass args as a tuple in forward's order and the rest as kwargs=.") from e
        self.signature = sig
        self.params: list[tuple[str, Any, tuple]] = []  # (name, parameter kind, structure spec)
        self.names: list[str] = []
        self.examples: list[torch.Tensor] = []
        for pname, value in ba.arguments.items():
            kind = sig.parameters[pname].kind
            leaves, spec = structure.flatten(value, _is_tensor)
            offset = len(self.names)
            if spec == ("leaf", 0):
                self.names.append(pname)
            else:
                self.names.extend(f"{pname}_{i}" for i in range(len(leaves)))
            self.examples.extend(leaves)
            self.params.append((pname, kind, structure.map_leaves(spec, lambda i, o=offset: ("leaf", i + o))))

    def call(self, model, flat: list) -> Any:
        args, kwargs = [], {}
        bound = {pname: (kind, spec) for pname, kind, spec in self.params}
        gap = False  # once a parameter is left out, later ones can only go by keyword
        for pname, param in self.signature.parameters.items():
            if pname not in bound:
                if param.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD):
                    gap = True
                continue
            kind, spec = bound[pname]
            value = structure.unflatten(spec, flat)
            if kind == P.VAR_POSITIONAL:
                args.extend(value)
            elif kind == P.VAR_KEYWORD:
                kwargs.update(value)
            elif kind == P.KEYWORD_ONLY or (gap and kind != P.POSITIONAL_ONLY):
                kwargs[pname] = value
            else:
                args.append(value)
        return model(*args, **kwargs)


def _cache_hint(hidden: list[tuple[str, str]]) -> str:
    """HuggingFace decoders return their KV cache as a Cache object unless told not to."""
    if any(t.endswith("Cache") for _, t in hidden):
        return (" A HuggingFace model returns its key/value cache this way: pass use_cache=False (or set "
                "model.config.use_cache = False) to trace the forward without it.")
    return ""


def _source_of(fn) -> str | None:
    """``file:line`` where ``fn`` is defined, or None."""
    try:
        return f"{inspect.getsourcefile(fn)}:{inspect.getsourcelines(fn)[1]}"
    except (TypeError, OSError):
        return None


def _sig(fn) -> str:
    try:
        return str(inspect.signature(fn))
    except (TypeError, ValueError):
        return "(...)"


class FlatWrapper(torch.nn.Module):
    """``forward(*flat_tensor_inputs) -> tuple(flat outputs)``; the output structure lands in ``out_spec``."""

    def __init__(self, model: torch.nn.Module, binding: InputBinding, is_leaf):
        super().__init__()
        self.m = model
        self._binding = binding
        self._is_leaf = is_leaf

    @property
    def out_spec(self) -> tuple | None:
        # kept on the generated class, not the instance: torch.export restores instance state after tracing
        return type(self)._box.get("out_spec")

    def _run(self, box, *flat):
        out = self._binding.call(self.m, list(flat))
        leaves, box["out_spec"] = structure.flatten(out, self._is_leaf)
        hidden = structure.hidden_leaves(box["out_spec"], lambda o: self._is_leaf(o) or isinstance(o, torch.Tensor)
                                         or type(o).__name__ in ("Proxy", "_Proxy"))
        if hidden:
            where = ", ".join(f"{w} ({t})" for w, t in hidden)
            loc = _source_of(type(self.m).forward)
            raise TraceError(f"{type(self.m).__name__}.forward{f' ({loc})' if loc else ''} returns tensors inside an "
                             f"object bridge cannot take apart: {where}. The graph would return that object as it "
                             "was while tracing. Return the tensors in a tuple, list, dict, namedtuple or dataclass "
                             "instead (a set has no order: use a tuple)." + _cache_hint(hidden), source=loc)
        return tuple(leaves)


def make_wrapper(model: torch.nn.Module, binding: InputBinding, is_leaf) -> FlatWrapper:
    """A FlatWrapper whose forward has one named parameter per input leaf (fx names placeholders by them)."""
    forward = _forward_of(tuple(binding.names))
    cls = type(f"Bridge_{type(model).__name__}", (FlatWrapper,), {"forward": forward, "_box": {}})
    return cls(model, binding, is_leaf)


@functools.lru_cache(maxsize=256)
def _forward_of(names: tuple[str, ...]):
    """``forward(self, <names>)`` calling ``self._run(self._box, <names>)``: compiled once per name list."""
    src = f"def forward({', '.join(['self', *names])}):\n    return self._run(self._box, {', '.join(names)})\n"
    ns: dict = {}
    exec(compile(src, "<bridge-wrapper>", "exec"), ns)
    return ns["forward"]
