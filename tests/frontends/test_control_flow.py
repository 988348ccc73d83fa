"""Control flow as IR regions (issue 16): torch.cond, while_loop, scan and map traced into region nodes, run by
``g.run``, the generated module and torch.compile with eager's numbers on inputs that take every branch and
several trip counts; data-dependent sizes stay symbolic."""
from __future__ import annotations

import io

import pytest
import torch
import torch.nn as nn
from torch._higher_order_ops.associative_scan import associative_scan
from torch._higher_order_ops.map import map as map_
from torch._higher_order_ops.scan import scan
from torch._higher_order_ops.while_loop import while_loop

import bridge
from bridge.ir.graph import Graph
from tests.helpers import assert_same_outputs


class Branches(nn.Module):
    """A cond whose branches use weights and return two tensors (torch.cond forbids returning an operand itself)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x):
        return torch.cond(x.sum() > 0, lambda t: (self.a(t).relu(), t.clone()), lambda t: (self.b(t) * 2, t + 1),
                          (x,))


class Loop(nn.Module):
    """A while loop whose trip count is an input's value; the body calls a layer and a nested cond."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x, n):
        def body(i, h):
            h = torch.cond(h.mean() > 0, lambda t: self.fc(t).tanh(), lambda t: t * 0.5 - 0.1, (h,))
            return i + 1, h

        i, h = while_loop(lambda i, h: i < n, body, (torch.zeros((), dtype=torch.int64), x))
        return h, i


class Scans(nn.Module):
    """An RNN cell over time with scan, and a per-step layer with map."""

    def __init__(self):
        super().__init__()
        self.cell = nn.Linear(4, 4)

    def forward(self, xs, h0):
        def step(h, xt):
            h = torch.tanh(self.cell(xt) + h)
            return h, h * 2

        last, ys = scan(step, h0, xs)
        zs = map_(lambda xt, h: self.cell(xt) - h, xs, h0)
        return last, ys, zs


class Prefix(nn.Module):
    """Inclusive scans with associative_scan (combine_fn must be associative: torch combines in a tree): a running
    product and sum of two sequences, and a running maximum along dim 1."""

    def forward(self, x, y):
        prod, total = associative_scan(lambda a, b: (a[0] * b[0], a[1] + b[1]), (x, y), dim=0)
        return prod, total, associative_scan(lambda a, b: torch.maximum(a, b), x, dim=1)


def _loop_inputs():
    torch.manual_seed(3)
    return [(torch.randn(2, 4), torch.tensor(n)) for n in (0, 1, 5)]


def _branch_inputs():
    return [(torch.ones(2, 4),), (-torch.ones(2, 4),), (torch.randn(2, 4) + 0.3,)]


CASES = [
    pytest.param(Branches, (torch.randn(2, 4),), _branch_inputs, id="cond"),
    pytest.param(Loop, (torch.randn(2, 4), torch.tensor(3)), _loop_inputs, id="while_loop"),
    pytest.param(Scans, (torch.randn(5, 2, 4), torch.randn(2, 4)),
                 lambda: [(torch.randn(5, 2, 4), torch.randn(2, 4)) for _ in range(2)], id="scan_map"),
    pytest.param(Prefix, (torch.randn(4, 3), torch.randn(4, 3)),
                 lambda: [(torch.randn(4, 3), torch.randn(4, 3)) for _ in range(2)], id="associative_scan"),
]


def _model(cls):
    torch.manual_seed(0)
    return cls().eval()


@pytest.mark.parametrize("shapes", ["fake", "real"])
@pytest.mark.parametrize("cls,example,fresh", CASES)
def test_regions_run_with_eager_numbers(cls, example, fresh, shapes):
    model = _model(cls)
    g = bridge.trace(model, example, shapes=shapes)
    g.check()
    assert any(n.regions for n in g.nodes), str(g)
    assert not g.opaque_nodes(), str(g)
    module = g.to_module()
    with torch.no_grad():
        for args in fresh():
            want = model(*args)
            assert_same_outputs(g.run(*args), want, path="g.run")
            assert_same_outputs(module(*args), want, path="to_module")


