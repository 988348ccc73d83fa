"""Matrix products and attention."""
from __future__ import annotations

import math
import operator

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ir.graph import Value
from ..ir.spec import TensorSpec
from ._util import out_numel, shape
from .onnx_helpers import i64, reduce, slice_, squeeze, transpose, unsqueeze
from .registry import Attr, onnx_import, onnx_lowering, register


# ---- family-wide helpers: attention as softmax(Q K^T * scale + mask) V, explicit, as torch's math reference
def _causal_mask(ctx, q, k, r, dt, static_ls=None):
    """(L, S) additive mask, -inf above the diagonal (top-left aligned, as torch's is_causal): a constant when
    both lengths are known, else built at run time with Trilu."""
    if static_ls is not None:
        return ctx.const(torch.full(static_ls, -math.inf, dtype=dt).triu(1), dt)
    ls = ctx.op("Concat", [ctx.op("Shape", [q], start=r - 2, end=r - 1), ctx.op("Shape", [k], start=r - 2,
                                                                               end=r - 1)], axis=0)
    neg = ctx.op("Expand", [ctx.const(-math.inf, dt), ls])
    return ctx.op("Trilu", [neg, ctx.const(1, torch.int64)], upper=1)


def _attend(ctx, q, k, v, r, dt, scale, mask=None, bool_mask=False, causal=False, safe=True, weights=False,
            static_ls=None):
    """softmax(q k^T * scale [+ mask]) v over rank-``r`` operands; with ``safe`` a row whose scores are all -inf
    gives zeros (torch's _safe_softmax), else NaN (plain softmax). ``static_ls``: (L, S) when both are known.
    Returns (out, attention weights)."""
    s = ctx.op("MatMul", [q, transpose(ctx, k, list(range(r - 2)) + [r - 1, r - 2])])
    s = ctx.op("Mul", [s, ctx.const(float(scale), dt)]) if not isinstance(scale, str) else ctx.op("Mul", [s, scale])
    masked = mask is not None or causal
    if causal:
        s = ctx.op("Add", [s, _causal_mask(ctx, q, k, r, dt, static_ls)])
    if mask is not None:
        s = ctx.op("Where", [mask, s, ctx.const(-math.inf, dt)]) if bool_mask else ctx.op("Add", [s, mask])
    p = ctx.op("Softmax", [s], axis=-1)
    if safe and masked:
        dead = ctx.op("Equal", [reduce(ctx, "ReduceMax", s, [-1], True), ctx.const(-math.inf, dt)])
        p = ctx.op("Where", [dead, ctx.const(0.0, dt), p])
    return ctx.op("MatMul", [p, v]), (p if weights else None)


# ---- matrix products: matmul, mm, bmm -------------------------------------------------------------------
def _matmul_macs(node):
    a = shape(node.args.get("input"))
    k = a[-1] if a else 0
    return k * out_numel(node)  # every output element is a dot product over the shared dim k


def _matmul_flops(node):
    return 2 * _matmul_macs(node)


def _matmul_onnx(ctx, node):
    a, b = list(node.args)[:2]
    if ctx.rank(b) == 1 and ctx.rank(a) >= 2:
        # matrix @ vector as matrix @ column: onnxruntime (1.32 at least) fuses a Transpose feeding MatMul's first
        # input into FusedMatMul and gets the result wrong when the second input is 1-D (MatmulTransposeFusion)
        col = ctx.op("MatMul", [ctx.input(a), unsqueeze(ctx, ctx.input(b), [1])])
        return squeeze(ctx, col, [-1])
    return ctx.op("MatMul", [ctx.input(a), ctx.input(b)])


@register("matmul", family="attention", functions=[torch.matmul, operator.matmul],
          methods=["matmul", "__matmul__"], aten=["matmul.default"], flops=_matmul_flops, macs=_matmul_macs,
          n_tensor_params=2, fresh_output=True, contiguous_output=True)
def matmul(input, other):
    """input @ other with broadcasting."""
    return torch.matmul(input, other)


onnx_lowering("matmul")(_matmul_onnx)


@onnx_import("MatMul")
def _matmul_import(ctx):
    return ctx.call("matmul", input=ctx.input(0), other=ctx.input(1))


@register("mm", family="attention", functions=[torch.mm], methods=["mm"], aten=["mm.default"],
          flops=_matmul_flops, macs=_matmul_macs, n_tensor_params=2, contiguous_output=True)
