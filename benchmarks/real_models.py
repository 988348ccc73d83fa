"""Real architectures from torchvision, timm and HuggingFace transformers (random weights, small configs for the
transformers): each is traced, run on fresh inputs against eager PyTorch, exported to ONNX and checked in
onnxruntime, and imported back. One JSON line per model: node count, trace and export seconds, errors relative to
the output scale (``run_err``: generated graph, ``ort_err``: onnxruntime's max abs, ``reimport_err``: the file
imported back), or the error that stopped it. Models whose package is missing are reported as such.

    pip install torch==2.14.1 torchvision==0.29.1 timm transformers   # beside bridge, in a venv
    python benchmarks/real_models.py [NAME ...]                       # all, or the named ones

Comparing two checkouts on the same corpus (PYTHONPATH=old vs new) is how a refactor is shown not to change what
real models get.
"""
import json
import os
import sys
import tempfile
import time
import warnings

import torch

import bridge
from bridge.ir import structure

warnings.filterwarnings("ignore")

def hf(name):
    import transformers as T
    torch.manual_seed(0)
    if name == "bert":
        m = T.BertModel(T.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=32))
    elif name == "gpt2":
        m = T.GPT2LMHeadModel(T.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=2, n_positions=32, use_cache=False))
    elif name == "llama":
        m = T.LlamaForCausalLM(T.LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32, use_cache=False))
    elif name == "t5":
        m = T.T5EncoderModel(T.T5Config(vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4))
    elif name == "vit_hf":
        m = T.ViTModel(T.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64))
        return m.eval(), (lambda b, g: (torch.randn(b, 3, 32, 32, generator=g),))
    return m.eval(), (lambda b, g: (torch.randint(0, 100, (b, 7), generator=g),))

def tv(name):
    import torchvision
    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None).eval(), (lambda b, g: (torch.randn(b, 3, 64, 64, generator=g),))

def tm(name):
    import timm
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False).eval(), (lambda b, g: (torch.randn(b, 3, 224, 224, generator=g),))

CORPUS = [("tv", n) for n in ["resnet50", "mobilenet_v3_small", "efficientnet_b0", "densenet121", "convnext_tiny", "swin_t", "swin_v2_t"]] \
    + [("timm", n) for n in ["resnet18", "vit_tiny_patch16_224", "convnext_atto", "levit_128s", "efficientformer_l1", "mixer_b16_224"]] \
    + [("hf", n) for n in ["bert", "gpt2", "llama", "t5", "vit_hf"]]
MAKE = {"tv": tv, "timm": tm, "hf": hf}

def leaves(o):
    return structure.flatten(o, lambda x: isinstance(x, torch.Tensor))[0]


def rel_err(got, want) -> float:
    """Largest |got - want| over every output tensor, relative to max(1, the output's scale)."""
    return max(((a.float() - b.float()).abs().max() / max(1.0, b.float().abs().max())).item()
               for a, b in zip(leaves(got), leaves(want)))


def check(kind: str, name: str) -> dict:
    row = {"model": f"{kind}:{name}"}
    try:
        model, inputs = MAKE[kind](name)
    except ImportError as e:
        return {**row, "error": f"not installed: {e.name}"}
    example = inputs(2, torch.Generator().manual_seed(0))
    fresh = inputs(2, torch.Generator().manual_seed(1))  # parity on inputs the trace never saw
    try:
        start = time.perf_counter()
        g = bridge.trace(model, example)
        row.update(trace_s=round(time.perf_counter() - start, 3), nodes=len(g.nodes))
        with torch.no_grad():
            row["run_err"] = rel_err(g.run(*fresh), model(*fresh))
    except Exception as e:  # noqa: BLE001 - reported per model
        return {**row, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"}
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.onnx")
        try:
            start = time.perf_counter()
            bridge.to_onnx(g, path)
            row["export_s"] = round(time.perf_counter() - start, 3)
            rep = bridge.verify(model, path, fresh, localize=False)
            row.update(ort_err=rep.max_abs, ort_ok=rep.ok)
            with torch.no_grad():
                row["reimport_err"] = rel_err(bridge.from_onnx(path).run(*fresh), model(*fresh))
        except Exception as e:  # noqa: BLE001 - reported per model
            row["onnx"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
    return row


if __name__ == "__main__":
    wanted = set(sys.argv[1:])
    for kind, name in CORPUS:
        if not wanted or name in wanted:
            print(json.dumps(check(kind, name)), flush=True)
