"""ONNX quantization imported as the canonical arithmetic it is defined by (no quantized kernels).

QuantizeLinear, DequantizeLinear (per tensor, per axis, blocked), DynamicQuantizeLinear, MatMulInteger,
ConvInteger, QLinearMatMul and QLinearConv: each written out step by step as ONNX's definition computes it, in
the same types (integer products exactly: int32 matmuls, convolutions in float64, whose mantissa holds every
sum of 8-bit products; the rescales in float64 as onnx's reference evaluator does them), so the imported module
gives the integers the file defines, and a model quantized by onnxruntime's tools (QDQ, QOperator with standard
ops, dynamic) runs as ordinary torch. Element types torch does not compute in (int4, uint16, float8, ...) are
refused where the file declares them; onnxruntime's contrib ops (com.microsoft QGemm, ...) have no importer.
"""
from __future__ import annotations

import torch

from .onnx_helpers import FLOAT8
from .registry import onnx_import

# the range of each integer type a quantized value can have (QuantizeLinear saturates to it)
_RANGES = {torch.uint8: (0, 255), torch.int8: (-128, 127), torch.uint16: (0, 65535), torch.int16: (-32768, 32767),
           torch.int32: (-2**31, 2**31 - 1)}


def _per_axis(ctx, v, x, axis: int, block: int):
    """A scale or zero point ``v`` broadcast against ``x``: a scalar (or one element) as it is, a 1-D one along
    ``axis``, a blocked one (same rank as ``x``) repeated ``block`` times along ``axis`` and cut to its size."""
    shape = ctx.shape(v)
    r = ctx.rank(x)
    if not shape or (len(shape) == 1 and shape[0] == 1):
        return ctx.call("reshape", input=v, shape=[]) if shape else v
    a = axis % r
    if not block:
        if len(shape) != 1:
            ctx.unsupported(f"a {len(shape)}-D scale or zero point without block_size")
        return ctx.call("reshape", input=v, shape=[-1 if i == a else 1 for i in range(r)])
    v = ctx.call("repeat_interleave", input=v, repeats=block, dim=a)
    return ctx.call("slice", input=v, dim=a, start=0, end=ctx.size(x, a))


def _quant_type(ctx, zp_index: int, default=torch.uint8):
    """The integer type of a quantized output: the zero point's, else ``output_dtype``, else ``default``."""
    from .onnx_helpers import torch_dtype

    if ctx.has(zp_index):
        dt = ctx.dtype(zp_index)
    elif ctx.attr("output_dtype"):
        dt = torch_dtype(int(ctx.attr("output_dtype")))
    else:
        dt = default
    if dt not in _RANGES and dt not in FLOAT8:
        ctx.unsupported(f"quantization to {dt} (bridge quantizes to int8, uint8, int16, uint16, int32 and float8)")
    return dt


@onnx_import("QuantizeLinear")
def _quantize_import(ctx):
    """y = saturate(round_half_even(x / scale) + zero_point), in the zero point's integer type."""
    x = ctx.input(0)
    axis, block = int(ctx.attr("axis", 1)), int(ctx.attr("block_size", 0))
    dt = _quant_type(ctx, 2)
    scale = _per_axis(ctx, ctx.input(1), x, axis, block)
    if ctx.attr("precision"):
        from .onnx_helpers import torch_dtype

        p = torch_dtype(int(ctx.attr("precision")))
        x, scale = ctx.call("to", input=x, dtype=p), ctx.call("to", input=scale, dtype=p)
    if dt in FLOAT8:  # x / scale cast to float8 (saturating unless saturate=0); the zero point is 0
        from .elementwise import onnx_cast

        return onnx_cast(ctx, ctx.call("div", input=x, other=scale), dt)
    q = ctx.call("to", input=ctx.call("round", input=ctx.call("div", input=x, other=scale)), dtype=torch.int32)
    if ctx.has(2):
        q = ctx.call("add", input=q, other=ctx.call("to", input=_per_axis(ctx, ctx.input(2), x, axis, block),
                                                    dtype=torch.int32))
    lo, hi = _RANGES[dt]
    return ctx.call("to", input=ctx.call("clamp", input=q, min=lo, max=hi), dtype=dt)


