"""Types of the values that flow along edges: tensors (with symbolic dims) and python scalars/objects."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

import torch

Dim = Union[int, str]  # an int, or a symbol such as "batch" or "2*batch"

_DTYPE_SHORT = {
    torch.float32: "f32", torch.float64: "f64", torch.float16: "f16", torch.bfloat16: "bf16",
    torch.int64: "i64", torch.int32: "i32", torch.int16: "i16", torch.int8: "i8", torch.uint8: "u8",
    torch.bool: "bool", torch.complex64: "c64", torch.complex128: "c128",
}


def dtype_short(dtype: torch.dtype) -> str:
    return _DTYPE_SHORT.get(dtype, str(dtype).replace("torch.", ""))


@dataclass(frozen=True)
class TensorSpec:
    """Shape and dtype of a tensor. A dim is an int or a symbol string."""

    shape: tuple[Dim, ...]
    dtype: torch.dtype

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    def numel(self) -> int | None:
        n = 1
        for d in self.shape:
            if not isinstance(d, int):
                return None
            n *= d
        return n

    def nbytes(self) -> int | None:
        n = self.numel()
        if n is None:
            return None
        return n * self.dtype.itemsize  # complex too (finfo/iinfo refused complex dtypes)

    def __str__(self) -> str:
        return f"{dtype_short(self.dtype)}[{', '.join(str(d) for d in self.shape)}]"


@dataclass(frozen=True)
class ScalarSpec:
    """A python value computed at run time (an int size under a symbolic dim, a device, ...)."""

    type: type
    expr: str | None = None  # symbolic expression, when known ("batch", "2*batch")

    def __str__(self) -> str:
        return f"{self.type.__name__}" + (f"({self.expr})" if self.expr else "")


Spec = Union[TensorSpec, ScalarSpec]


def spec_of(obj: Any, symbols: dict[str, str] | None = None) -> Spec:
    """Spec of a (fake or real) tensor or python object; SymInts are named through ``symbols``."""
    if isinstance(obj, torch.Tensor):
        shape = tuple(obj.shape)
        for d in shape:
            if type(d) is not int:
                return TensorSpec(tuple(_dim(d, symbols) for d in shape), obj.dtype)
        return TensorSpec(shape, obj.dtype)
    if isinstance(obj, (torch.SymInt, torch.SymFloat, torch.SymBool)):
        t = {torch.SymInt: int, torch.SymFloat: float, torch.SymBool: bool}[type(obj)]
        return ScalarSpec(t, _sym_str(obj, symbols))
    if isinstance(obj, (torch.device, torch.dtype)):
        return ScalarSpec(type(obj), str(obj))
    return ScalarSpec(type(obj))


def _dim(d, symbols) -> Dim:
    if isinstance(d, int):
        return d
    try:
        expr = d.node.expr
        if expr.is_number:
            return int(expr)
    except AttributeError:
        pass
    return _sym_str(d, symbols)


def _sym_str(d, symbols) -> str:
    s = str(d.node.expr) if hasattr(d, "node") else str(d)
    if symbols:
        # replace longest symbol names first so s10 is not hit by s1
        for k in sorted(symbols, key=len, reverse=True):
            s = _replace_symbol(s, k, symbols[k])
    return s.replace(" ", "")


def _replace_symbol(s: str, old: str, new: str) -> str:
    import re

    return re.sub(rf"\b{re.escape(old)}\b", new, s)
