"""ONNX import (bridge.from_onnx): zoo round trips against eager PyTorch, torch.onnx files against onnxruntime,
state_dict names, output structure, symbolic dims, re-export, typed errors and the CLI."""
from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import sys
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import TensorProto, helper

import bridge
from bridge import zoo
from bridge.cli import main
from bridge.frontends.onnx import supported_op_types
from bridge.frontends.signature import InputBinding
from tests.helpers import assert_same_outputs, import_matches_onnxruntime, tensor_leaves

ENTRIES = zoo.entries(exclude_tags=("slow", "torchvision"))
# models torch.onnx.export (TorchScript, opset 17) cannot write: adaptive 1-d pools with uneven sizes, keyword
# inputs, a dataclass output
TS_FAILS = {"conv1d_net", "pooling", "multi_input", "dataclass_output"}


def _plain(o):
    """The structure ONNX import can restore: a dataclass as a dict of its fields, a namedtuple as a tuple."""
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return {f.name: _plain(getattr(o, f.name)) for f in dataclasses.fields(o)}
    if isinstance(o, tuple):
        return tuple(_plain(x) for x in o)
    if isinstance(o, list):
        return [_plain(x) for x in o]
    if isinstance(o, dict):
        return {k: _plain(v) for k, v in o.items()}
    return o


def _case(entry, batch=None):
    model = entry.make_model()
    args, kwargs = entry.make_inputs(batch or entry.batch)
    return model, args, kwargs


def _feed(model, args, kwargs, proto) -> dict:
    """The model's tensor inputs by the file's input names."""
    b = InputBinding(model, args, kwargs)
    by_name = dict(zip(b.names, b.examples))
    return {i.name: by_name[i.name] for i in proto.graph.input}


def _eager(model, args, kwargs):
    with torch.no_grad():
        return model(*args, **kwargs)


def _ort(proto, feeds: list[torch.Tensor]) -> list[torch.Tensor]:
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    return [torch.from_numpy(np.asarray(r)) for r in sess.run(None, {n: t.numpy() for n, t in zip(names, feeds)})]


def _torchscript_file(model, args, kwargs) -> onnx.ModelProto:
    f = io.BytesIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript exporter deprecation and tracer warnings
        torch.onnx.export(model, args, f, kwargs=kwargs, dynamo=False, opset_version=17)
    return onnx.load_from_string(f.getvalue())


# ---- round trips over the zoo ------------------------------------------------------------------------
@pytest.mark.parametrize("opset", [17, None], ids=["opset17", "default"])
@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_zoo_round_trip(entry, opset):
    """bridge.to_onnx -> from_onnx -> module equals eager, with the model's output structure."""
    model, args, kwargs = _case(entry)
    proto = bridge.to_onnx(model, args=args, kwargs=kwargs, opset=opset)
    g = bridge.from_onnx(proto)
    g.check()
    assert not g.opaque_nodes()
    got = g.to_module()(**_feed(model, args, kwargs, proto))
    assert_same_outputs(_plain(got), _plain(_eager(model, args, kwargs)))


@pytest.mark.parametrize("name", ["resnet_mini", "vgg_mini", "transformer_encoder", "pad_shuffle_upsample",
                                  "inplace_ops", "causal_attention"])
def test_dynamic_batch_file_runs_at_two_batch_sizes(name, tmp_path):
    """A dynamic-batch file (its Shape -> Gather -> Reshape arithmetic included) imports with the symbol and runs
    at batch sizes other than the example's."""
    entry = zoo.get(name)
    model, args, kwargs = _case(entry)
    path = tmp_path / f"{name}.onnx"
    proto = bridge.to_onnx(model, path, args=args, kwargs=kwargs, dynamic=entry.dynamic)
    g = bridge.from_onnx(path)
    syms = [d for v in g.inputs for d in v.spec.shape if isinstance(d, str)]
    assert syms, "the dim_param should stay symbolic"
    m = g.to_module()
    for batch in (3, 5):
        model_b, args_b, kwargs_b = _case(entry, batch)
        assert_same_outputs(_plain(m(**_feed(model_b, args_b, kwargs_b, proto))),
                            _plain(_eager(model_b, args_b, kwargs_b)))


