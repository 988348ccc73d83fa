"""Spectral ops: the FFTs of ``torch.fft`` and the complex values they make.

Three canonical ops cover ``torch.fft``, as three ATen operators do under it (``_fft_c2c``, ``_fft_r2c``,
``_fft_c2r``, what torch.export decomposes to):

- ``fft_c2c``: complex (or real) to complex: ``fft``, ``ifft``, ``fft2``, ``ifft2``, ``fftn``, ``ifftn``;
- ``fft_r2c``: real to complex, the half spectrum (``onesided``): ``rfft``, ``rfft2``, ``rfftn`` and, with the
  exponent's sign flipped (``inverse``), ``ihfft``, ``ihfft2``, ``ihfftn``;
- ``fft_c2r``: a half spectrum to a real signal: ``irfft``, ``irfft2``, ``irfftn`` and (not ``inverse``) ``hfft``,
  ``hfft2``, ``hfftn``.

Each takes torch's ``s`` (each transformed dim zero-padded or trimmed to a length; -1 keeps it; for ``fft_c2r`` the
last is the output's length, by default ``2 * (m - 1)``), ``dim`` (None: every dim, or the last ``len(s)``) and
``norm``: "backward" scales the inverse transform by 1/N, "forward" the forward one, "ortho" both by 1/sqrt(N).

FLOPs: 5 N log2 N per complex transform of N points (the radix-2 count), half that when the signal or the result
is real; an n-D transform over N = N1 ... Nk points costs as a 1-D one of N (5 N log2 N in all). PyTorch's
``torch.utils.flop_counter.FlopCounterMode`` counts no FFT (it reports 0).

ONNX holds a complex tensor as a float tensor with a trailing dim of 2 (``onnx_helpers.complex_parts``); the
transforms lower to ``DFT`` (opset 17: ``axis`` an attribute, 20: an input), one per transformed dim, and the
importers read ``DFT`` back at both versions. ``view_as_real``, ``view_as_complex``, ``real``, ``imag``, ``conj``
and ``angle`` are here too; ``abs``, ``neg``, ``add``, ``sub`` and ``mul`` (elementwise), ``clone`` (shape) and
``.real``/``.imag`` (python) lower complex tensors beside their ops.
"""
from __future__ import annotations

import math

import torch

from ._util import no_out, numel, per_output, shape, zero
from .elementwise import atan2_onnx
from .onnx_helpers import (as_complex, as_dtype, complex_part, conj, i64, run_dim, slice_, squeeze, unsqueeze)
from .registry import onnx_import, onnx_lowering, register

_I64 = torch.int64
_NORMS = ("backward", "ortho", "forward")


# ---- torch spellings: torch.fft functions and ATen's _fft_* operators as canonical arguments -------------------
_FORMS = {1: {"n": None, "dim": -1, "norm": None},            # torch.fft.fft(input, n=None, dim=-1, norm=None)
          2: {"s": None, "dim": (-2, -1), "norm": None},      # torch.fft.fft2(input, s=None, dim=(-2, -1), norm=None)
          0: {"s": None, "dim": None, "norm": None}}          # torch.fft.fftn(input, s=None, dim=None, norm=None)


def _bind(names: tuple, defaults: dict, args: tuple, kwargs: dict) -> dict:
    """``args``/``kwargs`` of a call by parameter name (aten's ``self`` is ``input``), defaults filled."""
    args, kwargs = no_out(args, kwargs)
    out = dict(defaults)
    out.update(zip(names, args))
    out.update({("input" if k == "self" else k): v for k, v in kwargs.items()})
    unknown = sorted(set(out) - set(names))
    if unknown or len(args) > len(names):
        raise TypeError(f"unexpected arguments {unknown or args[len(names):]}")
    return out


def _spelling(ndim: int, inverse: bool):
    """Adapter of a ``torch.fft`` function (and its aten overload) of ``ndim`` dims (0: n-D) to canonical args."""
    defaults = _FORMS[ndim]

    def adapt(args, kwargs):
        b = _bind(("input", *defaults), defaults, args, kwargs)
        if ndim == 1:
            s, dim = (None if b["n"] is None else (b["n"],)), (b["dim"],)
        else:
            s = None if b["s"] is None else tuple(b["s"])
            dim = None if b["dim"] is None else (b["dim"],) if isinstance(b["dim"], int) else tuple(b["dim"])
        norm = b["norm"] or "backward"
        if norm not in _NORMS:
            raise ValueError(f"norm {norm!r} is not one of {_NORMS}")
        return (b["input"],), {"s": s, "dim": dim, "norm": norm, "inverse": inverse}
    return adapt


