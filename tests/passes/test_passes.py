"""Passes: each on a small hand-built graph (golden text), the inference set on a CNN, and every pass over the
zoo with parity against eager PyTorch."""
import onnx
import pytest
import torch
import torch.nn as nn

import bridge
from bridge import zoo
from bridge.errors import BridgeError
from bridge.ir.graph import Graph
from bridge.ir.spec import TensorSpec
from bridge.passes import PassManager, all_passes, inference_passes, run_passes
from tests.helpers import assert_same_outputs

PASSES = all_passes()


class ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(4, 6)
        self.bn1d = nn.BatchNorm1d(6)
        self.register_buffer("offset", torch.arange(6.0))
        with torch.no_grad():
            for bn in (self.bn, self.bn1d):
                bn.running_mean.uniform_(-1, 1)
                bn.running_var.uniform_(0.5, 2.0)
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.5, 0.5)

    def forward(self, x):
        y = self.drop(torch.relu(self.bn(self.conv(x)))).mean((2, 3))
        y * 3  # dead
        return self.bn1d(self.fc(y)) + (self.offset * 2 + 1)


def test_inference_passes_fold_fuse_and_remove_with_parity():
    torch.manual_seed(0)
    m = ConvBN().eval()
    x = torch.randn(2, 3, 8, 8)
    g = bridge.trace(m, (x,))
    ops = [n.op for n in g.nodes]
    assert ops.count("batch_norm") == 2 and "dropout" in ops
    opt = run_passes(g, ["remove_dropout", "remove_identity", "fuse_bn", "fold", "dce"])
    opt.check()
    assert [n.op for n in opt.nodes] == ["conv", "relu", "mean", "linear", "add"]
    # offset * 2 + 1 was folded into one constant; the fused conv keeps the layer's weight name
    assert opt.nodes[-1].args["other"].const is not None
    assert opt.nodes[0].args["weight"].name == "conv.weight" and opt.nodes[0].args["bias"] is not None
    assert_same_outputs(opt.run(x), m(x))
    # the original graph is untouched (run_passes copies)
    assert [n.op for n in g.nodes] == ops


def test_pass_manager_reports_change_and_reaches_fixpoint():
    m = nn.Sequential(nn.Linear(4, 4), nn.Dropout(), nn.Identity(), nn.ReLU()).eval()
    g = bridge.trace(m, (torch.randn(2, 4),))
    g2, changed = PassManager(["remove_dropout", "remove_identity", "dce"])(g.copy())
    assert changed and [n.op for n in g2.nodes] == ["linear", "relu"]
    g3, changed = PassManager(["remove_dropout", "remove_identity", "dce"])(g2)
    assert not changed
    # aliases and any iterable, as run_passes; an unknown name is a BridgeError (it was a KeyError)
    assert PassManager(n for n in ["dropout", "identity", "dce"]).passes == \
        [PASSES["remove_dropout"], PASSES["remove_identity"], PASSES["dce"]]
    with pytest.raises(BridgeError, match="unknown pass"):
        PassManager(["remove_dropout", "nope"])


def test_dce_keeps_training_batchnorm_side_effects():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm1d(3)

        def forward(self, x):
            self.bn(x)  # result unused, running stats still update
            return x + 1
    x = torch.randn(4, 3)
    g = bridge.trace(M().train(), (x,))
    g2 = run_passes(g, ["dce"])
    bn = next(n for n in g2.nodes if n.op == "batch_norm")
    mean = bn.args["running_mean"].const
    ref = nn.BatchNorm1d(3).train()
    ref.running_mean.copy_(mean)
    assert_same_outputs(g2.run(x), x + 1)
    ref(x)
    assert_same_outputs(mean, ref.running_mean)  # the kept node updated the running stats as eager does
    assert mean.abs().sum() > 0


# ---- golden text on small hand-built graphs, one per pass ---------------------------------------------------

S = TensorSpec((2, 3), torch.float32)
V = TensorSpec((3,), torch.float32)