def test_dim_param_is_a_symbol():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Mul", ["r", "two"], ["y"])]
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    proto = helper.make_model(helper.make_graph(nodes, "tiny", [x], [y], initializer=[two]),
                              opset_imports=[helper.make_opsetid("", 17)])
    g = bridge.from_onnx(proto)
    assert g.inputs[0].name == "x" and g.inputs[0].spec.shape == ("N", 4)
    assert g.outputs[0].spec.shape == ("N", 4)
    for n in (3, 7):
        t = torch.randn(n, 4, generator=torch.Generator().manual_seed(n))
        assert_same_outputs(g.run(t), torch.relu(t) * 2)


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e.name not in TS_FAILS], ids=lambda e: e.name)
def test_torchscript_files_match_onnxruntime(entry):
    """Files torch.onnx.export (dynamo=False, opset 17) writes: imported and run, equal to onnxruntime on the
    same file."""
    model, args, kwargs = _case(entry)
    proto = _torchscript_file(model, args, kwargs)
    inputs = [a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor)]
    g = bridge.from_onnx(proto)
    g.check()
    got = g.to_module()(*inputs)
    got = list(got) if isinstance(got, (tuple, list)) else [got]
    assert_same_outputs(got, _ort(proto, inputs), atol=1e-5)


def test_torchscript_file_names_and_weights():
    """A foreign file's initializers become parameters under their (sanitized) names, with their values."""
    model, args, kwargs = _case(zoo.get("resnet_mini"))
    proto = _torchscript_file(model, args, kwargs)
    sd = bridge.from_onnx(proto).to_module().state_dict()
    inits = {t.name for t in proto.graph.initializer}
    assert "fc.weight" in sd and "fc.weight" in inits
    assert torch.equal(sd["fc.weight"], model.state_dict()["fc.weight"])


# ---- names, structure ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["resnet_mini", "tied_weights", "shared_module", "norm_mix", "lstm_tagger",
                                  "transformer_encoder", "dict_output", "mha"])
def test_state_dict_keys_come_back(name):
    """A file bridge wrote (without inference folding) gives back the model's state_dict keys and values; tied
    weights stay one tensor under both names; running statistics are buffers."""
    model, args, kwargs = _case(zoo.get(name))
    proto = bridge.to_onnx(model, args=args, kwargs=kwargs, optimize=False)
    m = bridge.from_onnx(proto).to_module()
    ref = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    sd = m.state_dict()
    assert sorted(sd) == sorted(ref)
    for k in ref:
        assert torch.equal(sd[k], ref[k]), k
    params = {n for n, _ in m.named_parameters(remove_duplicate=False)}
    assert params == {n for n, _ in model.named_parameters(remove_duplicate=False)}


def test_output_structure_restored():
    model, args, kwargs = _case(zoo.get("dict_output"))
    out = bridge.from_onnx(bridge.to_onnx(model, args=args, kwargs=kwargs)).run(*args)
    ref = _eager(model, args, kwargs)
    assert isinstance(out, dict) and list(out) == list(ref)
    assert_same_outputs(out, ref)


# ---- re-export -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["resnet_mini", "lstm_tagger", "transformer_encoder", "pad_shuffle_upsample",
                                  "dict_output"])
def test_reexport_runs_in_onnxruntime(name):
    """bridge.to_onnx(from_onnx(f)) runs in onnxruntime with the outputs of the original model and file."""
    model, args, kwargs = _case(zoo.get(name))
    proto = bridge.to_onnx(model, args=args, kwargs=kwargs)
    again = bridge.to_onnx(bridge.from_onnx(proto))
    feeds = list(_feed(model, args, kwargs, proto).values())
    assert_same_outputs(_ort(again, feeds), tensor_leaves(_eager(model, args, kwargs)))


def test_reexport_of_a_torchscript_file():
    model, args, kwargs = _case(zoo.get("bigru"))
    proto = _torchscript_file(model, args, kwargs)
    inputs = [a for a in args if isinstance(a, torch.Tensor)]
    assert_same_outputs(_ort(bridge.to_onnx(bridge.from_onnx(proto)), inputs), _ort(proto, inputs))


