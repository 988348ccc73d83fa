"""bridge.to_sequential: chains as real layers (round trip from nn.Sequential), DAGs as stages of live tensors,
balanced stages within 1.5x of the ideal split over the zoo, parity with eager everywhere."""
from __future__ import annotations

import functools
import inspect
import io
from itertools import accumulate

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import bridge
from bridge import zoo
from bridge.errors import TransformError
from bridge.ir.graph import Graph
from bridge.ir.spec import TensorSpec
from bridge.views.sequential import StagedSequential, chain_inputs, live_counts, node_weights, staged
from tests.helpers import assert_same_outputs

ZOO = [e for e in zoo.entries() if "slow" not in e.tags]


@functools.lru_cache(maxsize=None)
def _traced(name: str):
    e = zoo.get(name)
    model = e.make_model()
    args, kwargs = e.make_inputs(e.batch)
    return model, args, kwargs, bridge.trace(model, args, kwargs)


def _eager(model, args, kwargs):
    with torch.no_grad():
        return model(*args, **kwargs)


# ---- chains -------------------------------------------------------------------------------------------
def _stack() -> nn.Sequential:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                      nn.Flatten(), nn.Linear(64, 16), nn.Dropout(0.2), nn.GELU(approximate="tanh"),
                      nn.LayerNorm(16), nn.Linear(16, 5, bias=False), nn.LogSoftmax(-1))
    with torch.no_grad():
        m[1].running_mean.uniform_(-1, 1)
        m[1].running_var.uniform_(0.5, 2)
        m[1].num_batches_tracked.fill_(7)
    return m.eval()


@pytest.mark.parametrize("dynamic", [False, True])
def test_round_trip_sequential_graph_sequential(dynamic):
    m = _stack()
    x = torch.randn(2, 3, 8, 8)
    g = bridge.trace(m, (x,), dynamic={"input": {0: "batch"}} if dynamic else None)
    assert chain_inputs(g) is not None
    s = bridge.to_sequential(g)
    assert type(s) is nn.Sequential
    assert [type(c) for c in s] == [type(c) for c in m]
    assert [k for k, _ in s.named_children()] == [k for k, _ in m.named_children()]
    ref, got = m.state_dict(), s.state_dict()
    assert list(got) == list(ref)
    for k in ref:
        assert torch.equal(got[k], ref[k]), k
    assert repr(s).replace("ReLU()", "ReLU(inplace=True)") == repr(m)  # inplace is not recorded by the trace
    assert all(not c.training for c in s)
    with torch.no_grad():
        assert_same_outputs(s(x), m(x))
        if dynamic:
            x5 = torch.randn(5, 3, 8, 8)
            assert_same_outputs(s(x5), m(x5))
    # and once more: the rebuilt Sequential traces to the same graph text
    assert str(bridge.trace(s, (x,))) == str(bridge.trace(m, (x,)))


class Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 4)
        self.scale = nn.Parameter(torch.linspace(0.5, 2.0, 4))

    def forward(self, x):
        y = torch.flatten(x, 1)
        y = self.fc(y) + 1.5
        y = F.relu(y) * self.scale
        return y.softmax(-1)


def test_chain_functional_ops_become_named_opcall_layers_golden():
    torch.manual_seed(0)
    m = Functional().eval()
    x = torch.randn(3, 2, 3)
    g = bridge.trace(m, (x,))
    s = bridge.to_sequential(g)
    assert str(s) == """\
Sequential(
  (flatten): OpCall('flatten', start_dim=1)
  (fc): Linear(in_features=6, out_features=4, bias=True)
  (add): OpCall('add', other=1.5)
  (relu): OpCall('relu')
  (mul): OpCall('mul', other=scale)
  (softmax): OpCall('softmax', dim=-1)
)"""
    assert torch.equal(s.mul.scale, m.scale) and isinstance(s.mul.scale, nn.Parameter)
    assert set(s.state_dict()) == {"fc.weight", "fc.bias", "mul.scale"}
    assert_same_outputs(s(x), m(x))
    buf = io.BytesIO()  # OpCall layers pickle: the whole Sequential saves and loads
    torch.save(s, buf)
    buf.seek(0)
    s2 = torch.load(buf, weights_only=False)
    assert_same_outputs(s2(x), m(x))


def test_onnx_import_without_scopes_gets_real_layers(tmp_path):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv1d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(24, 5), nn.GELU(), nn.LayerNorm(5),
                      nn.Softmax(-1)).eval()
    x = torch.randn(2, 3, 8)
    path = str(tmp_path / "m.onnx")
    bridge.to_onnx(m, path, args=(x,))
    g = bridge.from_onnx(path)
    assert not any(n.scope for n in g.nodes)
    s = bridge.to_sequential(g)
    # each layer class is checked against the node (a 3-d conv weight is a Conv1d, not a Conv2d)
    assert [type(c) for c in s] == [type(c) for c in m]
    assert_same_outputs(s(x), m(x))


