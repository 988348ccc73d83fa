"""ONNX import of shape and index inputs computed at run time (issue 14): sizes, counts, bounds and axes that
are tensors in the file are read when the module runs, with symbols in the IR, so one imported module serves every
value. Each case runs the same imported module on several values of those inputs, against onnxruntime on the file
(a value baked in at import time fails the second run). Real files: bridge's own dynamic-sequence transformer
files and both torch.onnx exporters' files import and match onnxruntime at other batch and sequence sizes."""
import logging
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

import bridge
from bridge.errors import UnsupportedOpError


def _model(nodes, inputs, outputs, opset=18):
    g = helper.make_graph(nodes, "run_time", inputs, outputs)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


def _vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def _out(name, rank, elem=TensorProto.FLOAT):
    """An output of known rank and sizes known only when the model runs."""
    return helper.make_tensor_value_info(name, elem, [f"{name}_{i}" for i in range(rank)])


def _check(m, feeds_list):
    """The imported module equals onnxruntime on every feed (dicts of numpy arrays), from one import."""
    mod = bridge.from_onnx(m).to_module()
    sess = ort.InferenceSession(m.SerializeToString())
    names = [i.name for i in sess.get_inputs()]
    shapes = set()
    for feeds in feeds_list:
        ref = sess.run(None, feeds)
        got = mod(*[torch.from_numpy(np.asarray(feeds[n])) for n in names])
        got = got if isinstance(got, (tuple, list)) else [got]
        assert len(got) == len(ref)
        for g_, r in zip(got, ref):
            assert tuple(g_.shape) == r.shape
            np.testing.assert_allclose(g_.detach().numpy(), r, rtol=1e-6, atol=1e-6)
            shapes.add(r.shape)
    assert len(shapes) > 1, "the feeds must give outputs of several shapes"
    return mod


def _i64(*v):
    return np.array(v, dtype=np.int64)


X = np.arange(24, dtype=np.float32).reshape(2, 3, 4)


def test_reshape_by_a_shape_computed_from_data():
    m = _model([helper.make_node("Reshape", ["x", "shape"], ["y"])],
               [_vi("x", TensorProto.FLOAT, [2, 3, 4]), _vi("shape", TensorProto.INT64, [2])],
               [_out("y", 2)])
    _check(m, [{"x": X, "shape": _i64(4, 6)}, {"x": X, "shape": _i64(-1, 2)}, {"x": X, "shape": _i64(0, -1)}])


def test_tile_expand_constant_of_shape_topk_trilu_with_run_time_counts():
    nodes = [helper.make_node("Tile", ["x", "reps"], ["tiled"]),
             helper.make_node("Expand", ["col", "shape"], ["expanded"]),
             helper.make_node("ConstantOfShape", ["shape"], ["filled"],
                              value=helper.make_tensor("v", TensorProto.FLOAT, [1], [2.5])),
             helper.make_node("TopK", ["row", "k"], ["top", "top_i"]),
             helper.make_node("Trilu", ["sq", "diag"], ["tri"], upper=0)]
    m = _model(nodes, [_vi("x", TensorProto.FLOAT, [2, 3]), _vi("reps", TensorProto.INT64, [2]),
                       _vi("col", TensorProto.FLOAT, [3, 1]), _vi("shape", TensorProto.INT64, [2]),
                       _vi("row", TensorProto.FLOAT, [6]), _vi("k", TensorProto.INT64, [1]),
                       _vi("sq", TensorProto.FLOAT, [4, 4]), _vi("diag", TensorProto.INT64, [])],
               [_out("tiled", 2), _out("expanded", 2), _out("filled", 2), _out("top", 1),
                _out("top_i", 1, TensorProto.INT64), _out("tri", 2)])
    rng = np.random.default_rng(0)
    base = {"x": rng.standard_normal((2, 3)).astype(np.float32), "col": rng.standard_normal((3, 1)).astype(np.float32),
            "row": rng.permutation(6).astype(np.float32), "sq": rng.standard_normal((4, 4)).astype(np.float32)}
    _check(m, [dict(base, reps=_i64(1, 2), shape=_i64(3, 5), k=_i64(2), diag=np.array(0)),
               dict(base, reps=_i64(3, 1), shape=_i64(3, 1), k=_i64(5), diag=np.array(-2)),
               dict(base, reps=_i64(2, 2), shape=_i64(3, 4), k=_i64(1), diag=np.array(1))])


