"""Analysis over regions (issue 16): a cond costs its dearer branch, a while_loop one iteration (marked so in the
summary), weights read inside regions count once; topology names the control flow; liveness counts a region node's
outputs; diff compares region contents; to_sequential never splits a region node and keeps parity."""
import pytest
import torch
import torch.nn as nn
from torch._higher_order_ops import while_loop
from torch.utils.flop_counter import FlopCounterMode

import bridge
from bridge.analysis.costs import node_costs, value_bytes
from bridge.analysis.memory import liveness
from bridge.passes import run_passes
from tests.helpers import assert_same_outputs
from tests.region_models import Branches, CondLoop, Foldable, example, inputs

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def cond_loop():
    m = CondLoop().eval()
    return m, bridge.trace(m, example())


def torch_macs(fn, *args) -> int:
    """Multiply-accumulates of ``fn(*args)`` run eagerly, as torch's FlopCounterMode counts them (2 per MAC)."""
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        fn(*args)
    return fc.get_total_flops() // 2


def standalone_flops(fn, *args) -> int:
    """FLOPs of ``fn`` traced on its own (no regions): what a branch costs outside a cond."""
    class F(nn.Module):
        def forward(self, *xs):
            return fn(*xs)
    return bridge.summary(bridge.trace(F(), args)).totals["flops"]


@pytest.mark.parametrize("batch", [3, 8])
def test_cond_costs_its_dearer_branch_and_a_loop_one_iteration(batch):
    m = Branches().eval()
    g = bridge.trace(m, example(), dynamic={"x": {0: "batch"}})  # traced at batch 3; symbolic inside the regions
    costs = node_costs(g, {"batch": batch})
    (c,), (loop,) = g.find("cond"), g.find("while_loop")
    x = torch.randn(batch, 4)
    heavy, light = torch_macs(m.heavy, x), torch_macs(m.light, x)
    assert heavy == batch * (4 * 16 + 16 * 4) and light == batch * 4 * 4
    assert costs[c].macs == max(heavy, light) and not costs[c].per_iteration
    assert costs[c].flops == max(standalone_flops(m.heavy, x), standalone_flops(m.light, x))
    assert costs[loop].macs == torch_macs(m.body, x) and costs[loop].per_iteration
    # cond_fn (i < n: one comparison) and body_fn (i + 1 and the tanh layer) once each
    assert costs[loop].flops == 1 + 1 + standalone_flops(m.body, x)


def test_summary_marks_loops_per_iteration_and_counts_region_weights_once(cond_loop):
    m, g = cond_loop
    s = bridge.summary(g)
    n_params = sum(p.numel() for p in m.parameters())
    assert s.totals["params"] == n_params == 40  # a is read in the true branch and in the loop: counted once
    assert s.totals["per_iteration"] == ["%while_loop_0"]
    text = str(s)
    assert "%while_loop_0 (while_loop, per iteration)" in text and "%cond (cond)" in text
    assert "Loops counted for one iteration (the trip count is known only at run time): %while_loop_0" in text
    rows = {r.name: r for r in s.rows}
    assert rows["cond"].params == 40 and rows["while_loop_0"].params == 0
    assert "%while_loop_0 (while_loop, per iteration)" in str(bridge.summary(g, by="node"))
    assert s.to_dict()["totals"]["per_iteration"] == ["%while_loop_0"]
    # a weight a region holds as a constant of its own (as an ONNX import may give) counts at the node, once
    g2 = g.copy()
    body = g2.find("while_loop")[0].args["body_fn"]
    (lin,) = body.find("linear")
    extra = body.add_constant("extra", torch.randn(4, 4), kind="param")
    body.set_args(lin, {**lin.args, "weight": extra})
    s2 = bridge.summary(g2)
    assert s2.totals["params"] == 40 + 16 and {r.name: r for r in s2.rows}["while_loop_0"].params == 16


def test_summary_of_a_module_with_a_cond_inside():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = Branches()

        def forward(self, x, n):
            return self.inner(x, n) + 1

    m = Block().eval()
    s = bridge.summary(m, example())
    (row,) = [r for r in s.rows if r.name == "inner"]
    assert row.type == "Branches" and {n.op for n in row.nodes} >= {"cond", "while_loop"}
    assert s.totals["params"] == sum(p.numel() for p in m.parameters())
    assert "Loops counted for one iteration (the trip count is known only at run time): %while_loop_0 (inner)" \
        in str(s)


