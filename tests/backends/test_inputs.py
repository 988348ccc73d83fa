"""Wrong run-time inputs give typed errors that name the input: ``g.run`` and the generated module (numpy arrays
taken as tensors; None, lists, python scalars, wrong rank/dtype/static size refused), and ``bridge.verify``
against an ONNX file that takes other inputs (checked before onnxruntime runs; onnxruntime's own failures
re-raised naming its node). Expected values come from eager PyTorch and onnxruntime."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
from onnx import TensorProto, helper

import bridge
from bridge.backends import ort as bort
from bridge.errors import InputError, OnnxError


class Affine(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x, y):
        return self.fc(x) + y


class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(7, 4)

    def forward(self, ids):
        return self.emb(ids)


class Scale(nn.Module):
    def forward(self, x, s):
        return x * s


class Add(nn.Module):
    def forward(self, x, y):
        return x + y


class One(nn.Module):
    def forward(self, x):
        return x * 2


@pytest.fixture(scope="module")
def affine():
    torch.manual_seed(0)
    m = Affine().eval()
    return m, bridge.trace(m, (torch.randn(2, 4), torch.randn(2, 3)))


@pytest.fixture(scope="module")
def tagger():
    torch.manual_seed(0)
    m = Tagger().eval()
    return m, bridge.trace(m, (torch.randint(0, 7, (2, 5)),))


def _callers(g):
    """g.run, and the generated module called directly: both check inputs the same way."""
    return {"run": g.run, "module": g.to_module()}


def eager(m, *args):
    with torch.no_grad():
        return m(*args)


# ---- inputs that are not what the graph was traced with -------------------------------------------------
Y = torch.randn(2, 3)

BAD_X = {
    "none": (None, ["'x'", "got None", "[2, 4]"]),
    "list": ([[1.0] * 4] * 2, ["'x'", "a list", "[2, 4]", "torch.as_tensor"]),
    "float": (1.5, ["'x'", "a float", "[2, 4]"]),
    "string": ("x.npy", ["'x'", "a str"]),
    "int-tensor": (torch.ones(2, 4, dtype=torch.int64), ["'x'", "(int64)", "any float dtype"]),
    "rank": (torch.randn(2, 4, 1), ["'x'", "[2, 4, 1]", "[2, 4]"]),
    "static-dim": (torch.randn(3, 4), ["'x'", "[3, 4]", "[2, 4]", "dynamic={'x': {0:"]),
    "numpy-shape": (np.ones((3, 4), np.float32), ["'x'", "a numpy array of shape [3, 4]", "[2, 4]"]),
    "numpy-int": (np.ones((2, 4), np.int64), ["'x'", "numpy array", "(int64)"]),
    "numpy-float64": (np.ones((2, 4)), ["'x'", "numpy float64 array", "computes in float32",
                                        "x.astype(numpy.float32)"]),
    "numpy-object": (np.array([[object()] * 4] * 2), ["'x'", "dtype object", "cannot become a tensor"]),
    "numpy-scalar": (np.float32(1.0), ["'x'", "a numpy scalar of shape []", "[2, 4]"]),
    "numpy-strings": (np.array([["a"] * 4] * 2), ["'x'", "cannot become a tensor"]),
}


@pytest.mark.fault
@pytest.mark.parametrize("how", ["run", "module"])
@pytest.mark.parametrize("case", sorted(BAD_X))
def test_bad_tensor_input_is_input_error(affine, case, how):
    _, g = affine
    x, needles = BAD_X[case]
    with pytest.raises(InputError) as info:
        _callers(g)[how](x, Y)
    for n in needles:
        assert n in str(info.value), str(info.value)


BAD_IDS = {
    "float-ids": (torch.zeros(2, 5), ["'ids'", "(float32)", "(int64)"]),
    "int32-ids": (torch.zeros(2, 5, dtype=torch.int32), ["'ids'", "(int32)", "(int64)"]),
    "numpy-int32-ids": (np.zeros((2, 5), np.int32), ["'ids'", "numpy array", "(int32)"]),
    "bool-ids": (torch.zeros(2, 5, dtype=torch.bool), ["'ids'", "(bool)"]),
}


@pytest.mark.fault
@pytest.mark.parametrize("how", ["run", "module"])
@pytest.mark.parametrize("case", sorted(BAD_IDS))
def test_integer_input_wants_its_dtype(tagger, case, how):
    _, g = tagger
    ids, needles = BAD_IDS[case]
    with pytest.raises(InputError) as info:
        _callers(g)[how](ids)
    for n in needles:
        assert n in str(info.value), str(info.value)


BAD_CALLS = {
    "missing": ((torch.randn(2, 4),), {}, ["forward(x, y)", "1 positional input", "'y'"]),
    "extra": ((torch.randn(2, 4), Y, Y), {}, ["forward(x, y)", "3 positional inputs", "too many"]),
    "unknown-keyword": ((torch.randn(2, 4), Y), {"z": Y}, ["keywords 'z'", "unexpected keyword argument 'z'"]),
    "twice": ((torch.randn(2, 4), Y), {"x": Y}, ["keywords 'x'", "multiple values for argument 'x'"]),
    "none-at-all": ((), {}, ["forward(x, y)", "0 positional inputs", "'x'"]),
}


@pytest.mark.fault
@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_run_with_wrong_arguments_is_input_error(affine, case):
    _, g = affine
    args, kwargs, needles = BAD_CALLS[case]
    with pytest.raises(InputError) as info:
        g.run(*args, **kwargs)
    for n in needles:
        assert n in str(info.value), str(info.value)


def test_generated_module_keeps_pythons_type_error_for_arity(affine):
    """Binding happens before forward's body runs; catching it there would cost a frame on every call, so the
    module raises what any nn.Module does (naming the parameter) and g.run turns it into InputError."""
    _, g = affine
    with pytest.raises(TypeError, match="'y'"):
        g.to_module()(torch.randn(2, 4))


def test_type_error_inside_the_graph_is_not_rewritten():
    """A TypeError raised by the model's own code, with inputs that bind, passes through g.run unchanged."""
    class Picky(nn.Module):
        def forward(self, x):
            return torch.relu(x)

    g = bridge.trace(Picky(), (torch.randn(2),))

    def bad(*a):
        raise TypeError("from inside")

    g._module_cache = g.to_module()
    g._module_cache.forward = bad
    with pytest.raises(TypeError, match="from inside"):
        g.run(torch.randn(2))


