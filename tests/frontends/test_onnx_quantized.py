"""Quantized ONNX models, as onnxruntime's quantization tools write them (static QDQ and QOperator, dynamic),
import into canonical arithmetic and give onnxruntime's numbers on fresh inputs (the integer steps exactly)."""
import logging
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import bridge

quantization = pytest.importorskip("onnxruntime.quantization")


def _float_file(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, stride=2), nn.Flatten(),
                          nn.Linear(4 * 3 * 3, 10)).eval()
    path = str(tmp_path / "float.onnx")
    bridge.to_onnx(model, path, args=(torch.randn(2, 3, 8, 8),), opset=21)  # onnxruntime's quantized kernels
    return path, ort.InferenceSession(path).get_inputs()[0].name


class _Calibration(quantization.CalibrationDataReader):
    def __init__(self, name):
        gen = torch.Generator().manual_seed(1)
        self.batches = iter([{name: torch.randn(2, 3, 8, 8, generator=gen).numpy()} for _ in range(4)])

    def get_next(self):
        return next(self.batches, None)


@pytest.mark.parametrize("kind", ["static_qdq", "static_qoperator", "dynamic"])
def test_onnxruntime_quantized_models_match_onnxruntime(kind, tmp_path):
    src, name = _float_file(tmp_path)
    path = str(tmp_path / f"{kind}.onnx")
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if kind == "dynamic":
                quantization.quantize_dynamic(src, path, weight_type=quantization.QuantType.QInt8)
            else:
                fmt = quantization.QuantFormat.QDQ if kind == "static_qdq" else quantization.QuantFormat.QOperator
                quantization.quantize_static(src, path, _Calibration(name), quant_format=fmt,
                                             op_types_to_quantize=None if kind == "static_qdq" else ["Conv"])
    finally:
        logging.disable(logging.NOTSET)
    types = {n.op_type for n in onnx.load(path).graph.node}
    expected = {"static_qdq": {"QuantizeLinear", "DequantizeLinear"}, "static_qoperator": {"QLinearConv"},
                "dynamic": {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"}}[kind]
    assert expected <= types, types
    module = bridge.from_onnx(path).to_module()
    sess = ort.InferenceSession(path)
    gen = torch.Generator().manual_seed(7)
    for _ in range(2):  # fresh inputs, not the calibration data
        x = torch.randn(2, 3, 8, 8, generator=gen) * 2
        want = sess.run(None, {name: x.numpy()})[0]
        got = module(x).detach().numpy()
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * np.abs(want).max())
