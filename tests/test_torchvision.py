"""torchvision classifiers (random weights), where torchvision imports: trace, parity, ONNX export verified
in onnxruntime. The parity of the whole torchvision set is in test_zoo_parity.py; this adds ONNX."""
import pytest
import torch

import bridge

tv = pytest.importorskip("torchvision", reason="torchvision not installed")

MODELS = ["resnet18", "mobilenet_v3_small", "squeezenet1_0", "shufflenet_v2_x0_5", "regnet_y_400mf",
          "efficientnet_b0", "densenet121"]


@pytest.mark.parametrize("name", MODELS)
def test_torchvision_onnx(name, tmp_path):
    torch.manual_seed(0)
    model = getattr(tv.models, name)(weights=None).eval()
    x = torch.randn(2, 3, 64, 64)
    path = tmp_path / f"{name}.onnx"
    bridge.to_onnx(model, path, args=(x,), dynamic={"x": {0: "batch"}})
    rep = bridge.verify(model, path, (torch.randn(3, 3, 64, 64),))
    assert rep.ok, str(rep)