# ---- errors -------------------------------------------------------------------------------------------------
def _tiny(nodes, opset=17, domain_ops=()):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    out = nodes[-1].output[0]
    y = helper.make_tensor_value_info(out, TensorProto.FLOAT, None)
    ops = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domain_ops]
    return helper.make_model(helper.make_graph(nodes, "tiny", [x], [y]), opset_imports=ops)


def test_truncated_file(tmp_path):
    model, args, kwargs = _case(zoo.get("mlp"))
    data = bridge.to_onnx(model, args=args).SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(bridge.OnnxError, match="cut.onnx"):
        bridge.from_onnx(path)


def test_random_bytes_and_bad_paths(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    with pytest.raises(bridge.OnnxError, match="not a readable ONNX model|not an ONNX model"):
        bridge.from_onnx(noise)
    path = tmp_path / "noise.onnx"
    path.write_bytes(noise)
    with pytest.raises(bridge.OnnxError, match="noise.onnx"):
        bridge.from_onnx(path)
    with pytest.raises(bridge.OnnxError, match="does not exist"):
        bridge.from_onnx(tmp_path / "missing.onnx")
    with pytest.raises(bridge.OnnxError, match="expects a path"):
        bridge.from_onnx(12)


def test_every_unsupported_op_listed_at_once():
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="r"),
             helper.make_node("NonMaxSuppression", ["a", "a"], ["b"], name="u1"),
             helper.make_node("NonMaxSuppression", ["b", "b"], ["c"], name="u2"),
             helper.make_node("Det", ["c"], ["d"], name="det"),
             helper.make_node("FancyOp", ["d"], ["e"], name="custom", domain="my.domain")]
    with pytest.raises(bridge.UnsupportedOpError) as ei:
        bridge.from_onnx(_tiny(nodes, domain_ops=("my.domain",)))
    msg = str(ei.value)
    assert "3 ONNX op type(s)" in msg
    assert "NonMaxSuppression: 2 node(s), e.g. 'u1'" in msg and "Det: 1 node(s), e.g. 'det'" in msg
    assert "my.domain::FancyOp" in msg
    assert ei.value.nodes == ["NonMaxSuppression", "Det", "my.domain::FancyOp"]


def test_unsupported_attributes_name_the_node():
    nodes = [helper.make_node("Dropout", ["x", "", "training"], ["y"], name="dm")]
    model = _tiny(nodes)
    model.graph.initializer.append(helper.make_tensor("training", TensorProto.BOOL, [], [True]))
    with pytest.raises(bridge.UnsupportedOpError, match="'dm' \\(Dropout.*training mode"):
        bridge.from_onnx(model)


def test_old_opset_converted_or_refused_clearly(monkeypatch):
    """Opset 9 is converted to 13 first; where onnx's version converter fails, an OnnxError says so."""
    model = _tiny([helper.make_node("Relu", ["x"], ["y"])], opset=9)
    x = torch.randn(2, 3)
    torch.testing.assert_close(bridge.from_onnx(model).run(x), torch.relu(x))
    from onnx import version_converter

    def broken(*a, **k):
        raise RuntimeError("No adapter for this op")

    monkeypatch.setattr(version_converter, "convert_version", broken)
    with pytest.raises(bridge.OnnxError, match="opset 9.*version converter could not convert it.*No adapter"):
        bridge.from_onnx(model)


def test_supported_op_types_cover_the_exporters():
    ops = set(supported_op_types())
    # every op type bridge, torch.onnx (TorchScript, opsets 17/18) and torch.onnx (dynamo) write for the zoo
    emitted = {"Abs", "Add", "ArgMax", "AveragePool", "BatchNormalization", "Cast", "Clip", "Compress", "Concat",
               "Constant", "ConstantOfShape", "Conv", "ConvTranspose", "DepthToSpace", "Div", "Einsum", "Elu",
               "Equal", "Erf", "Expand", "Flatten", "GRU", "Gather", "GatherElements", "GatherND", "Gelu", "Gemm",
               "GlobalAveragePool", "GlobalMaxPool", "Greater", "GroupNormalization", "HardSigmoid", "HardSwish",
               "Identity", "InstanceNormalization", "IsNaN", "LSTM", "LayerNormalization", "LeakyRelu", "Less",
               "LogSoftmax", "MatMul", "MaxPool", "Min", "Mod", "Mul", "NonZero", "Pad", "Pow", "Range",
               "ReduceL2", "ReduceMax", "ReduceMean", "ReduceSum", "Relu", "Reshape", "Resize", "ScatterElements",
               "ScatterND", "Shape", "Sigmoid", "Sign", "Size", "Slice", "Softmax", "Softplus", "SpaceToDepth",
               "Split", "Sqrt", "Squeeze", "Tanh", "Tile", "TopK", "Transpose", "Trilu", "Unsqueeze", "Where"}
    assert emitted <= ops, sorted(emitted - ops)


