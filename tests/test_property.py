"""Property test (issue 11): random valid models agree with eager PyTorch on every path bridge offers.

A hypothesis strategy (``models()``) draws a small DAG of tensor ops over 1-3 inputs of random small shapes and
builds it as a real ``nn.Module``: a generated ``forward`` (python source, one line per op, kept for the failure
report) over layers initialized from a drawn seed, in eval mode. Each line is run on the example inputs as it is
drawn, so every shape is the one torch computes and the model is valid by construction. The vocabulary: Linear,
Conv1d/Conv2d (stride, padding, groups, dilation), BatchNorm (non-trivial running stats), LayerNorm, ReLU/GELU/
SiLU/Tanh/Sigmoid/eval Dropout, add/sub/mul of two live tensors with broadcasting, residual blocks ``x + f(x)``,
``torch.cat``, split/chunk, reshape/view/flatten/transpose/permute, mean/sum (keepdim both), softmax/log_softmax,
matmul, max/avg/adaptive pooling, embedding of an integer input; the output is a tensor, a tuple or a dict. Ops
come in the spellings users write (``nn.ReLU()``, ``F.relu(x)``, ``x.relu()``, ``a + b``, ``torch.add(a, b)``).

On FRESH inputs (not the trace example) every path must give eager's numbers within fp32 tolerance
(``atol 1e-5 * max(1, max|ref|)`` plus ``rtol 1e-4``, tests/helpers.py): ``g.run``, ``g.to_module()``,
``bridge.to_onnx`` (inference passes) in onnxruntime (its flat outputs), ``bridge.from_onnx(proto).to_module()``
(the model's output structure, which the file records), and
``bridge.to_sequential(g)`` unstaged and with 2..4 stages. An output may differ from eager by more only where
eager's own fp32 result is rounding noise: the model is run again with every op's result perturbed by a few units
of roundoff (Monte Carlo arithmetic, ``rounding_spread``), and a path passes if it is within tolerance plus
``NOISE_FACTOR`` x that spread, element by element. The spread is a few ulps except where noise is amplified, e.g.
``F.layer_norm(v * s)`` with ``s = F.layer_norm(x).sum(-1, keepdim=True)``, zero up to rounding: eager and
onnxruntime each normalize their own noise. Such cases are counted and printed by the runner.

The default run draws ``DEFAULT_EXAMPLES`` models, derandomized (CI is reproducible); the ``slow`` test draws
``BRIDGE_PROPERTY_EXAMPLES`` (default 10,000). ``python benchmarks/property_run.py`` runs a count and prints the
error per path and the ops drawn (docs/benchmarks.md, "Property test").
"""
from __future__ import annotations

import itertools
import linecache
import math
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

import bridge
from tests.helpers import assert_same_outputs, max_error, tensor_leaves

DEFAULT_EXAMPLES = 150
RTOL, ATOL = 1e-4, 1e-5
ROUNDING, ROUNDING_RUNS, NOISE_FACTOR = 4 * 2.0**-24, 8, 4  # the rounding-noise allowance, see rounding_spread
MAX_STEPS = 12
MAX_DIM = 8  # no drawn layer makes a dim larger than this; cat and broadcasting may, a little
PATHS = ("run", "to_module", "onnxruntime", "from_onnx", "to_sequential")
SETTINGS = {"deadline": None, "derandomize": True, "database": None, "print_blob": True,
            "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]}
GLOBALS = {"torch": torch, "F": F, "nn": nn}

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")


class Residual(nn.Module):
    """``x + f(x)``: a skip connection in a module of its own, so its nodes carry a nested scope."""

    def __init__(self, f: nn.Module):
        super().__init__()
        self.f = f

    def forward(self, x):
        return x + self.f(x)


# ---- drawing a model ----------------------------------------------------------------------------------------
@dataclass(eq=False)
class Val:
    """A tensor of the model being drawn: its name in ``forward`` and its value on the example inputs."""

    name: str
    t: torch.Tensor
    vocab: int = 0  # > 0: an integer input whose entries are below this (embedding rows)
    uses: int = 0
    is_input: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.t.shape)


