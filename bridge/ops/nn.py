"""Layers: linear, convolution, pooling, normalization, embedding, resampling, padding, softmax.

Each op's section holds all of it: adapters and FLOP formula, the ``@register`` definition, its ONNX lowering and
its ONNX importer(s). Helpers several ops share come first; ONNX helpers of every family are in onnx_helpers."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ir.graph import Value
from ._util import NotComputed, main_only, no_out, numel, out_numel, per_input, per_output, shape, zero
from .onnx_helpers import (INT64_MAX, i64, read_at_run_time, reduce, run_dim, slice_, squeeze, static, tuple_n,
                           unsqueeze)
from .registry import Attr, onnx_import, onnx_lowering, register


# ---- family-wide helpers ------------------------------------------------------------------------------------
def _mod(fn):
    """Module adapter from a function of the module giving extra keyword arguments."""
    return lambda m, args, kwargs: (args, {**kwargs, **fn(m)})


def _bias(node) -> int:
    """One add per output element when the node has a bias."""
    return out_numel(node) if node.args.get("bias") is not None else 0


# pooling windows: convolution, pooling, unfold and fold
def _pool_input(ctx, key, n):
    """The input as (N, C, *spatial): an unbatched (C, *spatial) input gets a batch axis; returns (x, undo)."""
    x = ctx.input(key)
    if ctx.rank(key) == n + 1:
        return unsqueeze(ctx, x, [0]), (lambda y: squeeze(ctx, y, [0]))
    return x, (lambda y: y)


def _pool_args(a, n):
    k = list(tuple_n(a["kernel_size"], n))
    s = a.get("stride")
    s = list(tuple_n(s if s not in (None, [], ()) else a["kernel_size"], n))
    return k, s


def _pool_flops(node):
    k = node.args.get("kernel_size", 1)
    kk = math.prod(k) if isinstance(k, (tuple, list)) else k ** int(node.op[-2])
    return kk * out_numel(node)


def _with_indices(args, kwargs):
    """aten max_pool*_with_indices / adaptive_max_pool* return (values, indices) always."""
    return args, {**kwargs, "return_indices": True}


def _max_pool(ctx, x, in_sp, out_sp, k, s, p, d, ceil_mode, indices):
    """torch max_pool on an (N, C, *spatial) ONNX tensor; returns values, or [values, indices] with torch's
    indices (flat within each (n, c) plane; ONNX counts over the whole tensor). With static sizes the end pads
    are chosen so that floor mode gives torch's windows exactly (its ceil_mode drops a last window that starts
    in the right padding; onnx shape inference before opset 22 does not)."""
    n = len(k)
    if static(in_sp) and static(out_sp):
        eff = [dd * (kk - 1) + 1 for dd, kk in zip(d, k)]
        ends = [max(0, (o - 1) * ss + e - i - pp) for i, o, ss, e, pp in zip(in_sp, out_sp, s, eff, p)]
        extra = [max(0, e - (kk - 1)) for e, kk in zip(ends, k)]  # onnxruntime wants pads < kernel_shape
        if any(extra):  # a dilated last window overhanging by a kernel or more: the rest as explicit -inf
            if indices:
                ctx.unsupported("dilated ceil-mode max pooling with return_indices whose last window overhangs "
                                "the input by a kernel size or more")
            x = ctx.op("Pad", [x, i64(ctx, [0] * (n + 2) + [0, 0] + extra),
                               ctx.const(-math.inf, ctx.dtype("input"))], mode="constant")
            ends = [e - x_ for e, x_ in zip(ends, extra)]
        kw = dict(pads=list(p) + ends, ceil_mode=0)
    else:
        kw = dict(pads=list(p) + list(p), ceil_mode=int(bool(ceil_mode)))
    if not indices:
        return ctx.op("MaxPool", [x], kernel_shape=k, strides=s, dilations=d, **kw)
    y, idx = ctx.op("MaxPool", [x], n_out=2, kernel_shape=k, strides=s, dilations=d, **kw)
    plane = (i64(ctx, [math.prod(in_sp)]) if static(in_sp) else
             reduce(ctx, "ReduceProd", ctx.op("Shape", [x], start=2), [0], 1))
    return [y, ctx.op("Mod", [idx, plane])]


def _avg_divisors(in_sp, out_sp, k, s, p, count_include_pad):
    """torch's per-output-position divisor of avg_pool (ATen AvgPool*.cpp), one vector per spatial dim."""
    per_dim = []
    for i, o, kk, ss, pp in zip(in_sp, out_sp, k, s, p):
        v = []
        for j in range(o):
            start = j * ss - pp
            end = min(start + kk, i + pp)
            pool = end - start
            start, end = max(start, 0), min(end, i)
            v.append(pool if count_include_pad else max(end - start, 1))
        per_dim.append(torch.tensor(v, dtype=torch.float64))
    return per_dim


