"""``fuse_linear``: a matmul by a transposed 2-D weight, plus a bias along the last dim, is one ``linear``.

    add(matmul(x, permute(w, [1, 0])), b)  ->  linear(x, w, b)     # b: shape (w.shape[0],), same dtype
    matmul(x, permute(w, [1, 0]))          ->  linear(x, w)

(``t(w)`` and ``transpose(w, 0, 1)`` count as the permute too; the add may have the bias on either side.) This is
what ONNX writes for a Linear on a 3-D input (Transpose, MatMul, Add, as torch.onnx and bridge export it), and
what ``decompose`` would give back before its weight is stored transposed: one fused kernel (addmm) instead of
three. The node keeps the add's name and scope (the layer's), so the graph reads as the model did.
"""
from __future__ import annotations

from ..ir.graph import Graph, Value
from ..ir.spec import TensorSpec
from . import register_pass


def _transposed_weight(v) -> Value | None:
    """``w`` where ``v`` is ``permute(w, [1, 0])`` / ``t(w)`` / ``transpose(w, 0, 1)`` of a 2-D ``w``."""
    p = v.producer if isinstance(v, Value) else None
    if p is None or len(p.outputs) != 1:
        return None
    w = p.args.get("input")
    if not isinstance(w, Value) or not isinstance(w.spec, TensorSpec) or w.spec.rank != 2:
        return None
    if p.op == "permute" and list(p.args.get("dims") or ()) in ([1, 0], [-1, -2], [1, -2], [-1, 0]):
        return w
    if p.op == "t":
        return w
    if p.op == "transpose" and {p.args.get("dim0"), p.args.get("dim1")} in ({0, 1}, {-1, -2}, {0, -1}, {1, -2}):
        return w
    return None


def _bias_of(node, m: Value) -> Value | None:
    """The bias when ``node`` is ``add(m, b)`` or ``add(b, m)`` with alpha 1 and ``b`` of shape (out,)."""
    if node.op != "add" or node.args.get("alpha", 1) != 1:
        return None
    a, o = node.args.get("input"), node.args.get("other")
    b = o if a is m else a if o is m else None
    if not isinstance(b, Value) or b is m or not isinstance(b.spec, TensorSpec) or b.spec.rank != 1:
        return None
    ms = m.spec
    if b.spec.dtype != ms.dtype or b.spec.shape[0] != ms.shape[-1] or node.outputs[0].spec != ms:
        return None
    return b


@register_pass("fuse_linear")
def fuse_linear(g: Graph) -> tuple[Graph, bool]:
    changed = False
    for node in list(g.nodes):
        if node.graph is not g or node.op != "matmul" or len(node.outputs) != 1:
            continue
        x, m = node.args.get("input"), node.outputs[0]
        w = _transposed_weight(node.args.get("other"))
        if w is None or not isinstance(x, Value) or not isinstance(x.spec, TensorSpec) or x.spec.rank < 1 \
                or not isinstance(m.spec, TensorSpec) or x.spec.dtype != w.spec.dtype:
            continue
        users = m.users
        bias = _bias_of(users[0], m) if len(users) == 1 and not m.meta.get("is_output") else None
        target = users[0] if bias is not None else node  # the add becomes the linear: its name, its scope
        transposed = node.args["other"]
        target.op = "linear"
        g.set_args(target, {"input": x, "weight": w, "bias": bias})
        if target is not node:
            g.erase_node(node)
        if not transposed._uses and not transposed.meta.get("is_output"):
            g.erase_node(transposed.producer)
        changed = True
    return g, changed
