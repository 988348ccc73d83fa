"""ONNX export of control flow: ``cond`` as If, ``while_loop`` as Loop, ``scan`` and ``map`` as Scan (regions as
subgraphs that read outer tensors by name). Each model is exported, checked (full checker, strict shape inference)
and run in onnxruntime against eager PyTorch on fresh inputs that take every branch, several trip counts (0, 1, 5)
and several sequence lengths."""
import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from onnx.reference import ReferenceEvaluator
from torch._higher_order_ops import while_loop
from torch._higher_order_ops.map import map as map_
from torch._higher_order_ops.scan import scan

import bridge
from bridge.backends.onnx import MIN_OPSET, max_opset
from bridge.backends.ort import session
from bridge.errors import BridgeError, UnsupportedOpError
from tests.frontends.test_control_flow import Scans

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # dynamo's notes while torch.export traces


def _ops(graph: onnx.GraphProto) -> list[str]:
    """Op types of ``graph`` and of its subgraphs, depth first."""
    out = []
    for n in graph.node:
        out.append(n.op_type)
        for a in n.attribute:
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                out += _ops(sub)
    return out


def _same(got, ref, where):
    ref = ref if isinstance(ref, (tuple, list)) else (ref,)
    assert len(got) == len(ref), where
    for i, (a, r) in enumerate(zip(got, ref)):
        r = r.detach()
        assert tuple(a.shape) == tuple(r.shape), f"{where}, output {i}: shape {a.shape} != {tuple(r.shape)}"
        np.testing.assert_allclose(a, r.numpy(), rtol=1e-5, atol=1e-5, err_msg=f"{where}, output {i}")


def _check_ort(proto, model, runs):
    """onnxruntime against eager on each input tuple of ``runs``."""
    sess = session(proto)
    names = [i.name for i in sess.get_inputs()]
    with torch.no_grad():
        for xs in runs:
            _same(sess.run(None, {nm: x.numpy() for nm, x in zip(names, xs)}), model(*xs),
                  f"onnxruntime on {[tuple(x.shape) for x in xs]}")


