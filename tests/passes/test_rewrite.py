"""Op replacement, layer replacement and the pattern rewriter: golden text, match reports and numbers against
eager models where the same change was made by hand."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import bridge
from bridge import zoo
from bridge.errors import TransformError
from bridge.ir.graph import Graph
from bridge.ir.spec import TensorSpec
from tests.helpers import assert_same_outputs


class Net(nn.Module):
    def __init__(self, act=nn.ReLU, fn=torch.relu):
        super().__init__()
        self.fc = nn.Linear(4, 6)
        self.act = act()
        self.fc2 = nn.Linear(6, 3)
        self.fn = fn

    def forward(self, x):
        return self.fc2(self.act(self.fc(x)) * 2) + self.fn(x).sum(-1, keepdim=True) * 2


def _net(**kw):
    torch.manual_seed(0)
    return Net(**kw).eval()


# ---- replace_op ---------------------------------------------------------------------------------------
def test_replace_op_relu_to_gelu_golden_and_numbers():
    m = _net()
    x = torch.randn(5, 4)
    g = bridge.trace(m, (x,))
    g2, changed = bridge.replace_op(g, "relu", "gelu")
    assert changed and g2 is g
    assert str(g.check()) == """\
graph(%x: f32[5, 4]) {
  %fc : f32[5, 6] = linear(%x, %fc.weight, %fc.bias)  # fc (Linear)
  %act : f32[5, 6] = gelu(%fc)  # act (GELU)
  %mul : f32[5, 6] = mul(%act, 2)
  %fc2 : f32[5, 3] = linear(%mul, %fc2.weight, %fc2.bias)  # fc2 (Linear)
  %relu : f32[5, 4] = gelu(%x)
  %sum_1 : f32[5, 1] = sum(%relu, dim=-1, keepdim=True)
  %mul_1 : f32[5, 1] = mul(%sum_1, 2)
  %add : f32[5, 3] = add(%fc2, %mul_1)
  return %add
}"""
    by_hand = _net(act=nn.GELU, fn=F.gelu)  # the same weights, GELU where ReLU was
    assert_same_outputs(g.run(x), by_hand(x))
    assert not torch.allclose(g.run(x), m(x))  # the numbers did change
    _, changed = bridge.replace_op(g, "relu", "gelu")
    assert not changed


def test_replace_op_with_arguments_and_onnx():
    m = _net()
    x = torch.randn(5, 4)
    g = bridge.trace(m, (x,))
    bridge.replace_op(g, "relu", "gelu", approximate="tanh")
    by_hand = _net(act=lambda: nn.GELU(approximate="tanh"), fn=lambda t: F.gelu(t, approximate="tanh"))
    assert_same_outputs(g.run(x), by_hand(x))
    proto = bridge.to_onnx(g, None)
    assert "Relu" not in {n.op_type for n in proto.graph.node}


def test_replace_op_refuses_shape_changes_and_unknown_ops():
    g = bridge.trace(_net(), (torch.randn(5, 4),))
    with pytest.raises(TransformError, match="unknown op 'swish'"):
        bridge.replace_op(g, "relu", "swish")
    with pytest.raises(TransformError, match="same output shape"):
        bridge.replace_op(g, "relu", "sum")
    with pytest.raises(TransformError, match="no parameter"):
        bridge.replace_op(g, "relu", "gelu", slope=1.0)


def test_replace_op_checks_shapes_over_dim_expressions():
    """A ``2*batch`` dim is sized at its example value for the shape check, as the symbols it is made of."""
    class Twice(nn.Module):
        def forward(self, x):
            return torch.relu(torch.cat([x, x])) * 2

    g = bridge.trace(Twice(), (torch.randn(3, 4),), dynamic={"x": {0: "batch"}})
    assert str(g.node("relu").outputs[0].spec) == "f32[2*batch, 4]"
    with pytest.raises(TransformError, match="same output shape"):
        bridge.replace_op(g, "relu", "sum")
    assert bridge.replace_op(g, "relu", "gelu")[1]
    for batch in (3, 5):
        x = torch.randn(batch, 4)
        assert_same_outputs(g.check().run(x), F.gelu(torch.cat([x, x])) * 2)


@pytest.mark.parametrize("name", ["resnet_mini", "vgg_mini", "squeezenet_mini"])
def test_replace_op_zoo_parity_against_hand_swapped_model(name):
    e = zoo.get(name)
    model = e.make_model()
    args, kwargs = e.make_inputs(2)
    g = bridge.trace(model, args, kwargs)
    relus = g.find("relu")
    assert relus and all(n.scope.type == "ReLU" for n in relus)  # every relu is an nn.ReLU layer
    bridge.replace_op(g, "relu", "gelu")
    by_hand = copy.deepcopy(model)
    for parent in list(by_hand.modules()):
        for k, child in parent.named_children():
            if isinstance(child, nn.ReLU):
                setattr(parent, k, nn.GELU())
    with torch.no_grad():
        assert_same_outputs(g.run(*args, **kwargs), by_hand(*args, **kwargs))


# ---- replace_module -----------------------------------------------------------------------------------
class LoRA(nn.Module):
    def __init__(self, lin: nn.Linear, rank: int = 2):
        super().__init__()
        self.lin = lin
        self.a = nn.Parameter(torch.randn(rank, lin.in_features) * 0.5)
        self.b = nn.Parameter(torch.randn(lin.out_features, rank) * 0.5)

    def forward(self, x):
        return self.lin(x) + x @ self.a.t() @ self.b.t()


def test_replace_module_linear_with_user_module_inlined():
    m = _net()
    x = torch.randn(5, 4)
    g = bridge.trace(m, (x,), dynamic={"x": {0: "batch"}})
    made = []

    def factory(lin):
        assert type(lin) is nn.Linear and lin.weight.shape in ((6, 4), (3, 6))
        torch.manual_seed(len(made))
        made.append(LoRA(lin))
        return made[-1]

    _, changed = bridge.replace_module(g, nn.Linear, factory)
    assert changed and len(made) == 2
    text = str(g.check())
    assert "  %fc : f32[batch, 6] = add(%fc_lin, %fc_matmul_1)  # fc (LoRA)" in text
    assert "%fc2.lin.weight" in text and "opaque" not in text
    # the factory got the model's weights; the eager model with the same layers swapped by hand agrees
    assert torch.equal(made[0].lin.weight, m.fc.weight)
    by_hand = copy.deepcopy(m)
    by_hand.fc, by_hand.fc2 = made
    for batch in (5, 7):
        xb = torch.randn(batch, 4)
        with torch.no_grad():
            assert_same_outputs(g.run(xb), by_hand(xb))
    assert set(g.to_module().state_dict()) == {"fc.a", "fc.b", "fc.lin.weight", "fc.lin.bias", "fc2.a", "fc2.b",
                                               "fc2.lin.weight", "fc2.lin.bias"}
    # plain registry ops: ONNX export and onnxruntime agree
    import onnxruntime as ort

    proto = bridge.to_onnx(g, None)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"x": x.numpy()})
    with torch.no_grad():
        assert_same_outputs(torch.from_numpy(y), by_hand(x))


def test_replace_module_shared_layer_stays_shared():
    torch.manual_seed(0)
    lin = nn.Linear(4, 4)
    m = nn.Sequential(lin, nn.Tanh(), lin).eval()  # one layer called twice
    x = torch.randn(3, 4)
    g = bridge.trace(m, (x,))
    made = []

    def factory(layer):
        torch.manual_seed(1)
        made.append(LoRA(layer))
        return made[-1]

    bridge.replace_module(g, nn.Linear, factory)
    assert len(made) == 1
    gm = g.check().to_module()
    assert set(gm.state_dict()) == {"0.a", "0.b", "0.lin.weight", "0.lin.bias"}
    by_hand = nn.Sequential(made[0], nn.Tanh(), made[0])
    with torch.no_grad():
        assert_same_outputs(gm(x), by_hand(x))


def test_replace_module_errors():
    g = bridge.trace(_net(), (torch.randn(5, 4),))
    with pytest.raises(TransformError, match="several nodes"):
        bridge.replace_module(g, LoRA, lambda m: m)
    with pytest.raises(TransformError, match="not an nn.Module"):
        bridge.replace_module(g, nn.Linear, lambda lin: 3)
    with pytest.raises(TransformError, match="gives f32"):
        bridge.replace_module(g, nn.Linear, lambda lin: nn.Linear(lin.in_features, 1))


# ---- rewrite --------------------------------------------------------------------------------------------
def test_rewrite_reports_every_match_and_rewrites_numbers():
    class M(nn.Module):
        def forward(self, x, y):
            a = torch.relu(x) * 2
            b = torch.relu(y * 3) * 2
            c = torch.relu(x) * 3          # another constant: no match
            d = torch.relu(y)
            return a + b + c + d * 2 + d    # relu(y) used outside the pattern: no match

    x, y = torch.randn(3, 4), torch.randn(3, 4)
    g = bridge.trace(M(), (x, y))
    rep = bridge.rewrite(g, lambda t: torch.relu(t) * 2, lambda t: torch.sigmoid(t) * 2)
    assert len(rep) == 2 and rep.graph is g
    assert str(rep) == """\
