"""ONNX import of control flow (issue 16): If becomes a ``cond`` node, Loop a ``while_loop`` node, each subgraph a
closed region whose operands are the outer values it reads. Every case runs one imported module against
onnxruntime on the file, on inputs that take every branch and several trip counts (0, 1, several)."""
import contextlib
import io
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

import bridge
from tests.region_models import CondLoop
from bridge.errors import OnnxError, UnsupportedOpError

F, I64, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL


def _vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def _model(nodes, inputs, outputs, opset=17, initializers=(), check=True):
    g = helper.make_graph(nodes, "control", inputs, outputs, initializer=list(initializers))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    if check:
        onnx.checker.check_model(m, full_check=True)
    return m


def _graph(nodes, name, inputs, outputs):
    return helper.make_graph(nodes, name, inputs, outputs)


def _const(name, value, dtype=np.float32):
    return helper.make_node("Constant", [], [name], value=onnx.numpy_helper.from_array(np.asarray(value, dtype)))


def _check(m, feeds_list):
    """One import; its module equals onnxruntime on every feed (dicts of numpy arrays). Returns the graph."""
    g = bridge.from_onnx(m)
    g.check()
    str(g)  # the printer shows the regions
    mod = g.to_module()
    sess = ort.InferenceSession(m.SerializeToString())
    names = [i.name for i in sess.get_inputs()]
    for feeds in feeds_list:
        ref = sess.run(None, feeds)
        got = mod(*[torch.from_numpy(np.asarray(feeds[n])) for n in names])
        got = got if isinstance(got, (tuple, list)) else [got]
        assert len(got) == len(ref)
        for g_, r in zip(got, ref):
            assert tuple(g_.shape) == r.shape, (tuple(g_.shape), r.shape)
            np.testing.assert_allclose(g_.detach().numpy(), r, rtol=1e-5, atol=1e-6)
    return g


def _ops(g):
    return [n.op for n, _ in g.walk()]


# ---- If -----------------------------------------------------------------------------------------------------------
def _nested_if_model():
    """y = If(sum(x) > 0): then (If(max(x) > 2): x * w + b  else  x - b), else: x * 3 - b. The branches read x, w and
    b from the main graph; the inner If reads the then-branch's own value too. The batch dim is symbolic."""
    inner_then = _graph([helper.make_node("Mul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["it"])],
                        "inner_then", [], [_vi("it", F, None)])
    inner_else = _graph([helper.make_node("Sub", ["x", "b"], ["ie"])], "inner_else", [], [_vi("ie", F, None)])
    then = _graph([helper.make_node("ReduceMax", ["x"], ["mx"], keepdims=1),
                   helper.make_node("Reshape", ["mx", "one"], ["mx1"]),
                   helper.make_node("Greater", ["mx1", "two"], ["big"]),
                   helper.make_node("If", ["big"], ["t"], then_branch=inner_then, else_branch=inner_else)],
                  "then", [], [_vi("t", F, None)])
    other = _graph([_const("three", 3.0), helper.make_node("Mul", ["x", "three"], ["x3"]),
                    helper.make_node("Sub", ["x3", "b"], ["e"])], "else", [], [_vi("e", F, None)])
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
             helper.make_node("Greater", ["s", "zero"], ["p0"]),
             helper.make_node("Reshape", ["p0", "one"], ["p"]),  # a [1] condition, as ONNX allows
             helper.make_node("If", ["p"], ["y"], then_branch=then, else_branch=other)]
    inits = [onnx.numpy_helper.from_array(np.array(0, np.float32), "zero"),
             onnx.numpy_helper.from_array(np.array([2], np.float32), "two"),
             onnx.numpy_helper.from_array(np.array([1], np.int64), "one"),
             onnx.numpy_helper.from_array(np.array([0.5, -1, 2], np.float32), "w"),
             onnx.numpy_helper.from_array(np.array([1, 2, 3], np.float32), "b")]
    return _model(nodes, [_vi("x", F, ["n", 3])], [_vi("y", F, ["n", 3])], initializers=inits)


def test_if_reads_outer_values_and_nests():
    m = _nested_if_model()
    feeds = [{"x": np.full((2, 3), 1.0, np.float32)},        # then, inner else (max 1 <= 2)
             {"x": np.full((4, 3), 3.0, np.float32)},        # then, inner then
             {"x": -np.ones((1, 3), np.float32)},            # else
             {"x": np.arange(15, dtype=np.float32).reshape(5, 3) - 7}]  # sum 0: else
    g = _check(m, feeds)
    (cond,) = g.find("cond")
    assert sorted(k for k, _ in cond.regions) == ["false_fn", "true_fn"]
    # the operands, in first-read order: x and the float initializers (parameters of the main graph) the branches
    # and the inner If read (``one``, an int64 initializer known now, is a constant of the region); both regions
    # take one input each
    assert [v.name for v in cond.args["operands"]] == ["x", "two", "b", "w"]
    for _, region in cond.regions:
        assert len(region.inputs) == 4
        assert str(region.inputs[0].spec.shape[0]) == "n"  # the symbolic batch dim stays symbolic in the region
    inner = [n for n, outer in g.walk() if n.op == "cond" and outer]
    assert len(inner) == 1 and inner[0].args["pred"].spec.shape == ()


def test_if_on_a_condition_known_when_importing_is_inlined():
    then = _graph([helper.make_node("Relu", ["x"], ["t"])], "then", [], [_vi("t", F, None)])
    other = _graph([helper.make_node("Neg", ["x"], ["e"])], "else", [], [_vi("e", F, None)])
    for flag, want in ((True, "relu"), (False, "neg")):
        nodes = [_const("c", [flag], np.bool_),
                 helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)]
        m = _model(nodes, [_vi("x", F, [2, 3])], [_vi("y", F, [2, 3])])
        g = _check(m, [{"x": np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)}])
        assert "cond" not in _ops(g) and want in _ops(g)