# ---- cond -> If ---------------------------------------------------------------------------------------------------
class TwoBranches(nn.Module):
    """Parameters used in the branches; two outputs of different shapes."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x, y):
        def t(x, y):
            return self.a(x).relu(), (y * 2).sum(0)

        def f(x, y):
            return self.b(x) - y, y.mean(0)

        return torch.cond(x.mean() > 0, t, f, (x, y))


@pytest.mark.parametrize("opset", sorted({MIN_OPSET, max_opset()}))
def test_cond_branches_with_parameters(opset):
    torch.manual_seed(0)
    m = TwoBranches().eval()
    x, y = torch.randn(3, 4), torch.randn(3, 4)
    proto = bridge.to_onnx(m, args=(x, y), opset=opset)
    assert "If" in _ops(proto.graph) and "Gemm" in _ops(proto.graph)
    assert {"a.weight", "b.weight"} <= {i.name for i in proto.graph.initializer}  # read by the branches
    _check_ort(proto, m, [(x.abs(), y), (-x.abs(), y), (torch.randn(3, 4) + 1, torch.randn(3, 4))])


class Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        def outer_t(t):
            return torch.cond(t[0, 0] > 0, lambda u: self.lin(u).sin(), lambda u: u.cos() * 3, (t,)) + 1

        return torch.cond(x.sum() > 0, outer_t, lambda t: self.lin(t) * -2, (x,))


def test_nested_cond_takes_every_branch():
    torch.manual_seed(0)
    m = Nested().eval()
    x = torch.randn(2, 4)
    proto = bridge.to_onnx(m, args=(x,))
    assert _ops(proto.graph).count("If") == 2
    big = torch.full((2, 4), 2.0)
    first_negative = big.clone()
    first_negative[0, 0] = -1.0
    _check_ort(proto, m, [(big,), (first_negative,), (-big,)])


class Passthrough(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 3)

    def forward(self, x, y):
        m = x * 2  # a model output that the branches also read from the outer scope
        out = torch.cond(x.sum() > 0, lambda t, u: (self.a(t), u.clone()), lambda t, u: (t - 1, u * 3), (m, y))
        return out[0], out[1], m


def test_branch_returning_an_operand_unchanged():
    """torch.cond refuses a branch that returns its input, so the region is edited to do so: its output is then a
    value from outside the subgraph, which the If branch gets through an Identity."""
    torch.manual_seed(0)
    m = Passthrough().eval()
    x, y = torch.randn(2, 3), torch.randn(3)
    g = bridge.trace(m, (x, y))
    true_fn = g.find("cond")[0].args["true_fn"]
    clone = true_fn.find("clone")[0]
    true_fn.replace_all_uses(clone.output, true_fn.inputs[1])  # returns the operand y itself
    true_fn.erase_node(clone)
    g.check()
    proto = bridge.to_onnx(g)
    then = next(a.g for n in proto.graph.node if n.op_type == "If" for a in n.attribute if a.name == "then_branch")
    assert [n.op_type for n in then.node] == ["Gemm", "Identity"] and then.node[1].input[0] == "y"
    # the branches read m under its output name (output_2), renamed in the subgraphs too
    assert "output_2" in {i for n in then.node for i in n.input}
    _check_ort(proto, m, [(x.abs(), y), (-x.abs(), y)])


def test_symbolic_batch_through_cond(tmp_path):
    torch.manual_seed(0)
    m = TwoBranches().eval()
    x, y = torch.randn(3, 4), torch.randn(3, 4)
    path = tmp_path / "cond.onnx"
    proto = bridge.to_onnx(m, path, args=(x, y), dynamic={"x": {0: "batch"}, "y": {0: "batch"}})
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    runs = [(s * torch.randn(b, 4).abs(), torch.randn(b, 4)) for b in (1, 5, 9) for s in (1, -1)]
    _check_ort(str(path), m, runs)
    assert bridge.verify(m, path, (x, y)).ok


# ---- while_loop -> Loop -------------------------------------------------------------------------------------------
class Counted(nn.Module):
    """A carried counter and tensor; the trip count is an input."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x, n):
        def cf(i, h):
            return i < n

        def bf(i, h):
            return i + 1, self.lin(h).tanh() + h

        return while_loop(cf, bf, (torch.zeros((), dtype=torch.int64), x))


def test_loop_trip_count_from_an_input(tmp_path):
    torch.manual_seed(0)
    m = Counted().eval()
    x = torch.randn(2, 4)
    path = tmp_path / "loop.onnx"
    proto = bridge.to_onnx(m, path, args=(x, torch.tensor(3)))
    loop = next(n for n in proto.graph.node if n.op_type == "Loop")
    assert loop.input[0] == ""  # no trip count: the condition decides
    runs = [(torch.randn(2, 4), torch.tensor(n)) for n in (0, 1, 5)]
    _check_ort(proto, m, runs)
    with torch.no_grad():  # the counter comes back as the trip count
        assert [int(m(*r)[0]) for r in runs] == [0, 1, 5]
    for n in (0, 5):
        assert bridge.verify(m, path, (x, torch.tensor(n))).ok


class Doubling(nn.Module):
    """The condition reads the carried tensor: the trip count depends on the data."""

    def forward(self, x, limit):
        return while_loop(lambda h, k: h.sum() < limit, lambda h, k: (h * 2, k + 1),
                          (x, torch.zeros((), dtype=torch.int64)))


def test_loop_data_dependent_trip_count():
    m = Doubling()
    x = torch.ones(3)
    proto = bridge.to_onnx(m, args=(x, torch.tensor(10.0)))
    runs = [(x, torch.tensor(lim)) for lim in (1.0, 5.0, 90.0)]  # 0, 1 and 5 iterations
    with torch.no_grad():
        assert [int(m(*r)[1]) for r in runs] == [0, 1, 5]
    _check_ort(proto, m, runs)


class CarriedUnchanged(nn.Module):
    def forward(self, x, n):
        return while_loop(lambda i, h, k: i < n, lambda i, h, k: (i + 1, h + k, k.clone()),
                          (torch.zeros((), dtype=torch.int64), x, x * 2))