def _norm(normalization: int, inverse: bool) -> str:
    """ATen's ``normalization`` (0: none, 1: 1/sqrt(N), 2: 1/N) as torch.fft's ``norm`` of a transform in that
    direction: the inverse transform's default ("backward") is ATen's 1/N."""
    return (("forward", "ortho", "backward") if inverse else _NORMS)[int(normalization)]


def _aten_c2c(args, kwargs):  # aten._fft_c2c(self, dim, normalization, forward)
    b = _bind(("input", "dim", "normalization", "forward"), {}, args, kwargs)
    inverse = not b["forward"]
    return (b["input"],), {"dim": tuple(b["dim"]), "norm": _norm(b["normalization"], inverse), "inverse": inverse}


def _aten_r2c(args, kwargs):  # aten._fft_r2c(self, dim, normalization, onesided)
    b = _bind(("input", "dim", "normalization", "onesided"), {}, args, kwargs)
    return (b["input"],), {"dim": tuple(b["dim"]), "norm": _norm(b["normalization"], False),
                           "onesided": bool(b["onesided"]), "inverse": False}


def _aten_c2r(args, kwargs):  # aten._fft_c2r(self, dim, normalization, last_dim_size)
    b = _bind(("input", "dim", "normalization", "last_dim_size"), {}, args, kwargs)
    dim = tuple(b["dim"])
    return (b["input"],), {"s": (-1,) * (len(dim) - 1) + (b["last_dim_size"],), "dim": dim,
                           "norm": _norm(b["normalization"], True), "inverse": True}


def _spellings(names: dict):
    """(functions, aten) spellings of ``{torch.fft function name: (ndim, inverse)}``."""
    fns = [(getattr(torch.fft, n), _spelling(nd, inv)) for n, (nd, inv) in names.items()]
    aten = [(f"fft_{n}.default", _spelling(nd, inv)) for n, (nd, inv) in names.items()]
    return fns, aten


def _dims(rank: int, s, dim) -> tuple[list[int], list]:
    """torch's transformed dims (>= 0; ``dim`` None: every dim, or the last ``len(s)``) and their requested lengths
    (-1: the input's size there)."""
    if dim is None:
        dim = range(rank - len(s), rank) if s is not None else range(rank)
    dims = [d % rank for d in ((dim,) if isinstance(dim, int) else dim)]
    return dims, list(s) if s is not None else [-1] * len(dims)


# ---- FLOPs ----------------------------------------------------------------------------------------------------
def _signal(node) -> tuple[list[int], int]:
    """(transformed dims >= 0, N points of one transform) of an FFT node, from its input's shape and ``s``."""
    sizes = shape(node.args["input"])
    dims, s = _dims(len(sizes), node.args["s"], node.args["dim"])
    lengths = [n if isinstance(n, int) and n != -1 else sizes[d] for d, n in zip(dims, s)]
    if node.op == "fft_c2r" and (not isinstance(s[-1], int) or s[-1] == -1):
        lengths[-1] = 2 * (sizes[dims[-1]] - 1)
    return dims, math.prod(lengths)


def _fft_flops(k: float):
    """``k`` N log2 N per transform of N points (5 complex, 2.5 real), times the transforms (other dims)."""
    def flops(node) -> int:
        dims, n = _signal(node)
        x = node.args["input"]
        per = math.prod(shape(x)[d] for d in dims)
        batch = numel(x) // per if per else 0
        return int(k * batch * n * math.log2(n)) if n > 1 else 0
    flops.__doc__ = f"{k} N log2 N per transform of N points"
    return flops


# ---- the transforms ------------------------------------------------------------------------------------------
_C2C_FNS, _C2C_ATEN = _spellings({"fft": (1, False), "ifft": (1, True), "fft2": (2, False), "ifft2": (2, True),
                                  "fftn": (0, False), "ifftn": (0, True)})


@register("fft_c2c", family="spectral", functions=_C2C_FNS, aten=[*_C2C_ATEN, ("_fft_c2c.default", _aten_c2c)],
          flops=_fft_flops(5))
def fft_c2c(input, s=None, dim=None, norm="backward", inverse=False):
    """The discrete Fourier transform of ``input`` (complex, or real taken as complex) over ``dim``: complex
    output. ``inverse`` flips the exponent's sign (``torch.fft.ifftn``); ``s`` and ``norm`` as torch.fft's."""
    return (torch.fft.ifftn if inverse else torch.fft.fftn)(input, s=s, dim=dim, norm=norm)


