"""Real third-party models, where their packages are installed (skipped elsewhere): HuggingFace transformers
(ModelOutput dataclasses, attention masks) and torchvision classifiers, traced, run and exported to ONNX."""
import pytest
import torch

import bridge
from tests.helpers import assert_same_outputs

transformers = pytest.importorskip("transformers", reason="transformers not installed")


def _bert():
    cfg = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=32)
    torch.manual_seed(0)
    return transformers.BertModel(cfg).eval()


def _gpt2():
    cfg = transformers.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=2, n_positions=32)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg).eval()


def _inputs():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 100, (2, 7), generator=g)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0
    return ids, mask


@pytest.mark.parametrize("make", [_bert, _gpt2], ids=["bert", "gpt2"])
def test_huggingface_model_output(make):
    model = make()
    ids, mask = _inputs()
    kwargs = {"input_ids": ids, "attention_mask": mask}
    g = bridge.trace(model, (), kwargs)
    g.check()
    with torch.no_grad():
        ref = model(**kwargs)
        got = g.run(**kwargs)
    assert type(got) is type(ref)
    assert list(got.keys()) == list(ref.keys())
    for k in ref.keys():
        if isinstance(ref[k], torch.Tensor):
            assert_same_outputs(got[k], ref[k])


@pytest.mark.parametrize("make", [_bert, _gpt2], ids=["bert", "gpt2"])
def test_huggingface_onnx(make, tmp_path):
    model = make()
    ids, mask = _inputs()
    kwargs = {"input_ids": ids, "attention_mask": mask}
    path = tmp_path / "hf.onnx"
    bridge.to_onnx(model, path, kwargs=kwargs)
    rep = bridge.verify(model, path, (), kwargs)
    assert rep.ok, str(rep)