def mm(input, mat2):
    return torch.mm(input, mat2)


onnx_lowering("mm")(_matmul_onnx)


@register("bmm", family="attention", functions=[torch.bmm], methods=["bmm"], aten=["bmm.default"],
          flops=_matmul_flops, macs=_matmul_macs, n_tensor_params=2, fresh_output=True, contiguous_output=True)
def bmm(input, mat2):
    return torch.bmm(input, mat2)


onnx_lowering("bmm")(_matmul_onnx)


# ---- addmm, baddbmm: beta * input + alpha * (mat1 @ mat2) -------------------------------------------------
def _addmm_macs(node):
    m1 = node.args.get("mat1", node.args.get("batch1"))
    k = shape(m1)[-1:] or (0,)
    return k[0] * out_numel(node)


def _addmm_flops(node):
    return 2 * _addmm_macs(node) + out_numel(node)  # the product, then beta * input added


def _scaled(ctx, x, s, dt):
    """x * s for a python number or run-time scalar ``s`` (no node when s == 1)."""
    if isinstance(s, Value):
        return ctx.op("Mul", [x, ctx.cast(ctx.input(s), dt) if ctx.dtype(s) != dt else ctx.input(s)])
    if s == 1:
        return x
    return ctx.op("Mul", [x, ctx.const(s, dt)])


def _addmm_lowering(m1, m2):
    def lower(ctx, node):
        a = node.args
        alpha, beta, dt = a["alpha"], a["beta"], ctx.out_spec().dtype
        consts = not isinstance(alpha, Value) and not isinstance(beta, Value)
        if (node.op == "addmm" and consts and dt in (torch.float32, torch.float64, torch.float16) and beta != 0
                and ctx.rank("input") <= 2):
            return ctx.op("Gemm", [ctx.input(m1), ctx.input(m2), ctx.input("input")], alpha=float(alpha),
                          beta=float(beta))
        prod = _scaled(ctx, ctx.op("MatMul", [ctx.input(m1), ctx.input(m2)]), alpha, dt)
        if not isinstance(beta, Value) and beta == 0:  # torch ignores input then (nan and inf included)
            return prod
        return ctx.op("Add", [_scaled(ctx, ctx.input("input"), beta, dt), prod])
    return lower


@register("addmm", family="attention", functions=[torch.addmm], methods=["addmm"], aten=["addmm.default"],
          flops=_addmm_flops, macs=_addmm_macs, n_tensor_params=3, fresh_output=True, contiguous_output=True)
def addmm(input, mat1, mat2, beta=1, alpha=1):
    """beta * input + alpha * (mat1 @ mat2)."""
    return torch.addmm(input, mat1, mat2, beta=beta, alpha=alpha)


onnx_lowering("addmm")(_addmm_lowering("mat1", "mat2"))


@register("baddbmm", family="attention", functions=[torch.baddbmm], methods=["baddbmm"], aten=["baddbmm.default"],
          flops=_addmm_flops, macs=_addmm_macs, n_tensor_params=3, contiguous_output=True)
def baddbmm(input, batch1, batch2, beta=1, alpha=1):
    return torch.baddbmm(input, batch1, batch2, beta=beta, alpha=alpha)


onnx_lowering("baddbmm")(_addmm_lowering("batch1", "batch2"))


# ---- einsum ---------------------------------------------------------------------------------------------
def _einsum_adapter(args, kwargs):
    eq, *ops = args
    if len(ops) == 1 and isinstance(ops[0], (list, tuple)):
        ops = ops[0]
    return (eq, list(ops)), kwargs


def _einsum_terms(node):
    """Operand terms and output term as lists of labels, ``...`` expanded into one label per broadcast dim
    (right-aligned across operands), and each label's size (the largest, as broadcasting gives)."""
    eq = node.args["equation"].replace(" ", "")
    lhs, rhs = eq.split("->") if "->" in eq else (eq, None)
    ops = list(node.args["operands"])
    terms, sizes = [], {}
    n_ell = 0
    for term, v in zip(lhs.split(","), ops):
        n_ell = max(n_ell, len(shape(v)) - len(term.replace("...", "")))
    for term, v in zip(lhs.split(","), ops):
        dims = shape(v)
        if "..." in term:
            head, tail = term.split("...")
            k = len(dims) - len(head) - len(tail)
            labels = list(head) + [f"...{n_ell - k + i}" for i in range(k)] + list(tail)
        else:
            labels = list(term)
        for lab, d in zip(labels, dims):
            sizes[lab] = max(sizes.get(lab, 1), d)
        terms.append(labels)
    ell = [f"...{i}" for i in range(n_ell)]
    if rhs is None:  # implicit output: broadcast dims, then the labels seen once, in alphabetical order
        counts = {}
        for t in terms:
            for lab in t:
                counts[lab] = counts.get(lab, 0) + 1
        out = ell + sorted(lab for lab, c in counts.items() if c == 1 and not lab.startswith("..."))
    else:
        head, _, tail = rhs.partition("...")
        out = list(head) + (ell if "..." in rhs else []) + list(tail)
    return terms, out, sizes


