"""cse and decompose: golden text on small graphs, spec checks, parity over zoo models, ONNX export after."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from bridge import zoo

import bridge
from bridge.ir.graph import Graph
from bridge.ir.spec import TensorSpec
from bridge.passes import all_passes, run_passes
from tests.helpers import assert_same_outputs

PASSES = all_passes()


def check_specs(g: Graph, *args):
    """Every node's output spec is what running its op on the recorded inputs gives (static shapes)."""
    from bridge.ir import structure
    from bridge.ir.graph import map_values
    from bridge.ops import registry

    env = {id(v): a for v, a in zip(g.inputs, args)}
    for c in g.constants:
        env[id(c)] = c.const
    for n in g.nodes:
        with torch.no_grad():
            out = registry.get(n.op).impl(**map_values(n.args, lambda v: env[id(v)]))
        outs = structure.flatten(out, lambda o: isinstance(o, torch.Tensor))[0]
        if len(outs) != len(n.outputs):  # python results (sizes) among the outputs
            outs = [out] if len(n.outputs) == 1 else \
                structure.flatten(out, lambda o: not isinstance(o, (list, tuple, dict)))[0]
        assert len(outs) == len(n.outputs), n
        for v, o in zip(n.outputs, outs):
            if isinstance(o, torch.Tensor):
                assert v.spec == TensorSpec(tuple(o.shape), o.dtype), (n, v.spec, o.shape)
            env[id(v)] = o


# ---- cse ------------------------------------------------------------------------------------------


def _dup_graph() -> Graph:
    g = Graph()
    s = TensorSpec((2, 3), torch.float32)
    x = g.add_input("x", s)
    a1 = g.add_node("add", {"input": x, "other": 1.0, "alpha": 1}, outputs=[("a", s)]).output
    a2 = g.add_node("add", {"input": x, "other": 1.0, "alpha": 1}, outputs=[("a", s)]).output
    r1 = g.add_node("relu", {"input": a1}, outputs=[("r", s)]).output
    r2 = g.add_node("relu", {"input": a2}, outputs=[("r", s)]).output
    i1 = g.add_node("add", {"input": x, "other": 1, "alpha": 1}, outputs=[("i", s)]).output  # int 1: kept
    m = g.add_node("mul", {"input": r1, "other": r2}, outputs=[("m", s)]).output
    n1 = g.add_node("randn_like", {"input": x}, outputs=[("n", s)]).output
    n2 = g.add_node("randn_like", {"input": x}, outputs=[("n", s)]).output
    d1 = g.add_node("dropout", {"input": m, "p": 0.5, "training": True}, outputs=[("d", s)]).output
    d2 = g.add_node("dropout", {"input": m, "p": 0.5, "training": True}, outputs=[("d", s)]).output
    out = g.add_node("add", {"input": d1, "other": d2, "alpha": 1}, outputs=[("o", s)]).output
    out = g.add_node("add", {"input": out, "other": n1, "alpha": 1}, outputs=[("o", s)]).output
    out = g.add_node("add", {"input": out, "other": n2, "alpha": 1}, outputs=[("o", s)]).output
    out = g.add_node("add", {"input": out, "other": i1, "alpha": 1}, outputs=[("o", s)]).output
    g.set_outputs([out])
    return g.check()


def test_cse_merges_chains_and_keeps_random_and_training_dropout():
    g = _dup_graph()
    g2 = run_passes(g, ["cse", "dce"])
    assert str(g2) == """\
graph(%x: f32[2, 3]) {
  %a : f32[2, 3] = add(%x, 1.0)
  %r : f32[2, 3] = relu(%a)
  %i : f32[2, 3] = add(%x, 1)
  %m : f32[2, 3] = mul(%r, %r)
  %n : f32[2, 3] = randn_like(%x)
  %n_1 : f32[2, 3] = randn_like(%x)
  %d : f32[2, 3] = dropout(%m)
  %d_1 : f32[2, 3] = dropout(%m)
  %o : f32[2, 3] = add(%d, %d_1)
  %o_1 : f32[2, 3] = add(%o, %n)
  %o_2 : f32[2, 3] = add(%o_1, %n_1)
  %o_3 : f32[2, 3] = add(%o_2, %i)
  return %o_3
}"""
    _, changed = PASSES["cse"](g2)
    assert not changed


