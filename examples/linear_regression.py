"""A linear regression written as an explicit graph: Input -> Multiply(W) -> Add(b) -> Output.

No nn.Module to trace: the graph is built node by node with bridge's IR, turned into an ordinary module
with ``g.to_module()``, fitted with plain gradient descent, and checked against the closed-form least
squares solution. Then it is drawn (Mermaid, printed) and run.

    python examples/linear_regression.py
"""
import os
import tempfile

import torch

import bridge
from bridge.ir.graph import Graph
from bridge.ir.spec import TensorSpec


def build(features: int, targets: int) -> Graph:
    """y = x @ W + b, for a batch of 'n' rows (a symbolic dim)."""
    g = Graph()
    x = g.add_input("x", TensorSpec(("n", features), torch.float32))
    # trainable parameters: to_module() makes them nn.Parameters that require grad
    W = g.add_constant("W", torch.zeros(features, targets, requires_grad=True), kind="param")
    b = g.add_constant("b", torch.zeros(targets, requires_grad=True), kind="param")
    xw = g.add_node("matmul", {"input": x, "other": W}, outputs=[("xW", TensorSpec(("n", targets), torch.float32))])
    y = g.add_node("add", {"input": xw.output, "other": b}, outputs=[("y", TensorSpec(("n", targets), torch.float32))])
    g.set_outputs([y.output])
    return g.check()


def main() -> None:
    torch.manual_seed(0)
    w_true = torch.tensor([[2.0], [-3.0], [0.5]])
    b_true = torch.tensor([1.25])
    x = torch.randn(256, 3)
    y = x @ w_true + b_true + 0.01 * torch.randn(256, 1)

    g = build(3, 1)
    print(g, "\n")
    model = g.to_module()  # parameters W and b, as named in the graph
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(300):
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    W, b = dict(model.named_parameters())["W"].detach(), dict(model.named_parameters())["b"].detach()

    # the closed form: least squares on [x, 1]
    sol = torch.linalg.lstsq(torch.cat([x, torch.ones(256, 1)], 1), y).solution
    print(f"fitted  W = {[round(v, 4) for v in W.flatten().tolist()]}, b = {b.item():.4f}   (loss {loss.item():.6f})")
    print(f"lstsq   W = {[round(v, 4) for v in sol[:3].flatten().tolist()]}, b = {sol[3].item():.4f}")
    print(f"true    W = {w_true.flatten().tolist()}, b = {b_true.item()}")
    gap = max((W - sol[:3]).abs().max().item(), abs(b.item() - sol[3].item()))
    assert gap < 1e-4, f"gradient descent is {gap} from the least squares solution"
    print(f"max |gradient descent - least squares| = {gap:.2e}")

    # the graph with the fitted weights runs on any number of rows, and draws
    for c, t in zip(g.constants, (W, b)):
        c.const = t
    with torch.no_grad():
        torch.testing.assert_close(g.run(x[:5]), x[:5] @ W + b)
    with tempfile.TemporaryDirectory() as tmp:
        path = bridge.draw(g, os.path.join(tmp, "linreg.mmd"))
        print("\n" + open(path).read())
    print("graph parity OK")


if __name__ == "__main__":
    main()
