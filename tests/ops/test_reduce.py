"""Reductions, scans and sorting through the ONNX backend, over the argument combinations op_samples.py leaves out:
dims (negative, tuples, none, empty), keepdim, dtype arguments, integer and bool inputs, ties, infinities, a
symbolic batch dim. Same checking as tests/ops/test_shape.py: opset 17 and the newest one, exact for
integers/bools, floats within ``atol = 1e-5 * max(1, scale)``.
"""
from __future__ import annotations

import pytest
import torch

import bridge
from bridge.errors import UnsupportedOpError
from tests.ops.test_shape import F1, SIZES, check

B = {"x": {0: "batch"}}


def r(*s):
    return torch.randn(*s)


def ints(*s):
    return torch.randint(-5, 6, s)


def ties(*s):
    return torch.randint(0, 3, s).float()


CASES = {
    "sum": (lambda x: (x.sum(), x.sum(-1), x.sum((0, 2)), x.sum(1, keepdim=True), x.sum(dtype=torch.float64),
                       x.sum([]), torch.sum(x, dim=(-1, 0), keepdim=True)), lambda: (r(3, 4, 5),)),
    "sum-int-bool": (lambda x: (x.sum(), x.sum(1), (x > 0).sum(0), (x > 0).sum(), x.int().sum(1),
                                x.sum(1, dtype=torch.float32)), lambda: (ints(3, 4),)),
    "mean": (lambda x: (x.mean(), x.mean(-1), x.mean((0, 1), keepdim=True), x.mean(0, dtype=torch.float64)),
             lambda: (r(3, 4, 5),)),
    "nansum": (lambda x: (torch.nansum(torch.where(x > 1, float("nan"), x)), torch.nansum(x, 1)),
               lambda: (r(3, 4),)),
    "prod": (lambda x: (x.prod(), x.prod(1), x.prod(-1, keepdim=True), x.int().prod(0)), lambda: (r(3, 4) + 1,)),
    "amax-amin": (lambda x: (x.amax(), x.amax(1), x.amax((0, 2), keepdim=True), x.amin(-1), x.int().amax(0),
                             (x > 0).amax(1), (x > 0).amin()), lambda: (r(3, 4, 5),)),
    "all-any": (lambda x: (x.all(), x.any(), x.all(1), x.any(-1, keepdim=True), (x > 0).all(0), (x > 0).any(1),
                           x.int().any(1), x.float().all()), lambda: (ints(3, 4),)),
    "argmax-argmin": (lambda x: (x.argmax(), x.argmax(1), x.argmin(-1, keepdim=True), x.argmin(), x.int().argmax(0)),
                      lambda: (ties(3, 4, 5),)),
    "max-min-dim": (lambda x: (x.max(1), x.min(-1, keepdim=True), x.max(), x.min(), x.int().max(0),
                               (x > 0).max(1)), lambda: (ties(3, 4, 5),)),
    "max-min-elementwise": (lambda x: (torch.max(x, x.flip(0)), torch.min(x, x[:1]), torch.max(x, x.double()),
                                       torch.max(x > 0, x < 1), torch.min(x.int(), x.int().flip(1))),
                            lambda: (r(3, 4),)),
    "std-var": (lambda x: (x.std(), x.var(1), x.std(1, unbiased=False), x.var((0, 2), keepdim=True),
                           torch.std(x, dim=-1, correction=2), torch.var(x, dim=None, correction=0, keepdim=True),
                           x[:1].std(0)), lambda: (r(3, 4, 5),)),
    "norm": (lambda x: (x.norm(), x.norm(1, 1), x.norm(float("inf"), -1), x.norm(dim=(0, 1)), x.norm(3, 0, True),
                        x.norm(p="fro", dim=1), x.norm(0, 1), x.norm(float("-inf"), 1)), lambda: (r(3, 4),)),
    "vector-norm": (lambda x: (torch.linalg.vector_norm(x), torch.linalg.vector_norm(x, 1, -1),
                               torch.linalg.vector_norm(x, 0.5, (0, 1), True),
                               torch.linalg.vector_norm(x, dim=1, dtype=torch.float64)), lambda: (r(3, 4),)),
    "logsumexp": (lambda x: (x.logsumexp(1), x.logsumexp((0, 1), keepdim=True),
                             torch.where(x > 0, float("-inf"), x).logsumexp(-1),
                             x.masked_fill(torch.ones_like(x, dtype=torch.bool), float("-inf")).logsumexp(0),
                             x.int().logsumexp(1)), lambda: (r(3, 4),)),
    "cumsum": (lambda x: (x.cumsum(0), x.cumsum(-1), x.cumsum(1, dtype=torch.float64), x.int().cumsum(1),
                          (x > 0).cumsum(0)), lambda: (r(3, 4),)),
    "cumprod": (lambda x: (x.cumprod(0), x.cumprod(-1), x.int().cumprod(1), x[0].cumprod(0)), lambda: (r(3, 4),)),
    "diff": (lambda x: (torch.diff(x), x.diff(dim=0), torch.diff(x, n=2, dim=1, prepend=x[:, :2]),
                        torch.diff(x, 3, -1, append=x, prepend=x[:, :1]), torch.diff(x > 0, dim=1),
                        torch.diff(x.int(), 0), x.int().diff(2, 0)), lambda: (r(3, 5),)),
    # topk(sorted=False) leaves the order to the implementation, and ties too: sorted here, distinct ints
    "topk": (lambda x: (x.topk(2), x.topk(1, 0, largest=False), x.topk(3, -1, True, False)[0].sort(-1)[0],
                        (x * 100).int().topk(2)),
             lambda: (r(3, 5),)),
    "sort": (lambda x: (x.sort(), x.sort(0, descending=True), x.sort(stable=True),
                        x.sort(dim=1, descending=True, stable=True),
                        x.int().sort(0)), lambda: (ties(3, 6),)),
    "argsort": (lambda x: (x.argsort(), x.argsort(0, descending=True), x.argsort(stable=True)),
                lambda: (ties(3, 6),)),
    "count-nonzero": (lambda x: (torch.count_nonzero(x), torch.count_nonzero(x, 1), torch.count_nonzero(x, (0, 1)),
                                 torch.count_nonzero(x > 0, -1)), lambda: (ints(3, 4),)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_reduce(name):
    fn, make = CASES[name]
    check(fn, lambda b: make())


SYMBOLIC = {
    "sum-mean": lambda x: (x.sum(0), x.mean(), x.mean((0, 2)), x.sum(1, keepdim=True)),
    "std-var": lambda x: (x.std(0), x.var(), x.std((0, 1), keepdim=True), x.var(2)),
    "arg-max": lambda x: (x.argmax(0), x.max(0), x.argmin()),
    "norm-logsumexp": lambda x: (x.norm(dim=0), torch.linalg.vector_norm(x, 1), x.logsumexp(0)),
    "scan": lambda x: (x.cumsum(0), x.cumprod(0), x.cumprod(2), x.diff(dim=0), x.diff(dim=2)),
    "sort": lambda x: (x.sort(0), x.argsort(0, descending=True), x.topk(1, 0)),
}


def test_diff_flops():
    """One subtraction per output element of each pass; the dim grows by what prepend/append add."""
    from bridge.analysis import node_costs

    class M(torch.nn.Module):
        def forward(self, x, p):
            return torch.diff(x), x.diff(dim=0), torch.diff(x, n=2, dim=1, prepend=p), torch.diff(x, 3, append=p)

    g = bridge.trace(M(), (torch.randn(3, 5), torch.randn(3, 2)))
    costs = node_costs(g)
    assert [costs[n].flops for n in g.nodes if n.op == "diff"] == [3 * 4, 2 * 5, 3 * (6 + 5), 3 * (6 + 5 + 4)]


@pytest.mark.parametrize("name", list(SYMBOLIC))
def test_reduce_symbolic_batch(name):
    check(SYMBOLIC[name], lambda b: (torch.randn(b, 3, 4),), dynamic=B, sizes=SIZES)


def test_nuclear_norm_is_unsupported():
    g = bridge.trace(F1(lambda x: x.norm(p="nuc")), (r(3, 4),), frontend="fx")
    with pytest.raises(UnsupportedOpError, match="nuc"):
        bridge.to_onnx(g, None, optimize=False)
