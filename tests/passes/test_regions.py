"""Passes over regions (issue 16): every pass runs inside the regions of cond and while_loop nodes; dce and fold
work across their boundary; no pattern matches across it; parity with eager on every branch and trip count."""
import pytest
import torch
import torch.nn.functional as F

import bridge
from bridge.ir.graph import Graph
from bridge.passes import all_passes, run_passes
from bridge.passes.cse import pure
from bridge.passes.dce import dce
from bridge.passes.fold import fold
from bridge.passes.fold import foldable as can_fold
from bridge.passes.regions import graphs, has_effect
from tests.helpers import assert_same_outputs
from tests.region_models import CondLoop, Foldable, Nested, Scans, example, inputs

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def cond_loop():
    m = CondLoop().eval()
    return m, bridge.trace(m, example())


@pytest.fixture(scope="module")
def foldable():
    m = Foldable().eval()
    return m, bridge.trace(m, example())


def assert_parity(g: Graph, model, fn=None) -> None:
    """``g`` (run and generated module) gives what ``fn`` (default: the model) does on inputs taking both branches
    with 0, 1 and 4 trips."""
    g.check()
    mod = g.to_module()
    for x, n in inputs():
        with torch.no_grad():
            ref = (fn or model)(x, n)
        assert_same_outputs(g.run(x, n), ref)
        assert_same_outputs(mod(x, n), ref)


def region(g: Graph, op: str, key: str) -> Graph:
    (node,) = g.find(op)
    return node.args[key]


def ops(g: Graph) -> list[str]:
    return [n.op for n in g.nodes]


@pytest.mark.parametrize("name", sorted(all_passes()))
def test_every_pass_runs_on_regions_with_parity(cond_loop, name):
    m, g = cond_loop
    out = run_passes(g, [name])
    assert len(out.find("cond")) == 1 and len(out.find("while_loop")) == 1
    assert_parity(out, m)


def test_decompose_works_inside_regions(cond_loop):
    m, g = cond_loop
    out = run_passes(g, ["decompose"])
    for key in ("true_fn", "false_fn"):
        assert "linear" not in ops(region(out, "cond", key)) and "matmul" in ops(region(out, "cond", key))
    assert "linear" not in ops(region(out, "while_loop", "body_fn"))
    assert_parity(out, m)


def test_dce_removes_dead_nodes_inside_regions(cond_loop):
    m, g = cond_loop
    g = g.copy()
    body = region(g, "while_loop", "body_fn")
    h = body.inputs[1]
    dead = body.add_node("sigmoid", {"input": body.add_node("exp", {"input": h}).output})
    assert dead.op in ops(body)
    out, changed = dce(g)
    assert changed and ops(body) == ["add", "linear", "tanh"]
    assert_parity(out, m)


def test_dce_drops_unread_outputs_carried_values_and_operands(foldable):
    m, g = foldable
    (c0, _), (loop,) = g.find("cond"), g.find("while_loop")
    assert len(c0.outputs) == 2 and len(c0.args["operands"]) == 7  # x, k, w and the weights of a and b
    assert len(loop.outputs) == 3 and len(loop.args["additional_inputs"]) == 5  # n, k, m and the weights of a
    out = run_passes(g, ["dce"])
    (c0, _), (loop,) = out.find("cond"), out.find("while_loop")
    # the second branch output goes from both branches, then w (only it read w) from the operands
    assert len(c0.outputs) == 1 and len(c0.args["operands"]) == 6
    for key in ("true_fn", "false_fn"):
        r = c0.args[key]
        assert len(r.outputs) == 1 and len(r.inputs) == 6 and "mean" not in ops(r)
    assert "mean" not in ops(out)
    # the dead carried value goes from the loop, its body and both regions' inputs, then m (only it read m)
    assert len(loop.outputs) == 2 and len(loop.args["carried_inputs"]) == 2
    assert len(loop.args["additional_inputs"]) == 4 and "max" not in ops(out) and "clone" not in ops(out)
    assert all(len(loop.args[k].inputs) == 6 for k in ("cond_fn", "body_fn"))
    assert ops(loop.args["body_fn"]).count("mul") == 1  # the tanh scaled by k's sum; dead * m went
    assert_parity(out, m)


def test_dce_keeps_a_carried_value_the_loop_reads(cond_loop):
    m, g = cond_loop
    g2 = g.copy()
    g2.set_outputs([g2.outputs[0]])  # only h is returned: i, which nothing reads after the loop, drives it
    out = run_passes(g2, ["dce"])
    (loop,) = out.find("while_loop")
    assert len(loop.outputs) == 2 and len(loop.args["carried_inputs"]) == 2
    assert_parity(out, m, lambda x, n: m(x, n)[0])


