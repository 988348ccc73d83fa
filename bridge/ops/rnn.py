"""Recurrent layers as whole ops: nn.LSTM, nn.GRU, nn.RNN."""
from __future__ import annotations

import torch
import torch.nn as nn

from ._util import shape
from .onnx_helpers import i64, slice_, squeeze, transpose, unsqueeze
from .registry import Attr, onnx_import, onnx_lowering, register


# ---- family-wide helpers: what lstm, gru and rnn share (adapter, FLOPs, execution, ONNX lowering, import) ----
def _training(node) -> bool:
    """The ``random`` fact: in training mode a layer may apply dropout (random) between layers."""
    return bool(node.args.get("training"))


def _rnn_module(m, args, kwargs):
    hx = args[1] if len(args) > 1 else kwargs.get("hx")
    return (args[0],), {"hx": hx, "weights": [Attr(n) for n in m._flat_weights_names], "has_biases": m.bias,
                        "num_layers": m.num_layers, "dropout": float(m.dropout), "training": m.training,
                        "bidirectional": m.bidirectional, "batch_first": m.batch_first,
                        "hidden_size": m.hidden_size, **({"proj_size": m.proj_size} if isinstance(m, nn.LSTM) else {}),
                        **({"nonlinearity": m.nonlinearity} if type(m) is nn.RNN else {})}


def _rnn_steps(node):
    """(time steps, batch) of a recurrent op's input, or None without a known input shape."""
    a = node.args
    x = shape(a["input"])
    if not x:
        return None
    if len(x) == 3:
        return (x[1], x[0]) if a["batch_first"] else (x[0], x[1])
    return x[0], 1


def _rnn_macs(node):
    """Every weight matrix (input-hidden, hidden-hidden, LSTM projection) is applied once per time step and
    sample: sum of their sizes * steps * batch."""
    tb = _rnn_steps(node)
    if tb is None:
        return 0
    mats = sum(w.spec.shape[0] * w.spec.shape[1] for w in node.args["weights"]
               if getattr(w, "spec", None) is not None and len(w.spec.shape) == 2)
    return mats * tb[0] * tb[1]


# gate arithmetic per time step, sample and hidden unit (1 per elementwise op; the bias adds counted apart):
# lstm: 4 gate sums (ih + hh), 4 activations, c = f*c + i*g (3), h = o * tanh(c) (2)              -> 13
# gru:  2 gate sums (r, z), 2 sigmoids, n = tanh(x_n + r * h_n) (3), h = (1 - z) * n + z * h (4)   -> 11
# rnn:  1 sum (ih + hh), 1 activation                                                              -> 2
_GATES = {"lstm": (4, 13), "gru": (3, 11), "rnn": (1, 2)}


def _rnn_flops(node):
    """2 per MAC, the gate arithmetic above and 2 bias adds per gate unit (when the layer has biases)."""
    tb = _rnn_steps(node)
    if tb is None:
        return 0
    a = node.args
    gates, per_h = _GATES[node.op]
    mats = [w for w in a["weights"] if getattr(w, "spec", None) is not None and len(w.spec.shape) == 2]
    per_group = 3 if (a.get("proj_size") or 0) > 0 else 2  # w_ih, w_hh (, w_hr)
    elem = 0
    for w_hh in mats[1::per_group]:
        gh = w_hh.spec.shape[0]  # gates * hidden
        elem += per_h * (gh // gates) + (2 * gh if a["has_biases"] else 0)
    return 2 * _rnn_macs(node) + elem * tb[0] * tb[1]


def _zeros_state(input, batched, batch_first, layers, hidden):
    b = input.shape[0 if batch_first else 1] if batched else 1
    h = torch.zeros(layers, b, hidden, dtype=input.dtype, device=input.device)
    return h if batched else h.squeeze(1)


def _batch(input, hx, batched, batch_first):
    if batched:
        return input, hx
    input = input.unsqueeze(0 if batch_first else 1)
    if hx is not None:
        hx = tuple(h.unsqueeze(1) for h in hx) if isinstance(hx, (tuple, list)) else hx.unsqueeze(1)
    return input, hx


# torch gate chunks -> ONNX gate order: LSTM i,f,g,o -> i,o,f,c; GRU r,z,n -> z,r,h; RNN has one
_GATE_ORDER = {"lstm": [0, 3, 1, 2], "gru": [1, 0, 2], "rnn": [0]}
_ONNX_RNN = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}