@dataclass
class Drawn:
    """One drawn model, the example inputs it is traced on, fresh inputs to compare on, and its description."""

    model: nn.Module
    example: tuple
    fresh: tuple
    source: str
    ops: list[str] = field(default_factory=list)

    def describe(self) -> str:
        ins = ", ".join(f"{n}: {'i64' if t.dtype == torch.int64 else 'f32'}{list(t.shape)}"
                        for n, t in zip(self.input_names, self.example))
        layers = "\n".join(f"  self.{n} = {m!r}".replace("\n", "\n  ") for n, m in self.model.named_children())
        return f"inputs {ins}\nlayers:\n{layers}\n{self.source}"

    @property
    def input_names(self) -> list[str]:
        return [f"x{i}" for i in range(len(self.example))]


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _broadcast(a: tuple, b: tuple) -> tuple | None:
    """The broadcast shape of ``a`` and ``b``, or None when they do not broadcast (or it would be too big)."""
    try:
        out = tuple(torch.broadcast_shapes(a, b))
    except RuntimeError:
        return None
    return out if len(out) <= 4 and math.prod(out) <= 4096 else None


class Drawer:
    """Builds one model while hypothesis draws it: the forward's lines, the layers, and each line's value on the
    example inputs, computed as the line is drawn (so shapes are torch's own)."""

    def __init__(self, draw):
        self.draw = draw
        self.vals: list[Val] = []
        self.lines: list[str] = []
        self.holder = nn.Module()
        self.ops: list[str] = []

    # -- the pieces every op uses
    def pick(self, cands: list[Val], *, chain: bool = False) -> Val:
        """One of ``cands``; values nothing uses yet come first (newest first), so shrinking keeps the graph
        connected and a split's parts get used. ``chain``: mostly the first of those, for deep models."""
        order = sorted(cands, key=lambda v: (v.uses > 0, -self.vals.index(v)))
        if chain and self.draw(st.integers(0, 3)) > 0:
            return order[0]
        return self.draw(st.sampled_from(order))

    def chance(self, k: int) -> bool:
        """True about once in ``k`` draws. Hypothesis favours the smallest integer of a range, so the rare case
        is the largest one (and shrinking turns it off)."""
        return self.draw(st.integers(1, k)) == k

    def layer(self, module: nn.Module) -> str:
        name = f"m{len(list(self.holder.children()))}"
        self.holder.add_module(name, module.eval())
        return f"self.{name}"

    def emit(self, op: str, rhs: str, ins: list[Val], n_out: int = 1) -> list[Val]:
        """Append ``v.. = rhs`` to forward (unpacking ``n_out`` values), run it on the example values."""
        first = len(self.vals)
        names = [f"v{first + i}" for i in range(n_out)]
        line = f"{', '.join(names)} = {rhs}"
        env = {v.name: v.t for v in self.vals}
        env["self"] = self.holder
        with torch.no_grad():
            exec(line, GLOBALS, env)  # noqa: S102 - our own generated line, run to learn its shapes
        for v in ins:
            v.uses += 1
        out = [Val(n, env[n]) for n in names]
        self.vals.extend(out)
        self.lines.append(line)
        self.ops.append(op)
        return out

    def dim(self, r: int, *, negative: bool = True) -> tuple[int, int]:
        """A dim of a rank-``r`` tensor: (its index, how it is written: sometimes negative)."""
        d = self.draw(st.integers(0, r - 1))
        return d, (d - r if negative and self.draw(st.booleans()) else d)

    def floats(self) -> list[Val]:
        return [v for v in self.vals if not v.vocab]


def _randomize_norm(m: nn.Module) -> nn.Module:
    """Non-trivial running statistics and affine parameters, so folding a norm into its neighbour shows."""
    with torch.no_grad():
        if getattr(m, "running_mean", None) is not None:
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.num_batches_tracked.fill_(3)
        if getattr(m, "weight", None) is not None:
            m.weight.uniform_(0.5, 1.5)
        if getattr(m, "bias", None) is not None:
            m.bias.uniform_(-0.5, 0.5)
    return m


# ---- the ops: (applies to x?, draw it on x) ------------------------------------------------------------------
ACT_MODULES = [lambda: nn.ReLU(), lambda: nn.GELU(), lambda: nn.GELU(approximate="tanh"), lambda: nn.SiLU(),
               lambda: nn.Tanh(), lambda: nn.Sigmoid(), lambda: nn.Dropout(0.3)]
ACT_CALLS = ["F.relu({})", "torch.relu({})", "{}.relu()", "F.gelu({})", "F.gelu({}, approximate='tanh')", "F.silu({})",
             "torch.tanh({})", "{}.tanh()", "torch.sigmoid({})", "{}.sigmoid()",
             "F.dropout({}, 0.5, training=self.training)"]


def op_activation(d: Drawer, x: Val):
    if d.draw(st.booleans()):
        d.emit("activation", f"{d.layer(d.draw(st.sampled_from(ACT_MODULES))())}({x.name})", [x])
    else:
        d.emit("activation", d.draw(st.sampled_from(ACT_CALLS)).format(x.name), [x])


