"""ONNX lowerings of layers (families nn, rnn, attention) on argument combinations the op samples do not reach.

Each case is traced with the fx frontend, exported at the lowest supported opset (17) and at the newest one the
installed onnxruntime runs (``max_opset()``) with ``onnx.checker`` (full) and strict shape inference, run in
onnxruntime, and compared with eager PyTorch: floats within ``atol = 1e-5 * max(1, output scale)``,
``rtol = 1e-5``; integers exactly. A case with symbolic dims is also run at another size. Combinations ONNX
cannot express raise ``UnsupportedOpError`` naming the reason.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import bridge
from bridge.backends.onnx import MIN_OPSET, max_opset
from bridge.backends.ort import session
from bridge.errors import UnsupportedOpError
from tests.helpers import Fn, tensor_leaves

OPSETS = sorted({MIN_OPSET, max_opset()})
RTOL = 1e-5




def _compare(got, ref, where):
    assert got.shape == tuple(ref.shape), f"{where}: shape {got.shape} != {tuple(ref.shape)}"
    ref = ref.detach()
    g = torch.from_numpy(got)
    if not ref.is_floating_point():
        assert torch.equal(g.to(ref.dtype), ref), f"{where}: integer outputs differ"
        return
    finite = ref[torch.isfinite(ref)]
    scale = float(finite.abs().max()) if finite.numel() else 1.0
    torch.testing.assert_close(g, ref, rtol=RTOL, atol=1e-5 * max(1.0, scale), equal_nan=True,
                               msg=lambda m: f"{where}: {m}")


def check(model, inputs, opset, dynamic=None, other=None):
    """Export ``model`` traced on ``inputs`` at ``opset``; onnxruntime must match eager on ``inputs`` (and on
    ``other``, inputs of another size, for symbolic dims)."""
    torch.manual_seed(0)
    model = model.eval() if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()) \
        else model
    g = bridge.trace(model, inputs, frontend="fx", dynamic=dynamic)
    proto = bridge.to_onnx(g, None, opset=opset, optimize=False)
    sess = session(proto)
    for xs in [inputs] + ([other] if other is not None else []):
        with torch.no_grad():
            ref = tensor_leaves(model(*xs))
        got = sess.run(None, {i.name: x.numpy() for i, x in zip(sess.get_inputs(), tensor_leaves(xs))})
        assert len(got) == len(ref)
        for i, (a, b) in enumerate(zip(got, ref)):
            _compare(a, b, f"output {i} (opset {opset})")


def refuses(model, inputs, opset, match):
    g = bridge.trace(model, inputs, frontend="fx")
    with pytest.raises(UnsupportedOpError, match=match):
        bridge.to_onnx(g, None, opset=opset, optimize=False)


def r(*s):
    torch.manual_seed(sum(s) + len(s))
    return torch.randn(*s)


def _uniform(m):
    torch.manual_seed(1)
    for p in m.parameters():
        p.data.uniform_(-0.5, 0.5)
    return m.eval()


opsets = pytest.mark.parametrize("opset", OPSETS, ids=[f"opset{o}" for o in OPSETS])


# ---- recurrent layers -------------------------------------------------------------------------------
RNNS = [nn.LSTM, nn.GRU, nn.RNN]


def _state(cls, layers_dirs, batch, hidden):
    if batch is None:
        h = r(layers_dirs, hidden)
        return (h, r(layers_dirs, hidden) + 0.1) if cls is nn.LSTM else h
    h = r(layers_dirs, batch, hidden)
    return (h, r(layers_dirs, batch, hidden) + 0.1) if cls is nn.LSTM else h


@opsets
@pytest.mark.parametrize("cls", RNNS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("with_state", [False, True], ids=["zero_state", "given_state"])
def test_rnn_bidirectional_two_layers_batch_first(cls, with_state, opset):
    m = _uniform(cls(4, 5, num_layers=2, batch_first=True, bidirectional=True))
    x = r(2, 3, 4)
    check(m, (x, _state(cls, 4, 2, 5)) if with_state else (x,), opset)


@opsets
@pytest.mark.parametrize("cls", RNNS, ids=lambda c: c.__name__)
def test_rnn_sequence_first_three_layers_no_bias(cls, opset):
    check(_uniform(cls(3, 4, num_layers=3, bias=False)), (r(5, 2, 3),), opset)


@opsets
@pytest.mark.parametrize("cls", RNNS, ids=lambda c: c.__name__)
def test_rnn_unbatched_bidirectional_with_state(cls, opset):
    check(_uniform(cls(4, 5, bidirectional=True, batch_first=True)), (r(3, 4), _state(cls, 2, None, 5)), opset)


@opsets
def test_rnn_relu(opset):
    check(_uniform(nn.RNN(4, 5, num_layers=2, nonlinearity="relu", bidirectional=True)), (r(3, 2, 4),), opset)


@opsets
def test_gru_symbolic_batch_and_time(opset):
    m = _uniform(nn.GRU(4, 5, num_layers=2, batch_first=True, bidirectional=True))
    check(m, (r(2, 3, 4),), opset, dynamic=({0: "batch", 1: "time"},), other=(r(3, 6, 4),))


@opsets
def test_lstm_projection_is_refused(opset):
    refuses(_uniform(nn.LSTM(4, 5, proj_size=3)), (r(3, 2, 4),), opset, "proj_size")


# ---- attention --------------------------------------------------------------------------------------
class MHA(nn.Module):
    """nn.MultiheadAttention called with fixed keyword arguments; masks come in as inputs, named by ``masks``."""

    def __init__(self, *args, masks=(), call=None, **kwargs):
        super().__init__()
        self.mha = nn.MultiheadAttention(*args, **kwargs)
        self.masks, self.call = tuple(masks), dict(call or {})

    def forward(self, q, k, v, *masks):
        return self.mha(q, k, v, **self.call, **dict(zip(self.masks, masks)))


KPM = torch.tensor([[False, False, False, False, True], [False, True, False, False, True]])


def _mha(*args, **kwargs):
    m = MHA(*args, **kwargs)
    torch.manual_seed(2)
    for p in m.parameters():
        p.data.normal_(0, 0.5)
    return m.eval()


@opsets
@pytest.mark.parametrize("need_weights", [True, False], ids=["weights", "no_weights"])
@pytest.mark.parametrize("batch_first", [True, False], ids=["batch_first", "seq_first"])
def test_mha_key_padding_mask(need_weights, batch_first, opset):
    q, kv = r(2, 3, 8), r(2, 5, 8)
    if not batch_first:
        q, kv = q.transpose(0, 1), kv.transpose(0, 1)
    m = _mha(8, 2, batch_first=batch_first, masks=["key_padding_mask"], call={"need_weights": need_weights})
    check(m, (q, kv, kv, KPM), opset)


@opsets
def test_mha_per_head_weights_with_bool_attn_mask_and_padding(opset):
    am = torch.tensor([[False, True, False, False, True], [False] * 5, [True, False, False, True, False]])
    m = _mha(8, 2, batch_first=True, masks=["key_padding_mask", "attn_mask"],
             call={"average_attn_weights": False})
    check(m, (r(2, 3, 8), r(2, 5, 8), r(2, 5, 8), KPM, am), opset)


@opsets
def test_mha_3d_float_mask_kdim_vdim(opset):
    m = _mha(8, 2, batch_first=True, kdim=5, vdim=3, masks=["attn_mask"])
    check(m, (r(2, 3, 8), r(2, 5, 5), r(2, 5, 3), r(4, 3, 5)), opset)


@opsets
@pytest.mark.parametrize("need_weights", [True, False], ids=["weights", "no_weights"])
def test_mha_causal_hint(need_weights, opset):
    m = _mha(8, 2, batch_first=True, masks=["attn_mask"], call={"is_causal": True, "need_weights": need_weights})
    q = r(2, 4, 8)
    check(m, (q, q, q, nn.Transformer.generate_square_subsequent_mask(4)), opset)


@opsets
def test_mha_bias_kv_and_zero_attn(opset):
    m = _mha(8, 2, batch_first=True, add_bias_kv=True, add_zero_attn=True, masks=["key_padding_mask"])
    check(m, (r(2, 3, 8), r(2, 5, 8), r(2, 5, 8), KPM), opset)


@opsets
def test_mha_unbatched(opset):
    m = _mha(8, 2, masks=["key_padding_mask"])
    check(m, (r(3, 8), r(5, 8), r(5, 8), KPM[1]), opset)


@opsets
def test_mha_symbolic_batch_and_length(opset):
    m = _mha(8, 2, batch_first=True)
    q = r(2, 3, 8)
    check(m, (q, q, q), opset, dynamic=({0: "b", 1: "t"},) * 3, other=(r(3, 5, 8),) * 3)


def _sdpa(**kw):
    return Fn(lambda q, k, v, *m: F.scaled_dot_product_attention(q, k, v, *m, **kw))


@opsets
@pytest.mark.parametrize("lq, lk", [(4, 6), (6, 4)], ids=["L<S", "L>S"])
def test_sdpa_causal(lq, lk, opset):
    check(_sdpa(is_causal=True), (r(2, 2, lq, 8), r(2, 2, lk, 8), r(2, 2, lk, 8)), opset)


@opsets
def test_sdpa_causal_symbolic_lengths(opset):
    dyn = ({0: "b", 2: "l"}, {0: "b", 2: "s"}, {0: "b", 2: "s"})
    check(_sdpa(is_causal=True), (r(2, 2, 4, 8), r(2, 2, 6, 8), r(2, 2, 6, 8)), opset, dynamic=dyn,
          other=(r(3, 2, 5, 8), r(3, 2, 7, 8), r(3, 2, 7, 8)))


@opsets
def test_sdpa_bool_mask_with_fully_masked_row(opset):
    mask = torch.tensor([[True, False, True, True, False, True], [False] * 6,
                         [True] * 6, [False, False, True, False, False, False]])
    check(_sdpa(), (r(2, 2, 4, 8), r(2, 2, 6, 8), r(2, 2, 6, 8), mask), opset)  # the all-False row gives 0


class _ConstMaskAttention(nn.Module):
    def __init__(self, mask):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask)


@opsets
def test_sdpa_constant_masks_keep_torchs_softmax_where_it_matters(opset):
    """torch zeroes a row whose scores are all masked. A constant mask with such a row keeps that guard; a
    constant mask that keeps something in every row, and is_causal alone, need none (plain Softmax)."""
    dead = torch.tensor([[True, False, True, True, False, True], [False] * 6,
                         [True] * 6, [False, False, True, False, False, False]])
    alive = torch.ones(4, 6, dtype=torch.bool).tril()
    qkv = (r(2, 2, 4, 8), r(2, 2, 6, 8), r(2, 2, 6, 8))
    for model, guarded in ((_ConstMaskAttention(dead), True), (_ConstMaskAttention(alive), False),
                           (_sdpa(is_causal=True), False)):
        check(model, qkv, opset)
        proto = bridge.to_onnx(model, None, args=qkv, opset=opset)  # optimized: the mask is a constant
        ops = [n.op_type for n in proto.graph.node]
        assert ("ReduceMax" in ops) == guarded, ops
        out = session(proto).run(None, {i.name: x.numpy() for i, x in zip(session(proto).get_inputs(), qkv)})[0]
        _compare(out, model(*qkv), f"optimized (opset {opset})")


@opsets
def test_sdpa_float_mask_and_scale(opset):
    mask = r(2, 1, 4, 6)
    mask[0, 0, 1] = float("-inf")
    check(_sdpa(scale=0.3), (r(2, 2, 4, 8), r(2, 2, 6, 8), r(2, 2, 6, 5), mask), opset)


@opsets
def test_sdpa_grouped_query(opset):
    check(_sdpa(enable_gqa=True, is_causal=True), (r(1, 6, 5, 8), r(1, 2, 5, 8), r(1, 2, 5, 4)), opset)


@opsets
def test_einsum_uppercase_and_implicit_output(opset):
    check(Fn(lambda a, b: torch.einsum("bIj,bjK", a, b)), (r(2, 3, 4), r(2, 4, 5)), opset)


@opsets
def test_addmm_beta_zero_ignores_nan(opset):
    check(Fn(lambda a, b, c: torch.addmm(a, b, c, beta=0, alpha=0.5)),
          (torch.full((3, 5), float("nan")), r(3, 4), r(4, 5)), opset)


# ---- interpolation ----------------------------------------------------------------------------------
def _interp(**kw):
    return Fn(lambda x: F.interpolate(x, **kw))


_SIZES = [dict(scale_factor=2), dict(scale_factor=1.5), dict(scale_factor=0.6), dict(size=7), dict(size=3),
          dict(scale_factor=1.7, recompute_scale_factor=True), dict(scale_factor=2.3)]


@opsets
@pytest.mark.parametrize("mode", ["nearest", "nearest-exact"])
@pytest.mark.parametrize("rank", [3, 4, 5])
@pytest.mark.parametrize("kw", _SIZES, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
def test_interpolate_nearest(mode, rank, kw, opset):
    check(_interp(mode=mode, **kw), (r(1, 2, 5, 6, 3)[(...,) + (0,) * (5 - rank)],), opset)


@opsets
@pytest.mark.parametrize("mode, rank", [("linear", 3), ("bilinear", 4), ("trilinear", 5), ("bicubic", 4)])
@pytest.mark.parametrize("align_corners", [False, True], ids=["half_pixel", "align_corners"])
@pytest.mark.parametrize("kw", _SIZES[:6] + [dict(size=1)], ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
def test_interpolate_linear_cubic(mode, rank, align_corners, kw, opset):
    check(_interp(mode=mode, align_corners=align_corners, **kw), (r(1, 2, 5, 6, 3)[(...,) + (0,) * (5 - rank)],),
          opset)


@opsets
@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("kw", [dict(scale_factor=0.5), dict(size=(9, 4)), dict(scale_factor=2)],
                         ids=["down", "mixed", "up"])
def test_interpolate_antialias(mode, kw, opset):
    model, x = _interp(mode=mode, antialias=True, **kw), (r(1, 2, 8, 7),)
    if opset < 18 and kw.get("scale_factor") != 2:
        refuses(model, x, opset, "antialias")
    else:
        check(model, x, opset)


@opsets
def test_interpolate_antialias_align_corners_is_refused(opset):
    refuses(_interp(mode="bilinear", antialias=True, align_corners=True, scale_factor=0.5), (r(1, 2, 8, 7),), opset,
            "align_corners")


@opsets
@pytest.mark.parametrize("rank", [3, 4, 5])
@pytest.mark.parametrize("kw", [dict(size=3), dict(scale_factor=0.5), dict(size=7)], ids=["3", "half", "7"])
def test_interpolate_area(rank, kw, opset):
    check(_interp(mode="area", **kw), (r(1, 2, 6, 5, 7)[(...,) + (0,) * (5 - rank)],), opset)


@opsets
def test_interpolate_symbolic_batch(opset):
    check(_interp(mode="bilinear", scale_factor=1.5), (r(2, 3, 4, 5),), opset, dynamic=({0: "n"},),
          other=(r(3, 3, 4, 5),))


@opsets
def test_interpolate_nearest_uint8(opset):
    check(_interp(scale_factor=2.3), (torch.randint(0, 255, (1, 2, 3, 4), dtype=torch.uint8),), opset)


# ---- padding ----------------------------------------------------------------------------------------
@opsets
@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("pad, rank", [((1, 2), 3), ((1, 2, 0, 1), 4), ((1, 2, 2, 1, 1, 0), 5)],
                         ids=["1d", "2d", "3d"])
def test_pad_modes(mode, pad, rank, opset):
    x = r(2, 3, 4, 5, 4)[(...,) + (0,) * (5 - rank)]
    check(Fn(lambda x: F.pad(x, pad, mode=mode, **({"value": 0.5} if mode == "constant" else {}))), (x,), opset)


@opsets
def test_pad_negative_crops(opset):
    check(Fn(lambda x: F.pad(x, (1, -1, -2, 1))), (r(1, 2, 4, 4),), opset)


@opsets
@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_conv_padding_modes(mode, opset):
    check(nn.Conv2d(2, 4, 3, stride=2, padding=(1, 2), groups=2, padding_mode=mode), (r(2, 2, 6, 7),), opset)


# ---- pooling ----------------------------------------------------------------------------------------
def _pool_x(n):
    return r(2, 3, 7, 6, 5)[(...,) + (0,) * (3 - n)]


@opsets
@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("kw", [dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
                                dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
                                dict(kernel_size=2, stride=2, padding=1, ceil_mode=True),
                                dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, divisor_override=5),
                                dict(kernel_size=2, divisor_override=3)],
                         ids=["ceil", "ceil-exclude_pad", "ceil-k2", "ceil-divisor", "divisor"])
def test_avg_pool(n, kw, opset):
    if n == 1 and "divisor_override" in kw:
        pytest.skip("avg_pool1d has no divisor_override")
    check(getattr(nn, f"AvgPool{n}d")(**kw), (_pool_x(n),), opset)


@opsets
@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("kw", [dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, return_indices=True),
                                dict(kernel_size=2, stride=3, padding=1, dilation=2, ceil_mode=True),
                                dict(kernel_size=2, return_indices=True)], ids=["ceil-indices", "dilated", "indices"])
def test_max_pool(n, kw, opset):
    check(getattr(nn, f"MaxPool{n}d")(**kw), (_pool_x(n),), opset)


@opsets
@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("kind", ["Avg", "Max"])
@pytest.mark.parametrize("size", [3, 1, 4], ids=["3", "1", "4"])
def test_adaptive_pool_non_dividing(n, kind, size, opset):
    check(getattr(nn, f"Adaptive{kind}Pool{n}d")(size), (_pool_x(n),), opset)


@opsets
def test_adaptive_max_pool_indices(opset):
    check(nn.AdaptiveMaxPool2d((7, 3), return_indices=True), (r(2, 3, 7, 6),), opset)
    refuses(nn.AdaptiveMaxPool2d(4, return_indices=True), (r(2, 3, 7, 6),), opset, "return_indices")


@opsets
def test_pooling_unbatched(opset):
    check(nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True), (r(3, 7, 8),), opset)
    check(nn.MaxPool2d(3, stride=2, padding=1, return_indices=True), (r(3, 7, 8),), opset)
    check(nn.AdaptiveAvgPool2d(5), (r(3, 7, 8),), opset)


@opsets
@pytest.mark.parametrize("p", [1.0, 3.0, float("inf")])
def test_lp_pool2d(p, opset):
    check(nn.LPPool2d(p, (2, 3), stride=(1, 2), ceil_mode=True), (torch.rand(1, 2, 5, 7) + 0.5,), opset)


# ---- normalization and the rest ---------------------------------------------------------------------
@opsets
def test_batch_norm_training_uses_batch_statistics(opset):
    check(nn.BatchNorm2d(3).train(), (r(4, 3, 2, 2),), opset)


@opsets
@pytest.mark.parametrize("m, x", [(nn.GroupNorm(3, 6), (2, 6, 3, 3)), (nn.GroupNorm(2, 4, affine=False), (2, 4)),
                                  (nn.InstanceNorm1d(3, affine=True), (2, 3, 5)),
                                  (nn.LayerNorm((3, 4), elementwise_affine=False), (2, 3, 4)),
                                  (nn.RMSNorm((3, 4), eps=1e-3), (2, 3, 4)),
                                  (nn.LocalResponseNorm(2), (1, 4, 3, 3)), (nn.LocalResponseNorm(3), (2, 5, 3, 2, 2))],
                         ids=["group", "group-rank2", "instance", "layer", "rms", "lrn-even", "lrn-5d"])
def test_norms(m, x, opset):
    torch.manual_seed(3)
    for p in m.parameters():
        p.data.normal_()
    check(m, (torch.rand(*x) + 0.1,), opset)


@opsets
@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_embedding_bag_offsets_and_padding(mode, opset):
    torch.manual_seed(4)
    m = nn.EmbeddingBag(5, 4, mode=mode, padding_idx=2)
    check(m, (torch.tensor([1, 2, 4, 4, 3, 0, 2]), torch.tensor([0, 2, 3, 5])), opset)  # bag 1 holds only padding
    check(m, (torch.tensor([[2, 2, 1], [0, 1, 3]]),), opset)


@opsets
def test_fold_unfold_rectangular(opset):
    check(nn.Unfold((2, 3), dilation=(1, 2), padding=(1, 0), stride=(2, 1)), (r(2, 3, 5, 7),), opset)
    check(nn.Fold((5, 6), (2, 3), dilation=(1, 2), padding=(1, 0), stride=(2, 1)), (r(2, 6, 6),), opset)


def test_fold_reads_back_from_col2im():
    """fold exports as Col2Im from opset 18 (timm's VOLO folds its outlook attention) and imports back as fold."""
    m, x = nn.Fold((5, 6), (2, 3), dilation=(1, 2), padding=(1, 0), stride=(2, 1)), r(2, 6, 6)
    proto = bridge.to_onnx(m, None, args=(x,), opset=max_opset())
    assert "Col2Im" in {n.op_type for n in proto.graph.node}
    back = bridge.from_onnx(proto)
    assert back.find("fold")
    torch.testing.assert_close(back.run(x * 2), m(x * 2))


@opsets
def test_shuffles_of_other_ranks(opset):
    check(nn.PixelShuffle(2), (r(2, 3, 8, 2, 3),), opset)
    check(nn.PixelUnshuffle(3), (r(2, 3, 6, 3),), opset)
    check(nn.ChannelShuffle(3), (r(2, 6, 5),), opset)


@opsets
def test_transposed_conv_dilated_output_padding(opset):
    check(nn.ConvTranspose3d(2, 3, 3, stride=2, padding=1, dilation=2, output_padding=1, bias=False),
          (r(1, 2, 3, 4, 3),), opset)


@opsets
def test_distances_broadcast(opset):
    check(nn.CosineSimilarity(1), (r(2, 1, 4), r(2, 3, 4)), opset)
    check(nn.PairwiseDistance(p=3.0), (r(2, 3), r(3)), opset)


# ---- aten spellings of the Core ATen opset (what torch.export records) ---------------------------------
aten = torch.ops.aten


def check_export(fn, inputs, op, opset):
    """``fn`` traced with torch.export is a graph of canonical op ``op`` whose run, and whose ONNX at ``opset`` in
    onnxruntime, match eager ``fn`` on ``inputs``."""
    model = Fn(fn)
    g = bridge.trace(model, inputs, frontend="export")
    assert op in {n.op for n in g.nodes}, f"no {op} node in\n{g}"
    with torch.no_grad():
        ref = tensor_leaves(model(*inputs))
    got = g.run(*inputs)
    for a, b in zip(tensor_leaves(got), ref):
        _compare(a.numpy(), b, "g.run")
    sess = session(bridge.to_onnx(g, None, opset=opset, optimize=False))
    outs = sess.run(None, {i.name: x.numpy() for i, x in zip(sess.get_inputs(), tensor_leaves(inputs))})
    assert len(outs) == len(ref)
    for i, (a, b) in enumerate(zip(outs, ref)):
        _compare(a, b, f"output {i} (opset {opset})")


_BAG_IDX, _BAG_OFF = torch.tensor([1, 2, 4, 4, 3, 0, 2]), torch.tensor([0, 2, 3, 5])
ATEN_CASES = {
    "native_layer_norm": (lambda x, w, b: aten.native_layer_norm.default(x, [4], w, b, 1e-5)[0],
                          lambda: (r(2, 3, 4), r(4), r(5)[:4]), "layer_norm"),
    "native_group_norm": (lambda x, w, b: aten.native_group_norm.default(x, w, b, 2, 4, 6, 2, 1e-5)[0],
                          lambda: (r(2, 4, 2, 3), r(4), r(5)[:4]), "group_norm"),
    "_native_batch_norm_legit": (  # torch.export records it as _native_batch_norm_legit_functional
        lambda x, w, b, m, v: aten._native_batch_norm_legit.default(x, w, b, m, v, False, 0.1, 1e-5)[0],
        lambda: (r(2, 3, 4), r(3), r(4)[:3], r(5)[:3], r(3).abs() + 0.5), "batch_norm"),
    "_native_batch_norm_legit.no_stats": (
        lambda x, w, b: aten._native_batch_norm_legit.no_stats(x, w, b, True, 0.1, 1e-5)[0],
        lambda: (r(4, 3, 2), r(3), r(4)[:3]), "batch_norm"),
    **{f"{kind}_pad{n}d": (lambda x, kind=kind, n=n: getattr(aten, f"{kind}_pad{n}d").default(
        x, [2, 1, 1, 0, 1, 2][:2 * n]), lambda n=n: (r(*(1, 2) + (4,) * n),), "pad")
       for kind in ("reflection", "replication") for n in (1, 2, 3)},
    **{f"_embedding_bag-{mode}": (
        lambda w, mode=mode: aten._embedding_bag.default(w, _BAG_IDX, _BAG_OFF, False, mode, False, None, False,
                                                         2 if mode else -1)[0],
        lambda: (r(5, 4),), "embedding_bag") for mode in (0, 1, 2)},
    "col2im": (lambda x: aten.col2im.default(x, [5, 6], [2, 3], [1, 2], [1, 0], [2, 1]), lambda: (r(2, 6, 6),),
               "fold"),
    "grid_sampler_2d": (lambda x, g: aten.grid_sampler_2d.default(x, g, 1, 2, True),
                        lambda: (r(1, 2, 4, 5), torch.rand(1, 3, 2, 2) * 2.4 - 1.2), "grid_sample"),
    "_cdist_forward": (lambda a, b: aten._cdist_forward.default(a, b, 3.0, None), lambda: (r(2, 5, 3), r(2, 4, 3)),
                       "cdist"),
    "_pdist_forward": (lambda x: aten._pdist_forward.default(x, 1.0), lambda: (r(5, 3),), "pdist"),
    **{f"{name}.vec": (lambda x, name=name: getattr(aten, name).vec(x, [10, 9], False, None), lambda: (r(1, 2, 8, 7),),
                       "interpolate")
       for name in ("upsample_bicubic2d", "_upsample_bilinear2d_aa", "_upsample_bicubic2d_aa")},
}


@opsets
@pytest.mark.parametrize("name", list(ATEN_CASES))
def test_aten_spelling(name, opset):
    fn, inputs, op = ATEN_CASES[name]
    check_export(fn, inputs(), op, opset)


def test_aten_batch_norm_legit_default_adapter():
    """torch.export never records _native_batch_norm_legit.default (it records the functional form, above): its
    adapter, checked through the frontends' mapping, gives batch_norm with the running statistics."""
    from bridge.frontends.common import canonical_call

    x, w, b, m, v = object(), object(), object(), object(), object()
    opdef, canon, wrap = canonical_call("aten", aten._native_batch_norm_legit.default,
                                        (x, w, b, m, v, True, 0.3, 1e-3), {})
    assert opdef.name == "batch_norm" and canon == {"input": x, "running_mean": m, "running_var": v, "weight": w,
                                                    "bias": b, "training": True, "momentum": 0.3, "eps": 1e-3}
    out = wrap("y")
    assert out[0] == "y" and len(out) == 3
    with pytest.raises(bridge.errors.TraceError, match="'save_rstd' output of aten._native_batch_norm_legit "):
        out[2] + 1


@pytest.mark.fault
@pytest.mark.parametrize("fn, output", [
    (lambda x: aten.native_layer_norm.default(x, [4], None, None, 1e-5)[1] * 2, "mean"),
    (lambda x: torch.relu(aten.native_group_norm.default(x, None, None, 2, 4, 4, 2, 1e-5)[2]), "rstd"),
    (lambda x: aten._native_batch_norm_legit.no_stats(x, None, None, True, 0.1, 1e-5)[1] + x.sum(), "save_mean"),
], ids=["layer_norm-mean", "group_norm-rstd", "batch_norm-save_mean"])
def test_uncomputed_secondary_output_is_refused_by_name(fn, output):
    with pytest.raises(bridge.errors.TraceError, match=f"'{output}' output of aten"):
        bridge.trace(Fn(fn), (r(2, 4, 4),), frontend="export")


# ---- grid_sample --------------------------------------------------------------------------------------
def _grid(*s):
    torch.manual_seed(7)
    return torch.rand(*s) * 2.6 - 1.3  # reaches outside [-1, 1]: exercises the padding modes


@opsets
@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align_corners", [False, True])
def test_grid_sample(mode, padding_mode, align_corners, opset):
    fn = lambda x, g: F.grid_sample(x, g, mode, padding_mode, align_corners)  # noqa: E731
    check(Fn(fn), (r(2, 3, 5, 4), _grid(2, 3, 6, 2)), opset)


@opsets
def test_grid_sample_5d(opset):
    model, inputs = Fn(lambda x, g: F.grid_sample(x, g, align_corners=False)), (r(1, 2, 3, 4, 5), _grid(1, 2, 3, 2, 3))
    if opset < 20:
        refuses(model, inputs, opset, "before opset 20")
    else:
        check(model, inputs, opset)


@pytest.mark.parametrize("opset, mode, ours", [(16, "bilinear", "bilinear"), (16, "bicubic", "bicubic"),
                                               (20, "linear", "bilinear"), (20, "cubic", "bicubic"),
                                               (20, "nearest", "nearest")])
def test_grid_sample_import(opset, mode, ours):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from tests.helpers import import_matches_onnxruntime

    grid = numpy_helper.from_array(_grid(1, 3, 4, 2).numpy(), "grid")
    node = helper.make_node("GridSample", ["x", "grid"], ["y"], mode=mode, padding_mode="reflection",
                            align_corners=1)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3, 4])], [grid])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = min(proto.ir_version, 9)
    onnx.checker.check_model(proto)
    g = import_matches_onnxruntime(proto, r(1, 2, 5, 5))
    (n,) = [n for n in g.nodes if n.op == "grid_sample"]
    assert n.args["mode"] == ours and n.args["padding_mode"] == "reflection" and n.args["align_corners"] is True