def test_dce_golden():
    g = Graph()
    x = g.add_input("x", S)
    a = g.add_node("relu", {"input": x}, outputs=[("a", S)]).output
    dead = g.add_node("exp", {"input": a}, outputs=[("dead", S)]).output
    g.add_node("neg", {"input": dead}, outputs=[("dead2", S)])  # a dead chain: both go, in one run
    g.add_node("tanh", {"input": x}, outputs=[("unused", S)])
    g.set_outputs([g.add_node("sigmoid", {"input": a}, outputs=[("y", S)]).output])
    g2, changed = PassManager(["dce"])(g.copy())
    assert changed and str(g2.check()) == """\
graph(%x: f32[2, 3]) {
  %a : f32[2, 3] = relu(%x)
  %y : f32[2, 3] = sigmoid(%a)
  return %y
}"""


def test_fold_golden():
    g = Graph()
    x = g.add_input("x", S)
    c = g.add_constant("c", torch.arange(3.0))
    c2 = g.add_node("mul", {"input": c, "other": 2.0}, outputs=[("c2", V)]).output
    c3 = g.add_node("add", {"input": c2, "other": 1.0, "alpha": 1}, outputs=[("c3", V)]).output  # 2c + 1
    r = g.add_node("rand_like", {"input": c}, outputs=[("r", V)]).output  # random: never folded
    y = g.add_node("add", {"input": x, "other": c3, "alpha": 1}, outputs=[("y", S)]).output
    g.set_outputs([g.add_node("mul", {"input": y, "other": r}, outputs=[("z", S)]).output])
    g2 = run_passes(g, ["fold", "dce"])
    assert str(g2) == """\
graph(%x: f32[2, 3]) {
  %r : f32[3] = rand_like(%c)
  %y : f32[2, 3] = add(%x, %c3_folded)
  %z : f32[2, 3] = mul(%y, %r)
  return %z
}"""
    assert torch.equal(g2.value("c3_folded").const, torch.tensor([1.0, 3.0, 5.0]))
    assert [c.name for c in g2.constants] == ["c", "c3_folded"]


def test_fuse_bn_golden_and_numbers():
    torch.manual_seed(0)
    g = Graph()
    xs = TensorSpec((2, 3, 5, 5), torch.float32)
    ys = TensorSpec((2, 4, 3, 3), torch.float32)
    x = g.add_input("x", xs)
    w = g.add_constant("conv.weight", torch.randn(4, 3, 3, 3), kind="param")
    stats = {k: g.add_constant(f"bn.{k}", t, kind="buffer" if k.startswith("running") else "param")
             for k, t in (("running_mean", torch.randn(4)), ("running_var", torch.rand(4) + 0.5),
                          ("weight", torch.rand(4) + 0.5), ("bias", torch.randn(4)))}
    c = g.add_node("conv", {"input": x, "weight": w, "bias": None, "stride": 1, "padding": 0, "dilation": 1,
                            "groups": 1, "padding_mode": "zeros"}, outputs=[("conv", ys)]).output
    bn = g.add_node("batch_norm", {"input": c, **stats, "training": False, "momentum": 0.1, "eps": 1e-5},
                    outputs=[("bn", ys)]).output
    g.set_outputs([g.add_node("relu", {"input": bn}, outputs=[("y", ys)]).output])
    g2 = run_passes(g, ["fuse_bn"])
    assert str(g2) == """\
graph(%x: f32[2, 3, 5, 5]) {
  %conv : f32[2, 4, 3, 3] = conv(%x, %conv.weight, %conv.bias)
  %y : f32[2, 4, 3, 3] = relu(%conv)
  return %y
}"""
    assert [(c.name, c.kind) for c in g2.constants] == [("conv.weight", "param"), ("conv.bias", "param")]
    x = torch.randn(2, 3, 5, 5)
    assert_same_outputs(g2.run(x), g.run(x))