@onnx_import("DequantizeLinear")
def _dequantize_import(ctx):
    """y = (x - zero_point) * scale, in float32, then in the scale's type (or ``output_dtype``)."""
    from .onnx_helpers import torch_dtype

    x = ctx.input(0)
    if ctx.dtype(x) not in _RANGES and ctx.dtype(x) not in FLOAT8:
        ctx.unsupported(f"dequantization of {ctx.dtype(x)}")
    axis, block = int(ctx.attr("axis", 1)), int(ctx.attr("block_size", 0))
    dx = ctx.call("to", input=x, dtype=torch.float32)
    if ctx.has(2) and ctx.dtype(x) not in FLOAT8:  # a float8 zero point is 0
        zp = ctx.call("to", input=_per_axis(ctx, ctx.input(2), x, axis, block), dtype=torch.float32)
        dx = ctx.call("sub", input=dx, other=zp)
    y = ctx.call("mul", input=dx, other=_per_axis(ctx, ctx.input(1), x, axis, block))
    out = torch_dtype(int(ctx.attr("output_dtype"))) if ctx.attr("output_dtype") else ctx.dtype(1)
    return ctx.call("to", input=y, dtype=out)


@onnx_import("DynamicQuantizeLinear")
def _dynamic_quantize_import(ctx):
    """uint8 quantization of x over the range [min(x, 0), max(x, 0)]: (y, scale, zero point), as ONNX defines."""
    x = ctx.input(0)
    f = torch.float32
    hi = ctx.call("clamp", input=ctx.call("to", input=ctx.call("amax", input=x), dtype=f), min=0.0)
    lo = ctx.call("clamp", input=ctx.call("to", input=ctx.call("amin", input=x), dtype=f), max=0.0)
    span = ctx.call("sub", input=hi, other=lo)
    span = ctx.call("where", condition=ctx.call("eq", input=span, other=0.0), input=torch.tensor(1.0), other=span)
    scale = ctx.call("div", input=span, other=torch.tensor(255.0))
    zp = ctx.call("round", input=ctx.call("clamp", input=ctx.call("neg", input=ctx.call(
        "div", input=lo, other=scale)), min=0.0, max=255.0))
    y = ctx.call("clamp", input=ctx.call("add", input=ctx.call("round", input=ctx.call(
        "div", input=x, other=scale)), other=zp), min=0.0, max=255.0)
    return [ctx.call("to", input=y, dtype=torch.uint8), ctx.call("to", input=scale, dtype=ctx.dtype(x)),
            ctx.call("to", input=zp, dtype=torch.uint8)]


def _minus_zero_point(ctx, i: int, zp_index: int):
    """Input ``i`` as int32, less its zero point (input ``zp_index``) when the node has one."""
    v = ctx.call("to", input=ctx.input(i), dtype=torch.int32)
    if ctx.has(zp_index):
        v = ctx.call("sub", input=v, other=ctx.call("to", input=ctx.input(zp_index), dtype=torch.int32))
    return v


@onnx_import("MatMulInteger")
def _matmul_integer_import(ctx):
    """(A - a_zero_point) @ (B - b_zero_point) in int32."""
    return ctx.call("matmul", input=_minus_zero_point(ctx, 0, 2), other=_minus_zero_point(ctx, 1, 3))