def _avg_pool(ctx, x, in_sp, out_sp, k, s, p, ceil_mode, count_include_pad, divisor_override, dt, channels=None):
    """torch avg_pool on an (N, C, *spatial) ONNX tensor. ONNX AveragePool is exact when no window leaves the
    padded input (floor mode) and no divisor override; otherwise the windows are summed over an explicitly
    zero-padded input and divided by torch's divisor per output position (static spatial sizes).

    From opset 19, where ONNX's AveragePool-19 runs slower in onnxruntime (1.32) than AveragePool-11
    (densenet_mini 105.5 vs 99.0 us), the exact case is a depthwise Conv with weights 1 / prod(k) when the
    channel count is known: the same window means, zero padding counted as count_include_pad does."""
    known = static(in_sp) and static(out_sp)
    floor_out = [(i + 2 * pp - kk) // ss + 1 for i, kk, ss, pp in zip(in_sp, k, s, p)] if known else None
    if divisor_override is None and (not ceil_mode or (known and floor_out == list(out_sp))):
        if ctx.opset >= 19 and isinstance(channels, int) and (count_include_pad or not any(p)) and \
                dt in (torch.float32, torch.float64, torch.float16):
            w = torch.full((channels, 1, *k), 1.0 / math.prod(k), dtype=torch.float64)
            return ctx.op("Conv", [x, ctx.const(w, dt)], group=channels, kernel_shape=k, strides=s,
                          pads=list(p) + list(p))
        return ctx.op("AveragePool", [x], kernel_shape=k, strides=s, pads=list(p) + list(p),
                      count_include_pad=int(bool(count_include_pad)))
    if not known:
        ctx.unsupported("average pooling with ceil_mode or divisor_override on symbolic spatial sizes")
    right = [max(0, (o - 1) * ss + kk - i - pp) for i, o, kk, ss, pp in zip(in_sp, out_sp, k, s, p)]
    if any(p) or any(right):
        x = ctx.op("Pad", [x, i64(ctx, [0, 0, *p, 0, 0, *right]), ctx.const(0.0, dt)], mode="constant")
    y = ctx.op("AveragePool", [x], kernel_shape=k, strides=s)  # full windows: sum / prod(k)
    if divisor_override is not None:
        factor = torch.full(tuple(out_sp), math.prod(k) / float(divisor_override), dtype=torch.float64)
    else:
        factor = torch.ones((), dtype=torch.float64)
        for d, v in enumerate(_avg_divisors(in_sp, out_sp, k, s, p, count_include_pad)):
            factor = factor.unsqueeze(-1) * (k[d] / v).reshape(*([1] * d), -1)
        if bool((factor == 1).all()):
            return y
    return ctx.op("Mul", [y, ctx.const(factor, dt)])


def _adaptive_pool(ctx, x, in_sp, out, kind):
    """Adaptive avg/max pooling of an (N, C, *spatial) tensor: global or strided pooling when the sizes divide,
    else unrolled: per spatial dim, one Slice + Reduce per output position (torch's windows
    [floor(j*in/out), ceil((j+1)*in/out)), separable since a box mean/max is a mean/max of per-dim ones)."""
    out = [i if o is None else int(o) for i, o in zip(in_sp, out)]
    pool, glob, red = (("AveragePool", "GlobalAveragePool", "ReduceMean") if kind == "avg"
                       else ("MaxPool", "GlobalMaxPool", "ReduceMax"))
    if all(o == 1 for o in out):
        return ctx.op(glob, [x])
    if not static(in_sp):
        ctx.unsupported(f"adaptive {kind} pooling of symbolic spatial sizes to a size other than 1")
    if all(i % o == 0 for i, o in zip(in_sp, out)):
        k = [i // o for i, o in zip(in_sp, out)]
        return ctx.op(pool, [x], kernel_shape=k, strides=k)
    for d, (i, o) in enumerate(zip(in_sp, out)):
        if i == o:
            continue
        axis = 2 + d
        parts = []
        for j in range(o):
            lo, hi = (j * i) // o, -((-(j + 1) * i) // o)
            parts.append(reduce(ctx, red, slice_(ctx, x, [lo], [hi], [axis]), [axis], 1))
        x = ctx.op("Concat", parts, axis=axis)
    return x


# padding (F.pad and the padding_mode of conv); the pads of ONNX Conv / MaxPool / AveragePool
def _pad_to(ctx, x, r, begins, ends, mode, value, dt):
    """F.pad of a rank-``r`` tensor by per-axis ``begins``/``ends`` (python ints or run-time scalar Values)."""
    if mode == "constant":
        value = value if value is not None else 0
        return ctx.op("Pad", [x, ctx.ints(begins + ends), ctx.const(value, dt)], mode="constant")
    if mode in ("reflect", "replicate"):
        return ctx.op("Pad", [x, ctx.ints(begins + ends)], mode="reflect" if mode == "reflect" else "edge")
    if mode != "circular":
        ctx.unsupported(f"padding mode {mode!r}")
    known = static(begins + ends)
    if ctx.opset >= 19 and (not known or min(begins + ends) >= 0):
        return ctx.op("Pad", [x, ctx.ints(begins + ends)], mode="wrap")
    if not known or min(begins + ends) < 0:
        ctx.unsupported("circular padding by negative or run-time amounts before opset 19")
    for axis in range(r):  # wrap around: [x[-b:], x, x[:e]] per padded axis
        b, e = begins[axis], ends[axis]
        if b == 0 and e == 0:
            continue
        parts = ([slice_(ctx, x, [-b], [INT64_MAX], [axis])] if b else []) + [x] + (
            [slice_(ctx, x, [0], [e], [axis])] if e else [])
        x = ctx.op("Concat", parts, axis=axis)
    return x


def _onnx_window(ctx):
    """A MaxPool / AveragePool node's input, kernel_shape, strides and dilations (1 where not given)."""
    kernel = list(ctx.attr("kernel_shape"))
    n = len(kernel)
    return ctx.input(0), kernel, list(ctx.attr("strides", [1] * n)), list(ctx.attr("dilations", [1] * n))


def _onnx_pads(ctx, x, kernel, strides, dilations):
    """(begin pads, end pads) per spatial dim from ``pads`` / ``auto_pad`` (SAME_* needs static sizes when
    strided)."""
    n = len(kernel)
    auto = ctx.attr("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        p = list(ctx.attr("pads", [0] * (2 * n)))
        return p[:n], p[n:]
    if auto == "VALID":
        return [0] * n, [0] * n
    begin, end = [], []
    for i in range(n):
        size = ctx.shape(x)[2 + i]
        if not isinstance(size, int):
            if strides[i] != 1:
                ctx.unsupported(f"auto_pad={auto} with stride {strides[i]} over a symbolic dim")
            size = 0
        out = -(-size // strides[i])
        total = max(0, (out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - size)
        lo = total // 2 if auto == "SAME_UPPER" else total - total // 2
        begin.append(lo)
        end.append(total - lo)
    return begin, end


def _pad_explicit(ctx, x, begin, end, value=0.0):
    """F.pad of the spatial dims (torch order: last dim first)."""
    pad = []
    for b, e in reversed(list(zip(begin, end))):
        pad += [b, e]
    return ctx.call("pad", input=x, pad=pad, mode="constant", value=value)


# normalization and distances
def _normalize_flops(stats: str | None):
    """Per output element: normalize 2 ((x - mean) * rstd), weight 1, bias 1, and 3 more when the
    statistics come from the input (mean 1, variance 2); ``stats`` names the argument that says so
    (``"training"``, ``"use_input_stats"``), or None for norms that always compute them."""
    def flops(node):
        a = node.args
        per = 2 + (a.get("weight") is not None) + (a.get("bias") is not None)
        per += 3 if stats is None or a.get(stats) else 0
        return per * out_numel(node)
    flops.__doc__ = "normalize 2 + affine 2 + input statistics 3, per output element"
    return flops


def _ones_or(ctx, key, shape, value, dt):
    return ctx.input(key) if ctx[key] is not None else ctx.const(torch.full(tuple(shape), float(value)), dt)


def _norm_p(ctx, x, p, axes, keepdims, dt):
    """torch.linalg.vector_norm(x, p, axes): ReduceL1/L2, max/min |x| for +-inf, count for 0, else the power sum."""
    if p == 2:
        return reduce(ctx, "ReduceL2", x, axes, keepdims)
    if p == 1:
        return reduce(ctx, "ReduceL1", x, axes, keepdims)
    if p == math.inf:
        return reduce(ctx, "ReduceMax", ctx.op("Abs", [x]), axes, keepdims)
    if p == -math.inf:
        return reduce(ctx, "ReduceMin", ctx.op("Abs", [x]), axes, keepdims)
    if p == 0:
        nz = ctx.cast(ctx.op("Not", [ctx.op("Equal", [x, ctx.const(0.0, dt)])]), dt)
        return reduce(ctx, "ReduceSum", nz, axes, keepdims)
    s = reduce(ctx, "ReduceSum", ctx.op("Pow", [ctx.op("Abs", [x]), ctx.const(float(p), dt)]), axes, keepdims)
    return ctx.op("Pow", [s, ctx.const(1.0 / float(p), dt)])


# rearrangement
def _one_hot_kernels(c, k, dt):
    """Conv weight (C*prod(k), 1, *k) whose output channel c*prod(k) + m copies kernel offset m of channel c."""
    kk = math.prod(k)
    w = torch.zeros(c * kk, 1, kk, dtype=dt)
    w[torch.arange(c * kk), 0, torch.arange(kk).repeat(c)] = 1
    return w.reshape(c * kk, 1, *k)


def _lead_then(ctx, x, k, tail):
    """A shape: ``x``'s dims before the last ``k``, then ``tail`` (python ints or ONNX 1-D int64 names)."""
    parts = [ctx.op("Shape", [x], start=0, end=-k)] + [t if isinstance(t, str) else i64(ctx, t) for t in tail]
    return ctx.op("Concat", parts, axis=0)


# ---- linear -------------------------------------------------------------------------------------------------
def _linear_macs(node):
    w = shape(node.args["weight"])
    return (w[-1] if w else 0) * out_numel(node)  # in_features per output element


def _linear_flops(node):
    return 2 * _linear_macs(node) + _bias(node)


@register("linear", family="nn", functions=[F.linear], aten=["linear.default"],
          modules={nn.Linear: lambda m, a, kw: (a, {**kw, "weight": Attr("weight"),
                                                     "bias": Attr("bias") if m.bias is not None else None})},
          flops=_linear_flops, macs=_linear_macs, n_tensor_params=3, fresh_output=True,
          contiguous_output=True)
def linear(input, weight, bias=None):
    """input @ weight.T + bias."""
    return F.linear(input, weight, bias)


@onnx_lowering("linear")
def _linear_onnx(ctx, node):
    x, w, b = ctx.input("input"), ctx.input("weight"), ctx.input("bias")
    if ctx.rank("input") == 2 and b is not None and ctx.dtype("input").is_floating_point:  # onnxruntime: float Gemm
        return ctx.op("Gemm", [x, w, b], transB=1)
    y = ctx.op("MatMul", [x, ctx.op("Transpose", [w], perm=[1, 0])])
    return ctx.op("Add", [y, b]) if b is not None else y


@onnx_import("Gemm")
def _gemm_import(ctx):
    a, b, c = ctx.input(0), ctx.input(1), ctx.input(2)
    alpha, beta = float(ctx.attr("alpha", 1.0)), float(ctx.attr("beta", 1.0))
    ta, tb = int(ctx.attr("transA", 0)), int(ctx.attr("transB", 0))
    if ta:
        a = ctx.call("t", input=a)
    if tb and alpha == 1.0 and (c is None or (beta == 1.0 and ctx.rank(c) <= 1)):
        return ctx.call("linear", input=a, weight=b, bias=c)  # y = a @ b.T + c, as nn.Linear stores it
    y = ctx.call("matmul", input=a, other=ctx.call("t", input=b) if tb else b)
    if alpha != 1.0:
        y = ctx.call("mul", input=y, other=alpha)
    if c is not None and beta != 0.0:
        y = ctx.call("add", input=y, other=c if beta == 1.0 else ctx.call("mul", input=c, other=beta))
    return y


# ---- bilinear -----------------------------------------------------------------------------------------------
def _bilinear_macs(node):
    return math.prod(shape(node.args["weight"])[1:]) * out_numel(node)  # in1 * in2 per output element


@register("bilinear", family="nn", functions=[F.bilinear], aten=["bilinear.default"],
          modules={nn.Bilinear: lambda m, a, kw: (a, {**kw, "weight": Attr("weight"),
                                                       "bias": Attr("bias") if m.bias is not None else None})},
          flops=lambda n: 2 * _bilinear_macs(n) + _bias(n), macs=_bilinear_macs, n_tensor_params=4)
def bilinear(input1, input2, weight, bias=None):
    return F.bilinear(input1, input2, weight, bias)


@onnx_lowering("bilinear")
def _bilinear_onnx(ctx, node):
    # y[..., o] = x1[..., i] W[o, i, j] x2[..., j] + b[o]
    y = ctx.op("Einsum", [ctx.input("input1"), ctx.input("weight"), ctx.input("input2")],
               equation="...i,oij,...j->...o")
    return ctx.op("Add", [y, ctx.input("bias")]) if node.args["bias"] is not None else y


# ---- identity -----------------------------------------------------------------------------------------------
@register("identity", family="nn", modules={nn.Identity: lambda m, a, kw: (a[:1], {})}, flops=zero, view=True)
def identity(input):
    """Returns its input."""
    return input


@onnx_lowering("identity")
def _identity_onnx(ctx, node):
    return ctx.op("Identity", [ctx.input("input")])


# ---- convolution --------------------------------------------------------------------------------------------
def _conv_macs(node):
    w = shape(node.args["weight"])
    return math.prod(w[1:]) * out_numel(node) if w else 0  # Cin/groups * prod(kernel) per output element


def _conv_flops(node):
    return 2 * _conv_macs(node) + _bias(node)


def _conv_module(m, args, kwargs):
    return args, {**kwargs, "weight": Attr("weight"), "bias": Attr("bias") if m.bias is not None else None,
                  "stride": m.stride, "padding": m.padding, "dilation": m.dilation, "groups": m.groups,
                  "padding_mode": m.padding_mode}


_CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _aten_convolution(args, kwargs):
    names = ["input", "weight", "bias", "stride", "padding", "dilation", "transposed", "output_padding", "groups"]
    b = dict(zip(names, args), **kwargs)
    if b["transposed"]:
        raise NotImplementedError("transposed aten.convolution goes to conv_transpose")
    return (b["input"], b["weight"], b["bias"], b["stride"], b["padding"], b["dilation"], b["groups"]), {}


@register("conv", family="nn",
          functions=[F.conv1d, F.conv2d, F.conv3d],
          aten=["conv1d.default", "conv2d.default", "conv3d.default", "conv1d.padding", "conv2d.padding",
                "conv3d.padding", ("convolution.default", _aten_convolution)],
          modules={nn.Conv1d: _conv_module, nn.Conv2d: _conv_module, nn.Conv3d: _conv_module},
          flops=_conv_flops, macs=_conv_macs, n_tensor_params=3, fresh_output=True)
def conv(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"):
    """N-d convolution (N = weight.dim() - 2); ``padding_mode`` other than zeros pads first, as nn.ConvNd."""
    n = weight.dim() - 2
    if padding_mode != "zeros":
        pad = (padding,) * n if isinstance(padding, int) else tuple(padding)
        input = F.pad(input, [p for p in reversed(pad) for _ in range(2)], mode=padding_mode)
        padding = 0
    return _CONV_FN[n](input, weight, bias, stride, padding, dilation, groups)


@onnx_lowering("conv")
def _conv_onnx(ctx, node):
    a = node.args
    n = ctx.rank("weight") - 2
    x, undo = _pool_input(ctx, "input", n)  # unbatched input: a batch axis around the Conv
    pad = a["padding"]
    if a["padding_mode"] != "zeros":  # as nn.ConvNd: pad explicitly (reflect/replicate/circular), then no padding
        if isinstance(pad, str):
            ctx.unsupported(f"padding={pad!r} with padding_mode={a['padding_mode']!r}")
        p = list(tuple_n(pad, n))
        x = _pad_to(ctx, x, n + 2, [0, 0] + p, [0, 0] + p, a["padding_mode"], None, ctx.dtype("input"))
        pad = 0
    kw = dict(strides=list(tuple_n(a["stride"], n)), dilations=list(tuple_n(a["dilation"], n)), group=a["groups"])
    if isinstance(pad, str):
        k = ctx.spec("weight").shape[2:]
        if pad == "valid":
            kw["pads"] = [0] * (2 * n)
        elif static(k):  # torch's "same" (stride 1): dilation * (k - 1) in all, the larger half at the end
            total = [d * (kk - 1) for d, kk in zip(kw["dilations"], k)]
            kw["pads"] = [t // 2 for t in total] + [t - t // 2 for t in total]
        else:  # onnxruntime runs SAME_UPPER undilated only
            kw["auto_pad"] = "SAME_UPPER"
    else:
        p = list(tuple_n(pad, n))
        kw["pads"] = p + p
    return undo(ctx.op("Conv", [x, ctx.input("weight"), ctx.input("bias")], **kw))


@onnx_import("Conv")
def _conv_import(ctx):
    return onnx_conv(ctx, ctx.input(0), ctx.input(1), ctx.input(2))


def onnx_conv(ctx, x, w, bias):
    """The convolution of an ONNX Conv-like node (its kernel_shape, strides, dilations, pads or auto_pad, group
    attributes) of ``x`` by ``w`` plus ``bias`` (None: none); ConvInteger and QLinearConv use it too."""
    n = ctx.rank(w) - 2
    kernel = list(ctx.attr("kernel_shape", ctx.shape(w)[2:]))
    strides, dil = list(ctx.attr("strides", [1] * n)), list(ctx.attr("dilations", [1] * n))
    begin, end = _onnx_pads(ctx, x, kernel, strides, dil)
    if begin != end:  # asymmetric: pad explicitly, then convolve without padding
        x, begin = _pad_explicit(ctx, x, begin, end), [0] * n
    return ctx.call("conv", input=x, weight=w, bias=bias, stride=strides, padding=begin, dilation=dil,
                    groups=int(ctx.attr("group", 1)))


# ---- transposed convolution ---------------------------------------------------------------------------------
def _conv_transpose_macs(node):
    w = shape(node.args["weight"])  # (Cin, Cout/groups, *k): each input element feeds Cout/groups * prod(k)
    return math.prod(w[1:]) * numel(node.args["input"]) if w else 0


def _conv_transpose_flops(node):
    return 2 * _conv_transpose_macs(node) + _bias(node)


_CONVT_FN = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _convt_module(m, args, kwargs):
    if len(args) > 1 or kwargs.get("output_size") is not None:
        out_size = args[1] if len(args) > 1 else kwargs["output_size"]
        n = len(m.kernel_size)
        output_padding = m._output_padding(args[0], out_size, m.stride, m.padding, m.kernel_size, n, m.dilation)
    else:
        output_padding = m.output_padding
    return args[:1], {"weight": Attr("weight"), "bias": Attr("bias") if m.bias is not None else None,
                      "stride": m.stride, "padding": m.padding, "output_padding": tuple(output_padding),
                      "groups": m.groups, "dilation": m.dilation}


@register("conv_transpose", family="nn",
          functions=[F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d],
          aten=["conv_transpose1d.default", "conv_transpose2d.input", "conv_transpose3d.input"],
          modules={nn.ConvTranspose1d: _convt_module, nn.ConvTranspose2d: _convt_module,
                   nn.ConvTranspose3d: _convt_module},
          flops=_conv_transpose_flops, macs=_conv_transpose_macs, n_tensor_params=3,
          fresh_output=True)
def conv_transpose(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """N-d transposed convolution (N = weight.dim() - 2)."""
    return _CONVT_FN[weight.dim() - 2](input, weight, bias, stride, padding, output_padding, groups, dilation)


@onnx_lowering("conv_transpose")
def _conv_transpose_onnx(ctx, node):
    a = node.args
    n = ctx.rank("weight") - 2
    x, undo = _pool_input(ctx, "input", n)
    p, op = list(tuple_n(a["padding"], n)), list(tuple_n(a["output_padding"], n))
    strides = list(tuple_n(a["stride"], n))
    # torch's output_padding only cuts less at the end: a smaller end pad says the same, and onnxruntime refuses an
    # output_padding of stride or more (torch allows it below the dilation); what is left pads zeros at the end
    end, rest = [max(b - o, 0) for b, o in zip(p, op)], [max(o - b, 0) for b, o in zip(p, op)]
    inner = [min(r, st - 1) for r, st in zip(rest, strides)]
    zeros = [r - i for r, i in zip(rest, inner)]  # past the full output: no tap reaches there, only the bias
    bias = ctx.input("bias") if a["bias"] is not None else None
    y = ctx.op("ConvTranspose", [x, ctx.input("weight")] + ([bias] if bias and not any(zeros) else []),
               strides=strides, pads=p + end, output_padding=inner, dilations=list(tuple_n(a["dilation"], n)),
               group=int(a["groups"]))
    if any(zeros):
        y = ctx.op("Pad", [y, ctx.ints([0] * (n + 2) + [0, 0] + zeros)])
        if bias:
            y = ctx.op("Add", [y, ctx.op("Reshape", [bias, ctx.ints([-1] + [1] * n)])])
    return undo(y)


@onnx_import("ConvTranspose")
def _conv_transpose_import(ctx):
    x, w = ctx.input(0), ctx.input(1)
    n = ctx.rank(w) - 2
    if ctx.attr("output_shape") is not None or ctx.attr("auto_pad", "NOTSET") not in ("NOTSET", "", "VALID"):
        ctx.unsupported("ConvTranspose with output_shape or auto_pad SAME_*")
    p = list(ctx.attr("pads", [0] * (2 * n)))
    begin, end = p[:n], p[n:]
    # torch cuts ``begin`` from both ends of each dim: where ONNX cuts more at the end, crop afterwards; where it
    # cuts less, that is torch's output_padding (which torch keeps below the stride or the dilation)
    extra = [e - b for b, e in zip(begin, end)]
    strides, dil = list(ctx.attr("strides", [1] * n)), list(ctx.attr("dilations", [1] * n))
    out_pad = [o + max(-d, 0) for o, d in zip(ctx.attr("output_padding", [0] * n), extra)]
    if any(o >= max(s, dl) for o, s, dl in zip(out_pad, strides, dil)):
        ctx.unsupported(f"ConvTranspose whose end pads {end} and output_padding leave an output_padding {out_pad} "
                        "torch refuses (it must stay below the stride or the dilation)")
    y = ctx.call("conv_transpose", input=x, weight=w, bias=ctx.input(2), stride=strides, padding=begin,
                 output_padding=out_pad, groups=int(ctx.attr("group", 1)), dilation=dil)
    for i, d in enumerate(extra):
        if d > 0:
            y = ctx.call("slice", input=y, dim=2 + i, start=0, end=-d, step=1)
    return y


# ---- max pooling: max_pool1d/2d/3d --------------------------------------------------------------------------
def _make_max_pool(n):
    fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[n]
    mod = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}[n]

    def impl(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
        return fn(input, kernel_size, stride, padding, dilation, ceil_mode=ceil_mode, return_indices=return_indices)

    impl.__name__ = f"max_pool{n}d"
    impl.__doc__ = f"{n}-d max pooling; with return_indices, (values, indices)."
    register(f"max_pool{n}d", family="nn", functions=[fn, getattr(torch, f"max_pool{n}d")],
             aten=[f"max_pool{n}d.default"] + ([(f"max_pool{n}d_with_indices.default", _with_indices)]
                                               if n > 1 else []),
             modules={mod: _mod(lambda m: dict(kernel_size=m.kernel_size, stride=m.stride, padding=m.padding,
                                               dilation=m.dilation, ceil_mode=m.ceil_mode,
                                               return_indices=m.return_indices))},
             flops=_pool_flops)(impl)


def _max_pool_lowering(n):
    def lower(ctx, node):
        a = node.args
        x, undo = _pool_input(ctx, "input", n)  # unbatched input: a batch axis around the MaxPool
        k, s = _pool_args(a, n)
        p = list(tuple_n(a["padding"], n))
        res = _max_pool(ctx, x, ctx.spec("input").shape[-n:], ctx.out_spec().shape[-n:], k, s, p,
                        list(tuple_n(a["dilation"], n)), a["ceil_mode"], a["return_indices"])
        return [undo(r) for r in res] if a["return_indices"] else undo(res)
    return lower


for _n in (1, 2, 3):
    _make_max_pool(_n)
    onnx_lowering(f"max_pool{_n}d")(_max_pool_lowering(_n))


def _torch_windows(sizes, kernel, strides, dil, begin, end, ceil) -> bool | None:
    """torch's ``ceil_mode`` for which pooling with padding ``begin`` on both sides has the windows of ONNX pooling
    with pads ``begin`` / ``end`` in ONNX ``ceil`` mode (the same count from the same starts; how bridge exports
    torch's pooling); None when neither does (or sizes are symbolic)."""
    if not static(sizes) or any(2 * b > k for b, k in zip(begin, kernel)):
        return None
    for mode in (False, True):
        same = True
        for i, k, s, d, b, e in zip(sizes, kernel, strides, dil, begin, end):
            span, tspan = i + b + e - d * (k - 1) - 1, i + 2 * b - d * (k - 1) - 1
            onnx = (-(-span // s) if ceil else span // s) + 1
            windows = (-(-tspan // s) if mode else tspan // s) + 1
            windows -= mode and (windows - 1) * s >= i + b  # ceil mode drops a last window starting in the padding
            same = same and onnx == windows
        if same:
            return mode
    return None


@onnx_import("MaxPool")
def _max_pool_import(ctx):
    """MaxPool; its Indices output (flat over the whole input, ONNX) is torch's (flat within each (n, c) plane)
    plus the plane's offset, (n * C + c) * prod(spatial)."""
    indices = len(ctx.node.output) > 1 and bool(ctx.node.output[1])
    if ctx.attr("storage_order", 0):
        ctx.unsupported("storage_order=1")
    x, kernel, strides, dil = _onnx_window(ctx)
    n = len(kernel)
    begin, end = _onnx_pads(ctx, x, kernel, strides, dil)
    ceil = bool(ctx.attr("ceil_mode", 0))
    if begin != end and indices and (mode := _torch_windows(ctx.shape(x)[2:], kernel, strides, dil, begin, end,
                                                           ceil)) is not None:
        end, ceil = begin, mode  # the same windows, and torch counts the indices in the input
    if begin != end:
        if indices:  # torch would count the indices in the padded input
            ctx.unsupported(f"the Indices output of MaxPool with uneven pads {begin} / {end}")
        x, begin = _pad_explicit(ctx, x, begin, end, float("-inf")), [0] * n
    y = ctx.call(f"max_pool{n}d", input=x, kernel_size=kernel, stride=strides, padding=begin, dilation=dil,
                 ceil_mode=ceil, return_indices=indices)
    if not indices:
        return y
    shape = ctx.shape(x)
    if not static(shape):
        ctx.unsupported(f"the Indices output of MaxPool over symbolic sizes {list(shape)}")
    offsets = torch.arange(shape[0] * shape[1], dtype=torch.int64).reshape([shape[0], shape[1]] + [1] * n)
    return [y[0], ctx.call("add", input=y[1], other=offsets * math.prod(shape[2:]))]


# ---- average pooling: avg_pool1d/2d/3d ----------------------------------------------------------------------
def _make_avg_pool(n):
    fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[n]
    mod = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}[n]

    def impl(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
             divisor_override=None):
        if n == 1:
            return fn(input, kernel_size, stride, padding, ceil_mode, count_include_pad)
        return fn(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)

    impl.__name__ = f"avg_pool{n}d"
    impl.__doc__ = f"{n}-d average pooling."

    def from_module(m):
        d = dict(kernel_size=m.kernel_size, stride=m.stride, padding=m.padding, ceil_mode=m.ceil_mode,
                 count_include_pad=m.count_include_pad)
        if n > 1:
            d["divisor_override"] = m.divisor_override
        return d

    register(f"avg_pool{n}d", family="nn", functions=[fn] + ([torch.avg_pool1d] if n == 1 else []),
             aten=[f"avg_pool{n}d.default"], modules={mod: _mod(from_module)}, flops=_pool_flops,
             fresh_output=True)(impl)


def _avg_pool_lowering(n):
    def lower(ctx, node):
        a = node.args
        x, undo = _pool_input(ctx, "input", n)
        k, s = _pool_args(a, n)
        p = list(tuple_n(a["padding"], n))
        shape = ctx.spec("input").shape
        y = _avg_pool(ctx, x, shape[-n:], ctx.out_spec().shape[-n:], k, s, p, a["ceil_mode"],
                      a["count_include_pad"], a["divisor_override"] if n > 1 else None, ctx.dtype("input"),
                      channels=shape[-n - 1] if len(shape) > n else 1)
        return undo(y)
    return lower


for _n in (1, 2, 3):
    _make_avg_pool(_n)
    onnx_lowering(f"avg_pool{_n}d")(_avg_pool_lowering(_n))


@onnx_import("AveragePool")
def _avg_pool_import(ctx):
    x, kernel, strides, dil = _onnx_window(ctx)
    n = len(kernel)
    if any(d != 1 for d in dil):
        ctx.unsupported("AveragePool with dilations")
    begin, end = _onnx_pads(ctx, x, kernel, strides, dil)
    include = bool(ctx.attr("count_include_pad", 0))
    ceil = bool(ctx.attr("ceil_mode", 0))
    pool = f"avg_pool{n}d"
    if begin == end and all(b <= k // 2 for b, k in zip(begin, kernel)):  # what torch's pools pad themselves
        return ctx.call(pool, input=x, kernel_size=kernel, stride=strides, padding=begin, ceil_mode=ceil,
                        count_include_pad=include)
    # asymmetric pads, or more than half a window: zeros padded explicitly. They count when count_include_pad;
    # else the window's sum goes over the number of real elements in it (a pool of the padded ones-mask)
    if ceil and not include:
        ctx.unsupported("asymmetric or wide pads with ceil_mode and count_include_pad=0")
    avg = ctx.call(pool, input=_pad_explicit(ctx, x, begin, end), kernel_size=kernel, stride=strides, padding=0,
                   ceil_mode=ceil, count_include_pad=True)
    if include:
        return avg
    ones = _pad_explicit(ctx, ctx.call("full_like", input=x, fill_value=1.0), begin, end)
    share = ctx.call(pool, input=ones, kernel_size=kernel, stride=strides, padding=0, count_include_pad=True)
    return ctx.call("div", input=avg, other=share)


@onnx_import("LpPool")
def _lp_pool_import(ctx):
    """(sum of |x|^p over each window)^(1/p): an average pool of |x|^p that counts the zeros padded, times the
    window's size (a padded zero adds nothing to the sum, as in ONNX)."""
    x, kernel, strides, dil = _onnx_window(ctx)
    n = len(kernel)
    if any(d != 1 for d in dil):
        ctx.unsupported("LpPool with dilations")
    p = int(ctx.attr("p", 2))
    begin, end = _onnx_pads(ctx, x, kernel, strides, dil)
    xp = ctx.call("pow", input=ctx.call("abs", input=x), other=p)
    if any(begin) or any(end):  # zeros padded explicitly: torch's pools take at most half a window of padding
        xp, begin = _pad_explicit(ctx, xp, begin, end), [0] * n
    avg = ctx.call(f"avg_pool{n}d", input=xp, kernel_size=kernel, stride=strides, padding=begin,
                   ceil_mode=bool(ctx.attr("ceil_mode", 0)), count_include_pad=True)
    return ctx.call("pow", input=ctx.call("mul", input=avg, other=math.prod(kernel)), other=1.0 / p)


# ---- adaptive pooling: adaptive_avg_pool1d/2d/3d, adaptive_max_pool1d/2d/3d ---------------------------------
def _make_adaptive(kind, n):
    fn = getattr(F, f"adaptive_{kind}_pool{n}d")
    mod = getattr(nn, f"Adaptive{kind.capitalize()}Pool{n}d")

    if kind == "max":
        def impl(input, output_size, return_indices=False):
            return fn(input, output_size, return_indices)
        mod_kw = (lambda m: dict(output_size=m.output_size, return_indices=m.return_indices))
    else:
        def impl(input, output_size):
            return fn(input, output_size)
        mod_kw = (lambda m: dict(output_size=m.output_size))

    name = f"adaptive_{kind}_pool{n}d"
    impl.__name__ = name
    impl.__doc__ = f"{n}-d adaptive {kind} pooling to ``output_size``."
    aten = [f"{name}.default", f"_{name}.default"] if kind == "avg" else [(f"{name}.default", _with_indices)]
    fns = [fn] + ([getattr(torch, name)] if hasattr(torch, name) and kind == "avg" else [])
    register(name, family="nn", functions=fns, aten=aten, modules={mod: _mod(mod_kw)},
             flops=per_input(1), fresh_output=kind == "avg")(impl)


def _adaptive_lowering(kind, n):
    def lower(ctx, node):
        x, undo = _pool_input(ctx, "input", n)
        out = node.args["output_size"]
        out = list(tuple_n(out, n)) if not (isinstance(out, (list, tuple)) and len(out) == 1 and n > 1) else \
            list(out) * n
        in_sp = ctx.spec("input").shape[-n:]
        if node.args.get("return_indices"):  # windows of a dividing size are a strided MaxPool, which has indices
            out = [i if o is None else o for i, o in zip(in_sp, out)]
            if not (static(in_sp) and all(i % o == 0 for i, o in zip(in_sp, out))):
                ctx.unsupported("adaptive max pooling with return_indices to a size that does not divide the "
                                "input (or of symbolic size)")
            k = [i // o for i, o in zip(in_sp, out)]
            return [undo(r) for r in _max_pool(ctx, x, in_sp, out, k, k, [0] * n, [1] * n, False, True)]
        return undo(_adaptive_pool(ctx, x, in_sp, out, kind))
    return lower


for _n in (1, 2, 3):
    for _kind in ("avg", "max"):
        _make_adaptive(_kind, _n)
        # global / strided pooling when the sizes divide, else unrolled; unbatched input gets a batch axis
        onnx_lowering(f"adaptive_{_kind}_pool{_n}d")(_adaptive_lowering(_kind, _n))


@onnx_import("GlobalAveragePool")
def _global_avg_pool_import(ctx):
    x = ctx.input(0)
    n = ctx.rank(x) - 2
    if 1 <= n <= 3:
        return ctx.call(f"adaptive_avg_pool{n}d", input=x, output_size=[1] * n)
    return ctx.call("mean", input=x, dim=list(range(2, n + 2)), keepdim=True)


@onnx_import("GlobalMaxPool")
def _global_max_pool_import(ctx):
    x = ctx.input(0)
    return ctx.call("amax", input=x, dim=list(range(2, ctx.rank(x))), keepdim=True)


# ---- Lp pooling ---------------------------------------------------------------------------------------------
@register("lp_pool2d", family="nn", functions=[F.lp_pool2d],
          modules={nn.LPPool2d: _mod(lambda m: dict(norm_type=m.norm_type, kernel_size=m.kernel_size,
                                                    stride=m.stride, ceil_mode=m.ceil_mode))},
          flops=per_input(2))
def lp_pool2d(input, norm_type, kernel_size, stride=None, ceil_mode=False):
    return F.lp_pool2d(input, norm_type, kernel_size, stride, ceil_mode)


@onnx_lowering("lp_pool2d")
def _lp_pool2d_onnx(ctx, node):
    a = node.args
    x, undo = _pool_input(ctx, "input", 2)
    k, s = _pool_args(a, 2)
    p, dt = float(a["norm_type"]), ctx.dtype("input")
    in_sp, out_sp = ctx.spec("input").shape[-2:], ctx.out_spec().shape[-2:]
    if math.isinf(p):  # +-max_pool of |x|
        ax = ctx.op("Abs", [x])
        if p < 0:
            ax = ctx.op("Neg", [ax])
        y = ctx.op("MaxPool", [ax], kernel_shape=k, strides=s, ceil_mode=int(bool(a["ceil_mode"])))
        return undo(ctx.op("Neg", [y]) if p < 0 else y)
    # (sign(avg) * relu(|avg|)) * kw * kh) ** (1/p), avg = avg_pool2d(x ** p), as F.lp_pool2d
    avg = _avg_pool(ctx, ctx.op("Pow", [x, ctx.const(p, dt)]), in_sp, out_sp, k, s, [0, 0], a["ceil_mode"], True,
                    None, dt)
    avg = ctx.op("Mul", [ctx.op("Sign", [avg]), ctx.op("Relu", [ctx.op("Abs", [avg])])])
    y = ctx.op("Pow", [ctx.op("Mul", [avg, ctx.const(float(math.prod(k)), dt)]), ctx.const(1.0 / p, dt)])
    return undo(y)


# ---- batch norm ---------------------------------------------------------------------------------------------
def _bn_module(m, args, kwargs):
    training = m.training or (m.running_mean is None and m.running_var is None)
    if m.training and m.track_running_stats and m.momentum is None:
        # a cumulative average reads and bumps num_batches_tracked: keep the layer whole (an opaque call)
        raise NotImplementedError("training-mode batchnorm with momentum=None")
    momentum = m.momentum if m.momentum is not None else 0.0
    return args, {"running_mean": Attr("running_mean") if m.running_mean is not None and (
        not m.training or m.track_running_stats) else None,
                  "running_var": Attr("running_var") if m.running_var is not None and (
        not m.training or m.track_running_stats) else None,
                  "weight": Attr("weight") if m.affine else None, "bias": Attr("bias") if m.affine else None,
                  "training": training, "momentum": momentum, "eps": m.eps}


def _aten_batch_norm(args, kwargs):
    names = ["input", "weight", "bias", "running_mean", "running_var", "training", "momentum", "eps"]
    b = dict(zip(names, args), **kwargs)
    b.pop("cudnn_enabled", None)
    return (), b


def _aten_bn_no_training(args, kwargs):
    names = ["input", "weight", "bias", "running_mean", "running_var", "momentum", "eps"]
    b = dict(zip(names, args), **kwargs)
    return (), {**b, "training": False}, main_only("_native_batch_norm_legit_no_training", "save_mean",
                                                     "save_rstd")


def _aten_bn_legit(args, kwargs):
    """aten._native_batch_norm_legit(input, weight, bias, running_mean, running_var, training, momentum, eps)
    -> (out, save_mean, save_rstd); the saved statistics are for the backward and not computed."""
    names = ["input", "weight", "bias", "running_mean", "running_var", "training", "momentum", "eps"]
    return (), dict(zip(names, args), **kwargs), main_only("_native_batch_norm_legit", "save_mean", "save_rstd")


def _aten_bn_legit_no_stats(args, kwargs):
    """aten._native_batch_norm_legit.no_stats(input, weight, bias, training, momentum, eps): without running
    statistics the batch's own normalize the input."""
    b = dict(zip(["input", "weight", "bias", "training", "momentum", "eps"], args), **kwargs)
    return (), {**b, "running_mean": None, "running_var": None}, main_only(
        "_native_batch_norm_legit.no_stats", "save_mean", "save_rstd")


def _aten_bn_legit_functional(args, kwargs):
    """aten._native_batch_norm_legit_functional(input, weight, bias, running_mean, running_var, training, momentum,
    eps) -> (out, save_mean, save_rstd, new_running_mean, new_running_var): what torch.export records for
    ``_native_batch_norm_legit``. Out of training the new running statistics are the old ones; in training the op
    updates them in place, as nn.BatchNorm does, and the separate outputs are not computed."""
    names = ["input", "weight", "bias", "running_mean", "running_var", "training", "momentum", "eps"]
    b = dict(zip(names, args), **kwargs)
    spelling = "_native_batch_norm_legit_functional"
    stats = (b["running_mean"], b["running_var"]) if not b["training"] else (
        NotComputed(spelling, "new_running_mean"), NotComputed(spelling, "new_running_var"))
    return (), b, lambda out: (*main_only(spelling, "save_mean", "save_rstd")(out), *stats)


_bn_flops = _normalize_flops("training")


@register("batch_norm", family="nn", functions=[F.batch_norm],
          aten=[("batch_norm.default", _aten_batch_norm),
                ("_native_batch_norm_legit_no_training.default", _aten_bn_no_training),
                ("_native_batch_norm_legit.default", _aten_bn_legit),
                ("_native_batch_norm_legit.no_stats", _aten_bn_legit_no_stats),
                ("_native_batch_norm_legit_functional.default", _aten_bn_legit_functional)],
          modules={c: _bn_module for c in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)},
          flops=_bn_flops, n_tensor_params=5, effect=lambda node: bool(node.args.get("training")),
          fresh_output=True)
def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
               eps=1e-5):
    """Batch normalization; in training mode the running stats are updated in place, as nn.BatchNorm."""
    return F.batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)


def _batch_norm_batch_stats(ctx, node):
    """batch_norm in training mode (or without running stats): normalized by the batch's mean and biased
    variance over every axis but the channels, as torch computes its output; the running-stat update, a side
    effect on buffers, has no ONNX form and is left out."""
    a = node.args
    x, dt, r = ctx.input("input"), ctx.dtype("input"), ctx.rank("input")
    axes = [0] + list(range(2, r))
    xc = ctx.op("Sub", [x, reduce(ctx, "ReduceMean", x, axes, 1)])
    var = reduce(ctx, "ReduceMean", ctx.op("Mul", [xc, xc]), axes, 1)
    y = ctx.op("Div", [xc, ctx.op("Sqrt", [ctx.op("Add", [var, ctx.const(float(a["eps"]), dt)])])])
    per_channel = i64(ctx, [-1] + [1] * (r - 2))
    if a["weight"] is not None:
        y = ctx.op("Mul", [y, ctx.op("Reshape", [ctx.input("weight"), per_channel])])
    if a["bias"] is not None:
        y = ctx.op("Add", [y, ctx.op("Reshape", [ctx.input("bias"), per_channel])])
    return y


@onnx_lowering("batch_norm")
def _batch_norm_onnx(ctx, node):
    a = node.args
    if a["training"] or a["running_mean"] is None:  # normalized by the batch statistics (stats update dropped)
        return _batch_norm_batch_stats(ctx, node)
    c = ctx.spec("input").shape[1]
    dt = ctx.dtype("input")
    scale = ctx.input("weight") if a["weight"] is not None else ctx.const([1.0] * c, dt)
    bias = ctx.input("bias") if a["bias"] is not None else ctx.const([0.0] * c, dt)
    momentum = {} if a["momentum"] is None else {"momentum": 1.0 - float(a["momentum"])}  # ONNX's convention
    return ctx.op("BatchNormalization", [ctx.input("input"), scale, bias, ctx.input("running_mean"),
                                         ctx.input("running_var")], epsilon=float(a["eps"]), **momentum)


@onnx_import("BatchNormalization")
def _batch_norm_import(ctx):
    if ctx.attr("training_mode", 0) or (len(ctx.node.output) > 1 and any(ctx.node.output[1:])):
        return _batch_norm_training_import(ctx)
    ctx.mark_buffers(3, 4)
    return ctx.call("batch_norm", input=ctx.input(0), running_mean=ctx.input(3), running_var=ctx.input(4),
                    weight=ctx.input(1), bias=ctx.input(2), training=False,
                    # ONNX keeps ``momentum`` of the old statistics, torch of the new batch: torch's = 1 - ONNX's
                    momentum=1.0 - float(ctx.attr("momentum", 0.9)), eps=float(ctx.attr("epsilon", 1e-5)))


def _batch_norm_training_import(ctx):
    """BatchNormalization with training_mode=1, as ONNX defines it: normalized by the batch's mean and (biased)
    variance over every axis but 1, and the running statistics ``momentum * old + (1 - momentum) * batch`` as
    outputs 1 and 2 (the file's graph carries them; the module keeps no state)."""
    x = ctx.input(0)
    r = ctx.rank(x)
    axes = [0] + list(range(2, r))
    per_channel = [-1] + [1] * (r - 2)
    mean = ctx.call("mean", input=x, dim=axes)
    dev = ctx.call("sub", input=x, other=ctx.call("reshape", input=mean, shape=per_channel))
    var = ctx.call("mean", input=ctx.call("mul", input=dev, other=dev), dim=axes)
    eps, momentum = float(ctx.attr("epsilon", 1e-5)), float(ctx.attr("momentum", 0.9))
    scale = ctx.call("reshape", input=ctx.input(1), shape=per_channel)
    inv = ctx.call("rsqrt", input=ctx.call("add", input=ctx.call("reshape", input=var, shape=per_channel), other=eps))
    y = ctx.call("add", input=ctx.call("mul", input=ctx.call("mul", input=dev, other=inv), other=scale),
                 other=ctx.call("reshape", input=ctx.input(2), shape=per_channel))
    running = [ctx.call("add", input=ctx.call("mul", input=ctx.input(i), other=momentum),
                        other=ctx.call("mul", input=stat, other=1.0 - momentum)) for i, stat in ((3, mean), (4, var))]
    return [y, *running]


# ---- layer norm ---------------------------------------------------------------------------------------------
def _aten_layer_norm(args, kwargs):
    """aten.layer_norm(input, normalized_shape, weight, bias, eps, cudnn_enable): drop ``cudnn_enable``."""
    return tuple(args[:5]), {k: v for k, v in kwargs.items() if k != "cudnn_enable"}


def _aten_native_layer_norm(args, kwargs):
    """aten.native_layer_norm(input, normalized_shape, weight, bias, eps) -> (out, mean, rstd): mean and rstd,
    saved for the backward, are not computed."""
    return tuple(args[:5]), kwargs, main_only("native_layer_norm", "mean", "rstd")


@register("layer_norm", family="nn", functions=[F.layer_norm],
          aten=[("layer_norm.default", _aten_layer_norm), ("native_layer_norm.default", _aten_native_layer_norm)],
          modules={nn.LayerNorm: _mod(lambda m: dict(
              normalized_shape=tuple(m.normalized_shape),
              weight=Attr("weight") if m.weight is not None else None,
              bias=Attr("bias") if getattr(m, "bias", None) is not None else None, eps=m.eps))},
          flops=_normalize_flops(None), n_tensor_params=1, fresh_output=True)
def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    return F.layer_norm(input, normalized_shape, weight, bias, eps)


@onnx_lowering("layer_norm")
def _layer_norm_onnx(ctx, node):
    a = node.args
    ns = list(tuple_n(a["normalized_shape"], 1))
    dt = ctx.dtype("input")
    if not static(ns):
        ctx.unsupported("layer_norm over a symbolic normalized_shape")
    scale = _ones_or(ctx, "weight", ns, 1.0, dt)
    return ctx.op("LayerNormalization", [ctx.input("input"), scale, ctx.input("bias")], axis=-len(ns),
                  epsilon=float(a["eps"]))


@onnx_import("LayerNormalization")
def _layer_norm_import(ctx):
    """layer_norm over the dims from ``axis`` on; the optional Mean and InvStdDev outputs (the statistics, in
    ``stash_type``, float32 by default, with the normalized dims kept as size 1) computed beside it."""
    x = ctx.input(0)
    shape = ctx.shape(x)
    axis = int(ctx.attr("axis", -1)) % len(shape)
    norm = list(shape[axis:])
    if not all(isinstance(d, int) for d in norm):
        ctx.unsupported(f"normalizing over symbolic dims {norm}")
    eps = float(ctx.attr("epsilon", 1e-5))
    y = ctx.call("layer_norm", input=x, normalized_shape=norm, weight=ctx.input(1), bias=ctx.input(2), eps=eps)
    if len(ctx.node.output) == 1 or not any(ctx.node.output[1:]):
        return y
    from .onnx_helpers import torch_dtype

    stash = torch_dtype(int(ctx.attr("stash_type", 1)))
    xs = ctx.call("to", input=x, dtype=stash) if ctx.dtype(x) != stash else x
    dims = list(range(axis, len(shape)))
    mean = ctx.call("mean", input=xs, dim=dims, keepdim=True)
    centered = ctx.call("sub", input=xs, other=mean)
    var = ctx.call("mean", input=ctx.call("mul", input=centered, other=centered), dim=dims, keepdim=True)
    inv_std = ctx.call("rsqrt", input=ctx.call("add", input=var, other=eps))
    return [y, mean, inv_std][:len(ctx.node.output)]


# ---- group norm ---------------------------------------------------------------------------------------------
def _aten_group_norm(args, kwargs):
    """aten.group_norm(input, num_groups, weight, bias, eps, cudnn_enabled): drop ``cudnn_enabled``."""
    return tuple(args[:5]), {k: v for k, v in kwargs.items() if k != "cudnn_enabled"}


def _aten_native_group_norm(args, kwargs):
    """aten.native_group_norm(input, weight, bias, N, C, HxW, group, eps) -> (out, mean, rstd): N, C and HxW are
    the input's sizes; mean and rstd, saved for the backward, are not computed."""
    b = dict(zip(["input", "weight", "bias", "N", "C", "HxW", "group", "eps"], args), **kwargs)
    return (), {"input": b["input"], "num_groups": b["group"], "weight": b["weight"], "bias": b["bias"],
                "eps": b["eps"]}, main_only("native_group_norm", "mean", "rstd")


@register("group_norm", family="nn", functions=[F.group_norm],
          aten=[("group_norm.default", _aten_group_norm), ("native_group_norm.default", _aten_native_group_norm)],
          modules={nn.GroupNorm: _mod(lambda m: dict(
              num_groups=m.num_groups, weight=Attr("weight") if m.affine else None,
              bias=Attr("bias") if m.affine else None, eps=m.eps))},
          flops=_normalize_flops(None), fresh_output=True)
def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    return F.group_norm(input, num_groups, weight, bias, eps)


@onnx_lowering("group_norm")
def _group_norm_onnx(ctx, node):
    a = node.args
    x, g, dt = ctx.input("input"), int(a["num_groups"]), ctx.dtype("input")
    shape = ctx.spec("input").shape
    # (N, G, -1) normalized per group by InstanceNormalization, back to the input shape, then the affine part.
    # Not GroupNormalization (opset 21): onnxruntime 1.32 runs it about 2x slower than this form.
    per_group = math.prod(shape[1:]) // g if static(shape[1:]) else -1  # -1 is undefined for an empty batch
    y = ctx.op("Reshape", [x, i64(ctx, [0, g, per_group])])
    y = ctx.op("InstanceNormalization", [y, ctx.const([1.0] * g, dt), ctx.const([0.0] * g, dt)],
               epsilon=float(a["eps"]))
    y = ctx.op("Reshape", [y, ctx.op("Shape", [x])])
    tail = [1] * (len(shape) - 2)
    if a["weight"] is not None:
        y = ctx.op("Mul", [y, ctx.op("Reshape", [ctx.input("weight"), i64(ctx, [-1, *tail])])])
    if a["bias"] is not None:
        y = ctx.op("Add", [y, ctx.op("Reshape", [ctx.input("bias"), i64(ctx, [-1, *tail])])])
    return y


def _group_norm_attrs(ctx):
    """A GroupNormalization node's (input, num_groups, scale, bias, epsilon)."""
    return ctx.input(0), int(ctx.attr("num_groups")), ctx.input(1), ctx.input(2), float(ctx.attr("epsilon", 1e-5))


@onnx_import("GroupNormalization", since=18)
def _group_norm_import_18(ctx):
    """GroupNormalization-18 (to 20): one scale and bias per group, spread over the group's channels."""
    x, g, scale, bias, eps = _group_norm_attrs(ctx)
    c = ctx.shape(x)[1]
    if ctx.shape(scale)[0] == c:  # as many values as channels: per-channel scale and bias already
        return ctx.call("group_norm", input=x, num_groups=g, weight=scale, bias=bias, eps=eps)
    y = ctx.call("group_norm", input=x, num_groups=g, eps=eps)

    def per_channel(t):  # (G,) -> (C, 1, ...): each group's value repeated over its channels
        t = ctx.call("expand", input=ctx.call("reshape", input=t, shape=[g, 1]), size=[g, c // g])
        return ctx.call("reshape", input=t, shape=[c] + [1] * (ctx.rank(x) - 2))

    s, b = per_channel(scale), per_channel(bias)
    return ctx.call("add", input=ctx.call("mul", input=y, other=s), other=b)


@onnx_import("GroupNormalization", since=21)
def _group_norm_import_21(ctx):
    """GroupNormalization-21: scale and bias per channel, as torch's group_norm."""
    x, g, scale, bias, eps = _group_norm_attrs(ctx)
    return ctx.call("group_norm", input=x, num_groups=g, weight=scale, bias=bias, eps=eps)


# ---- instance norm ------------------------------------------------------------------------------------------
def _in_module(m, args, kwargs):
    use_stats = m.training or not m.track_running_stats
    return args, {"running_mean": Attr("running_mean") if m.running_mean is not None else None,
                  "running_var": Attr("running_var") if m.running_var is not None else None,
                  "weight": Attr("weight") if m.affine else None, "bias": Attr("bias") if m.affine else None,
                  "use_input_stats": use_stats, "momentum": m.momentum if m.momentum is not None else 0.1,
                  "eps": m.eps}


def _aten_instance_norm(args, kwargs):
    """aten.instance_norm(input, weight, bias, running_mean, running_var, use_input_stats, momentum, eps,
    cudnn_enabled): weight and bias come first there, and ``cudnn_enabled`` is dropped."""
    names = ["input", "weight", "bias", "running_mean", "running_var", "use_input_stats", "momentum", "eps"]
    b = dict(zip(names, args), **kwargs)
    b.pop("cudnn_enabled", None)
    return (), b


@register("instance_norm", family="nn", functions=[F.instance_norm],
          aten=[("instance_norm.default", _aten_instance_norm)],
          modules={c: _in_module for c in (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)},
          flops=_normalize_flops("use_input_stats"),
          effect=lambda node: bool(node.args.get("use_input_stats") and node.args.get("running_mean") is not None),
          fresh_output=True)
def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True,
                  momentum=0.1, eps=1e-5):
    return F.instance_norm(input, running_mean, running_var, weight, bias, use_input_stats, momentum, eps)


@onnx_lowering("instance_norm")
def _instance_norm_onnx(ctx, node):
    a = node.args
    x, dt = ctx.input("input"), ctx.dtype("input")
    c = ctx.spec("input").shape[1]
    if not isinstance(c, int):
        ctx.unsupported("instance_norm with a symbolic channel count")
    scale, bias = _ones_or(ctx, "weight", [c], 1.0, dt), _ones_or(ctx, "bias", [c], 0.0, dt)
    if a["use_input_stats"]:
        return ctx.op("InstanceNormalization", [x, scale, bias], epsilon=float(a["eps"]))
    if a["running_mean"] is None or a["running_var"] is None:
        ctx.unsupported("instance_norm without input statistics and without running statistics")
    return ctx.op("BatchNormalization", [x, scale, bias, ctx.input("running_mean"), ctx.input("running_var")],
                  epsilon=float(a["eps"]))


@onnx_import("InstanceNormalization")
def _instance_norm_import(ctx):
    return ctx.call("instance_norm", input=ctx.input(0), weight=ctx.input(1), bias=ctx.input(2), use_input_stats=True,
                    eps=float(ctx.attr("epsilon", 1e-5)))


# ---- RMS norm -----------------------------------------------------------------------------------------------
def _rms_norm_flops(node):
    """Per output element: mean of squares 2, scale by rsqrt 1, weight 1."""
    return (3 + (node.args.get("weight") is not None)) * out_numel(node)


if hasattr(F, "rms_norm"):
    @register("rms_norm", family="nn", functions=[F.rms_norm], aten=["rms_norm.default"],
              modules={nn.RMSNorm: _mod(lambda m: dict(normalized_shape=tuple(m.normalized_shape),
                                                       weight=Attr("weight") if m.weight is not None else None,
                                                       eps=m.eps))},
              flops=_rms_norm_flops)
    def rms_norm(input, normalized_shape, weight=None, eps=None):
        return F.rms_norm(input, normalized_shape, weight, eps)

    @onnx_lowering("rms_norm")
    def _rms_norm_onnx(ctx, node):
        a = node.args
        ns = list(tuple_n(a["normalized_shape"], 1))
        x, dt = ctx.input("input"), ctx.dtype("input")
        eps = float(a["eps"]) if a["eps"] is not None else float(torch.finfo(dt).eps)
        if ctx.opset >= 23 and static(ns):
            return ctx.op("RMSNormalization", [x, _ones_or(ctx, "weight", ns, 1.0, dt)], axis=-len(ns), epsilon=eps)
        axes = list(range(-len(ns), 0))
        ms = reduce(ctx, "ReduceMean", ctx.op("Mul", [x, x]), axes, 1)
        y = ctx.op("Div", [x, ctx.op("Sqrt", [ctx.op("Add", [ms, ctx.const(eps, dt)])])])
        return ctx.op("Mul", [y, ctx.input("weight")]) if a["weight"] is not None else y

    @onnx_import("RMSNormalization", since=23)
    def _rms_norm_import(ctx):
        """RMSNormalization-23: normalizes over dims ``axis`` on; its scale broadcasts there (torch's weight has
        exactly the normalized shape, else it is a multiply after)."""
        x, scale = ctx.input(0), ctx.input(1)
        shape = ctx.shape(x)
        norm = list(shape[int(ctx.attr("axis", -1)) % len(shape):])
        if not all(isinstance(d, int) for d in norm):
            ctx.unsupported(f"normalizing over symbolic dims {norm}")
        eps = float(ctx.attr("epsilon", 1e-5))
        if list(ctx.shape(scale)) == norm:
            return ctx.call("rms_norm", input=x, normalized_shape=norm, weight=scale, eps=eps)
        return ctx.call("mul", input=ctx.call("rms_norm", input=x, normalized_shape=norm, eps=eps), other=scale)


# ---- local response norm ------------------------------------------------------------------------------------
@register("local_response_norm", family="nn", functions=[F.local_response_norm],
          modules={nn.LocalResponseNorm: _mod(lambda m: dict(size=m.size, alpha=m.alpha, beta=m.beta, k=m.k))},
          flops=per_output(6))
def local_response_norm(input, size, alpha=1e-4, beta=0.75, k=1.0):
    return F.local_response_norm(input, size, alpha, beta, k)


@onnx_lowering("local_response_norm")
def _local_response_norm_onnx(ctx, node):
    a = node.args
    size, alpha, beta, k = int(a["size"]), float(a["alpha"]), float(a["beta"]), float(a["k"])
    x, dt, r = ctx.input("input"), ctx.dtype("input"), ctx.rank("input")
    if size % 2 == 1 and r == 4:  # ONNX LRN's window is torch's when it is centered
        return ctx.op("LRN", [x], size=size, alpha=alpha, beta=beta, bias=k)
    # torch: avg of x^2 over channels [c - size//2, c + (size-1)//2] (zero padded), on (N, 1, C, rest)
    sq = ctx.op("Mul", [x, x])
    rest = ctx.spec("input").shape[2:]  # -1 is undefined for an empty batch
    rest = math.prod(rest) if static(rest) else -1
    shape4 = ctx.op("Concat", [run_dim(ctx, x, 0), i64(ctx, [1]), run_dim(ctx, x, 1), i64(ctx, [rest])], axis=0)
    avg = ctx.op("AveragePool", [ctx.op("Reshape", [sq, shape4])], kernel_shape=[size, 1], strides=[1, 1],
                 pads=[size // 2, 0, (size - 1) // 2, 0], count_include_pad=1)
    avg = ctx.op("Reshape", [avg, ctx.op("Shape", [x])])
    div = ctx.op("Pow", [ctx.op("Add", [ctx.op("Mul", [avg, ctx.const(alpha, dt)]), ctx.const(k, dt)]),
                         ctx.const(beta, dt)])
    return ctx.op("Div", [x, div])


@onnx_import("LRN")
def _lrn_import(ctx):
    return ctx.call("local_response_norm", input=ctx.input(0), size=int(ctx.attr("size")),
                    alpha=float(ctx.attr("alpha", 1e-4)), beta=float(ctx.attr("beta", 0.75)),
                    k=float(ctx.attr("bias", 1.0)))


# ---- normalize ----------------------------------------------------------------------------------------------
@register("normalize", family="nn", functions=[(F.normalize, no_out)], flops=per_output(3))
def normalize(input, p=2.0, dim=1, eps=1e-12):
    """input / max(||input||_p along dim, eps)."""
    return F.normalize(input, p, dim, eps)


@onnx_lowering("normalize")
def _normalize_onnx(ctx, node):
    a = node.args
    x, dt = ctx.input("input"), ctx.dtype("input")
    if ctx.rank("input") == 0:  # ONNX reduces need rank >= 1: the norm of the 1-element vector
        nrm = ctx.op("Reshape", [_norm_p(ctx, ctx.op("Reshape", [x, i64(ctx, [1])]), float(a["p"]), [0], 1, dt),
                                 i64(ctx, [])])
    else:
        nrm = _norm_p(ctx, x, float(a["p"]), [int(a["dim"])], 1, dt)
    return ctx.op("Div", [x, ctx.op("Max", [nrm, ctx.const(float(a["eps"]), dt)])])


# ---- softmax, log_softmax -----------------------------------------------------------------------------------
def _aten_softmax(args, kwargs):
    x, dim, *_ = args  # _softmax(self, dim, half_to_float)
    return (x, dim), {}


def _drop_stacklevel(args, kwargs):
    """F.softmax/F.log_softmax record ``_stacklevel`` when traced through ``__torch_function__`` (torch.fx)."""
    return args, {k: v for k, v in kwargs.items() if k != "_stacklevel"}


@register("softmax", family="nn", functions=[(F.softmax, _drop_stacklevel), torch.softmax, torch.special.softmax],
          methods=["softmax"], aten=["softmax.int", ("_softmax.default", _aten_softmax), "_safe_softmax.default"],
          modules={nn.Softmax: _mod(lambda m: dict(dim=m.dim)), nn.Softmax2d: _mod(lambda m: dict(dim=-3))},
          flops=per_output(5))
def softmax(input, dim=None, dtype=None):
    return F.softmax(input, dim, dtype=dtype)


@onnx_lowering("softmax")
def _softmax_onnx(ctx, node):
    x = ctx.input("input")
    if node.args["dtype"] is not None:
        x = ctx.cast(x, node.args["dtype"])
    dim = node.args["dim"]
    if dim is None:
        ctx.unsupported("softmax with implicit dim")
    if ctx.rank("input") == 0:  # ONNX Softmax needs rank >= 1: the 1-element vector's
        return ctx.op("Reshape", [ctx.op("Softmax", [ctx.op("Reshape", [x, i64(ctx, [1])])], axis=0), i64(ctx, [])])
    return ctx.op("Softmax", [x], axis=int(dim))


@register("log_softmax", family="nn", functions=[(F.log_softmax, _drop_stacklevel), torch.log_softmax],
          methods=["log_softmax"],
          aten=["log_softmax.int", ("_log_softmax.default", _aten_softmax)],
          modules={nn.LogSoftmax: _mod(lambda m: dict(dim=m.dim))}, flops=per_output(5))
def log_softmax(input, dim=None, dtype=None):
    return F.log_softmax(input, dim, dtype=dtype)


@onnx_lowering("log_softmax")
def _log_softmax_onnx(ctx, node):
    x, r = ctx.input("input"), ctx.rank("input")
    if node.args["dtype"] is not None:
        x = ctx.cast(x, node.args["dtype"])
    dim = node.args["dim"]
    if dim is None:  # torch's legacy implicit dim (_get_softmax_dim)
        dim = 0 if r in (0, 1, 3) else 1
    if r == 0:
        return ctx.op("Reshape", [ctx.op("LogSoftmax", [ctx.op("Reshape", [x, i64(ctx, [1])])], axis=0),
                                  i64(ctx, [])])
    return ctx.op("LogSoftmax", [x], axis=int(dim))


@onnx_import("LpNormalization")
def _lp_normalization_import(ctx):
    """x over its p-norm (p 1 or 2) along ``axis``; a zero norm gives 0, as onnx's reference computes it."""
    x, p = ctx.input(0), int(ctx.attr("p", 2))
    if p not in (1, 2):
        ctx.unsupported(f"p={p} (ONNX defines 1 and 2)")
    axis = int(ctx.attr("axis", -1)) % ctx.rank(x)
    norm = ctx.call("vector_norm", input=x, ord=p, dim=[axis], keepdim=True)
    zero = ctx.call("eq", input=norm, other=0)
    safe = ctx.call("masked_fill", input=norm, mask=zero, value=1.0)
    return ctx.call("masked_fill", input=ctx.call("div", input=x, other=safe), mask=zero, value=0.0)


@onnx_import("Hardmax", since=13)
def _hardmax_import(ctx):
    """1 at the first maximum along ``axis``, 0 elsewhere: one_hot of the argmax, moved back to that axis."""
    x = ctx.input(0)
    r = ctx.rank(x)
    axis = int(ctx.attr("axis", -1)) % r
    n = ctx.size(x, axis)
    hot = ctx.call("one_hot", input=ctx.call("argmax", input=x, dim=axis), num_classes=n)
    if axis != r - 1:
        hot = ctx.call("movedim", input=hot, source=r - 1, destination=axis)
    return ctx.call("to", input=hot, dtype=ctx.dtype(x))


@onnx_import("Softmax", "LogSoftmax")
def _softmax_import(ctx):
    op = "softmax" if ctx.op_type == "Softmax" else "log_softmax"
    return ctx.call(op, input=ctx.input(0), dim=int(ctx.attr("axis", -1)))  # one axis from opset 13 on


# ---- losses (import): NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss ----------------------------------------
def _nll(ctx, logp, target, weight, reduction: str, ignore_index):
    """ONNX's NegativeLogLikelihoodLoss of ``logp`` (N, C, d...) at ``target`` (N, d...), as torch's ``nll_loss``
    computes it, in canonical ops: loss = -logp[n, t, d...] * weight[t]; a target equal to ``ignore_index`` costs
    0 and weighs 0; "mean" divides by the summed weights of the targets counted (their count without weights)."""
    if reduction not in ("none", "sum", "mean"):
        ctx.unsupported(f"reduction {reduction!r}")
    ignored = None if ignore_index is None else ctx.call("eq", input=target, other=int(ignore_index))
    safe = target if ignored is None else ctx.call("masked_fill", input=target, mask=ignored, value=0)
    picked = ctx.call("gather", input=logp, dim=1, index=ctx.call("unsqueeze", input=safe, dim=1))
    loss = ctx.call("neg", input=ctx.call("squeeze", input=picked, dim=1))
    w = None
    if weight is not None:  # weight[t] for every target: an embedding lookup of the (C, 1) weights
        w = ctx.call("squeeze", input=ctx.call("embedding", input=safe, weight=ctx.call("unsqueeze", input=weight,
                                                                                         dim=1)), dim=-1)
        loss = ctx.call("mul", input=loss, other=w)
    if ignored is not None:
        loss = ctx.call("masked_fill", input=loss, mask=ignored, value=0.0)
    if reduction == "none":
        return loss
    total = ctx.call("sum", input=loss)
    if reduction == "sum":
        return total
    if w is None and ignored is None:
        return ctx.call("mean", input=loss)
    if w is None:  # the targets counted
        w = ctx.call("to", input=ctx.call("logical_not", input=ignored), dtype=ctx.dtype(logp))
    elif ignored is not None:
        w = ctx.call("masked_fill", input=w, mask=ignored, value=0.0)
    return ctx.call("div", input=total, other=ctx.call("sum", input=w))


@onnx_import("NegativeLogLikelihoodLoss", since=12)
def _nll_import(ctx):
    return _nll(ctx, ctx.input(0), ctx.input(1), ctx.input(2) if ctx.has(2) else None,
                ctx.attr("reduction", "mean"), ctx.attr("ignore_index"))


@onnx_import("SoftmaxCrossEntropyLoss", since=12)
def _softmax_cross_entropy_import(ctx):
    """The loss of log_softmax over the class dim, and that log_softmax as the optional second output."""
    logp = ctx.call("log_softmax", input=ctx.input(0), dim=1)
    loss = _nll(ctx, logp, ctx.input(1), ctx.input(2) if ctx.has(2) else None, ctx.attr("reduction", "mean"),
                ctx.attr("ignore_index"))
    return [loss, logp] if len(ctx.node.output) > 1 and ctx.node.output[1] else loss


# ---- embedding ----------------------------------------------------------------------------------------------
def _aten_embedding(args, kwargs):
    weight, indices, *rest = args
    return (indices, weight), ({"padding_idx": rest[0] if rest[0] != -1 else None} if rest else {})


def _embedding_fn(args, kwargs):
    """F.embedding(input, weight, padding_idx, max_norm, norm_type, scale_grad_by_freq, sparse): the last two only
    matter to gradients; ``max_norm`` rescales rows of the weight in place, which bridge does not model (refused)."""
    max_norm = args[3] if len(args) > 3 else kwargs.get("max_norm")
    if max_norm is not None:
        raise NotImplementedError("embedding with max_norm renormalizes the weight in place")
    kwargs = {k: v for k, v in kwargs.items() if k in ("padding_idx",)}
    return args[:3], kwargs


def _embedding_module(m):
    if m.max_norm is not None:
        raise NotImplementedError("nn.Embedding with max_norm renormalizes its weight in place")
    return dict(weight=Attr("weight"), padding_idx=m.padding_idx)


@register("embedding", family="nn", functions=[(F.embedding, _embedding_fn)],
          aten=[("embedding.default", _aten_embedding)],
          modules={nn.Embedding: _mod(_embedding_module)},
          flops=zero, n_tensor_params=2, fresh_output=True, contiguous_output=True)
def embedding(input, weight, padding_idx=None):
    """Rows of ``weight`` at ``input`` indices."""
    return F.embedding(input, weight, padding_idx)


@onnx_lowering("embedding")
def _embedding_onnx(ctx, node):
    return ctx.op("Gather", [ctx.input("weight"), ctx.input("input")], axis=0)


# ---- embedding_bag ------------------------------------------------------------------------------------------
def _embedding_bag_module(m):
    if m.max_norm is not None or m.include_last_offset:
        raise NotImplementedError("nn.EmbeddingBag with max_norm or include_last_offset")
    return dict(weight=Attr("weight"), mode=m.mode, padding_idx=m.padding_idx)


_BAG_MODES = ("sum", "mean", "max")  # aten's mode numbers


def _aten_embedding_bag(spelling):
    """aten._embedding_bag and aten.embedding_bag(weight, indices, offsets, scale_grad_by_freq, mode, sparse,
    per_sample_weights, include_last_offset, padding_idx) -> (out, offset2bag, bag_size, max_indices): the last
    three, saved for the backward, are not computed; padding_idx -1 (or None, or absent) means none."""
    def adapt(args, kwargs):
        b = dict(zip(["weight", "indices", "offsets", "scale_grad_by_freq", "mode", "sparse", "per_sample_weights",
                      "include_last_offset", "padding_idx"], args), **kwargs)
        if b.get("include_last_offset"):
            raise NotImplementedError(f"aten.{spelling} with include_last_offset")
        pad = b.get("padding_idx", -1)
        return (), {"input": b["indices"], "offsets": b["offsets"], "weight": b["weight"],
                    "mode": _BAG_MODES[int(b.get("mode", 0))], "per_sample_weights": b.get("per_sample_weights"),
                    "padding_idx": None if pad is None or pad < 0 else pad}, main_only(
            spelling, "offset2bag", "bag_size", "max_indices")
    return adapt


@register("embedding_bag", family="nn",
          aten=[(a, _aten_embedding_bag(a)) for a in ("_embedding_bag.default", "embedding_bag.default",
                                                       "embedding_bag.padding_idx")],
          modules={nn.EmbeddingBag: _mod(_embedding_bag_module)},
          flops=per_output(1), n_tensor_params=3)
def embedding_bag(input, offsets=None, weight=None, mode="mean", per_sample_weights=None, padding_idx=None):
    return F.embedding_bag(input, weight, offsets, mode=mode, per_sample_weights=per_sample_weights,
                           padding_idx=padding_idx)


@onnx_lowering("embedding_bag")
def _embedding_bag_onnx(ctx, node):
    """Bags as a membership matrix M[bag, position] (rows of a 2-D input; offsets of a 1-D one), then sum/mean
    as a MatMul and max as a masked ReduceMax; padding_idx entries leave their bag; empty bags give zeros."""
    a = node.args
    mode, pad = a["mode"], a["padding_idx"]
    if a["weight"] is None:
        ctx.unsupported("embedding_bag without a weight")
    if a["per_sample_weights"] is not None and mode != "sum":
        ctx.unsupported("per_sample_weights with a mode other than 'sum'")
    w, dt = ctx.input("weight"), ctx.dtype("weight")
    idx = ctx.input("input")
    if ctx.rank("input") == 2:  # (B, N): bag b is row b
        emb = ctx.op("Gather", [w, idx], axis=0)                              # (B, N, D)
        keep = None
        if pad is not None:
            keep = unsqueeze(ctx, ctx.op("Not", [ctx.op("Equal", [idx, ctx.const(int(pad), ctx.dtype("input"))])]),
                             [-1])                                                 # (B, N, 1)
        psw = ctx.input("per_sample_weights")
        if psw is not None:
            emb = ctx.op("Mul", [emb, unsqueeze(ctx, psw, [-1])])
        if mode == "max":
            if keep is None:
                return reduce(ctx, "ReduceMax", emb, [1], 0)
            m = reduce(ctx, "ReduceMax", ctx.op("Where", [keep, emb, ctx.const(-math.inf, dt)]), [1], 0)
            any_kept = reduce(ctx, "ReduceMax", ctx.cast(keep, torch.int64), [1], 0)
            return ctx.op("Where", [ctx.cast(any_kept, torch.bool), m, ctx.const(0.0, dt)])
        if keep is not None:
            emb = ctx.op("Where", [keep, emb, ctx.const(0.0, dt)])
        total = reduce(ctx, "ReduceSum", emb, [1], 0)
        if mode == "sum":
            return total
        if keep is None:
            return reduce(ctx, "ReduceMean", emb, [1], 0)
        count = reduce(ctx, "ReduceSum", ctx.cast(keep, dt), [1], 0)
        return ctx.op("Div", [total, ctx.op("Max", [count, ctx.const(1.0, dt)])])
    if a["offsets"] is None:
        ctx.unsupported("embedding_bag of a 1-D input without offsets")
    off = ctx.cast(ctx.input("offsets"), torch.int64)
    n = ctx.op("Shape", [idx])                                                 # [L]
    ends = ctx.op("Concat", [slice_(ctx, off, [1], [INT64_MAX], [0]), n], axis=0)
    pos = unsqueeze(ctx, ctx.op("Range", [ctx.const(0, torch.int64), ctx.op("Squeeze", [n]),
                                          ctx.const(1, torch.int64)]), [0])    # (1, L)
    member = ctx.op("And", [ctx.op("GreaterOrEqual", [pos, unsqueeze(ctx, off, [1])]),
                            ctx.op("Less", [pos, unsqueeze(ctx, ends, [1])])])  # (B, L)
    if pad is not None:
        member = ctx.op("And", [member, unsqueeze(ctx, ctx.op("Not", [ctx.op(
            "Equal", [idx, ctx.const(int(pad), ctx.dtype("input"))])]), [0])])
    emb = ctx.op("Gather", [w, idx], axis=0)                                   # (L, D)
    if mode == "max":
        masked = ctx.op("Where", [unsqueeze(ctx, member, [-1]), unsqueeze(ctx, emb, [0]),
                                  ctx.const(-math.inf, dt)])                   # (B, L, D)
        m = reduce(ctx, "ReduceMax", masked, [1], 0)
        any_kept = reduce(ctx, "ReduceMax", ctx.cast(member, torch.int64), [1], 1)
        return ctx.op("Where", [ctx.cast(any_kept, torch.bool), m, ctx.const(0.0, dt)])
    mf = ctx.cast(member, dt)
    psw = ctx.input("per_sample_weights")
    total = ctx.op("MatMul", [ctx.op("Mul", [mf, unsqueeze(ctx, psw, [0])]) if psw is not None else mf, emb])
    if mode == "sum":
        return total
    count = reduce(ctx, "ReduceSum", mf, [1], 1)
    return ctx.op("Div", [total, ctx.op("Max", [count, ctx.const(1.0, dt)])])


# ---- one_hot ------------------------------------------------------------------------------------------------
@register("one_hot", family="nn", functions=[F.one_hot], aten=["one_hot.default"], flops=zero,
          data_dependent=lambda node: node.args["num_classes"] in (-1, None))  # then: the largest index + 1
def one_hot(input, num_classes=-1):
    return F.one_hot(input, num_classes)


@onnx_lowering("one_hot")
def _one_hot_onnx(ctx, node):
    nc = node.args["num_classes"]
    x = ctx.input("input")
    if isinstance(nc, int) and nc == -1:  # max(input) + 1, at run time
        depth = ctx.op("Add", [reduce(ctx, "ReduceMax", ctx.cast(x, torch.int64), list(range(ctx.rank("input"))),
                                      0), ctx.const(1, torch.int64)])
    else:
        depth = ctx.input("num_classes", dtype=torch.int64)
    return ctx.op("OneHot", [x, depth, ctx.const([0, 1], torch.int64)], axis=-1)


@onnx_import("OneHot")
def _one_hot_import(ctx):
    """ONNX OneHot: ``values[1]`` where an index (negative counts from ``depth``) equals the class along ``axis``,
    ``values[0]`` elsewhere, also for every class of an index out of [-depth, depth). ``depth`` may be read at run
    time (then the class dim is a run-time size). torch's one_hot refuses out-of-range indices: compared instead."""
    idx = ctx.input(0)
    r = ctx.rank(idx)
    a = int(ctx.attr("axis", -1)) % (r + 1)
    c = ctx.const(1)
    if c is not None:
        depth = int(c.reshape(-1)[0].item())
    else:
        d = ctx.call("reshape", input=ctx.input(1), shape=[])
        depth = ctx.call("item", input=ctx.call("to", input=d, dtype=torch.int64))
    if ctx.dtype(idx) != torch.int64:
        idx = ctx.call("to", input=idx, dtype=torch.int64)  # a float index truncates, as ONNX casts it
    idx = ctx.call("where", condition=ctx.call("lt", input=idx, other=0), input=ctx.call("add", input=idx, other=depth),
                   other=idx)
    classes = ctx.call("reshape", input=ctx.call("arange", start=0, end=depth, step=1, dtype=torch.int64),
                       shape=[-1] + [1] * (r - a))
    hot = ctx.call("eq", input=ctx.call("unsqueeze", input=idx, dim=a), other=classes)
    values = ctx.input(2)
    return ctx.call("where", condition=hot, input=ctx.call("select", input=values, dim=0, index=1),
                    other=ctx.call("select", input=values, dim=0, index=0))


# ---- resampling: interpolate --------------------------------------------------------------------------------
def _upsample_module(m):
    if isinstance(m, nn.UpsamplingBilinear2d):  # its forward passes align_corners=True, not m.align_corners
        return dict(size=m.size, scale_factor=m.scale_factor, mode="bilinear", align_corners=True)
    return dict(size=m.size, scale_factor=m.scale_factor, mode=m.mode,
                align_corners=m.align_corners if m.mode not in ("nearest", "area", "nearest-exact") else None,
                recompute_scale_factor=getattr(m, "recompute_scale_factor", None))


def _upsample_fixed(mode, align_corners):
    """F.upsample_nearest/F.upsample_bilinear(input, size=None, scale_factor=None): the mode is the function's."""
    def adapt(args, kwargs):
        b = dict(zip(("input", "size", "scale_factor"), args), **kwargs)
        return (), {**b, "mode": mode, "align_corners": align_corners}
    return adapt


def _upsample_vec(mode, antialias):
    """aten ``upsample_<mode>2d.vec(input, output_size, align_corners, scale_factors)`` and its antialiased
    ``_aa`` twin (F.interpolate(..., antialias=True) under torch.export, timm's position-embedding resampling)."""
    def adapt(args, kwargs):
        return (args[0],), {"size": args[1], "align_corners": args[2], "scale_factor": args[3], "mode": mode,
                            "antialias": antialias}
    return adapt


@register("interpolate", family="nn", functions=[F.interpolate, F.upsample,
                                                 (F.upsample_nearest, _upsample_fixed("nearest", None)),
                                                 (F.upsample_bilinear, _upsample_fixed("bilinear", True))],
          modules={c: _mod(_upsample_module) for c in (nn.Upsample, nn.UpsamplingNearest2d,
                                                       nn.UpsamplingBilinear2d)},
          aten=[("upsample_nearest2d.vec", lambda a, k: ((a[0],), {"size": a[1], "scale_factor": a[2],
                                                                    "mode": "nearest"})),
                ("upsample_bilinear2d.vec", lambda a, k: ((a[0],), {"size": a[1], "align_corners": a[2],
                                                                     "scale_factor": a[3], "mode": "bilinear"})),
                ("upsample_bicubic2d.vec", _upsample_vec("bicubic", False)),
                ("_upsample_bilinear2d_aa.vec", _upsample_vec("bilinear", True)),
                ("_upsample_bicubic2d_aa.vec", _upsample_vec("bicubic", True))],
          flops=per_output(4), fresh_output=True)
def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False):
    return F.interpolate(input, size, scale_factor, mode, align_corners, recompute_scale_factor, antialias)


def _nearest_index(o, i, out_size, scale, exact, n):
    """torch's source index (UpSample.h nearest_idx / nearest_neighbor_exact_compute_source_index), float32 math;
    only the 2-d 'nearest' kernel takes the out == in and out == 2 * in shortcuts (checked on torch 2.13 CPU)."""
    if not exact and n == 2 and out_size == i:
        return o
    if not exact and n == 2 and out_size == 2 * i:
        return o >> 1
    s = np.float32(1.0 / scale) if scale is not None and scale > 0 else np.float32(i) / np.float32(out_size)
    src = np.float32(np.float64(o + 0.5) * np.float64(s)) if exact else np.float32(o) * s
    return min(int(np.floor(src)), i - 1)


@onnx_lowering("interpolate")
def _interpolate_onnx(ctx, node):
    a = node.args
    mode, ac, aa = a["mode"], bool(a["align_corners"]), bool(a["antialias"])
    x = ctx.input("input")
    shape, out_shape = ctx.spec("input").shape, ctx.out_spec().shape
    n = len(shape) - 2
    in_sp, out_sp = list(shape[2:]), list(out_shape[2:])
    sf = a["scale_factor"]
    sfs = list(tuple_n(sf, n)) if sf is not None else None
    if sfs is not None and len(sfs) == 1 and n > 1:
        sfs = sfs * n
    use_scales = sfs is not None and not a["recompute_scale_factor"]
    if mode == "area":  # torch: adaptive_avg_pool to the output size
        if not static(out_sp):
            ctx.unsupported("area interpolation to a symbolic size")
        return _adaptive_pool(ctx, x, in_sp, out_sp, "avg")
    if mode in ("nearest", "nearest-exact") and static(in_sp) and static(out_sp):
        exact = mode == "nearest-exact"
        for d, (i, o) in enumerate(zip(in_sp, out_sp)):
            idx = [_nearest_index(j, i, o, sfs[d] if use_scales else None, exact, n) for j in range(o)]
            if idx != list(range(i)):
                x = ctx.op("Gather", [x, ctx.const(idx, torch.int64)], axis=2 + d)
        return x
    kw = {}
    if mode in ("nearest", "nearest-exact"):
        kw = dict(mode="nearest", coordinate_transformation_mode="asymmetric" if mode == "nearest" else "half_pixel",
                  nearest_mode="floor" if mode == "nearest" else "round_prefer_ceil")
    elif mode in ("linear", "bilinear", "trilinear", "bicubic"):
        kw = dict(mode="cubic" if mode == "bicubic" else "linear",
                  coordinate_transformation_mode="align_corners" if ac else "half_pixel")
        if mode == "bicubic":
            kw["cubic_coeff_a"] = -0.5 if aa else -0.75
        if aa:  # torch's antialiased kernels (PIL's): a = -0.5, weights renormalized over the taps inside
            if ac:
                ctx.unsupported("antialias with align_corners=True (torch's aa kernel maps centers in a way "
                                "Resize has no coordinate mode for)")
            upsampling = static(in_sp) and static(out_sp) and all(o >= i for i, o in zip(in_sp, out_sp))
            if mode == "bicubic" or ctx.opset >= 18:
                kw["exclude_outside"] = 1
            if ctx.opset >= 18:
                kw["antialias"] = 1
            elif not upsampling:
                ctx.unsupported("antialiased downsampling needs Resize's antialias (opset 18)")
    else:
        ctx.unsupported(f"interpolation mode {mode!r}")
    if use_scales and not ac:
        if static(in_sp) and static(out_sp) and \
                [int(np.float32(s) * np.float32(i)) for s, i in zip(sfs, in_sp)] != out_sp:
            ctx.unsupported("a scale_factor whose float32 output size differs from torch's")
        scales = ctx.const([1.0, 1.0] + [float(s) for s in sfs], torch.float32)
        return ctx.op("Resize", [x, None, scales], **kw)
    if not static(out_sp):
        ctx.unsupported("interpolation to a symbolic output size")
    if static(shape[:2]):
        sizes = i64(ctx, list(shape[:2]) + out_sp)
    else:
        sizes = ctx.op("Concat", [ctx.op("Shape", [x], start=0, end=2), i64(ctx, out_sp)], axis=0)
    return ctx.op("Resize", [x, None, None, sizes], **kw)


@onnx_import("Resize")
def _resize_import(ctx):
    x = ctx.input(0)
    r = ctx.rank(x)
    n = r - 2
    mode = ctx.attr("mode", "nearest")
    ctm = ctx.attr("coordinate_transformation_mode", "half_pixel")
    if ctx.attr("axes") is not None or ctx.attr("keep_aspect_ratio_policy", "stretch") != "stretch":
        ctx.unsupported("Resize with axes or keep_aspect_ratio_policy")
    scales = ctx.const(2) if ctx.has(2) else None
    run_time_scales = scales is None and ctx.has(2) and not ctx.has(3)  # read when the module runs
    scales = None if scales is None or scales.numel() == 0 else [float(s) for s in scales.tolist()]
    sizes = ctx.ints(3, run_time=True) if ctx.has(3) else None
    if (scales and scales[:2] != [1.0, 1.0]) or (sizes and any(
            isinstance(a, int) and isinstance(b, int) and a != b for a, b in zip(sizes[:2], ctx.shape(x)[:2]))):
        ctx.unsupported("resizing the batch or channel dims")
    kw: dict = {}
    if mode == "nearest":
        nm = ctx.attr("nearest_mode", "round_prefer_floor")
        if ctm == "tf_crop_and_resize":
            ctx.unsupported("nearest Resize with coordinate_transformation_mode='tf_crop_and_resize'")
        return _resize_nearest(ctx, x, n, scales, sizes, run_time_scales, ctm, nm)
    if mode in ("linear", "cubic"):
        if mode == "cubic" and abs(float(ctx.attr("cubic_coeff_a", -0.75)) + 0.75) > 1e-6:
            ctx.unsupported("cubic Resize with cubic_coeff_a other than -0.75")
        if mode == "cubic" and n != 2:
            ctx.unsupported("cubic Resize of other than 2 spatial dims")
        kw["mode"] = "bicubic" if mode == "cubic" else {1: "linear", 2: "bilinear", 3: "trilinear"}.get(n)
        if kw["mode"] is None:
            ctx.unsupported(f"linear Resize over {n} spatial dims")
        if ctm == "align_corners":
            kw["align_corners"] = True
        elif ctm in ("half_pixel", "pytorch_half_pixel"):
            kw["align_corners"] = False
            if ctm == "pytorch_half_pixel":  # an output dim of one position reads position 0 (torch: the centre)
                out = _static_out_sizes(ctx, x, scales, sizes)
                if out is None or 1 in out:
                    ctx.unsupported(f"{mode} Resize with coordinate_transformation_mode='pytorch_half_pixel' to an "
                                    "output dim of size 1, or of a size known only at run time")
        else:
            ctx.unsupported(f"{mode} Resize with coordinate_transformation_mode={ctm!r}")
        if ctx.attr("antialias", 0):
            kw["antialias"] = True
    else:
        ctx.unsupported(f"Resize mode {mode!r}")
    if kw.get("antialias"):  # a no-op when upsampling; downsampling, torch's filter differs from ONNX's (~5%)
        out = _static_out_sizes(ctx, x, scales, sizes)
        if out is None or any(o < a for o, a in zip(out, ctx.shape(x)[2:])):
            ctx.unsupported("antialiased downsampling (torch's antialias filter differs from ONNX's), or "
                            "antialias with sizes known only at run time")
    if sizes and any(read_at_run_time(s) for s in sizes):
        # sizes read when the module runs: the spatial ones resized to, the batch and channel ones broadcast to
        # (equal: unchanged; from 1: repeated, as a resize of a size-1 dim is; else expand fails when it runs)
        y = ctx.call_unknown_shape("interpolate", input=x, size=list(sizes[2:]), rank=r, dtype=ctx.dtype(x), **kw)
        return ctx.call("expand", input=y, size=list(sizes[:2]) + [-1] * n)
    if sizes:
        return ctx.call("interpolate", input=x, size=list(sizes[2:]), **kw)
    if run_time_scales:
        return _resize_run_time_scales(ctx, x, n, kw)
    if not scales:
        ctx.unsupported("Resize with neither constant scales nor sizes")
    return ctx.call("interpolate", input=x, scale_factor=scales[2:], **kw)


def _read_scales(ctx, n: int) -> list:
    """Resize's scales input, read when the module runs: one run-time float per input dim."""
    s = ctx.input(2)
    if ctx.shape(s) != (n + 2,):
        ctx.unsupported("Resize scales computed at run time of other than one per input dim")
    return [ctx.call("item", input=ctx.call("select", input=s, dim=0, index=j)) for j in range(n + 2)]


def _scaled_size(ctx, x, i: int, scale):
    """floor(size of dim ``i`` * ``scale``), the output size ONNX gives a scale: an int when both are known (in
    float32, as onnxruntime computes it), else a run-time int."""
    import builtins

    import numpy as np

    size = ctx.size(x, i)
    if isinstance(size, int) and isinstance(scale, float):
        return int(np.float32(size) * np.float32(scale))
    return ctx.call("python_call", fn=builtins.int, args=[ctx.call("mul", input=size, other=scale)])


def _static_out_sizes(ctx, x, scales, sizes) -> list | None:
    """Resize's spatial output sizes when they are known while importing (constant scales of static dims, or
    constant sizes); None when they are known only at run time."""
    out = [_scaled_size(ctx, x, 2 + d, s) for d, s in enumerate(scales[2:])] if scales else \
        (list(sizes[2:]) if sizes else None)
    return out if out is not None and static(out) else None


def _resize_nearest(ctx, x, n: int, scales, sizes, run_time_scales: bool, ctm: str, nm: str):
    """Nearest Resize by sizes or scales (either may be read at run time); a batch or channel size read at run time
    is broadcast to (equal: unchanged; from 1: repeated, as resizing a size-1 dim does; else it fails when run)."""
    lead = None
    if sizes:
        out, spatial_scales = list(sizes[2:]), None
        if any(isinstance(s, Value) for s in sizes[:2]):
            lead = list(sizes[:2])
    else:
        if run_time_scales:
            scales = _read_scales(ctx, n)
        elif not scales:
            ctx.unsupported("Resize with neither scales nor sizes")
        out = [_scaled_size(ctx, x, 2 + d, scales[2 + d]) for d in range(n)]
        spatial_scales = list(scales[2:])
        if run_time_scales:
            lead = [_scaled_size(ctx, x, i, scales[i]) for i in range(2)]
    y = _nearest_by_index(ctx, x, out, spatial_scales, ctm, nm)
    return y if lead is None else ctx.call("expand", input=y, size=lead + [-1] * n)


def _nearest_by_index(ctx, x, out: list, scales: list | None, ctm: str, nm: str):
    """Nearest Resize as ONNX (and onnxruntime, in float32) defines it: each output position's source coordinate
    by ``coordinate_transformation_mode``, rounded by ``nearest_mode``, clamped, then gathered with
    ``index_select`` per spatial dim (torch's nearest modes round ties their own way). ``out``: the output's
    spatial sizes; ``scales``: the spatial scales when the node gives them (else out / in). Sizes and scales may be
    read at run time; with static ones the indices are computed while importing."""
    f = torch.float32

    def t(v):  # a number (or a run-time python number) as a float32 tensor
        return ctx.call("tensor", data=v, dtype=f)

    for d, o in enumerate(out):
        i = ctx.size(x, 2 + d)
        if scales is None and isinstance(i, int) and isinstance(o, int) and i == o:
            continue
        scale = t(scales[d]) if scales is not None else ctx.call("div", input=t(o), other=t(i))
        xs = ctx.call("arange", start=0, end=o, dtype=f)
        centre = ctx.call("sub", input=ctx.call("div", input=ctx.call("add", input=xs, other=0.5), other=scale),
                          other=0.5)
        if ctm == "half_pixel":
            src = centre
        elif ctm in ("pytorch_half_pixel", "align_corners"):  # an output of one position reads position 0
            if ctm == "align_corners":
                ratio = ctx.call("div", input=t(ctx.call("sub", input=i, other=1) if not isinstance(i, int) else i - 1),
                                 other=t(ctx.call("sub", input=o, other=1) if not isinstance(o, int) else o - 1))
                centre = ctx.call("mul", input=xs, other=ratio)
            src = ctx.call("where", condition=ctx.call("gt", input=t(o), other=1.0), input=centre,
                           other=torch.tensor(0.0))
        elif ctm == "asymmetric":
            src = ctx.call("div", input=xs, other=scale)
        elif ctm == "tf_half_pixel_for_nn":
            src = ctx.call("div", input=ctx.call("add", input=xs, other=0.5), other=scale)
        elif ctm == "half_pixel_symmetric":  # centred on the input: offset = in / 2 * (1 - out / (scale * in))
            adjust = ctx.call("div", input=t(o), other=ctx.call("mul", input=scale, other=t(i)))
            offset = ctx.call("mul", input=ctx.call("div", input=t(i), other=2.0),
                              other=ctx.call("sub", input=1.0, other=adjust))
            src = ctx.call("add", input=centre, other=offset)
        else:
            ctx.unsupported(f"nearest Resize with coordinate_transformation_mode={ctm!r}")
        if nm == "round_prefer_floor":
            idx = ctx.call("ceil", input=ctx.call("sub", input=src, other=0.5))
        elif nm == "round_prefer_ceil":
            idx = ctx.call("floor", input=ctx.call("add", input=src, other=0.5))
        elif nm in ("floor", "ceil"):
            idx = ctx.call(nm, input=src)
        else:
            ctx.unsupported(f"nearest Resize with nearest_mode={nm!r}")
        last = t(ctx.call("sub", input=i, other=1) if not isinstance(i, int) else i - 1)
        idx = ctx.call("to", input=ctx.call("clamp", input=ctx.call("minimum", input=idx, other=last), min=0.0),
                       dtype=torch.int64)
        x = ctx.call("index_select", input=x, dim=2 + d, index=idx)
    return x


def _resize_run_time_scales(ctx, x, n: int, kw: dict):
    """Resize by scales read when the module runs: torch's interpolate by the spatial scales (the output size
    floor(size * scale) and the coordinate mapping by the scale itself, as ONNX's), then the batch and channel
    dims broadcast to floor(size * scale) (a scale of 1 keeps them; a size-1 dim repeats)."""
    scales = _read_scales(ctx, n)
    y = ctx.call_unknown_shape("interpolate", input=x, scale_factor=scales[2:], rank=n + 2, dtype=ctx.dtype(x), **kw)
    lead = [_scaled_size(ctx, x, i, scales[i]) for i in range(2)]
    return ctx.call("expand", input=y, size=lead + [-1] * n)


# ---- padding ------------------------------------------------------------------------------------------------
def _pad_module(mode):
    return _mod(lambda m: dict(pad=tuple(m.padding), mode=mode, value=getattr(m, "value", None)))


_PAD_MODULES = {}
for _name, _mode in [("ZeroPad", "constant"), ("ConstantPad", "constant"), ("ReflectionPad", "reflect"),
                     ("ReplicationPad", "replicate"), ("CircularPad", "circular")]:
    for _d in (1, 2, 3):
        _cls = getattr(nn, f"{_name}{_d}d", None)
        if _cls is not None:
            _PAD_MODULES[_cls] = _pad_module(_mode)


def _constant_pad_nd(args, kwargs):
    """torch.constant_pad_nd(input, pad, value=0): the third argument is the value, not a mode."""
    b = dict(zip(("input", "pad", "value"), args), **kwargs)
    return (), {**b, "mode": "constant"}


def _aten_pad_mode(mode):
    """aten.reflection_pad2d(self, padding) and the like: F.pad in ``mode``."""
    def adapt(args, kwargs):
        b = dict(zip(("input", "pad"), args))
        b.update({{"self": "input", "padding": "pad"}.get(k, k): v for k, v in kwargs.items()})
        return (), {**b, "mode": mode}
    return adapt


@register("pad", family="nn", functions=[F.pad, (torch.constant_pad_nd, _constant_pad_nd)],
          aten=[("constant_pad_nd.default", _constant_pad_nd), ("pad.default", None)]
          + [(f"{kind}_pad{n}d.default", _aten_pad_mode(mode)) for kind, mode in (("reflection", "reflect"),
                                                                                   ("replication", "replicate"))
             for n in (1, 2, 3)], modules=_PAD_MODULES,
          flops=zero, fresh_output=True)
def pad(input, pad, mode="constant", value=None):
    """Pad the last dims by ``pad`` = (left, right, top, bottom, ...)."""
    if mode == "constant":
        return F.pad(input, pad, mode, 0.0 if value is None else value)
    return F.pad(input, pad, mode)


@onnx_lowering("pad")
def _pad_onnx(ctx, node):
    a = node.args
    pads, r = list(a["pad"]), ctx.rank("input")
    begins, ends = [0] * r, [0] * r
    for i in range(len(pads) // 2):  # torch: (last_begin, last_end, second-to-last_begin, ...)
        begins[r - 1 - i], ends[r - 1 - i] = pads[2 * i], pads[2 * i + 1]
    return _pad_to(ctx, ctx.input("input"), r, begins, ends, a["mode"], a["value"], ctx.dtype("input"))


_ONNX_PAD_MODE = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}


def _pad_import(ctx, axes):
    """A Pad node whose ``pads`` hold (begins, ends) of ``axes`` (None: every axis in order) as torch's F.pad."""
    x = ctx.input(0)
    r = ctx.rank(x)
    mode = ctx.attr("mode", "constant")
    if mode not in _ONNX_PAD_MODE:
        ctx.unsupported(f"Pad mode {mode!r}")
    pads = ctx.ints(1, run_time=True)
    if not ctx.has(2):
        value = 0.0
    elif ctx.const(2) is not None:
        value = ctx.const(2).reshape(-1)[0].item()
    else:  # the pad value read when the module runs
        value = ctx.call("item", input=ctx.call("reshape", input=ctx.input(2), shape=[]))
    axes = [a % r for a in (axes if axes is not None else range(r))]
    k = len(axes)
    begin, end = [0] * r, [0] * r
    for j, a in enumerate(axes):
        begin[a], end[a] = pads[j], pads[k + j]
    padded = [isinstance(b, Value) or isinstance(e, Value) or bool(b or e) for b, e in zip(begin, end)]
    first = padded.index(True) if any(padded) else r
    torch_pad = []
    for i in range(r - 1, first - 1, -1):
        torch_pad += [begin[i], end[i]]
    if not torch_pad:
        return x
    args = dict(input=x, pad=torch_pad, mode=_ONNX_PAD_MODE[mode], value=value if mode == "constant" else None)
    if any(isinstance(p, Value) for p in torch_pad):  # pads read when the module runs: sizes known then
        return ctx.call_unknown_shape("pad", **args)
    return ctx.call("pad", **args)


@onnx_import("Pad", since=13)
def _pad_import_13(ctx):
    """Pad-13: ``pads`` for every axis (no ``axes`` input before Pad-18)."""
    if ctx.has(3):
        ctx.unsupported(f"an axes input to Pad at opset {ctx.opset} (Pad takes one from opset 18)")
    return _pad_import(ctx, None)


@onnx_import("Pad", since=18)
def _pad_import_18(ctx):
    """Pad-18: an optional ``axes`` input names the padded axes; ``pads`` then holds their begins and ends."""
    return _pad_import(ctx, [int(a) for a in ctx.ints(3)] if ctx.has(3) else None)


# ---- pixel_shuffle ------------------------------------------------------------------------------------------
@register("pixel_shuffle", family="nn", functions=[F.pixel_shuffle], aten=["pixel_shuffle.default"],
          modules={nn.PixelShuffle: _mod(lambda m: dict(upscale_factor=m.upscale_factor))}, flops=zero)
def pixel_shuffle(input, upscale_factor):
    return F.pixel_shuffle(input, upscale_factor)


@onnx_lowering("pixel_shuffle")
def _pixel_shuffle_onnx(ctx, node):
    r_, x, rank = int(node.args["upscale_factor"]), ctx.input("input"), ctx.rank("input")
    if rank == 4:
        return ctx.op("DepthToSpace", [x], blocksize=r_, mode="CRD")
    x4 = ctx.op("Reshape", [x, ctx.op("Concat", [i64(ctx, [-1]), ctx.op("Shape", [x], start=-3)], axis=0)])
    y = ctx.op("DepthToSpace", [x4], blocksize=r_, mode="CRD")
    return ctx.op("Reshape", [y, _lead_then(ctx, x, 3, [ctx.op("Shape", [y], start=-3)])])


@onnx_import("DepthToSpace")
def _depth_to_space_import(ctx):
    x, b = ctx.input(0), int(ctx.attr("blocksize"))
    if ctx.attr("mode", "DCR") == "CRD":
        return ctx.call("pixel_shuffle", input=x, upscale_factor=b)
    y = ctx.call("unflatten", input=x, dim=1, sizes=[b, b, -1])              # N, b, b, C', H, W
    y = ctx.call("permute", input=y, dims=[0, 3, 4, 1, 5, 2])                # N, C', H, b, W, b
    return ctx.call("flatten", input=ctx.call("flatten", input=y, start_dim=4, end_dim=5), start_dim=2, end_dim=3)


# ---- pixel_unshuffle ----------------------------------------------------------------------------------------
@register("pixel_unshuffle", family="nn", functions=[F.pixel_unshuffle], aten=["pixel_unshuffle.default"],
          modules={nn.PixelUnshuffle: _mod(lambda m: dict(downscale_factor=m.downscale_factor))}, flops=zero)
def pixel_unshuffle(input, downscale_factor):
    return F.pixel_unshuffle(input, downscale_factor)


@onnx_lowering("pixel_unshuffle")
def _pixel_unshuffle_onnx(ctx, node):
    # SpaceToDepth puts block offset before channel ((i*r+j)*C + c); torch wants c*r*r + i*r + j: swap them
    r_, x, rank = int(node.args["downscale_factor"]), ctx.input("input"), ctx.rank("input")
    x4 = x if rank == 4 else ctx.op("Reshape", [x, ctx.op("Concat", [i64(ctx, [-1]), ctx.op("Shape", [x], start=-3)],
                                                          axis=0)])
    y = ctx.op("SpaceToDepth", [x4], blocksize=r_)
    y5 = ctx.op("Reshape", [y, ctx.op("Concat", [i64(ctx, [0, r_ * r_, -1]), ctx.op("Shape", [y], start=2)], axis=0)])
    y = ctx.op("Reshape", [ctx.op("Transpose", [y5], perm=[0, 2, 1, 3, 4]), ctx.op("Shape", [y])])
    return y if rank == 4 else ctx.op("Reshape", [y, _lead_then(ctx, x, 3, [ctx.op("Shape", [y], start=-3)])])


@onnx_import("SpaceToDepth")
def _space_to_depth_import(ctx):  # DCR (the default): channel = (bh * b + bw) * C + c; CRD: c * b * b + ...
    x, b = ctx.input(0), int(ctx.attr("blocksize"))
    mode = ctx.attr("mode", "DCR")
    if mode == "CRD":  # channel = c * b * b + bh * b + bw: torch's pixel_unshuffle
        return ctx.call("pixel_unshuffle", input=x, downscale_factor=b)
    if mode != "DCR":
        ctx.unsupported(f"SpaceToDepth mode {mode!r}")
    y = ctx.call("unflatten", input=ctx.call("unflatten", input=x, dim=3, sizes=[-1, b]), dim=2, sizes=[-1, b])
    y = ctx.call("permute", input=y, dims=[0, 3, 5, 1, 2, 4])                # N, bh, bw, C, H', W'
    return ctx.call("flatten", input=y, start_dim=1, end_dim=3)


# ---- channel_shuffle ----------------------------------------------------------------------------------------
@register("channel_shuffle", family="nn", functions=[F.channel_shuffle] if hasattr(F, "channel_shuffle") else [],
          modules={nn.ChannelShuffle: _mod(lambda m: dict(groups=m.groups))}, flops=zero)
def channel_shuffle(input, groups):
    b, c = input.shape[0], input.shape[1]
    return input.reshape(b, groups, c // groups, *input.shape[2:]).transpose(1, 2).reshape(input.shape)


@onnx_lowering("channel_shuffle")
def _channel_shuffle_onnx(ctx, node):
    g, x, r = int(node.args["groups"]), ctx.input("input"), ctx.rank("input")
    split = ctx.op("Concat", [i64(ctx, [0, g, -1]), ctx.op("Shape", [x], start=2)], axis=0)
    y = ctx.op("Transpose", [ctx.op("Reshape", [x, split])], perm=[0, 2, 1] + list(range(3, r + 1)))
    return ctx.op("Reshape", [y, ctx.op("Shape", [x])])


# ---- unfold (im2col) ----------------------------------------------------------------------------------------
@register("unfold", family="nn", functions=[F.unfold],
          modules={nn.Unfold: _mod(lambda m: dict(kernel_size=m.kernel_size, dilation=m.dilation,
                                                  padding=m.padding, stride=m.stride))}, flops=zero)
def unfold(input, kernel_size, dilation=1, padding=0, stride=1):
    """im2col: sliding local blocks."""
    return F.unfold(input, kernel_size, dilation, padding, stride)


@onnx_lowering("unfold")
def _unfold_onnx(ctx, node):
    """im2col as a grouped Conv with one-hot kernels: exact copies of the window elements."""
    a = node.args
    x, undo = _pool_input(ctx, "input", 2)
    c, dt = ctx.spec("input").shape[-3], ctx.dtype("input")
    if not isinstance(c, int):
        ctx.unsupported("unfold with a symbolic channel count")
    if not dt.is_floating_point:
        ctx.unsupported(f"unfold of {dt} (ONNX Conv takes floating point)")
    k, p = list(tuple_n(a["kernel_size"], 2)), list(tuple_n(a["padding"], 2))
    y = ctx.op("Conv", [x, ctx.const(_one_hot_kernels(c, k, dt), dt)], kernel_shape=k, group=c,
               strides=list(tuple_n(a["stride"], 2)), dilations=list(tuple_n(a["dilation"], 2)), pads=p + p)
    blocks = ctx.out_spec().shape[-1]  # known: an empty batch leaves -1 undefined in Reshape
    return undo(ctx.op("Reshape", [y, i64(ctx, [0, c * math.prod(k), blocks if isinstance(blocks, int) else -1])]))


# ---- fold (col2im) ------------------------------------------------------------------------------------------
@register("fold", family="nn", functions=[F.fold], aten=["col2im.default"],
          modules={nn.Fold: _mod(lambda m: dict(output_size=m.output_size, kernel_size=m.kernel_size,
                                                dilation=m.dilation, padding=m.padding, stride=m.stride))},
          flops=per_input(1))
def fold(input, output_size, kernel_size, dilation=1, padding=0, stride=1):
    """col2im: sums sliding local blocks into a tensor."""
    return F.fold(input, output_size, kernel_size, dilation, padding, stride)


@onnx_lowering("fold")
def _fold_onnx(ctx, node):
    """col2im: Col2Im from opset 18; before, a grouped ConvTranspose with one-hot kernels (sums the blocks)."""
    a = node.args
    x, undo = _pool_input(ctx, "input", 1)
    k, d = list(tuple_n(a["kernel_size"], 2)), list(tuple_n(a["dilation"], 2))
    p, s = list(tuple_n(a["padding"], 2)), list(tuple_n(a["stride"], 2))
    size = [int(v) for v in tuple_n(a["output_size"], 2)]
    if ctx.opset >= 18:
        return undo(ctx.op("Col2Im", [x, i64(ctx, size), i64(ctx, k)], dilations=d, pads=p + p, strides=s))
    ckk, dt = ctx.spec("input").shape[-2], ctx.dtype("input")
    if not isinstance(ckk, int):
        ctx.unsupported("fold with a symbolic channel count before opset 18")
    c = ckk // math.prod(k)
    blocks = [(o + 2 * pp - dd * (kk - 1) - 1) // ss + 1 for o, pp, dd, kk, ss in zip(size, p, d, k, s)]
    full = [(b - 1) * ss + dd * (kk - 1) + 1 - 2 * pp for b, ss, dd, kk, pp in zip(blocks, s, d, k, p)]
    grid = ctx.op("Reshape", [x, i64(ctx, [0, ckk, *blocks])])
    y = ctx.op("ConvTranspose", [grid, ctx.const(_one_hot_kernels(c, k, dt), dt)], kernel_shape=k, group=c,
               strides=s, dilations=d, pads=p + p, output_padding=[o - f for o, f in zip(size, full)])
    return undo(y)


@onnx_import("Col2Im", since=18)
def _col2im_import(ctx):
    """Col2Im of a 2-D image padded alike at both ends, which is torch's fold (it folds 2-D images only)."""
    size, k = ctx.ints(1), ctx.ints(2)
    if not all(isinstance(v, int) for v in (*size, *k)):
        ctx.unsupported("Col2Im with an image or block shape computed at run time (torch's fold takes ints)")
    if len(size) != 2:
        ctx.unsupported(f"Col2Im of a {len(size)}-D image (torch's fold takes 2-D images)")
    p = list(ctx.attr("pads", [0] * 4))
    if p[:2] != p[2:]:
        ctx.unsupported(f"Col2Im with pads {p} that differ at the two ends (torch's fold pads both alike)")
    return ctx.call("fold", input=ctx.input(0), output_size=size, kernel_size=k, padding=p[:2],
                    dilation=list(ctx.attr("dilations", [1, 1])), stride=list(ctx.attr("strides", [1, 1])))


# ---- cosine_similarity --------------------------------------------------------------------------------------
@register("cosine_similarity", family="nn", functions=[F.cosine_similarity, torch.cosine_similarity],
          modules={nn.CosineSimilarity: _mod(lambda m: dict(dim=m.dim, eps=m.eps))}, flops=per_input(6),
          n_tensor_params=2)
def cosine_similarity(x1, x2, dim=1, eps=1e-8):
    return F.cosine_similarity(x1, x2, dim, eps)


@onnx_lowering("cosine_similarity")
def _cosine_similarity_onnx(ctx, node):
    # ATen: x1, x2 broadcast; sum((x1 / max(||x1||, eps)) * (x2 / max(||x2||, eps)), dim)
    a = node.args
    x1, x2, dt = ctx.input("x1"), ctx.input("x2"), ctx.out_spec().dtype
    if ctx.dtype("x1") != dt:
        x1 = ctx.cast(x1, dt)
    if ctx.dtype("x2") != dt:
        x2 = ctx.cast(x2, dt)
    if tuple(ctx.spec("x1").shape) != tuple(ctx.spec("x2").shape):
        x1, x2 = ctx.op("Expand", [x1, ctx.op("Shape", [x2])]), ctx.op("Expand", [x2, ctx.op("Shape", [x1])])
    dim, eps = int(a["dim"]), ctx.const(float(a["eps"]), dt)
    if ctx.rank("x1") == 0 and ctx.rank("x2") == 0:  # ONNX reduces need rank >= 1: over the 1-element vectors
        x1, x2, dim = ctx.op("Reshape", [x1, i64(ctx, [1])]), ctx.op("Reshape", [x2, i64(ctx, [1])]), 0
    n1 = ctx.op("Max", [reduce(ctx, "ReduceL2", x1, [dim], 1), eps])
    n2 = ctx.op("Max", [reduce(ctx, "ReduceL2", x2, [dim], 1), eps])
    return reduce(ctx, "ReduceSum", ctx.op("Mul", [ctx.op("Div", [x1, n1]), ctx.op("Div", [x2, n2])]), [dim], 0)


# ---- pairwise_distance --------------------------------------------------------------------------------------
@register("pairwise_distance", family="nn", functions=[F.pairwise_distance, torch.pairwise_distance],
          modules={nn.PairwiseDistance: _mod(lambda m: dict(p=m.norm, eps=m.eps, keepdim=m.keepdim))},
          flops=per_input(3), n_tensor_params=2)
def pairwise_distance(x1, x2, p=2.0, eps=1e-6, keepdim=False):
    return F.pairwise_distance(x1, x2, p, eps, keepdim)


@onnx_lowering("pairwise_distance")
def _pairwise_distance_onnx(ctx, node):
    # ATen: norm(x1 - x2 + eps, p, dim=-1 of the broadcast rank, keepdim)
    a = node.args
    dt = ctx.out_spec().dtype
    diff = ctx.op("Add", [ctx.op("Sub", [ctx.input("x1"), ctx.input("x2")]), ctx.const(float(a["eps"]), dt)])
    r = max(ctx.rank("x1"), ctx.rank("x2"))
    return _norm_p(ctx, diff, float(a["p"]), [r - 1], int(bool(a["keepdim"])), dt)


# ---- grid_sample --------------------------------------------------------------------------------------------
_GRID_MODES = ("bilinear", "nearest", "bicubic")      # aten's interpolation_mode numbers
_GRID_PADDING = ("zeros", "border", "reflection")     # aten's padding_mode numbers


def _grid_sample_fn(args, kwargs):
    """F.grid_sample(input, grid, mode, padding_mode, align_corners=None): None is torch's default, False."""
    b = dict(zip(("input", "grid", "mode", "padding_mode", "align_corners"), args), **kwargs)
    return (), {**b, "align_corners": bool(b.get("align_corners"))}


def _aten_grid_sampler(args, kwargs):
    """aten.grid_sampler(_2d)(input, grid, interpolation_mode, padding_mode, align_corners): modes as numbers."""
    b = dict(zip(("input", "grid", "interpolation_mode", "padding_mode", "align_corners"), args), **kwargs)
    return (b["input"], b["grid"]), {"mode": _GRID_MODES[int(b["interpolation_mode"])],
                                     "padding_mode": _GRID_PADDING[int(b["padding_mode"])],
                                     "align_corners": bool(b["align_corners"])}


def _grid_sample_flops(node):
    """One multiply-add per tap and output element: 2 taps a spatial axis (bilinear), 4 (bicubic), 0 (nearest)."""
    taps = {"bilinear": 2, "bicubic": 4, "nearest": 0}[node.args["mode"]] ** (len(shape(node.outputs[0])) - 2)
    return 2 * taps * out_numel(node)


@register("grid_sample", family="nn", functions=[(F.grid_sample, _grid_sample_fn)],
          aten=[("grid_sampler.default", _aten_grid_sampler), ("grid_sampler_2d.default", _aten_grid_sampler),
                ("grid_sampler_3d.default", _aten_grid_sampler)],
          flops=_grid_sample_flops, n_tensor_params=2)
def grid_sample(input, grid, mode="bilinear", padding_mode="zeros", align_corners=False):
    """Sample ``input`` (N, C, *spatial) at the normalized [-1, 1] coordinates of ``grid`` (N, *out, ndim)."""
    return F.grid_sample(input, grid, mode, padding_mode, align_corners)


_ONNX_GRID_MODE = {"bilinear": "linear", "bicubic": "cubic", "nearest": "nearest"}  # GridSample-20's names


@onnx_lowering("grid_sample")
def _grid_sample_onnx(ctx, node):
    """GridSample: opset 16 names the modes bilinear/bicubic and takes 4-D inputs only; 20 says linear/cubic and
    takes 5-D too. Padding modes and align_corners mean the same as torch's."""
    a = node.args
    mode = a["mode"]
    if ctx.opset < 20:
        if ctx.rank("input") != 4:
            ctx.unsupported(f"grid_sample of a {ctx.rank('input')}-D input before opset 20 (GridSample-16 is 2-D)")
    else:
        mode = _ONNX_GRID_MODE[mode]
    return ctx.op("GridSample", [ctx.input("input"), ctx.input("grid")], mode=mode, padding_mode=a["padding_mode"],
                  align_corners=int(bool(a["align_corners"])))


def _grid_sample_import(ctx, modes):
    """A GridSample node as grid_sample; ``modes`` maps the opset's mode names to torch's."""
    mode = ctx.attr("mode", "bilinear" if "bilinear" in modes else "linear")
    if mode not in modes:
        ctx.unsupported(f"GridSample mode {mode!r} at opset {ctx.opset}")
    return ctx.call("grid_sample", input=ctx.input(0), grid=ctx.input(1), mode=modes[mode],
                    padding_mode=ctx.attr("padding_mode", "zeros"), align_corners=bool(ctx.attr("align_corners", 0)))


@onnx_import("GridSample", since=16)
def _grid_sample_import_16(ctx):
    return _grid_sample_import(ctx, {m: m for m in _GRID_MODES})


@onnx_import("GridSample", since=20)
def _grid_sample_import_20(ctx):
    return _grid_sample_import(ctx, {v: k for k, v in _ONNX_GRID_MODE.items()})


# ---- cdist and pdist ----------------------------------------------------------------------------------------
_CDIST_MODES = ("use_mm_for_euclid_dist_if_necessary", "use_mm_for_euclid_dist", "donot_use_mm_for_euclid_dist")


def _aten_cdist(args, kwargs):
    """aten.cdist / aten._cdist_forward(x1, x2, p, compute_mode): compute_mode as a number (None: the default, 0)."""
    b = dict(zip(("x1", "x2", "p", "compute_mode"), args), **kwargs)
    mode = b.get("compute_mode")
    return (), {**b, "compute_mode": _CDIST_MODES[0 if mode is None else int(mode)]}


def _distance_flops(node):
    """Per output distance, over the M features (the input's last axis): a subtraction, a power (or |.|) and an
    add each: 3 M."""
    return 3 * shape(node.inputs[0])[-1] * out_numel(node)


def _cdist_uses_mm(p, mode, rows1, rows2) -> bool:
    """Does torch.cdist take the matrix-product form |a|^2 + |b|^2 - 2 a.b (p = 2 only)? Always with
    use_mm_for_euclid_dist, never with donot_use_mm..., and by default when either side has more than 25 rows."""
    if p != 2 or mode == "donot_use_mm_for_euclid_dist":
        return False
    if mode == "use_mm_for_euclid_dist":
        return True
    return not (isinstance(rows1, int) and isinstance(rows2, int) and rows1 <= 25 and rows2 <= 25)


@register("cdist", family="nn", functions=[torch.cdist],
          aten=[("cdist.default", _aten_cdist), ("_cdist_forward.default", _aten_cdist)],
          flops=_distance_flops, n_tensor_params=2)
def cdist(x1, x2, p=2.0, compute_mode="use_mm_for_euclid_dist_if_necessary"):
    """p-norm distance between each row of ``x1`` (B, P, M) and each row of ``x2`` (B, R, M): (B, P, R)."""
    return torch.cdist(x1, x2, p, compute_mode)


@onnx_lowering("cdist")
def _cdist_onnx(ctx, node):
    """Where torch multiplies matrices (p = 2, see ``_cdist_uses_mm``), so does the lowering, clamping the squared
    distance at 0 as torch does; otherwise the norm of the broadcast difference (B, P, 1, M) - (B, 1, R, M)."""
    a = node.args
    p, dt = float(a["p"]), ctx.out_spec().dtype
    x1, x2 = ctx.input("x1"), ctx.input("x2")
    s1, s2 = ctx.spec("x1").shape, ctx.spec("x2").shape
    if _cdist_uses_mm(p, a["compute_mode"], s1[-2], s2[-2]):
        n1 = reduce(ctx, "ReduceSumSquare", x1, [-1], 1)                                  # (B, P, 1)
        n2 = reduce(ctx, "ReduceSumSquare", x2, [-1], 1)                                  # (B, R, 1)
        r2 = len(s2)
        perm = list(range(r2 - 2)) + [r2 - 1, r2 - 2]
        prod = ctx.op("MatMul", [x1, ctx.op("Transpose", [x2], perm=perm)])               # (B, P, R)
        sq = ctx.op("Add", [ctx.op("Sub", [n1, ctx.op("Mul", [prod, ctx.const(2.0, dt)])]),
                            ctx.op("Transpose", [n2], perm=perm)])
        return ctx.op("Sqrt", [ctx.op("Max", [sq, ctx.const(0.0, dt)])])
    diff = ctx.op("Sub", [unsqueeze(ctx, x1, [-2]), unsqueeze(ctx, x2, [-3])])
    return _norm_p(ctx, diff, p, [-1], 0, dt)


def _aten_pdist(args, kwargs):
    """aten.pdist / aten._pdist_forward(input, p=2)."""
    return (), dict(zip(("input", "p"), args), **kwargs)


@register("pdist", family="nn", functions=[F.pdist],
          aten=[("pdist.default", _aten_pdist), ("_pdist_forward.default", _aten_pdist)], flops=_distance_flops)
def pdist(input, p=2.0):
    """p-norm distance of every pair of rows i < j of ``input`` (N, M): the upper triangle of cdist, (N(N-1)/2,)."""
    return F.pdist(input, p)


@onnx_lowering("pdist")
def _pdist_onnx(ctx, node):
    """The rows of each pair i < j gathered by constant index lists (row-major over the upper triangle, torch's
    order), subtracted, and their norm taken: torch computes the difference the same way."""
    n = ctx.spec("input").shape[0]
    if not isinstance(n, int):
        ctx.unsupported("pdist with a symbolic number of rows (the pair index lists are constants)")
    i, j = np.triu_indices(n, 1)
    x, dt = ctx.input("input"), ctx.out_spec().dtype
    diff = ctx.op("Sub", [ctx.op("Gather", [x, i64(ctx, i.tolist())], axis=0),
                          ctx.op("Gather", [x, i64(ctx, j.tolist())], axis=0)])
    return _norm_p(ctx, diff, float(node.args["p"]), [-1], 0, dt)


@onnx_import("CenterCropPad")
def _center_crop_pad_import(ctx):
    """Each of ``axes`` (all by default) cropped or zero-padded to its size in ``shape``, centred (an odd
    difference leaves the extra element at the end)."""
    import builtins

    x = ctx.input(0)
    r = ctx.rank(x)
    sizes = ctx.ints(1, run_time=True)
    axes = [int(a) % r for a in ctx.attr("axes", list(range(r)))]
    for a, want in zip(axes, sizes):
        have = ctx.size(x, a)
        if not (isinstance(want, int) and isinstance(have, int)):  # sizes known when it runs: pad, then crop
            diff = ctx.call("sub", input=want, other=have)
            grow = ctx.call("python_call", fn=builtins.max, args=[diff, 0])
            shrink = ctx.call("python_call", fn=builtins.max, args=[ctx.call("neg", input=diff), 0])
            before = ctx.call("floordiv", input=grow, other=2)
            pad = [0, 0] * (r - 1 - a) + [before, ctx.call("sub", input=grow, other=before)]
            x = ctx.call_unknown_shape("pad", input=x, pad=pad, mode="constant", value=0)
            start = ctx.call("floordiv", input=shrink, other=2)
            x = ctx.call("slice", input=x, dim=a, start=start, end=ctx.call("add", input=start, other=want))
        elif want < have:
            start = (have - want) // 2
            x = ctx.call("slice", input=x, dim=a, start=start, end=start + want)
        elif want > have:
            before = (want - have) // 2
            pad = [0, 0] * (r - 1 - a) + [before, want - have - before]
            x = ctx.call("pad", input=x, pad=pad, mode="constant", value=0)
    return x


@onnx_import("RotaryEmbedding")
def _rotary_embedding_import(ctx):
    """Rotary position embedding of a (batch, heads, seq, head) or (batch, seq, heads * head) input: the first
    ``rotary_embedding_dim`` features of each head (all by default) rotated by the cos/sin caches (indexed by
    ``position_ids`` when given), as pairs of halves or, ``interleaved``, of neighbours."""
    x, cos, sin = ctx.input(0), ctx.input(1), ctx.input(2)
    four_d = ctx.rank(x) == 4
    if four_d:
        x = ctx.call("transpose", input=x, dim0=1, dim1=2)  # (batch, seq, heads, head)
    else:
        heads = ctx.attr("num_heads")
        if not heads:
            ctx.unsupported("a 3-D input without num_heads")
        x = ctx.call("reshape", input=x, shape=[ctx.size(x, 0), ctx.size(x, 1), int(heads), -1])
    head = ctx.shape(x)[3]
    dim = int(ctx.attr("rotary_embedding_dim", 0)) or head
    if not isinstance(dim, int):
        ctx.unsupported("a symbolic head size without rotary_embedding_dim")
    rot = ctx.call("slice", input=x, dim=3, start=0, end=dim)
    if ctx.has(3):
        pos = ctx.input(3)
        cos, sin = (ctx.call("embedding", input=pos, weight=c) for c in (cos, sin))
    cos, sin = (ctx.call("unsqueeze", input=c, dim=2) for c in (cos, sin))
    interleaved = bool(ctx.attr("interleaved", 0))
    if interleaved:
        x1, x2 = (ctx.call("slice", input=rot, dim=3, start=s, end=dim, step=2) for s in (0, 1))
    else:
        x1, x2 = (ctx.call("slice", input=rot, dim=3, start=s, end=s + dim // 2) for s in (0, dim // 2))
    real = ctx.call("sub", input=ctx.call("mul", input=cos, other=x1), other=ctx.call("mul", input=sin, other=x2))
    imag = ctx.call("add", input=ctx.call("mul", input=sin, other=x1), other=ctx.call("mul", input=cos, other=x2))
    if interleaved:
        rot = ctx.call("flatten", input=ctx.call("stack", tensors=[real, imag], dim=-1), start_dim=3, end_dim=4)
    else:
        rot = ctx.call("cat", tensors=[real, imag], dim=-1)
    out = ctx.call("cat", tensors=[rot, ctx.call("slice", input=x, dim=3, start=dim, end=None)], dim=-1) \
        if isinstance(head, int) and dim < head else rot
    if four_d:
        return ctx.call("transpose", input=out, dim0=1, dim1=2)
    return ctx.call("reshape", input=out, shape=[ctx.size(out, 0), ctx.size(out, 1), -1])
