"""Python-level ops: tensor metadata (size, dim, attributes) and opaque calls.

Metadata ops are folded to constants when shapes are static; under a symbolic dim they stay as nodes
that produce run-time python ints.
"""
from __future__ import annotations

import builtins

import torch

from ._util import zero
from .registry import register


@register("size", family="python", methods=["size"], aten=["sym_size.int"], flops=zero, pure_python=True)
def size(input, dim=None):
    """input.size() (a tuple) or input.size(dim)."""
    return tuple(input.size()) if dim is None else input.size(dim)


@register("dim", family="python", methods=["dim", "ndimension"], flops=zero, pure_python=True)
def dim(input):
    return input.dim()


@register("numel", family="python", functions=[torch.numel], methods=["numel", "nelement"],
          aten=["sym_numel.default"], flops=zero, pure_python=True)
def numel(input):
    return input.numel()


@register("getattr", family="python", functions=[builtins.getattr], flops=zero, pure_python=True)
def getattr_(input, name):
    """input.<name> (shape, dtype, device, T, mT, ndim, ...)."""
    value = getattr(input, name)
    return tuple(value) if isinstance(value, torch.Size) else value


def _builtin(fn):
    return fn, (lambda args, kwargs: ((fn, list(args)), {}))


@register("python_call", family="python",
          functions=[_builtin(f) for f in (builtins.int, builtins.float, builtins.bool, builtins.len, builtins.max,
                                           builtins.min)],
          flops=zero, pure_python=True)
def python_call(fn, args):
    """A python builtin on run-time scalars (``int(x.size(0) / 2)``).

    Symbolic sizes stay symbolic: ``int``/``float``/``max``/``min`` go through torch's ``sym_*`` forms and ``len``
    of a tensor is its first dim, where the builtins would specialize the size to its example value."""
    if fn is builtins.len and len(args) == 1 and isinstance(args[0], torch.Tensor):
        return args[0].shape[0]
    sym = _SYM_FORMS.get(fn)
    if sym is not None and len(args) == sym[1] and any(isinstance(a, (torch.SymInt, torch.SymFloat)) for a in args):
        return sym[0](*args)
    return fn(*args)


_SYM_FORMS = {builtins.int: (torch.sym_int, 1), builtins.float: (torch.sym_float, 1),
              builtins.max: (torch.sym_max, 2), builtins.min: (torch.sym_min, 2)}


@register("opaque", family="python", flops=zero)
def opaque(target, args=(), kwargs=None):
    """A call bridge has no canonical op for. It still runs (``target(*args, **kwargs)``; a string target
    is a Tensor method of ``args[0]``), and every analysis and export names it."""
    if isinstance(target, str):
        return getattr(args[0], target)(*args[1:], **(kwargs or {}))
    return target(*args, **(kwargs or {}))
