"""bridge.export_decoder: one ONNX step of a HuggingFace causal LM with its key/value cache, for prefill and decode.

The oracle is ``model.generate(do_sample=False)`` with the same random weights: 20 greedy tokens from the exported
file in onnxruntime, and from the file imported back (``bridge.from_onnx(path).to_module()``), are the same tokens,
from prompts of length 1 and 7 and a batch of two left-padded prompts (the prefill is the same file with a past of
length 0)."""
from __future__ import annotations

import pytest
import torch

import bridge
from bridge import decoders
from bridge.errors import BridgeError
from tests import corpus

transformers = pytest.importorskip("transformers")

_HF = {m.name: m for m in corpus.ALL if m.source == "transformers"}
FAMILIES = ["gpt2", "llama"] + [pytest.param(n, marks=pytest.mark.slow)
                                for n in ("mistral", "qwen2", "phi3", "gemma", "opt")]
PROMPTS = [
    (torch.tensor([[5]]), torch.tensor([[1]])),
    (torch.tensor([[7, 8, 9, 10, 11, 12, 13]]), torch.ones(1, 7, dtype=torch.long)),
    (torch.tensor([[0, 0, 5, 7, 9], [3, 4, 5, 6, 8]]), torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])),
]


def _model(name):
    torch.manual_seed(0)
    model = _HF[name].build()
    with torch.no_grad():  # weights of std 0.3: the tokens vary (at HF's 0.02 a random decoder repeats one token)
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.3)
    model.config.use_cache = True
    if getattr(model.config, "sliding_window", None):  # longer than any sequence here: plain causal attention
        model.config.sliding_window = 64
    return model.eval()


@pytest.fixture(scope="module")
def ort():
    return pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("name", FAMILIES)
def test_greedy_tokens_from_the_file_and_its_import_are_generates(name, tmp_path, ort):
    model = _model(name)
    path = str(tmp_path / f"{name}.onnx")
    proto = bridge.export_decoder(model, path)
    layers = model.config.num_hidden_layers
    inputs = [i.name for i in proto.graph.input]
    assert inputs[:2] == ["input_ids", "attention_mask"]
    assert {f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")} <= set(inputs)
    assert [o.name for o in proto.graph.output] == ["logits"] + [f"present.{i}.{kv}" for i in range(layers)
                                                                 for kv in ("key", "value")]
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}
    assert dims["input_ids"] == ["batch", "sequence"] and dims["attention_mask"] == ["batch", "past_sequence+sequence"]
    assert dims["past_key_values.0.key"][0::2] == ["batch", "past_sequence"]
    so = ort.SessionOptions()
    so.log_severity_level = 3
    file_step = decoders.onnx_step(ort.InferenceSession(path, so, providers=["CPUExecutionProvider"]))
    module_step = decoders.module_step(bridge.from_onnx(path))
    for prompt, mask in PROMPTS:
        with torch.no_grad():
            ref = model.generate(prompt, attention_mask=mask, max_new_tokens=20, do_sample=False, pad_token_id=0,
                                 eos_token_id=None)
        assert ref.shape[1] == prompt.shape[1] + 20 and len(set(ref[:, prompt.shape[1]:].flatten().tolist())) > 3
        assert torch.equal(decoders.greedy(file_step, prompt, mask, 20), ref), (name, prompt.tolist())
        assert torch.equal(decoders.greedy(module_step, prompt, mask, 20), ref), (name, prompt.tolist())


def test_one_step_matches_the_model_at_other_sizes(tmp_path, ort):
    """The file at a past length and chunk size it was not traced with, against the model's own step."""
    model = _model("llama")
    path = str(tmp_path / "llama.onnx")
    bridge.export_decoder(model, path)
    step = decoders.onnx_step(ort.InferenceSession(path, providers=["CPUExecutionProvider"]))
    g = torch.Generator().manual_seed(3)
    for batch, past, new in ((1, 0, 4), (3, 5, 1), (2, 9, 3)):
        ids = torch.randint(3, 99, (batch, past + new), generator=g)
        mask = torch.ones(batch, past + new, dtype=torch.long)
        with torch.no_grad():
            cache = model(ids[:, :past], use_cache=True).past_key_values if past else None
        feeds = {"input_ids": ids[:, past:], "attention_mask": mask,
                 "position_ids": decoders.position_ids(mask, new)}
        for i in range(model.config.num_hidden_layers):  # before the model's step, which grows its cache in place
            for kv in ("key", "value"):
                h, d = step.past_dims[f"past_key_values.{i}.{kv}"]
                feeds[f"past_key_values.{i}.{kv}"] = getattr(cache.layers[i], kv + "s").clone() if past else \
                    torch.zeros(batch, h, 0, d)
        with torch.no_grad():
            ref = model(ids[:, past:], attention_mask=mask, past_key_values=cache, use_cache=True)
        out = step(feeds)
        torch.testing.assert_close(out["logits"], ref.logits, atol=1e-5 * float(ref.logits.abs().max()), rtol=1e-4)
        for i, layer in enumerate(ref.past_key_values.layers):
            torch.testing.assert_close(out[f"present.{i}.key"], layer.keys, atol=1e-5, rtol=1e-4)
            assert out[f"present.{i}.value"].shape[2] == past + new


