"""A small residual network: its skip connections reported by bridge.topology and drawn.

Two residual blocks: the first keeps the shape (an identity skip), the second halves the resolution and
doubles the channels (a 1x1 projection on the skip). bridge finds both skips, says why the model is not
a plain chain of layers, and draws the graph with every op inside its module's cluster.

    python examples/residual.py [OUT_DIR]
"""
import os
import shutil
import sys
import tempfile

import torch
import torch.nn as nn

import bridge


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class ResNet(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.layer1 = Block(16, 16)
        self.layer2 = Block(16, 32, stride=2)
        self.head = nn.Linear(32, classes)

    def forward(self, x):
        x = self.layer2(self.layer1(self.stem(x)))
        return self.head(x.mean((2, 3)))


def main(out_dir: str) -> None:
    torch.manual_seed(0)
    model = ResNet().eval()
    x = torch.randn(2, 3, 32, 32)
    g = bridge.trace(model, (x,))
    with torch.no_grad():
        err = (g.run(x) - model(x)).abs().max().item()
    print(f"traced: {len(g.nodes)} ops; max abs diff vs eager {err:.2e}")
    assert err < 1e-5

    t = bridge.topology(g)
    print(f"chain: {t.is_chain}; depth {t.depth} ops; width {t.width} live tensors")
    print(f"branch points: {', '.join('%' + v.name for v in t.branch_points)}")
    print(f"merge points:  {', '.join(n.describe() for n in t.merge_points)}")
    print(f"skip connections ({len(t.skip_connections)}):")
    for s in t.skip_connections:
        print(f"  {s}")
    print(f"as nn.Sequential: {t.sequential} ({t.why_not_sequential})")
    assert not t.is_chain and len(t.skip_connections) == 2 and len(t.merge_points) == 2
    assert {s.target.scope.path for s in t.skip_connections} == {"layer1", "layer2"}

    # drawn: the graph view (every op, clusters by module) and the layer view (the four top-level modules)
    wrote = [bridge.draw(g, os.path.join(out_dir, "residual.html")),
             bridge.draw(g, os.path.join(out_dir, "residual_layers.mmd"), depth=1)]
    if shutil.which("dot"):
        wrote.append(bridge.draw(g, os.path.join(out_dir, "residual.svg")))
    else:
        wrote.append(bridge.draw(g, os.path.join(out_dir, "residual.dot")))
        print("(graphviz is not installed: wrote DOT text instead of SVG; apt-get install graphviz)")
    print("wrote " + ", ".join(wrote))
    print(open(wrote[1]).read())


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(tmp)
