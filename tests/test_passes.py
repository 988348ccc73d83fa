"""Inference passes used by ONNX export: each on a small hand-checked graph and with parity on a CNN."""
import torch
import torch.nn as nn

import bridge
from bridge.passes import PassManager, run_passes


def close(a, b):
    torch.testing.assert_close(a, b, atol=1e-5 * max(1.0, b.abs().max().item()), rtol=1e-5)


class ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(4, 6)
        self.bn1d = nn.BatchNorm1d(6)
        self.register_buffer("offset", torch.arange(6.0))
        with torch.no_grad():
            for bn in (self.bn, self.bn1d):
                bn.running_mean.uniform_(-1, 1)
                bn.running_var.uniform_(0.5, 2.0)
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.5, 0.5)

    def forward(self, x):
        y = self.drop(torch.relu(self.bn(self.conv(x)))).mean((2, 3))
        y * 3  # dead
        return self.bn1d(self.fc(y)) + (self.offset * 2 + 1)


def test_inference_passes_fold_fuse_and_remove_with_parity():
    torch.manual_seed(0)
    m = ConvBN().eval()
    x = torch.randn(2, 3, 8, 8)
    g = bridge.trace(m, (x,))
    ops = [n.op for n in g.nodes]
    assert ops.count("batch_norm") == 2 and "dropout" in ops
    opt = run_passes(g, ["remove_dropout", "remove_identity", "fuse_bn", "fold", "dce"])
    opt.check()
    assert [n.op for n in opt.nodes] == ["conv", "relu", "mean", "linear", "add"]
    # offset * 2 + 1 was folded into one constant; the fused conv keeps the layer's weight name
    assert opt.nodes[-1].args["other"].const is not None
    assert opt.nodes[0].args["weight"].name == "conv.weight" and opt.nodes[0].args["bias"] is not None
    close(opt.run(x), m(x))
    # the original graph is untouched (run_passes copies)
    assert [n.op for n in g.nodes] == ops


def test_pass_manager_reports_change_and_reaches_fixpoint():
    m = nn.Sequential(nn.Linear(4, 4), nn.Dropout(), nn.Identity(), nn.ReLU()).eval()
    g = bridge.trace(m, (torch.randn(2, 4),))
    g2, changed = PassManager(["remove_dropout", "remove_identity", "dce"])(g.copy())
    assert changed and [n.op for n in g2.nodes] == ["linear", "relu"]
    g3, changed = PassManager(["remove_dropout", "remove_identity", "dce"])(g2)
    assert not changed


def test_dce_keeps_training_batchnorm_side_effects():
    nn.Sequential(nn.BatchNorm1d(3)).train()
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm1d(3)

        def forward(self, x):
            self.bn(x)  # result unused, running stats still update
            return x + 1
    g = bridge.trace(M().train(), (torch.randn(4, 3),))
    g2 = run_passes(g, ["dce"])
    assert "batch_norm" in [n.op for n in g2.nodes]