def test_if_branches_of_different_sizes():
    """ONNX lets the branches give different shapes: a size that differs is known only when the module runs."""
    then = _graph([helper.make_node("Concat", ["x", "x"], ["t"], axis=0)], "then", [], [_vi("t", F, None)])
    other = _graph([helper.make_node("Identity", ["x"], ["e"])], "else", [], [_vi("e", F, None)])
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0), _const("z", 0.0),
             helper.make_node("Greater", ["s", "z"], ["p"]),
             helper.make_node("If", ["p"], ["y"], then_branch=then, else_branch=other),
             helper.make_node("Shape", ["y"], ["shape"])]
    m = _model(nodes, [_vi("x", F, [2, 3])], [_vi("y", F, [None, 3]), _vi("shape", I64, [2])])
    g = _check(m, [{"x": np.ones((2, 3), np.float32)}, {"x": -np.ones((2, 3), np.float32)}])
    (cond,) = g.find("cond")
    assert not isinstance(cond.outputs[0].spec.shape[0], int) and cond.outputs[0].spec.shape[1] == 3


def test_if_branches_of_different_ranks_are_refused():
    then = _graph([_const("t", [1.0, 2.0])], "then", [], [_vi("t", F, None)])
    other = _graph([_const("e", 1.0)], "else", [], [_vi("e", F, None)])
    m = _model([helper.make_node("If", ["p"], ["y"], then_branch=then, else_branch=other, name="pick")],
               [_vi("p", B, [])], [_vi("y", F, None)], check=False)
    with pytest.raises(UnsupportedOpError, match=r"'pick' \(If.*output 0 is f32\[2\] in one branch and f32\[\]"):
        bridge.from_onnx(m)


def test_unsupported_op_inside_a_branch_is_listed_before_import():
    then = _graph([helper.make_node("Celu", ["x"], ["t"]), helper.make_node("StringNormalizer", ["x"], ["u"])],
                  "then", [], [_vi("u", F, None)])
    other = _graph([helper.make_node("Neg", ["x"], ["e"])], "else", [], [_vi("e", F, None)])
    m = helper.make_model(_graph([helper.make_node("If", ["p"], ["y"], then_branch=then, else_branch=other)], "g",
                                 [_vi("p", B, []), _vi("x", F, [2])], [_vi("y", F, [2])]),
                          opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedOpError, match="StringNormalizer"):
        bridge.from_onnx(m)