def test_a_model_without_a_config_is_refused(tmp_path):
    with pytest.raises(BridgeError, match="HuggingFace causal LM"):
        bridge.export_decoder(torch.nn.Linear(2, 2), str(tmp_path / "x.onnx"))


class _PlainDecoder(torch.nn.Module):
    """A decoder layer that takes its past keys and values as tensors and returns them grown."""

    def __init__(self, d=16, heads=2):
        super().__init__()
        self.heads, self.qkv, self.out = heads, torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)

    def forward(self, x, past_k, past_v):
        b, t, d = x.shape
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in self.qkv(x).chunk(3, -1))
        k, v = torch.cat([past_k, k], 2), torch.cat([past_v, v], 2)
        total = k.shape[2]
        causal = torch.ones(t, total, dtype=torch.bool).tril(total - t)  # new token i sees the past and tokens <= i
        a = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=causal)
        return self.out(a.transpose(1, 2).reshape(b, t, d)), k, v


def test_a_plain_decoder_with_past_tensors_through_to_onnx(tmp_path, ort):
    torch.manual_seed(0)
    model = _PlainDecoder().eval()
    g = torch.Generator().manual_seed(1)
    x, pk, pv = torch.randn(2, 2, 16, generator=g), torch.randn(2, 2, 3, 8, generator=g), \
        torch.randn(2, 2, 3, 8, generator=g)
    path = str(tmp_path / "plain.onnx")
    bridge.to_onnx(model, path, args=(x, pk, pv),
                   dynamic={"x": {0: "batch", 1: "new"}, "past_k": {0: "batch", 2: "past"},
                            "past_v": {0: "batch", 2: "past"}})
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for batch, past, new in ((1, 0, 4), (3, 1, 1), (2, 7, 3)):  # a past of 0: the prefill, through the same file
        x, pk, pv = torch.randn(batch, new, 16, generator=g), torch.randn(batch, 2, past, 8, generator=g), \
            torch.randn(batch, 2, past, 8, generator=g)
        with torch.no_grad():
            ref = model(x, pk, pv)
        got = sess.run(None, {"x": x.numpy(), "past_k": pk.numpy(), "past_v": pv.numpy()})
        for r, o in zip(ref, got):
            torch.testing.assert_close(torch.from_numpy(o), r, atol=1e-5, rtol=1e-4)


def test_a_sliding_window_shorter_than_the_context(tmp_path, ort):
    """Mistral with a window of 8 tokens, prompts of up to 7 and 20 new tokens: the file's past holds every key (its
    mask applies the window), where generate's cache drops the keys older than the window. Before, the file took the
    model's dropping cache, whose python count of the tokens seen no file input carries: wrong tokens past the
    window."""
    model = _model("mistral")
    model.config.sliding_window = 8
    path = str(tmp_path / "mistral.onnx")
    bridge.export_decoder(model, path)
    step = decoders.onnx_step(ort.InferenceSession(path, providers=["CPUExecutionProvider"]))
    for prompt, mask in PROMPTS:
        with torch.no_grad():
            ref = model.generate(prompt, attention_mask=mask, max_new_tokens=20, do_sample=False, pad_token_id=0,
                                 eos_token_id=None)
        assert torch.equal(decoders.greedy(step, prompt, mask, 20), ref), prompt.tolist()


def test_a_step_the_recordings_cannot_fit_goes_through_torch_export(tmp_path, ort):
    """A layer that scales by a size no polynomial gives (sequence // 2 + 1): the recordings refuse it, and the file
    comes from torch.export (whose attention mask dim is an independent symbol), matching the model's own step."""
    model = _model("gpt2")
    norm = model.transformer.ln_f

    def scaled(x, _forward=norm.forward):
        return _forward(x) * (x.shape[1] // 2 + 1)
    norm.forward = scaled
    path = str(tmp_path / "gpt2.onnx")
    proto = bridge.export_decoder(model, path)
    mask_dims = [d.dim_param for d in proto.graph.input[1].type.tensor_type.shape.dim]
    assert mask_dims == ["batch", "total_sequence"]
    step = decoders.onnx_step(ort.InferenceSession(path, providers=["CPUExecutionProvider"]))
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    mask = torch.ones(1, 5, dtype=torch.long)
    layers = model.config.num_hidden_layers
    h, d = step.past_dims["past_key_values.0.key"]
    feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": decoders.position_ids(mask, 5),
             **{f"past_key_values.{i}.{kv}": torch.zeros(1, h, 0, d) for i in range(layers) for kv in ("key", "value")}}
    with torch.no_grad():
        ref = model(ids, attention_mask=mask, use_cache=True).logits
    torch.testing.assert_close(step(feeds)["logits"], ref, atol=1e-5 * float(ref.abs().max()), rtol=1e-4)