def _einsum_steps(node):
    """The pairwise products ``torch.einsum`` performs: ``(labels of both operands, contracts)`` per step.
    Left to right, or along opt_einsum's path when torch uses it (three operands or more, opt_einsum
    installed and enabled). A step contracts when a label of both operands is summed away (a batched
    matmul); otherwise it is an elementwise (outer) product."""
    terms, out, sizes = _einsum_terms(node)
    path = [(0, 1)] * (len(terms) - 1)
    oe = torch.backends.opt_einsum
    if len(terms) >= 3 and oe.is_available() and oe.enabled:
        letters = {lab: chr(ord("a") + i) if i < 26 else chr(ord("A") + i - 26)
                   for i, lab in enumerate(dict.fromkeys(lab for t in terms for lab in t))}
        eq = ",".join("".join(letters[lab] for lab in t) for t in terms) + "->" + "".join(letters[lab] for lab in out)
        path, _ = oe.get_opt_einsum().contract_path(eq, *[tuple(sizes[lab] for lab in t) for t in terms],
                                                   shapes=True, optimize=oe.strategy)
    ops, steps = list(terms), []
    for pair in path:
        if len(pair) != 2:
            continue
        i, j = sorted(pair)
        a, b = ops[i], ops[j]
        del ops[j], ops[i]
        later = set(out).union(*ops)
        joint = list(dict.fromkeys(a + b))
        steps.append(([sizes[lab] for lab in joint], bool((set(a) & set(b)) - later)))
        ops.append([lab for lab in joint if lab in later])
    return steps


def _einsum_macs(node):
    """A contraction step costs the product of the sizes of all labels of its two operands."""
    return sum(math.prod(s) for s, contracts in _einsum_steps(node) if contracts)


def _einsum_flops(node):
    """2 per multiply-add of the contractions, 1 per element of an elementwise (outer) product step; one
    operand alone (a sum or a transpose): 1 per summed element."""
    terms, out, sizes = _einsum_terms(node)
    if len(terms) == 1:
        return math.prod(sizes[lab] for lab in terms[0]) if set(terms[0]) - set(out) else 0
    return sum((2 if contracts else 1) * math.prod(s) for s, contracts in _einsum_steps(node))


@register("einsum", family="attention", functions=[(torch.einsum, _einsum_adapter)], aten=["einsum.default"],
          flops=_einsum_flops, macs=_einsum_macs, fresh_output=True)
def einsum(equation, operands):
    return torch.einsum(equation, *operands)


@onnx_lowering("einsum")
def _einsum_onnx(ctx, node):
    eq = node.args["equation"].replace(" ", "")
    letters = sorted({c for c in eq if c.isalpha()})
    if any(c.isupper() for c in letters):  # onnxruntime takes lowercase labels: rename in torch's label order
        if len(letters) > 26:
            ctx.unsupported("einsum with more than 26 distinct labels")
        ren = {c: chr(ord("a") + i) for i, c in enumerate(letters)}  # A-Z sort before a-z, as in torch
        eq = "".join(ren.get(c, c) for c in eq)
    return ctx.op("Einsum", [ctx.input(v) for v in node.args["operands"]], equation=eq)


@onnx_import("Einsum")
def _einsum_import(ctx):
    return ctx.call("einsum", equation=ctx.attr("equation"), operands=ctx.inputs())


# ---- scaled_dot_product_attention -----------------------------------------------------------------------
def _sdpa_macs(node):
    q, k = shape(node.args["query"]), shape(node.args["key"])
    if not q or not k:
        return 0
    batch = math.prod(q[:-2])
    lq, e, lk = q[-2], q[-1], k[-2]
    ev = shape(node.args["value"])[-1]
    return batch * lq * lk * e + batch * lq * lk * ev  # Q K^T and P V, as FlopCounterMode counts them