def test_slice_split_range_onehot_with_run_time_bounds():
    nodes = [helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["sliced"]),
             helper.make_node("Split", ["v", "sizes"], ["a", "b"], axis=0),
             helper.make_node("Range", ["start", "limit", "delta"], ["r"]),
             helper.make_node("OneHot", ["idx", "depth", "values"], ["hot"], axis=0)]
    m = _model(nodes, [_vi("x", TensorProto.FLOAT, [2, 3, 4]), _vi("starts", TensorProto.INT64, [1]),
                       _vi("ends", TensorProto.INT64, [1]), _vi("axes", TensorProto.INT64, [1]),
                       _vi("v", TensorProto.FLOAT, [5]), _vi("sizes", TensorProto.INT64, [2]),
                       _vi("start", TensorProto.INT32, []), _vi("limit", TensorProto.INT32, []),
                       _vi("delta", TensorProto.INT32, []), _vi("idx", TensorProto.INT64, [3]),
                       _vi("depth", TensorProto.INT64, []), _vi("values", TensorProto.FLOAT, [2])],
               [_out("sliced", 3), _out("a", 1), _out("b", 1), _out("r", 1, TensorProto.INT32), _out("hot", 2)])
    base = {"x": X, "v": np.arange(5, dtype=np.float32), "idx": _i64(0, -1, 7),
            "values": np.array([-1.0, 3.0], dtype=np.float32)}
    i32 = lambda v: np.array(v, dtype=np.int32)  # noqa: E731
    _check(m, [dict(base, starts=_i64(1), ends=_i64(3), axes=_i64(2), sizes=_i64(2, 3), start=i32(0), limit=i32(5),
                    delta=i32(2), depth=np.array(4)),
               dict(base, starts=_i64(-2), ends=_i64(100), axes=_i64(1), sizes=_i64(5, 0), start=i32(10),
                    limit=i32(1), delta=i32(-3), depth=np.array(9))])


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceProd", "ReduceL2", "ReduceLogSumExp"])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_reductions_over_axes_read_at_run_time(op, keepdims):
    m = _model([helper.make_node(op, ["x", "axes"], ["y"], keepdims=keepdims)],
               [_vi("x", TensorProto.FLOAT, [2, 3, 4]), _vi("axes", TensorProto.INT64, [2])],
               [_out("y", 3 if keepdims else 1)])
    x = np.random.default_rng(1).uniform(0.5, 1.5, (2, 3, 4)).astype(np.float32)
    _check(m, [{"x": x, "axes": _i64(0, 2)}, {"x": x, "axes": _i64(-1, 1)}, {"x": x, "axes": _i64(1, 0)}])


def test_axes_read_at_run_time_unsqueeze_squeeze_cumsum():
    nodes = [helper.make_node("Unsqueeze", ["x", "uaxes"], ["u"]),
             helper.make_node("Squeeze", ["ones", "saxes"], ["s"]),
             helper.make_node("CumSum", ["x", "axis"], ["c"], exclusive=1, reverse=1)]
    m = _model(nodes, [_vi("x", TensorProto.FLOAT, [2, 3, 4]), _vi("uaxes", TensorProto.INT64, [2]),
                       _vi("ones", TensorProto.FLOAT, [1, 3, 1, 4]), _vi("saxes", TensorProto.INT64, [1]),
                       _vi("axis", TensorProto.INT64, [])],
               [_out("u", 5), _out("s", 3), _out("c", 3)])
    ones = np.ones((1, 3, 1, 4), dtype=np.float32)
    _check(m, [{"x": X, "uaxes": _i64(4, 0), "ones": ones, "saxes": _i64(0), "axis": np.array(1)},
               {"x": X, "uaxes": _i64(-1, 1), "ones": ones, "saxes": _i64(-2), "axis": np.array(-1)}])


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_by_sizes_and_scales_read_at_run_time(mode):
    """Resize whose sizes (or scales) are computed from data: one imported module at several values."""
    for source in ("sizes", "scales"):
        ins = ["x", "", "", "v"] if source == "sizes" else ["x", "", "v"]
        elem = TensorProto.INT64 if source == "sizes" else TensorProto.FLOAT
        m = _model([helper.make_node("Resize", ins, ["y"], mode=mode)],
                   [_vi("x", TensorProto.FLOAT, [1, 2, 4, 5]), _vi("v", elem, [4])], [_out("y", 4)], opset=19)
        x = np.random.default_rng(2).standard_normal((1, 2, 4, 5)).astype(np.float32)
        values = ([_i64(1, 2, 8, 10), _i64(1, 2, 2, 3), _i64(1, 2, 7, 4)] if source == "sizes" else
                  [np.array(v, dtype=np.float32) for v in ([1, 1, 2, 2], [1, 1, 0.5, 0.6], [1, 1, 1.5, 3])])
        _check(m, [{"x": x, "v": v} for v in values])


