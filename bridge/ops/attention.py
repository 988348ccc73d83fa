"""Matrix products and attention."""
from __future__ import annotations

import math
import operator

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._util import numel, out_numel, shape
from .registry import Attr, register


def _matmul_flops(node):
    a = shape(node.args.get("input"))
    k = a[-1] if a else 0
    return 2 * k * out_numel(node)


@register("matmul", family="attention", functions=[torch.matmul, operator.matmul],
          methods=["matmul", "__matmul__"], aten=["matmul.default"], flops=_matmul_flops, n_tensor_params=2)
def matmul(input, other):
    """input @ other with broadcasting."""
    return torch.matmul(input, other)


@register("mm", family="attention", functions=[torch.mm], methods=["mm"], aten=["mm.default"],
          flops=_matmul_flops, n_tensor_params=2)
def mm(input, mat2):
    return torch.mm(input, mat2)


@register("bmm", family="attention", functions=[torch.bmm], methods=["bmm"], aten=["bmm.default"],
          flops=_matmul_flops, n_tensor_params=2)
def bmm(input, mat2):
    return torch.bmm(input, mat2)


def _addmm_flops(node):
    k = shape(node.args.get("mat1"))[-1:] or (0,)
    return 2 * k[0] * out_numel(node) + out_numel(node)


@register("addmm", family="attention", functions=[torch.addmm], methods=["addmm"], aten=["addmm.default"],
          flops=_addmm_flops, n_tensor_params=3)
def addmm(input, mat1, mat2, beta=1, alpha=1):
    """beta * input + alpha * (mat1 @ mat2)."""
    return torch.addmm(input, mat1, mat2, beta=beta, alpha=alpha)


@register("baddbmm", family="attention", functions=[torch.baddbmm], methods=["baddbmm"], aten=["baddbmm.default"],
          flops=_addmm_flops, n_tensor_params=3)
def baddbmm(input, batch1, batch2, beta=1, alpha=1):
    return torch.baddbmm(input, batch1, batch2, beta=beta, alpha=alpha)


def _einsum_adapter(args, kwargs):
    eq, *ops = args
    if len(ops) == 1 and isinstance(ops[0], (list, tuple)):
        ops = ops[0]
    return (eq, list(ops)), kwargs


def _einsum_flops(node):
    """2 * product of the sizes of every distinct index letter (the naive contraction)."""
    eq = node.args["equation"].replace(" ", "")
    lhs = eq.split("->")[0].split(",")
    sizes = {}
    for term, v in zip(lhs, node.args["operands"]):
        dims = shape(v)
        letters = [c for c in term if c.isalpha()]
        if "..." in term:
            continue
        for c, d in zip(letters, dims):
            sizes[c] = d
    return 2 * math.prod(sizes.values()) if sizes else 0


@register("einsum", family="attention", functions=[(torch.einsum, _einsum_adapter)], aten=["einsum.default"],
          flops=_einsum_flops)
def einsum(equation, operands):
    return torch.einsum(equation, *operands)


def _sdpa_flops(node):
    q, k = shape(node.args["query"]), shape(node.args["key"])
    if not q or not k:
        return 0
    batch = math.prod(q[:-2])
    lq, e, lk = q[-2], q[-1], k[-2]
    ev = shape(node.args["value"])[-1]
    return 2 * batch * lq * lk * e + 2 * batch * lq * lk * ev  # QK^T and (softmax) V, as FlopCounterMode


_SDPA_KW = {"enable_gqa"} if "enable_gqa" in str(getattr(F.scaled_dot_product_attention, "__doc__", "")) else set()


@register("scaled_dot_product_attention", family="attention", functions=[F.scaled_dot_product_attention],
          aten=["scaled_dot_product_attention.default"], flops=_sdpa_flops, n_tensor_params=4)
def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False):
    """softmax(Q K^T * scale + mask) V."""
    if enable_gqa:
        return F.scaled_dot_product_attention(query, key, value, attn_mask, dropout_p, is_causal, scale=scale,
                                              enable_gqa=True)
    return F.scaled_dot_product_attention(query, key, value, attn_mask, dropout_p, is_causal, scale=scale)


def _mha_module(m, args, kwargs):
    names = ["query", "key", "value", "key_padding_mask", "need_weights", "attn_mask", "average_attn_weights",
             "is_causal"]
    call = dict(zip(names, args), **kwargs)
    sep = not m._qkv_same_embed_dim
    return (), {**call,
                "in_proj_weight": None if sep else Attr("in_proj_weight"),
                "in_proj_bias": Attr("in_proj_bias") if m.in_proj_bias is not None else None,
                "out_proj_weight": Attr("out_proj.weight"),
                "out_proj_bias": Attr("out_proj.bias") if m.out_proj.bias is not None else None,
                "num_heads": m.num_heads, "embed_dim": m.embed_dim, "batch_first": m.batch_first,
                "q_proj_weight": Attr("q_proj_weight") if sep else None,
                "k_proj_weight": Attr("k_proj_weight") if sep else None,
                "v_proj_weight": Attr("v_proj_weight") if sep else None,
                "bias_k": Attr("bias_k") if m.bias_k is not None else None,
                "bias_v": Attr("bias_v") if m.bias_v is not None else None,
                "add_zero_attn": m.add_zero_attn, "dropout": m.dropout, "training": m.training}


def _mha_flops(node):
    a = node.args
    q, k = shape(a["query"]), shape(a["key"])
    if not q:
        return 0
    e = a["embed_dim"]
    if a["batch_first"] and len(q) == 3:
        b, lq, lk = q[0], q[1], k[1]
    elif len(q) == 3:
        lq, b, lk = q[0], q[1], k[0]
    else:
        b, lq, lk = 1, q[0], k[0]
    proj = 2 * e * e * (b * lq + 2 * b * lk) + 2 * e * e * b * lq   # q, k, v and output projections
    attn = 2 * b * lq * lk * e * 2                                     # QK^T and AV over all heads
    return proj + attn


@register("multi_head_attention", family="attention", modules={nn.MultiheadAttention: _mha_module},
          flops=_mha_flops, n_tensor_params=3)
def multi_head_attention(query, key, value, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias,
                         num_heads, embed_dim, batch_first=False, key_padding_mask=None, need_weights=True,
                         attn_mask=None, average_attn_weights=True, is_causal=False, q_proj_weight=None,
                         k_proj_weight=None, v_proj_weight=None, bias_k=None, bias_v=None, add_zero_attn=False,
                         dropout=0.0, training=False):
    """nn.MultiheadAttention as one op: (attn_output, attn_weights or None)."""
    batched = query.dim() == 3
    if batch_first and batched:
        if key is value:
            if query is key:
                query = key = value = query.transpose(1, 0)
            else:
                query, key = (x.transpose(1, 0) for x in (query, key))
                value = key
        else:
            query, key, value = (x.transpose(1, 0) for x in (query, key, value))
    sep = q_proj_weight is not None
    out, weights = F.multi_head_attention_forward(
        query, key, value, embed_dim, num_heads, in_proj_weight, in_proj_bias, bias_k, bias_v, add_zero_attn,
        dropout, out_proj_weight, out_proj_bias, training=training, key_padding_mask=key_padding_mask,
        need_weights=need_weights, attn_mask=attn_mask, use_separate_proj_weight=sep, q_proj_weight=q_proj_weight,
        k_proj_weight=k_proj_weight, v_proj_weight=v_proj_weight, average_attn_weights=average_attn_weights,
        is_causal=is_causal)
    if batch_first and batched:
        out = out.transpose(1, 0)
    return out, weights