# ---- CLI ------------------------------------------------------------------------------------------------
def test_cli_inspect_onnx_file(tmp_path, capsys):
    model, args, _ = _case(zoo.get("mlp"))
    path = tmp_path / "mlp.onnx"
    bridge.to_onnx(model, path, args=args, dynamic={"x": {0: "batch"}})
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "graph(%x: f32[batch, 16])" in out and "linear(%x, %fc1.weight, %fc1.bias)" in out
    assert main(["inspect", str(path), "--input", "2,16"]) == 2
    assert "ONNX file" in capsys.readouterr().err
    (tmp_path / "bad.onnx").write_bytes(b"\x00garbage")
    assert main(["inspect", str(tmp_path / "bad.onnx")]) == 2
    assert "bad.onnx" in capsys.readouterr().err
    assert os.path.exists(path)


def test_batchnorm_momentum_and_trainable_parameters_come_back():
    """ONNX's momentum weighs the old statistics (torch's the new batch), and imported weights are trainable."""
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=0.3), nn.ReLU()).eval()
    x = torch.randn(2, 3, 8, 8)
    proto = bridge.to_onnx(m, None, args=(x,), optimize=False)
    (bn,) = [n for n in proto.graph.node if n.op_type == "BatchNormalization"]
    assert abs(onnx.helper.get_attribute_value(bn.attribute[[a.name for a in bn.attribute].index("momentum")])
               - 0.7) < 1e-6
    g = bridge.from_onnx(proto)
    assert [round(n.args["momentum"], 6) for n in g.nodes if n.op == "batch_norm"] == [0.3]
    mod = g.to_module()
    assert all(p.requires_grad for p in mod.parameters()) and len(list(mod.parameters())) == 4
    torch.testing.assert_close(mod(x), m(x))


# ---- single ops against onnxruntime -------------------------------------------------------------------------
def _i64(name, vals):
    return helper.make_tensor(name, TensorProto.INT64, [len(vals)], vals)