def test_remove_dropout_and_identity_golden():
    g = Graph()
    x = g.add_input("x", S)
    d = g.add_node("dropout", {"input": x, "p": 0.5, "training": False, "kind": "dropout"},
                   outputs=[("d", S)]).output
    t = g.add_node("dropout", {"input": d, "p": 0.5, "training": True, "kind": "dropout"},
                   outputs=[("t", S)]).output  # training dropout is kept
    i = g.add_node("identity", {"input": t}, outputs=[("i", S)]).output
    c = g.add_node("contiguous", {"input": i}, outputs=[("c", S)]).output
    cast = g.add_node("to", {"input": c, "dtype": torch.float32}, outputs=[("cast", S)]).output
    w = g.add_constant("w", torch.randn(3, 3))
    lin = g.add_node("linear", {"input": cast, "weight": w, "bias": None}, outputs=[("lin", S)]).output
    c2 = g.add_node("contiguous", {"input": lin}, outputs=[("c2", S)]).output  # linear's output is contiguous
    y = g.add_node("relu", {"input": c2}, outputs=[("y", S)]).output
    out = g.add_node("identity", {"input": x}, outputs=[("out", S)]).output  # an output must stay distinct
    g.set_outputs([y, out])
    g2 = run_passes(g, ["remove_dropout", "remove_identity"])
    # contiguous of the dropout's output stays: its layout is not known (a transposed input would need it)
    assert str(g2) == """\
graph(%x: f32[2, 3]) {
  %t : f32[2, 3] = dropout(%x)
  %c : f32[2, 3] = contiguous(%t)
  %lin : f32[2, 3] = linear(%c, %w)
  %y : f32[2, 3] = relu(%lin)
  %out : f32[2, 3] = identity(%x)
  return (%y, %out)
}"""