def test_loop_body_returning_a_carried_value_unchanged():
    x = torch.randn(3)
    m = CarriedUnchanged()
    g = bridge.trace(m, (x, torch.tensor(2)))
    body = g.find("while_loop")[0].args["body_fn"]
    clone = body.find("clone")[0]
    body.replace_all_uses(clone.output, body.inputs[2])  # k goes round unchanged
    body.erase_node(clone)
    proto = bridge.to_onnx(g)
    body_proto = next(n for n in proto.graph.node if n.op_type == "Loop").attribute[0].g
    assert body_proto.output[3].name != body_proto.input[4].name  # an Identity: the body makes its outputs
    _check_ort(proto, m, [(torch.randn(3), torch.tensor(n)) for n in (0, 1, 5)])


class CondInLoop(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x, n):
        def cf(i, h):
            return i < n

        def bf(i, h):
            return i + 1, torch.cond(h.sum() > 0, lambda t: self.a(t) - 1, lambda t: self.b(t).abs() + 1, (h,))

        return while_loop(cf, bf, (torch.zeros((), dtype=torch.int64), x))


def test_cond_inside_a_loop_body_with_symbolic_batch():
    torch.manual_seed(0)
    m = CondInLoop().eval()
    proto = bridge.to_onnx(m, args=(torch.randn(3, 4), torch.tensor(2)), dynamic={"x": {0: "batch"}})
    assert _ops(proto.graph).count("Loop") == 1 and _ops(proto.graph).count("If") == 1
    runs = [(s * torch.randn(b, 4).abs(), torch.tensor(n)) for b in (1, 6) for n in (0, 1, 5) for s in (1, -1)]
    _check_ort(proto, m, runs)


def test_reference_evaluator_agrees():
    """onnx's own ReferenceEvaluator runs the nested subgraphs (outer-scope reads included) as onnxruntime does."""
    torch.manual_seed(0)
    m = CondInLoop().eval()
    proto = bridge.to_onnx(m, args=(torch.randn(2, 4), torch.tensor(2)))
    ref = ReferenceEvaluator(proto)
    with torch.no_grad():
        for x, n in [(torch.randn(2, 4), torch.tensor(k)) for k in (0, 1, 5)] + [(-torch.ones(2, 4), torch.tensor(3))]:
            _same(ref.run(None, {"x": x.numpy(), "n": n.numpy()}), m(x, n), f"ReferenceEvaluator, n={int(n)}")


# ---- scan and map -> Scan -----------------------------------------------------------------------------------------
def test_scan_and_map_with_a_symbolic_length(tmp_path):
    """An RNN cell by scan and a per-step layer by map, over a sequence length T known only at run time."""
    torch.manual_seed(0)
    m = Scans().eval()
    path = tmp_path / "scans.onnx"
    proto = bridge.to_onnx(m, path, args=(torch.randn(5, 2, 4), torch.randn(2, 4)), dynamic={"xs": {0: "T"}})
    assert _ops(proto.graph) == ["Scan", "Gemm", "Add", "Tanh", "Mul", "Scan", "Gemm", "Sub"]
    scans = [n for n in proto.graph.node if n.op_type == "Scan"]
    assert [len(n.input) for n in scans] == [2, 1]  # (h0, xs) and (xs): the weights and h0 come from outer scope
    assert [d.dim_param or d.dim_value for d in proto.graph.output[1].type.tensor_type.shape.dim] == ["T", 2, 4]
    _check_ort(proto, m, [(torch.randn(t, 2, 4), torch.randn(2, 4)) for t in (1, 2, 9)])
    ref = ReferenceEvaluator(proto)
    with torch.no_grad():
        for t in (1, 3):
            xs, h0 = torch.randn(t, 2, 4), torch.randn(2, 4)
            _same(ref.run(None, {"xs": xs.numpy(), "h0": h0.numpy()}), m(xs, h0), f"ReferenceEvaluator, T={t}")
    assert bridge.verify(m, path, (torch.randn(7, 2, 4), torch.randn(2, 4))).ok