# ---- numpy arrays are taken as tensors --------------------------------------------------------------------
@pytest.mark.parametrize("how", ["run", "module"])
def test_numpy_inputs_give_the_eager_result(affine, how):
    m, g = affine
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((2, 4), dtype=np.float32), rng.standard_normal((2, 3), dtype=np.float32)
    want = eager(m, torch.from_numpy(x), torch.from_numpy(y))
    torch.testing.assert_close(_callers(g)[how](x, y), want)
    # a reversed view (negative strides) and a read-only array are copied, not refused
    xr = x[::-1]
    ro = y.copy()
    ro.flags.writeable = False
    torch.testing.assert_close(_callers(g)[how](xr, ro), eager(m, torch.from_numpy(xr.copy()), torch.from_numpy(y)))
    # mixed: one numpy, one tensor
    torch.testing.assert_close(_callers(g)[how](x, torch.from_numpy(y)), want)


def test_numpy_ids_and_numpy_scalar():
    torch.manual_seed(0)
    tm = Tagger().eval()
    g = bridge.trace(tm, (torch.randint(0, 7, (2, 5)),))
    ids = np.arange(10, dtype=np.int64).reshape(2, 5) % 7
    torch.testing.assert_close(g.run(ids), eager(tm, torch.from_numpy(ids)))
    sm = Scale()
    gs = bridge.trace(sm, (torch.randn(3), torch.tensor(2.0)))
    torch.testing.assert_close(gs.run(np.ones(3, np.float32), np.float32(3.0)), torch.full((3,), 3.0))


def test_numpy_float64_runs_once_the_module_is_float64(affine):
    m, g = affine
    mod = g.to_module().double()
    x, y = np.random.default_rng(1).standard_normal((2, 4)), np.zeros((2, 3))
    got = mod(x, y)
    assert got.dtype == torch.float64
    ref = torch.nn.functional.linear(torch.from_numpy(x), m.fc.weight.double(), m.fc.bias.double())
    torch.testing.assert_close(got, ref.detach())


def test_the_check_is_one_line_per_input(affine):
    """The per-call cost: one ``if`` per input, the slow path only on failure."""
    _, g = affine
    code = g.to_module().code
    checks = [ln for ln in code.splitlines() if "_bad_input(" in ln]
    assert len(checks) == 2
    assert all(ln.strip().startswith("if not isinstance(") for ln in checks)