def _gates(ctx, w, kind, hidden):
    """A torch weight/bias with gate chunks along dim 0, re-ordered to ONNX's order (Split + Concat on the
    initializer, which onnxruntime folds)."""
    order = _GATE_ORDER[kind]
    if len(order) == 1:
        return w
    parts = ctx.op("Split", [w, i64(ctx, [hidden] * len(order))], n_out=len(order), axis=0)
    return ctx.op("Concat", [parts[i] for i in order], axis=0)


def _rnn_lowering(kind):
    def lower(ctx, node):
        """Layers stacked as ONNX LSTM/GRU/RNN nodes in (seq, batch, feature) layout; weights re-laid out as
        W [dirs, G*H, in], R [dirs, G*H, H], B [dirs, 2*G*H] = [b_ih, b_hh]; a layer's Y (seq, dirs, batch, H)
        becomes the next layer's input (seq, batch, dirs*H), fwd then bwd, as torch concatenates them."""
        a = node.args
        if kind == "lstm" and a.get("proj_size"):
            ctx.unsupported("LSTM with proj_size > 0 (ONNX LSTM has no projection)")
        layers, dirs = int(a["num_layers"]), 2 if a["bidirectional"] else 1
        if a["training"] and a["dropout"] and layers > 1:
            ctx.unsupported("dropout between recurrent layers in training mode (random)")
        ws = list(a["weights"])
        per = 4 if a["has_biases"] else 2
        if len(ws) != layers * dirs * per:
            ctx.unsupported(f"{len(ws)} weights for {layers} layer(s) x {dirs} direction(s)")
        hidden = ctx.spec(ws[1]).shape[1]
        batched = ctx.rank("input") == 3
        x = ctx.input("input")
        if not batched:  # (seq, in) -> (seq, 1, in); states (layers*dirs, H) -> (layers*dirs, 1, H)
            x = unsqueeze(ctx, x, [1])
        elif a["batch_first"]:
            x = transpose(ctx, x, [1, 0, 2])
        hx = a["hx"]
        states = [] if hx is None else list(hx) if isinstance(hx, (list, tuple)) else [hx]
        states = [ctx.input(s) for s in states]
        if not batched:
            states = [unsqueeze(ctx, s, [1]) for s in states]
        attrs = dict(hidden_size=int(hidden), direction="bidirectional" if dirs == 2 else "forward")
        if kind == "gru":
            attrs["linear_before_reset"] = 1  # torch: n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
        if kind == "rnn":
            attrs["activations"] = ["Tanh" if a["nonlinearity"] == "tanh" else "Relu"] * dirs
        h_n, c_n = [], []
        for layer in range(layers):
            w, r, b = [], [], []
            for d in range(dirs):
                base = (layer * dirs + d) * per
                w.append(_gates(ctx, ctx.input(ws[base]), kind, hidden))
                r.append(_gates(ctx, ctx.input(ws[base + 1]), kind, hidden))
                if per == 4:
                    b.append(ctx.op("Concat", [_gates(ctx, ctx.input(ws[base + 2]), kind, hidden),
                                               _gates(ctx, ctx.input(ws[base + 3]), kind, hidden)], axis=0))
            stack = lambda ts: ctx.op("Concat", [unsqueeze(ctx, t, [0]) for t in ts], axis=0)  # noqa: E731
            init = [slice_(ctx, s, [layer * dirs], [(layer + 1) * dirs], [0]) for s in states]
            ins = [x, stack(w), stack(r), stack(b) if b else None, None] + (init or [None])
            outs = ctx.op(_ONNX_RNN[kind], ins, n_out=3 if kind == "lstm" else 2, **attrs)
            y = outs[0]                                                            # (seq, dirs, batch, H)
            if dirs == 1:
                x = squeeze(ctx, y, [1])
            else:
                x = ctx.op("Reshape", [transpose(ctx, y, [0, 2, 1, 3]), i64(ctx, [0, 0, -1])])
            h_n.append(outs[1])
            if kind == "lstm":
                c_n.append(outs[2])
        cat = lambda ts: ts[0] if len(ts) == 1 else ctx.op("Concat", ts, axis=0)  # noqa: E731
        results = [x, cat(h_n)] + ([cat(c_n)] if kind == "lstm" else [])
        if not batched:
            results = [squeeze(ctx, t, [1]) for t in results]
        elif a["batch_first"]:
            results[0] = transpose(ctx, results[0], [1, 0, 2])
        return results
    return lower