def test_chain_stages_group_layers():
    m = _stack()
    x = torch.randn(2, 3, 8, 8)
    s = bridge.to_sequential(bridge.trace(m, (x,)), stages=3)
    assert len(s) == 3 and all(type(c) is nn.Sequential for c in s)
    assert [type(layer) for stage in s for layer in stage] == [type(c) for c in m]
    assert_same_outputs(s(x), m(x))


def test_shared_weight_stays_one_parameter():
    lin = nn.Linear(4, 4)
    m = nn.Sequential(lin, nn.Tanh(), lin).eval()
    x = torch.randn(2, 4)
    s = bridge.to_sequential(bridge.trace(m, (x,)))
    assert [type(c) for c in s] == [nn.Linear, nn.Tanh, nn.Linear]
    assert s[0].weight is s[2].weight
    assert_same_outputs(s(x), m(x))


# ---- DAGs -----------------------------------------------------------------------------------------------
class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(4, 8)
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        h = h + self.a(h)
        h = h + torch.tanh(self.b(h))
        return self.head(h), h


def test_live_counts_golden():
    g = Graph()
    s = TensorSpec((2,), torch.float32)
    x = g.add_input("x", s)
    a = g.add_node("relu", {"input": x}, outputs=[("a", s)]).output
    b = g.add_node("neg", {"input": a}, outputs=[("b", s)]).output
    c = g.add_node("add", {"input": a, "other": b, "alpha": 1}, outputs=[("c", s)]).output
    d = g.add_node("mul", {"input": c, "other": x}, outputs=[("d", s)]).output
    g.set_outputs([d, a])
    # before relu: x | before neg: x, a | before add: x, a, b | before mul: x, a, c | end: d, a
    assert live_counts(g) == [1, 2, 3, 3, 2]
    # a stage at every cut takes the values live there, in definition order, and the last returns the outputs
    s = staged(g, [1, 2, 3])
    assert [(i.inputs, i.outputs) for i in s.info] == [
        (["x"], ["x", "a"]), (["x", "a"], ["x", "a", "b"]), (["x", "a", "b"], ["x", "a", "c"]),
        (["x", "a", "c"], ["d", "a"])]
    t = torch.tensor([1.0, -2.0])
    assert_same_outputs(s(t), g.run(t))


def test_dag_default_cuts_golden():
    torch.manual_seed(0)
    m = Residual().eval()
    x = torch.randn(3, 4)
    g = bridge.trace(m, (x,))
    assert chain_inputs(g) is None
    s = bridge.to_sequential(g)
    assert isinstance(s, StagedSequential) and isinstance(s, nn.Sequential)
    # one tensor is live at every cut; the chain stem -> relu is one stage, each residual block one, and a stage
    # of one node reads "1 node %head"
    assert s.describe() == """\
stage 0: 2 nodes %stem .. %relu, flops 240; in (x) -> out (relu)
stage 1: 2 nodes %a .. %add, flops 432; in (relu) -> out (add)
stage 2: 3 nodes %b .. %add_1, flops 528; in (add) -> out (add_1)
stage 3: 1 node %head, flops 102; in (add_1) -> out (head, add_1)"""
    assert_same_outputs(s(x), m(x))
    # parameters keep their dotted names inside each stage
    assert set(s.state_dict()) == {"0.stem.weight", "0.stem.bias", "1.a.weight", "1.a.bias", "2.b.weight",
                                   "2.b.bias", "3.head.weight", "3.head.bias"}


def _run_stage_by_stage(s: StagedSequential, args: tuple, kwargs: dict):
    """The convention, by hand as a pipeline runs it: the first stage takes the model's inputs, every later stage
    its live values as positional arguments, each returning the tuple of what it passes on."""
    x = s[0](*args, **kwargs)
    for i, stage in enumerate(s[1:], start=1):
        assert isinstance(x, tuple) and len(x) == len(s.info[i].inputs), i
        params = inspect.signature(stage.forward).parameters.values()
        assert [p.kind for p in params] == [inspect.Parameter.POSITIONAL_OR_KEYWORD] * len(x)
        x = stage(*x)
    return x


