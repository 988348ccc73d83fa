"""Layers: linear, convolution, pooling, normalization, embedding, resampling, padding, softmax."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._util import no_out, numel, out_numel, per_input, per_output, shape, zero
from .registry import Attr, register


def _mod(fn):
    """Module adapter from a function of the module giving extra keyword arguments."""
    return lambda m, args, kwargs: (args, {**kwargs, **fn(m)})


# ---- linear ---------------------------------------------------------------------------------------
def _linear_flops(node):
    w = node.args["weight"]
    in_f = shape(w)[-1] if shape(w) else 0
    return 2 * in_f * out_numel(node) + (out_numel(node) if node.args.get("bias") is not None else 0)


@register("linear", family="nn", functions=[F.linear], aten=["linear.default"],
          modules={nn.Linear: lambda m, a, kw: (a, {**kw, "weight": Attr("weight"),
                                                     "bias": Attr("bias") if m.bias is not None else None})},
          flops=_linear_flops, n_tensor_params=3)
def linear(input, weight, bias=None):
    """input @ weight.T + bias."""
    return F.linear(input, weight, bias)


@register("bilinear", family="nn", functions=[F.bilinear], aten=["bilinear.default"],
          modules={nn.Bilinear: lambda m, a, kw: (a, {**kw, "weight": Attr("weight"),
                                                       "bias": Attr("bias") if m.bias is not None else None})},
          flops=lambda n: 2 * math.prod(shape(n.args["weight"])[1:]) * out_numel(n), n_tensor_params=4)
def bilinear(input1, input2, weight, bias=None):
    return F.bilinear(input1, input2, weight, bias)


@register("identity", family="nn", modules={nn.Identity: lambda m, a, kw: (a[:1], {})}, flops=zero)
def identity(input):
    """Returns its input."""
    return input


# ---- convolution ----------------------------------------------------------------------------------
def _conv_flops(node):
    w = shape(node.args["weight"])
    if not w:
        return 0
    per_out = 2 * math.prod(w[1:])  # Cin/groups * prod(kernel), a multiply-add each
    return per_out * out_numel(node) + (out_numel(node) if node.args.get("bias") is not None else 0)


def _conv_transpose_flops(node):
    w = shape(node.args["weight"])  # (Cin, Cout/groups, *k)
    if not w:
        return 0
    return 2 * math.prod(w[1:]) * numel(node.args["input"]) + (
        out_numel(node) if node.args.get("bias") is not None else 0)


def _conv_module(m, args, kwargs):
    return args, {**kwargs, "weight": Attr("weight"), "bias": Attr("bias") if m.bias is not None else None,
                  "stride": m.stride, "padding": m.padding, "dilation": m.dilation, "groups": m.groups,
                  "padding_mode": m.padding_mode}


_CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONVT_FN = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


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
          flops=_conv_flops, n_tensor_params=3)
def conv(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"):
    """N-d convolution (N = weight.dim() - 2); ``padding_mode`` other than zeros pads first, as nn.ConvNd."""
    n = weight.dim() - 2
    if padding_mode != "zeros":
        pad = (padding,) * n if isinstance(padding, int) else tuple(padding)
        input = F.pad(input, [p for p in reversed(pad) for _ in range(2)], mode=padding_mode)
        padding = 0
    return _CONV_FN[n](input, weight, bias, stride, padding, dilation, groups)


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
          flops=_conv_transpose_flops, n_tensor_params=3)
def conv_transpose(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """N-d transposed convolution (N = weight.dim() - 2)."""
    return _CONVT_FN[weight.dim() - 2](input, weight, bias, stride, padding, output_padding, groups, dilation)


# ---- pooling --------------------------------------------------------------------------------------
def _pool_flops(node):
    k = node.args.get("kernel_size", 1)
    kk = math.prod(k) if isinstance(k, (tuple, list)) else k ** int(node.op[-2])
    return kk * out_numel(node)


def _with_indices(args, kwargs):
    """aten max_pool*_with_indices / adaptive_max_pool* return (values, indices) always."""
    return args, {**kwargs, "return_indices": True}


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
             aten=[f"avg_pool{n}d.default"], modules={mod: _mod(from_module)}, flops=_pool_flops)(impl)


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
             flops=per_input(1))(impl)


for _n in (1, 2, 3):
    _make_max_pool(_n)
    _make_avg_pool(_n)
    _make_adaptive("avg", _n)
    _make_adaptive("max", _n)


@register("lp_pool2d", family="nn", functions=[F.lp_pool2d],
          modules={nn.LPPool2d: _mod(lambda m: dict(norm_type=m.norm_type, kernel_size=m.kernel_size,
                                                    stride=m.stride, ceil_mode=m.ceil_mode))},
          flops=per_input(2))
def lp_pool2d(input, norm_type, kernel_size, stride=None, ceil_mode=False):
    return F.lp_pool2d(input, norm_type, kernel_size, stride, ceil_mode)


# ---- normalization --------------------------------------------------------------------------------
def _bn_module(m, args, kwargs):
    training = m.training or (m.running_mean is None and m.running_var is None)
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
    return (), {**b, "training": False}, (lambda out: (out, None, None))


def _bn_flops(node):
    return (4 if node.args.get("weight") is not None else 2) * out_numel(node)


@register("batch_norm", family="nn", functions=[F.batch_norm],
          aten=[("batch_norm.default", _aten_batch_norm),
                ("_native_batch_norm_legit_no_training.default", _aten_bn_no_training)],
          modules={c: _bn_module for c in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)},
          flops=_bn_flops, n_tensor_params=5)
def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
               eps=1e-5):
    """Batch normalization; in training mode the running stats are updated in place, as nn.BatchNorm."""
    return F.batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)


def _aten_layer_norm(args, kwargs):
    """aten.layer_norm(input, normalized_shape, weight, bias, eps, cudnn_enable): drop ``cudnn_enable``."""
    return tuple(args[:5]), {k: v for k, v in kwargs.items() if k != "cudnn_enable"}


@register("layer_norm", family="nn", functions=[F.layer_norm], aten=[("layer_norm.default", _aten_layer_norm)],
          modules={nn.LayerNorm: _mod(lambda m: dict(
              normalized_shape=tuple(m.normalized_shape),
              weight=Attr("weight") if m.weight is not None else None,
              bias=Attr("bias") if getattr(m, "bias", None) is not None else None, eps=m.eps))},
          flops=per_output(5), n_tensor_params=1)
def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    return F.layer_norm(input, normalized_shape, weight, bias, eps)


def _aten_group_norm(args, kwargs):
    """aten.group_norm(input, num_groups, weight, bias, eps, cudnn_enabled): drop ``cudnn_enabled``."""
    return tuple(args[:5]), {k: v for k, v in kwargs.items() if k != "cudnn_enabled"}


@register("group_norm", family="nn", functions=[F.group_norm], aten=[("group_norm.default", _aten_group_norm)],
          modules={nn.GroupNorm: _mod(lambda m: dict(
              num_groups=m.num_groups, weight=Attr("weight") if m.affine else None,
              bias=Attr("bias") if m.affine else None, eps=m.eps))},
          flops=per_output(5))
def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    return F.group_norm(input, num_groups, weight, bias, eps)


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
          flops=per_output(5))
def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True,
                  momentum=0.1, eps=1e-5):
    return F.instance_norm(input, running_mean, running_var, weight, bias, use_input_stats, momentum, eps)


if hasattr(F, "rms_norm"):
    @register("rms_norm", family="nn", functions=[F.rms_norm], aten=["rms_norm.default"],
              modules={nn.RMSNorm: _mod(lambda m: dict(normalized_shape=tuple(m.normalized_shape),
                                                       weight=Attr("weight") if m.weight is not None else None,
                                                       eps=m.eps))},
              flops=per_output(4))
    def rms_norm(input, normalized_shape, weight=None, eps=None):
        return F.rms_norm(input, normalized_shape, weight, eps)


@register("local_response_norm", family="nn", functions=[F.local_response_norm],
          modules={nn.LocalResponseNorm: _mod(lambda m: dict(size=m.size, alpha=m.alpha, beta=m.beta, k=m.k))},
          flops=per_output(6))
def local_response_norm(input, size, alpha=1e-4, beta=0.75, k=1.0):
    return F.local_response_norm(input, size, alpha, beta, k)


@register("normalize", family="nn", functions=[(F.normalize, no_out)], flops=per_output(3))
def normalize(input, p=2.0, dim=1, eps=1e-12):
    """input / max(||input||_p along dim, eps)."""
    return F.normalize(input, p, dim, eps)


# ---- softmax --------------------------------------------------------------------------------------
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


@register("log_softmax", family="nn", functions=[(F.log_softmax, _drop_stacklevel), torch.log_softmax],
          methods=["log_softmax"],
          aten=["log_softmax.int", ("_log_softmax.default", _aten_softmax)],
          modules={nn.LogSoftmax: _mod(lambda m: dict(dim=m.dim))}, flops=per_output(5))
def log_softmax(input, dim=None, dtype=None):
    return F.log_softmax(input, dim, dtype=dtype)


# ---- embedding ------------------------------------------------------------------------------------
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


def _embedding_bag_module(m):
    if m.max_norm is not None or m.include_last_offset:
        raise NotImplementedError("nn.EmbeddingBag with max_norm or include_last_offset")
    return dict(weight=Attr("weight"), mode=m.mode, padding_idx=m.padding_idx)


@register("embedding", family="nn", functions=[(F.embedding, _embedding_fn)],
          aten=[("embedding.default", _aten_embedding)],
          modules={nn.Embedding: _mod(_embedding_module)},
          flops=zero, n_tensor_params=2)
def embedding(input, weight, padding_idx=None):
    """Rows of ``weight`` at ``input`` indices."""
    return F.embedding(input, weight, padding_idx)


@register("embedding_bag", family="nn",
          modules={nn.EmbeddingBag: _mod(_embedding_bag_module)},
          flops=per_output(1), n_tensor_params=3)
def embedding_bag(input, offsets=None, weight=None, mode="mean", per_sample_weights=None, padding_idx=None):
    return F.embedding_bag(input, weight, offsets, mode=mode, per_sample_weights=per_sample_weights,
                           padding_idx=padding_idx)


@register("one_hot", family="nn", functions=[F.one_hot], aten=["one_hot.default"], flops=zero)
def one_hot(input, num_classes=-1):
    return F.one_hot(input, num_classes)


# ---- resampling and padding -----------------------------------------------------------------------
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


@register("interpolate", family="nn", functions=[F.interpolate, F.upsample,
                                                 (F.upsample_nearest, _upsample_fixed("nearest", None)),
                                                 (F.upsample_bilinear, _upsample_fixed("bilinear", True))],
          modules={c: _mod(_upsample_module) for c in (nn.Upsample, nn.UpsamplingNearest2d,
                                                       nn.UpsamplingBilinear2d)},
          aten=[("upsample_nearest2d.vec", lambda a, k: ((a[0],), {"size": a[1], "scale_factor": a[2],
                                                                    "mode": "nearest"})),
                ("upsample_bilinear2d.vec", lambda a, k: ((a[0],), {"size": a[1], "align_corners": a[2],
                                                                     "scale_factor": a[3], "mode": "bilinear"}))],
          flops=per_output(4))
def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False):
    return F.interpolate(input, size, scale_factor, mode, align_corners, recompute_scale_factor, antialias)


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


@register("pad", family="nn", functions=[F.pad, (torch.constant_pad_nd, _constant_pad_nd)],
          aten=[("constant_pad_nd.default", _constant_pad_nd), ("pad.default", None)], modules=_PAD_MODULES,
          flops=zero)
def pad(input, pad, mode="constant", value=None):
    """Pad the last dims by ``pad`` = (left, right, top, bottom, ...)."""
    if mode == "constant":
        return F.pad(input, pad, mode, 0.0 if value is None else value)
    return F.pad(input, pad, mode)


@register("pixel_shuffle", family="nn", functions=[F.pixel_shuffle], aten=["pixel_shuffle.default"],
          modules={nn.PixelShuffle: _mod(lambda m: dict(upscale_factor=m.upscale_factor))}, flops=zero)
def pixel_shuffle(input, upscale_factor):
    return F.pixel_shuffle(input, upscale_factor)


@register("pixel_unshuffle", family="nn", functions=[F.pixel_unshuffle], aten=["pixel_unshuffle.default"],
          modules={nn.PixelUnshuffle: _mod(lambda m: dict(downscale_factor=m.downscale_factor))}, flops=zero)
def pixel_unshuffle(input, downscale_factor):
    return F.pixel_unshuffle(input, downscale_factor)


@register("channel_shuffle", family="nn", functions=[F.channel_shuffle] if hasattr(F, "channel_shuffle") else [],
          modules={nn.ChannelShuffle: _mod(lambda m: dict(groups=m.groups))}, flops=zero)
def channel_shuffle(input, groups):
    b, c = input.shape[0], input.shape[1]
    return input.reshape(b, groups, c // groups, *input.shape[2:]).transpose(1, 2).reshape(input.shape)


@register("unfold", family="nn", functions=[F.unfold],
          modules={nn.Unfold: _mod(lambda m: dict(kernel_size=m.kernel_size, dilation=m.dilation,
                                                  padding=m.padding, stride=m.stride))}, flops=zero)
def unfold(input, kernel_size, dilation=1, padding=0, stride=1):
    """im2col: sliding local blocks."""
    return F.unfold(input, kernel_size, dilation, padding, stride)


@register("fold", family="nn", functions=[F.fold],
          modules={nn.Fold: _mod(lambda m: dict(output_size=m.output_size, kernel_size=m.kernel_size,
                                                dilation=m.dilation, padding=m.padding, stride=m.stride))},
          flops=per_input(1))
def fold(input, output_size, kernel_size, dilation=1, padding=0, stride=1):
    """col2im: sums sliding local blocks into a tensor."""
    return F.fold(input, output_size, kernel_size, dilation, padding, stride)


@register("cosine_similarity", family="nn", functions=[F.cosine_similarity, torch.cosine_similarity],
          modules={nn.CosineSimilarity: _mod(lambda m: dict(dim=m.dim, eps=m.eps))}, flops=per_input(6),
          n_tensor_params=2)
def cosine_similarity(x1, x2, dim=1, eps=1e-8):
    return F.cosine_similarity(x1, x2, dim, eps)


@register("pairwise_distance", family="nn", functions=[F.pairwise_distance, torch.pairwise_distance],
          modules={nn.PairwiseDistance: _mod(lambda m: dict(p=m.norm, eps=m.eps, keepdim=m.keepdim))},
          flops=per_input(3), n_tensor_params=2)
def pairwise_distance(x1, x2, p=2.0, eps=1e-6, keepdim=False):
    return F.pairwise_distance(x1, x2, p, eps, keepdim)