def _sdpa_flops(node):
    """The two matrix products, then per score: scale 1, mask 1 (when given), softmax 5."""
    q, k = shape(node.args["query"]), shape(node.args["key"])
    if not q or not k:
        return 0
    scores = math.prod(q[:-1]) * k[-2]
    mask = 1 if node.args.get("attn_mask") is not None or node.args.get("is_causal") else 0
    return 2 * _sdpa_macs(node) + scores * (1 + mask + 5)



@register("scaled_dot_product_attention", family="attention", functions=[F.scaled_dot_product_attention],
          aten=["scaled_dot_product_attention.default"], flops=_sdpa_flops, macs=_sdpa_macs,
          n_tensor_params=4)
def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False):
    """softmax(Q K^T * scale + mask) V."""
    if enable_gqa:
        return F.scaled_dot_product_attention(query, key, value, attn_mask, dropout_p, is_causal, scale=scale,
                                              enable_gqa=True)
    return F.scaled_dot_product_attention(query, key, value, attn_mask, dropout_p, is_causal, scale=scale)


def _repeat_heads(ctx, x, g, r):
    """repeat_interleave(x, g, dim=-3) for GQA: (..., Hkv, S, E) -> (..., Hkv * g, S, E)."""
    u = unsqueeze(ctx, x, [r - 2])
    u = ctx.op("Expand", [u, ctx.op("Concat", [ctx.op("Shape", [x], start=0, end=r - 2), i64(ctx, [g]),
                                               ctx.op("Shape", [x], start=r - 2)], axis=0)])
    shape = ctx.op("Concat", [ctx.op("Shape", [x], start=0, end=r - 3), i64(ctx, [-1]),
                              ctx.op("Shape", [x], start=r - 2)], axis=0)
    return ctx.op("Reshape", [u, shape])


def _keeps_every_row(mask, bool_mask: bool) -> bool:
    c = mask.const if isinstance(mask, Value) else None
    if c is None or c.dim() == 0:
        return False
    keep = c if bool_mask else (c != -math.inf) & ~c.isnan()
    return bool(keep.any(-1).all())