class ConcatTwoOut(nn.Module):
    """Two inputs (one by keyword, with a default), a concat merge, a skip across stages and two outputs."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 6), nn.Linear(3, 6)
        self.mix = nn.Linear(12, 6)
        self.head = nn.Linear(6, 2)

    def forward(self, x, y, *, scale: float = 0.5):
        ha, hb = torch.relu(self.a(x)), torch.tanh(self.b(y))
        h = self.mix(torch.cat([ha, hb], -1)) * scale
        h = h + ha
        return {"logits": self.head(h), "features": (h, hb)}


@pytest.mark.parametrize("name", ["residual", "concat", "resnet_mini", "multi_input", "dict_output",
                                  "transformer_encoder", "unet_mini"])
def test_every_stage_takes_live_values_positionally(name):
    torch.manual_seed(0)
    if name == "residual":
        model, args, kwargs = Residual().eval(), (torch.randn(3, 4),), {}
    elif name == "concat":
        model, args, kwargs = ConcatTwoOut().eval(), (torch.randn(3, 4),), {"y": torch.randn(3, 3)}
    else:
        model, args, kwargs, _ = _traced(name)
    g = bridge.trace(model, args, kwargs)
    assert chain_inputs(g) is None
    fresh_args = tuple(torch.randn_like(a) if a.is_floating_point() else a for a in args)
    fresh_kwargs = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in kwargs.items()}
    ref = _eager(model, fresh_args, fresh_kwargs)
    for stages in (None, 2, 3, 5):
        if stages is not None and stages > len(g.nodes):
            continue
        s = bridge.to_sequential(g, stages=stages)
        with torch.no_grad():
            assert_same_outputs(_run_stage_by_stage(s, fresh_args, fresh_kwargs), ref)
            assert_same_outputs(s(*fresh_args, **fresh_kwargs), ref)


def test_dag_balanced_stages_golden():
    torch.manual_seed(0)
    m = Residual().eval()
    x = torch.randn(3, 4)
    s = bridge.to_sequential(bridge.trace(m, (x,)), stages=2)
    assert len(s) == 2 and s.balance == "flops"
    # Linear(4->8) on 3 rows: 2*4*24 + 24 = 216; relu 24; Linear(8->8) 408; add 24; tanh 96; head 102
    assert [i.cost for i in s.info] == [216 + 24 + 408 + 24, 408 + 96 + 24 + 102]
    # the ideal split (648 | 654) cuts after %a, where two tensors are live; within the slack, the cut after
    # %add passes one
    assert s.ideal == 654
    assert s.info[0].outputs == ["add"]
    assert_same_outputs(s(x), m(x))


def test_multi_input_keywords_and_structures():
    model, args, kwargs, g = _traced("multi_input")
    s = bridge.to_sequential(g, stages=2)
    with torch.no_grad():
        assert_same_outputs(s(*args, **kwargs), model(*args, **kwargs))


def test_bad_arguments_raise_transform_error():
    m = _stack()
    g = bridge.trace(m, (torch.randn(2, 3, 8, 8),))
    with pytest.raises(TransformError, match="balance"):
        bridge.to_sequential(g, stages=2, balance="time")
    with pytest.raises(TransformError, match="positive"):
        bridge.to_sequential(g, stages=0)
    with pytest.raises(TransformError, match="at most 11"):
        bridge.to_sequential(g, stages=12)


# ---- the zoo --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("entry", ZOO, ids=lambda e: e.name)
def test_zoo_parity_unstaged_and_staged(entry):
    model, args, kwargs, g = _traced(entry.name)
    ref = _eager(model, args, kwargs)
    s = bridge.to_sequential(g)
    if chain_inputs(g) is not None:  # a chain: real layers or OpCall layers, one tensor each
        assert type(s) is nn.Sequential and all(not isinstance(c, StagedSequential) for c in s)
    with torch.no_grad():
        assert_same_outputs(s(*args, **kwargs), ref)
        for k in (2, 4):
            if k <= len(g.nodes):
                staged = bridge.to_sequential(g, stages=k, balance="params" if k == 4 else "flops")
                assert len(staged) == k
                assert_same_outputs(staged(*args, **kwargs), ref)


def _stage_nodes(g, s: StagedSequential) -> list[list]:
    nodes, out, i = g.nodes, [], 0
    for info in s.info:
        out.append(nodes[i:i + info.nodes])
        i += info.nodes
    assert i == len(nodes)
    return out


@pytest.mark.skipif(not zoo.HAS_TORCHVISION, reason="torchvision not installed")
def test_default_stages_of_resnet18_are_stem_blocks_head():
    model, args, kwargs, g = _traced("tv_resnet18")  # torchvision's resnet18, random weights
    s = bridge.to_sequential(g)
    parts = _stage_nodes(g, s)
    assert len(s) == 10
    assert [n.scope.path for n in parts[0]] == ["conv1", "bn1", "relu", "maxpool"]
    for i, part in enumerate(parts[1:9]):  # each BasicBlock whole, its last relu included
        block = f"layer{i // 2 + 1}.{i % 2}"
        assert all(n.scope.path == block or n.scope.path.startswith(block + ".") for n in part), block
        assert part[-1].op == "relu" and part[-2].op == "add"
    assert [n.scope.path for n in parts[9]] == ["avgpool", "", "fc"]  # torch.flatten runs in ResNet.forward
    assert all(len(i.inputs) == 1 for i in s.info)
    assert s.describe().splitlines()[0] == ("stage 0: 4 nodes %conv1 .. %maxpool, flops 39485440; in (x) -> "
                                            "out (maxpool)")
    with torch.no_grad():
        assert_same_outputs(s(*args, **kwargs), _eager(model, args, kwargs))


def test_default_stages_of_an_onnx_import_are_the_same_blocks(tmp_path):
    """No module scopes after an ONNX import: a block's closing activation still joins it."""
    model, args, kwargs, g = _traced("resnet_mini")
    path = str(tmp_path / "r.onnx")
    bridge.to_onnx(model, path, args=args)
    imported = bridge.from_onnx(path)
    assert not any(n.scope for n in imported.nodes)
    s, t = bridge.to_sequential(imported), bridge.to_sequential(g)
    assert len(s) == len(t) == 7
    # the same tensor leaves each block: the import names it after the traced node ("Relu_layer1.0.relu_1")
    assert [i.outputs[0] for i in s.info[1:-1]] == ["Relu_" + i.outputs[0] for i in t.info[1:-1]]
    with torch.no_grad():
        assert_same_outputs(s(*args), _eager(model, args, kwargs))