def test_remove_identity_keeps_contiguous_a_view_needs():
    class Shuffle(nn.Module):  # shufflenet's channel shuffle
        def forward(self, x):
            b, c, h, w = x.shape
            y = x.view(b, 2, c // 2, h, w).transpose(1, 2).contiguous() * 2
            return y.view(b, c, h, w)

    x = torch.randn(2, 4, 3, 3)
    g = bridge.trace(Shuffle(), (x,))
    g2 = run_passes(g, ["remove_identity"])
    assert "contiguous" in [n.op for n in g2.nodes]
    assert_same_outputs(g2.run(x), Shuffle()(x))


# ---- every pass over the zoo, with parity -----------------------------------------------------------------


@pytest.mark.parametrize("entry", [e for e in zoo.entries() if "slow" not in e.tags], ids=lambda e: e.name)
def test_each_pass_over_the_zoo_keeps_numbers(entry):
    model = entry.make_model()
    args, kwargs = entry.make_inputs(2)
    g = bridge.trace(model, args, kwargs)
    with torch.no_grad():
        ref = model(*args, **kwargs)
    for name in sorted(PASSES):
        g2, changed = PassManager([name])(g.copy())
        if not changed:  # the same graph: its parity is test_zoo_parity's
            continue
        with torch.no_grad():
            assert_same_outputs(g2.check().run(*args, **kwargs), ref, path=f"{entry.name}/{name}")
    opt = run_passes(g, inference_passes())
    assert "dropout" not in [n.op for n in opt.nodes]
    assert not [n for n in opt.nodes if n.op == "batch_norm" and n.args["input"].producer is not None
                and n.args["input"].producer.op == "conv" and len(n.args["input"].users) == 1]
    with torch.no_grad():
        assert_same_outputs(opt.run(*args, **kwargs), ref, path=f"{entry.name}/inference")


def test_freeze_metadata_lets_masks_and_positions_fold():
    """x.device / x.dtype stay run-time values in a traced graph (the module follows .to()); for export they
    become the traced values, and the arange/ones/tril built from them fold to constants."""

    class Causal(nn.Module):
        def forward(self, x):
            t = x.shape[1]
            pos = torch.arange(t, device=x.device, dtype=x.dtype)
            mask = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
            return (x.unsqueeze(-1) + pos).masked_fill(~mask, 0.0) * x.ndim

    m, x = Causal(), torch.randn(2, 5)
    g = bridge.trace(m, (x,))
    assert [n.op for n in g.nodes if n.op == "getattr"] and "arange" in [n.op for n in g.nodes]
    opt = run_passes(g, inference_passes())
    assert {n.op for n in opt.nodes} <= {"unsqueeze", "add", "masked_fill", "mul"}, str(opt)
    assert_same_outputs(opt.run(x), m(x))
    g2, changed = PassManager(["freeze_metadata"])(g.copy())
    assert changed and not [n for n in g2.nodes if n.op == "getattr"]
    assert_same_outputs(g2.run(x), m(x))


def test_benchmark_graph_keeps_numbers_and_script_runs(tmp_path, monkeypatch):
    """benchmarks/passes.py: its big-graph builder gives every pass work that keeps the numbers; --quick runs."""
    import importlib.util
    import json
    import os

    bench_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "benchmarks")
    monkeypatch.syspath_prepend(bench_dir)  # its _timing helper
    spec = importlib.util.spec_from_file_location("bench_passes", os.path.join(bench_dir, "passes.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    g = bench.big_graph(110)
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
    ref = g.run(x)
    for name in sorted(PASSES):
        g2, changed = PassManager([name])(g.copy())
        assert changed or name == "freeze_metadata", name
        assert_same_outputs(g2.check().run(x), ref)
    out = tmp_path / "passes.json"
    assert bench.main(["--quick", "--models", "mlp", "--nodes", "550", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [r["model"] for r in data["fold"]] == ["mlp"]
    assert {r["step"] for r in data["big"]} >= {"fuse_bn", "cse", "rewrite relu+relu -> 2*relu"}


# ---- cancel_reorders ----------------------------------------------------------------------------------------
class Reorders(nn.Module):
    """What cancels (chunks put back in order, a transpose undone, a stack picked apart) beside what only looks
    like it (a square transpose keeps the shape but moves every element; chunks put back in another order)."""

    def forward(self, x, w):
        a, b, c = w.split(2, dim=0)
        back = torch.cat([a, b, c])                     # w itself
        shuffled = torch.cat([b, c, a])                 # not w
        square = x.t()                                  # same shape, not x
        undone = x.view(3, 1, 3).permute(1, 0, 2).squeeze(0).t().t()  # x itself
        picked = torch.stack([x, square])[1]            # square
        return back * 2, shuffled + 1, square - picked, undone * 3


def test_cancel_reorders_removes_what_cancels_and_keeps_what_does_not():
    torch.manual_seed(0)
    x, w = torch.randn(3, 3), torch.randn(6, 4)
    g = bridge.trace(Reorders(), (x, w))
    g2 = run_passes(g, ["cancel_reorders"])
    ops = [n.op for n in g2.nodes]
    # the chain to `undone` and the `back` cat are gone; the shuffle and the square transpose stay
    assert ops.count("cat") == 1 and ops.count("split") == 1 and ops.count("t") + ops.count("permute") == 1
    mul = next(n for n in g2.nodes if n.op == "mul" and n.args["other"] == 2)
    assert mul.args["input"] is g2.inputs[1]  # back is w
    for _ in range(3):  # fresh inputs: nothing here depends on the traced values
        x, w = torch.randn(3, 3), torch.randn(6, 4)
        assert_same_outputs(g2.run(x, w), Reorders()(x, w))


@pytest.mark.parametrize("name", ["lstm_tagger", "bigru"])
def test_onnx_round_trip_of_an_rnn_reads_its_weights(name, tmp_path):
    """bridge's export writes torch's gate order as Split/Concat of the parameters; the import reorders back.
    from_onnx leaves both out: the RNN reads the parameters, and runs as eager does, at another batch size."""
    from bridge.frontends.onnx import from_onnx as raw_import

    e = zoo.get(name)
    model = e.make_model()
    args, kwargs = e.make_inputs(2)
    bridge.to_onnx(model, tmp_path / "m.onnx", args=args, kwargs=kwargs, dynamic=e.dynamic)
    raw, g = raw_import(str(tmp_path / "m.onnx")), bridge.from_onnx(tmp_path / "m.onnx")
    assert len(g.nodes) < len(raw.nodes) // 3
    rnns = [n for n in g.nodes if n.op in ("lstm", "gru")]
    params = dict(model.named_parameters())
    assert rnns and all(v.kind == "param" and v.name in params for n in rnns for v in n.args["weights"])
    assert not [n for n in g.nodes if n.op in ("split", "cat") and n.scope is not None and
                any(isinstance(a, bridge.Value) and a.kind == "param" for a in bridge.ir.graph.iter_values(n.args))]
    module = g.to_module()
    assert module.state_dict().keys() == raw.to_module().state_dict().keys()
    args, kwargs = e.make_inputs(3)
    with torch.no_grad():
        assert_same_outputs(module(*args, **kwargs), model(*args, **kwargs))


# ---- fuse_linear ----------------------------------------------------------------------------------------
class MatmulForms(nn.Module):
    """Linear layers written out (what ONNX's MatMul + Add of a 3-D input reads back as), beside forms that are
    not a linear: a 2-D bias, an add with alpha, a batched (3-D) weight."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(5, 4))
        self.b = nn.Parameter(torch.randn(5))
        self.b2 = nn.Parameter(torch.randn(3, 5))
        self.w3 = nn.Parameter(torch.randn(2, 5, 4))

    def forward(self, x):
        a = torch.matmul(x, self.w.permute(1, 0)) + self.b       # linear(x, w, b)
        b = self.b + x @ self.w.t()                              # linear, bias on the left
        c = x @ self.w.transpose(0, 1)                           # linear(x, w), no bias
        d = x @ self.w.t() + self.b2                             # (3, 5) bias: a matmul plus an add
        e = torch.add(x @ self.w.t(), self.b, alpha=2)           # alpha 2: kept as it is
        f = x @ self.w3.transpose(1, 2)                          # a batched weight: not a linear
        return a, b, c * 2, d, e, f


def test_fuse_linear_fuses_what_is_a_linear_and_only_that():
    torch.manual_seed(0)
    model = MatmulForms()
    g = bridge.trace(model, (torch.randn(2, 3, 4),))
    g2 = run_passes(g, ["fuse_linear"])
    linears = [n for n in g2.nodes if n.op == "linear"]
    assert len(linears) == 5  # a, b, c, and the matmuls of d and e (their adds stay)
    assert sum(n.args["bias"] is not None for n in linears) == 2
    assert sum(n.op == "add" for n in g2.nodes) == 2 and sum(n.op == "matmul" for n in g2.nodes) == 1
    for _ in range(3):
        x = torch.randn(2, 3, 4)
        assert_same_outputs(g2.run(x), model(x))


class TiedBN(nn.Module):
    """A linear followed by a batchnorm whose weight another layer reads too (tied)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)
        self.b.weight = self.a.weight
        self.bn = nn.BatchNorm1d(4)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        return self.b(self.bn(self.a(x)))


def test_fuse_bn_leaves_a_tied_weight_to_its_other_reader(tmp_path):
    """Folding the batchnorm into ``a`` must not change the weight ``b`` reads: the fused tensors get names of
    their own and the tied weight keeps its name (before, both took the name and one silently replaced the
    other in the generated module)."""
    torch.manual_seed(0)
    model = TiedBN().eval()
    x = torch.randn(3, 4)
    g = run_passes(bridge.trace(model, (x,)), ["fuse_bn"])
    assert not g.find("batch_norm")
    names = [n for c in g.constants for n in c.names]
    assert len(names) == len(set(names)) and "a.weight" in names and "a.weight_fused" in names
    module = g.to_module()
    for _ in range(3):
        x = torch.randn(3, 4)
        with torch.no_grad():
            assert_same_outputs(g.run(x), model(x))
            assert_same_outputs(module(x), model(x))
    bridge.to_onnx(model, tmp_path / "t.onnx", args=(x,))  # export fuses too
    assert bridge.verify(model, tmp_path / "t.onnx", (torch.randn(3, 4),)).ok


class GeluForms(nn.Module):
    """GELU as exporters write it out (erf and tanh forms, in several orders), beside near misses."""

    def forward(self, x):
        a = x * 0.5 * (1.0 + torch.tanh(0.7978845608028654 * (x + 0.044715 * torch.pow(x, 3.0))))  # GPT-2's
        b = 0.5 * x * (1 + torch.erf(x / 1.4142135623730951))          # torch.onnx's order
        c = (x * 0.5) * (torch.erf(x * 0.7071067811865476) + 1.0)      # bridge's export at opset 17
        d = x * torch.sigmoid(1.702 * x)                               # another approximation: not GELU
        e = x * 0.5 * (1.0 + torch.erf(x * 0.7))                       # a different constant: not GELU
        f = x * (1.0 + torch.erf(x * 0.7071067811865476))              # no 0.5: not GELU
        return a, b, c, d, e, f


def test_fuse_gelu_recognizes_gelu_by_its_numbers_and_nothing_else():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8)
    g = run_passes(bridge.trace(GeluForms(), (x,)), ["fuse_gelu"])
    gelus = [n for n in g.nodes if n.op == "gelu"]
    assert sorted(n.args["approximate"] for n in gelus) == ["none", "none", "tanh"]
    assert sum(n.op == "erf" for n in g.nodes) == 2 and not any(n.op == "tanh" for n in g.nodes)
    for _ in range(3):
        x = torch.randn(2, 3, 8) * 3
        assert_same_outputs(g.run(x), GeluForms()(x))


def test_from_onnx_reads_an_opset_17_gelu_back_as_gelu(tmp_path):
    """At opset 17 ONNX has no Gelu: the export writes erf and arithmetic; the import reads one gelu again."""
    model = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 2), nn.GELU(approximate="tanh")).eval()
    x = torch.randn(3, 4)
    bridge.to_onnx(model, tmp_path / "m.onnx", args=(x,), opset=17, dynamic={"input": {0: "batch"}})
    g = bridge.from_onnx(tmp_path / "m.onnx")
    assert [n.op for n in g.nodes] == ["linear", "gelu", "linear", "gelu"]
    assert [n.args["approximate"] for n in g.nodes if n.op == "gelu"] == ["none", "tanh"]
    x = torch.randn(5, 4)
    with torch.no_grad():
        assert_same_outputs(g.to_module()(x), model(x))