def test_causal_attention_with_a_cache_of_symbolic_length():
    """ONNX Attention with a KV cache whose length is a symbolic dim (a decoder step): the causal mask is offset
    by the past length when the module runs; batch, new and past lengths vary, a past of 0 included."""
    f = TensorProto.FLOAT
    node = helper.make_node("Attention", ["q", "k", "v", "", "pk", "pv"], ["y", "present_k", "present_v"], is_causal=1)
    m = _model([node], [_vi("q", f, ["B", 2, "S", 4]), _vi("k", f, ["B", 2, "S", 4]), _vi("v", f, ["B", 2, "S", 4]),
                        _vi("pk", f, ["B", 2, "P", 4]), _vi("pv", f, ["B", 2, "P", 4])],
               [_out("y", 4), _out("present_k", 4), _out("present_v", 4)], opset=23)
    m.ir_version = 10
    feeds = []
    for b, s, p in [(1, 1, 3), (2, 3, 5), (1, 2, 0)]:
        rng = np.random.default_rng(10 * b + p)
        r = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
        feeds.append({"q": r(b, 2, s, 4), "k": r(b, 2, s, 4), "v": r(b, 2, s, 4), "pk": r(b, 2, p, 4),
                      "pv": r(b, 2, p, 4)})
    _check(m, feeds)


def test_axes_read_at_run_time_do_not_export_and_say_so(tmp_path):
    """Axes read when the model runs have no ONNX lowering yet: a typed error naming each node, and no file."""
    m = _model([helper.make_node("ReduceSum", ["x", "axes"], ["y"]), helper.make_node("Unsqueeze", ["y", "u"], ["z"])],
               [_vi("x", TensorProto.FLOAT, [2, 3, 4]), _vi("axes", TensorProto.INT64, [1]),
                _vi("u", TensorProto.INT64, [1])], [_out("z", 4)])
    g = bridge.from_onnx(m)
    path = tmp_path / "m.onnx"
    with pytest.raises(UnsupportedOpError) as e:
        bridge.to_onnx(g, str(path), args=(torch.from_numpy(X), torch.tensor([1]), torch.tensor([0])))
    msg = str(e.value)
    assert "op 'sum' takes its dim from a value read when the model runs" in msg
    assert "op 'unsqueeze' takes its dim" in msg
    assert not path.exists()


def test_symbols_in_the_ir_not_the_example():
    m = _model([helper.make_node("Reshape", ["x", "shape"], ["y"])],
               [_vi("x", TensorProto.FLOAT, [2, 3, 4]), _vi("shape", TensorProto.INT64, [2])],
               [_out("y", 2)])
    g = bridge.from_onnx(m)
    out = g.outputs[0].spec
    assert all(isinstance(d, str) for d in out.shape), out  # two symbols known when it runs


# ---- real files: dynamic batch and sequence -------------------------------------------------------------------
def _transformers():
    return pytest.importorskip("transformers")


def _tiny(family):
    tr = _transformers()
    torch.manual_seed(0)
    if family == "bert":
        cfg = tr.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=37, max_position_embeddings=64)
        return tr.BertModel(cfg).eval()
    cfg = tr.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64, use_cache=False)
    return tr.GPT2LMHeadModel(cfg).eval()


class _FirstOutput(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, input_ids, attention_mask):
        return self.m(input_ids=input_ids, attention_mask=attention_mask, return_dict=False)[0]


def _tokens(b, n):
    g = torch.Generator().manual_seed(100 * b + n)
    mask = torch.ones(b, n, dtype=torch.int64)
    mask[0, -2:] = 0  # padding in the first row
    return torch.randint(0, 100, (b, n), generator=g), mask