@pytest.mark.parametrize("entry", ZOO, ids=lambda e: e.name)
def test_default_stages_over_zoo(entry):
    """``stages=None`` cuts only where the fewest tensors are live, never between two single-node stages (a chain
    is one stage), and prints a stage of one node as "1 node %name"."""
    g = _traced(entry.name)[3]
    if chain_inputs(g) is not None:
        return
    s = bridge.to_sequential(g)
    live = live_counts(g)
    low = min(live[1:len(g.nodes)], default=0)
    bounds = list(accumulate(i.nodes for i in s.info))[:-1]
    assert all(live[p] == low for p in bounds), entry.name
    assert not any(a.nodes == 1 and b.nodes == 1 for a, b in zip(s.info, s.info[1:])), s.describe()
    for info, line in zip(s.info, s.describe().splitlines()):
        if info.nodes == 1:
            assert f": 1 node %{info.first}," in line
        else:
            assert f": {info.nodes} nodes %{info.first} .. %{info.last}," in line


def _ideal_by_dp(w: list[int], k: int) -> int:
    """Smallest largest part over all contiguous splits into k parts: the textbook O(k n^2) DP."""
    n = len(w)
    pre = [0]
    for x in w:
        pre.append(pre[-1] + x)
    inf = float("inf")
    f = [[inf] * (n + 1) for _ in range(k + 1)]
    f[0][0] = 0
    for j in range(1, k + 1):
        for i in range(j, n + 1):
            f[j][i] = min(max(f[j - 1][p], pre[i] - pre[p]) for p in range(j - 1, i))
    return f[k][n]


@pytest.mark.parametrize("balance", ["flops", "params", "memory"])
def test_balanced_within_1_5x_of_ideal_over_zoo(balance):
    worst = 0.0
    for e in ZOO:
        g = _traced(e.name)[3]
        w = node_weights(g, balance)
        for k in (2, 3, 4):
            if k > len(g.nodes):
                continue
            s = bridge.to_sequential(g, stages=k, balance=balance)
            ideal = _ideal_by_dp(w, k)
            assert s.ideal == ideal, (e.name, k)
            largest = max(i.cost for i in s.info)
            assert sum(i.cost for i in s.info) == sum(w)
            assert largest <= 1.5 * ideal, (e.name, k, largest, ideal)
            worst = max(worst, largest / max(ideal, 1))
    assert worst <= 1.25  # the slack to_sequential allows itself (SLACK)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", ["mlp", "sequential", "resnet_mini", "multi_input", "transformer_encoder"])
def test_sequential_moves_to_cuda(name):
    """Layers, OpCall layers and stage modules follow ``.to('cuda')``; numbers match eager on CUDA."""
    from tests.helpers import to_device

    model, args, kwargs, g = _traced(name)
    model = zoo.get(name).make_model().to("cuda")
    args, kwargs = to_device(args, "cuda"), to_device(kwargs, "cuda")
    ref = _eager(model, args, kwargs)
    for stages in (None, 2):
        s = bridge.to_sequential(g, stages=stages).to("cuda")
        with torch.no_grad():
            assert_same_outputs(s(*args, **kwargs), ref)
    m = Functional().eval()
    x = torch.randn(3, 2, 3)
    s = bridge.to_sequential(bridge.trace(m, (x,))).to("cuda")
    assert_same_outputs(s(x.cuda()), m.cuda()(x.cuda()))