_F = TensorProto.FLOAT
_SINGLE_OPS = {  # id: (opset, nodes, initializers, output elem type)
    "sum3": (17, [helper.make_node("Sum", ["x", "x", "x"], ["y"])], [], _F),
    "max2": (17, [helper.make_node("Max", ["x", "c"], ["y"])], [helper.make_tensor("c", _F, [4], [0, .5, -1, 2])], _F),
    "min1": (17, [helper.make_node("Min", ["x"], ["y"])], [], _F),
    "reduce_mean_attr_axes": (13, [helper.make_node("ReduceMean", ["x"], ["y"], axes=[1, -1], keepdims=0)], [], _F),
    "reduce_mean_input_axes": (18, [helper.make_node("ReduceMean", ["x", "ax"], ["y"], keepdims=1)],
                               [_i64("ax", [0, 2])], _F),
    "reduce_sum_input_axes": (13, [helper.make_node("ReduceSum", ["x", "ax"], ["y"], keepdims=0)], [_i64("ax", [1])],
                              _F),
    "reduce_sumsq_all": (17, [helper.make_node("ReduceSumSquare", ["x"], ["y"])], [], _F),
    "reduce_prod_attr": (17, [helper.make_node("ReduceProd", ["x"], ["y"], axes=[0, 1], keepdims=0)], [], _F),
    "clip_const": (17, [helper.make_node("Clip", ["x", "lo", "hi"], ["y"])],
                   [helper.make_tensor("lo", _F, [], [-0.5]), helper.make_tensor("hi", _F, [], [0.7])], _F),
    "softmax_axis1": (13, [helper.make_node("Softmax", ["x"], ["y"], axis=1)], [], _F),
    "log_softmax_last": (17, [helper.make_node("LogSoftmax", ["x"], ["y"])], [], _F),
    "pad_reflect": (17, [helper.make_node("Pad", ["x", "p"], ["y"], mode="reflect")], [_i64("p", [0, 1, 2, 0, 1, 1])],
                    _F),
    "pad_axes": (18, [helper.make_node("Pad", ["x", "p", "v", "ax"], ["y"])],
                 [_i64("p", [1, 2]), helper.make_tensor("v", _F, [], [3.0]), _i64("ax", [-1])], _F),
    "split_sizes": (13, [helper.make_node("Split", ["x", "s"], ["y", "z"], axis=2)], [_i64("s", [1, 3])], _F),
    "split_even": (13, [helper.make_node("Split", ["x"], ["y", "z"], axis=0)], [], _F),
    "gather_2d_known_index": (17, [helper.make_node("Gather", ["x", "i"], ["y"], axis=2)],
                              [helper.make_tensor("i", TensorProto.INT64, [2, 2], [0, -1, 3, 1])], _F),
    "gather_nd_runtime_index": (17, [helper.make_node("ArgMax", ["x"], ["i"], axis=2),
                                     helper.make_node("Gather", ["x", "i"], ["y"], axis=2)], [], _F),
    "conv_transpose_sym_pads": (17, [helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2], pads=[1, 1])],
                                [helper.make_tensor("w", _F, [3, 2, 3], [0.1 * i - 0.8 for i in range(18)])], _F),
    "conv_transpose_end_pads": (17, [helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], strides=[2],
                                                      pads=[0, 2], output_padding=[1])],
                                [helper.make_tensor("w", _F, [3, 2, 3], [0.1 * i - 0.8 for i in range(18)]),
                                 helper.make_tensor("b", _F, [2], [0.5, -1.0])], _F),
    "avg_pool_asym_pads_counted": (17, [helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3], pads=[0, 2],
                                                         count_include_pad=1)], [], _F),
    "max_pool_asym_pads": (17, [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2], pads=[1, 0])], [], _F),
    "lstm_plain_activations": (17, [helper.make_node("LSTM", ["x", "w", "r"], ["y"], hidden_size=2,
                                                     direction="bidirectional",
                                                     activations=["Sigmoid", "Tanh", "Tanh"] * 2)],
                               [helper.make_tensor("w", _F, [2, 8, 4], [0.05 * (i % 13) - 0.3 for i in range(64)]),
                                helper.make_tensor("r", _F, [2, 8, 2], [0.07 * (i % 11) - 0.35 for i in range(32)])],
                               _F),
    # nearest Resize rounds as ONNX does (torch's nearest-exact rounds halves up: a downsample by 2 is all ties)
    "resize_nearest_default_modes_ties": (19, [helper.make_node("Resize", ["x", "", "", "s"], ["y"])],
                                          [_i64("s", [2, 3, 2])], _F),
    "resize_nearest_align_corners_ceil": (19, [helper.make_node("Resize", ["x", "", "sc"], ["y"],
                                                                coordinate_transformation_mode="align_corners",
                                                                nearest_mode="ceil")],
                                          [helper.make_tensor("sc", _F, [3], [1.0, 1.0, 2.5])], _F),
    "resize_nearest_asymmetric_round_prefer_ceil": (19, [helper.make_node(
        "Resize", ["x", "", "", "s"], ["y"], coordinate_transformation_mode="asymmetric",
        nearest_mode="round_prefer_ceil")], [_i64("s", [2, 3, 7])], _F),
    "resize_linear_downsample_half_pixel": (19, [helper.make_node("Resize", ["x", "", "", "s"], ["y"], mode="linear")],
                                            [_i64("s", [2, 3, 3])], _F),
    "scatter_nd_add_negative_index": (18, [helper.make_node("ScatterND", ["x", "i", "u"], ["y"], reduction="add")],
                                      [helper.make_tensor("i", TensorProto.INT64, [3, 2], [0, -1, 1, 2, 0, -3]),
                                       helper.make_tensor("u", _F, [3, 4], [float(k) for k in range(12)])], _F),
    "scatter_nd_max_repeated_slot": (18, [helper.make_node("ScatterND", ["x", "i", "u"], ["y"], reduction="max")],
                                     [helper.make_tensor("i", TensorProto.INT64, [3, 1], [1, -1, 1]),
                                      helper.make_tensor("u", _F, [3, 3, 4], [0.1 * k - 1.5 for k in range(36)])], _F),
}


