"""Recurrent layers as whole ops: nn.LSTM, nn.GRU, nn.RNN."""
from __future__ import annotations

import torch
import torch.nn as nn

from ._util import shape
from .registry import Attr, register


def _rnn_module(m, args, kwargs):
    hx = args[1] if len(args) > 1 else kwargs.get("hx")
    return (args[0],), {"hx": hx, "weights": [Attr(n) for n in m._flat_weights_names], "has_biases": m.bias,
                        "num_layers": m.num_layers, "dropout": float(m.dropout), "training": m.training,
                        "bidirectional": m.bidirectional, "batch_first": m.batch_first,
                        "hidden_size": m.hidden_size, **({"proj_size": m.proj_size} if isinstance(m, nn.LSTM) else {}),
                        **({"nonlinearity": m.nonlinearity} if type(m) is nn.RNN else {})}


def _rnn_flops(node):
    a = node.args
    x = shape(a["input"])
    if not x:
        return 0
    if len(x) == 3:
        t, b = (x[1], x[0]) if a["batch_first"] else (x[0], x[1])
    else:
        t, b = x[0], 1
    mats = sum(2 * w.spec.shape[0] * w.spec.shape[1] for w in a["weights"]
               if getattr(w, "spec", None) is not None and len(w.spec.shape) == 2)
    # every weight matrix is applied once per time step and sample; gate elementwise work is small
    return mats * t * b


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


@register("lstm", family="rnn", modules={nn.LSTM: _rnn_module},
          aten=[("lstm.input", lambda a, k: ((a[0],), {"hx": tuple(a[1]), "weights": list(a[2]),
                                                      "has_biases": a[3], "num_layers": a[4], "dropout": a[5],
                                                      "training": a[6], "bidirectional": a[7],
                                                      "batch_first": a[8], "hidden_size": None},
                                             lambda r: (r[0], r[1][0], r[1][1])))],
          flops=_rnn_flops)
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


@register("gru", family="rnn", modules={nn.GRU: _rnn_module},
          aten=[("gru.input", lambda a, k: ((a[0],), {"hx": a[1], "weights": list(a[2]), "has_biases": a[3],
                                                     "num_layers": a[4], "dropout": a[5], "training": a[6],
                                                     "bidirectional": a[7], "batch_first": a[8]}))],
          flops=_rnn_flops)
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


@register("rnn", family="rnn", modules={nn.RNN: _rnn_module}, flops=_rnn_flops)
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


# ---- ONNX lowerings -------------------------------------------------------------------------------
from .registry import onnx_lowering  # noqa: E402

# torch gate chunks -> ONNX gate order: LSTM i,f,g,o -> i,o,f,c; GRU r,z,n -> z,r,h; RNN has one
_GATE_ORDER = {"lstm": [0, 3, 1, 2], "gru": [1, 0, 2], "rnn": [0]}
_ONNX_RNN = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}


def _i64(ctx, values):
    return ctx.const([int(v) for v in values], torch.int64)


def _gates(ctx, w, kind, hidden):
    """A torch weight/bias with gate chunks along dim 0, re-ordered to ONNX's order (Split + Concat on the
    initializer, which onnxruntime folds)."""
    order = _GATE_ORDER[kind]
    if len(order) == 1:
        return w
    parts = ctx.op("Split", [w, _i64(ctx, [hidden] * len(order))], n_out=len(order), axis=0)
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
            x = ctx.op("Unsqueeze", [x, _i64(ctx, [1])])
        elif a["batch_first"]:
            x = ctx.op("Transpose", [x], perm=[1, 0, 2])
        hx = a["hx"]
        states = [] if hx is None else list(hx) if isinstance(hx, (list, tuple)) else [hx]
        states = [ctx.input(s) for s in states]
        if not batched:
            states = [ctx.op("Unsqueeze", [s, _i64(ctx, [1])]) for s in states]
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
            stack = lambda ts: ctx.op("Concat", [ctx.op("Unsqueeze", [t, _i64(ctx, [0])]) for t in ts],  # noqa
                                      axis=0)
            init = [ctx.op("Slice", [s, _i64(ctx, [layer * dirs]), _i64(ctx, [(layer + 1) * dirs]),
                                     _i64(ctx, [0])]) for s in states]
            ins = [x, stack(w), stack(r), stack(b) if b else None, None] + (init or [None])
            outs = ctx.op(_ONNX_RNN[kind], ins, n_out=3 if kind == "lstm" else 2, **attrs)
            y = outs[0]                                                            # (seq, dirs, batch, H)
            if dirs == 1:
                x = ctx.op("Squeeze", [y, _i64(ctx, [1])])
            else:
                x = ctx.op("Reshape", [ctx.op("Transpose", [y], perm=[0, 2, 1, 3]), _i64(ctx, [0, 0, -1])])
            h_n.append(outs[1])
            if kind == "lstm":
                c_n.append(outs[2])
        cat = lambda ts: ts[0] if len(ts) == 1 else ctx.op("Concat", ts, axis=0)  # noqa: E731
        results = [x, cat(h_n)] + ([cat(c_n)] if kind == "lstm" else [])
        if not batched:
            results = [ctx.op("Squeeze", [t, _i64(ctx, [1])]) for t in results]
        elif a["batch_first"]:
            results[0] = ctx.op("Transpose", [results[0]], perm=[1, 0, 2])
        return results
    return lower


for _kind in ("lstm", "gru", "rnn"):
    onnx_lowering(_kind)(_rnn_lowering(_kind))