def test_cse_distinguishes_constants_by_type_and_sign():
    g = Graph()
    s = TensorSpec((3,), torch.float32)
    x = g.add_input("x", s)
    acc = x
    for other in (0.0, -0.0, 0.0, True, 1):
        m = g.add_node("mul", {"input": x, "other": other}, outputs=[("m", s)]).output
        acc = g.add_node("add", {"input": acc, "other": m, "alpha": 1}, outputs=[("acc", s)]).output
    outs = [acc]
    for _ in range(2):  # equal, but both graph outputs: kept distinct values
        outs.append(g.add_node("sum", {"input": x, "dim": [0], "keepdim": False, "dtype": None},
                               outputs=[("s", TensorSpec((), torch.float32))]).output)
    g.set_outputs(outs)
    g2, changed = PASSES["cse"](g.copy())
    g2.check()
    assert changed  # 0.0 twice; -0.0, True and 1 stay apart
    assert [n.op for n in g2.nodes].count("mul") == 4
    assert [n.op for n in g2.nodes].count("sum") == 2  # both are graph outputs: kept distinct
    x = torch.tensor([1.0, -2.0, 0.5])
    assert_same_outputs(g2.run(x)[0], g.run(x)[0])


def test_cse_unhashable_constant_is_skipped():
    class NoHash:
        __hash__ = None

    g = Graph()
    s = TensorSpec((3,), torch.float32)
    x = g.add_input("x", s)
    a = g.add_node("relu", {"input": x}, outputs=[("a", s)]).output
    n1 = g.add_node("add", {"input": a, "other": NoHash()}, outputs=[("b", s)])
    n2 = g.add_node("add", {"input": a, "other": n1.args["other"]}, outputs=[("b", s)])
    g.set_outputs([g.add_node("mul", {"input": n1.output, "other": n2.output}, outputs=[("c", s)]).output])
    from bridge.passes.cse import signature

    assert signature(n1) is None
    g2, _ = PASSES["cse"](g)
    assert [n.op for n in g2.check().nodes] == ["relu", "add", "add", "mul"]


def test_cse_on_traced_duplicates_with_parity():
    class Dup(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            a = torch.relu(self.fc(x)) * 2
            b = torch.relu(self.fc(x)) * 2
            return a + b + torch.sigmoid(x) * torch.sigmoid(x)

    torch.manual_seed(0)
    m = Dup().eval()
    x = torch.randn(3, 4)
    g = bridge.trace(m, (x,))
    g2 = run_passes(g, ["cse", "dce"])
    assert [n.op for n in g2.nodes] == ["linear", "relu", "mul", "add", "sigmoid", "mul", "add"]
    assert_same_outputs(g2.run(x), m(x))


# ---- decompose ------------------------------------------------------------------------------------


def test_decompose_linear_golden_and_specs():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 3)).eval()
    x = torch.randn(2, 4)
    g = bridge.trace(m, (x,))
    g2 = run_passes(g, ["decompose"])
    assert str(g2) == """\
graph(%input: f32[2, 4]) {
  %0_matmul : f32[2, 3] = matmul(%input, %0.weight_t)  # 0 (Linear)
  %0 : f32[2, 3] = add(%0_matmul, %0.bias)  # 0 (Linear)
  return %0
}""", str(g2)
    assert g2.value("0.weight_t").const.shape == (4, 3) and g2.value("0.weight_t").kind == "param"
    assert all(n.source == g.nodes[0].source for n in g2.nodes)
    check_specs(g2, x)
    assert_same_outputs(g2.run(x), m(x))
    proto = bridge.to_onnx(g2, None)
    assert [n.op_type for n in proto.graph.node] == ["MatMul", "Add"]


