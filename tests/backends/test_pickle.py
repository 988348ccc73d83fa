"""Generated modules behave like modules: ``torch.save``/``torch.load(weights_only=False)`` of ``g.to_module()`` and
of staged modules (``bridge.to_sequential``) round trip, in this process and in a fresh one, with the model's
numbers on fresh inputs, its state_dict names, shared weights still shared, opaque submodules kept and ``.to``
working after the load; ``copy.deepcopy`` keeps the class. torch's default ``weights_only=True`` refuses them."""
from __future__ import annotations

import copy
import io
import os
import pickle
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

import bridge
from bridge import zoo
from bridge.errors import TransformError
from bridge.ir.graph import Graph
from bridge.ir.spec import TensorSpec
from tests.helpers import assert_same_outputs, same_data_ptr_groups

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ZOO = [e for e in zoo.entries() if "slow" not in e.tags]


class Branchy(nn.Module):
    """Branches on a tensor's value: kept whole with ``leaf_modules=``, it stays one opaque call to a real module."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([2.0, -1.0, 0.5, 3.0]))

    def forward(self, x):
        return x * self.scale if x.sum() > 0 else x - self.scale


class Mixed(nn.Module):
    """Tied weights, a buffer, a non-persistent buffer, an opaque leaf module and a skip: one of each."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Linear(4, 4)
        self.leaf = Branchy()
        self.head = nn.Linear(4, 4)
        self.head.weight = self.emb.weight  # shared
        self.register_buffer("shift", torch.linspace(-1, 1, 4))
        self.register_buffer("tmp", torch.ones(4), persistent=False)

    def forward(self, x):
        h = torch.relu(self.emb(x)) + self.shift
        return {"out": self.head(self.leaf(h)) * self.tmp + h, "h": h}


def mixed():
    torch.manual_seed(0)
    model = Mixed().eval()
    x = torch.randn(3, 4)
    return model, bridge.trace(model, (x,), leaf_modules=[Branchy])


def _round_trip(module, **load):
    buf = io.BytesIO()
    torch.save(module, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False, **load)


def _fresh(args, kwargs, seed=1):
    """Other inputs than the traced example, of the same shapes (integer inputs, such as token ids, kept)."""
    gen = torch.Generator().manual_seed(seed)
    f = lambda t: torch.randn(t.shape, generator=gen, dtype=t.dtype) if t.is_floating_point() else t  # noqa: E731
    return tuple(f(a) for a in args), {k: f(v) for k, v in kwargs.items()}


@pytest.mark.parametrize("entry", ZOO, ids=lambda e: e.name)
def test_zoo_generated_module_pickles(entry):
    model = entry.make_model()
    args, kwargs = entry.make_inputs(entry.batch)
    gm = bridge.trace(model, args, kwargs).to_module()
    loaded = _round_trip(gm)
    assert type(loaded) is type(gm)  # in the process that made it, the same class
    assert list(loaded.state_dict()) == list(model.state_dict())
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert same_data_ptr_groups(loaded) == same_data_ptr_groups(model)
    args, kwargs = _fresh(args, kwargs)
    with torch.no_grad():
        assert_same_outputs(loaded(*args, **kwargs), model(*args, **kwargs))


def test_opaque_module_tied_weights_and_buffers_survive():
    model, g = mixed()
    assert [n.op for n in g.opaque_nodes()] == ["opaque"]
    gm = g.to_module()
    loaded = _round_trip(gm)
    assert isinstance(loaded.leaf, Branchy) and loaded.leaf is not gm.leaf
    assert loaded.head.weight is loaded.emb.weight
    assert list(loaded.state_dict()) == list(gm.state_dict()) and "tmp" not in loaded.state_dict()
    assert set(loaded.state_dict()) == set(model.state_dict())
    assert torch.equal(loaded.tmp, model.tmp)
    for x in (torch.randn(3, 4), -torch.ones(3, 4) * 5):  # both branches of the opaque module
        with torch.no_grad():
            assert_same_outputs(loaded(x), model(x))
    # a device/dtype move after loading moves parameters, buffers and the opaque module alike
    loaded.to(torch.float64)
    x = torch.randn(3, 4, dtype=torch.float64)
    with torch.no_grad():
        assert_same_outputs(loaded(x), copy.deepcopy(model).double()(x))
    assert loaded.head.weight is loaded.emb.weight and loaded.leaf.scale.dtype == torch.float64


def test_deepcopy_keeps_class_sharing_and_independence():
    model, g = mixed()
    gm = g.to_module()
    dup = copy.deepcopy(gm)
    assert type(dup) is type(gm) and dup.code == gm.code
    assert dup.head.weight is dup.emb.weight and dup.emb.weight is not gm.emb.weight
    with torch.no_grad():
        dup.emb.weight.zero_()
    x = torch.randn(3, 4)
    with torch.no_grad():
        assert_same_outputs(gm(x), model(x))  # the original is untouched