# ---- cdist and pdist ----------------------------------------------------------------------------------
@opsets
@pytest.mark.parametrize("p", [0.0, 1.0, 2.0, 3.0, float("inf")])
def test_cdist_norms_and_batch_broadcast(p, opset):
    check(Fn(lambda a, b: torch.cdist(a, b, p)), (r(2, 1, 5, 3), r(3, 4, 3)), opset)


@opsets
@pytest.mark.parametrize("compute_mode, rows", [("use_mm_for_euclid_dist_if_necessary", 30),
                                                ("use_mm_for_euclid_dist", 4),
                                                ("donot_use_mm_for_euclid_dist", 30)])
def test_cdist_euclidean_compute_modes(compute_mode, rows, opset):
    check(Fn(lambda a, b: torch.cdist(a, b, compute_mode=compute_mode)), (r(2, rows, 6), r(2, 7, 6)), opset)


@opsets
@pytest.mark.parametrize("p", [0.0, 1.0, 2.0, 0.5, float("inf")])
def test_pdist_norms(p, opset):
    check(Fn(lambda x: F.pdist(x, p)), (r(6, 4),), opset)


@opsets
def test_cdist_symbolic_rows(opset):
    # symbolic rows: the matrix-product form, as torch takes for more than 25; a run with fewer matches too
    check(Fn(lambda a, b: torch.cdist(a, b)), (r(30, 4), r(6, 4)), opset, dynamic=({0: "n"}, {0: "m"}),
          other=(r(3, 4), r(5, 4)))