class TwoByTwo(nn.Module):
    """A scan with two carries (of different shapes) and two sequences (of different shapes and dtypes: a bool
    mask), a parameter read in the body, and two stacked outputs; then a map over two sequences with two outputs.
    (An int64 carry trips torch's autograd check of scan while exporting with parameters.)"""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, xs, ms, h0, c0):
        def step(carry, x):
            (h, c), (xt, mt) = carry, x
            h2 = torch.where(mt, torch.tanh(self.lin(xt) + h), h)  # a masked step keeps h
            c2 = c + mt.squeeze(-1).float()  # counts the unmasked steps
            return (h2, c2), (h2 - h, c2 * 2)

        (h, c), (dh, cs) = scan(step, (h0, c0), (xs, ms))
        sq, mx = map_(lambda x, w: ((x[0] * x[1]) @ w, x[0].amax(-1)), (xs, ms.float()), self.lin.weight)
        return h, c, dh, cs, sq, mx


def _two_by_two_inputs(t, b=2):
    return torch.randn(t, b, 3), torch.rand(t, b, 1) > 0.4, torch.randn(b, 3), torch.randint(0, 5, (b,)).float()


@pytest.mark.parametrize("opset", sorted({MIN_OPSET, max_opset()}))
def test_scan_with_two_carries_and_two_sequences(opset):
    torch.manual_seed(0)
    m = TwoByTwo().eval()
    proto = bridge.to_onnx(m, args=_two_by_two_inputs(4), dynamic={"xs": {0: "T"}, "ms": {0: "T"}}, opset=opset)
    scans = [n for n in proto.graph.node if n.op_type == "Scan"]
    assert [next(a.i for a in n.attribute if a.name == "num_scan_inputs") for n in scans] == [2, 2]
    assert [len(n.input) for n in scans] == [4, 2] and [len(n.output) for n in scans] == [4, 2]
    runs = [_two_by_two_inputs(t) for t in (1, 2, 9)]
    with torch.no_grad():  # the mask really masks: some steps are counted, not all
        assert len({int(m(*r)[1].sum() - r[3].sum()) for r in runs}) > 1
    _check_ort(proto, m, runs)


