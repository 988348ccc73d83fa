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
