"""Sized recording (bridge/frontends/sized.py): ``bridge.trace(..., dynamic=..., frontend="record")`` records the
forward at several sizes and fits each size that differs as a polynomial of the symbols. Checked against eager
PyTorch (and onnxruntime) at sizes no recording took, 0 and 1 among them; what must be refused is refused."""
import pytest
import torch
import torch.nn as nn

import bridge
from bridge.errors import BridgeError, TraceError
from bridge.frontends import sized
from bridge.frontends.record import Refused
from bridge.frontends.signature import InputBinding
from tests import corpus
from tests.helpers import assert_same_outputs

class _Step(nn.Module):
    """A decoder step that reads its sizes in python, as HuggingFace's do: views by (batch, new), a position range
    ``arange(past, past + new)``, a causal mask of (new, past + new) and an attention mask of past + new."""

    def __init__(self, d=8, heads=2):
        super().__init__()
        self.heads, self.qkv, self.pos = heads, nn.Linear(d, 3 * d), nn.Embedding(64, d)

    def forward(self, x, mask, past_k, past_v):
        b, t, d = x.shape
        p = past_k.shape[2]
        x = x + self.pos(torch.arange(p, p + t))
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in self.qkv(x).chunk(3, -1))
        k, v = torch.cat([past_k, k], 2), torch.cat([past_v, v], 2)
        causal = torch.ones(t, p + t, dtype=torch.bool).tril(p)
        keep = causal[None, None] & mask[:, None, None, :].bool()
        a = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        return a.transpose(1, 2).reshape(b * t, d).view(b, t, d), k, v


_DYN = {"x": {0: "batch", 1: "new"}, "mask": {0: "batch", 1: "past+new"}, "past_k": {0: "batch", 2: "past"},
        "past_v": {0: "batch", 2: "past"}}


def _step_inputs(batch, past, new, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, past + new, dtype=torch.long)
    if past:
        mask[0, 0] = 0  # a left-padded row (its first query still sees itself)
    return (torch.randn(batch, new, 8, generator=g), mask, torch.randn(batch, 2, past, 4, generator=g),
            torch.randn(batch, 2, past, 4, generator=g))


