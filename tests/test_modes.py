"""Right by default: the verbs trace a model in inference (eval) mode, as torch.onnx.export does; training mode
only when asked, with a warning naming the layers that then compute differently (issue 11)."""
from __future__ import annotations

import copy
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn

import bridge


def _net(dropout: float = 0.5):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(dropout),
                      nn.Flatten(), nn.Linear(8 * 6 * 6, 5))
    with torch.no_grad():  # running statistics far from a batch's own, so the two modes differ clearly
        m[1].running_mean.uniform_(-1, 1)
        m[1].running_var.uniform_(0.5, 2)
    return m  # a fresh module is in training mode


def _ort(proto, x):
    s = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return torch.from_numpy(s.run(None, {s.get_inputs()[0].name: x.numpy()})[0])


def _meta(proto):
    return {p.key: p.value for p in proto.metadata_props}


def test_to_onnx_exports_inference_mode_and_leaves_the_model_as_it_was():
    model = _net()
    assert model.training
    x, fresh = torch.randn(4, 3, 6, 6), torch.randn(4, 3, 6, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no training-mode warning by default
        proto = bridge.to_onnx(model, args=(x,))
    assert model.training and all(m.training for m in model.modules())
    assert _meta(proto)["bridge.training"] == "false"
    ops = {n.op_type for n in proto.graph.node}
    assert "BatchNormalization" not in ops and "Dropout" not in ops  # folded, removed: what one deploys
    ref = copy.deepcopy(model).eval()(fresh)
    torch.testing.assert_close(_ort(proto, fresh), ref, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(model.train()(fresh), ref, atol=1e-3)  # the modes do differ on this model


def test_to_onnx_training_mode_when_asked_warns_and_records_it():
    model = _net(dropout=0.0)  # batch statistics only: deterministic
    x, fresh = torch.randn(4, 3, 6, 6), torch.randn(4, 3, 6, 6)
    with pytest.warns(UserWarning, match=r"training mode: 2 layer\(s\) .*\b1\b.*\b3\b"):
        proto = bridge.to_onnx(model, args=(x,), training=True)
    assert _meta(proto)["bridge.training"] == "true"
    assert {"ReduceMean", "Sqrt"} <= {n.op_type for n in proto.graph.node}  # the batch's statistics, computed
    model.eval()  # the export leaves the caller's mode alone either way
    bridge.to_onnx(model, args=(x,), training=True)
    assert not model.training
    ref = copy.deepcopy(model).train()(fresh)  # batch statistics of the fresh batch
    torch.testing.assert_close(_ort(proto, fresh), ref, atol=1e-5, rtol=1e-4)


def test_verify_compares_in_the_mode_the_file_was_written_in(tmp_path):
    model = _net(dropout=0.0)
    x = torch.randn(4, 3, 6, 6)
    bridge.to_onnx(model, tmp_path / "eval.onnx", args=(x,))
    with pytest.warns(UserWarning):
        bridge.to_onnx(model, tmp_path / "train.onnx", args=(x,), training=True)
    running = model[1].running_mean.clone()
    for name, mode in (("eval", "inference"), ("train", "training")):
        for model_mode in (True, False):  # whatever mode the caller's model is in
            model.train(model_mode)
            rep = bridge.verify(model, tmp_path / f"{name}.onnx", (x,))
            assert rep.ok, rep
            assert any(mode in n for n in rep.notes)
            assert model.training is model_mode
    torch.testing.assert_close(model[1].running_mean, running)  # verifying never updates running statistics
    # and asked for the other mode, the comparison fails: the file holds one mode
    assert not bridge.verify(model, tmp_path / "eval.onnx", (x,), training=True, localize=False).ok


def test_analysis_verbs_see_the_inference_graph():
    model = _net()
    x = torch.randn(2, 3, 6, 6)
    s_train_model = bridge.summary(model, (x,)).to_dict()
    s_eval_model = bridge.summary(copy.deepcopy(model).eval(), (x,)).to_dict()
    assert s_train_model["totals"] == s_eval_model["totals"]
    assert model.training
    g, _ = bridge.api.as_graph(model, (x,))
    assert not g.meta["training"]
    assert all(not n.args.get("training") for n in g.nodes)
    g_train, _ = bridge.api.as_graph(copy.deepcopy(model), (x,), training=True)
    assert any(n.args.get("training") for n in g_train.nodes)


def test_to_onnx_of_a_graph_traced_in_training_mode_warns():
    model = _net(dropout=0.0)
    g = bridge.trace(model, (torch.randn(2, 3, 6, 6),))  # trace takes the model as it is, as torch.fx does
    with pytest.warns(UserWarning, match="traced in training mode"):
        bridge.to_onnx(g, optimize=False)
    np.testing.assert_equal(g.meta["training"], True)