_R2C_FNS, _R2C_ATEN = _spellings({"rfft": (1, False), "rfft2": (2, False), "rfftn": (0, False),
                                  "ihfft": (1, True), "ihfft2": (2, True), "ihfftn": (0, True)})


@register("fft_r2c", family="spectral", functions=_R2C_FNS, aten=[*_R2C_ATEN, ("_fft_r2c.default", _aten_r2c)],
          flops=_fft_flops(2.5))
def fft_r2c(input, s=None, dim=None, norm="backward", onesided=True, inverse=False):
    """The discrete Fourier transform of real ``input`` over ``dim``: with ``onesided`` the half spectrum of the
    last transformed dim (``m // 2 + 1`` points, the rest being its conjugate mirror: ``torch.fft.rfftn``), else
    the full one. ``inverse`` flips the exponent's sign (``torch.fft.ihfftn``)."""
    if not onesided:
        return (torch.fft.ifftn if inverse else torch.fft.fftn)(input, s=s, dim=dim, norm=norm)
    if inverse:
        return torch.fft.ihfftn(input, s=s, dim=dim, norm=norm).resolve_conj()
    return torch.fft.rfftn(input, s=s, dim=dim, norm=norm)


_C2R_FNS, _C2R_ATEN = _spellings({"irfft": (1, True), "irfft2": (2, True), "irfftn": (0, True),
                                  "hfft": (1, False), "hfft2": (2, False), "hfftn": (0, False)})


@register("fft_c2r", family="spectral", functions=_C2R_FNS, aten=[*_C2R_ATEN, ("_fft_c2r.default", _aten_c2r)],
          flops=_fft_flops(2.5))
def fft_c2r(input, s=None, dim=None, norm="backward", inverse=True):
    """The real signal whose spectrum over ``dim`` is the complex ``input``, its last transformed dim a half
    spectrum (``torch.fft.irfftn``; the output's last length is ``s[-1]``, by default ``2 * (m - 1)``). Without
    ``inverse`` the exponent's sign is the forward transform's (``torch.fft.hfftn``)."""
    return (torch.fft.irfftn if inverse else torch.fft.hfftn)(input, s=s, dim=dim, norm=norm)


# ---- ONNX: one DFT per transformed dim, then the scale norm asks for ------------------------------------------
def _plan(ctx, node) -> tuple[list[int], list]:
    """(transformed dims >= 0, their requested lengths: an int, or -1 to keep the input's size)."""
    dims, s = _dims(ctx.rank("input"), node.args["s"], node.args["dim"])
    if not all(isinstance(n, int) for n in s):
        ctx.unsupported("a transform length (s or n) computed at run time: give it as a python int")
    return dims, s


def _dft(ctx, x: str, axis: int, n=None, inverse=False, onesided=False) -> str:
    """One ONNX DFT of ``x`` (float [..., 1] real or [..., 2] complex) along ``axis`` (>= 0, of the complex
    tensor, the same in the file); ``n``: the dft_length (zero-pad or trim to it), None for the axis' size."""
    length = None if n is None else ctx.const(int(n), _I64)
    attrs = {"inverse": int(inverse), "onesided": int(onesided)}
    if ctx.opset >= 20:
        return ctx.op("DFT", [x, length, ctx.const(int(axis), _I64)], **attrs)
    return ctx.op("DFT", [x, length], axis=int(axis), **attrs)


def _length(ctx, x: str, size, n: int):
    """The length of one transformed dim: ``n`` when given (not -1), else the input's ``size`` there (an int, or
    ``(axis,)`` when symbolic: read from ``x`` at run time as a 1-D int64 [1])."""
    if n != -1:
        return n
    return size if isinstance(size, int) else run_dim(ctx, x, size[0])


def _dft_length(size, n: int):
    """The dft_length input of a DFT: None when the transform keeps the input's size."""
    return None if n == -1 or n == size else n


