"""Reductions, scans, sorting and selection along dims."""
from __future__ import annotations

import torch

from ._util import no_out, per_input, zero
from .registry import register


def _reduction(name, fn, methods, aten, k=1, with_dtype=True):
    if with_dtype:
        def impl(input, dim=None, keepdim=False, dtype=None):
            if dim is None:
                return fn(input, dtype=dtype) if dtype is not None else fn(input)
            return fn(input, dim, keepdim, dtype=dtype)
    else:
        def impl(input, dim=None, keepdim=False):
            return fn(input) if dim is None else fn(input, dim, keepdim)
    impl.__name__ = name
    impl.__doc__ = f"torch.{name} over ``dim`` (all dims when None)."
    register(name, family="reduce", functions=[fn], methods=methods, aten=aten, flops=per_input(k))(impl)


_reduction("sum", torch.sum, ["sum"], ["sum.dim_IntList", "sum.default"])
_reduction("mean", torch.mean, ["mean"], ["mean.dim", "mean.default"])
_reduction("nansum", torch.nansum, ["nansum"], [])
_reduction("amax", torch.amax, ["amax"], ["amax.default"], with_dtype=False)
_reduction("amin", torch.amin, ["amin"], ["amin.default"], with_dtype=False)
_reduction("all", torch.all, ["all"], ["all.default", "all.dim", "all.dims"], with_dtype=False)
_reduction("any", torch.any, ["any"], ["any.default", "any.dim", "any.dims"], with_dtype=False)
_reduction("argmax", torch.argmax, ["argmax"], ["argmax.default"], with_dtype=False)
_reduction("argmin", torch.argmin, ["argmin"], ["argmin.default"], with_dtype=False)


@register("prod", family="reduce", functions=[torch.prod], methods=["prod"], aten=["prod.default", "prod.dim_int"],
          flops=per_input(1))
def prod(input, dim=None, keepdim=False, dtype=None):
    if dim is None:
        return torch.prod(input, dtype=dtype)
    return torch.prod(input, dim, keepdim, dtype=dtype)


def _minmax(name, fn, elementwise):
    def impl(input, dim=None, keepdim=False):
        if dim is None:
            return fn(input)
        if isinstance(dim, torch.Tensor):  # torch.max(a, b) is the elementwise maximum
            return elementwise(input, dim)
        return fn(input, dim, keepdim)

    impl.__name__ = name
    impl.__doc__ = (f"torch.{name}: over all elements; along ``dim`` a (values, indices) pair; "
                    f"with a tensor, the elementwise {elementwise.__name__}.")
    register(name, family="reduce", functions=[fn], methods=[name], aten=[f"{name}.dim", f"{name}.default"],
             flops=per_input(1))(impl)


_minmax("max", torch.max, torch.maximum)
_minmax("min", torch.min, torch.minimum)


def _stat(name, fn):
    def impl(input, dim=None, unbiased=None, keepdim=False, correction=None):
        kw = {"keepdim": keepdim}
        if correction is not None:
            kw["correction"] = correction
        elif unbiased is not None:
            kw["correction"] = 1 if unbiased else 0
        return fn(input, dim, **kw)

    impl.__name__ = name
    impl.__doc__ = f"torch.{name} with Bessel's correction unless ``unbiased=False``/``correction=0``."
    register(name, family="reduce", functions=[fn], methods=[name], aten=[f"{name}.correction", f"{name}.dim"],
             flops=per_input(3))(impl)


_stat("std", torch.std)
_stat("var", torch.var)


@register("norm", family="reduce", functions=[(torch.norm, no_out)], methods=["norm"], flops=per_input(2))
def norm(input, p="fro", dim=None, keepdim=False, dtype=None):
    return torch.norm(input, p, dim, keepdim, dtype=dtype)


@register("vector_norm", family="reduce", functions=[torch.linalg.vector_norm], aten=["linalg_vector_norm.default"],
          flops=per_input(2))
def vector_norm(input, ord=2, dim=None, keepdim=False, dtype=None):
    return torch.linalg.vector_norm(input, ord, dim, keepdim, dtype=dtype)


@register("logsumexp", family="reduce", functions=[torch.logsumexp], methods=["logsumexp"],
          aten=["logsumexp.default"], flops=per_input(3))
def logsumexp(input, dim, keepdim=False):
    return torch.logsumexp(input, dim, keepdim)


@register("cumsum", family="reduce", functions=[torch.cumsum], methods=["cumsum"], aten=["cumsum.default"],
          flops=per_input(1))
def cumsum(input, dim, dtype=None):
    return torch.cumsum(input, dim, dtype=dtype)


@register("cumprod", family="reduce", functions=[torch.cumprod], methods=["cumprod"], aten=["cumprod.default"],
          flops=per_input(1))
def cumprod(input, dim, dtype=None):
    return torch.cumprod(input, dim, dtype=dtype)


@register("topk", family="reduce", functions=[torch.topk], methods=["topk"], aten=["topk.default"],
          flops=per_input(1))
def topk(input, k, dim=-1, largest=True, sorted=True):
    """(values, indices) of the k largest (or smallest) along ``dim``."""
    return torch.topk(input, k, dim, largest, sorted)


@register("sort", family="reduce", functions=[torch.sort], methods=["sort"], aten=["sort.default", "sort.stable"],
          flops=per_input(1))
def sort(input, dim=-1, descending=False, stable=False):
    return torch.sort(input, dim=dim, descending=descending, stable=stable)


@register("argsort", family="reduce", functions=[torch.argsort], methods=["argsort"], aten=["argsort.default"],
          flops=per_input(1))
def argsort(input, dim=-1, descending=False, stable=False):
    return torch.argsort(input, dim=dim, descending=descending, stable=stable)


@register("count_nonzero", family="reduce", functions=[torch.count_nonzero], methods=["count_nonzero"],
          flops=zero)
def count_nonzero(input, dim=None):
    return torch.count_nonzero(input, dim)