def _export(family, exporter, path):
    """A tiny HF ``family`` model exported with dynamic batch and sequence by ``exporter`` to ``path``."""
    model = _FirstOutput(_tiny(family)).eval()
    args = _tokens(2, 7)
    logging.disable(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if exporter == "bridge":
                dims = {0: "batch", 1: "seq"}
                bridge.to_onnx(model, path, args=args, dynamic={"input_ids": dims, "attention_mask": dims})
            elif exporter == "legacy":
                dims = {0: "batch", 1: "seq"}
                torch.onnx.export(model, args, path, dynamo=False, input_names=["input_ids", "attention_mask"],
                                  dynamic_axes={"input_ids": dims, "attention_mask": dims})
            else:
                b, s = torch.export.Dim("batch"), torch.export.Dim("seq")
                torch.onnx.export(model, args, path, dynamo=True, dynamic_shapes=({0: b, 1: s}, {0: b, 1: s}))
        finally:
            logging.disable(logging.NOTSET)


def _matches_onnxruntime_at_other_sizes(run, path):
    """``run(input_ids, attention_mask)`` equals onnxruntime on the file at the example's size and two others."""
    sess = ort.InferenceSession(path)
    for b, n in [(2, 7), (3, 11), (1, 5)]:
        ids, mask = _tokens(b, n)
        ref = sess.run(None, {i.name: t.numpy() for i, t in zip(sess.get_inputs(), (ids, mask))})[0]
        got = run(ids, mask)
        got = (got[0] if isinstance(got, (tuple, list)) else got).detach().numpy()
        assert got.shape == ref.shape == (b, n, ref.shape[-1])
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("exporter", ["bridge", "legacy", "dynamo"])
@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_dynamic_sequence_transformer_files_import_and_run_at_other_sizes(family, exporter, tmp_path):
    path = str(tmp_path / "m.onnx")
    _export(family, exporter, path)
    _matches_onnxruntime_at_other_sizes(bridge.from_onnx(path).to_module(), path)


def _optimized(tool, src, dst):
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        if tool == "onnxslim":
            model = pytest.importorskip("onnxslim").slim(onnx.load(src))
        else:
            model, ok = pytest.importorskip("onnxsim").simplify(onnx.load(src))
            assert ok
    onnx.save(model, dst)


@pytest.mark.parametrize("tool", ["onnxslim", "onnxsim"])
@pytest.mark.parametrize("exporter", ["bridge", "legacy", pytest.param("dynamo", marks=pytest.mark.slow)])
@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_optimizer_rewritten_files_import_run_at_other_sizes_and_export_again(family, exporter, tool, tmp_path):
    """Files rewritten by onnxslim or onnxsim (constants folded, shape arithmetic simplified, ops fused) import,
    run at other batch and sequence sizes, and export again with bridge with the symbolic dims kept."""
    src, path, again = (str(tmp_path / f) for f in ("m.onnx", "opt.onnx", "again.onnx"))
    _export(family, exporter, src)
    _optimized(tool, src, path)
    g = bridge.from_onnx(path)
    _matches_onnxruntime_at_other_sizes(g.to_module(), path)
    bridge.to_onnx(g, again, args=_tokens(2, 7))
    assert all(d.dim_param for d in onnx.load(again).graph.input[0].type.tensor_type.shape.dim)  # both symbolic
    other = ort.InferenceSession(again)
    _matches_onnxruntime_at_other_sizes(
        lambda ids, mask: torch.from_numpy(other.run(None, {"input_ids": ids.numpy(),
                                                            "attention_mask": mask.numpy()})[0]), path)


@pytest.mark.slow
@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "convnext_tiny", "vit_b_16"])
def test_torch_onnx_files_of_torchvision_models_run_at_other_batch_sizes(name, exporter, tmp_path):
    """torch.onnx files (both exporters, dynamic batch) of real torchvision architectures, random weights, import
    and match onnxruntime at batch sizes other than the example's."""
    import contextlib
    import io

    models = pytest.importorskip("torchvision.models")
    torch.manual_seed(0)
    model = getattr(models, name)().eval()
    path = str(tmp_path / "m.onnx")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        x = torch.randn(2, 3, 224, 224)
        if exporter == "legacy":
            torch.onnx.export(model, (x,), path, dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "batch"}})
        else:
            torch.onnx.export(model, (x,), path, dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch")},))
    module = bridge.from_onnx(path).to_module()
    sess = ort.InferenceSession(path)
    for batch in (1, 3):
        x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(batch))
        ref = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        got = module(x).detach().numpy()
        assert got.shape == ref.shape == (batch, 1000)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * np.abs(ref).max())
