"""Fold an eval-mode batchnorm into the conv or linear before it (``conv -> bn`` becomes one conv).

    y = (conv(x, w) + b - mean) / sqrt(var + eps) * gamma + beta
      = conv(x, w * s) + (b - mean) * s + beta          with s = gamma / sqrt(var + eps)
"""
from __future__ import annotations

import torch

from ..ir.graph import Deferred, Graph, Value
from . import register_pass


def _const(a) -> torch.Tensor | None:
    return a.const if isinstance(a, Value) and a.is_const else None


@register_pass("fuse_bn")
def fuse_bn(g: Graph) -> tuple[Graph, bool]:
    changed = False
    renames: list[tuple[Value, str]] = []
    for bn in list(g.nodes):
        if bn.op != "batch_norm" or bn.args.get("training"):
            continue
        src = bn.args["input"]
        prod = src.producer if isinstance(src, Value) else None
        if prod is None or prod.op not in ("conv", "linear") or len(src.users) != 1 or src.meta.get("is_output"):
            continue
        mean, var = _const(bn.args["running_mean"]), _const(bn.args["running_var"])
        w = _const(prod.args["weight"])
        if mean is None or var is None or w is None:
            continue
        b0 = prod.args.get("bias")
        if b0 is not None and _const(b0) is None:
            continue
        gamma = _const(bn.args.get("weight")) if bn.args.get("weight") is not None else torch.ones_like(mean)
        beta = _const(bn.args.get("bias")) if bn.args.get("bias") is not None else torch.zeros_like(mean)
        if gamma is None or beta is None:
            continue
        if prod.op == "linear" and (src.spec.rank != 2 or w.shape[0] != mean.shape[0]):
            continue  # BatchNorm1d over (N, C) only
        with torch.no_grad():
            scale = gamma / torch.sqrt(var + bn.args["eps"])
            b = _const(b0) if b0 is not None else torch.zeros_like(mean)
            b_new = (b - mean) * scale + beta
        # the fused weight is as big as the layer's own: computed when read (the ONNX writer computes each as it
        # writes it), so an export holds no second copy of the model's weights
        w_new = Deferred(lambda w=w, s=scale.reshape(-1, *([1] * (w.dim() - 1))): (w * s).to(w.dtype), w.shape,
                         w.dtype)
        wname = prod.args["weight"].name
        bname = b0.name if b0 is not None else wname.rsplit(".", 1)[0] + ".bias"
        # the fused tensors are the layer's weights now: parameters under the layer's names, unless another node
        # still reads the layer's own (a tied weight): then both stay, the fused ones under names of their own
        shared = [n for v in (prod.args["weight"], b0) if isinstance(v, Value) for n in v.users if n is not prod]
        wnames, bnames = ([wname + "_fused"], [bname + "_fused"]) if shared else ([wname], [bname])
        wv = g.add_constant(wname + "_fused", w_new, kind="param", names=wnames)
        bv = g.add_constant(bname + "_fused", b_new.to(w.dtype), kind="param", names=bnames)
        args = dict(prod.args)
        args["weight"], args["bias"] = wv, bv
        g.set_args(prod, args)
        g.replace_all_uses(bn.outputs[0], prod.outputs[0])
        g.erase_node(bn)
        if not shared:
            renames += [(wv, wname), (bv, bname)]
        prod.meta.setdefault("fused", []).append(bn.describe())
        changed = True
    if changed:  # once, not per fusion (each sweep is over every constant): then the layer names are free
        g.remove_unused_constants()
        for v, name in renames:
            g.rename(v, name)
    return g, changed
