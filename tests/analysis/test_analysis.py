"""bridge.analysis: exact parameter counts and FLOPs on known architectures (ResNet-18/50 written here, since
torchvision may be absent), FLOPs against torch.utils.flop_counter.FlopCounterMode, per-family formulas, peak
activation memory by hand, topology facts, golden reports, and diffs (a model against itself, and against
modified copies: exactly the change)."""
from __future__ import annotations

import copy
import json
import math
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import bridge
from bridge import zoo
from bridge.analysis import NodeCost, module_rows, node_costs
from bridge.analysis.memory import liveness
from bridge.zoo import BasicBlock, Bottleneck, ResNet, residual_graph

GOLDEN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "golden")


# ---- architectures with published figures ---------------------------------------------------------------
def fcm_flops(model, args, kwargs=None) -> int:
    """FlopCounterMode's count. Its CPU SDPA kernel and the fused MHA/transformer fast path are not in its
    table, so they run as their math decompositions (which it counts: mm/bmm)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with FlopCounterMode(display=False) as f, sdpa_kernel(SDPBackend.MATH), torch.no_grad():
            model(*args, **(kwargs or {}))
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
    return f.get_total_flops()


@pytest.fixture(scope="module")
def resnet50_summary():
    torch.manual_seed(0)
    m = ResNet(Bottleneck, (3, 4, 6, 3)).eval()
    x = torch.randn(1, 3, 224, 224)
    return m, x, bridge.summary(m, (x,), shapes="fake")


def test_resnet50_published_figures(resnet50_summary):
    """ResNet-50 at 224x224: 25,557,032 parameters (torchvision's count) and 4.09 GMACs (torchinfo/fvcore
    report 4.09 G mult-adds for its convolutions and the classifier; bridge's macs are exactly those)."""
    m, x, s = resnet50_summary
    T = s.totals
    assert T["params"] == 25_557_032 == sum(p.numel() for p in m.parameters())
    assert T["trainable_params"] == 25_557_032 and T["frozen_params"] == 0
    assert T["macs"] == 4_089_184_256
    assert round(T["macs"] / 1e9, 2) == 4.09
    conv_linear = sum(c.macs for n, c in s.costs.items() if n.op in ("conv", "linear"))
    assert conv_linear == T["macs"]  # nothing else in a ResNet multiplies-accumulates
    assert T["param_bytes"] == 25_557_032 * 4
    # flops: 2 per MAC, plus batch norm (4 per element, eval), ReLU, max pool windows, residual adds, the
    # average pool and the classifier bias
    bn = sum(4 * c.out_bytes // 4 for n, c in s.costs.items() if n.op == "batch_norm")
    rest = sum(c.flops for n, c in s.costs.items() if n.op not in ("conv", "linear", "batch_norm"))
    assert T["flops"] == 2 * T["macs"] + bn + rest + 1000


def test_resnet50_flops_equal_flop_counter(resnet50_summary):
    m, x, s = resnet50_summary
    assert fcm_flops(m, (x,)) == 2 * s.totals["macs"] == 8_178_368_512
    # bias-free convolutions and the classifier's matmul: FlopCounterMode's count is exactly the conv FLOPs
    assert sum(c.flops for n, c in s.costs.items() if n.op == "conv") == 2 * sum(
        c.macs for n, c in s.costs.items() if n.op == "conv")


def test_resnet18_published_figures():
    torch.manual_seed(0)
    m = ResNet(BasicBlock, (2, 2, 2, 2)).eval()
    x = torch.randn(1, 3, 224, 224)
    s = bridge.summary(m, (x,), shapes="fake")
    assert s.totals["params"] == 11_689_512
    assert s.totals["macs"] == 1_814_073_344  # torchinfo's "Total mult-adds (G): 1.81", fvcore's 1.82 G
    assert fcm_flops(m, (x,)) == 2 * s.totals["macs"]
    t = bridge.topology(s.graph)
    assert len(t.skip_connections) == 8 == sum(isinstance(mod, BasicBlock) for mod in m.modules())


# ---- FLOPs against FlopCounterMode --------------------------------------------------------------------
FAST_ZOO = ["mlp", "resnet_mini", "densenet_mini", "mobilenetv2_mini", "unet_mini", "conv1d_net", "conv3d_net",
            "bigru", "transformer_encoder", "causal_attention", "mha", "einsum_bmm", "pad_shuffle_upsample",
            "tied_weights"]


def _zoo_check(name):
    e = zoo.get(name)
    m = e.make_model()
    args, kwargs = e.make_inputs(e.batch)
    g = bridge.trace(m, args, kwargs, dynamic=e.dynamic)
    costs = node_costs(g)
    assert 2 * sum(c.macs for c in costs.values()) == fcm_flops(m, args, kwargs), name


@pytest.mark.parametrize("name", FAST_ZOO)
def test_macs_equal_flop_counter_on_zoo(name):
    """FlopCounterMode counts matrix products (mm, bmm, addmm, conv, SDPA) at 2 per multiply-add; bridge's
    ``2 * macs`` equals it on every model, at the traced batch (symbolic batch sized at its example)."""
    _zoo_check(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", [e.name for e in zoo.entries(exclude_tags=("torchvision", "slow"))
                                  if e.name not in FAST_ZOO and e.name != "lstm_tagger"])
def test_macs_equal_flop_counter_rest_of_zoo(name):
    _zoo_check(name)


class Ops(nn.Module):
    """One of each matrix product FlopCounterMode counts, none with a bias: its count is bridge's FLOPs."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, stride=2, padding=1, groups=3, bias=False)
        self.convt = nn.ConvTranspose2d(6, 4, 3, stride=2, bias=False)
        self.conv1d = nn.Conv1d(4, 8, 5, dilation=2, bias=False)
        self.lin = nn.Linear(8, 5, bias=False)

    def forward(self, x, a, b):
        y = self.convt(self.conv(x))                        # conv (grouped, strided), conv_transpose
        z = self.conv1d(y.flatten(2))                      # conv1d (dilated)
        w = self.lin(z.transpose(1, 2))                    # matmul without bias
        p = torch.bmm(a, b) + torch.matmul(a, b) + a @ b   # bmm, matmul, operator
        q = torch.mm(a[0], b[0])
        e = torch.einsum("bij,bjk->bik", a, b) + torch.einsum("...ij,...jk->...ik", a, b)
        return w, p, q, e


def test_flops_equal_flop_counter_exactly_on_matmul_and_conv():
    torch.manual_seed(0)
    m = Ops().eval()
    args = (torch.randn(2, 3, 10, 10), torch.randn(3, 4, 6), torch.randn(3, 6, 5))
    g = bridge.trace(m, args)
    costs = node_costs(g)
    products = [n for n in g.nodes if n.op in ("conv", "conv_transpose", "linear", "bmm", "matmul", "mm", "einsum")]
    assert len(products) == 10
    assert sum(costs[n].flops for n in products) == fcm_flops(m, args)
    for n in products:
        assert costs[n].flops == 2 * costs[n].macs


class Attn(nn.Module):
    def forward(self, q, k, v, mask):
        a = F.scaled_dot_product_attention(q, k, v)
        b = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return a + b


def test_sdpa_flops_against_flop_counter():
    """SDPA: FlopCounterMode counts its two matrix products (2 * macs, exactly); bridge's FLOPs add what the
    fused kernel does besides, per attention score: scale 1, mask add 1 when given, softmax 5."""
    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 4)
    mask = torch.randn(5, 7)
    g = bridge.trace(Attn(), (q, k, v, mask))
    sdpa = g.find("scaled_dot_product_attention")
    costs = node_costs(g)
    assert 2 * sum(costs[n].macs for n in sdpa) == fcm_flops(Attn(), (q, k, v, mask)) == 2 * 2 * (
        2 * 3 * 5 * 7 * 8 + 2 * 3 * 5 * 7 * 4)
    scores = 2 * 3 * 5 * 7
    assert costs[sdpa[0]].flops == 2 * costs[sdpa[0]].macs + 6 * scores
    assert costs[sdpa[1]].flops == 2 * costs[sdpa[1]].macs + 7 * scores


def test_einsum_three_operands_and_implicit_output():
    class E(nn.Module):
        def forward(self, a, b, c):
            return torch.einsum("ij,jk,kl->il", a, b, c), torch.einsum("ij,jk", a, b), torch.einsum("ii", b[:, :4])

    a, b, c = torch.randn(3, 4), torch.randn(4, 5), torch.randn(5, 6)
    g = bridge.trace(E(), (a, b, c))
    costs = node_costs(g)
    e3, e2, tr = g.find("einsum")
    assert costs[e3].macs == 3 * 4 * 5 + 3 * 5 * 6  # (ij,jk)->ik, then (ik,kl)->il, left to right as torch
    assert costs[e2].macs == 3 * 4 * 5
    assert costs[tr].macs == 0 and costs[tr].flops == 16  # a trace sums 4 of 16 elements read: 1 per element
    assert 2 * (costs[e3].macs + costs[e2].macs) == fcm_flops(E(), (a, b, c))


def test_rnn_flops_by_hand():
    """LSTM/GRU/RNN: every weight matrix once per step and sample (macs), the gate arithmetic per hidden unit
    (LSTM 13, GRU 11, RNN 2) and 2 bias adds per gate unit. FlopCounterMode does not count CPU LSTMs at all."""
    T, B, I, H = 5, 3, 8, 16
    x = torch.randn(T, B, I)
    for cls, gates, per_h in ((nn.LSTM, 4, 13), (nn.GRU, 3, 11), (nn.RNN, 1, 2)):
        m = cls(I, H, num_layers=2, bidirectional=True).eval()
        g = bridge.trace(m, (x,))
        (node,) = [n for n in g.nodes if n.op in ("lstm", "gru", "rnn")]
        c = node_costs(g)[node]
        mats = gates * H * I * 2 + gates * H * H * 2 + gates * H * (2 * H) * 2 + gates * H * H * 2
        assert c.macs == mats * T * B
        assert c.params == sum(p.numel() for p in m.parameters())
        assert c.flops == 2 * c.macs + 4 * (per_h * H + 2 * gates * H) * T * B
    # the GRU's matrix products are what FlopCounterMode sees (it decomposes GRU into addmm on CPU)
    gru = nn.GRU(I, H).eval()
    g = bridge.trace(gru, (x,))
    assert 2 * sum(c.macs for c in node_costs(g).values()) == fcm_flops(gru, (x,))


def test_norm_pool_elementwise_formulas():
    class N(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm2d(4)
            self.ln = nn.LayerNorm(6)
            self.ln0 = nn.LayerNorm(6, elementwise_affine=False)
            self.gn = nn.GroupNorm(2, 4)
            self.pool = nn.MaxPool2d(2)
            self.avg = nn.AvgPool2d(3, stride=1)

        def forward(self, x):
            return self.bn(x), self.ln(x), self.ln0(x), self.gn(x), self.pool(x), self.avg(x), torch.relu(x) * 2

    x = torch.randn(2, 4, 6, 6)
    g = bridge.trace(N().eval(), (x,))
    c = {n.name: node_costs(g)[n] for n in g.nodes}
    numel = x.numel()
    assert c["bn"].flops == 4 * numel     # eval: normalize 2 + affine 2 (running statistics)
    assert c["ln"].flops == 7 * numel     # statistics 3 + normalize 2 + affine 2
    assert c["ln0"].flops == 5 * numel
    assert c["gn"].flops == 7 * numel
    assert c["pool"].flops == 4 * (numel // 4)    # 2x2 window per output
    assert c["avg"].flops == 9 * 2 * 4 * 4 * 4    # 3x3 window, 4x4 outputs
    assert c["relu"].flops == numel and c["mul"].flops == numel
    assert all(v.macs == 0 for v in c.values())
    assert c["bn"].params == 8 and c["ln"].params == 12 and c["ln0"].params == 0


def test_node_cost_contract():
    """The fields other code imports (pictures, sequential staging): flops, macs, params, param_bytes, out_bytes."""
    m = nn.Sequential(nn.Linear(4, 3), nn.ReLU()).eval()
    g = bridge.trace(m, (torch.randn(5, 4),))
    lin, relu = g.nodes
    costs = node_costs(g)
    assert costs[lin] == NodeCost(flops=2 * 4 * 15 + 15, macs=4 * 15, params=15, param_bytes=60, out_bytes=60)
    assert costs[relu] == NodeCost(flops=15, macs=0, params=0, param_bytes=0, out_bytes=60)


# ---- parameters -----------------------------------------------------------------------------------------
def test_shared_weights_counted_once_and_frozen_split():
    e = zoo.get("tied_weights")
    m = e.make_model()
    args, kwargs = e.make_inputs(2)
    s = bridge.summary(m, args, kwargs)
    assert s.totals["params"] == sum(p.numel() for p in m.parameters())  # parameters() counts a tied one once
    assert sum(c.params for c in s.costs.values()) == s.totals["params"]

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(6, 6)
            self.b = nn.Linear(6, 2)

        def forward(self, x):
            return self.b(self.a(self.a(x)))  # a called twice: its weights count at its first call

    m = Two()
    m.a.requires_grad_(False)
    s = bridge.summary(m, (torch.randn(3, 6),))
    assert s.totals["params"] == 42 + 14
    assert s.totals["frozen_params"] == 42 and s.totals["trainable_params"] == 14
    a_rows = [r for r in s.rows if r.scope == "a"]
    assert [r.params for r in a_rows] == [42, 0] and [r.frozen_params for r in a_rows] == [42, 0]


def test_unused_parameters_are_in_the_total():
    class U(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Linear(3, 3)
            self.spare = nn.Linear(3, 100)

        def forward(self, x):
            return self.used(x)

    s = bridge.summary(U(), (torch.randn(2, 3),))
    assert s.totals["params"] == 12 + 400 and s.totals["unused_params"] == 400
    assert sum(c.params for c in s.costs.values()) == 12


# ---- summary table ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def resnet_mini():
    e = zoo.get("resnet_mini")
    m = e.make_model()
    args, kwargs = e.make_inputs(2)
    return m, args, bridge.trace(m, args, kwargs)


def test_summary_rows_by_depth(resnet_mini):
    m, args, g = resnet_mini
    s1 = bridge.summary(g, depth=1)
    assert [r.name for r in s1.rows] == ["ResNetMini", "conv1", "bn1", "relu", "maxpool", "layer1", "layer2",
                                         "layer3", "avgpool", "flatten", "fc"]
    assert [r.kind for r in s1.rows][-2:] == ["op", "module"]
    top = {r.name: r for r in s1.rows}
    for child in m.named_children():
        assert top[child[0]].params == sum(p.numel() for p in child[1].parameters())
    assert sum(r.params for r in s1.rows[1:]) == s1.totals["params"] == sum(p.numel() for p in m.parameters())
    assert sum(r.flops for r in s1.rows[1:]) == s1.totals["flops"] == s1.rows[0].flops
    assert top["layer2"].output_shape == [[2, 16, 8, 8]] and top["fc"].output_shape == [[2, 10]]
    s3 = bridge.summary(g)  # depth 3, as torchinfo's default
    assert max(r.depth for r in s3.rows) == 3
    relu = [r for r in s3.rows if r.scope == "layer1.0.relu"]
    assert len(relu) == 2  # one ReLU module called twice: two rows, as torchinfo
    assert [r.scope for r in s3.rows if r.depth == 2][:2] == ["layer1.0", "layer1.1"]
    sn = bridge.summary(g, by="node")
    assert len(sn.rows) == len(g.nodes) + 1 and sn.totals == s3.totals


def test_module_rows_for_the_layer_view(resnet_mini):
    """The public layer view other code builds on: scope, depth, params, flops, output shape, nodes."""
    _, _, g = resnet_mini
    rows = module_rows(g, 2)
    costs = node_costs(g)
    blk = next(r for r in rows if r.scope == "layer1.0")
    assert (blk.type, blk.depth, blk.kind) == ("BasicBlock", 2, "module")
    assert blk.params == sum(costs[n].params for n in blk.nodes) == 1184
    assert blk.flops == sum(costs[n].flops for n in blk.nodes)
    assert [n.op for n in blk.nodes][-2:] == ["add", "relu"]
    assert blk.output_shape == [[2, 8, 16, 16]]


def test_summary_renders_text_json_csv(resnet_mini):
    _, _, g = resnet_mini
    s = bridge.summary(g, depth=2)
    text = str(s)
    assert "\x1b" not in text  # not a terminal: no colour codes
    assert "Layer (type)" in text and "└─layer1 (Sequential)" in text and "Total params: 9,426" in text
    assert "Trainable params: 9,426" in text and "peak live" in text
    d = json.loads(s.to_json())
    assert d["totals"] == s.totals and len(d["rows"]) == len(s.rows)
    assert d["rows"][1] == s.rows[1].to_dict()
    lines = s.to_csv().splitlines()
    assert len(lines) == len(s.rows) + 1 and lines[0].startswith("name,type,kind,depth,scope,output_shape")
    assert lines[1].split(",")[:4] == ["ResNetMini", "ResNetMini", "model", "0"]


def test_summary_symbolic_dims_sized_at_the_example():
    m = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 3)).eval()
    x = torch.randn(4, 10)
    static = bridge.summary(m, (x,))
    g = bridge.trace(m, (x,), dynamic={"input": {0: "batch"}})
    dyn = bridge.summary(g)
    assert g.inputs[0].spec.shape[0] == "batch"
    assert dyn.totals["flops"] == static.totals["flops"] and dyn.totals["dims"] == {"batch": 4}
    assert dyn.totals["peak_activation_bytes"] == static.totals["peak_activation_bytes"]
    big = bridge.summary(g, dims={"batch": 16})
    assert big.totals["flops"] == 4 * static.totals["flops"] and big.totals["macs"] == 4 * static.totals["macs"]
    assert dyn.rows[1].output_shape == [["batch", 20]]


def test_summary_of_bad_input_is_a_typed_error():
    with pytest.raises(bridge.BridgeError, match="expected an nn.Module"):
        bridge.summary(42)
    with pytest.raises(bridge.BridgeError, match="'module' or 'node'"):
        bridge.summary(nn.Linear(2, 2), (torch.randn(1, 2),), by="layer")


# ---- peak memory ------------------------------------------------------------------------------------------
def test_peak_activation_memory_by_hand():
    """A chain frees each tensor after its last reader: the peak is input + two neighbours; a ReLU runs in
    place on a fresh tensor (as the generated forward does); a residual keeps its input alive across the
    block; a view adds no bytes."""
    m = nn.Sequential(nn.Linear(10, 100), nn.ReLU(), nn.Linear(100, 50), nn.ReLU(), nn.Linear(50, 5)).eval()
    x = torch.randn(8, 10)
    s = bridge.summary(m, (x,))
    f = 4 * 8  # bytes per feature at batch 8
    # when the second linear runs: input (10) + relu out, in linear0's storage (100) + its own output (50)
    assert s.totals["peak_activation_bytes"] == f * (10 + 100 + 50)
    assert s.totals["peak_at"] == "%2 (2)"
    assert s.totals["input_bytes"] == f * 10 and s.totals["output_bytes"] == f * 5
    assert s.totals["activation_bytes"] == f * (100 + 100 + 50 + 50 + 5)

    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(16, 64)
            self.b = nn.Linear(64, 16)

        def forward(self, x):
            h = self.b(torch.relu(self.a(x))).view(4, 2, 16)
            return h.reshape(8, 16) + x

    g = bridge.trace(Res(), (torch.randn(8, 16),))
    live = liveness(g)
    f = 4 * 8
    assert live.peak_bytes == f * (16 + 64 + 16)          # x, relu (in place, a's storage), b
    assert live.peak_node.name == "b" and live.width == 3
    add = g.find("add")[0]
    assert live.live_bytes[add] == f * (16 + 16 + 16)     # x, b (viewed twice, no new bytes), the sum


# ---- topology ---------------------------------------------------------------------------------------------
def _topo(name):
    e = zoo.get(name)
    m = e.make_model()
    args, kwargs = e.make_inputs(2)
    return m, bridge.topology(bridge.trace(m, args, kwargs, dynamic=e.dynamic))


def test_mlp_is_a_chain_and_a_sequential():
    m, t = _topo("mlp")
    assert t.is_chain and t.kind == "chain" and t.sequential and t.why_not_sequential is None
    assert not t.branch_points and not t.merge_points and not t.skip_connections
    assert t.depth == 6  # fc1, act, drop, fc2, silu, out
    assert t.width == 3  # input, the tensor being read, the one being written
    _, v = _topo("vgg_mini")
    assert v.is_chain and v.sequential


def test_resnet_one_skip_per_residual_block():
    m, t = _topo("resnet_mini")
    blocks = [p for p, mod in m.named_modules() if isinstance(mod, (BasicBlock, Bottleneck))]
    assert len(blocks) == 5
    assert len(t.skip_connections) == len(blocks) == len(t.merge_points)
    assert sorted(s.target.scope.path for s in t.skip_connections) == sorted(blocks)
    assert all(s.target.op == "add" for s in t.skip_connections)
    by = {s.target.scope.path: s for s in t.skip_connections}
    assert (by["layer1.0"].length, by["layer1.0"].over) == (1, 6)      # identity over conv-bn-relu-conv-bn
    assert (by["layer2.0"].length, by["layer2.0"].over) == (3, 6)      # projection: downsample conv, bn
    assert by["layer1.0"].source.name == "maxpool"
    assert not t.is_chain and not t.sequential
    assert t.why_not_sequential == "layer1.0: add merges two paths (%layer1.0.bn2, %maxpool)"


def test_densenet_merges_by_concat():
    """Each dense layer after the first concatenates every earlier feature map, and so does each block's end:
    a cat of k maps is a merge with k - 1 skips (the earlier maps jump the layers after them)."""
    m, t = _topo("densenet_mini")
    assert [(n.scope.path, n.op, len(n.inputs)) for n in t.merge_points] == [
        ("features.3.denselayer2", "cat", 2), ("features.3.denselayer3", "cat", 3), ("features.3", "cat", 4),
        ("features.5.denselayer2", "cat", 2), ("features.5", "cat", 3)]
    into = {n.name: sum(1 for s in t.skip_connections if s.target is n) for n in t.merge_points}
    assert all(into[n.name] == len(n.inputs) - 1 for n in t.merge_points) and len(t.skip_connections) == 9
    assert all(s.length == 1 for s in t.skip_connections)
    assert t.why_not_sequential.startswith("features.3.denselayer2: cat merges two paths")


def test_unet_skips_jump_the_bottleneck_and_chain_depth():
    _, t = _topo("unet_mini")
    assert len(t.skip_connections) == 2 and all(s.target.op == "cat" for s in t.skip_connections)
    assert all(s.length == 1 and s.over > 3 for s in t.skip_connections)
    m = nn.Sequential(*[nn.Linear(4, 4) for _ in range(7)])
    t = bridge.topology(bridge.trace(m, (torch.randn(2, 4),)))
    assert t.is_chain and t.depth == 7 and t.width == 3


def test_topology_reasons_name_the_first_offender():
    class TwoOut(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 3)

        def forward(self, x):
            h = self.a(x)
            return h, torch.relu(h)

    t = bridge.topology(TwoOut(), (torch.randn(2, 3),))
    assert not t.sequential and t.why_not_sequential == "the graph has 2 tensor outputs"
    assert t.branch_points[0].name == "a" and not t.skip_connections
    d = t.to_dict()
    assert d["kind"] == "DAG" and d["branch_points"][0]["scope"] == "a" and json.dumps(d)


# ---- report -----------------------------------------------------------------------------------------------
class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(16, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = self.fc2(self.act(self.fc1(x)))
        return self.head(torch.flatten(self.norm(h + x), 1))


def _golden(name: str, got: str) -> None:
    path = os.path.join(GOLDEN, name)
    if os.environ.get("BRIDGE_UPDATE_GOLDEN"):
        with open(path, "w") as f:
            f.write(got)
    with open(path) as f:
        assert got == f.read(), f"{name} changed; BRIDGE_UPDATE_GOLDEN=1 rewrites it"


@pytest.mark.parametrize("fmt", ["txt", "md", "json"])
def test_report_golden(fmt):
    torch.manual_seed(0)
    r = bridge.report(Residual().eval(), (torch.randn(4, 8),))
    got = {"txt": r.to_text, "md": r.to_markdown, "json": lambda: r.to_json() + "\n"}[fmt]()
    _golden(f"report_residual.{fmt}", got)


def test_report_resnet_mini_golden_and_alignment(resnet_mini):
    _, _, g = resnet_mini
    r = bridge.report(g)
    _golden("report_resnet_mini.md", r.to_markdown())
    # every node appears once in the graph view, beside the layer it came from
    assert [n for layer in r.layers for n in layer.nodes] == g.nodes
    assert sum(layer.params for layer in r.layers) == r.summary.totals["params"]
    add = next(layer for layer in r.layers if layer.nodes[0].op == "add")
    assert (add.name, add.type) == ("layer1.0", "BasicBlock")
    d = r.to_dict()
    assert d["nodes"][9]["connected_to"] == ["%layer1.0.bn2", "%maxpool"]
    assert d["conversions"] == {"module": "yes", "sequential": False,
                                "why_not_sequential": "layer1.0: add merges two paths (%layer1.0.bn2, %maxpool)",
                                "onnx": True}


# ---- diff -------------------------------------------------------------------------------------------------
def test_diff_against_itself_is_empty(resnet_mini):
    m, args, g = resnet_mini
    d = bridge.diff(m, copy.deepcopy(m), args)
    assert d.structurally_equal and d.numerically_equal and not d
    assert not d.added and not d.removed and not d.changed and len(d.matched) == len(g.nodes)
    assert d.first_divergence is None and all(o.max_abs == 0 for o in d.outputs)
    assert bridge.diff(g, g).structurally_equal


def test_diff_names_exactly_the_change(resnet_mini):
    m, args, g = resnet_mini  # a: the traced graph, b: modified copies of the model (graphs and modules mix)
    # an activation replaced: its two calls change op, nothing else
    m2 = copy.deepcopy(m)
    m2.layer2[0].relu = nn.GELU()
    d = bridge.diff(g, m2, args)
    assert [(c.a.name, c.changes) for c in d.changed] == [("layer2.0.relu", {"op": ("relu", "gelu")}),
                                                         ("layer2.0.relu_1", {"op": ("relu", "gelu")})]
    assert not d.added and not d.removed
    assert d.first_divergence["a_node"] == "layer2.0.relu" and d.numerically_equal is False
    # one weight nudged: one changed node, and the values diverge exactly there
    m3 = copy.deepcopy(m)
    with torch.no_grad():
        m3.layer3[1].conv2.weight[0, 0, 0, 0] += 0.5
    d = bridge.diff(g, m3, args)
    assert [(c.a.name, list(c.changes)) for c in d.changed] == [("layer3.1.conv2", ["weights"])]
    assert d.first_divergence["a_node"] == "layer3.1.conv2" and d.first_divergence["scope"] == "layer3.1.conv2"
    # an attribute: eps of one batch norm
    m4 = copy.deepcopy(m)
    m4.bn1.eps = 1e-2
    d = bridge.diff(g, m4, args)
    assert [(c.a.name, c.changes) for c in d.changed] == [("bn1", {"attr eps": (1e-5, 1e-2)})]


def test_diff_added_removed_and_shapes():
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    b = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2), nn.Sigmoid())
    b[0].load_state_dict(a[0].state_dict())
    b[2].load_state_dict(a[2].state_dict())
    x = torch.randn(3, 4)
    d = bridge.diff(a, b, (x,))
    assert [(n.op, n.scope.path) for n in d.added] == [("sigmoid", "3")] and not d.removed and not d.changed
    assert d.outputs[0].ok is False
    d = bridge.diff(b, a, (x,))
    assert [(n.op, n.scope.path) for n in d.removed] == [("sigmoid", "3")] and not d.added
    c = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    d = bridge.diff(a, c, (x,))
    assert {c_.a.scope.path: sorted(c_.changes) for c_ in d.changed} == {
        "0": ["output", "weight shapes"], "1": ["output"], "2": ["weight shapes"]}
    first = d.changed[0].changes
    assert first["weight shapes"] == (["f32[8, 4]", "f32[8]"], ["f32[6, 4]", "f32[6]"])
    assert first["output"] == (["f32[3, 8]"], ["f32[3, 6]"])
    assert d.first_divergence == {"a_node": "0", "b_node": "0", "op": "linear", "scope": "0", "max_abs": math.inf,
                                  "note": "shape [3, 8] vs [3, 6]"}
    text = str(d)
    assert "3 changed" in text and json.loads(d.to_json())["structurally_equal"] is False


# ---- ONNX files (through bridge.from_onnx) ------------------------------------------------------------------
def test_onnx_summary_and_diff(resnet_mini, tmp_path):
    """An ONNX file summarizes to the model's parameters and MACs; a file diffed against itself is empty; the
    optimized export against the plain one is exactly the batch norms folded into the convolutions."""
    pytest.importorskip("onnx")
    m, args, _ = resnet_mini
    plain, fused = str(tmp_path / "plain.onnx"), str(tmp_path / "fused.onnx")
    bridge.to_onnx(m, plain, args=args, optimize=False)
    bridge.to_onnx(m, fused, args=args)
    ref = bridge.summary(m, args).totals
    s = bridge.summary(plain)
    assert s.totals["params"] == ref["params"] and s.totals["macs"] == ref["macs"]
    import onnx

    assert bridge.summary(onnx.load(fused)).totals["macs"] == ref["macs"]
    assert not bridge.diff(plain, plain, args)
    d = bridge.diff(plain, fused, args)
    n_bn = sum(isinstance(mod, nn.BatchNorm2d) for mod in m.modules())
    assert [n.op for n in d.removed] == ["batch_norm"] * n_bn and not d.added
    assert {c.a.op for c in d.changed} <= {"conv", "relu", "add"}  # convs gain a bias, readers rewire
    assert d.numerically_equal and d.first_divergence is None
    t = bridge.topology(fused)
    assert len(t.skip_connections) == 5 and all(s.target.op == "add" for s in t.skip_connections)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name, batch", [("mlp", 4096), ("resnet_mini", 64), ("densenet_mini", 64)])
def test_peak_memory_matches_cuda_allocator(name, batch):
    """The liveness estimate against what CUDA's caching allocator really peaks at while the generated module
    runs (after a warm-up, so library workspaces that persist are not counted): within 10% (cuDNN's
    per-call workspaces), and never below."""
    from bridge.analysis.memory import measured_peak_bytes

    e = zoo.get(name)
    args, kwargs = e.make_inputs(batch)
    g = bridge.trace(e.make_model(), args, kwargs)
    live = liveness(g)
    measured = measured_peak_bytes(g, args, kwargs)
    estimate = live.peak_bytes - live.input_bytes
    assert estimate <= measured <= 1.1 * estimate, (estimate, measured)


@pytest.mark.slow
def test_analysis_time_is_linear_in_graph_size():
    """summary + topology on 2,000 and 40,000-node graphs (residual blocks): time per node within 2.5x (noise
    on a shared machine; the benchmark records the 1k..100k curve)."""
    import time

    per_node = []
    for n in (2_000, 40_000):
        g = residual_graph(n)
        bridge.summary(g, depth=2)
        t = time.perf_counter()
        bridge.summary(g, depth=2)
        bridge.topology(g)
        per_node.append((time.perf_counter() - t) / len(g.nodes))
    assert per_node[1] < 2.5 * per_node[0], per_node


def test_graph_level_names_kept_beside_the_verbs():
    """summary/diff/report of the analysis modules take a Graph (the verbs bridge.summary/diff/report also take
    models and files) and give the verbs' numbers."""
    from bridge.analysis.diff import diff as graph_diff
    from bridge.analysis.report import report as graph_report
    from bridge.analysis.summary import summary as graph_summary

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    x = torch.randn(3, 4)
    g = bridge.trace(model, (x,))
    assert graph_summary(g, depth=1).totals == bridge.summary(model, (x,), depth=1).totals
    assert graph_summary(g).totals["params"] == 4 * 8 + 8 + 8 * 2 + 2
    assert str(graph_report(g)) == str(bridge.report(g))
    d = graph_diff(g, g, (x,))
    assert not d.changed and d.numerically_equal