@onnx_import("QLinearMatMul")
def _qlinear_matmul_import(ctx):
    """saturate(round_half_even((a - a_zp) @ (b - b_zp) * (a_scale * b_scale / y_scale)) + y_zp): the integer
    product in int32, the rescale in float64 (as onnx's reference evaluator computes it)."""
    c = ctx.call("matmul", input=_minus_zero_point(ctx, 0, 2), other=_minus_zero_point(ctx, 3, 5))
    a_scale, b_scale, y_scale = ctx.input(1), ctx.input(4), ctx.input(6)
    m = ctx.call("div", input=ctx.call("mul", input=a_scale, other=b_scale), other=y_scale)
    d = ctx.call("mul", input=ctx.call("to", input=c, dtype=torch.float64),
                 other=ctx.call("to", input=m, dtype=torch.float64))
    dt = ctx.dtype(7) if ctx.has(7) else ctx.dtype(0)
    if dt not in _RANGES:
        ctx.unsupported(f"QLinearMatMul to {dt}")
    if ctx.has(7):
        d = ctx.call("add", input=d, other=ctx.call("to", input=ctx.input(7), dtype=torch.float64))
    lo, hi = _RANGES[dt]
    return ctx.call("to", input=ctx.call("clamp", input=ctx.call("round", input=d), min=lo, max=hi), dtype=dt)


def _integer_conv(ctx, x_zp: int, w: int, w_zp: int):
    """conv(x - x_zero_point, w - w_zero_point) (per output channel w_zero_point), zero-padded, as exact integers:
    computed in float64 (every sum of 8-bit products fits its 53-bit mantissa), then int32."""
    from .nn import onnx_conv

    f64 = torch.float64
    x = ctx.call("to", input=ctx.input(0), dtype=f64)
    if ctx.has(x_zp):
        x = ctx.call("sub", input=x, other=ctx.call("to", input=ctx.input(x_zp), dtype=f64))
    wt = ctx.call("to", input=ctx.input(w), dtype=f64)
    if ctx.has(w_zp):
        z = ctx.call("to", input=ctx.input(w_zp), dtype=f64)
        if ctx.rank(w_zp) == 1 and ctx.shape(w_zp)[0] != 1:  # one per output channel
            z = ctx.call("reshape", input=z, shape=[-1] + [1] * (ctx.rank(w) - 1))
        wt = ctx.call("sub", input=wt, other=z)
    return onnx_conv(ctx, x, wt, None)


@onnx_import("ConvInteger")
def _conv_integer_import(ctx):
    """conv(x - x_zero_point, w - w_zero_point) in int32."""
    return ctx.call("to", input=_integer_conv(ctx, 2, 1, 3), dtype=torch.int32)


@onnx_import("QLinearConv")
def _qlinear_conv_import(ctx):
    """saturate(round_half_even((conv(x - x_zp, w - w_zp) + B) * (x_scale * w_scale / y_scale) + y_zp)), the
    rescale in float64 (w_scale per output channel or one)."""
    f64 = torch.float64
    acc = _integer_conv(ctx, 2, 3, 5)
    if ctx.has(8):
        b = ctx.call("reshape", input=ctx.call("to", input=ctx.input(8), dtype=f64),
                     shape=[-1] + [1] * (ctx.rank(3) - 2))
        acc = ctx.call("add", input=acc, other=b)
    w_scale = ctx.input(4)
    if ctx.rank(4) == 1 and ctx.shape(4)[0] != 1:
        w_scale = ctx.call("reshape", input=w_scale, shape=[-1] + [1] * (ctx.rank(3) - 2))
    m = ctx.call("div", input=ctx.call("mul", input=ctx.input(1), other=w_scale), other=ctx.input(6))
    r = ctx.call("mul", input=acc, other=ctx.call("to", input=m, dtype=f64))
    dt = ctx.dtype(7) if ctx.has(7) else ctx.dtype(0)
    if dt not in (torch.int8, torch.uint8):
        ctx.unsupported(f"QLinearConv to {dt}")
    if ctx.has(7):
        r = ctx.call("add", input=r, other=ctx.call("to", input=ctx.input(7), dtype=f64))
    lo, hi = _RANGES[dt]
    return ctx.call("to", input=ctx.call("round", input=ctx.call("clamp", input=r, min=lo, max=hi)), dtype=dt)
