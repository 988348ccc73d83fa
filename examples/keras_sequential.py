"""A Keras-style Sequential model, seen both ways, exported to ONNX and run in onnxruntime.

    Linear 64 + ReLU -> Linear 32 + ReLU -> Linear 10 + Softmax

The layer view (one box per layer, as Keras' model.summary() lists them) and the graph view (one node per
op) come from the same traced graph; both are printed as Mermaid and written side by side in one HTML page.
The ONNX file runs in onnxruntime with the same numbers as eager PyTorch.

    python examples/keras_sequential.py [OUT_DIR]
"""
import os
import sys
import tempfile

import numpy as np
import onnxruntime as ort
import torch
import torch.nn as nn

import bridge


def make() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(20, 64), nn.ReLU(),
        nn.Linear(64, 32), nn.ReLU(),
        nn.Linear(32, 10), nn.Softmax(dim=-1),
    )


def main(out_dir: str) -> None:
    torch.manual_seed(0)
    model = make().eval()
    x = torch.randn(8, 20)
    g = bridge.trace(model, (x,), dynamic={"input": {0: "batch"}})

    print("graph view (one line per op):")
    print(g, "\n")
    layer = bridge.draw(g, os.path.join(out_dir, "sequential_layers.mmd"), depth=1)
    graph = bridge.draw(g, os.path.join(out_dir, "sequential_graph.mmd"))
    print("layer view (Mermaid, depth 1):")
    print(open(layer).read())
    page = bridge.draw(g, os.path.join(out_dir, "sequential.html"))
    print(f"both views side by side: {page}")
    params = sum(p.numel() for p in model.parameters())
    print(f"params: {params} (20*64+64 + 64*32+32 + 32*10+10 = {20 * 64 + 64 + 64 * 32 + 32 + 32 * 10 + 10})")
    assert params == 3754 and open(graph).read().count("-->") == len(g.nodes) + 1

    path = os.path.join(out_dir, "sequential.onnx")
    proto = bridge.to_onnx(g, path)
    print(f"\nONNX: {path}: " + ", ".join(n.op_type for n in proto.graph.node))
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    x2 = torch.randn(5, 20)  # another batch size: the batch dim is symbolic
    (got,) = session.run(None, {session.get_inputs()[0].name: x2.numpy()})
    with torch.no_grad():
        want = model(x2).numpy()
    err = float(np.abs(got - want).max())
    print(f"onnxruntime vs eager on batch 5: output {got.shape}, max abs diff {err:.2e}")
    print(f"softmax rows sum to 1: {np.allclose(got.sum(-1), 1, atol=1e-6)}")
    assert err < 1e-5 and got.shape == (5, 10)
    print("parity OK")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(tmp)