def _scale(ctx, x: str, lengths: list, exponent: float, dtype: torch.dtype) -> str:
    """``x`` times N ** ``exponent`` (0, +-1/2, +-1), N the product of ``lengths`` (ints or 1-D int64 names)."""
    if exponent == 0:
        return x
    if all(isinstance(n, int) for n in lengths):
        return ctx.op("Mul", [x, ctx.const(float(math.prod(lengths)) ** exponent, dtype)])
    n = ctx.const([1], _I64)
    for v in lengths:
        n = ctx.op("Mul", [n, v if isinstance(v, str) else ctx.const([v], _I64)])
    f = ctx.cast(n, dtype)
    if abs(exponent) == 0.5:
        f = ctx.op("Sqrt", [f])
    return ctx.op("Div" if exponent < 0 else "Mul", [x, f])


def _exponent(norm: str, inverse: bool, builtin: int) -> float:
    """The power of N to multiply by: torch's scale for ``norm`` in this direction over the DFT's own (``builtin``:
    -1 where ONNX's inverse DFT already divided by N)."""
    want = {"backward": -1.0, "ortho": -0.5, "forward": 0.0} if inverse else \
        {"backward": 0.0, "ortho": -0.5, "forward": -1.0}
    return want[norm] - builtin


def _signal_in(ctx) -> str:
    """The input as DFT takes it: a complex tensor as it is, a real one (cast to the output's precision) as
    [..., 1]."""
    if ctx.dtype("input").is_complex:
        return ctx.input("input")
    real = ctx.out_spec().dtype
    real = real.to_real() if real.is_complex else real
    return unsqueeze(ctx, as_dtype(ctx, "input", real), [ctx.rank("input")])


def _size(sizes, d: int):
    """Dim ``d`` of an input shape for ``_length``: an int, or ``(d,)`` when symbolic."""
    return sizes[d] if isinstance(sizes[d], int) else (d,)


@onnx_lowering("fft_c2c", complex=True)
def _fft_c2c_onnx(ctx, node):
    dims, s = _plan(ctx, node)
    src, sizes, inverse = ctx.input("input"), ctx.spec("input").shape, bool(node.args["inverse"])
    x, lengths = _signal_in(ctx), []
    for d, n in zip(dims, s):
        x = _dft(ctx, x, d, _dft_length(sizes[d], n), inverse=inverse)
        lengths.append(_length(ctx, src, _size(sizes, d), n))
    return _scale(ctx, x, lengths, _exponent(node.args["norm"], inverse, -1 if inverse else 0),
                  ctx.out_spec().dtype.to_real())


@onnx_lowering("fft_r2c", complex=True)
def _fft_r2c_onnx(ctx, node):
    # forward DFTs (the one-sided one first, on the last dim, while the signal is real), then for ``inverse`` the
    # conjugate: for a real signal the inverse transform is the conjugate of the forward one
    dims, s = _plan(ctx, node)
    src, sizes, inverse = ctx.input("input"), ctx.spec("input").shape, bool(node.args["inverse"])
    onesided, x = bool(node.args["onesided"]), _signal_in(ctx)
    order = [len(dims) - 1] + list(range(len(dims) - 1)) if onesided else range(len(dims))
    for i in order:
        d, n = dims[i], s[i]
        x = _dft(ctx, x, d, _dft_length(sizes[d], n), onesided=onesided and i == len(dims) - 1)
    dt = ctx.out_spec().dtype
    if inverse:
        x = conj(ctx, x, dt)
    lengths = [_length(ctx, src, _size(sizes, d), n) for d, n in zip(dims, s)]
    return _scale(ctx, x, lengths, _exponent(node.args["norm"], inverse, 0), dt.to_real())


@onnx_lowering("fft_c2r", complex=True)
def _fft_c2r_onnx(ctx, node):
    # inverse DFTs over the other dims, then ONNX's one-sided inverse (IRFFT) on the last one, whose input is first
    # trimmed or zero-padded to the n // 2 + 1 points torch reads. The forward-signed transform (hfft) is the
    # inverse one of the conjugate (the result is real), scaled back by N.
    dims, s = _plan(ctx, node)
    src, sizes, inverse = ctx.input("input"), ctx.spec("input").shape, bool(node.args["inverse"])
    out = ctx.out_spec().dtype
    x = as_complex(ctx, "input", out.to_complex())
    if not inverse:
        x = conj(ctx, x, out.to_complex())
    lengths = []
    for d, n in zip(dims[:-1], s[:-1]):
        x = _dft(ctx, x, d, _dft_length(sizes[d], n), inverse=True)
        lengths.append(_length(ctx, src, _size(sizes, d), n))
    last, m, n = dims[-1], sizes[dims[-1]], s[-1]
    if n == -1:  # ONNX's default length is torch's: 2 * (m - 1)
        if isinstance(m, int):
            lengths.append(2 * (m - 1))
        else:
            lengths.append(ctx.op("Mul", [ctx.op("Sub", [run_dim(ctx, src, last), ctx.const([1], _I64)]),
                                          ctx.const([2], _I64)]))
    else:
        half = n // 2 + 1
        if not isinstance(m, int):
            ctx.unsupported(f"dim {last} of the input is symbolic and s/n gives the output's length: the input "
                            "must be trimmed or padded to a size known when tracing")
        if m > half:
            x = slice_(ctx, x, [0], [half], [last])
        elif m < half:
            r = ctx.rank("input") + 1
            x = ctx.op("Pad", [x, i64(ctx, [0] * r + [half - m if a == last else 0 for a in range(r)])])
        lengths.append(n)
    x = _dft(ctx, x, last, None if n == -1 else n, inverse=True, onesided=True)
    x = squeeze(ctx, x, [ctx.rank("input")])
    return _scale(ctx, x, lengths, _exponent(node.args["norm"], inverse, -1), out)


