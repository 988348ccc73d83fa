"""Fake-tensor propagation memoizes calls by their arguments' layouts (``FakeCallMemo``): a repeated call gets fresh
fakes of the layouts the first one gave, without FakeTensorMode's dispatch. The graph must be exactly the one an
unmemoized propagation gives (the oracle: the same trace with the memo off), results that alias an argument must
never be memoized, and a model's weights are turned into fakes once per trace."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode

import bridge
from bridge.frontends import common
from tests.helpers import assert_same_outputs


class _Block(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(a)
        h = self.norm2(x)
        h.mul_(1.0)  # in place: returns its argument, never memoized
        return x + self.mlp(h).detach()  # detach aliases its argument: never memoized


class _Repeated(nn.Module):
    """A model that repeats its layers' calls on the same shapes, as transformers do."""

    def __init__(self, d=16, heads=2, layers=4):
        super().__init__()
        self.blocks = nn.ModuleList(_Block(d, heads) for _ in range(layers))
        self.head = nn.Linear(d, 5)

    def forward(self, x):
        for blk in self.blocks:
            x = blk(x)
        return self.head(x).softmax(-1), x.mean(1)


def _traced(model, x, monkeypatch, memo: bool, **kw):
    gets = []
    original = common.FakeCallMemo.get

    def spy(self, key):
        got = original(self, key) if memo else None
        gets.append(got is not None)
        return got

    with monkeypatch.context() as m:
        m.setattr(common.FakeCallMemo, "get", spy)
        g = bridge.trace(model, (x,), **kw)
    return g, sum(gets)


@pytest.mark.parametrize("how", [dict(frontend="record"), dict(frontend="fx", shapes="fake"),
                                 dict(frontend="export", shapes="fake")])
def test_memoized_propagation_gives_the_unmemoized_graph(how, monkeypatch):
    torch.manual_seed(0)
    model = _Repeated().eval()
    x = torch.randn(2, 6, 16)
    g, hits = _traced(model, x, monkeypatch, memo=True, **how)
    ref, ref_hits = _traced(model, x, monkeypatch, memo=False, **how)
    if how["frontend"] == "record":
        assert g.meta["record_run"] == "fake"
    # (export: most ops take torch.export's own values, the rest are memoized)
    assert hits > (5 if how["frontend"] == "export" else 10) and ref_hits == 0
    assert str(g) == str(ref)  # every node, spec and attribute, strides included where the printer shows them
    assert [v.spec for n in g.nodes for v in n.outputs] == [v.spec for n in ref.nodes for v in n.outputs]
    fresh = torch.randn(2, 6, 16)
    with torch.no_grad():
        assert_same_outputs(g.run(fresh), model(fresh))


def _stored(fn, *args):
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    memo = common.FakeCallMemo(mode)
    fakes = tuple(mode.from_tensor(a, static_shapes=True) if isinstance(a, torch.Tensor) else a for a in args)
    with mode, torch.no_grad():
        result = fn(*fakes)
    key = memo.key(fn, fakes, {})
    assert key is not None
    memo.store(key, result, (fakes, {}))
    return memo, key, result


@pytest.mark.parametrize("fn", [
    lambda x: x.detach(), lambda x: x.add_(1), lambda x: x.view(-1), lambda x: x.transpose(0, 1),
    lambda x: x[1:], lambda x: torch.split(x, 2, dim=1), lambda x: x.contiguous(), lambda x: x.to(torch.float32),
    lambda x: (x.clone(), x),
], ids=["detach", "inplace", "view", "transpose", "slice", "split", "contiguous-noop", "to-noop", "returns-arg"])
def test_results_that_alias_an_argument_are_never_memoized(fn):
    memo, key, _ = _stored(fn, torch.randn(3, 4))
    assert memo.get(key) is None


@pytest.mark.parametrize("fn, args", [
    (lambda x, w: F.linear(x, w), (torch.randn(2, 3, 4), torch.randn(5, 4))),  # a view of its own matrix product
    (lambda x: x.t().contiguous(), (torch.randn(3, 4),)),
    (lambda x: torch.empty_strided((2, 3), (1, 2)) + x, (torch.randn(2, 3),)),
    (lambda x: x.max(dim=0), (torch.randn(3, 4),)),
    (lambda x: (x.sin(), x.to(torch.float64)), (torch.randn(3, 4),)),
    (lambda x: x.permute(0, 2, 1).clone(), (torch.randn(2, 3, 4),)),
], ids=["linear-3d", "contiguous", "strided", "max-dim", "tuple", "clone-keeps-strides"])
def test_fresh_results_come_back_with_their_layouts(fn, args):
    memo, key, result = _stored(fn, *args)
    hit = memo.get(key)
    if type(result) not in (tuple, list) and not isinstance(result, torch.Tensor):
        assert hit is None  # a structseq (torch.return_types) is not a plain tuple: not memoized
        return
    assert hit is not None
    for got, ref in zip([hit] if isinstance(hit, torch.Tensor) else hit,
                        [result] if isinstance(result, torch.Tensor) else result):
        assert (got.shape, got.stride(), got.dtype, got.device) == (ref.shape, ref.stride(), ref.dtype, ref.device)
        assert got is not ref and got.fake_mode is ref.fake_mode


