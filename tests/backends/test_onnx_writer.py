"""The ONNX writer at model scale: the model is checked and serialized without its weights, each weight's bytes go
once from its tensor into the file (a folded weight computed as it is written), and the file is the model
protobuf's own encoding would give. Oracles: onnx.load, onnx.checker, onnxruntime, eager PyTorch."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from onnx import numpy_helper
from onnx.external_data_helper import load_external_data_for_model

import bridge
from bridge.backends.ort import session
from bridge.ir import Deferred
from bridge.passes import inference_passes, run_passes

from ..helpers import assert_same_outputs


class ConvNet(nn.Module):
    """conv -> batchnorm (folded: a Deferred weight), a linear, and constants on both sides of 1 KiB."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16 * 8 * 8, 10)
        self.register_buffer("offset", torch.arange(10, dtype=torch.float32))  # 40 bytes: embedded in the model
        with torch.no_grad():
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.running_var.uniform_(0.5, 2)
            self.bn.weight.uniform_(0.5, 1.5)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1)) + self.offset


@pytest.fixture
def model():
    torch.manual_seed(0)
    return ConvNet().eval()


def test_streamed_file_is_what_protobuf_serializes(model, tmp_path):
    """The file, parsed by onnx and serialized again, is byte for byte the model exported in memory: the hand-framed
    weights are protobuf's encoding of the same initializers."""
    x = torch.randn(2, 3, 8, 8)
    path = tmp_path / "m.onnx"
    bridge.to_onnx(model, path, args=(x,))
    in_memory = bridge.to_onnx(model, args=(x,))
    loaded = onnx.load(str(path))
    assert loaded.SerializeToString(deterministic=True) == in_memory.SerializeToString(deterministic=True)
    onnx.checker.check_model(str(path), full_check=True)
    fresh = torch.randn(2, 3, 8, 8)
    (got,) = session(path).run(None, {"x": fresh.numpy()})
    assert_same_outputs(torch.from_numpy(got), model(fresh).detach())


def test_returned_model_refers_to_the_bytes_in_the_file(model, tmp_path):
    x = torch.randn(1, 3, 8, 8)
    path = tmp_path / "m.onnx"
    proto = bridge.to_onnx(model, path, args=(x,))
    big = [t for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert {t.name for t in big} == {"conv.weight", "fc.weight"}  # 1 KiB or more; the rest is in the model
    assert all({e.key: e.value for e in t.external_data}["location"] == "m.onnx" for t in big)
    load_external_data_for_model(proto, str(tmp_path))  # onnx's own reader, at the offsets given
    want = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    got = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)


def test_folded_weight_is_computed_when_written_and_not_kept(model, tmp_path):
    x = torch.randn(1, 3, 8, 8)
    g = run_passes(bridge.trace(model, (x,)), inference_passes())
    (w,) = [c for c in g.constants if c.names == ["conv.weight"]]
    assert isinstance(w._const, Deferred) and not any(n.op == "batch_norm" for n in g.nodes)
    path = tmp_path / "m.onnx"
    bridge.to_onnx(g, path, optimize=False)
    assert isinstance(w._const, Deferred)  # written, not kept
    fresh = torch.randn(1, 3, 8, 8)
    (got,) = session(path).run(None, {"x": fresh.numpy()})
    assert_same_outputs(torch.from_numpy(got), model(fresh).detach())
    assert_same_outputs(g.run(fresh), model(fresh).detach())  # read by the torch path: computed once, then kept
    assert isinstance(w._const, torch.Tensor)


def test_deferred_constant_must_keep_its_promise():
    d = Deferred(lambda: torch.zeros(3, 4), (4, 3), torch.float32)
    with pytest.raises(bridge.GraphError, match="promised"):
        d.compute()


def test_external_data_file_holds_the_weights_once(model, tmp_path):
    x = torch.randn(1, 3, 8, 8)
    path = tmp_path / "m.onnx"
    proto = bridge.to_onnx(model, path, args=(x,), external_data=True)
    (data,) = [n for n in os.listdir(tmp_path) if n.endswith(".data")]
    big = [t for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert os.path.getsize(tmp_path / data) == sum(int({e.key: e.value for e in t.external_data}["length"])
                                                   for t in big)
    fresh = torch.randn(1, 3, 8, 8)
    assert bridge.verify(model, path, (fresh,)).ok


_MEMORY_CHILD = textwrap.dedent("""
    import gc, json, re, sys
    import torch, torch.nn as nn
    import bridge, bridge.backends.onnx as backend

    def mib(field):
        return int(re.search(field + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) / 1024

    torch.manual_seed(0)
    layers = []
    for _ in range(16):  # 16 x 9 MiB of conv weights, each folded with its batchnorm
        layers += [nn.Conv2d(512, 512, 3, padding=1), nn.BatchNorm2d(512), nn.ReLU()]
    model = nn.Sequential(*layers).eval()
    x = torch.randn(1, 512, 4, 4)
    with torch.no_grad():
        model(x)
    backend.max_opset()  # imports and onnxruntime's probe are not the writer's memory
    bridge.to_onnx(nn.Linear(2, 2), sys.argv[1] + ".warm.onnx", args=(torch.randn(1, 2),))
    gc.collect()
    open("/proc/self/clear_refs", "w").write("5")
    base = mib("VmRSS")
    bridge.to_onnx(model, sys.argv[1], args=(x,))
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    print(json.dumps({"extra": mib("VmHWM") - base, "weights": weights}))
""")


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="peak memory is read from Linux's /proc")
def test_export_holds_no_second_copy_of_the_weights(tmp_path):
    """Peak resident memory of an export above the model's own, in a fresh process: below half the weight bytes
    (the old writer held the weights three times over: in the model proto, the checked copy, the serialization)."""
    out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(tmp_path / "m.onnx")], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["weights"] > 140
    assert r["extra"] < 0.5 * r["weights"], r