def test_a_step_recorded_at_several_sizes_runs_at_any(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = _Step().eval()
    g = bridge.trace(model, _step_inputs(2, 3, 2), dynamic=_DYN, frontend="record")
    assert g.meta["frontend"] == "record" and len(g.meta["record_sizes"]) == 4
    assert [str(v.spec) for v in g.inputs] == ["f32[batch, new, 8]", "i64[batch, new+past]", "f32[batch, 2, past, 4]",
                                               "f32[batch, 2, past, 4]"]
    assert [str(v.spec) for v in g.outputs] == ["f32[batch, new, 8]", "f32[batch, 2, new+past, 4]",
                                                "f32[batch, 2, new+past, 4]"]
    text = str(g)
    assert "f32[batch*new, 8] = reshape(%transpose_3, shape=(%sym_mul, 8))" in text
    assert "arange(%sym_size_past, end=%sym_add)" in text and "tril(%ones, diagonal=%sym_size_past)" in text
    path = str(tmp_path / "step.onnx")
    bridge.to_onnx(g, path)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    module = g.to_module()
    for batch, past, new in ((1, 0, 1), (3, 0, 5), (2, 7, 1), (4, 11, 3)):  # prefill, decode, and neither
        args = _step_inputs(batch, past, new, seed=batch + past)
        with torch.no_grad():
            ref = model(*args)
            assert_same_outputs(g.run(*args), ref)
            assert_same_outputs(module(*args), ref)
        got = sess.run(None, dict(zip(["x", "mask", "past_k", "past_v"], (a.numpy() for a in args))))
        assert_same_outputs(tuple(torch.from_numpy(o) for o in got), ref)


class _Sizes(nn.Module):
    def forward(self, x):
        b, t = x.shape[:2]
        flat = x.reshape(b * t, -1)                    # batch*sequence
        shifted = x.new_zeros(b, t - 1)                # sequence-1
        ramp = torch.arange(2 * t + 3).float()         # 2*sequence+3
        grid = torch.ones(b * t * t, dtype=x.dtype)    # batch*sequence**2
        return flat.sum(1), shifted, ramp, grid.sum() + x.sum()


def test_sizes_are_polynomials_with_coefficients_and_constants():
    model = _Sizes()
    g = bridge.trace(model, (torch.randn(2, 3, 4),), dynamic={"x": {0: "batch", 1: "sequence"}}, frontend="record")
    specs = [str(v.spec) for v in g.outputs]
    assert specs == ["f32[batch*sequence]", "f32[batch, sequence-1]", "f32[2*sequence+3]", "f32[]"]
    assert "batch*sequence**2" in str(g)
    for shape in ((1, 1, 4), (5, 2, 4), (3, 9, 4)):
        x = torch.randn(*shape)
        assert_same_outputs(g.run(x), model(x))


def _refusal(model, args, dynamic, **kw) -> str:
    with pytest.raises(TraceError) as e:
        bridge.trace(model, args, dynamic=dynamic, frontend="record", **kw)
    return str(e.value)


def test_what_a_recording_cannot_stand_for_is_refused():
    class Branch(nn.Module):
        def forward(self, x):
            return x * 2 if x.shape[1] > 4 else x + 1

    class Loop(nn.Module):
        def forward(self, x):
            return sum(x[:, i] for i in range(x.shape[1]))

    class Half(nn.Module):
        def forward(self, x):
            return x.flatten()[: x.numel() // 2]

    class Scale(nn.Module):
        def forward(self, x):
            return x * (1.0 / x.shape[1])

    dyn = {"x": {0: "batch", 1: "sequence"}}
    x = torch.randn(2, 3)
    # the branch flips at a size a recording took (check_sizes names it): another path
    assert "another path" in _refusal(Branch(), (x,), dyn, check_sizes=[{"batch": 2, "sequence": 6}])
    assert "another path" in _refusal(Loop(), (x,), dyn)
    assert "no polynomial" in _refusal(Half(), (x,), dyn)
    assert "differs at other sizes" in _refusal(Scale(), (x,), dyn)
    # the same models where no recording sees them differ: torch.export (auto) keeps them symbolic or specializes
    g = bridge.trace(Half(), (x,), dynamic=dyn)
    assert g.meta["frontend"] != "record"
    y = torch.randn(5, 3)
    assert_same_outputs(g.run(y), Half()(y))


def test_an_ambiguous_size_is_refused():
    """Two recordings of (batch, sequence) = (2, 3) and (3, 4): a size of 3 then 4 is batch+1 and sequence alike."""
    x = torch.randn(2, 3)
    dims = sized.Dims(["x"], [x], {"x": {0: "batch", 1: "sequence"}})
    fit = sized._Fit(dims, [{"batch": 2, "sequence": 3}, {"batch": 3, "sequence": 4}], [])
    with pytest.raises(Refused, match="fits 2 polynomials"):
        fit.fit((3, 4), "here")
    runs = [{"batch": 2, "sequence": 3}, {"batch": 3, "sequence": 4}, {"batch": 5, "sequence": 2}]
    fit = sized._Fit(dims, runs, [])
    assert str(fit.fit((3, 4, 2), "here")) == "sequence"
    assert str(fit.fit((6, 12, 10), "here")) == "batch*sequence"
    assert str(fit.fit((7, 8, 6), "here")) == "sequence + 4"  # the fewest terms win
    with pytest.raises(Refused, match="fits .* polynomials"):  # three points fit many a two-term polynomial
        fit.fit((7, 9, 9), "here")
    fit = sized._Fit(dims, runs + [{"batch": 4, "sequence": 7}], [])  # a fourth tells them apart
    assert str(fit.fit((7, 9, 9, 13), "here")) == "batch + sequence + 2"
    assert str(fit.fit((12, 24, 20, 56), "here")) == "2*batch*sequence"


def test_dims_given_as_expressions():
    model = _Step().eval()
    args = _step_inputs(2, 3, 2)
    with pytest.raises(BridgeError, match="only frontend='record' relates dims"):
        bridge.trace(model, args, dynamic=_DYN, frontend="export")
    g = bridge.trace(model, args, dynamic=_DYN)  # auto: the recording, the only frontend that relates them
    assert g.meta["frontend"] == "record"
    with pytest.raises(BridgeError, match="only inside expressions"):
        bridge.trace(model, args, dynamic={**_DYN, "past_k": {0: "batch"}, "past_v": {0: "batch"}})
    with pytest.raises(BridgeError, match="dynamic= says it is new\\+past = 5"):
        bridge.trace(model, (args[0], torch.ones(2, 6, dtype=torch.long), *args[2:]), dynamic=_DYN)
    with pytest.raises(BridgeError, match="must size each of"):
        bridge.trace(model, args, dynamic=_DYN, frontend="record", check_sizes=[{"batch": 2}])


def test_resized_examples_keep_their_kind_of_values():
    ids = torch.tensor([[3, 4, 5], [6, 7, 8]])
    dims = sized.Dims(["input"], [ids], {"input": {0: "batch", 1: "sequence"}})  # nn.Identity's forward(input)
    b = dims.resized(InputBinding(nn.Identity(), (ids,), {}), {"batch": 3, "sequence": 7})
    assert b.examples[0].tolist() == [[3, 4, 5, 3, 4, 5, 3], [6, 7, 8, 6, 7, 8, 6], [3, 4, 5, 3, 4, 5, 3]]
    assert dims.resized(InputBinding(nn.Identity(), (ids,), {}), {"batch": 1, "sequence": 0}).examples[0].shape == \
        (1, 0)


# ---- real models --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gpt2", "llama", "bert"] + [pytest.param(n, marks=pytest.mark.slow) for n in (
    "mistral", "qwen2", "phi3", "gemma", "roberta", "distilbert", "vit", "clip", "whisper")])