@pytest.mark.parametrize("cls,example,fresh", CASES)
def test_generated_module_compiles_to_one_graph(cls, example, fresh):
    """Under torch.compile the generated forward uses torch's higher-order ops: fullgraph=True holds."""
    import torch._dynamo

    model = _model(cls)
    torch._dynamo.reset()
    compiled = torch.compile(bridge.trace(model, example).to_module(), fullgraph=True, backend="eager")
    with torch.no_grad():
        for args in fresh():
            assert_same_outputs(compiled(*args), model(*args), path="compiled")


def test_every_branch_and_trip_count_really_differs():
    """The inputs above do take different branches and trip counts (else the parity tests prove little)."""
    model = _model(Loop)
    outs = [model(*args) for args in _loop_inputs()]
    assert [int(i) for _, i in outs] == [0, 1, 5]
    b = _model(Branches)
    (pos,), (neg,), _ = _branch_inputs()
    torch.testing.assert_close(b(pos)[1], pos)
    torch.testing.assert_close(b(neg)[1], neg + 1)


def test_regions_print_copy_walk_and_pickle(tmp_path):
    model = _model(Loop)
    g = bridge.trace(model, (torch.randn(2, 4), torch.tensor(2)))
    text = str(g)
    assert "while_loop(cond_fn, body_fn" in text and "    body_fn(" in text and "        true_fn(" in text
    nested = [(n.op, len(outer)) for n, outer in g.walk()]
    assert ("while_loop", 0) in nested and ("cond", 1) in nested and ("tanh", 2) in nested
    copy = g.copy().check()
    loop, = copy.find("while_loop")
    original, = g.find("while_loop")
    assert loop.args["body_fn"] is not original.args["body_fn"]  # a copy owns its regions
    assert str(copy) == text
    # a region that reads a value it does not own is caught
    bad = copy.find("while_loop")[0].args["body_fn"]
    stray = Graph()
    foreign = stray.add_input("foreign", bad.inputs[0].spec)
    bad.set_outputs([foreign] + list(bad.outputs[1:]), bad.output_struct)
    with pytest.raises(bridge.errors.GraphError, match="in region body_fn"):
        copy.check()
    buf = io.BytesIO()
    torch.save(g.to_module(), buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    for args in _loop_inputs():
        assert_same_outputs(loaded(*args), model(*args), path="pickled")


def test_symbolic_dims_pass_through_regions():
    model = _model(Scans)
    g = bridge.trace(model, (torch.randn(5, 2, 4), torch.randn(2, 4)), dynamic={"xs": {0: "T"}})
    assert "f32[T, 2, 4] = scan" in str(g).replace("%scan_0, %scan_1 : f32[2, 4], ", "")
    for steps in (2, 9):
        args = (torch.randn(steps, 2, 4), torch.randn(2, 4))
        assert_same_outputs(g.run(*args), model(*args), path=f"T={steps}")


def test_cond_costs_its_dearer_branch_and_scan_its_steps():
    """FLOPs: independent counts by torch's FlopCounterMode on each region's eager computation."""
    from torch.utils.flop_counter import FlopCounterMode

    from bridge.analysis.costs import node_costs

    def counted(fn, *args):
        with FlopCounterMode(display=False) as fc:
            fn(*args)
        return fc.get_total_flops()

    model = _model(Branches)
    g = bridge.trace(model, (torch.randn(2, 4),))
    cost = {n.op: c for n, c in node_costs(g).items()}
    x = torch.randn(2, 4)
    # FlopCounterMode counts matmuls only: linear's 2*M*N*K; the a-branch and b-branch cost the same there
    assert cost["cond"].macs * 2 == max(counted(model.a, x), counted(model.b, x)) == 2 * 2 * 4 * 4
    scans = _model(Scans)
    g = bridge.trace(scans, (torch.randn(5, 2, 4), torch.randn(2, 4)))
    cost = {n.op: c for n, c in node_costs(g).items()}
    step = counted(scans.cell, torch.randn(2, 4))  # (eager scan compiles itself: count one step's cell)
    assert cost["scan"].macs * 2 == 5 * step == cost["map"].macs * 2  # both run the cell once per step, 5 steps


def test_data_dependent_sizes_stay_symbolic():
    class Select(nn.Module):
        def forward(self, x):
            h = x[x > 0]
            return h * 2, h.sum() / h.numel(), torch.nonzero(x > 0.5)

    from bridge.backends.ort import session

    model = Select()
    for frontend in ("auto", "export"):
        g = bridge.trace(model, torch.randn(3, 4), frontend=frontend)
        assert "f32[u0]" in str(g)
        for _ in range(3):
            x = torch.randn(3, 4)
            assert_same_outputs(g.run(x), model(x), path=frontend)
    proto = bridge.to_onnx(model, args=(torch.randn(3, 4),))
    sess, back = session(proto), bridge.from_onnx(proto).to_module()
    sizes = set()
    for _ in range(4):
        x = torch.randn(3, 4)
        want = model(x)
        sizes.add(len(want[0]))
        assert_same_outputs(tuple(torch.from_numpy(a) for a in sess.run(None, {"x": x.numpy()})), want,
                            path="onnxruntime")
        assert_same_outputs(back(x), want, path="from_onnx")
    assert len(sizes) > 1  # the sizes did vary


def test_inspect_json_keeps_the_regions():
    import json

    from bridge.cli_support import graph_json

    g = bridge.trace(_model(Loop), (torch.randn(2, 4), torch.tensor(2)))
    doc = json.loads(json.dumps(graph_json(g)))
    loop = next(n for n in doc["nodes"] if n["op"] == "while_loop")
    body = loop["regions"]["body_fn"]
    assert [n["op"] for n in body["nodes"]] == [n.op for n in loop_node(g).args["body_fn"].nodes]
    inner = next(n for n in body["nodes"] if n["op"] == "cond")
    assert set(inner["regions"]) == {"true_fn", "false_fn"}
    assert len(body["inputs"]) == len(loop["inputs"])  # one per carried and additional input


def loop_node(g):
    node, = g.find("while_loop")
    return node


def test_fx_refuses_control_flow_operators_instead_of_mistracing():
    """fx would run scan on proxies and return its initial carry: a silently wrong graph. It records the call
    instead, fails on its function argument, and 'auto' goes on to torch.export."""
    class Plain(nn.Module):
        def forward(self, xs, h):
            return scan(lambda h, xt: (h + xt, h * 2), h, xs)

    model, args = Plain(), (torch.randn(3, 2), torch.randn(2))
    with pytest.raises(bridge.TraceError, match="fx: NotImplementedError: argument of type"):
        bridge.trace(model, args, frontend="fx")
    g = bridge.trace(model, args)
    assert g.meta["frontend"] == "export" and "fx" in g.meta["fallback_reasons"]
    fresh = (torch.randn(3, 2), torch.randn(2))
    assert_same_outputs(g.run(*fresh), model(*fresh))


def test_associative_scan_exports_at_any_length():
    """A symbolic length through ONNX (a Scan over the steps after the first) and back, against eager."""
    from bridge.backends.ort import session

    model = Prefix()
    example = (torch.randn(4, 3), torch.randn(4, 3))
    proto = bridge.to_onnx(model, args=example, dynamic={"x": {0: "T"}, "y": {0: "T"}})
    sess, back = session(proto), bridge.from_onnx(proto).to_module()
    for steps in (2, 3, 9):
        args = (torch.randn(steps, 3), torch.randn(steps, 3))
        want = model(*args)
        got = sess.run(None, {"x": args[0].numpy(), "y": args[1].numpy()})
        assert_same_outputs(tuple(torch.from_numpy(a) for a in got), want, path=f"onnxruntime T={steps}")
        assert_same_outputs(back(*args), want, path=f"from_onnx T={steps}")


def test_runtime_asserts_are_kept_as_checks():
    """torch._check on a data-dependent size stays in the graph as a check that raises at run time; the asserts
    torch adds for every such size's own range (u0 >= 0) are left out; ONNX, which has no assertion, says so."""
    from bridge.backends.ort import session

    class Checked(nn.Module):
        def forward(self, x):
            h = x[x > 0]
            torch._check(h.numel() >= 2)
            return h[:2] * 2, torch.nonzero(x)

    model = Checked()
    g = bridge.trace(model, torch.tensor([1.0, -1.0, 2.0, 3.0]))
    checks = g.find("check")
    assert len(checks) == 1 and "u0 >= 2" in checks[0].args["message"], str(g)
    good, bad = torch.tensor([5.0, 6.0, -1.0, -2.0]), torch.tensor([5.0, -6.0, -1.0, -2.0])
    assert_same_outputs(g.run(good), model(good))
    with pytest.raises(RuntimeError):
        model(bad)
    for run in (g.run, g.to_module()):
        with pytest.raises(RuntimeError, match="u0 >= 2"):
            run(bad)
    with pytest.warns(UserWarning, match="ONNX has no assertion"):
        proto = bridge.to_onnx(model, args=(good,))
    got = session(proto).run(None, {"x": good.numpy()})
    assert_same_outputs(tuple(torch.from_numpy(a) for a in got), model(good), path="onnxruntime")


@pytest.mark.parametrize("cls,example,fresh", CASES)
def test_every_path_through_onnx(cls, example, fresh):
    """The same models through ONNX (If, Loop, Scan) in onnxruntime and read back by from_onnx, against eager on
    inputs that take every branch and several trip counts."""
    import inspect

    from bridge.backends.ort import session

    model = _model(cls)
    proto = bridge.to_onnx(model, args=example)
    sess, back = session(proto), bridge.from_onnx(proto).to_module()
    names = list(inspect.signature(model.forward).parameters)
    with torch.no_grad():
        for args in fresh():
            want = model(*args)
            got = sess.run(None, {k: a.numpy() for k, a in zip(names, args)})
            flat = want if isinstance(want, tuple) else (want,)
            assert_same_outputs(tuple(torch.from_numpy(a) for a in got), flat, path="onnxruntime")
            assert_same_outputs(back(*args), want, path="from_onnx")


def test_region_nodes_take_the_scope_and_line_of_their_node():
    """torch.export records no module stack or user line inside a subgraph: region nodes get their node's."""
    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = Branches()

        def forward(self, x):
            return self.inner(x)

    g = bridge.trace(_model(Wrapper), (torch.randn(2, 4),))
    cond, = g.find("cond")
    assert cond.scope.path == "inner" and cond.source and "test_control_flow.py" in cond.source
    inner = [n for n, outer in g.walk() if outer]
    assert inner and all(n.scope == cond.scope and n.source == cond.source for n in inner)


def test_opaque_nodes_inside_regions_are_listed():
    class Opaque(nn.Module):
        def forward(self, x):
            return torch.cond(x.sum() > 0, lambda t: torch.logcumsumexp(t, 0), lambda t: t * 2, (x,))

    g = bridge.trace(Opaque(), (torch.randn(3, 4),))
    opaque = g.opaque_nodes()
    assert len(opaque) == 1 and not [n for n in g.nodes if n.op == "opaque"]  # it sits in true_fn
    assert "opaque node" in str(bridge.summary(g)).lower()
    for x in (torch.ones(3, 4), -torch.ones(3, 4)):
        assert_same_outputs(g.run(x), Opaque()(x))