@pytest.mark.fault
@opsets
def test_pdist_symbolic_rows_is_refused(opset):
    g = bridge.trace(Fn(lambda x: F.pdist(x)), (r(6, 4),), frontend="fx", dynamic=({0: "n"},))
    with pytest.raises(UnsupportedOpError, match="symbolic number of rows"):
        bridge.to_onnx(g, None, opset=opset, optimize=False)


def _node(g, op):
    (n,) = [n for n in g.nodes if n.op == op]
    return n


@pytest.mark.parametrize("fn, inputs, op, expected", [
    # one multiply-add (2 FLOPs) per tap: bilinear 2 x 2 taps per output element, 2 * 3 * 6 * 2 = 72 elements
    (lambda x, g: F.grid_sample(x, g, align_corners=False), (r(2, 3, 5, 4), _grid(2, 6, 2, 2)), "grid_sample",
     2 * 4 * 72),
    (lambda x, g: F.grid_sample(x, g, "bicubic", align_corners=False), (r(2, 3, 5, 4), _grid(2, 6, 2, 2)),
     "grid_sample", 2 * 16 * 72),
    (lambda x, g: F.grid_sample(x, g, "nearest", align_corners=False), (r(2, 3, 5, 4), _grid(2, 6, 2, 2)),
     "grid_sample", 0),
    # sub, power and add per feature for each of the 2 * 5 * 4 distances over M = 3 features
    (lambda a, b: torch.cdist(a, b), (r(2, 5, 3), r(2, 4, 3)), "cdist", 3 * 3 * 40),
    # 6 * 5 / 2 = 15 pairs over M = 4 features
    (lambda x: F.pdist(x), (r(6, 4),), "pdist", 3 * 4 * 15),
], ids=["grid_sample-bilinear", "grid_sample-bicubic", "grid_sample-nearest", "cdist", "pdist"])
def test_flops(fn, inputs, op, expected):
    n = _node(bridge.trace(Fn(fn), inputs, frontend="fx"), op)
    assert bridge.ops.get(op).flops(n) == expected