class CondInScan(nn.Module):
    """A cond inside a scan body: each step takes its own branch."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, xs, h0):
        def step(h, xt):
            h2 = torch.cond(xt.sum() > 0, lambda u, v: self.a(u) + v, lambda u, v: self.b(v).relu() - u, (xt, h))
            return h2, h2.sum(-1)

        return scan(step, h0, xs)


def test_cond_inside_a_scan_body():
    torch.manual_seed(0)
    m = CondInScan().eval()
    # (frontend="export": bridge.trace's fx frontend takes this forward, which returns scan's result as it is, for
    # one that returns h0 and [] -- a frontend bug, reported)
    g = bridge.trace(m, (torch.randn(3, 2, 4), torch.randn(2, 4)), dynamic={"xs": {0: "T"}}, frontend="export")
    proto = bridge.to_onnx(g)
    assert _ops(proto.graph).count("Scan") == 1 and _ops(proto.graph).count("If") == 1
    signs = torch.tensor([1.0, -1.0, -1.0, 1.0, 1.0, -1.0]).view(6, 1, 1)
    runs = [(torch.randn(6, 2, 4).abs() * signs, torch.randn(2, 4)), (torch.randn(1, 2, 4), torch.randn(2, 4))]
    _check_ort(proto, m, runs)


def test_scan_body_returning_its_step_input_unchanged():
    """A region output that is a region input (torch's scan refuses the alias, so the graph is edited): the Scan
    body makes its outputs itself, through an Identity."""
    torch.manual_seed(0)
    m = Scans().eval()
    g = bridge.trace(m, (torch.randn(3, 2, 4), torch.randn(2, 4)))
    body = g.find("scan")[0].args["combine_fn"]
    body.set_outputs([body.outputs[0], body.inputs[1]], body.output_struct)  # ys: the sequence itself
    g.check()
    proto = bridge.to_onnx(g)
    sub = next(n for n in proto.graph.node if n.op_type == "Scan").attribute[0].g
    assert sub.node[-1].op_type == "Identity" and sub.node[-1].input[0] == sub.input[1].name
    xs, h0 = torch.randn(3, 2, 4), torch.randn(2, 4)
    got = session(proto).run(None, {"xs": xs.numpy(), "h0": h0.numpy()})
    with torch.no_grad():
        last, _, zs = m(xs, h0)  # the outputs the edit leaves as they were
    _same(got, (last, xs, zs), "onnxruntime")


def test_a_scan_with_no_sequence_or_a_constant_step_output_is_refused():
    m = Scans().eval()
    g = bridge.trace(m, (torch.randn(3, 2, 4), torch.randn(2, 4)))
    body = g.find("scan")[0].args["combine_fn"]
    body.set_outputs([body.outputs[0], 1.5], body.output_struct)
    g.find("map")[0].args["xs"] = []
    with pytest.raises(UnsupportedOpError) as e:
        bridge.to_onnx(g)
    msg = str(e.value)
    assert "2 node(s)" in msg and "%map_impl (<root>)" in msg and "%scan_0 (<root>)" in msg, msg
    assert "map: it has no sequence to step through (xs is empty)" in msg, msg
    assert "scan: its region returns a python constant; each step's outputs must be tensors" in msg, msg


# ---- errors -------------------------------------------------------------------------------------------------------
class Unsupported(nn.Module):
    def forward(self, x, n):
        def bf(i, h):
            inner = torch.cond(h.sum() > 0, lambda t: torch.logcumsumexp(t, 0), lambda t: t * 2, (h,))
            return i + 1, inner

        h = while_loop(lambda i, h: i < n, bf, (torch.zeros((), dtype=torch.int64), x))[1]
        return torch.logcumsumexp(h, 1)


def test_unsupported_ops_inside_regions_are_listed_with_where_they_are(tmp_path):
    path = tmp_path / "bad.onnx"
    with pytest.raises(UnsupportedOpError) as e:
        bridge.to_onnx(Unsupported(), path, args=(torch.randn(2, 3), torch.tensor(2)))
    msg = str(e.value)
    assert "2 node(s) have no lowering" in msg, msg
    lines = [ln for ln in msg.splitlines() if "logcumsumexp" in ln]
    assert "in true_fn of %cond, in body_fn of %while_loop" in lines[0], msg  # the inner one, in execution order
    assert " in " not in lines[1].split(" at ")[0], msg  # the top-level one
    assert [n.op for n in e.value.nodes] == ["opaque", "opaque"]
    assert not path.exists()


def test_a_failing_lowering_inside_a_region_names_its_node(monkeypatch):
    import bridge.ops

    def broken(ctx, node):
        raise ValueError("boom")

    monkeypatch.setattr(bridge.ops.get("tanh"), "onnx", broken)
    with pytest.raises(BridgeError, match=r"^while exporting %tanh .*ValueError: boom$"):
        bridge.to_onnx(Counted().eval(), args=(torch.randn(2, 4), torch.tensor(1)))


def test_report_sees_unsupported_ops_inside_regions():
    from bridge.analysis.report import conversions

    conv = conversions(bridge.trace(Unsupported(), (torch.randn(2, 3), torch.tensor(2))))
    assert conv["onnx"].startswith("2 node(s) without an ONNX lowering: "), conv
    assert conv["onnx"].count("opaque") == 2 and ", in %cond)" in conv["onnx"], conv  # the inner one says where
    assert conv["module"] == "yes (2 opaque node(s) run eagerly)", conv


def test_a_mismatch_inside_a_region_is_reported_at_its_node(tmp_path, monkeypatch):
    """verify names the region node whose outputs differ: the values inside a subgraph cannot be graph outputs."""
    import bridge.ops

    monkeypatch.setattr(bridge.ops.get("tanh"), "onnx", lambda ctx, node: ctx.op("Sigmoid", [ctx.input("input")]))
    torch.manual_seed(0)
    m = Scans().eval()
    args = (torch.randn(3, 2, 4), torch.randn(2, 4))
    path = tmp_path / "wrong.onnx"
    bridge.to_onnx(m, path, args=args)  # tanh only in the scan's body: exported wrong there
    rep = bridge.verify(m, path, args)
    assert not rep.ok
    assert rep.first_divergence["op"] == "scan" and rep.first_divergence["node"] == "%scan_0", rep.first_divergence