# ---- ONNX DFT back to the transforms ---------------------------------------------------------------------------
def _dft_import(ctx, axis: int):
    """One ONNX DFT as a transform over one dim: its input is [..., 1] (real) or [..., 2] (complex), its output
    [..., 2], or [..., 1] for the one-sided inverse (IRFFT)."""
    x, r = ctx.input(0), ctx.rank(0)
    parts = ctx.shape(0)[-1]
    if parts not in (1, 2):
        ctx.unsupported(f"the input's last dim is {parts}: DFT takes [..., 1] (real) or [..., 2] (complex)")
    if not -r <= axis <= r - 2 or axis == -1:
        ctx.unsupported(f"axis {axis} of a rank-{r} input (the last dim holds the real and imaginary parts)")
    dim = axis % r
    n = ctx.ints(1)[0] if ctx.has(1) else None
    s = None if n is None else (n,)
    inverse, onesided = bool(ctx.attr("inverse", 0)), bool(ctx.attr("onesided", 0))
    if onesided and inverse:
        if parts != 2:
            ctx.unsupported("a one-sided inverse DFT (IRFFT) of a real input: ONNX defines it for complex input")
        y = ctx.call("fft_c2r", input=ctx.call("view_as_complex", input=x), s=s, dim=(dim,), inverse=True)
        return ctx.call("unsqueeze", input=y, dim=r - 1)
    signal = ctx.call("squeeze", input=x, dim=r - 1) if parts == 1 else ctx.call("view_as_complex", input=x)
    if onesided:
        if parts != 1:
            ctx.unsupported("a one-sided DFT of a complex input: ONNX defines it for real input")
        y = ctx.call("fft_r2c", input=signal, s=s, dim=(dim,), onesided=True)
    else:
        y = ctx.call("fft_c2c", input=signal, s=s, dim=(dim,), inverse=inverse)
    return ctx.call("view_as_real", input=y)


@onnx_import("DFT", since=17)
def _dft_import_17(ctx):
    return _dft_import(ctx, int(ctx.attr("axis", 1)))


@onnx_import("DFT", since=20)
def _dft_import_20(ctx):  # the axis is an input, by default -2 (the last signal dim)
    return _dft_import(ctx, ctx.ints(2)[0] if ctx.has(2) else -2)


# ---- complex values: views as real pairs, parts, conjugate, angle ---------------------------------------------
@register("view_as_real", family="spectral", functions=[torch.view_as_real], aten=["view_as_real.default"],
          flops=zero, view=True)
def view_as_real(input):
    """A complex tensor as a real one with a trailing dim of 2 (real, imaginary): in ONNX the same tensor."""
    return torch.view_as_real(input)


@register("view_as_complex", family="spectral", functions=[torch.view_as_complex],
          aten=["view_as_complex.default"], flops=zero, view=True)
def view_as_complex(input):
    """A real tensor with a trailing dim of 2 (real, imaginary) as a complex one: in ONNX the same tensor. A
    non-contiguous input (a slice of another tensor) is copied first, as torch views only contiguous pairs."""
    return torch.view_as_complex(input if input.stride(-1) == 1 and all(
        st % 2 == 0 for st in input.stride()[:-1]) else input.contiguous())


def _identity_onnx(ctx, node):
    return ctx.op("Identity", [ctx.input("input")])


onnx_lowering("view_as_real", complex=True)(_identity_onnx)
onnx_lowering("view_as_complex", complex=True)(_identity_onnx)


