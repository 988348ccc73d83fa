"""Small helpers shared by op definitions: FLOP formulas and argument adapters."""
from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from typing import Any

import torch

from ..errors import TraceError
from ..ir.graph import Node, Value
from ..ir.spec import TensorSpec


_DIM_VALUES: contextvars.ContextVar[dict | None] = contextvars.ContextVar("bridge_dim_values", default=None)


@contextlib.contextmanager
def dim_values(values: dict[str, int] | None):
    """Within the block, FLOP formulas size a symbolic dim (``"batch"``, ``"2*batch"``) by ``values``
    (symbol -> example size); outside it, or for a symbol not given, a symbolic dim counts as 1."""
    token = _DIM_VALUES.set(dict(values) if values else None)
    try:
        yield
    finally:
        _DIM_VALUES.reset(token)


def dim_size(d: Any) -> int:
    """An int dim as is; a symbolic one evaluated under ``dim_values`` (1 when it cannot be)."""
    if isinstance(d, int):
        return d
    values = _DIM_VALUES.get()
    if not values:
        return 1
    return _eval_dim(str(d), tuple(sorted(values.items())))


@functools.lru_cache(maxsize=4096)
def _eval_dim(expr: str, values: tuple) -> int:
    env = dict(values)
    if expr in env:
        return int(env[expr])
    try:  # sympy-printed expressions over the symbols: 2*batch, batch - 1, ((batch - 1)//2) + 1, Max(1, batch)
        out = eval(expr, {"__builtins__": {}}, {**_SYMPY_FUNCS, **env})  # noqa: S307 - our own printed dims
        return int(out)
    except Exception:  # noqa: BLE001 - a symbol without a value: per-sample count
        return 1


_SYMPY_FUNCS = {"Max": max, "Min": min, "floor": math.floor, "ceiling": math.ceil, "FloorDiv": lambda a, b: a // b,
                "CeilDiv": lambda a, b: -(-a // b), "Mod": lambda a, b: a % b, "sqrt": math.sqrt,
                "TruncToInt": int, "CeilToInt": math.ceil, "FloorToInt": math.floor}


def numel(v: Any) -> int:
    """Elements of a tensor Value (a symbolic dim sized by ``dim_values``, else 1: a per-sample count)."""
    if isinstance(v, Value) and isinstance(v.spec, TensorSpec):
        n = 1
        for d in v.spec.shape:
            n *= dim_size(d)
        return n
    return 0


def shape(v: Any) -> tuple:
    if isinstance(v, Value) and isinstance(v.spec, TensorSpec):
        return tuple(dim_size(d) for d in v.spec.shape)
    return ()


def out_numel(node: Node) -> int:
    return sum(numel(v) for v in node.outputs)


def per_output(k: float):
    """FLOPs = k per output element (elementwise ops)."""
    def flops(node: Node) -> int:
        return int(k * out_numel(node))
    flops.__doc__ = f"{k} per output element"
    return flops


def per_input(k: float):
    """FLOPs = k per element of the first input (reductions)."""
    def flops(node: Node) -> int:
        first = next(iter(node.args.values()), None)
        return int(k * numel(first))
    flops.__doc__ = f"{k} per input element"
    return flops


def zero(node: Node) -> int:
    """Data movement only."""
    return 0


def self_to_input(args, kwargs):
    """aten schemas call the first tensor ``self``."""
    if "self" in kwargs:
        kwargs = dict(kwargs)
        kwargs["input"] = kwargs.pop("self")
    return args, kwargs


def varargs_method(param: str):
    """``x.view(2, -1)`` and ``x.view((2, -1))`` both become ``view(x, shape=(2, -1))``."""
    def adapt(args, kwargs):
        if param in kwargs or len(args) < 2:
            return args, kwargs
        rest = args[1:]
        if len(rest) == 1 and isinstance(rest[0], torch.dtype):  # x.view(torch.int32)
            return (args[0], rest[0]), kwargs
        if len(rest) == 1 and isinstance(rest[0], (list, tuple)):
            rest = rest[0]
        return (args[0], tuple(rest)), kwargs
    return adapt


def inplace_false(args, kwargs):
    kwargs = dict(kwargs)
    kwargs.pop("inplace", None)
    return args, kwargs


def no_out(args, kwargs):
    """Python-level torch functions traced by fx record every parameter, ``out=None`` included; an ``out=``
    tensor is a write bridge does not model (refused, so the call stays opaque and runs as written)."""
    if "out" not in kwargs:
        return args, kwargs
    if kwargs["out"] is not None:
        raise NotImplementedError("out= is not supported")
    return args, {k: v for k, v in kwargs.items() if k != "out"}


def nested_items(v):
    """The scalars of a nested list/tuple, in order (``[[1, 2], 3]`` -> 1, 2, 3)."""
    if isinstance(v, (list, tuple)):
        for x in v:
            yield from nested_items(x)
    else:
        yield v


class NotComputed:
    """A secondary output of an aten spelling that the canonical op does not compute (the mean and rstd that
    ``native_layer_norm`` saves for its backward). Inference graphs never read them; a graph that computes with
    one is refused, by name, rather than given a wrong value (``refuse`` is the error)."""

    def __init__(self, spelling: str, output: str):
        self.spelling, self.output = spelling, output

    def refuse(self, *args, **kwargs):
        """Raise the TraceError naming this output (any use of it; a frontend calls it for a graph output)."""
        raise TraceError(f"the {self.output!r} output of aten.{self.spelling} is used, but bridge maps that call to "
                         f"its main output only and does not compute {self.output!r}; compute it from the input "
                         "in the model (or call the functional form, such as F.layer_norm) instead")

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        for a in list(args) + list((kwargs or {}).values()):
            if isinstance(a, NotComputed):
                a.refuse()
        return NotImplemented

    __float__ = __int__ = __index__ = refuse
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = refuse
    __neg__ = __pow__ = __rpow__ = __matmul__ = __rmatmul__ = refuse

    def __getattr__(self, name):  # a tensor method or attribute (x.to, x.shape) is a use; protocol probes are not
        if name.startswith("__"):
            raise AttributeError(name)
        self.refuse()

    def __repr__(self) -> str:
        return f"<{self.output} of aten.{self.spelling}: not computed>"


def main_only(spelling: str, *outputs: str):
    """``wrap`` for an aten spelling returning (out, *outputs): the op's result, then a ``NotComputed`` each."""
    return lambda out: (out, *(NotComputed(spelling, o) for o in outputs))