@pytest.mark.fault
def test_an_uncomputed_secondary_output_returned_by_the_model_is_refused():
    """native_layer_norm's mean, returned as an output (nested in a dict), is refused by name, not returned as a
    placeholder; native_dropout maps to dropout with its mask likewise uncomputed."""
    class M(torch.nn.Module):
        def forward(self, x):
            out, mean, _ = torch.ops.aten.native_layer_norm.default(x, [4], None, None, 1e-5)
            return out, {"m": mean}

    with pytest.raises(bridge.TraceError, match="'mean' output of aten.native_layer_norm"):
        bridge.trace(M(), (torch.randn(2, 4),), frontend="export")

    class D(torch.nn.Module):
        def forward(self, x):
            return torch.ops.aten.native_dropout.default(x, 0.5, False)[0] * 2

    x = torch.randn(2, 4)
    g = bridge.trace(D(), (x,), frontend="export")
    assert [n.op for n in g.nodes][:1] == ["dropout"]
    torch.testing.assert_close(g.run(x), D()(x))


@pytest.mark.parametrize("padding,output_padding", [((1, 2), (2, 3)), ((3, 0), (1, 1)), ((0, 0), (1, 3))])
def test_conv_transpose_output_padding_up_to_the_dilation_exports(padding, output_padding):
    """torch allows output_padding below the stride OR the dilation; onnxruntime only below the stride. The
    lowering says it with a smaller end pad instead (found by benchmarks/opinfo.py). Checked in onnxruntime."""
    import onnxruntime as ort

    torch.manual_seed(0)
    m = nn.ConvTranspose2d(4, 4, (4, 5), stride=(3, 2), padding=padding, output_padding=output_padding, groups=2,
                           dilation=(4, 4)).eval()
    x, fresh = torch.randn(2, 4, 4, 4), torch.randn(2, 4, 4, 4)
    proto = bridge.to_onnx(m, args=(x,))
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = m(fresh)
    torch.testing.assert_close(torch.from_numpy(sess.run(None, {"input": fresh.numpy()})[0]), ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(bridge.from_onnx(proto).to_module()(fresh), ref, atol=1e-5, rtol=1e-4)
