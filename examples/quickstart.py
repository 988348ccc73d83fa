"""Trace a small CNN with a residual connection, print its graph, run it, and check it against eager PyTorch.

    python examples/quickstart.py
"""
import torch
import torch.nn as nn

import bridge


class Block(nn.Module):
    """conv-bn-relu-conv-bn, plus the input: the skip connection makes this a graph, not a chain."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(ch)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(ch)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + x)


class SmallResNet(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.block = Block(16)
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        x = self.block(torch.relu(self.stem(x)))
        return self.head(x.mean(dim=(2, 3)))


def main() -> None:
    torch.manual_seed(0)
    model = SmallResNet().eval()
    x = torch.randn(2, 3, 32, 32)

    # the batch dim is symbolic, so the graph runs on any batch size
    g = bridge.trace(model, (x,), dynamic={"x": {0: "batch"}})
    print(g)

    for batch in (2, 5):
        xb = torch.randn(batch, 3, 32, 32)
        with torch.no_grad():
            want, got = model(xb), g.run(xb)
        err = (got - want).abs().max().item()
        print(f"batch {batch}: output {tuple(got.shape)}, max |bridge - eager| = {err:.2e}")
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)

    m = g.to_module()  # an ordinary nn.Module with the same state_dict keys
    assert set(m.state_dict()) == set(model.state_dict())
    print(f"{len(g.nodes)} nodes, {sum(p.numel() for p in model.parameters())} parameters: parity OK")


if __name__ == "__main__":
    main()