def test_staged_sequential_pickles():
    model, g = mixed()
    x = torch.randn(3, 4)
    for stages in (None, 2, 3):
        s = bridge.to_sequential(g, stages=stages)
        loaded = _round_trip(s)
        assert type(loaded) is type(s) and [type(m) for m in loaded] == [type(m) for m in s]
        assert loaded.describe() == s.describe()
        assert list(loaded.state_dict()) == list(s.state_dict())
        with torch.no_grad():
            assert_same_outputs(loaded(x), model(x))


def test_default_torch_load_refuses_a_module():
    """torch >= 2.6 loads with ``weights_only=True`` by default, which refuses any pickled nn.Module; the
    weights-only way is the state_dict."""
    model, g = mixed()
    buf = io.BytesIO()
    torch.save(g.to_module(), buf)
    buf.seek(0)
    with pytest.raises(pickle.UnpicklingError, match="weights_only"):
        torch.load(buf)
    buf = io.BytesIO()
    torch.save(g.to_module().state_dict(), buf)
    buf.seek(0)
    fresh = mixed()[1].to_module()
    fresh.load_state_dict(torch.load(buf), strict=True)


def test_a_local_function_cannot_be_pickled_and_says_so():
    def local(t):
        return t * 2

    g = Graph()
    spec = TensorSpec((2,), torch.float32)
    x = g.add_input("x", spec)
    y = g.add_node("opaque", {"target": local, "args": [x], "kwargs": {}}, outputs=[("y", spec)], target=local).output
    g.set_outputs([y])
    gm = g.to_module()
    assert torch.equal(gm(torch.ones(2)), torch.full((2,), 2.0))
    with pytest.raises(TransformError, match=r"cannot pickle the generated module .*<locals>\.local.*state_dict"):
        torch.save(gm, io.BytesIO())
    assert torch.equal(copy.deepcopy(gm)(torch.ones(2)), torch.full((2,), 2.0))  # deepcopy needs no pickle


LOAD = """
import sys, torch
from tests.helpers import same_data_ptr_groups
path, out = sys.argv[1:]
saved = torch.load(path, weights_only=False)
inputs = saved["inputs"]
res = {}
for name, m in saved["modules"].items():
    args, kwargs = inputs[name]
    keys, groups = list(m.state_dict()), same_data_ptr_groups(m)
    with torch.no_grad():
        y = m(*args, **kwargs)
        m.to(torch.float64)
        args64 = tuple(a.double() if a.is_floating_point() else a for a in args)
        y64 = m(*args64, **{k: v.double() if v.is_floating_point() else v for k, v in kwargs.items()})
    res[name] = {"out": y, "out64": y64, "keys": keys, "groups": groups,
                 "type": type(m).__name__, "module": type(m).__module__}
torch.save(res, out)
"""


def test_round_trip_in_a_fresh_process(tmp_path):
    """Saved here, loaded in a new interpreter (no generated class exists there yet): same outputs as eager on
    fresh inputs, same keys and sharing, and a dtype move after loading."""
    cases = {}
    model, g = mixed()
    cases["mixed"] = (model, g.to_module(), (torch.randn(3, 4),), {})
    cases["mixed_staged"] = (model, bridge.to_sequential(g, stages=3), (torch.randn(3, 4),), {})
    for name in ("resnet_mini", "multi_input", "dataclass_output", "transformer_encoder"):
        e = zoo.get(name)
        m = e.make_model()
        args, kwargs = e.make_inputs(e.batch)
        graph = bridge.trace(m, args, kwargs)
        fresh = _fresh(args, kwargs)
        cases[name] = (m, graph.to_module(), *fresh)
        cases[name + "_staged"] = (m, bridge.to_sequential(graph), *fresh)
    path, out = tmp_path / "modules.pt", tmp_path / "out.pt"
    torch.save({"modules": {k: c[1] for k, c in cases.items()},
                "inputs": {k: (c[2], c[3]) for k, c in cases.items()}}, path)
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", LOAD, str(path), str(out)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    res = torch.load(out, weights_only=False)
    for name, (model, saved, args, kwargs) in cases.items():
        r = res[name]
        assert (r["type"], r["module"]) == (type(saved).__name__, type(saved).__module__), name
        assert r["keys"] == list(saved.state_dict()), name
        assert r["groups"] == same_data_ptr_groups(saved), name
        with torch.no_grad():
            assert_same_outputs(r["out"], model(*args, **kwargs))
            m64 = copy.deepcopy(model).double()
            args64 = tuple(a.double() if a.is_floating_point() else a for a in args)
            kwargs64 = {k: v.double() if v.is_floating_point() else v for k, v in kwargs.items()}
            assert_same_outputs(r["out64"], m64(*args64, **kwargs64))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_loaded_modules_move_to_cuda():
    model, g = mixed()
    x = torch.randn(3, 4)
    for saved in (g.to_module(), bridge.to_sequential(g, stages=2)):
        loaded = _round_trip(saved, map_location="cpu").to("cuda")
        with torch.no_grad():
            assert_same_outputs(loaded(x.cuda()), copy.deepcopy(model).cuda()(x.cuda()))
    # saved from CUDA, loaded onto the CPU
    loaded = _round_trip(g.to_module().to("cuda"), map_location="cpu")
    with torch.no_grad():
        assert_same_outputs(loaded(x), model(x))
