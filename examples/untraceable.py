"""A model whose forward branches on a tensor's value, and what bridge says about it.

Neither torch.fx nor torch.export can turn python control flow on data into one graph, so
``bridge.trace`` raises ``TraceError`` naming the offending line and what to do. Following the
advice (here: keep the block whole with ``leaf_modules=``) gives a graph that runs.

    python examples/untraceable.py
"""
import torch
import torch.nn as nn

import bridge


class Gate(nn.Module):
    """Doubles positive-sum inputs, shifts the others: the branch depends on the data."""

    def forward(self, x):
        if x.sum() > 0:
            return x * 2
        return x - 1


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.gate = Gate()

    def forward(self, x):
        return self.gate(self.fc(x))


def main() -> None:
    torch.manual_seed(0)
    model = Model().eval()
    x = torch.randn(3, 4)

    try:
        bridge.trace(model, (x,))
    except bridge.TraceError as e:
        print("bridge.trace raised TraceError:\n")
        print(e)
        print(f"\n.source = {e.source}")
    else:
        raise SystemExit("expected a TraceError")

    # the advice: keep Gate whole; it becomes one opaque node that runs eagerly
    g = bridge.trace(model, (x,), leaf_modules=[Gate])
    print("\nwith leaf_modules=[Gate]:\n")
    print(g)
    for sample in (x, -x):  # both sides of the branch
        with torch.no_grad():
            torch.testing.assert_close(g.run(sample), model(sample))
    print("\nboth branches match eager PyTorch")


if __name__ == "__main__":
    main()
