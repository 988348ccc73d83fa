"""Generate text from an exported decoder: one ONNX file with the key/value cache, run by onnxruntime.

    python examples/decoder_generation.py

A small GPT-2 (random weights: no download) is written by ``bridge.export_decoder`` as one step that takes the new
tokens and the cache of the steps before (``past_key_values.{i}.key``/``.value``) and returns the logits and the
grown cache (``present.{i}.*``). The same file does the prefill (a past of length 0) and every decode step. A greedy
loop over onnxruntime then continues two prompts of different lengths (left-padded into one batch), and the tokens
are checked against ``model.generate(do_sample=False)``, and against the file imported back into PyTorch.
"""
from __future__ import annotations

import os
import sys
import tempfile

import onnxruntime as ort
import torch
import transformers

import bridge
from bridge import decoders


def main() -> int:
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=200, n_positions=128,
                                     bos_token_id=0, eos_token_id=0, pad_token_id=0,
                                     initializer_range=0.3)  # at 0.02 a random GPT-2 repeats one token
    model = transformers.GPT2LMHeadModel(config).eval()
    prompts = torch.tensor([[0, 0, 17, 42, 99], [5, 6, 7, 8, 9]])      # the first is 3 tokens, left-padded
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "gpt2_step.onnx")
        proto = bridge.export_decoder(model, path)
        print("inputs: ", ", ".join(i.name for i in proto.graph.input))
        print("outputs:", ", ".join(o.name for o in proto.graph.output))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        tokens = decoders.greedy(decoders.onnx_step(session), prompts, mask, max_new_tokens=20)
        imported = decoders.greedy(decoders.module_step(bridge.from_onnx(path)), prompts, mask, max_new_tokens=20)

    with torch.no_grad():
        reference = model.generate(prompts, attention_mask=mask, max_new_tokens=20, do_sample=False,
                                   pad_token_id=0, eos_token_id=None)
    for row, ref in zip(tokens.tolist(), reference.tolist()):
        print(f"onnxruntime: {row[5:]}")
        print(f"generate:    {ref[5:]}")
    ok = torch.equal(tokens, reference) and torch.equal(imported, reference)
    print("same tokens as model.generate, from onnxruntime and from the imported module" if ok else
          "tokens differ from model.generate")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
