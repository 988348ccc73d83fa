"""Parity over the model zoo: bridge.trace -> Graph -> (g.run | g.to_module()) against eager PyTorch.

For every zoo entry: the graph passes ``check()``; ``g.run`` and the generated module return the model's output
structure with the same numbers (tests/helpers.py tolerance); the generated module has the model's state_dict keys
and loads the model's state_dict strictly; tensors shared in the model stay shared (same storage); a trace with
symbolic batch runs at other batch sizes. A few entries are also checked in float64 and through torch.compile.

torchvision models (bridge/zoo.py, tag "torchvision", ids ``tv_*``) join when torchvision imports; heavy ones are
``slow``. Select them with ``-k tv_`` (add ``-m slow`` or ``-m ''`` for the slow ones).
"""
from __future__ import annotations

import functools

import pytest
import torch

import bridge
from bridge.ir import structure
from bridge import zoo
from tests.helpers import assert_same_outputs, max_error, same_data_ptr_groups

# Known bridge bugs, one reason each; strict, so a fix turns them into failures to be removed here.
XFAIL: dict[tuple[str, str], str] = {}


def _params(check: str, entries=None):
    out = []
    for e in entries if entries is not None else zoo.entries():
        marks = []
        if "slow" in e.tags:
            marks.append(pytest.mark.slow)
        if (e.name, check) in XFAIL:
            marks.append(pytest.mark.xfail(strict=True, reason=XFAIL[(e.name, check)]))
        out.append(pytest.param(e, marks=marks, id=e.name))
    if not zoo.HAS_TORCHVISION and entries is None:
        out.append(pytest.param(None, marks=pytest.mark.skip(reason="torchvision not installed"), id="tv_models"))
    return out


@functools.lru_cache(maxsize=None)
def _model(name: str) -> torch.nn.Module:
    return zoo.get(name).make_model()


@functools.lru_cache(maxsize=None)
def _traced(name: str, dynamic: bool = False) -> bridge.Graph:
    e = zoo.get(name)
    args, kwargs = e.make_inputs(e.batch)
    return bridge.trace(_model(name), args, kwargs, dynamic=e.dynamic if dynamic else None)


def _eager(model, args, kwargs):
    with torch.no_grad():
        return model(*args, **kwargs)


@pytest.mark.parametrize("entry", _params("parity"))
def test_run_and_module_match_eager(entry):
    model = _model(entry.name)
    g = _traced(entry.name)
    g.check()
    args, kwargs = entry.make_inputs(entry.batch)
    ref = _eager(model, args, kwargs)
    with torch.no_grad():
        assert_same_outputs(g.run(*args, **kwargs), ref)
        assert_same_outputs(g.to_module()(*args, **kwargs), ref)


@pytest.mark.parametrize("entry", _params("state_dict"))
def test_state_dict_keys_and_sharing(entry):
    model = _model(entry.name)
    gm = _traced(entry.name).to_module()
    assert gm.state_dict().keys() == model.state_dict().keys()
    gm.load_state_dict(model.state_dict(), strict=True)
    assert same_data_ptr_groups(gm) == same_data_ptr_groups(model)


@pytest.mark.parametrize("entry", _params("dynamic", [e for e in zoo.entries() if e.dynamic]))
def test_dynamic_batch(entry):
    model = _model(entry.name)
    g = _traced(entry.name, dynamic=True)
    g.check()
    gm = g.to_module()
    for batch in (1, entry.batch + 3):
        args, kwargs = entry.make_inputs(batch)
        with torch.no_grad():
            assert_same_outputs(gm(*args, **kwargs), _eager(model, args, kwargs))


@pytest.mark.parametrize("entry", _params("opaque", [e for e in zoo.entries() if "torchvision" not in e.tags]))
def test_no_opaque_nodes(entry):
    """Every call of a self-built zoo model maps to a canonical op."""
    g = _traced(entry.name)
    opaque = [f"{n.describe()}: {n.meta.get('why_opaque')}" for n in g.opaque_nodes()]
    assert not opaque, "\n".join(opaque)


def test_tied_weights_stay_tied():
    e = zoo.get("tied_weights")
    model = e.make_model()
    gm = bridge.trace(model, *e.make_inputs(2)).to_module()
    assert gm.lm_head.weight.data_ptr() == gm.emb.weight.data_ptr()
    assert gm.lm_head.weight is gm.emb.weight
    assert gm.dec.weight is gm.enc.weight
    assert gm.dec.bias.data_ptr() != gm.enc.bias.data_ptr()
    # one Parameter, so an update through one name shows through the other
    with torch.no_grad():
        gm.emb.weight[0].fill_(3.0)
    assert torch.equal(gm.lm_head.weight[0], torch.full_like(gm.lm_head.weight[0], 3.0))
    assert len(list(gm.parameters())) == len(list(model.parameters()))