def test_topology_says_the_graph_has_control_flow(cond_loop):
    _, g = cond_loop
    t = bridge.topology(g)
    assert [n.op for n in t.control_flow] == ["cond", "while_loop"]
    assert t.kind == "DAG" and "control flow (2 node(s))" in str(t)
    assert "control %cond: cond (true_fn, false_fn)" in str(t)
    assert "control %while_loop_0: while_loop (cond_fn, body_fn)" in str(t)
    assert [d["op"] for d in t.to_dict()["control_flow"]] == ["cond", "while_loop"]
    # each region node is one node of the outer graph: sum, gt, cond, while_loop on the longest path
    assert t.depth == 4
    assert bridge.topology(bridge.trace(nn.Linear(4, 4), torch.randn(2, 4))).control_flow == []


def test_liveness_counts_a_region_nodes_outputs(cond_loop):
    _, g = cond_loop
    live = liveness(g)
    (c,), (loop,) = g.find("cond"), g.find("while_loop")
    (zeros,) = g.find("zeros")
    # at the loop: the inputs, its carried values (zeros, the cond's output) and its own two outputs
    want = live.input_bytes + value_bytes(zeros.output) + value_bytes(c.outputs[0]) + \
        sum(value_bytes(v) for v in loop.outputs)
    assert live.live_bytes[loop] == want == live.peak_bytes and live.peak_node is loop


class Act(nn.Module):
    def __init__(self, act: nn.Module):
        super().__init__()
        torch.manual_seed(5)
        self.a = nn.Linear(4, 4)
        self.act = act

    def forward(self, x):
        return torch.cond(x.sum() > 0, lambda t: self.act(self.a(t)), lambda t: t * 2, (x,))


def test_diff_compares_region_contents():
    x = torch.rand(3, 4)
    ga, gb = bridge.trace(Act(nn.ReLU()).eval(), (x,)), bridge.trace(Act(nn.GELU()).eval(), (x,))
    d = bridge.diff(ga, gb)
    (ch,) = d.changed
    assert ch.a.op == "cond" and ch.changes == {"region true_fn": (["%relu relu"], ["%gelu gelu"])}
    assert "region true_fn: [%relu relu] -> [%gelu gelu]" in str(d)
    assert bridge.diff(ga, gb, (-x,)).numerically_equal  # the false branch: the same numbers
    assert bridge.diff(ga, gb, (x,)).numerically_equal is False
    assert not bridge.diff(ga, ga.copy())  # a copy: nothing differs, regions included


def test_diff_names_a_region_whose_inputs_changed():
    m = Foldable().eval()
    g = bridge.trace(m, example())
    d = bridge.diff(g, run_passes(g, ["dce"]))
    cond = [c for c in d.changed if c.a.op == "cond"][0]
    a_side, b_side = cond.changes["region true_fn"]
    # dce dropped w (read only for the second output, which nothing read) from the operands and the output
    assert a_side[:2] == ["inputs (f32[3, 4], f32[4], f32[4], f32[4], f32[4, 4], f32[4], f32[4, 4])",
                          "outputs (f32[3, 4], f32[4])"]
    assert b_side[:2] == ["inputs (f32[3, 4], f32[4], f32[4], f32[4, 4], f32[4], f32[4, 4])", "outputs (f32[3, 4])"]


def test_report_shows_region_nodes(cond_loop):
    _, g = cond_loop
    text = str(bridge.report(g))
    assert "%cond (cond)" in text and "%while_loop_0 (while_loop)" in text
    assert "Loops counted for one iteration (the trip count is known only at run time): %while_loop_0" in text
    assert "control %cond: cond (true_fn, false_fn)" in text


@pytest.mark.parametrize("stages", [None, 1, 2, 3, 5])
def test_to_sequential_keeps_region_nodes_whole_with_parity(cond_loop, stages):
    m, g = cond_loop
    seq = bridge.to_sequential(g, stages=stages)
    assert sum(s.nodes for s in seq.info) == len(g.nodes)  # each node, a region node too, in one stage whole
    if stages is not None:
        assert len(seq) == stages
    for x, n in inputs():
        assert_same_outputs(seq(x, n), m(x, n))


def test_to_sequential_of_a_chain_with_a_loop():
    class Chain(nn.Module):  # a fixed trip count: a chain once the loop's counter start is folded
        def __init__(self):
            super().__init__()
            torch.manual_seed(6)
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            _, h = while_loop(lambda i, h: i < 3, lambda i, h: (i + 1, self.a(h).tanh()),
                              (torch.zeros((), dtype=torch.int64), self.b(x)))
            return h.relu()

    m = Chain().eval()
    g = run_passes(bridge.trace(m, torch.randn(2, 4)), ["fold", "dce"])
    assert bridge.topology(g).is_chain
    x = torch.randn(2, 4)
    for stages in (None, 2, 3):
        assert_same_outputs(bridge.to_sequential(g, stages=stages)(x), m(x))
