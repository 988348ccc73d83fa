"""The summary's top-level ops: in a model with modules, each run of consecutive ops outside any module is one
row (a HuggingFace BERT's mask plumbing, a GPT-2's position ids), with the rows still adding up to the totals
and ``by="node"`` still showing every node; a model with no modules keeps one row per op. Module rows are
named by their path below the parent row (``layer.0``, ``h.0``: a ModuleList is never called, so it has no row)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import bridge
from bridge.analysis import node_costs

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def bert():
    torch.manual_seed(0)
    cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                  vocab_size=100, max_position_embeddings=64)
    model = transformers.BertModel(cfg).eval()
    return model, bridge.trace(model, (torch.randint(0, 100, (2, 8)),))


@pytest.fixture(scope="module")
def gpt2():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100, n_positions=64, use_cache=False,
                                  bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2Model(cfg).eval()
    return model, bridge.trace(model, (torch.randint(0, 100, (2, 8)),))


def top_rows(s):
    return [r for r in s.rows if r.depth == 1]


def assert_rows_add_up(s, g):
    """The top-level rows cover every node once, in order, and their numbers add up to the totals."""
    top = top_rows(s)
    assert [n for r in top for n in r.nodes] == list(g.nodes)
    for key in ("params", "trainable_params", "flops", "macs", "activation_bytes"):
        assert sum(getattr(r, key) for r in top) == (s.totals[key] if key != "params"
                                                     else s.totals["params"] - s.totals["unused_params"]), key


def test_bert_mask_plumbing_is_one_row(bert):
    model, g = bert
    s = bridge.summary(g, depth=1)
    top = top_rows(s)
    assert [(r.kind, r.name) for r in top if r.kind == "module"] == [
        ("module", "embeddings"), ("module", "encoder"), ("module", "pooler")]
    (ops,) = [r for r in top if r.kind != "module"]  # the mask expansion and position arithmetic: one row
    assert ops.kind == "ops" and len(ops.nodes) > 5 and all(not n.scope for n in ops.nodes)
    assert [r.kind for r in top] == ["module", "ops", "module", "module"]
    i = list(g.nodes).index(ops.nodes[0])
    assert list(g.nodes)[i:i + len(ops.nodes)] == ops.nodes  # consecutive in the graph
    assert ops.name == f"%{ops.nodes[0].name}..%{ops.nodes[-1].name}"
    assert ops.flops == sum(node_costs(g)[n].flops for n in ops.nodes) and ops.params == 0
    assert ops.output_shape == [[2, 1, 8, 8]] and ops.output_dtype == ["bool"]  # the mask the encoder reads
    assert_rows_add_up(s, g)
    assert s.totals["params"] == sum(p.numel() for p in model.parameters())
    text = str(s)
    line = next(ln for ln in text.splitlines() if " ops: " in ln)
    assert line.startswith(f" └─{len(ops.nodes)} ops: ") and "%arange" not in text
    # by node: every node, the plumbing included
    n = bridge.summary(g, by="node")
    assert [r.nodes[0] for r in n.rows[1:]] == list(g.nodes) and "%arange (arange)" in str(n)


def test_module_rows_named_below_their_parent_row(bert, gpt2):
    text = str(bridge.summary(bert[1], depth=2))
    assert " └─encoder (BertEncoder)" in text and "   └─layer.0 (BertLayer)" in text
    assert "   └─layer.1 (BertLayer)" in text and "└─0 (BertLayer)" not in text
    assert "   └─word_embeddings (Embedding)" in text  # a direct child: its attribute name
    model, g = gpt2
    s = bridge.summary(g, depth=2)
    text = str(s)
    assert " └─h.0 (GPT2Block)" in text and "   └─attn (GPT2Attention)" in text and "└─0 (" not in text
    assert_rows_add_up(s, g)
    assert s.totals["params"] == sum(p.numel() for p in model.parameters())
    # GPT-2 sums its token and position embeddings at the top level: that add is in a folded row, whose
    # outputs show the hidden state leaving it beside the mask
    (emb_sum,) = [r for r in top_rows(s) if r.kind == "ops" and [2, 8, 32] in r.output_shape]
    assert any(n.op == "add" and n.outputs[0].spec.shape == (2, 8, 32) for n in emb_sum.nodes)


def test_depth_limits_on_bert(bert):
    model, g = bert
    assert [r.kind for r in bridge.summary(g, depth=0).rows] == ["model"]
    for depth in (1, 3, None):
        s = bridge.summary(g, depth=depth)
        assert_rows_add_up(s, g)
        assert sum(r.kind == "ops" for r in s.rows) == 1 and not any(r.kind == "op" for r in s.rows)


class Functional(nn.Module):
    """All its work is its own: parameters used through torch.nn.functional, no submodules."""

    def __init__(self):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(16, 8))
        self.b1 = nn.Parameter(torch.randn(16))
        self.w2 = nn.Parameter(torch.randn(4, 16))

    def forward(self, x):
        return torch.softmax(F.linear(F.gelu(F.linear(x, self.w1, self.b1)), self.w2), -1)


def test_a_model_without_modules_keeps_a_row_per_op():
    x = torch.randn(5, 8)
    g = bridge.trace(Functional(), (x,))
    s = bridge.summary(g)
    top = top_rows(s)
    assert [(r.kind, r.type) for r in top] == [("op", "linear"), ("op", "gelu"), ("op", "linear"), ("op", "softmax")]
    assert [r.params for r in top] == [16 * 8 + 16, 0, 4 * 16, 0]
    assert [r.macs for r in top] == [5 * 8 * 16, 0, 5 * 16 * 4, 0]  # a multiply-add per weight and sample
    assert_rows_add_up(s, g)
    assert "└─%linear (linear)" in str(s) and " ops: " not in str(s)


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 2)

    def forward(self, x):
        x = torch.flatten(F.relu(self.conv(x)), 1)  # two ops between two modules: one row
        return torch.sigmoid(self.fc(x))  # one op alone: its own row, as before


def test_mixed_model_folds_runs_of_two_or_more():
    g = bridge.trace(Mixed().eval(), (torch.randn(2, 3, 8, 8),))
    s = bridge.summary(g)
    top = top_rows(s)
    assert [(r.kind, r.type) for r in top] == [("module", "Conv2d"), ("ops", "2 ops: relu, flatten"),
                                               ("module", "Linear"), ("op", "sigmoid")]
    assert top[1].output_shape == [[2, 144]]
    assert "└─2 ops: relu, flatten" in str(s) and "└─%sigmoid (sigmoid)" in str(s)
    assert_rows_add_up(s, g)
    # the report's layer view: the folded run is one layer holding both nodes, beside them in the graph view
    r = bridge.report(g)
    assert [(layer.name, len(layer.nodes)) for layer in r.layers] == [
        ("conv", 1), ("%relu..%flatten", 2), ("fc", 1), ("%sigmoid", 1)]