def test_hf_models_with_dynamic_dims_match_eager_at_other_sizes(name, tmp_path):
    m, model, args, kwargs = corpus.hf_model(name)
    binding = InputBinding(model, args, kwargs)
    dyn = {n: ({0: "batch", 1: "sequence"} if t.dtype == torch.long and t.dim() == 2 else {0: "batch"})
           for n, t in zip(binding.names, binding.examples) if t.dim() >= 1}
    g = bridge.trace(model, args, kwargs, dynamic=dyn, frontend="record")
    assert g.meta["frontend"] == "record"
    dims = sized.Dims(binding.names, binding.examples, dyn)
    fresh = dims.resized(binding, {"batch": 3, "sequence": 7} if "sequence" in dims.symbols else {"batch": 3})
    with torch.no_grad():
        ref = binding.call(model, fresh.examples)
    assert_same_outputs(g.run(*fresh.examples), ref, atol=m.atol, rtol=m.rtol)
    if name in ("gpt2", "bert"):  # the file at that size in onnxruntime
        ort = pytest.importorskip("onnxruntime")
        path = str(tmp_path / "m.onnx")
        bridge.to_onnx(g, path)
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        got = sess.run(None, {i.name: t.numpy() for i, t in zip(sess.get_inputs(), fresh.examples)})
        first = ref[0] if isinstance(ref, tuple) else next(iter(ref.values()))
        assert_same_outputs(torch.from_numpy(got[0]), first, atol=1e-5, rtol=1e-4)


def test_check_sizes_without_recordings_of_symbolic_dims_is_refused():
    model, x = nn.Linear(3, 2), torch.randn(2, 3)
    for kw in ({}, {"dynamic": {"input": {0: "batch"}}, "frontend": "export"}):
        with pytest.raises(BridgeError, match="check_sizes= names sizes for the record frontend"):
            bridge.trace(model, (x,), check_sizes=[{"batch": 3}], **kw)