def test_dce_keeps_a_control_flow_node_with_an_effect_inside(cond_loop):
    m, g = cond_loop
    calls = []
    g2 = g.copy()
    g2.set_outputs([g2.inputs[0]])  # nothing reads the cond or the loop any more
    assert ops(run_passes(g2, ["dce"])) == []
    g3 = g.copy()
    true_fn = region(g3, "cond", "true_fn")
    true_fn.add_node("opaque", {"target": calls.append, "args": [true_fn.inputs[0]], "kwargs": {}})
    (c,) = g3.find("cond")
    assert has_effect(c) and not pure(c)
    assert bridge.summary(g3).totals["opaque_nodes"] == 1  # counted inside a region too
    g3.set_outputs([g3.inputs[0]])
    out = run_passes(g3, ["dce"])
    assert ops(out) == ["sum", "gt", "cond"]  # the effect stays; the loop, which has none, goes
    x = torch.ones(3, 4)
    out.run(x, torch.tensor(1))
    out.run(-x, torch.tensor(1))
    assert len(calls) == 1 and calls[0] is x


def test_cse_merges_inside_a_region_and_never_merges_control_flow(foldable):
    m, g = foldable
    true_fn = g.find("cond")[0].args["true_fn"]
    assert ops(true_fn).count("linear") == 2 and ops(true_fn).count("relu") == 2
    out = run_passes(g, ["cse"])
    true_fn = out.find("cond")[0].args["true_fn"]
    assert ops(true_fn).count("linear") == 1 and ops(true_fn).count("relu") == 1
    assert_parity(out, m)
    # two conds of the same pred and operands with equal regions stay two nodes
    g2 = g.copy()
    c0 = g2.find("cond")[0]
    twin = g2.add_node("cond", {**c0.args, "true_fn": c0.args["true_fn"].copy(),
                                "false_fn": c0.args["false_fn"].copy()},
                       outputs=[(v.name, v.spec) for v in c0.outputs], out_struct=c0.out_struct, after=c0)
    g2.set_outputs(list(g2.outputs) + [twin.outputs[0]], ("tuple", [("leaf", i) for i in range(3)]))
    assert len(run_passes(g2, ["cse"]).find("cond")) == 3


def test_fold_copies_constant_operands_in_and_inlines_a_constant_cond(foldable):
    m, g = foldable
    out = run_passes(g, ["fold"])
    conds = out.find("cond")
    assert len(conds) == 1  # the cond on a constant pred is its true branch, spliced in
    (c,) = conds
    assert "ones" not in ops(out)
    # k (a constant) is no operand any more: each branch has it as a constant of its own, folded further there
    assert all(not (v.is_const and v.kind == "constant") for v in c.args["operands"])
    assert [v.kind for v in c.args["operands"] if v.is_const] == ["param"] * 4  # weights stay operands
    true_fn = c.args["true_fn"]
    assert not any(can_fold(n) for n in true_fn.nodes) and ops(true_fn).count("mul") == 1  # k * 2 folded; w * 2
    assert any(v.kind == "constant" for v in true_fn.constants)
    added = out.node("cond_1_1")
    assert added.op == "add" and added.args["input"] is c.outputs[0]  # the taken branch, under the cond's name
    (loop,) = out.find("while_loop")
    assert not any(isinstance(v, torch.Tensor) or getattr(v, "kind", None) == "constant"
                   for v in loop.args["additional_inputs"])
    assert_parity(out, m)


def test_fold_takes_the_false_branch_and_keeps_an_output_distinct(foldable):
    m, g = foldable
    g = g.copy()
    c = g.find("cond")[1]  # cond(ones().sum() > 0, t + 1, t - 1): a false pred, x in, its false branch t itself
    g.set_args(c, {**c.args, "pred": g.add_constant("no", torch.tensor(False)), "operands": [g.inputs[0]]})
    false_fn = c.args["false_fn"]
    (sub,) = false_fn.nodes
    false_fn.replace_all_uses(sub.outputs[0], false_fn.inputs[0])
    false_fn.erase_node(sub)
    g.set_outputs([c.outputs[0]], ("leaf", 0))  # the cond is the output, the branch taken returns the input
    out = run_passes(g, ["fold", "dce"])
    assert ops(out) == ["identity"] and out.outputs[0] is not out.inputs[0]  # an output stays a distinct value
    assert out.outputs[0].name == c.outputs[0].name
    assert_parity(out, m, lambda x, n: x)