# ONNX import: one LSTM/GRU/RNN node as one torch layer
_TORCH_GATES = {"LSTM": [0, 2, 3, 1], "GRU": [1, 0, 2], "RNN": [0]}  # ONNX gate chunks (iofc, zrh) in torch's order


def _torch_gates(ctx, w, order, hidden):
    if len(order) == 1:
        return w
    parts = list(ctx.call("split", input=w, split_size_or_sections=hidden, dim=0))
    return ctx.call("cat", tensors=[parts[i] for i in order], dim=0)


def _rnn_import(ctx):
    """One ONNX LSTM/GRU/RNN as one torch layer: W/R/B per direction re-ordered into torch's gate order (folded
    when the weights are constants); Y (seq, batch, dirs*H) -> (seq, dirs, batch, H). ``layout=1`` (batch first)
    transposes in and out; ``direction="reverse"`` runs forward over the sequence flipped in time and flips Y
    back (its Y_h is then the state after the first step, as ONNX defines it)."""
    kind = ctx.op_type
    plain = {"LSTM": ["sigmoid", "tanh", "tanh"], "GRU": ["sigmoid", "tanh"], "RNN": ["tanh"]}[kind]
    nonlinearity = "tanh"
    acts = ctx.attr("activations")
    if kind == "RNN" and acts is not None and {a.lower() for a in acts} == {"relu"}:
        nonlinearity, acts = "relu", None
    for a in ("clip", "activations", "activation_alpha", "activation_beta"):
        v = acts if a == "activations" else ctx.attr(a)
        if v is not None and not (a == "activations" and [s.lower() for s in v] == plain * (len(v) // len(plain))):
            ctx.unsupported(f"{kind} with attribute {a}")
    if kind == "LSTM" and ctx.attr("input_forget", 0):
        ctx.unsupported("LSTM with input_forget=1")
    if ctx.has(4):
        ctx.unsupported(f"{kind} with sequence_lens")
    if kind == "LSTM" and ctx.has(7):
        ctx.unsupported("LSTM with peepholes")
    hidden = int(ctx.attr("hidden_size"))
    direction = ctx.attr("direction", "forward")
    batch_first = bool(ctx.attr("layout", 0))
    dirs = 2 if direction == "bidirectional" else 1
    if kind == "GRU" and not ctx.attr("linear_before_reset", 0):
        return _gru_unrolled(ctx, hidden, direction, batch_first)
    order, g = _TORCH_GATES[kind], len(_TORCH_GATES[kind])
    w_all, r_all, b_all = ctx.input(1), ctx.input(2), ctx.input(3)
    weights = []
    for d in range(dirs):
        pick = lambda t: ctx.call("select", input=t, dim=0, index=d)  # noqa: E731
        weights += [_torch_gates(ctx, pick(w_all), order, hidden), _torch_gates(ctx, pick(r_all), order, hidden)]
        if b_all is not None:
            b_ih, b_hh = ctx.call("split", input=pick(b_all), split_size_or_sections=g * hidden, dim=0)
            weights += [_torch_gates(ctx, b_ih, order, hidden), _torch_gates(ctx, b_hh, order, hidden)]

    def state(t):  # layout 1 keeps states as (batch, dirs, H); torch wants (dirs, batch, H)
        return None if t is None or not batch_first else ctx.call("transpose", input=t, dim0=0, dim1=1)

    x = ctx.input(0)
    if batch_first:
        x = ctx.call("transpose", input=x, dim0=0, dim1=1)
    if direction == "reverse":
        x = ctx.call("flip", input=x, dims=[0])
    h0 = state(ctx.input(5)) if batch_first else ctx.input(5)
    hx = None
    if kind == "LSTM":
        c0 = state(ctx.input(6)) if batch_first else ctx.input(6)
        if (h0 is None) != (c0 is None):
            ctx.unsupported("LSTM with only one of initial_h and initial_c")
        if h0 is not None:
            hx = (h0, c0)
    else:
        hx = h0
    extra = {"nonlinearity": nonlinearity} if kind == "RNN" else {}
    res = ctx.call(kind.lower(), input=x, hx=hx, weights=weights, has_biases=b_all is not None, num_layers=1,
                   bidirectional=dirs == 2, batch_first=False, hidden_size=hidden, **extra)
    y, st = res[0], res[1]
    if direction == "reverse":
        y = ctx.call("flip", input=y, dims=[0])
    y = ctx.call("unflatten", input=y, dim=2, sizes=[dirs, hidden])  # (seq, batch, dirs, H)
    y = ctx.call("permute", input=y, dims=[1, 0, 2, 3] if batch_first else [0, 2, 1, 3])
    states = [st[0], st[1]] if kind == "LSTM" else [st]
    if batch_first:
        states = [ctx.call("transpose", input=t, dim0=0, dim1=1) for t in states]
    return [y, *states]


def _gru_unrolled(ctx, hidden: int, direction: str, batch_first: bool):
    """ONNX's default GRU (linear_before_reset=0: the reset gate scales the state before its matmul, where torch's
    GRU scales the matmul's result) written out step by step over a sequence of static length:
    z = sigmoid(x Wz + h Rz + b), r = sigmoid(x Wr + h Rr + b), n = tanh(x Wh + (r * h) Rh + b),
    h' = (1 - z) * n + z * h; per direction, the reverse one over the steps backwards."""
    x = ctx.input(0)
    if batch_first:
        x = ctx.call("transpose", input=x, dim0=0, dim1=1)  # (seq, batch, input)
    steps = ctx.size(x, 0)
    if not isinstance(steps, int):
        ctx.unsupported("GRU with linear_before_reset=0 over a symbolic number of steps (it is written out per "
                        "step)")
    h0_all = ctx.input(5)
    if h0_all is not None and batch_first:
        h0_all = ctx.call("transpose", input=h0_all, dim0=0, dim1=1)
    w_all, r_all, b_all = ctx.input(1), ctx.input(2), ctx.input(3)
    dirs = ["forward", "reverse"] if direction == "bidirectional" else [direction]
    outs, finals = [], []
    for d, way in enumerate(dirs):
        pick = lambda t: ctx.call("select", input=t, dim=0, index=d)  # noqa: E731
        w, r = pick(w_all), pick(r_all)  # (3H, input), (3H, H): gates z, r, h
        xw = ctx.call("matmul", input=x, other=ctx.call("t", input=w))  # (seq, batch, 3H)
        if b_all is not None:
            wb, rb = ctx.call("split", input=pick(b_all), split_size_or_sections=3 * hidden, dim=0)
            xw = ctx.call("add", input=xw, other=wb)
        else:
            rb = None
        rz_r = ctx.call("narrow", input=r, dim=0, start=0, length=2 * hidden)  # the z and r rows
        r_h = ctx.call("narrow", input=r, dim=0, start=2 * hidden, length=hidden)
        rb_zr = None if rb is None else ctx.call("narrow", input=rb, dim=0, start=0, length=2 * hidden)
        rb_h = None if rb is None else ctx.call("narrow", input=rb, dim=0, start=2 * hidden, length=hidden)
        h = pick(h0_all) if h0_all is not None else ctx.call(
            "full_like", input=ctx.call("narrow", input=ctx.call("select", input=xw, dim=0, index=0), dim=1,
                                        start=0, length=hidden), fill_value=0.0)
        ys = [None] * steps
        for t in (range(steps) if way == "forward" else reversed(range(steps))):
            xz, xr, xh = ctx.call("split", input=ctx.call("select", input=xw, dim=0, index=t),
                                  split_size_or_sections=hidden, dim=1)
            hzr = ctx.call("matmul", input=h, other=ctx.call("t", input=rz_r))
            if rb_zr is not None:
                hzr = ctx.call("add", input=hzr, other=rb_zr)
            hz, hr = ctx.call("split", input=hzr, split_size_or_sections=hidden, dim=1)
            z = ctx.call("sigmoid", input=ctx.call("add", input=xz, other=hz))
            rg = ctx.call("sigmoid", input=ctx.call("add", input=xr, other=hr))
            hh = ctx.call("matmul", input=ctx.call("mul", input=rg, other=h), other=ctx.call("t", input=r_h))
            if rb_h is not None:
                hh = ctx.call("add", input=hh, other=rb_h)
            n = ctx.call("tanh", input=ctx.call("add", input=xh, other=hh))
            h = ctx.call("add", input=ctx.call("mul", input=ctx.call("rsub", input=z, other=1.0), other=n),
                         other=ctx.call("mul", input=z, other=h))
            ys[t] = h
        outs.append(ctx.call("stack", tensors=ys, dim=0))  # (seq, batch, H)
        finals.append(h)
    y = ctx.call("stack", tensors=outs, dim=1)  # (seq, dirs, batch, H)
    y_h = ctx.call("stack", tensors=finals, dim=0)  # (dirs, batch, H)
    if batch_first:
        y = ctx.call("permute", input=y, dims=[2, 0, 1, 3])
        y_h = ctx.call("transpose", input=y_h, dim0=0, dim1=1)
    return [y, y_h]


# ---- lstm ---------------------------------------------------------------------------------------------
@register("lstm", family="rnn", modules={nn.LSTM: _rnn_module},
          aten=[("lstm.input", lambda a, k: ((a[0],), {"hx": tuple(a[1]), "weights": list(a[2]),
                                                      "has_biases": a[3], "num_layers": a[4], "dropout": a[5],
                                                      "training": a[6], "bidirectional": a[7],
                                                      "batch_first": a[8], "hidden_size": None},
                                             lambda r: (r[0], r[1][0], r[1][1])))],
          flops=_rnn_flops, macs=_rnn_macs, random=_training)
def lstm(input, hx=None, weights=(), has_biases=True, num_layers=1, dropout=0.0, training=False,
         bidirectional=False, batch_first=False, hidden_size=None, proj_size=0):
    """nn.LSTM as one op: (output, (h_n, c_n)); ``weights`` in the module's _flat_weights order."""
    batched = input.dim() == 3
    dirs = 2 if bidirectional else 1
    if hx is None:
        h0 = _zeros_state(input, batched, batch_first, num_layers * dirs, proj_size or hidden_size)
        c0 = _zeros_state(input, batched, batch_first, num_layers * dirs, hidden_size)
        hx = (h0, c0)
    input, hx = _batch(input, hx, batched, batch_first)
    out, h, c = torch.lstm(input, tuple(hx), list(weights), has_biases, num_layers, dropout, training,
                           bidirectional, batch_first)
    if not batched:
        out, h, c = out.squeeze(0 if batch_first else 1), h.squeeze(1), c.squeeze(1)
    return out, (h, c)


onnx_lowering("lstm")(_rnn_lowering("lstm"))
onnx_import("LSTM")(_rnn_import)


# ---- gru ----------------------------------------------------------------------------------------------
@register("gru", family="rnn", modules={nn.GRU: _rnn_module},
          aten=[("gru.input", lambda a, k: ((a[0],), {"hx": a[1], "weights": list(a[2]), "has_biases": a[3],
                                                     "num_layers": a[4], "dropout": a[5], "training": a[6],
                                                     "bidirectional": a[7], "batch_first": a[8]}))],
          flops=_rnn_flops, macs=_rnn_macs, random=_training)
def gru(input, hx=None, weights=(), has_biases=True, num_layers=1, dropout=0.0, training=False,
        bidirectional=False, batch_first=False, hidden_size=None):
    """nn.GRU as one op: (output, h_n)."""
    batched = input.dim() == 3
    if hx is None:
        hx = _zeros_state(input, batched, batch_first, num_layers * (2 if bidirectional else 1), hidden_size)
    input, hx = _batch(input, hx, batched, batch_first)
    out, h = torch.gru(input, hx, list(weights), has_biases, num_layers, dropout, training, bidirectional,
                       batch_first)
    if not batched:
        out, h = out.squeeze(0 if batch_first else 1), h.squeeze(1)
    return out, h


onnx_lowering("gru")(_rnn_lowering("gru"))
onnx_import("GRU")(_rnn_import)
onnx_import("RNN")(_rnn_import)


# ---- rnn ----------------------------------------------------------------------------------------------
@register("rnn", family="rnn", modules={nn.RNN: _rnn_module}, flops=_rnn_flops, macs=_rnn_macs,
          random=_training)
def rnn(input, hx=None, weights=(), has_biases=True, num_layers=1, dropout=0.0, training=False,
        bidirectional=False, batch_first=False, hidden_size=None, nonlinearity="tanh"):
    """nn.RNN (tanh or relu) as one op: (output, h_n)."""
    batched = input.dim() == 3
    if hx is None:
        hx = _zeros_state(input, batched, batch_first, num_layers * (2 if bidirectional else 1), hidden_size)
    input, hx = _batch(input, hx, batched, batch_first)
    fn = torch.rnn_tanh if nonlinearity == "tanh" else torch.rnn_relu
    out, h = fn(input, hx, list(weights), has_biases, num_layers, dropout, training, bidirectional, batch_first)
    if not batched:
        out, h = out.squeeze(0 if batch_first else 1), h.squeeze(1)
    return out, h


onnx_lowering("rnn")(_rnn_lowering("rnn"))
