"""One model written as a static graph and as a dynamic one: what bridge does with each, and what differs.

A graph is static when the same ops run for every input. ``if h.mean() > 0:`` picks ops by a tensor's value,
which neither torch.fx nor torch.export can record, so ``bridge.trace`` raises ``TraceError`` naming the line.
Two ways to write that choice so that it traces, both checked against eager PyTorch on inputs that take each
branch:

- static: compute both sides and select with ``torch.where``: every op runs on every input;
- dynamic: ``torch.cond``: one ``cond`` node that holds both branches as regions (subgraphs); the data picks the
  branch at run time, in the generated module and in the ONNX file (an ``If``).

The same for a loop whose length depends on the data: a static graph can only unroll a fixed number of steps;
``while_loop`` keeps the loop, and its trip count is decided at run time (an ONNX ``Loop``).

For each: the graph, its cost, parity on every branch and trip count through ``g.run``, onnxruntime and the
ONNX file read back (``bridge.from_onnx``), and a drawing (regions are clusters).

    python examples/dynamic_control_flow.py
"""
import os
import re
import tempfile

import torch
import torch.nn as nn
from torch._higher_order_ops.while_loop import while_loop

import bridge
from bridge.analysis.costs import node_costs
from bridge.backends.ort import session


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.up = nn.Linear(4, 4)

    def forward(self, x):
        h = self.fc(x)
        if h.mean() > 0:  # python control flow on a tensor's value
            return self.up(h).relu()
        return h - 1


class Static(Branchy):
    def forward(self, x):
        h = self.fc(x)
        return torch.where(h.mean() > 0, self.up(h).relu(), h - 1)


class Dynamic(Branchy):
    def forward(self, x):
        h = self.fc(x)
        return torch.cond(h.mean() > 0, lambda t: self.up(t).relu(), lambda t: t - 1, (h,))


class Unrolled(Branchy):
    """Halve until small: a static graph can only unroll a fixed number of steps (here 4)."""

    def forward(self, x):
        h = self.fc(x)
        for _ in range(4):
            h = torch.where(h.abs().max() > 0.5, h * 0.5, h)
        return h


class Looped(Branchy):
    """Halve until small, as a loop: the trip count is whatever the data needs."""

    def forward(self, x):
        h = self.fc(x)
        _, h = while_loop(lambda i, t: t.abs().max() > 0.5, lambda i, t: (i + 1, t * 0.5),
                          (torch.zeros((), dtype=torch.int64), h))
        return h


def flops(g) -> int:
    return sum(c.flops for c in node_costs(g).values())


def check(model, g, proto, inputs, label) -> None:
    """``g.run``, onnxruntime and the re-imported file against eager on each input."""
    ort = session(proto)
    back = bridge.from_onnx(proto).to_module()
    with torch.no_grad():
        for name, x in inputs:
            want = model(x)
            errs = [(g.run(x) - want).abs().max().item(),
                    abs(torch.from_numpy(ort.run(None, {"x": x.numpy()})[0]) - want).max().item(),
                    (back(x) - want).abs().max().item()]
            print(f"  {label} {name}: max abs diff vs eager (g.run, onnxruntime, from_onnx) "
                  f"{max(errs):.1e}")
            assert max(errs) < 1e-5, errs


def describe(model, x, inputs, tmp, name) -> None:
    g = bridge.trace(model, (x,))
    proto = bridge.to_onnx(model, args=(x,))
    regions = [key for n, _ in g.walk() for key, _ in n.regions]
    onnx_ops = sorted({n.op_type for n in proto.graph.node} & {"If", "Loop", "Where"})
    print(f"\n{name}: {len(g.nodes)} ops at the top level, regions {regions or 'none'}, "
          f"{flops(g)} FLOPs, ONNX {', '.join(onnx_ops)}")
    print(g)
    check(model, g, proto, inputs, name)
    dot = os.path.join(tmp, f"{name}.dot")
    bridge.draw(g, dot)
    clusters = len(re.findall(r'label="\w+ of %', open(dot).read()))  # "true_fn of %cond (cond)"
    print(f"  drawn: {dot} ({clusters} region clusters)")


def halvings(model, x) -> int:
    """How many times the loop halves for ``x`` (counted in python, eagerly)."""
    with torch.no_grad():
        h, n = model.fc(x), 0
        while h.abs().max() > 0.5:
            h, n = h * 0.5, n + 1
    return n


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

    def same_weights(cls):
        m = cls().eval()
        m.load_state_dict(model.state_dict())
        return m

    with tempfile.TemporaryDirectory() as tmp:
        for cls in (Static, Dynamic):
            describe(same_weights(cls), pos, [("mean > 0", pos), ("mean <= 0", neg)], tmp, cls.__name__)
        # inputs that need from 0 to 9 halvings: the unrolled graph stops at 4, the loop does not
        looped, unrolled = same_weights(Looped), same_weights(Unrolled)
        sizes = [(f"x * {k:g} ({halvings(looped, pos * k)} halvings)", pos * k) for k in (0.01, 1.0, 200.0)]
        describe(looped, pos, sizes, tmp, "Looped")
        g = bridge.trace(unrolled, (pos,))
        with torch.no_grad():
            wrong = [name for name, x in sizes if not torch.allclose(g.run(x), looped(x))]
        print(f"\nUnrolled: {len(g.nodes)} ops, {flops(g)} FLOPs; differs from the loop on {wrong}: "
              "a static graph runs the steps it was written with")
        assert wrong == [name for name, x in sizes if halvings(looped, x) > 4], wrong
    print("\nstatic and dynamic versions match eager PyTorch on every branch and trip count")


if __name__ == "__main__":
    main()