class Split(torch.nn.Module):
    """x @ w.T outside a cond and + b inside it (``inside=True``), or both outside: fuse_linear's pattern."""

    def __init__(self, inside: bool):
        super().__init__()
        torch.manual_seed(4)
        self.w = torch.nn.Parameter(torch.randn(4, 4))
        self.b = torch.nn.Parameter(torch.randn(4))
        self.inside = inside

    def forward(self, x, n):
        y = torch.matmul(x.unsqueeze(0), self.w.permute(1, 0))
        if not self.inside:
            y = y + self.b
        return torch.cond(x.sum() > 0, lambda t: t + self.b, lambda t: t - self.b, (y,))


def test_passes_never_match_across_a_region_boundary():
    m = Split(inside=False).eval()  # all outside: the pattern fuses
    out = run_passes(bridge.trace(m, example()), ["fuse_linear", "dce"])
    (lin,) = out.find("linear")
    assert lin.args["bias"] is not None and "add" not in ops(out)
    assert_parity(out, m)
    m = Split(inside=True).eval()  # the add inside the cond: the bias is not fused across its boundary
    out = run_passes(bridge.trace(m, example()), ["fuse_linear", "fuse_gelu", "cancel_reorders", "cse", "dce"])
    (lin,) = out.find("linear")
    assert lin.args["bias"] is None and "matmul" not in ops(out)
    (c,) = out.find("cond")
    assert ops(c.args["true_fn"]) == ["add"] and ops(c.args["false_fn"]) == ["sub"]
    assert_parity(out, m)


def test_rewrite_and_replace_op_apply_inside_regions(cond_loop):
    m, g = cond_loop

    def want(x, n):
        y = F.gelu(m.a(x)) if x.sum() > 0 else m.b(x) * 2
        i = 0
        while i < n:
            y, i = m.a(y).tanh(), i + 1
        return y, torch.tensor(i)

    g1 = g.copy()
    report = bridge.rewrite(g1, lambda x: torch.relu(x), lambda x: F.gelu(x))
    assert len(report) == 1 and report.matches[0].region == "%cond.true_fn" and "(region %cond.true_fn)" in str(report)
    assert "gelu" in ops(region(g1, "cond", "true_fn"))
    assert_parity(g1, m, want)
    g2 = g.copy()
    _, changed = bridge.replace_op(g2, "relu", "gelu")
    assert changed and "gelu" in ops(region(g2, "cond", "true_fn"))
    assert_parity(g2, m, want)


def test_graphs_lists_every_region_with_where_it_is(cond_loop):
    _, g = cond_loop
    assert [w for _, w in graphs(g)] == ["", "%cond.true_fn", "%cond.false_fn", "%while_loop_0.cond_fn",
                                         "%while_loop_0.body_fn"]


def test_fold_is_sound_on_every_pass_set(foldable):
    m, g = foldable
    out = run_passes(g, ["remove_dropout", "remove_identity", "freeze_metadata", "fuse_bn", "fold", "cse", "dce"])
    assert len(out.find("cond")) == 1 and len(out.find("while_loop")) == 1
    assert_parity(out, m)
    out2, changed = fold(out)
    assert not changed  # a fixpoint


def test_fold_reaches_nested_regions_and_scan_map_regions():
    m = Nested().eval()
    out = run_passes(bridge.trace(m, example()), ["fold", "dce", "cse"])
    (loop,) = out.find("while_loop")
    (c,) = loop.args["body_fn"].find("cond")  # k went into the body, then into both branches of the cond in it
    assert len(loop.args["additional_inputs"]) == 3 and len(c.args["operands"]) == 3
    assert all(any(v.kind == "constant" for v in c.args[k].constants) for k in ("true_fn", "false_fn"))
    assert_parity(out, m)
    m = Scans().eval()
    xs, h0 = torch.randn(5, 3, 4), torch.randn(3, 4)
    g = bridge.trace(m, (xs, h0))
    out = run_passes(g, ["fold", "dce", "cse"])
    (s,), (mp,) = out.find("scan"), out.find("map")
    assert len(s.args["additional_inputs"]) == 2 and len(mp.args["args"]) == 3  # k left both: a constant inside
    assert len(s.args["combine_fn"].inputs) == 4 and len(mp.args["body_fn"].inputs) == 4
    out.check()
    for _ in range(2):
        xs, h0 = torch.randn(5, 3, 4), torch.randn(3, 4)
        assert_same_outputs(out.run(xs, h0), m(xs, h0))
        assert_same_outputs(out.to_module()(xs, h0), m(xs, h0))