def test_keys_tell_layouts_and_values_apart():
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    memo = common.FakeCallMemo(mode)
    a, b = torch.randn(3, 4), torch.randn(4, 3).t()
    assert memo.key(torch.add, (a, 1), {}) != memo.key(torch.add, (b, 1), {})  # strides differ
    assert memo.key(torch.add, (a, 1), {}) != memo.key(torch.add, (a, 2), {})
    assert memo.key(torch.add, (a, 1), {}) != memo.key(torch.add, (a.double(), 1), {})
    assert memo.key(torch.add, (a, 1), {}) == memo.key(torch.add, (a.clone(), 1), {})
    i = torch.arange(3)  # int + 1 is int, int + 1.0 is float, and True is 1 == 1.0 in python
    assert len({memo.key(torch.add, (i, v), {}) for v in (1, 1.0, True)}) == 3
    assert memo.key(torch.add, (a, nn.Linear(1, 1)), {}) is None  # no description: no key
    with torch.no_grad():  # grad mode sets whether results require grad
        without_grad = memo.key(torch.add, (a, 1), {})
    assert without_grad != memo.key(torch.add, (a, 1), {})
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert memo.key(torch.mm, (a, a.t()), {}) is None  # result dtypes follow autocast's state


def test_weights_become_fakes_once(monkeypatch):
    """The fake mode holds its fakes weakly: a fake made and dropped is made again at every use (it was: three
    times per weight in a recording)."""
    from torch._subclasses import meta_utils

    calls = []
    original = meta_utils.MetaConverter.__call__

    def counted(self, t, *a, **k):
        calls.append(id(t))
        return original(self, t, *a, **k)

    monkeypatch.setattr(meta_utils.MetaConverter, "__call__", counted)
    torch.manual_seed(0)
    model = _Repeated().eval()
    for how in (dict(frontend="record"), dict(frontend="fx", shapes="fake")):
        calls.clear()
        bridge.trace(model, (torch.randn(2, 6, 16),), **how)
        assert len(calls) == len(set(calls)), how
        assert len(calls) <= 1, how  # weights are made directly; at most the input goes through from_tensor


class _Narrow(nn.Module):
    def forward(self, x, start):
        return torch.narrow(x, 1, start, 2) * 2 + 1


def test_results_with_data_dependent_layouts_are_left_to_torch():
    """``narrow`` at a tensor start gives a view at an unbacked offset (u0): the memo must neither key on it nor
    compare it (torch refuses to guard on a data-dependent value), and the trace goes on as without it."""
    x = torch.randn(3, 6)
    g = bridge.trace(_Narrow(), (x, torch.tensor(1)))
    for start in (0, 3):
        assert_same_outputs(g.run(x, torch.tensor(start)), _Narrow()(x, torch.tensor(start)))


def _unbacked_in_order(text: str) -> str:
    """``text`` with data-dependent size symbols renumbered by first appearance (u0, u1, ...)."""
    import re

    names: dict = {}
    return re.sub(r"\bu\d+\b", lambda m: names.setdefault(m.group(0), f"u{len(names)}"), text)


@pytest.mark.parametrize("name", ["transformer_encoder", "causal_attention", "mha", "bigru", "indexing_heavy",
                                  "inplace_ops", "resnet_mini"])
def test_export_frontend_takes_torch_exports_values(name, monkeypatch):
    """The export frontend adopts torch.export's fake mode and takes each node's value from the exported program
    where the canonical op computes exactly the ATen op: the graph (every spec, symbolic dims included) is the one
    its own propagation gave, with a fraction of the fake dispatches, and runs at another batch."""
    from bridge import zoo
    from bridge.frontends import export

    entry = zoo.get(name)
    model = entry.make_model().eval()
    args, kwargs = entry.make_inputs(entry.batch)
    computed = []
    original = common.GraphBuilder._compute

    def spy(self, *a, **k):
        computed.append(a[1])
        return original(self, *a, **k)

    with monkeypatch.context() as m:
        m.setattr(common.GraphBuilder, "_compute", spy)
        g = bridge.trace(model, args, kwargs, frontend="export", dynamic=entry.dynamic)
        adopted = len(computed)
        m.setattr(export, "_export_mode", lambda ep: None)
        ref = bridge.trace(model, args, kwargs, frontend="export", dynamic=entry.dynamic)
    assert _unbacked_in_order(str(g)) == _unbacked_in_order(str(ref))  # (data-dependent sizes: torch.export's
    # ShapeEnv numbers them in its own order)
    assert adopted < (len(computed) - adopted) / 2, (adopted, len(computed) - adopted)
    args, kwargs = entry.make_inputs(entry.batch + 3)
    with torch.no_grad():
        ours = g.to_module()(*args, **kwargs)
        want = model(*args, **kwargs)
    from tests.helpers import assert_same_outputs
    assert_same_outputs(ours, want)