# ---- fuse_adaptive_pool -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("shape,out", [((2, 3, 11), 3), ((3, 11), [4]), ((2, 3, 9, 10), (2, 3)),
                                       ((2, 3, 9, 10), (None, 4)), ((2, 3, 7, 5), (3, 7)),
                                       ((2, 2, 5, 7, 6), (2, None, 4)), ((2, 2, 5, 7, 6), 4)])
def test_from_onnx_reads_written_out_adaptive_pooling_back_as_one_op(tmp_path, kind, shape, out):
    """ONNX has no adaptive pooling to sizes that do not divide: the export writes slices and reductions per dim
    (torch's windows); the import reads one adaptive pooling again, with the model's numbers on fresh inputs."""
    n = {2: 1, 3: 1, 4: 2, 5: 3}[len(shape)]
    model = getattr(nn, f"Adaptive{kind.capitalize()}Pool{n}d")(out).eval()
    torch.manual_seed(0)
    bridge.to_onnx(model, tmp_path / "m.onnx", args=(torch.randn(shape),), opset=17)
    assert any(nd.op_type == "Slice" for nd in onnx.load(tmp_path / "m.onnx").graph.node)  # written out
    g = bridge.from_onnx(tmp_path / "m.onnx")
    ops = [nd.op for nd in g.nodes]  # (an unbatched input: the batch axis added and taken away around it)
    assert ops.count(f"adaptive_{kind}_pool{n}d") == 1 and not {"slice", "cat", "amax", "mean"} & set(ops), ops
    for _ in range(2):
        x = torch.randn(shape) * 3
        assert_same_outputs(g.to_module()(x), model(x))


