"""A model whose forward takes a different path depending on the data, and what bridge says about it.

A graph is static: the same ops run for every input. ``if h.mean() > 0:`` picks ops by a tensor's value,
which neither torch.fx nor torch.export can record, so ``bridge.trace`` raises ``TraceError`` naming the
line. Two ways out, both checked against eager PyTorch on inputs that take each branch:

1. ``torch.cond``: the branch becomes one node that holds both sides (bridge keeps it as an opaque node that
   runs eagerly), so the data still picks the path at run time;
2. compute both sides and select with ``torch.where``: an ordinary static graph of ops that exports to ONNX.

(Control flow on *shapes*, e.g. ``if x.shape[0] > 4``, is a different matter: it is fixed at trace time, and
``dynamic=`` makes the dim symbolic; see docs/concepts.md.)

    python examples/dynamic_control_flow.py
"""
import os
import tempfile

import torch
import torch.nn as nn

import bridge


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        h = self.fc(x)
        if h.mean() > 0:  # python control flow on a tensor's value
            return h * 2
        return h - 1


class WithCond(Branchy):
    def forward(self, x):
        h = self.fc(x)
        return torch.cond(h.mean() > 0, lambda t: t * 2, lambda t: t - 1, (h,))


class WithWhere(Branchy):
    def forward(self, x):
        h = self.fc(x)
        return torch.where(h.mean() > 0, h * 2, h - 1)


def inputs(model):
    """One input per branch: scaled so that fc's output mean is positive, then negative."""
    x = torch.randn(3, 4)
    with torch.no_grad():
        base = model.fc(x).mean()
        shift = (model.fc.weight.sum(0) @ torch.ones(4)) / 4  # d mean / d (x + c) per unit c
    pos, neg = x + (1 - base) / shift, x + (-1 - base) / shift
    assert model.fc(pos).mean() > 0 > model.fc(neg).mean()
    return pos, neg


def main() -> None:
    torch.manual_seed(0)
    model = Branchy().eval()
    pos, neg = inputs(model)
    try:
        bridge.trace(model, (pos,))
    except bridge.TraceError as e:
        print("bridge.trace(Branchy) raised TraceError:\n")
        print(e)
        print(f"\n.source = {e.source}")
    else:
        raise SystemExit("expected a TraceError")

    for fix in (WithCond, WithWhere):
        m = fix().eval()
        m.load_state_dict(model.state_dict())
        g = bridge.trace(m, (pos,))
        print(f"\n{fix.__name__}: {len(g.nodes)} ops, {len(g.opaque_nodes())} opaque")
        print(g)
        with torch.no_grad():
            for name, x in (("mean > 0", pos), ("mean <= 0", neg)):
                err = (g.run(x) - model(x)).abs().max().item()
                print(f"  branch {name}: max abs diff vs eager Branchy {err:.2e}")
                assert err < 1e-6
    # the torch.where graph is an ordinary static graph: it exports and runs in onnxruntime
    with tempfile.TemporaryDirectory() as tmp:
        m = WithWhere().eval()
        m.load_state_dict(model.state_dict())
        path = os.path.join(tmp, "where.onnx")
        bridge.to_onnx(m, path, args=(pos,))
        rep = bridge.verify(m, path, (neg,))
        print(f"\nWithWhere in onnxruntime: {'OK' if rep.ok else 'MISMATCH'}")
        assert rep.ok
    print("both fixes match eager PyTorch on both branches")


if __name__ == "__main__":
    main()