def test_shared_module_is_one_set_of_weights():
    e = zoo.get("shared_module")
    model = e.make_model()
    g = bridge.trace(model, *e.make_inputs(2))
    assert sum(1 for c in g.params if "shared.0.weight" in c.names) == 1
    assert len(g.find("linear")) == 5  # inp, shared twice, the functional reuse, out


def test_dynamic_mlp_two_batch_sizes():
    e = zoo.get("mlp")
    model = e.make_model()
    g = bridge.trace(model, (torch.randn(4, 16),), dynamic={"x": {0: "batch"}})
    assert not g.inputs[0].spec.is_static
    for batch in (2, 7):
        x = torch.randn(batch, 16)
        assert_same_outputs(g.run(x), _eager(model, (x,), {}))


def test_dynamic_trace_from_batch_one_is_refused():
    """torch specializes example sizes 0 and 1, so bridge asks for an example of 2 or more."""
    model = zoo.get("mlp").make_model()
    with pytest.raises(bridge.BridgeError, match="example of size 1"):
        bridge.trace(model, (torch.randn(1, 16),), dynamic={"x": {0: "batch"}})


def _double(obj):
    if isinstance(obj, torch.Tensor):
        return obj.double() if obj.is_floating_point() else obj
    if isinstance(obj, tuple):
        return tuple(_double(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _double(v) for k, v in obj.items()}
    return obj


@pytest.mark.parametrize("entry", _params("float64", zoo.entries(include_tags=("float64",))))
def test_float64(entry):
    model = entry.make_model().double()
    args, kwargs = (_double(x) for x in entry.make_inputs(entry.batch))
    g = bridge.trace(model, args, kwargs)
    g.check()
    ref = _eager(model, args, kwargs)
    got = g.to_module()(*args, **kwargs)
    assert_same_outputs(got, ref, rtol=1e-12, atol=1e-12)
    assert all(t.dtype == torch.float64 for t in _leaves(got) if t.is_floating_point())


def _leaves(obj):
    return structure.flatten(obj, lambda o: isinstance(o, torch.Tensor))[0]


def test_torch_compile_generated_module():
    """The generated forward is plain code: torch.compile takes it whole (fullgraph) and keeps the numbers."""
    pytest.importorskip("torch._inductor")
    e = zoo.get("mlp")
    model = e.make_model()
    args, kwargs = e.make_inputs(4)
    gm = bridge.trace(model, args, kwargs).to_module()
    compiled = torch.compile(gm, fullgraph=True)
    with torch.no_grad():
        got = compiled(*args, **kwargs)
    assert_same_outputs(got, _eager(model, args, kwargs))


def parity_report(names=None, device="cpu") -> list[tuple[str, str, float, float, int, int]]:
    """Per entry: (name, frontend, max |g.run - eager| on CPU, max |generated - eager| on ``device`` (traced on CPU,
    both moved there), nodes, opaque nodes). For docs and manual runs."""
    def to(obj):
        if isinstance(obj, torch.Tensor):
            return obj.to(device)
        if isinstance(obj, (tuple, list)):
            return type(obj)(to(o) for o in obj)
        if isinstance(obj, dict):
            return {k: to(v) for k, v in obj.items()}
        return obj

    rows = []
    for e in zoo.entries() if names is None else [zoo.get(n) for n in names]:
        model = e.make_model()
        args, kwargs = e.make_inputs(e.batch)
        g = bridge.trace(model, args, kwargs)
        with torch.no_grad():
            cpu_err = max_error(g.run(*args, **kwargs), _eager(model, args, kwargs))
            gm, model = g.to_module().to(device), model.to(device)
            dev_err = max_error(gm(*to(args), **to(kwargs)), _eager(model, to(args), to(kwargs)))
        rows.append((e.name, g.meta.get("frontend", "?"), cpu_err, dev_err, len(g.nodes), len(g.opaque_nodes())))
    return rows


if __name__ == "__main__":  # python -m tests.backends.test_torch [device]: the per-model error table
    import sys

    dev = sys.argv[1] if len(sys.argv) > 1 else "cpu"
    print(f"{'model':24s} {'frontend':8s} {'max err cpu':>12s} {'max err ' + dev:>14s} nodes opaque")
    for row in parity_report(device=dev):
        print(f"{row[0]:24s} {row[1]:8s} {row[2]:12.3e} {row[3]:14.3e} {row[4]:5d} {row[5]:6d}")