2 matches of <lambda> (relu -> mul)
  %mul: %relu %mul (xs_0=%x) in <root>
  %mul_2: %relu_1 %mul_2 (xs_0=%mul_1) in <root>"""
    assert [m.nodes for m in rep] == [["relu", "mul"], ["relu_1", "mul_2"]]
    assert "  %mul : f32[3, 4] = mul(%mul_sigmoid, 2)" in str(g.check())
    want = torch.sigmoid(x) * 2 + torch.sigmoid(y * 3) * 2 + torch.relu(x) * 3 + torch.relu(y) * 2 + torch.relu(y)
    assert_same_outputs(g.run(x, y), want)


def test_rewrite_chained_matches_read_the_earlier_replacement():
    """The second match binds the first match's output: its replacement reads the first replacement's value
    (it used to read the erased one and fail to erase it)."""
    class M(nn.Module):
        def forward(self, x):
            return torch.relu(torch.relu(x) * 2) * 2

    x = torch.randn(3, 4)
    g = bridge.trace(M(), (x,))
    rep = bridge.rewrite(g, lambda t: torch.relu(t) * 2, lambda t: F.gelu(t) * 2)
    assert [(m.output, m.bindings) for m in rep] == [("mul", {"xs_0": "x"}), ("mul_1", {"xs_0": "mul"})]
    assert "  %mul_1_gelu : f32[3, 4] = gelu(%mul)" in str(g.check()) and not g.find("relu")
    assert_same_outputs(g.run(x), F.gelu(F.gelu(x) * 2) * 2)


def test_rewrite_structure_commutative_and_wildcards():
    g = Graph()
    s = TensorSpec((2, 3), torch.float32)
    x = g.add_input("x", s)
    y = g.add_input("y", s)
    e1 = g.add_node("exp", {"input": x}, outputs=[("e1", s)]).output
    a1 = g.add_node("add", {"input": y, "other": e1, "alpha": 1}, outputs=[("a1", s)]).output  # y + exp(x)
    e2 = g.add_node("exp", {"input": y}, outputs=[("e2", s)]).output
    a2 = g.add_node("add", {"input": e2, "other": y, "alpha": 1}, outputs=[("a2", s)]).output  # exp(y) + y
    m = g.add_node("mul", {"input": a1, "other": a1}, outputs=[("m", s)]).output                # a1 * a1
    m2 = g.add_node("mul", {"input": a2, "other": m}, outputs=[("m2", s)]).output              # a2 * m
    g.set_outputs([m2])
    g.check()
    ref = g.run(torch.ones(2, 3), torch.full((2, 3), 2.0))

    # exp(a) + b matches both adds, one of them with the operands the other way round
    rep = bridge.rewrite(g.copy(), lambda a, b: torch.exp(a) + b, lambda a, b: torch.exp(a) - b)
    assert [(m.output, m.bindings) for m in rep] == [("a1", {"xs_0": "x", "xs_1": "y"}),
                                                     ("a2", {"xs_0": "y", "xs_1": "y"})]
    assert len(bridge.rewrite(g.copy(), lambda a, b: torch.exp(a) + b, lambda a, b: a, commutative=False)) == 1
    # one wildcard twice must bind one value: t * t matches a1 * a1, not a2 * m
    sq = bridge.rewrite(g.copy(), lambda t: t * t, lambda t: t.square())
    assert [m.output for m in sq] == ["m"]
    assert_same_outputs(sq.graph.run(torch.ones(2, 3), torch.full((2, 3), 2.0)), ref)
    # no match: nothing changes
    g2 = g.copy()
    assert len(bridge.rewrite(g2, lambda t: torch.tanh(t), lambda t: t)) == 0 and str(g2) == str(g)


def test_rewrite_over_the_zoo_keeps_numbers():
    """relu(x) -> clamp(x, min=0) is the same function: every zoo model keeps its outputs; the match count
    is the number of relu nodes."""
    total = 0
    for e in zoo.entries(exclude_tags=("slow", "torchvision")):  # the 28 self-built models
        model = e.make_model()
        args, kwargs = e.make_inputs(2)
        g = bridge.trace(model, args, kwargs)
        n_relu = len(g.find("relu"))
        rep = bridge.rewrite(g, lambda t: torch.relu(t), lambda t: torch.clamp(t, min=0.0))
        assert len(rep) == n_relu and not g.check().find("relu"), e.name
        total += n_relu
        with torch.no_grad():
            assert_same_outputs(g.run(*args, **kwargs), model(*args, **kwargs))
    assert total > 20


def test_rewrite_errors():
    g = bridge.trace(_net(), (torch.randn(5, 4),))
    with pytest.raises(TransformError, match="not used by the pattern"):
        bridge.rewrite(g, lambda a, b: torch.relu(a), lambda a, b: a)
    with pytest.raises(TransformError, match="compute one tensor"):
        bridge.rewrite(g, lambda a: a, lambda a: a)
    with pytest.raises(TransformError, match="does not trace"):
        bridge.rewrite(g, lambda a: torch.relu(a), lambda a: a @ torch.ones(3, 3))


def test_rewrite_failing_at_a_later_match_leaves_a_valid_graph():
    """The replacement traces at the (2, 4) match and not at the (3, 4) one: the first swap stays, placed where
    its match was, and the graph still checks and computes the model (it was left out of order)."""
    class M(nn.Module):
        def forward(self, x, y):
            return torch.relu(x).sum() + torch.relu(y).sum()

    x, y = torch.randn(2, 4), torch.randn(3, 4)
    g = bridge.trace(M(), (x, y))
    with pytest.raises(TransformError, match="does not trace"):
        bridge.rewrite(g, lambda t: torch.relu(t), lambda t: torch.relu(t.view(2, 4)).view(t.shape))
    assert [n.op for n in g.check().nodes] == ["view", "relu", "view", "sum", "relu", "sum", "add"]
    assert_same_outputs(g.run(x, y), M()(x, y))
    # a replacement of the wrong shape is refused before it adds a node
    text = str(g)
    with pytest.raises(TransformError, match="where the pattern gave"):
        bridge.rewrite(g, lambda t: torch.relu(t), lambda t: t[:1])
    assert str(g.check()) == text