def test_decompose_functional_linear_weight_input_uses_t():
    def f(x, w, b):
        return F.linear(x, w, b)

    class M(nn.Module):
        def forward(self, x, w, b):
            return f(x, w, b)

    x, w, b = torch.randn(2, 5), torch.randn(3, 5), torch.randn(3)
    g = bridge.trace(M(), (x, w, b))
    g2 = run_passes(g, ["decompose"])
    assert [n.op for n in g2.nodes] == ["t", "matmul", "add"]
    check_specs(g2, x, w, b)
    assert_same_outputs(g2.run(x, w, b), F.linear(x, w, b))


class Composite(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln = nn.LayerNorm(6)
        self.ln2 = nn.LayerNorm((3, 6), elementwise_affine=False, eps=1e-3)
        self.bias = nn.Parameter(torch.randn(6))
        self.w = nn.Parameter(torch.randn(6, 6))
        with torch.no_grad():
            self.ln.weight.uniform_(0.5, 1.5)
            self.ln.bias.uniform_(-0.5, 0.5)

    def forward(self, x):
        y = F.gelu(self.ln(x)) + F.gelu(x, approximate="tanh") + F.silu(x)
        z = torch.addmm(self.bias, y.reshape(-1, 6), self.w, beta=0.5, alpha=2.0).reshape(x.shape)
        return self.ln2(z)


def test_decompose_composites_specs_and_parity():
    torch.manual_seed(0)
    m = Composite().eval()
    x = torch.randn(2, 3, 6) * 3
    g = bridge.trace(m, (x,))
    g2 = run_passes(g, ["decompose"])
    ops = [n.op for n in g2.nodes]
    for gone in ("gelu", "silu", "layer_norm", "addmm", "linear"):
        assert gone not in ops
    assert {"erf", "tanh", "sigmoid", "mean", "var", "sqrt", "div", "matmul"} <= set(ops)
    check_specs(g2, x)
    assert_same_outputs(g2.run(x), m(x))
    # every new node keeps the scope of the node it replaced
    assert {n.scope.path for n in g2.nodes if n.op == "var"} == {"ln", "ln2"}
    proto = bridge.to_onnx(g2, None, args=(x,))
    assert "Erf" in {n.op_type for n in proto.graph.node}


def test_decompose_gelu_golden():
    g = Graph()
    s = TensorSpec((2, 3), torch.float32)
    x = g.add_input("x", s)
    g.set_outputs([g.add_node("gelu", {"input": x, "approximate": "none"}, outputs=[("y", s)]).output])
    g2 = run_passes(g, ["decompose"])
    assert str(g2) == f"""\
graph(%x: f32[2, 3]) {{
  %y_mul : f32[2, 3] = mul(%x, {math.sqrt(0.5)!r})
  %y_erf : f32[2, 3] = erf(%y_mul)
  %y_add : f32[2, 3] = add(%y_erf, 1.0)
  %y_mul_1 : f32[2, 3] = mul(%x, %y_add)
  %y : f32[2, 3] = mul(%y_mul_1, 0.5)
  return %y
}}"""
    x = torch.randn(2, 3)
    assert_same_outputs(g2.run(x), F.gelu(x))


# ---- zoo parity -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mlp", "resnet_mini", "transformer_encoder", "causal_attention"])
def test_decompose_cse_dce_zoo_parity(name):
    e = zoo.get(name)
    model = e.make_model()
    args, kwargs = e.make_inputs(2)
    g = bridge.trace(model, args, kwargs)
    g2 = run_passes(g, ["decompose", "cse", "dce"])
    assert "linear" not in [n.op for n in g2.nodes]
    check_specs(g2, *args)
    with torch.no_grad():
        assert_same_outputs(g2.run(*args, **kwargs), model(*args, **kwargs))
    _, changed = PASSES["cse"](g2.copy())
    assert not changed  # a fixpoint