def test_a_branch_reading_an_undefined_name_is_a_corrupt_file():
    then = _graph([helper.make_node("Neg", ["nowhere"], ["t"])], "then", [], [_vi("t", F, None)])
    other = _graph([helper.make_node("Neg", ["x"], ["e"])], "else", [], [_vi("e", F, None)])
    m = helper.make_model(_graph([helper.make_node("If", ["p"], ["y"], then_branch=then, else_branch=other)], "g",
                                 [_vi("p", B, []), _vi("x", F, [2])], [_vi("y", F, [2])]),
                          opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(OnnxError, match="'nowhere'"):
        bridge.from_onnx(m)


# ---- Loop ---------------------------------------------------------------------------------------------------------
def _loop_model(with_trip: bool, with_cond: bool):
    """h = x; k = 0; loop: h = tanh(h * w) + i (i the iteration number, read as float); k = k + 1; stop when
    sum(h) > limit (the condition it gives). ``limit`` and ``w`` come from the main graph."""
    body = _graph([helper.make_node("Mul", ["h_in", "w"], ["hw"]), helper.make_node("Tanh", ["hw"], ["th"]),
                   helper.make_node("Cast", ["i"], ["fi"], to=F), helper.make_node("Add", ["th", "fi"], ["h_out"]),
                   _const("one", 1, np.int64), helper.make_node("Add", ["k_in", "one"], ["k_out"]),
                   helper.make_node("ReduceSum", ["h_out"], ["s"], keepdims=0),
                   helper.make_node("LessOrEqual", ["s", "limit"], ["c_out"])],
                  "body", [_vi("i", I64, []), _vi("c_in", B, []), _vi("h_in", F, None), _vi("k_in", I64, [])],
                  [_vi("c_out", B, []), _vi("h_out", F, None), _vi("k_out", I64, [])])
    inputs = [_vi("x", F, ["n", 2]), _vi("limit", F, [])]
    loop_in = ["", ""]
    if with_trip:
        inputs.append(_vi("trip", I64, []))
        loop_in[0] = "trip"
    if with_cond:
        inputs.append(_vi("go", B, []))
        loop_in[1] = "go"
    nodes = [_const("k0", 0, np.int64), helper.make_node("Loop", loop_in + ["x", "k0"], ["h", "k"], body=body)]
    inits = [onnx.numpy_helper.from_array(np.array([0.9, -1.1], np.float32), "w")]
    return _model(nodes, inputs, [_vi("h", F, ["n", 2]), _vi("k", I64, [])], initializers=inits)


@pytest.mark.parametrize("with_trip,with_cond", [(True, False), (False, True), (True, True)])
def test_loop_trip_count_condition_and_both(with_trip, with_cond):
    m = _loop_model(with_trip, with_cond)
    x = np.array([[0.3, -0.2], [0.1, 0.4], [-0.5, 0.2]], np.float32)
    feeds = []
    for trip, limit, go in [(0, 100.0, True), (1, 100.0, True), (4, 100.0, True), (6, 8.0, True), (6, 100.0, False),
                            (3, -100.0, True)]:
        f = {"x": x, "limit": np.array(limit, np.float32)}
        if with_trip:
            f["trip"] = np.array(trip, np.int64)
        if with_cond:
            f["go"] = np.array(go)
        elif not with_trip or limit < 50 or not go:
            continue
        feeds.append(f)
    g = _check(m, feeds)
    (loop,) = g.find("while_loop")
    ks = [int(g.run(*[torch.from_numpy(np.asarray(f[n])) for n in f])[1]) for f in feeds]
    assert len(set(ks)) >= 3, ks  # several trip counts, 0 and 1 among them where the trip count is given
    # with a trip count alone, ONNX ignores the condition the body computes: the import's dce drops it and the
    # limit it reads
    assert [v.name for v in loop.args["additional_inputs"]][:2] == (["w", "limit"] if with_cond else ["w", "trip"])
    (h,) = [v for v in loop.outputs if v.spec.rank == 2]
    assert str(h.spec.shape[0]) == "n"  # the carried h keeps the symbolic batch dim


def test_loop_with_neither_trip_count_nor_condition_is_refused():
    body = _graph([helper.make_node("Identity", ["c"], ["c_out"]), helper.make_node("Identity", ["v"], ["v_out"])],
                  "body", [_vi("i", I64, []), _vi("c", B, []), _vi("v", F, [2])],
                  [_vi("c_out", B, []), _vi("v_out", F, [2])])
    m = _model([helper.make_node("Loop", ["", "", "x"], ["y"], body=body, name="forever")],
               [_vi("x", F, [2])], [_vi("y", F, [2])])
    with pytest.raises(UnsupportedOpError, match="'forever' \\(Loop.*never ends"):
        bridge.from_onnx(m)


def test_loop_scan_outputs_and_a_growing_carried_value():
    """Scan outputs stack a row per iteration; a carried value that grows (Concat) gets a size known only at run
    time. Trip counts 0, 1 and several."""
    body = _graph([helper.make_node("Identity", ["c"], ["c_out"]),
                   helper.make_node("Cast", ["i"], ["fi"], to=F), helper.make_node("Add", ["acc", "fi"], ["acc_out"]),
                   helper.make_node("Unsqueeze", ["fi", "ax"], ["fi1"]),
                   helper.make_node("Concat", ["grow", "fi1"], ["grow_out"], axis=0),
                   helper.make_node("Mul", ["acc_out", "x"], ["row"]),
                   helper.make_node("ReduceSum", ["acc_out"], ["row2"], keepdims=0)],
                  "body", [_vi("i", I64, []), _vi("c", B, []), _vi("acc", F, None), _vi("grow", F, None)],
                  [_vi("c_out", B, []), _vi("acc_out", F, None), _vi("grow_out", F, None), _vi("row", F, [3]),
                   _vi("row2", F, [])])  # rows declared: onnxruntime's shape for no iteration
    inits = [onnx.numpy_helper.from_array(np.array([0], np.int64), "ax"),
             onnx.numpy_helper.from_array(np.zeros(1, np.float32), "g0")]
    m = _model([helper.make_node("Loop", ["trip", "", "x", "g0"], ["acc", "grow", "rows", "sums"], body=body)],
               [_vi("x", F, [3]), _vi("trip", I64, [])],
               [_vi("acc", F, [3]), _vi("grow", F, [None]), _vi("rows", F, [None, 3]), _vi("sums", F, [None])],
               initializers=inits)
    x = np.array([1.0, -2.0, 0.5], np.float32)
    g = _check(m, [{"x": x, "trip": np.array(t, np.int64)} for t in (0, 1, 5)])
    (loop,) = g.find("while_loop")
    # (the carried condition, an Identity nothing reads after the loop, is dropped by the import's dce)
    grow, rows = loop.outputs[-3].spec.shape, loop.outputs[-2].spec.shape
    assert len(grow) == 1 and not isinstance(grow[0], int)
    assert not isinstance(rows[0], int) and rows[1:] == (3,)


def test_loop_scan_rows_of_a_size_known_at_run_time():
    """onnx's test_loop11 with a trip count input: the row is a Slice at the iteration number (its size is known
    only at run time), stacked."""
    body = _graph([helper.make_node("Identity", ["c"], ["c_out"]), _const("xs", [1, 2, 3, 4, 5]),
                   _const("one", [1], np.int64), helper.make_node("Add", ["i", "one"], ["end"]),
                   helper.make_node("Unsqueeze", ["i", "ax"], ["start"]),
                   helper.make_node("Slice", ["xs", "start", "end"], ["piece"]),
                   helper.make_node("Add", ["y", "piece"], ["y_out"]),
                   helper.make_node("Identity", ["y_out"], ["row"])],
                  "body", [_vi("i", I64, []), _vi("c", B, []), _vi("y", F, [1])],
                  [_vi("c_out", B, []), _vi("y_out", F, [1]), _vi("row", F, [1])])
    m = _model([helper.make_node("Loop", ["trip", "", "y0"], ["y", "rows"], body=body)],
               [_vi("y0", F, [1]), _vi("trip", I64, [])], [_vi("y", F, [1]), _vi("rows", F, [None, 1])],
               initializers=[onnx.numpy_helper.from_array(np.array([0], np.int64), "ax")])
    _check(m, [{"y0": np.array([0.5], np.float32), "trip": np.array(t, np.int64)} for t in (1, 2, 5)])


def test_if_inside_a_loop_body_reads_the_body_and_the_main_graph():
    """A branch inside a Loop's body reads a carried value of the body and a value of the main graph (``scale``):
    both come in as operands, through the loop's ``additional_inputs`` for the main graph's."""
    then = _graph([helper.make_node("Mul", ["h_in", "scale"], ["t"])], "then", [], [_vi("t", F, None)])
    other = _graph([helper.make_node("Identity", ["h_in"], ["e"])], "else", [], [_vi("e", F, None)])
    body = _graph([helper.make_node("ReduceSum", ["h_in"], ["s"], keepdims=0), _const("z", 0.0),
                   helper.make_node("Greater", ["s", "z"], ["pos"]),
                   helper.make_node("If", ["pos"], ["h_if"], then_branch=then, else_branch=other),
                   _const("d", 1.0), helper.make_node("Sub", ["h_if", "d"], ["h_out"]),
                   helper.make_node("Identity", ["c"], ["c_out"])],
                  "body", [_vi("i", I64, []), _vi("c", B, []), _vi("h_in", F, None)],
                  [_vi("c_out", B, []), _vi("h_out", F, None)])
    m = _model([helper.make_node("Loop", ["trip", "", "x"], ["h"], body=body)],
               [_vi("x", F, [3]), _vi("scale", F, []), _vi("trip", I64, [])], [_vi("h", F, [3])])
    feeds = [{"x": np.array([2.0, 1.0, 0.5], np.float32), "scale": np.array(0.5, np.float32),
              "trip": np.array(t, np.int64)} for t in (0, 1, 3, 8)]
    g = _check(m, feeds)
    (loop,) = g.find("while_loop")
    assert [v.name for v in loop.args["additional_inputs"]] == ["scale", "trip"]
    inner = [n for n, outer in g.walk() if n.op == "cond"]
    assert len(inner) == 1 and [v.name for v in inner[0].args["operands"]] == ["h_in", "scale"]


def test_import_with_real_value_propagation():
    """Where some op has no fake-tensor kernel the importer propagates real values: cond and while_loop import
    there too (the examples are those of the branch and trip count the zeros take); scan outputs, whose sizes
    grow, are refused with a typed error."""
    from bridge.frontends.onnx import _Importer

    m = _nested_if_model()
    g = _Importer(m, "nested_if", fake=False).run()
    sess = ort.InferenceSession(m.SerializeToString())
    for x in (np.full((2, 3), 3.0, np.float32), -np.ones((2, 3), np.float32)):
        np.testing.assert_allclose(g.run(torch.from_numpy(x)).numpy(), sess.run(None, {"x": x})[0], rtol=1e-6)
    m = _loop_model(True, True)
    g = _Importer(m, "loop", fake=False).run()
    sess = ort.InferenceSession(m.SerializeToString())
    x = np.array([[0.3, -0.2], [0.1, 0.4]], np.float32)
    for trip in (0, 2, 5):
        feeds = {"x": x, "limit": np.array(100, np.float32), "trip": np.array(trip, np.int64), "go": np.array(True)}
        got = g.run(*[torch.from_numpy(np.asarray(v)) for v in feeds.values()])
        for a, b in zip(got, sess.run(None, feeds)):
            np.testing.assert_allclose(a.numpy(), b, rtol=1e-6)
    body = _graph([helper.make_node("Identity", ["c"], ["c_out"]), helper.make_node("Identity", ["v"], ["v_out"]),
                   helper.make_node("Identity", ["v"], ["row"])],
                  "body", [_vi("i", I64, []), _vi("c", B, []), _vi("v", F, [2])],
                  [_vi("c_out", B, []), _vi("v_out", F, [2]), _vi("row", F, [2])])
    m = _model([helper.make_node("Loop", ["trip", "", "x"], ["y", "rows"], body=body, name="stack")],
               [_vi("x", F, [2]), _vi("trip", I64, [])], [_vi("y", F, [2]), _vi("rows", F, [None, 2])])
    with pytest.raises(UnsupportedOpError, match="'stack' \\(Loop.*scan outputs"):
        _Importer(m, "scan", fake=False).run()


# ---- files from torch.onnx.export(dynamo=True) --------------------------------------------------------------------
def test_torch_onnx_export_of_cond_and_while_loop():
    """torch's dynamo exporter writes If and Loop with their subgraphs inline; the import matches onnxruntime and
    the eager model on both branches and trip counts 0, 1 and several."""
    torch.manual_seed(0)
    model = CondLoop().eval()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        proto = torch.onnx.export(model, (torch.randn(2, 4), torch.tensor(3)), dynamo=True).model_proto
    types = {n.op_type for n in proto.graph.node}
    assert {"If", "Loop"} <= types
    cases = [(torch.ones(2, 4), 0), (-torch.ones(2, 4), 1), (torch.randn(2, 4), 4), (-torch.rand(2, 4), 2)]
    g = _check(proto, [{"x": x.numpy(), "n": np.array(n, np.int64)} for x, n in cases])
    assert {"cond", "while_loop"} <= set(_ops(g))
    mod = g.to_module()
    for x, n in cases:
        want = model(x, torch.tensor(n))
        got = mod(x, torch.tensor(n))
        torch.testing.assert_close(got[0], want[0])
        assert int(got[1]) == int(want[1])


# ---- Scan ---------------------------------------------------------------------------------------------------------
def _scan_model(T="T", opset=17, check=True, **attrs):
    """Two state variables (a running sum s, a step count k), two scan inputs (a: (T, 2) along axis 0 forward,
    b: (2, T) along axis 1 reversed), the body reading w (a main-graph input) and an initializer c; three scan
    outputs: (2, T) (axis 1), prepended (reverse order), and along axis -1 of (3, T)."""
    body = _graph([helper.make_node("Mul", ["a_t", "w"], ["aw"]), helper.make_node("Add", ["s", "aw"], ["s1"]),
                   helper.make_node("Sub", ["s1", "b_t"], ["s_out"]),
                   _const("one", 1, np.int64), helper.make_node("Add", ["k", "one"], ["k_out"]),
                   helper.make_node("Cast", ["k"], ["fk"], to=F), helper.make_node("Mul", ["s_out", "fk"], ["r0"]),
                   helper.make_node("Tanh", ["b_t"], ["r1"]),
                   helper.make_node("Concat", ["s_out", "c"], ["r2"], axis=0)],
                  "body", [_vi("s", F, [2]), _vi("k", I64, []), _vi("a_t", F, [2]), _vi("b_t", F, [2])],
                  [_vi("s_out", F, [2]), _vi("k_out", I64, []), _vi("r0", F, [2]), _vi("r1", F, [2]),
                   _vi("r2", F, [3])])
    inits = [onnx.numpy_helper.from_array(np.array([0.5], np.float32), "c")]
    attrs = {"scan_input_axes": [0, 1], "scan_input_directions": [0, 1], "scan_output_axes": [1, 0, -1],
             "scan_output_directions": [0, 1, 0], **attrs}
    node = helper.make_node("Scan", ["s0", "k0", "a", "b"], ["s", "k", "y0", "y1", "y2"], body=body,
                            num_scan_inputs=2, name="steps", **{k: v for k, v in attrs.items() if v is not None})
    return _model([node], [_vi("s0", F, [2]), _vi("k0", I64, []), _vi("a", F, [T, 2]), _vi("b", F, [2, T]),
                           _vi("w", F, [2])],
                  [_vi("s", F, [2]), _vi("k", I64, []), _vi("y0", F, [2, T]), _vi("y1", F, [T, 2]),
                   _vi("y2", F, [3, T])], opset=opset, initializers=inits, check=check)


def _scan_feeds(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [{"s0": rng.standard_normal(2).astype(np.float32), "k0": np.array(3, np.int64),
             "a": rng.standard_normal((t, 2)).astype(np.float32), "b": rng.standard_normal((2, t)).astype(np.float32),
             "w": rng.standard_normal(2).astype(np.float32)} for t in lengths]


def test_scan_states_inputs_axes_directions_and_an_outer_value():
    """One import of a symbolic-length Scan (two states, two scan inputs, an axis of 1, a reverse input and a
    prepended output, an output axis of -1, the body reading a main-graph input and an initializer) equals
    onnxruntime at sequence lengths 1, 2 and 5; the scan node itself steps forward along dim 0."""
    g = _check(_scan_model(), _scan_feeds([1, 2, 5]))
    (node,) = g.find("scan")
    assert [v.name for v in node.args["additional_inputs"]] == ["w", "c"]  # c: a weight of the main graph
    assert {"movedim", "flip"} <= set(_ops(g))
    assert str(node.outputs[2].spec.shape[0]) == "T"
    assert [str(d) for d in g.outputs[4].spec.shape] == ["3", "T"]


@pytest.mark.parametrize("opset", [9, 11, 16])
def test_scan_at_older_opsets(opset):
    """Scan-9 and Scan-11 (negative axes) files, converted to opset 13 by onnx's version converter, and Scan-16."""
    attrs = {"scan_output_axes": [1, 0, 1]} if opset < 11 else {}
    m = _scan_model(opset=opset, **attrs)
    _check(m, _scan_feeds([1, 4], seed=opset))


def test_scan_with_real_value_propagation():
    """Where shapes propagate with real values the scan runs on the example when importing; the module still
    matches onnxruntime."""
    from bridge.frontends.onnx import _Importer

    m = _scan_model(T=4)
    g = _Importer(m, "scan", fake=False).run()
    sess = ort.InferenceSession(m.SerializeToString())
    for feeds in _scan_feeds([4, 4], seed=3):
        got = g.run(*[torch.from_numpy(np.asarray(v)) for v in feeds.values()])
        for a, b in zip(got, sess.run(None, feeds)):
            np.testing.assert_allclose(a.numpy(), b, rtol=1e-5, atol=1e-6)


def test_scan_state_variable_that_grows():
    """A state variable the body grows (a Concat onto it) gets a size known only at run time; onnxruntime's shape
    inference refuses such a file, so onnx's ReferenceEvaluator is the oracle."""
    from onnx.reference import ReferenceEvaluator

    body = _graph([helper.make_node("Unsqueeze", ["x", "ax"], ["x1"]),
                   helper.make_node("Concat", ["g", "x1"], ["g_out"], axis=0),
                   helper.make_node("ReduceSum", ["g_out"], ["y"], keepdims=0)],
                  "body", [_vi("g", F, None), _vi("x", F, [])], [_vi("g_out", F, None), _vi("y", F, [])])
    m = _model([helper.make_node("Scan", ["g0", "xs"], ["g", "ys"], body=body, num_scan_inputs=1)],
               [_vi("g0", F, [1]), _vi("xs", F, ["T"])], [_vi("g", F, [None]), _vi("ys", F, ["T"])],
               initializers=[onnx.numpy_helper.from_array(np.array([0], np.int64), "ax")])
    g = bridge.from_onnx(m)
    (node,) = g.find("scan")
    assert not isinstance(node.outputs[0].spec.shape[0], int)
    mod, ref = g.to_module(), ReferenceEvaluator(m)
    for t in (1, 4):
        feeds = {"g0": np.array([1.5], np.float32), "xs": np.arange(t, dtype=np.float32)}
        for a, b in zip(mod(*[torch.from_numpy(v) for v in feeds.values()]), ref.run(None, feeds)):
            assert tuple(a.shape) == b.shape
            np.testing.assert_allclose(a.numpy(), b, rtol=1e-6)


def test_scan_bad_attributes_are_refused_naming_the_node():
    for attrs, match in [({"scan_input_axes": [0, 2]}, "scan input 1 has rank 2, so its axis 2 is out of range"),
                         ({"scan_input_directions": [0, 2]}, "scan_input_directions holds 2"),
                         ({"scan_output_axes": [1, 0]}, "scan_output_axes has 2 entries for 3 scan outputs")]:
        m = _scan_model(check=False, **attrs)  # onnx's checker refuses them too
        with pytest.raises(UnsupportedOpError, match="'steps' \\(Scan.*" + match):
            bridge.from_onnx(m)
    m = _scan_model(T=0, check=False)
    with pytest.raises(UnsupportedOpError, match="'steps' \\(Scan.*length 0"):
        bridge.from_onnx(m)


def test_scan_at_opset_8_is_refused():
    """Opset 8's Scan steps a batch (a batch dim, sequence_lens): refused before onnx's version converter rewrites
    the model's inputs."""
    body = _graph([helper.make_node("Add", ["s", "x"], ["s_out"]), helper.make_node("Identity", ["s_out"], ["y"])],
                  "body", [_vi("s", F, [2]), _vi("x", F, [2])], [_vi("s_out", F, [2]), _vi("y", F, [2])])
    m = _model([helper.make_node("Scan", ["", "s0", "xs"], ["s", "ys"], body=body, num_scan_inputs=1, name="old")],
               [_vi("s0", F, [1, 2]), _vi("xs", F, [1, 3, 2])], [_vi("s", F, [1, 2]), _vi("ys", F, [1, 3, 2])],
               opset=8)
    with pytest.raises(UnsupportedOpError, match="'old' \\(Scan, opset 8\\).*batch.*opset 9 or newer"):
        bridge.from_onnx(m)


def _quiet_export(model, args, **kw):
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return torch.onnx.export(model, args, dynamo=True, **kw).model_proto


class _ScanModel(torch.nn.Module):
    def __init__(self, dim=0, reverse=False):
        super().__init__()
        self.lin, self.dim, self.reverse = torch.nn.Linear(4, 4), dim, reverse

    def forward(self, x, h0):
        from torch._higher_order_ops.scan import scan

        def comb(carry, xt):
            h, c = carry
            h2 = torch.tanh(self.lin(xt) + h)
            return (h2, c + h2.sum()), (h2 * 2).sum(-1)

        (h, c), ys = scan(comb, (h0, h0.sum() * 0), x, dim=self.dim, reverse=self.reverse)
        return h, c, ys


def _eager_parity(mod, model, cases):
    for args in cases:
        want, got = model(*args), mod(*args)
        assert len(got) == len(want)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_torch_onnx_export_of_scan():
    """torch's dynamo exporter writes torch's scan as a Scan (its body reading the Linear's weights from the outer
    scope); with a dynamic sequence length the import matches onnxruntime and the eager model at lengths 1, 3
    and 6."""
    torch.manual_seed(0)
    model = _ScanModel().eval()
    T = torch.export.Dim("T", min=1)
    proto = _quiet_export(model, (torch.randn(5, 2, 4), torch.randn(2, 4)), dynamic_shapes=({0: T}, None))
    assert [n.op_type for n in proto.graph.node if n.op_type == "Scan"] == ["Scan"]
    cases = [(torch.randn(t, 2, 4), torch.randn(2, 4)) for t in (1, 3, 6)]
    g = _check(proto, [{"x": x.numpy(), "h0": h.numpy()} for x, h in cases])
    (node,) = g.find("scan")
    assert {"lin.weight", "lin.bias"} <= {v.name for v in node.args["additional_inputs"]}
    with torch.no_grad():
        _eager_parity(g.to_module(), model, cases)


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_round_trip_through_onnx(reverse):
    """bridge -> ONNX (scan -> Scan, H1's lowering) -> bridge: a scan node again, equal to the eager model; the
    sequence length symbolic (forward) or static (reverse: flip over a symbolic dim exports as a Slice of step
    -1, which the Slice importer takes only over a static dim)."""
    torch.manual_seed(1)
    model = _ScanModel(dim=1, reverse=reverse).eval()
    x, h0 = torch.randn(2, 5, 4), torch.randn(2, 4)
    g = bridge.trace(model, (x, h0), frontend="export", dynamic=None if reverse else {"x": {1: "T"}})
    proto = bridge.to_onnx(g)
    back = bridge.from_onnx(proto)
    back.check()
    assert "scan" in _ops(back)
    lengths = (5,) if reverse else (1, 3, 7)
    with torch.no_grad():
        _eager_parity(back.to_module(), model, [(torch.randn(2, t, 4), h0) for t in lengths])