# ---- verify: inputs that do not fit the ONNX file ------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("verify")
    out = {}
    out["static"] = str(d / "one_static.onnx")
    bridge.to_onnx(One(), out["static"], args=(torch.randn(2, 3),))
    out["shared"] = str(d / "add_shared.onnx")
    bridge.to_onnx(Add(), out["shared"], args=(torch.randn(2, 3), torch.randn(2, 3)),
                   dynamic={"x": {0: "batch"}, "y": {0: "batch"}})
    # another exporter's file: inputs with their own symbolic dims, one Add node named by that exporter
    graph = helper.make_graph([helper.make_node("Add", ["x", "y"], ["out"], name="my_add")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3]),
                               helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", 3])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)])
    out["foreign"] = str(d / "foreign.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), out["foreign"])
    graph = helper.make_graph([helper.make_node("NoSuchOp", ["x"], ["out"], name="weird")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 3])])
    out["unloadable"] = str(d / "unloadable.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), out["unloadable"])
    return out


class SumAdd(nn.Module):
    """Runs eagerly on x [2, 3], y [3, 3]; the foreign file's Add cannot broadcast those."""

    def forward(self, x, y):
        return x.sum(0, keepdim=True) + y


BAD_VERIFY = {
    "static-dim": (One, "static", (torch.randn(3, 3),), InputError,
                   ["'x'", "float[2, 3]", "float[3, 3]", "dim 0 is fixed at 2", "dynamic="]),
    "rank": (One, "static", (torch.randn(2, 3, 1),), InputError, ["'x'", "float[2, 3, 1]", "rank 3, not 2"]),
    "dtype": (One, "static", (torch.randn(2, 3, dtype=torch.float64),), InputError,
              ["'x'", "double[2, 3]", "element type"]),
    "int-dtype": (One, "static", (torch.ones(2, 3, dtype=torch.int64),), InputError, ["'x'", "int64[2, 3]"]),
    "model-two-file-one": (Add, "static", (torch.randn(2, 3), torch.randn(2, 3)), InputError,
                           ["one_static.onnx", "takes 1 input(s)", "x: float[2, 3]", "2 tensor input(s) (x, y)"]),
    "model-one-file-two": (One, "shared", (torch.randn(2, 3),), InputError,
                           ["add_shared.onnx", "takes 2 input(s)", "y: float[batch, 3]", "1 tensor input(s) (x)"]),
    "shared-symbol": (Add, "shared", (torch.randn(2, 3), torch.randn(1, 3)), InputError,
                      ["'y'", "symbolic dim 'batch'", "input 'x' gives size 2"]),
    "ort-node-fails": (SumAdd, "foreign", (torch.randn(2, 3), torch.randn(3, 3)), OnnxError,
                       ["foreign.onnx", "node 'my_add' (Add)", "broadcast"]),
    "ort-cannot-load": (One, "unloadable", (torch.randn(2, 3),), OnnxError,
                        ["onnxruntime cannot load", "unloadable.onnx", "NoSuchOp"]),
}


@pytest.mark.fault
@pytest.mark.parametrize("case", sorted(BAD_VERIFY))
def test_verify_with_inputs_the_file_does_not_take(files, case):
    model, key, args, exc, needles = BAD_VERIFY[case]
    with pytest.raises(exc) as info:
        bridge.verify(model(), files[key], args)
    assert type(info.value) is exc
    msg = str(info.value)
    for n in needles:
        assert n in msg, msg
    assert "[ONNXRuntimeError]" not in msg and "onnxruntime_src" not in msg


def test_verify_matches_a_foreign_file_by_order_and_accepts_fitting_inputs(files):
    """The foreign file's inputs are named as the model's; with inputs it can take, verify runs and agrees."""
    x, y = torch.randn(2, 3), torch.randn(2, 3)
    rep = bridge.verify(Add(), files["foreign"], (x, y))
    assert rep.ok
    got = ort.InferenceSession(files["foreign"]).run(None, {"x": x.numpy(), "y": y.numpy()})[0]
    np.testing.assert_allclose(got, (x + y).numpy())
    assert bridge.verify(Add(), files["shared"], (torch.randn(4, 3), torch.randn(4, 3))).ok


@pytest.mark.fault
def test_run_reraises_onnxruntimes_refusal_typed(files):
    """Fed directly (no check first), onnxruntime's INVALID_ARGUMENT becomes InputError, its words kept."""
    sess = bort.session(files["static"])
    with pytest.raises(InputError) as info:
        bort.run(sess, {"x": np.ones((2, 3), np.float64)}, files["static"])
    assert "one_static.onnx" in str(info.value) and "tensor(double)" in str(info.value)


@pytest.mark.fault
def test_check_inputs_by_order_names_both_inputs():
    """A file whose input names differ from the model's is matched in order; a mismatch names both."""
    with pytest.raises(InputError) as info:
        bort.check_inputs([("input_0", [2, 3], "tensor(float)")], ["x"], [torch.randn(2, 4)], "f.onnx")
    msg = str(info.value)
    assert "'input_0' of f.onnx" in msg and "the model's input 'x'" in msg and "dim 1 is fixed at 3" in msg


def test_file_inputs_from_a_path_and_a_proto(files):
    want = [("x", ["batch", 3], "tensor(float)"), ("y", ["batch", 3], "tensor(float)")]
    assert bort.file_inputs(files["shared"]) == want
    assert bort.file_inputs(onnx.load(files["shared"])) == want
    sess_inputs = [(i.name, i.shape, i.type) for i in ort.InferenceSession(files["shared"]).get_inputs()]
    assert sess_inputs == want  # the same form onnxruntime gives