@pytest.mark.parametrize("case", list(_SINGLE_OPS))
def test_single_ops_match_onnxruntime(case):
    """One-node files at the opsets where their inputs moved (axes/split as attributes or inputs): equal to
    onnxruntime on the same file."""
    opset, nodes, inits, elem = _SINGLE_OPS[case]
    x = helper.make_tensor_value_info("x", _F, [2, 3, 4])
    outs = [helper.make_tensor_value_info(o, elem, None) for o in nodes[-1].output]
    proto = helper.make_model(helper.make_graph(nodes, case, [x], outs, initializer=inits),
                              opset_imports=[helper.make_opsetid("", opset)])
    t = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0))
    g = bridge.from_onnx(proto)
    g.check()
    got = g.run(t)
    assert_same_outputs(list(got) if isinstance(got, (tuple, list)) else [got], _ort(proto, [t]), atol=1e-6)


@pytest.mark.parametrize("attrs, size", [
    ({"mode": "linear", "antialias": 1}, 2),
    ({"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"}, 1)])
def test_resize_torch_would_compute_differently_is_refused(attrs, size):
    """Resize cases where torch's interpolate gives other numbers than onnxruntime (its antialias filter when
    downsampling; pytorch_half_pixel to one position, which ONNX reads at 0): refused, naming why."""
    node = helper.make_node("Resize", ["x", "", "", "s"], ["y"], **attrs)
    proto = helper.make_model(helper.make_graph([node], "r", [helper.make_tensor_value_info("x", _F, [1, 1, 4])],
                                                [helper.make_tensor_value_info("y", _F, None)],
                                                initializer=[_i64("s", [1, 1, size])]),
                              opset_imports=[helper.make_opsetid("", 19)])
    with pytest.raises(bridge.UnsupportedOpError, match="antialias|pytorch_half_pixel"):
        bridge.from_onnx(proto)


