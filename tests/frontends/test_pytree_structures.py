"""Containers registered with torch's pytree (a user's own class, HuggingFace's ``DynamicCache``) as inputs and
outputs: traced through, rebuilt as the model returns them by ``g.run`` and the generated module (pickled too), and
named by their keys in ONNX files. The oracle is eager PyTorch on fresh values, and onnxruntime through
``bridge.verify``."""
from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn as nn
from torch.utils import _pytree

import bridge
from tests.helpers import assert_same_outputs


class State:
    """A container of tensors torch's pytree knows (registered below), as torch.export asks of one."""

    def __init__(self, h: torch.Tensor, c: torch.Tensor, step: int = 0):
        self.h, self.c, self.step = h, c, step


_pytree.register_pytree_node(
    State, lambda s: ([s.h, s.c], s.step), lambda kids, step: State(kids[0], kids[1], step),
    flatten_with_keys_fn=lambda s: ([(_pytree.GetAttrKey("h"), s.h), (_pytree.GetAttrKey("c"), s.c)], s.step))


class Cell(nn.Module):
    def __init__(self):
        super().__init__()
        self.ih, self.hh = nn.Linear(4, 9), nn.Linear(3, 9)

    def forward(self, x, state: State):
        i, f, g = (self.ih(x) + self.hh(state.h)).chunk(3, -1)
        c = torch.sigmoid(f) * state.c + torch.sigmoid(i) * torch.tanh(g)
        return x.sum(-1), State(torch.tanh(c), c, state.step + 1)


def _state(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 4, generator=g), State(torch.randn(2, 3, generator=g), torch.randn(2, 3, generator=g), 5)


def _same_state(got, ref):
    assert type(got[1]) is State and got[1].step == ref[1].step
    assert_same_outputs((got[0], got[1].h, got[1].c), (ref[0], ref[1].h, ref[1].c))


@pytest.mark.parametrize("frontend", ["fx", "record", "export"])
def test_a_registered_container_in_and_out(frontend, tmp_path):
    torch.manual_seed(0)
    model = Cell().eval()
    x, s = _state(0)
    g = bridge.trace(model, (x, s), frontend=frontend)
    assert [v.name for v in g.inputs] == ["x", "state_0", "state_1"]
    x2, s2 = _state(1)
    with torch.no_grad():
        ref = model(x2, State(s2.h, s2.c, 5))
    _same_state(g.run(x2, s2), ref)
    module = pickle.loads(pickle.dumps(g.to_module()))
    _same_state(module(x2, s2), ref)
    path = tmp_path / "cell.onnx"
    proto = bridge.to_onnx(g, str(path))
    assert [o.name for o in proto.graph.output] == ["output_0", "output_1_h", "output_1_c"]
    assert bridge.verify(model, str(path), (x2, State(s2.h, s2.c, 5))).ok


def test_a_container_the_pytree_does_not_know_is_refused_by_name():
    class Opaque:
        def __init__(self, t):
            self.t = t

    class M(nn.Module):
        def forward(self, x):
            return Opaque(x * 2)

    with pytest.raises(bridge.TraceError, match="output.*Opaque"):
        bridge.trace(M(), (torch.randn(2),))


def _gpt2():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100, n_positions=64, bos_token_id=0,
                                  eos_token_id=0)
    model = transformers.GPT2LMHeadModel(cfg).eval()

    def prefix(n, seed, batch=1):
        ids = torch.randint(0, 100, (batch, n), generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            return model(ids, use_cache=True).past_key_values

    return model, prefix


def _step(model, ids, cache, mask):
    with torch.no_grad():
        return model(ids, past_key_values=cache, attention_mask=mask, use_cache=True)


def _same_step(got, ref):
    assert type(got.past_key_values) is type(ref.past_key_values)
    assert_same_outputs(got.logits, ref.logits)
    for a, b in zip(got.past_key_values.layers, ref.past_key_values.layers):
        assert_same_outputs((a.keys, a.values), (b.keys, b.values))


def test_hf_decode_step_with_its_cache_object(tmp_path):
    """A decode step of GPT-2 takes and returns a DynamicCache: traced (record, static shapes), run on another
    cache of the same shapes, and exported with the cache's tensors as inputs and outputs."""
    model, prefix = _gpt2()
    ids, mask = torch.randint(0, 100, (1, 1)), torch.ones(1, 6, dtype=torch.long)
    cache = prefix(5, 0)
    g = bridge.trace(model, (ids,), {"past_key_values": cache, "attention_mask": mask, "use_cache": True})
    assert g.meta["frontend"] == "record"
    assert cache.layers[0].keys.shape[2] == 5  # the example cache is left as it was
    ids2 = torch.randint(0, 100, (1, 1), generator=torch.Generator().manual_seed(7))
    _same_step(g.run(ids2, past_key_values=prefix(5, 1), attention_mask=mask, use_cache=True),
               _step(model, ids2, prefix(5, 1), mask))
    path = str(tmp_path / "step.onnx")
    proto = bridge.to_onnx(g, path)
    assert [o.name for o in proto.graph.output][1:] == ["cache_key_cache_0", "cache_key_cache_1",
                                                         "cache_value_cache_0", "cache_value_cache_1"]
    rep = bridge.verify(model, path, (ids2,), {"past_key_values": prefix(5, 1), "attention_mask": mask,
                                               "use_cache": True})
    assert rep.ok, str(rep)


def test_hf_decode_step_with_symbolic_past_and_new_lengths():
    """Past and new lengths as symbolic dims (torch.export): one graph for every past length and chunk size."""
    model, prefix = _gpt2()
    dyn = {"input_ids": {1: "new"}, "attention_mask": {1: "total"},
           **{f"kwargs_{i}": {2: "past"} for i in range(4)}}
    g = bridge.trace(model, (torch.randint(0, 100, (1, 2)),),
                     {"past_key_values": prefix(5, 0), "attention_mask": torch.ones(1, 7, dtype=torch.long),
                      "use_cache": True}, dynamic=dyn)
    assert g.inputs[2].spec.shape[2] == "past"
    for past, new in ((1, 1), (3, 1), (9, 4)):
        ids = torch.randint(0, 100, (1, new), generator=torch.Generator().manual_seed(past))
        mask = torch.ones(1, past + new, dtype=torch.long)
        got = g.run(ids, past_key_values=prefix(past, 1), attention_mask=mask, use_cache=True)
        _same_step(got, _step(model, ids, prefix(past, 1), mask))
        assert got.past_key_values.layers[0].keys.shape[2] == past + new