def _written_out_pool(windows, reduces):
    """A graph: cat along the last dim of each reduction over a slice (window) of x, as ONNX writes pooling."""
    g = Graph()
    x = g.add_input("x", TensorSpec((2, 3, 11), torch.float32))
    parts = []
    for (lo, hi), op in zip(windows, reduces):
        sl = g.add_node("slice", {"input": x, "dim": 2, "start": lo, "end": hi, "step": 1},
                        outputs=[("s", TensorSpec((2, 3, hi - lo), torch.float32))]).output
        parts.append(g.add_node(op, {"input": sl, "dim": [2], "keepdim": True},
                                outputs=[("r", TensorSpec((2, 3, 1), torch.float32))]).output)
    g.set_outputs([g.add_node("cat", {"tensors": parts, "dim": 2},
                              outputs=[("c", TensorSpec((2, 3, len(parts)), torch.float32))]).output])
    return g.check()


@pytest.mark.parametrize("windows,reduces,fused", [
    ([(0, 4), (3, 8), (7, 11)], ["amax"] * 3, "adaptive_max_pool1d"),     # torch's windows for 11 -> 3
    ([(0, 4), (3, 8), (7, 11)], ["mean"] * 3, "adaptive_avg_pool1d"),
    ([(0, 3), (3, 7), (7, 11)], ["amax"] * 3, None),                      # other windows
    ([(0, 4), (3, 8), (7, 11)], ["amax", "mean", "amax"], None),          # mixed reductions
    ([(0, 4), (3, 8)], ["amax"] * 2, None)])                              # not the whole length