@onnx_lowering("scaled_dot_product_attention")
def _sdpa_onnx(ctx, node):
    a = node.args
    if a["dropout_p"]:
        ctx.unsupported("scaled_dot_product_attention with dropout_p > 0 (random)")
    q, k, v = ctx.input("query"), ctx.input("key"), ctx.input("value")
    qs, dt, r = ctx.spec("query").shape, ctx.dtype("query"), ctx.rank("query")
    if a["scale"] is not None:
        scale = a["scale"]
    elif isinstance(qs[-1], int):
        scale = 1.0 / math.sqrt(qs[-1])
    else:  # 1 / sqrt(E) at run time
        scale = ctx.op("Reciprocal", [ctx.op("Sqrt", [ctx.cast(ctx.op("Shape", [q], start=-1), dt)])])
    if a["enable_gqa"]:
        hq, hk = qs[-3], ctx.spec("key").shape[-3]
        if not (isinstance(hq, int) and isinstance(hk, int)):
            ctx.unsupported("grouped-query attention with symbolic head counts")
        if hq != hk:
            k = _repeat_heads(ctx, k, hq // hk, ctx.rank("key"))
            v = _repeat_heads(ctx, v, hq // ctx.spec("value").shape[-3], ctx.rank("value"))
    mask = ctx.input("attn_mask")
    bool_mask = mask is not None and ctx.dtype("attn_mask") == torch.bool
    if mask is not None and not bool_mask and ctx.dtype("attn_mask") != dt:
        mask = ctx.cast(mask, dt)
    ks = ctx.spec("key").shape
    ls = (qs[-2], ks[-2]) if isinstance(qs[-2], int) and isinstance(ks[-2], int) else None
    # torch's safe softmax differs from Softmax only on rows where every score is masked: there are none under
    # is_causal alone (column 0 is always kept), nor under a constant mask that keeps something in every row
    never_dead = (a["attn_mask"] is None and a["is_causal"]) or (
        not a["is_causal"] and _keeps_every_row(a["attn_mask"], bool_mask))
    out, _ = _attend(ctx, q, k, v, r, dt, scale, mask, bool_mask, bool(a["is_causal"]), safe=not never_dead,
                     static_ls=ls)
    return out


# ---- multi_head_attention: nn.MultiheadAttention --------------------------------------------------------
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


def _mha_sizes(node):
    """(batch, query length, key length, key length attended incl. bias_k/zero_attn, embed, kdim, vdim)."""
    a = node.args
    q, k = shape(a["query"]), shape(a["key"])
    if not q:
        return None
    e = a["embed_dim"]
    if a["batch_first"] and len(q) == 3:
        b, lq, lk = q[0], q[1], k[1]
    elif len(q) == 3:
        lq, b, lk = q[0], q[1], k[0]
    else:
        b, lq, lk = 1, q[0], k[0]
    kdim = shape(a["k_proj_weight"])[1] if a.get("k_proj_weight") is not None else e
    vdim = shape(a["v_proj_weight"])[1] if a.get("v_proj_weight") is not None else e
    latt = lk + (1 if a.get("bias_k") is not None else 0) + (1 if a.get("add_zero_attn") else 0)
    return b, lq, lk, latt, e, kdim, vdim


def _mha_macs(node):
    sz = _mha_sizes(node)
    if sz is None:
        return 0
    b, lq, lk, latt, e, kdim, vdim = sz
    proj = b * lq * e * e + b * lk * e * kdim + b * lk * e * vdim + b * lq * e * e  # q, k, v, out projections
    return proj + 2 * b * lq * latt * e  # Q K^T and P V over all heads (heads * head_dim = embed_dim)


def _mha_flops(node):
    """2 per MAC, the projection biases, and per attention score: scale 1, softmax 5."""
    sz = _mha_sizes(node)
    if sz is None:
        return 0
    b, lq, lk, latt, e, kdim, vdim = sz
    a = node.args
    bias = (b * (lq + 2 * lk) * e if a.get("in_proj_bias") is not None else 0) + (
        b * lq * e if a.get("out_proj_bias") is not None else 0)
    return 2 * _mha_macs(node) + bias + 6 * b * a["num_heads"] * lq * latt


@register("multi_head_attention", family="attention", modules={nn.MultiheadAttention: _mha_module},
          flops=_mha_flops, macs=_mha_macs, n_tensor_params=3)
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


def _linear(ctx, x, w, b):
    y = ctx.op("MatMul", [x, transpose(ctx, w, [1, 0])])
    return ctx.op("Add", [y, b]) if b is not None else y


def _rows(ctx, w, i, e):
    """Rows [i*e, (i+1)*e) of a packed projection weight/bias (folded by onnxruntime on initializers)."""
    return slice_(ctx, w, [i * e], [(i + 1) * e], [0])


def _float_mask(ctx, key, dt):
    """torch's _canonical_mask: a bool mask becomes 0 / -inf (True = masked out); float masks stay."""
    m = ctx.input(key)
    if m is None:
        return None
    if ctx.dtype(key) == torch.bool:
        return ctx.op("Where", [m, ctx.const(-math.inf, dt), ctx.const(0.0, dt)])
    return ctx.cast(m, dt) if ctx.dtype(key) != dt else m


@onnx_lowering("multi_head_attention")
def _mha_onnx(ctx, node):
    """nn.MultiheadAttention as F.multi_head_attention_forward computes it, in (N, L, E) layout inside."""
    a = node.args
    if a["training"] and a["dropout"] > 0:
        ctx.unsupported("multi-head attention dropout in training mode (random)")
    e, h = int(a["embed_dim"]), int(a["num_heads"])
    hd, dt = e // h, ctx.dtype("query")
    batched = ctx.rank("query") == 3
    need_w = bool(a["need_weights"])

    def to_nle(key):
        x = ctx.input(key)
        if not batched:
            return unsqueeze(ctx, x, [0])
        return x if a["batch_first"] else transpose(ctx, x, [1, 0, 2])

    query, key, value = to_nle("query"), to_nle("key"), to_nle("value")
    # in-projection (packed in_proj_weight rows q, k, v, or separate weights)
    b = ctx.input("in_proj_bias")
    bq, bk, bv = ((_rows(ctx, b, i, e) for i in range(3)) if b is not None else (None, None, None))
    if a["q_proj_weight"] is not None:
        wq, wk, wv = ctx.input("q_proj_weight"), ctx.input("k_proj_weight"), ctx.input("v_proj_weight")
    else:
        w = ctx.input("in_proj_weight")
        wq, wk, wv = (_rows(ctx, w, i, e) for i in range(3))
    q, k, v = _linear(ctx, query, wq, bq), _linear(ctx, key, wk, bk), _linear(ctx, value, wv, bv)
    # masks, as float (N, 1 or H, L, S) additions
    kpm = _float_mask(ctx, "key_padding_mask", dt)
    if kpm is not None and not batched:
        kpm = unsqueeze(ctx, kpm, [0])
    is_causal = bool(a["is_causal"])
    if is_causal and kpm is None and not need_w:  # torch drops attn_mask and uses SDPA's is_causal
        am, causal = None, True
    else:
        am, causal = _float_mask(ctx, "attn_mask", dt), False
    pad_end = lambda x, r: ctx.op("Pad", [x, i64(ctx, [0] * (2 * r - 1) + [1]), ctx.const(0.0, dt)])  # noqa: E731
    if a["bias_k"] is not None:  # one more key/value position holding the biases
        n1 = ctx.op("Concat", [ctx.op("Shape", [k], start=0, end=1), i64(ctx, [1, e])], axis=0)
        k = ctx.op("Concat", [k, ctx.op("Expand", [ctx.op("Reshape", [ctx.input("bias_k"), i64(ctx, [1, 1, e])]),
                                                   n1])], axis=1)
        v = ctx.op("Concat", [v, ctx.op("Expand", [ctx.op("Reshape", [ctx.input("bias_v"), i64(ctx, [1, 1, e])]),
                                                   n1])], axis=1)
        am = pad_end(am, ctx.rank("attn_mask")) if am is not None else None
        kpm = pad_end(kpm, 2) if kpm is not None else None
    # (N, L, E) -> (N, H, L, hd)
    heads = lambda x: transpose(ctx, ctx.op("Reshape", [x, i64(ctx, [0, 0, h, hd])]), [0, 2, 1, 3])  # noqa: E731
    q, k, v = heads(q), heads(k), heads(v)
    if a["add_zero_attn"]:  # one more all-zero key/value position
        zero_row = i64(ctx, [0, 0, 0, 0, 0, 0, 1, 0])
        k = ctx.op("Pad", [k, zero_row, ctx.const(0.0, dt)])
        v = ctx.op("Pad", [v, zero_row, ctx.const(0.0, dt)])
        am = pad_end(am, ctx.rank("attn_mask")) if am is not None else None
        kpm = pad_end(kpm, 2) if kpm is not None else None
    mask = None
    if am is not None:  # (L, S) -> (1, 1, L, S); (N*H, L, S) -> (N, H, L, S)
        mask = (unsqueeze(ctx, am, [0, 1]) if ctx.rank("attn_mask") == 2 else
                ctx.op("Reshape", [am, ctx.op("Concat", [i64(ctx, [-1, h]), ctx.op("Shape", [am], start=1)],
                                              axis=0)]))
    if kpm is not None:
        kpm = unsqueeze(ctx, kpm, [1, 2])                                                       # (N, 1, 1, S)
        mask = kpm if mask is None else ctx.op("Add", [mask, kpm])
    out, p = _attend(ctx, q, k, v, 4, dt, 1.0 / math.sqrt(hd), mask, False, causal, safe=not need_w,
                     weights=need_w)
    out = ctx.op("Reshape", [transpose(ctx, out, [0, 2, 1, 3]), i64(ctx, [0, 0, e])])
    out = _linear(ctx, out, ctx.input("out_proj_weight"), ctx.input("out_proj_bias"))
    if not batched:
        out = squeeze(ctx, out, [0])
    elif not a["batch_first"]:
        out = transpose(ctx, out, [1, 0, 2])
    if len(node.outputs) == 1:
        return [out]
    if p is None:
        ctx.unsupported("attention weights output without need_weights")
    if a["average_attn_weights"]:
        p = reduce(ctx, "ReduceMean", p, [1], False)
    if not batched:
        p = squeeze(ctx, p, [0])
    return [out, p]



# ---- ONNX Attention (opset 23+): imported as the canonical ops of its definition -------------------------------
def _heads_first(ctx, x, heads: int):
    """A 3-D (batch, seq, heads * size) input as (batch, heads, seq, size)."""
    b, s = ctx.size(x, 0), ctx.size(x, 1)
    return ctx.call("transpose", input=ctx.call("reshape", input=x, shape=[b, s, heads, -1]), dim0=1, dim1=2)


def _band(ctx, base, q_len, kv_len, offset, allowed):
    """``base`` plus 0 where ``allowed(diff)`` and -inf elsewhere (in ``base``'s dtype), where ``diff`` is a
    query's position (its index plus ``offset``: a number, or per batch a (batch,) tensor) minus a key's index.
    A per-batch offset gives a (batch, 1, q, kv) bias, so that a mask of rank 3 keeps meaning (heads, q, kv)."""
    i = ctx.call("reshape", input=ctx.call("arange", start=0, end=q_len, dtype=torch.int64), shape=[-1, 1])
    j = ctx.call("reshape", input=ctx.call("arange", start=0, end=kv_len, dtype=torch.int64), shape=[1, -1])
    per_batch = isinstance(offset, Value) and isinstance(offset.spec, TensorSpec)  # else a number (maybe run-time)
    if per_batch:  # (batch,) -> (batch, 1, 1)
        offset = ctx.call("reshape", input=ctx.call("to", input=offset, dtype=torch.int64), shape=[-1, 1, 1])
    diff = ctx.call("sub", input=ctx.call("add", input=i, other=offset), other=j)
    dt = ctx.dtype(base)
    band = ctx.call("where", condition=allowed(diff), input=torch.tensor(0, dtype=dt),
                    other=torch.tensor(-math.inf, dtype=dt))
    if per_batch:
        band = ctx.call("unsqueeze", input=band, dim=1)
    return ctx.call("add", input=base, other=band)


@onnx_import("Attention")
def _attention_import(ctx):
    """ONNX Attention (23, 24, 25): scaled dot-product attention with 3-D inputs split into heads, a KV cache
    (past keys/values concatenated before the new ones), grouped-query heads (each KV head repeated for its
    queries), a boolean or additive mask padded to the key length, causal and sliding-window masks aligned to the
    end of the keys (offset by the past length, or per batch by ``nonpad_kv_seqlen``), keys past
    ``nonpad_kv_seqlen`` masked, softcap before the mask, the softmax in ``softmax_precision``, rows with every key
    masked giving 0, and the QK output of each ``qk_matmul_output_mode``. Written out as canonical ops, step by
    step as ONNX defines it (its reference implementation is the oracle of onnx's own test cases)."""
    from .onnx_helpers import torch_dtype

    q, k, v = ctx.input(0), ctx.input(1), ctx.input(2)
    mask = ctx.input(3) if ctx.has(3) else None
    past_k, past_v = (ctx.input(4), ctx.input(5)) if ctx.has(4) else (None, None)
    nonpad = ctx.input(6) if ctx.has(6) else None
    if (past_k is None) != (past_v is None) or (nonpad is not None and past_k is not None):
        ctx.unsupported("past_key without past_value (or the reverse), or nonpad_kv_seqlen with a past cache")
    qdt = ctx.dtype(q)
    three_d = ctx.rank(q) == 3
    if three_d:
        qh, kvh = ctx.attr("q_num_heads"), ctx.attr("kv_num_heads")
        if qh is None or kvh is None:
            ctx.unsupported("3-D inputs without q_num_heads and kv_num_heads")
        q, k, v = _heads_first(ctx, q, int(qh)), _heads_first(ctx, k, int(kvh)), _heads_first(ctx, v, int(kvh))
    scale = ctx.attr("scale")
    head = ctx.shape(q)[3]
    if scale is None:
        if not isinstance(head, int):
            ctx.unsupported("a symbolic head size without a scale attribute")
        scale = 1 / math.sqrt(head)
    root = torch.tensor(math.sqrt(scale), dtype=qdt)  # sqrt(scale) in the inputs' type scales both Q and K
    if past_k is not None:
        k = ctx.call("cat", tensors=[past_k, k], dim=2)
        v = ctx.call("cat", tensors=[past_v, v], dim=2)
    present_k, present_v = k, v
    q_len, kv_len = ctx.size(q, 2), ctx.size(k, 2)
    neg_inf = torch.tensor(-math.inf, dtype=qdt)
    zero = torch.tensor(0, dtype=qdt)
    if mask is not None:
        width = ctx.shape(mask)[-1]
        if not (isinstance(width, int) and isinstance(kv_len, int)):
            ctx.unsupported("an attention mask or key length of symbolic size")
        if kv_len > width:  # keys past the mask's length are masked
            fill = False if ctx.dtype(mask) == torch.bool else -math.inf
            mask = ctx.call("pad", input=mask, pad=[0, kv_len - width], mode="constant", value=fill)
    window = int(ctx.attr("left_window_size", -1)), int(ctx.attr("right_window_size", -1))
    windowed = window[0] >= 0 or window[1] >= 0
    if past_k is None and nonpad is not None:  # an external cache: the valid keys end at nonpad_kv_seqlen
        offset = ctx.call("sub", input=nonpad, other=q_len)
    else:
        offset = ctx.size(past_k, 2) if past_k is not None else 0
    bias = ctx.call("zeros", size=[q_len, kv_len], dtype=qdt)
    if ctx.attr("is_causal", 0):
        if mask is not None and ctx.dtype(mask) == torch.bool:
            mask = ctx.call("where", condition=mask, input=zero, other=neg_inf)
        base = bias if mask is None else mask
        if windowed:
            base = ctx.call("add", input=ctx.call("zeros", size=[q_len, kv_len], dtype=qdt), other=base)
        bias = _band(ctx, base, q_len, kv_len, offset, lambda d: ctx.call("ge", input=d, other=0))
    elif mask is not None:
        if ctx.dtype(mask) == torch.bool:
            mask = ctx.call("where", condition=mask, input=zero, other=neg_inf)
        bias = ctx.call("add", input=bias, other=mask)
    if windowed:
        def allowed(d):
            ok = None
            for side, bound in ((d, window[0]), (ctx.call("neg", input=d), window[1])):
                if bound >= 0:
                    c = ctx.call("le", input=side, other=bound)
                    ok = c if ok is None else ctx.call("logical_and", input=ok, other=c)
            return ok

        bias = ctx.call("add", input=ctx.call("zeros", size=[q_len, kv_len], dtype=qdt), other=bias)
        bias = _band(ctx, bias, q_len, kv_len, offset, allowed)
    if nonpad is not None:
        keys = ctx.call("arange", start=0, end=kv_len, dtype=torch.int64)
        valid = ctx.call("lt", input=keys, other=ctx.call("unsqueeze", input=ctx.call(
            "to", input=nonpad, dtype=torch.int64), dim=1))
        valid = ctx.call("unsqueeze", input=ctx.call("unsqueeze", input=valid, dim=1), dim=1)
        pad_dt = ctx.dtype(bias)
        bias = ctx.call("add", input=bias, other=ctx.call("where", condition=valid, input=torch.tensor(0, dtype=pad_dt),
                                                           other=torch.tensor(-math.inf, dtype=pad_dt)))
    qh, kh = ctx.shape(q)[1], ctx.shape(k)[1]
    if isinstance(qh, int) and isinstance(kh, int) and qh != kh and qh % kh == 0:  # grouped-query attention
        k = ctx.call("repeat_interleave", input=k, repeats=qh // kh, dim=1)
        v = ctx.call("repeat_interleave", input=v, repeats=qh // kh, dim=1)
    qk = ctx.call("matmul", input=ctx.call("mul", input=q, other=root),
                  other=ctx.call("transpose", input=ctx.call("mul", input=k, other=root), dim0=-2, dim1=-1))
    softcap = float(ctx.attr("softcap", 0.0))
    if softcap > 0:
        cap = torch.tensor(softcap, dtype=qdt)
        qk = ctx.call("mul", input=ctx.call("tanh", input=ctx.call("div", input=qk, other=cap)), other=cap)
    scores = ctx.call("add", input=qk, other=bias)
    mode = int(ctx.attr("qk_matmul_output_mode", 0))
    qk_out = scores if mode == 2 else qk
    precision = ctx.attr("softmax_precision")
    if precision is not None:
        scores = ctx.call("to", input=scores, dtype=torch_dtype(int(precision)))
    p = ctx.call("softmax", input=scores, dim=-1)
    dead = ctx.call("eq", input=ctx.call("amax", input=bias, dim=[-1], keepdim=True), other=-math.inf)
    p = ctx.call("where", condition=dead, input=torch.tensor(0, dtype=ctx.dtype(p)), other=p)  # no key: 0
    if mode == 3:
        qk_out = p
    qk_out = ctx.call("to", input=qk_out, dtype=qdt)
    y = ctx.call("matmul", input=ctx.call("to", input=p, dtype=qdt), other=v)
    if three_d:
        y = ctx.call("transpose", input=y, dim0=1, dim1=2)
        y = ctx.call("reshape", input=y, shape=[ctx.size(y, 0), ctx.size(y, 1), -1])
    return [y, present_k, present_v, qk_out]