@register("real", family="spectral", functions=[torch.real], aten=["real.default"], flops=zero)
def real(input):
    """The real part of a complex tensor (a real tensor itself). ``x.real`` is the ``getattr`` op."""
    return torch.real(input)


@register("imag", family="spectral", functions=[torch.imag], aten=["imag.default"], flops=zero)
def imag(input):
    """The imaginary part of a complex tensor. ``x.imag`` is the ``getattr`` op."""
    return torch.imag(input)


@onnx_lowering("real", complex=True)
def _real_onnx(ctx, node):
    if not ctx.dtype("input").is_complex:
        return ctx.op("Identity", [ctx.input("input")])
    return complex_part(ctx, "input", 0)


@onnx_lowering("imag", complex=True)
def _imag_onnx(ctx, node):
    if not ctx.dtype("input").is_complex:
        ctx.unsupported("the imaginary part of a real tensor (torch refuses it too)")
    return complex_part(ctx, "input", 1)


@register("conj", family="spectral", functions=[torch.conj, torch.conj_physical],
          methods=["conj", "conj_physical"],
          aten=["conj.default", "_conj.default", "conj_physical.default", "_conj_physical.default"],
          flops=per_output(1))
def conj_(input):
    """The complex conjugate (a real tensor: itself). torch's lazy ``conj`` view is computed here, so what reads it
    (``view_as_real`` among them) sees plain values. One FLOP per element: the imaginary part's sign."""
    return torch.conj_physical(input)


@onnx_lowering("conj", complex=True)
def _conj_onnx(ctx, node):
    if not ctx.dtype("input").is_complex:
        return ctx.op("Identity", [ctx.input("input")])
    return conj(ctx, ctx.input("input"), ctx.dtype("input"))


@register("angle", family="spectral", functions=[torch.angle], methods=["angle"], aten=["angle.default"],
          flops=per_output(3))
def angle(input):
    """The argument of each element in [-pi, pi]: atan2(imag, real) of a complex tensor; of a real one pi where it
    is negative, else 0 (NaN stays NaN). Three FLOPs per element, as ``atan2``."""
    return torch.angle(input)


@onnx_lowering("angle", complex=True)
def _angle_onnx(ctx, node):
    dt = ctx.out_spec().dtype
    if ctx.dtype("input").is_complex:
        return atan2_onnx(ctx, complex_part(ctx, "input", 1), complex_part(ctx, "input", 0), dt)
    x = as_dtype(ctx, "input", dt)
    zero_ = ctx.const(0.0, dt)
    a = ctx.op("Where", [ctx.op("Less", [x, zero_]), ctx.const(math.pi, dt), zero_])
    return ctx.op("Where", [ctx.op("IsNaN", [x]), x, a])


# ---- windows: HannWindow, HammingWindow, BlackmanWindow (ONNX's formulas, in float64, then the output type) ----
_WINDOWS = {  # op type -> coefficients a_k: w[n] = sum over k of a_k * cos(k * 2 pi n / N)
    "HannWindow": [0.5, -0.5],
    "HammingWindow": [25.0 / 46.0, -(1 - 25.0 / 46.0)],
    "BlackmanWindow": [0.42, -0.5, 0.08],
}


@onnx_import(*_WINDOWS)
def _window_import(ctx):
    """A window of ``size`` points (read at run time when it is computed): N = size when ``periodic`` (the default),
    size - 1 when symmetric; computed in float64 and cast to ``output_datatype`` (float32 by default)."""
    from .onnx_helpers import torch_dtype

    size = ctx.ints(0, run_time=True)[0]
    n = ctx.call("arange", start=0, end=size, dtype=torch.float64)
    if ctx.attr("periodic", 1):
        period = size
    else:
        period = size - 1 if isinstance(size, int) else ctx.call("sub", input=size, other=1)
    phase = ctx.call("div", input=ctx.call("mul", input=n, other=2 * math.pi), other=period)
    coefs = _WINDOWS[ctx.op_type]
    w = ctx.call("add", input=ctx.call("zeros_like", input=n), other=coefs[0])
    for k, coef in enumerate(coefs[1:], start=1):
        w = ctx.call("add", input=w, other=ctx.call("mul", input=ctx.call(
            "cos", input=ctx.call("mul", input=phase, other=float(k))), other=coef))
    return ctx.call("to", input=w, dtype=torch_dtype(int(ctx.attr("output_datatype", 1))))
