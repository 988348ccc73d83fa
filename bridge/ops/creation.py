"""Tensors made inside the model: ranges, fills, copies of shapes, literal tensors."""
from __future__ import annotations

import torch

from ._util import varargs_method, zero
from .registry import register

_DROP = ("layout", "pin_memory", "requires_grad", "memory_format", "non_blocking", "generator", "out")


def _clean(args, kwargs):
    return args, {k: v for k, v in kwargs.items() if k not in _DROP}


def _sizes(args, kwargs):
    """torch.zeros(2, 3) and torch.zeros((2, 3)) -> zeros(size=(2, 3))."""
    args, kwargs = _clean(args, kwargs)
    if "size" in kwargs or not args:
        return args, kwargs
    if len(args) == 1 and isinstance(args[0], (list, tuple, torch.Size)):
        return (tuple(args[0]),), kwargs
    return (tuple(args),), kwargs


@register("arange", family="creation", functions=[(torch.arange, _clean)],
          aten=[("arange.default", _clean), ("arange.start", _clean), ("arange.start_step", _clean)], flops=zero)
def arange(start, end=None, step=1, dtype=None, device=None):
    """torch.arange; a single number is the end."""
    if end is None:
        return torch.arange(start, dtype=dtype, device=device)
    return torch.arange(start, end, step, dtype=dtype, device=device)


def _fill(name, fn):
    def impl(size, dtype=None, device=None):
        return fn(size, dtype=dtype, device=device)

    impl.__name__ = name
    impl.__doc__ = f"torch.{name}(size)."
    register(name, family="creation", functions=[(fn, _sizes)], aten=[(f"{name}.default", _clean)],
             flops=zero)(impl)


_fill("zeros", torch.zeros)
_fill("ones", torch.ones)
_fill("empty", torch.empty)
_fill("rand", torch.rand)
_fill("randn", torch.randn)


@register("full", family="creation", functions=[(torch.full, _clean)], aten=[("full.default", _clean)], flops=zero)
def full(size, fill_value, dtype=None, device=None):
    return torch.full(size, fill_value, dtype=dtype, device=device)


def _like(name, fn):
    def impl(input, dtype=None, device=None):
        return fn(input, dtype=dtype, device=device)

    impl.__name__ = name
    impl.__doc__ = f"torch.{name}(input): same shape as input."
    register(name, family="creation", functions=[(fn, _clean)], aten=[(f"{name}.default", _clean)],
             flops=zero)(impl)


_like("zeros_like", torch.zeros_like)
_like("ones_like", torch.ones_like)
_like("empty_like", torch.empty_like)
_like("rand_like", torch.rand_like)
_like("randn_like", torch.randn_like)


@register("full_like", family="creation", functions=[(torch.full_like, _clean)],
          aten=[("full_like.default", _clean)], flops=zero)
def full_like(input, fill_value, dtype=None, device=None):
    return torch.full_like(input, fill_value, dtype=dtype, device=device)


def _new(name):
    def impl(input, size, dtype=None, device=None):
        return getattr(input, name)(size, dtype=dtype, device=device)

    impl.__name__ = name
    impl.__doc__ = f"input.{name}(size): dtype and device of input unless given."

    def adapt(args, kwargs):
        a, k = varargs_method("size")(*_clean(args, kwargs))
        return a, k

    register(name, family="creation", methods=[(name, adapt)], aten=[(f"{name}.default", _clean)],
             flops=zero)(impl)


_new("new_zeros")
_new("new_ones")
_new("new_empty")


@register("new_full", family="creation", methods=[("new_full", _clean)], aten=[("new_full.default", _clean)],
          flops=zero)
def new_full(input, size, fill_value, dtype=None, device=None):
    return input.new_full(size, fill_value, dtype=dtype, device=device)


def _scalar_tensor(args, kwargs):
    """torch.scalar_tensor(s) is of the default float dtype even for an int ``s`` (torch.tensor(s) is int64)."""
    args, kwargs = _clean(args, kwargs)
    if kwargs.get("dtype") is None:
        kwargs = {**kwargs, "dtype": torch.get_default_dtype()}
    return args, kwargs


@register("tensor", family="creation", functions=[(torch.tensor, _clean), (torch.as_tensor, _clean),
                                                  (torch.scalar_tensor, _scalar_tensor)],
          aten=[("scalar_tensor.default", _scalar_tensor)], flops=zero)
def tensor(data, dtype=None, device=None):
    """A tensor from python data (numbers, nested lists, run-time sizes)."""
    return torch.tensor(data, dtype=dtype, device=device)


@register("new_tensor", family="creation", methods=[("new_tensor", _clean)], flops=zero)
def new_tensor(input, data, dtype=None, device=None):
    """input.new_tensor(data): dtype and device of ``input`` unless given."""
    return input.new_tensor(data, dtype=dtype, device=device)


@register("linspace", family="creation", functions=[(torch.linspace, _clean)], aten=[("linspace.default", _clean)],
          flops=zero)
def linspace(start, end, steps, dtype=None, device=None):
    return torch.linspace(start, end, steps, dtype=dtype, device=device)


@register("eye", family="creation", functions=[(torch.eye, _clean)], aten=[("eye.default", _clean)], flops=zero)
def eye(n, m=None, dtype=None, device=None):
    return torch.eye(n, m if m is not None else n, dtype=dtype, device=device)