def test_fuse_adaptive_pool_takes_torchs_windows_only(windows, reduces, fused):
    g = _written_out_pool(windows, reduces)
    x = torch.randn(2, 3, 11)
    ref = g.run(x)
    g2 = run_passes(g, ["fuse_adaptive_pool"])
    assert [n.op for n in g2.nodes] == ([fused] if fused else [n.op for n in g.nodes])
    assert_same_outputs(g2.run(x), ref)


# ---- compose_moves ------------------------------------------------------------------------------------------
class _Shuffles(nn.Module):
    """Chains of reshapes and permutes as ONNX round trips leave them: pixel_unshuffle written out and reordered
    again, a channel shuffle, a head split and merge, and one chain whose reshape splits across dims (the
    canonical form needs the finest dims both ends use)."""

    def forward(self, x):                                              # (2, 12, 6, 4)
        a = x.unflatten(3, (-1, 2)).unflatten(2, (-1, 2)).permute(0, 1, 3, 5, 2, 4).flatten(1, 3)
        a = a.reshape(2, 4, 12, 3, 2).transpose(1, 2).reshape(2, 48, 3, 2)
        b = x.reshape(2, 3, 4, 24).transpose(1, 2).reshape(2, 12, 6, 4)  # a channel shuffle
        c = x.flatten(2).reshape(2, 12, 3, 8).permute(0, 2, 1, 3).reshape(2, 3, 96).unsqueeze(1)
        return a, b, c


def test_compose_moves_keeps_every_element_in_fewer_ops():
    torch.manual_seed(0)
    x = torch.randn(2, 12, 6, 4)
    g = bridge.trace(_Shuffles(), (x,))
    g2 = run_passes(g, ["compose_moves"])
    moves = {"reshape", "view", "flatten", "unflatten", "permute", "transpose", "unsqueeze", "squeeze"}
    assert sum(n.op in moves for n in g2.nodes) < sum(n.op in moves for n in g.nodes)
    assert sum(n.op in moves for n in g2.nodes) <= 9  # at most reshape, permute, reshape a chain
    for _ in range(2):
        x = torch.randn(2, 12, 6, 4)
        assert_same_outputs(g2.run(x), _Shuffles()(x))
        assert_same_outputs(g2.to_module()(x), _Shuffles()(x))


@pytest.mark.parametrize("seed", range(40))
def test_compose_moves_on_random_chains(seed):
    """Random chains of reshapes (splits and merges of neighbouring dims) and permutes: the composed graph moves
    every element where the chain did."""
    import random

    rng = random.Random(seed)
    shape = [rng.choice([1, 2, 3, 4, 6]) for _ in range(rng.randrange(2, 5))]
    ops = []
    cur = list(shape)
    for _ in range(rng.randrange(3, 7)):
        if rng.random() < 0.5 and len(cur) > 1:
            perm = list(range(len(cur)))
            rng.shuffle(perm)
            ops.append(("permute", perm))
            cur = [cur[p] for p in perm]
        elif rng.random() < 0.5 and len(cur) > 1:  # merge two neighbours
            i = rng.randrange(len(cur) - 1)
            cur = cur[:i] + [cur[i] * cur[i + 1]] + cur[i + 2:]
            ops.append(("reshape", list(cur)))
        else:  # split one dim by a factor of it
            i = rng.randrange(len(cur))
            f = rng.choice([d for d in range(1, cur[i] + 1) if cur[i] % d == 0])
            cur = cur[:i] + [f, cur[i] // f] + cur[i + 1:]
            ops.append(("reshape", list(cur)))

    class Chain(nn.Module):
        def forward(self, x):
            for kind, arg in ops:
                x = x.permute(arg) if kind == "permute" else x.reshape(arg)
            return x * 1.0

    x = torch.randn(shape)
    g = run_passes(bridge.trace(Chain(), (x,)), ["compose_moves"])
    assert len(g.nodes) <= len(ops) + 1
    x = torch.randn(shape)
    assert_same_outputs(g.run(x), Chain()(x))
