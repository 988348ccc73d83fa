"""Models with torch.cond and while_loop for the tests of passes and analysis over regions (tests/passes/
test_regions.py, tests/analysis/test_regions.py), and the inputs that take every branch and several trip counts."""
import torch
import torch.nn as nn
from torch._higher_order_ops import while_loop
from torch._higher_order_ops.map import map as map_
from torch._higher_order_ops.scan import scan


class CondLoop(nn.Module):
    """A branch on a tensor's value, then a data-dependent trip count; ``a`` is read in a branch and in the loop."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x, n):
        y = torch.cond(x.sum() > 0, lambda t: self.a(t).relu(), lambda t: self.b(t) * 2, (x,))

        def cf(i, h):
            return i < n

        def bf(i, h):
            return i + 1, self.a(h).tanh()

        i, h = while_loop(cf, bf, (torch.zeros((), dtype=torch.int64), y))
        return h, i


class Foldable(nn.Module):
    """What dce and fold find at the regions' boundary: a constant operand (``k``), a second branch output and the
    operand only it reads (``w``) that nothing reads after, a cond on a constant, a carried value (``dead``) and the
    additional input only it reads (``m``) that nothing reads after the loop, and duplicate work inside a branch."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x, n):
        k = torch.ones(4) * 3                  # folds to a constant: an operand fold copies into the branches
        w = x.mean(0)                          # read only for the second output of the cond, which nothing reads
        m = x.max()                            # read only for the dead carried value

        def tf(t, k, w):
            return self.a(t).relu() + self.a(t).relu() + k * 2, w * 2  # the linear and relu twice: cse

        def ff(t, k, w):
            return self.b(t) * 2 + k, w + 1

        y, _ = torch.cond(x.sum() > 0, tf, ff, (x, k, w))
        z = torch.cond(torch.ones(()).sum() > 0, lambda t: t + 1, lambda t: t - 1, (y,))  # the pred folds

        def cf(i, h, dead):
            return i < n

        def bf(i, h, dead):
            return i + 1, self.a(h).tanh() * k.sum(), dead * m

        i, h, _ = while_loop(cf, bf, (torch.zeros((), dtype=torch.int64), z, x.clone()))
        return h, i


class Branches(nn.Module):
    """Branches of different costs (a 4 -> 16 -> 4 MLP against one 4 x 4 linear) and a loop body: for costs."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.up = nn.Linear(4, 16)
        self.down = nn.Linear(16, 4)
        self.c = nn.Linear(4, 4)

    def heavy(self, t):
        return self.down(self.up(t).relu())

    def light(self, t):
        return self.c(t)

    def body(self, h):
        return self.c(h).tanh()

    def forward(self, x, n):
        y = torch.cond(x.sum() > 0, lambda t: self.heavy(t), lambda t: self.light(t), (x,))

        def cf(i, h):
            return i < n

        def bf(i, h):
            return i + 1, self.body(h)

        i, h = while_loop(cf, bf, (torch.zeros((), dtype=torch.int64), y))
        return h


class Nested(nn.Module):
    """A cond inside a loop's body, reading a constant (``k``) that comes in through both."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(7)
        self.fc = nn.Linear(4, 4)

    def forward(self, x, n):
        k = torch.ones(4) * 0.5

        def body(i, h):
            h = torch.cond(h.mean() > 0, lambda t, k: self.fc(t).tanh() + k, lambda t, k: t * 0.5 - k, (h, k))
            return i + 1, h

        i, h = while_loop(lambda i, h: i < n, body, (torch.zeros((), dtype=torch.int64), x))
        return h, i


class Scans(nn.Module):
    """A scan and a map reading a constant (``k``) among their additional inputs."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(8)
        self.cell = nn.Linear(4, 4)

    def forward(self, xs, h0):
        k = torch.ones(4) * 0.5

        def step(h, xt):
            h = torch.tanh(self.cell(xt) + h * k)
            return h, h * 2

        last, ys = scan(step, h0, xs)
        zs = map_(lambda xt, h: self.cell(xt) - h + k, xs, h0)
        return last, ys, zs


def example():
    return torch.randn(3, 4), torch.tensor(2)


def inputs():
    """``(x, n)`` pairs taking both branches (x's sum > 0 and < 0) with trip counts 0, 1 and several."""
    gen = torch.Generator().manual_seed(3)
    out = []
    for sign in (1.0, -1.0):
        for trips in (0, 1, 4):
            x = torch.rand(3, 4, generator=gen) * sign + 0.1 * sign
            out.append((x, torch.tensor(trips)))
    return out