def op_linear(d: Drawer, x: Val):
    out, bias = d.draw(st.integers(1, MAX_DIM)), d.draw(st.booleans())
    d.emit("linear", f"{d.layer(nn.Linear(x.shape[-1], out, bias=bias))}({x.name})", [x])


def _conv(d: Drawer, x: Val, *, same_shape: bool = False) -> nn.Module:
    cin, spatial = x.shape[1], x.shape[2:]
    groups = d.draw(st.sampled_from(_divisors(cin)))
    cout = cin if same_shape else groups * d.draw(st.integers(1, max(1, MAX_DIM // groups)))
    bias = d.draw(st.booleans())
    cls = nn.Conv1d if len(spatial) == 1 else nn.Conv2d
    if same_shape:
        k = d.draw(st.sampled_from([1, 3]))
        return cls(cin, cout, k, padding=k // 2, groups=groups, bias=bias)
    if d.chance(5):  # padding="same", also with an even kernel (uneven padding)
        kernel = tuple(d.draw(st.integers(1, 3)) for _ in spatial)
        return cls(cin, cout, kernel, padding="same", groups=groups, bias=bias)
    padding = d.draw(st.integers(0, 1))
    kernel = tuple(d.draw(st.integers(1, min(3, n + 2 * padding))) for n in spatial)
    dilation = 2 if all(2 * (k - 1) + 1 <= n + 2 * padding for k, n in zip(kernel, spatial)) and \
        d.chance(4) else 1
    stride = d.draw(st.integers(1, 2))
    return cls(cin, cout, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups, bias=bias)


def op_conv(d: Drawer, x: Val):
    d.emit("conv", f"{d.layer(_conv(d, x))}({x.name})", [x])


def _batchnorm(d: Drawer, x: Val) -> nn.Module:
    cls = nn.BatchNorm2d if len(x.shape) == 4 else nn.BatchNorm1d
    return _randomize_norm(cls(x.shape[1], affine=d.draw(st.booleans())))


def op_batchnorm(d: Drawer, x: Val):
    d.emit("batchnorm", f"{d.layer(_batchnorm(d, x))}({x.name})", [x])


def op_layernorm(d: Drawer, x: Val):
    k = d.draw(st.integers(1, min(2, len(x.shape))))
    affine = d.draw(st.booleans())
    m = nn.LayerNorm(x.shape[-k:], elementwise_affine=affine, bias=affine and d.draw(st.booleans()))
    d.emit("layernorm", f"{d.layer(_randomize_norm(m))}({x.name})", [x])


def op_binary(d: Drawer, x: Val):
    if d.chance(6):  # a python scalar operand
        fmt = d.draw(st.sampled_from(["{x} + {c}", "{c} * {x}", "{x} - {c}", "{c} - {x}", "torch.mul({x}, {c})"]))
        d.emit("binary", fmt.format(x=x.name, c=d.draw(st.sampled_from([0.5, 2.0, -1.5]))), [x])
        return
    y = d.pick([v for v in d.floats() if _broadcast(x.shape, v.shape) is not None])
    fmt = d.draw(st.sampled_from(["{} + {}", "{} - {}", "{} * {}", "torch.add({}, {})", "torch.sub({}, {})",
                                  "torch.mul({}, {})", "{}.add({})", "{}.mul({})"]))
    a, b = (x, y) if d.draw(st.booleans()) else (y, x)
    d.emit("binary", fmt.format(a.name, b.name), [a, b])


def op_residual(d: Drawer, x: Val):
    r, n = len(x.shape), x.shape[-1]
    makers: list[Callable[[], nn.Module]] = [
        lambda: nn.Linear(n, n), lambda: _randomize_norm(nn.LayerNorm(n)),
        lambda: d.draw(st.sampled_from(ACT_MODULES))(), lambda: nn.Sequential(nn.Linear(n, n), nn.ReLU())]
    if r in (2, 3, 4):
        makers.append(lambda: _batchnorm(d, x))
    if r in (3, 4):
        makers.append(lambda: _conv(d, x, same_shape=True))
        makers.append(lambda: nn.Sequential(_conv(d, x, same_shape=True), _batchnorm(d, x), nn.ReLU()))
    f = d.draw(st.sampled_from(makers))()
    d.emit("residual", f"{d.layer(Residual(f))}({x.name})", [x])


def _cat_partners(d: Drawer, x: Val) -> list[Val]:
    """Tensors that concatenate with ``x``: same rank, at most one dim different."""
    return [v for v in d.floats() if len(v.shape) == len(x.shape) and
            sum(a != b for a, b in zip(v.shape, x.shape)) <= 1 and v.t.numel() + x.t.numel() <= 4096]


def op_cat(d: Drawer, x: Val):
    y = d.pick(_cat_partners(d, x))
    diff = [i for i, (a, b) in enumerate(zip(x.shape, y.shape)) if a != b]
    r = len(x.shape)
    dim = diff[0] if diff else d.draw(st.integers(0, r - 1))
    parts = [x, y] if d.draw(st.booleans()) else [y, x]
    thirds = [v for v in _cat_partners(d, x)
              if all(a == b or i == dim for i, (a, b) in enumerate(zip(v.shape, x.shape)))]
    if thirds and d.chance(4):
        parts.append(d.pick(thirds))
    shown = dim - r if d.draw(st.booleans()) else dim
    names = ", ".join(p.name for p in parts)
    fmt = d.draw(st.sampled_from(["torch.cat([{}], dim={})", "torch.cat(({}), {})", "torch.concat([{}], {})"]))
    d.emit("cat", fmt.format(names, shown), parts)


def op_split(d: Drawer, x: Val):
    r = len(x.shape)
    dim = d.draw(st.sampled_from([i for i in range(r) if x.shape[i] >= 2]))
    size, shown = x.shape[dim], dim - r if d.draw(st.booleans()) else dim
    kind = d.draw(st.sampled_from(["split", "sizes", "chunk"]))
    if kind == "split":
        k = d.draw(st.integers(max(1, -(-size // 4)), size - 1))
        rhs = d.draw(st.sampled_from(["torch.split({}, {}, dim={})", "{}.split({}, {})"])).format(x.name, k, shown)
    elif kind == "sizes":
        cuts = sorted(d.draw(st.sets(st.integers(1, size - 1), min_size=1, max_size=min(3, size - 1))))
        sizes = [b - a for a, b in zip([0] + cuts, cuts + [size])]
        rhs = f"torch.split({x.name}, {sizes}, dim={shown})"
    else:
        n = d.draw(st.integers(2, min(4, size)))
        rhs = d.draw(st.sampled_from(["torch.chunk({}, {}, dim={})", "{}.chunk({}, {})"])).format(x.name, n, shown)
    n_out = len(eval(rhs, GLOBALS, {x.name: x.t}))  # our own expression: count the parts
    if d.chance(4):  # one part by index; the others are dead
        d.emit("split", f"{rhs}[{d.draw(st.integers(0, n_out - 1))}]", [x])
    else:
        d.emit("split", rhs, [x], n_out=n_out)


def op_reshape(d: Drawer, x: Val):
    r, n = len(x.shape), x.t.numel()
    if r >= 2 and d.draw(st.booleans()):
        start = d.draw(st.integers(0, r - 2))
        end = d.draw(st.integers(start + 1, r - 1))
        how = d.draw(st.sampled_from(["method", "torch", "module"]))
        if how == "module":
            rhs = f"{d.layer(nn.Flatten(start, end))}({x.name})"
        elif how == "torch":
            rhs = f"torch.flatten({x.name}, {start}, {end})"
        else:
            rhs = f"{x.name}.flatten({start}, {end})" if end < r - 1 else f"{x.name}.flatten({start})"
        d.emit("reshape", rhs, [x])
        return
    rank = d.draw(st.integers(1, 4))
    dims, rest = [], n
    for _ in range(rank - 1):
        dims.append(d.draw(st.sampled_from(_divisors(rest))))
        rest //= dims[-1]
    dims.append(rest)
    if d.draw(st.booleans()):
        dims[d.draw(st.integers(0, rank - 1))] = -1
    shape = ", ".join(map(str, dims))
    fmts = ["{}.reshape({})", "{}.reshape(({},))", "torch.reshape({}, ({},))"]
    if x.t.is_contiguous():
        fmts.append("{}.view({})")
    d.emit("reshape", d.draw(st.sampled_from(fmts)).format(x.name, shape), [x])


def op_transpose(d: Drawer, x: Val):
    r = len(x.shape)
    if d.draw(st.booleans()):
        a, b = d.draw(st.lists(st.integers(0, r - 1), min_size=2, max_size=2, unique=True))
        fmts = ["{}.transpose({}, {})", "torch.transpose({}, {}, {})"] + (["{}.t()"] if r == 2 else [])
        d.emit("transpose", d.draw(st.sampled_from(fmts)).format(x.name, a - r if d.draw(st.booleans()) else a, b),
               [x])
        return
    perm = d.draw(st.permutations(range(r)))
    fmt = d.draw(st.sampled_from(["{}.permute({})", "{}.permute(({},))", "torch.permute({}, ({},))"]))
    d.emit("transpose", fmt.format(x.name, ", ".join(map(str, perm))), [x])


def op_reduce(d: Drawer, x: Val):
    r = len(x.shape)
    keepdim = r == 1 or d.draw(st.booleans())
    if r >= 3 and d.chance(4):
        dim = tuple(sorted(d.draw(st.lists(st.integers(0, r - 1), min_size=2, max_size=2, unique=True))))
    else:
        dim = d.dim(r)[1]
    fn = d.draw(st.sampled_from(["mean", "sum"]))
    fmt = d.draw(st.sampled_from(["{x}.{fn}({dim}, keepdim={k})", "torch.{fn}({x}, dim={dim}, keepdim={k})"] +
                                 (["{x}.{fn}({dim})", "torch.{fn}({x}, {dim})"] if not keepdim else [])))
    d.emit("reduce", fmt.format(x=x.name, fn=fn, dim=dim, k=keepdim), [x])


def op_softmax(d: Drawer, x: Val):
    _, dim = d.dim(len(x.shape))
    how = d.draw(st.sampled_from(["F.softmax({}, dim={})", "{}.softmax({})", "torch.softmax({}, {})",
                                  "F.log_softmax({}, dim={})", "module"]))
    if how == "module":
        layer = d.layer(d.draw(st.sampled_from([nn.Softmax, nn.LogSoftmax]))(dim=dim))
        d.emit("softmax", f"{layer}({x.name})", [x])
    else:
        d.emit("softmax", how.format(x.name, dim), [x])


def _matmul_partners(d: Drawer, x: Val) -> list[tuple[Val, bool]]:
    """(y, transposed): ``x @ y`` or ``x @ y.transpose(-2, -1)`` is valid (batch dims broadcast)."""
    out = []
    for y in d.floats():
        s, t = x.shape, y.shape
        if len(t) == 1 and t[0] == s[-1]:
            out.append((y, False))
            continue
        if len(t) < 2 or _broadcast(s[:-2], t[:-2]) is None:
            continue
        if t[-2] == s[-1]:
            out.append((y, False))
        if t[-1] == s[-1]:
            out.append((y, True))
    return out


def op_matmul(d: Drawer, x: Val):
    cands = _matmul_partners(d, x)
    y = d.pick(list(dict.fromkeys(v for v, _ in cands)))
    transposed = d.draw(st.sampled_from([tr for v, tr in cands if v is y]))
    rhs = f"{y.name}.transpose(-2, -1)" if transposed else y.name
    fmt = d.draw(st.sampled_from(["{} @ {}", "torch.matmul({}, {})", "{}.matmul({})"]))
    d.emit("matmul", fmt.format(x.name, rhs), [x, y])


def op_pool(d: Drawer, x: Val):
    nd = len(x.shape) - 2
    spatial = x.shape[2:]
    kind = d.draw(st.sampled_from(["max", "avg", "adaptive"]))
    if kind == "adaptive":
        size = d.draw(st.integers(1, min(spatial)))
        if d.draw(st.booleans()):
            d.emit("pool", f"{d.layer((nn.AdaptiveAvgPool1d if nd == 1 else nn.AdaptiveAvgPool2d)(size))}({x.name})",
                   [x])
        else:
            d.emit("pool", f"F.adaptive_avg_pool{nd}d({x.name}, {size})", [x])
        return
    k = d.draw(st.integers(1, min(3, min(spatial))))
    stride = d.draw(st.sampled_from([None, 1, 2]))
    padding = d.draw(st.integers(0, k // 2))
    ceil = d.draw(st.booleans())
    extra = f", count_include_pad={d.draw(st.booleans())}" if kind == "avg" else ""
    if d.draw(st.booleans()):
        cls = {("max", 1): nn.MaxPool1d, ("max", 2): nn.MaxPool2d, ("avg", 1): nn.AvgPool1d,
               ("avg", 2): nn.AvgPool2d}[kind, nd]
        kw = {"count_include_pad": "True" in extra} if extra else {}
        d.emit("pool", f"{d.layer(cls(k, stride, padding, ceil_mode=ceil, **kw))}({x.name})", [x])
    else:
        d.emit("pool", f"F.{kind}_pool{nd}d({x.name}, {k}, {stride}, {padding}, ceil_mode={ceil}{extra})", [x])


def op_embedding(d: Drawer, x: Val):
    rows = x.vocab + d.draw(st.integers(0, 2))
    m = nn.Embedding(rows, d.draw(st.integers(1, MAX_DIM)), padding_idx=0 if d.draw(st.booleans()) else None)
    d.emit("embedding", f"{d.layer(m)}({x.name})", [x])


OPS: dict[str, tuple[Callable[[Drawer, Val], bool], Callable[[Drawer, Val], None]]] = {
    "activation": (lambda d, x: True, op_activation),
    "linear": (lambda d, x: True, op_linear),
    "conv": (lambda d, x: len(x.shape) in (3, 4), op_conv),
    "batchnorm": (lambda d, x: len(x.shape) in (2, 3, 4), op_batchnorm),
    "layernorm": (lambda d, x: True, op_layernorm),
    "binary": (lambda d, x: True, op_binary),
    "residual": (lambda d, x: True, op_residual),
    "cat": (lambda d, x: bool(_cat_partners(d, x)), op_cat),
    "split": (lambda d, x: max(x.shape) >= 2, op_split),
    "reshape": (lambda d, x: True, op_reshape),
    "transpose": (lambda d, x: len(x.shape) >= 2, op_transpose),
    "reduce": (lambda d, x: True, op_reduce),
    "softmax": (lambda d, x: True, op_softmax),
    "matmul": (lambda d, x: len(x.shape) >= 2 and bool(_matmul_partners(d, x)), op_matmul),
    "pool": (lambda d, x: len(x.shape) in (3, 4), op_pool),
}
VOCABULARY = sorted(OPS) + ["embedding"]


def _input(d: Drawer, i: int, seen_index: bool) -> Val:
    """Input ``x{i}``: a float tensor of rank 1-4, or (at most one of them) an int64 index tensor."""
    if not seen_index and d.chance(5):
        vocab = d.draw(st.integers(2, 10))
        shape = (d.draw(st.integers(1, 3)), d.draw(st.integers(1, 5)))
        return Val(f"x{i}", torch.randint(0, vocab, shape), vocab=vocab, is_input=True)
    rank = d.draw(st.sampled_from([2, 3, 4, 1]))
    shape = [d.draw(st.integers(1, 3))] + [d.draw(st.sampled_from([2, 3, 4, 5, 6, 1])) for _ in range(rank - 1)]
    return Val(f"x{i}", torch.randn(shape), is_input=True)


def _fresh(v: Val) -> torch.Tensor:
    return torch.randint(0, v.vocab, v.shape) if v.vocab else torch.randn(v.shape) * 2


_count = itertools.count()


def _source(d: Drawer, inputs: list[Val], outputs: list[Val], kind: str) -> str:
    """The drawn ``forward``: its lines, returning ``outputs`` as a tensor, a tuple or a dict."""
    if kind == "tensor":
        ret = outputs[0].name
    elif kind == "tuple":
        ret = "(" + ", ".join(v.name for v in outputs) + ("," if len(outputs) == 1 else "") + ")"
    else:
        ret = "{" + ", ".join(f"'out{i}': {v.name}" for i, v in enumerate(outputs)) + "}"
    body = "".join(f"    {line}\n" for line in d.lines)
    return f"def forward(self, {', '.join(v.name for v in inputs)}):\n{body}    return {ret}\n"


def assemble(src: str, layers: dict[str, nn.Module]) -> nn.Module:
    """The model: a class with ``forward`` from ``src`` (registered with linecache, so tracebacks and bridge's
    source lines show it) holding ``layers``, in eval mode."""
    filename = f"<drawn model {next(_count)}>"
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
    ns: dict = {}
    exec(compile(src, filename, "exec"), GLOBALS, ns)  # noqa: S102 - the generated forward
    model = type("DrawnModel", (nn.Module,), {"forward": ns["forward"], "__module__": __name__})()
    for name, m in layers.items():
        model.add_module(name, m)
    return model.eval()


def save(drawn: Drawn, path: str) -> None:
    """Write ``drawn`` (source, layers with their weights, inputs) to ``path``; ``load`` gives it back, to
    reproduce a reported model exactly."""
    torch.save({"source": drawn.source, "layers": dict(drawn.model.named_children()), "example": drawn.example,
                "fresh": drawn.fresh, "ops": drawn.ops}, path)


def load(path: str) -> Drawn:
    saved = torch.load(path, weights_only=False)
    return Drawn(assemble(saved["source"], saved["layers"]), saved["example"], saved["fresh"], saved["source"],
                 saved["ops"])


@st.composite
def models(draw) -> Drawn:
    """A random valid model (see the module doc): 1-3 inputs, 1-``MAX_STEPS`` drawn ops (plus one per input not
    used yet), every input used, outputs the values nothing else uses (sometimes one more)."""
    d = Drawer(draw)
    seed = draw(st.integers(0, 2**32 - 1))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        inputs: list[Val] = []
        for i in range(draw(st.sampled_from([1, 1, 2, 3]))):
            inputs.append(_input(d, i, any(v.vocab for v in inputs)))
        d.vals.extend(inputs)
        steps = draw(st.integers(1, MAX_STEPS))
        while steps > 0 or any(v.uses == 0 for v in inputs):
            unused = [v for v in inputs if v.uses == 0]
            x = unused[0] if unused else d.pick(d.floats(), chain=True)
            if x.vocab:
                op_embedding(d, x)
            else:
                name = draw(st.sampled_from([n for n, (applies, _) in OPS.items() if applies(d, x)]))
                OPS[name][1](d, x)
            steps -= 1
        outputs = [v for v in d.vals if v.uses == 0 and not v.is_input]
        inner = [v for v in d.vals if v.uses > 0 and not v.is_input]
        if inner and d.chance(5):  # an output that is also used inside the model
            outputs.insert(draw(st.integers(0, len(outputs))), draw(st.sampled_from(inner)))
        kind = draw(st.sampled_from(["tensor", "tuple", "dict"] if len(outputs) == 1 else ["tuple", "dict"]))
        src = _source(d, inputs, outputs, kind)
        model = assemble(src, dict(d.holder.named_children()))
        example = tuple(v.t for v in inputs)
        fresh = tuple(_fresh(v) for v in inputs)
    return Drawn(model, example, fresh, src, d.ops)


# ---- checking every path ------------------------------------------------------------------------------------
def _ort_session(proto):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _scaled_error(got, ref) -> float:
    """What the tolerance bounds: ``max|got - ref| / max(1, max|ref|)``, the largest over the output tensors."""
    return max((max_error(a, b) / max(1.0, float(b.abs().max())) for a, b in zip(tensor_leaves(got),
                                                                              tensor_leaves(ref)) if b.numel()),
               default=0.0)


class _Rounding(TorchDispatchMode):
    """Every fp32 result of an aten op multiplied by ``1 + e``, ``|e|`` up to 4 units of fp32 roundoff (seeded): the
    model evaluated in fp32 with other, equally valid roundings (Monte Carlo arithmetic)."""

    def __init__(self, seed: int):
        super().__init__()
        self.gen = torch.Generator().manual_seed(seed)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return tree_map(self._jitter, func(*args, **(kwargs or {})))

    def _jitter(self, t):
        if isinstance(t, torch.Tensor) and t.dtype == torch.float32:
            return t * (1 + (torch.rand(t.shape, generator=self.gen) * 2 - 1) * ROUNDING)
        return t


def rounding_spread(model: nn.Module, inputs: tuple, ref) -> list[torch.Tensor]:
    """Per element of each output tensor (flat, in bridge's order), how far eager's fp32 result moves when every
    op rounds differently: the largest ``|perturbed - ref|`` over ``ROUNDING_RUNS`` runs under ``_Rounding``."""
    ref_leaves = tensor_leaves(ref)
    spread = [torch.zeros(r.shape, dtype=torch.float64) for r in ref_leaves]
    for seed in range(ROUNDING_RUNS):
        with _Rounding(seed):
            runs = tensor_leaves(model(*inputs))
        for s, a, r in zip(spread, runs, ref_leaves):
            if r.is_floating_point():
                torch.maximum(s, (a.double() - r.double()).abs(), out=s)
    return spread


def within_rounding_noise(got, want, spread: list[torch.Tensor]) -> bool:
    """Is every element of ``got`` within tolerance of eager's ``want`` plus ``NOISE_FACTOR`` x eager's own
    rounding spread there? Only an output that is amplified rounding noise (a LayerNorm of a row that is constant
    up to rounding) has a spread that matters; elsewhere it is a few ulps."""
    for g, w, s in zip(tensor_leaves(got), tensor_leaves(want), spread):
        if g.shape != w.shape or g.dtype != w.dtype:
            return False
        if not w.is_floating_point() or not w.numel():
            continue
        g64, w64 = g.double(), w.double()
        bound = ATOL * max(1.0, float(w64.abs().max())) + RTOL * w64.abs() + NOISE_FACTOR * s
        if not bool(((g64 - w64).abs() <= bound).all()):
            return False
    return True


@dataclass
class Checked:
    """What ``check_paths`` saw: per path the largest absolute error against eager and the largest error scaled
    as the tolerance scales it; the traced graph; the paths (``to_sequential[stages=2]``) whose outputs differ from
    eager beyond tolerance but within eager's own rounding noise (``within_rounding_noise``)."""

    errors: dict[str, tuple[float, float]]
    graph: bridge.Graph | None
    rounding_noise: list[str]


def check_paths(drawn: Drawn, on_failure: Callable[[str, BaseException], None] | None = None) -> Checked:
    """Run ``drawn`` through every path on its fresh inputs and compare with eager. A mismatch or error raises,
    unless ``on_failure(path, exc)`` is given: then it is reported there and the remaining paths still run."""
    model, example, fresh = drawn.model, drawn.example, drawn.fresh
    out = Checked({}, None, [])
    with torch.no_grad():
        ref = model(*fresh)
        state: dict = {}

        def spread():
            if "spread" not in state:
                state["spread"] = rounding_spread(model, fresh, ref)
            return state["spread"]

        def traced():
            state["g"] = out.graph = bridge.trace(model, example)
            return [state["g"].run(*fresh)]

        def exported():
            state["proto"] = bridge.to_onnx(model, args=example)
            sess = _ort_session(state["proto"])
            names = [i.name for i in sess.get_inputs()]
            assert names == drawn.input_names, f"ONNX inputs {names} != forward's {drawn.input_names}"
            got = sess.run(None, {n: t.numpy() for n, t in zip(names, fresh)})
            return [[torch.from_numpy(np.asarray(a)) for a in got]]  # the flat outputs, in bridge's order

        def sequential():
            g = state["g"]
            return [bridge.to_sequential(g)(*fresh)] + [bridge.to_sequential(g, stages=k)(*fresh)
                                                        for k in range(2, min(4, len(g.nodes)) + 1)]

        paths = [("run", traced), ("to_module", lambda: [state["g"].to_module()(*fresh)]),
                 ("onnxruntime", exported),
                 ("from_onnx", lambda: [bridge.from_onnx(state["proto"]).to_module()(*fresh)]),
                 ("to_sequential", sequential)]
        needs = {"to_module": "g", "to_sequential": "g", "from_onnx": "proto"}
        for path, fn in paths:
            if path in needs and needs[path] not in state:
                continue  # what it starts from failed, and was reported
            try:
                for i, got in enumerate(fn()):
                    want = tensor_leaves(ref) if path == "onnxruntime" else ref
                    where = f"{path}[stages={'none' if i == 0 else i + 1}]" if path == "to_sequential" else path
                    err = (max_error(got, want), _scaled_error(got, want))  # max_error checks the structure
                    out.errors[path] = tuple(map(max, zip(out.errors.get(path, (0.0, 0.0)), err)))
                    try:
                        assert_same_outputs(got, want, rtol=RTOL, atol=ATOL, path=where)
                    except AssertionError:
                        if not within_rounding_noise(got, want, spread()):
                            raise
                        out.rounding_noise.append(where)
            except Exception as e:  # reported (or re-raised) with its path
                if on_failure is None:
                    raise AssertionError(f"path {path}: {type(e).__name__}: {e}") from e
                on_failure(path, e)
    return out


def _check(drawn: Drawn) -> None:
    note(drawn.describe())
    checked = check_paths(drawn)
    if checked.rounding_noise:
        note(f"differs from eager beyond tolerance, within eager's rounding noise: {checked.rounding_noise}")


test_random_models_agree_on_every_path = settings(max_examples=DEFAULT_EXAMPLES, **SETTINGS)(given(models())(_check))
test_random_models_agree_on_every_path.__doc__ = (f"{DEFAULT_EXAMPLES} drawn models (derandomized): every path "
                                                  "gives eager's outputs on fresh inputs.")


@pytest.mark.slow
def test_many_random_models_agree_on_every_path():
    """``BRIDGE_PROPERTY_EXAMPLES`` (default 10,000) drawn models, same property."""
    n = int(os.environ.get("BRIDGE_PROPERTY_EXAMPLES", "10000"))
    ran = []

    @settings(max_examples=n, **SETTINGS)
    @given(models())
    def check(drawn):
        ran.append(1)
        _check(drawn)

    check()
    assert len(ran) == n, f"hypothesis ran {len(ran)} of the {n} examples asked for"


def test_the_strategy_covers_the_vocabulary():
    """The default run's draws use every op of the vocabulary and every output kind, and each model is valid
    (its eager output on the example has the structure the source says)."""
    seen, kinds = Counter(), Counter()

    @settings(max_examples=60, **SETTINGS)
    @given(models())
    def collect(drawn):
        seen.update(drawn.ops)
        ret = drawn.source.rsplit("return ", 1)[1]
        kinds[{"(": "tuple", "{": "dict"}.get(ret[0], "tensor")] += 1
        with torch.no_grad():
            drawn.model(*drawn.example)

    collect()
    assert set(VOCABULARY) <= set(seen), sorted(set(VOCABULARY) - set(seen))
    assert set(kinds) == {"tensor", "tuple", "dict"}, kinds