def test_shape_of_a_symbolic_dim_as_an_output():
    """A graph output that is a shape followed as sizes (Dims) becomes a tensor with the run-time sizes."""
    x = helper.make_tensor_value_info("x", _F, ["N", 3])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, [2])
    proto = helper.make_model(helper.make_graph([helper.make_node("Shape", ["x"], ["y"])], "shape", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    g = bridge.from_onnx(proto)
    for n in (3, 5):
        assert torch.equal(g.run(torch.zeros(n, 3)), torch.tensor([n, 3]))


def _conv_transpose_proto(pads, strides, dilations=(1,)):
    x = helper.make_tensor_value_info("x", _F, [2, 3, 4])
    y = helper.make_tensor_value_info("y", _F, None)
    w = helper.make_tensor("w", _F, [3, 2, 3], torch.randn(18).tolist())
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="ct", strides=list(strides), pads=list(pads),
                            dilations=list(dilations))
    return helper.make_model(helper.make_graph([node], "ct", [x], [y], initializer=[w]),
                             opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("pads,strides,dilations", [([2, 1], [2], [1]), ([3, 0], [2], [4]), ([1, 3], [3], [1])])
def test_conv_transpose_with_unequal_pads_imports(pads, strides, dilations):
    """ONNX cuts begin and end pads apart; torch cuts ``padding`` at both ends and gives back ``output_padding``
    at the end: larger begin pads are an output_padding, larger end pads a crop. Checked against onnxruntime."""
    torch.manual_seed(0)
    import_matches_onnxruntime(_conv_transpose_proto(pads, strides, dilations), torch.randn(2, 3, 4), atol=1e-5)


def test_conv_transpose_with_begin_pads_torch_cannot_express_is_refused():
    with pytest.raises(bridge.UnsupportedOpError, match="'ct'.*output_padding \\[2\\] torch refuses"):
        bridge.from_onnx(_conv_transpose_proto([2, 0], [2]))


def test_rnn_with_other_activations_is_refused():
    w = helper.make_tensor("w", _F, [1, 6, 4], [0.1] * 24)
    r = helper.make_tensor("r", _F, [1, 6, 2], [0.1] * 12)
    node = helper.make_node("GRU", ["x", "w", "r"], ["y"], name="gru", hidden_size=2, linear_before_reset=1,
                            activations=["Sigmoid", "Relu"])
    x = helper.make_tensor_value_info("x", _F, [2, 3, 4])
    y = helper.make_tensor_value_info("y", _F, None)
    proto = helper.make_model(helper.make_graph([node], "gru", [x], [y], initializer=[w, r]),
                              opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(bridge.UnsupportedOpError, match="'gru'.*attribute activations"):
        bridge.from_onnx(proto)


def test_models_below_opset_13_are_converted_first():
    """An opset-11 model (Squeeze, Unsqueeze and ReduceSum with axes attributes, which opset 13 made inputs; Clip
    with min/max inputs) imports through onnx's version converter and matches what onnxruntime computes on the
    original file. A model with no default-domain opset is an OnnxError."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 1, 3, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3, 1])
    nodes = [helper.make_node("Squeeze", ["x"], ["s"], axes=[1]),
             helper.make_node("ReduceSum", ["s"], ["r"], axes=[2], keepdims=1),
             helper.make_node("Unsqueeze", ["r"], ["u"], axes=[0]),
             helper.make_node("Clip", ["u", "lo", "hi"], ["y"])]
    inits = [helper.make_tensor("lo", TensorProto.FLOAT, [], [-1.0]), helper.make_tensor("hi", TensorProto.FLOAT, [],
                                                                                         [2.5])]
    model = helper.make_model(helper.make_graph(nodes, "old", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 6
    onnx.checker.check_model(model)
    feed = np.random.default_rng(0).standard_normal((2, 1, 3, 4)).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None,
                                                                                                  {"x": feed})[0]
    g = bridge.from_onnx(model)
    np.testing.assert_allclose(g.run(torch.from_numpy(feed)).numpy(), want, rtol=1e-6, atol=1e-6)
    other = np.random.default_rng(1).standard_normal((2, 1, 3, 4)).astype(np.float32) * 3
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None,
                                                                                                  {"x": other})[0]
    np.testing.assert_allclose(g.run(torch.from_numpy(other)).numpy(), want, rtol=1e-6, atol=1e-6)

    ml_only = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y]),
                                opset_imports=[helper.make_opsetid("ai.onnx.ml", 3)])
    with pytest.raises(bridge.OnnxError, match="no default-domain"):
        bridge.from_onnx(ml_only)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_torch_onnx_losses_import_and_match_eager(tmp_path, reduction):
    """F.cross_entropy and F.nll_loss (class weights, an ignored class, a spatial dim), exported by torch.onnx
    (SoftmaxCrossEntropyLoss, NegativeLogLikelihoodLoss), import and match eager PyTorch on fresh inputs."""
    class Losses(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("w", torch.tensor([0.5, 2.0, 1.0, 3.0]))

        def forward(self, logits, target):
            ce = F.cross_entropy(logits, target, weight=self.w, ignore_index=2, reduction=reduction)
            nll = F.nll_loss(logits * 0.5, target, reduction=reduction)  # not log_softmax: torch.onnx would fuse it
            return ce, nll

    model = Losses().eval()
    gen = torch.Generator().manual_seed(0)
    logits, target = torch.randn(3, 4, 5, generator=gen), torch.randint(0, 4, (3, 5), generator=gen)
    path = str(tmp_path / "loss.onnx")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (logits, target), path, dynamo=False, opset_version=17,
                          input_names=["logits", "target"])
    types = {n.op_type for n in onnx.load(path).graph.node}
    assert {"SoftmaxCrossEntropyLoss", "NegativeLogLikelihoodLoss"} <= types, types
    g = bridge.from_onnx(path)
    logits2, target2 = torch.randn(3, 4, 5, generator=gen), torch.randint(0, 4, (3, 5), generator=gen)
    target2[0, 0] = 2  # an ignored position
    assert_same_outputs(g.run(logits2, target2), model(logits2, target2))


def test_torch_onnx_attention_files_import_and_match_eager(tmp_path):
    """torch.onnx (dynamo, opset 23) writes F.scaled_dot_product_attention as ONNX Attention: with an additive
    mask, causal with more keys than queries, and grouped-query heads; the import matches eager on fresh inputs."""
    class Attn(nn.Module):
        def forward(self, q, k, v, mask, kg, vg):
            return (F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
                    F.scaled_dot_product_attention(q, k, v, is_causal=True),
                    F.scaled_dot_product_attention(q, kg, vg, enable_gqa=True, scale=0.3))

    def inputs(seed):
        gen = torch.Generator().manual_seed(seed)
        r = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
        return r(2, 4, 5, 8), r(2, 4, 6, 8), r(2, 4, 6, 8), r(5, 6), r(2, 2, 6, 8), r(2, 2, 6, 8)

    path = str(tmp_path / "attention.onnx")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(Attn(), inputs(0), path, dynamo=True, opset_version=23)
    assert [n.op_type for n in onnx.load(path).graph.node].count("Attention") == 3
    fresh = inputs(1)
    assert_same_outputs(bridge.from_onnx(path).to_module()(*fresh), Attn()(*fresh))


@pytest.mark.parametrize("direction, layout", [("forward", 0), ("bidirectional", 0), ("reverse", 1)])
def test_gru_with_reset_before_the_matmul_matches_onnxruntime(direction, layout):
    """ONNX's default GRU (linear_before_reset=0), which torch's GRU cannot express, imports written out per step
    and matches onnxruntime on an input it was not imported with (onnx's reference evaluator for layout=1, which
    onnxruntime does not run)."""
    rng = np.random.default_rng(0)
    seq, batch, feat, hid = 5, 3, 4, 6
    dirs = 2 if direction == "bidirectional" else 1
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    inits = [onnx.numpy_helper.from_array(f32(dirs, 3 * hid, feat), "W"),
             onnx.numpy_helper.from_array(f32(dirs, 3 * hid, hid), "R"),
             onnx.numpy_helper.from_array(f32(dirs, 6 * hid), "B")]
    x_shape = [batch, seq, feat] if layout else [seq, batch, feat]
    h_shape = [batch, dirs, hid] if layout else [dirs, batch, hid]
    node = helper.make_node("GRU", ["x", "W", "R", "B", "", "h0"], ["y", "y_h"], hidden_size=hid,
                            direction=direction, layout=layout)
    graph = helper.make_graph([node], "gru", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape),
                                              helper.make_tensor_value_info("h0", TensorProto.FLOAT, h_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("y_h", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    g = bridge.from_onnx(model)
    x, h0 = f32(*x_shape), f32(*h_shape)
    if layout:
        from onnx.reference import ReferenceEvaluator

        want = ReferenceEvaluator(model).run(None, {"x": x, "h0": h0})
    else:
        want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            None, {"x": x, "h0": h0})
    got = g.run(torch.from_numpy(x), torch.from_numpy(h0))
    for w, o in zip(want, got):
        np.testing.assert_allclose(o.numpy(), w, rtol=1e-5, atol=1e-5)


def test_import_benchmark_runs(tmp_path):
    """benchmarks/onnx_import.py --quick on one model: every column it reports is filled (onnx2torch's where the
    bench extra is installed)."""
    import importlib.util
    import json

    bench_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "benchmarks")
    sys.path.insert(0, bench_dir)
    try:
        spec = importlib.util.spec_from_file_location("bench_onnx_import", os.path.join(bench_dir, "onnx_import.py"))
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
        assert bench.main(["--quick", "--models", "mlp", "--json", str(tmp_path / "r.json")]) == 0
    finally:
        sys.path.remove(bench_dir)
    (row,) = json.load(open(tmp_path / "r.json"))["rows"]
    assert row["bridge_err"] < 1e-5 and row["bridge_s"] > 0 and row["torch_ms"] > 0 and row["vs_torch"] > 0
    if bench.onnx2torch is not None:
        assert row["import_speedup"] > 0 and row["onnx2torch_err"] < 1e-5
