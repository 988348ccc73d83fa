"""Generation-ready decoders: ``bridge.export_decoder(model, path)`` writes one ONNX file of a HuggingFace causal
LM's step with its key/value cache, for prefill and decode alike.

The step takes the tokens of this step and the cache of the steps before, and returns the logits and the cache
grown by this step, with the names HuggingFace optimum's exporter uses (onnxruntime users know them):

- inputs ``input_ids`` (batch, sequence), ``attention_mask`` (batch, past_sequence + sequence), ``position_ids``
  (batch, sequence; where the model's forward takes them), ``past_key_values.{i}.key`` / ``.value`` (batch,
  heads, past_sequence, head_dim) per layer;
- outputs ``logits`` (batch, sequence, vocab) and ``present.{i}.key`` / ``.value`` (batch, heads,
  past_sequence + sequence, head_dim).

Batch, sequence and past_sequence are symbolic dims, so a past of length 0 is the prefill of a prompt and one
file serves both; the total length is their sum, which the file computes (shape ops), not a fourth input dim.
The step is recorded at several sizes (the record frontend with ``dynamic=``: a decoder's python reads sizes,
each recording on fake tensors) and each size fitted as a polynomial of the three; where the recordings differ
otherwise (python that branches on a size) torch.export traces it instead, with the mask's length a symbol of its
own. The model itself runs unchanged inside, the cache as the model's own ``DynamicCache`` of whole layers (past a
sliding window too: the model's masks apply the window).

``greedy(step, input_ids, attention_mask, max_new_tokens)`` is the decode loop over such a step (an onnxruntime
session, or any callable taking and returning the same names), as ``model.generate(do_sample=False)`` runs it:
left padding, position ids from the attention mask.
"""
from __future__ import annotations

import inspect
import os
from typing import Callable

import torch
import torch.nn as nn

from .errors import BridgeError, TraceError


class DecoderStep(nn.Module):
    """A causal LM's step: ``(input_ids, attention_mask, position_ids, past_key_values)`` -> ``{"logits": ...,
    "present.{i}.key": ..., "present.{i}.value": ...}`` (``past_key_values``: the model's own cache object)."""

    def __init__(self, model: nn.Module, position_ids: bool):
        super().__init__()
        self.model, self.takes_positions = model, position_ids
        # transformers 5 names the cache argument ``cache`` (``past_key_values`` still works, with a warning)
        self.cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def forward(self, input_ids, attention_mask, position_ids, past_key_values):
        kw = {"position_ids": position_ids} if self.takes_positions else {}
        kw[self.cache_arg] = past_key_values
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=True, **kw)
        result = {"logits": out.logits}
        for i, layer in enumerate(_cache_of(out).layers):
            result[f"present.{i}.key"], result[f"present.{i}.value"] = layer.keys, layer.values
        return result


def _cache_of(out):
    """The cache a HuggingFace model returned (``cache`` in transformers 5, ``past_key_values`` before: reading the
    old name warns)."""
    return out["cache"] if "cache" in out else out.past_key_values


def _full_cache():
    """An empty cache whose layers keep every key and value: the file's past and present are whole, as its attention
    mask is. A model with a sliding window makes a cache that drops keys older than the window while it counts
    the tokens seen in python, which a file's inputs cannot carry: past the window such a file's mask and past no
    longer match (wrong tokens). With whole layers the model's own masks apply the window."""
    from transformers import DynamicCache

    return DynamicCache()


def _layers(model: nn.Module) -> int:
    cfg = getattr(model, "config", None)
    n = getattr(cfg, "num_hidden_layers", None)
    if not isinstance(n, int):
        raise BridgeError(f"export_decoder takes a HuggingFace causal LM (a model with config.num_hidden_layers); "
                          f"{type(model).__name__} has none. Export a plain decoder with bridge.to_onnx and its past "
                          "tensors in the example.")
    return n


def _takes_positions(model: nn.Module) -> bool:
    return "position_ids" in inspect.signature(model.forward).parameters


def position_ids(attention_mask: torch.Tensor, new: int) -> torch.Tensor:
    """Position ids of the last ``new`` tokens, as ``generate`` makes them: the count of attended tokens before each
    one (left padding skipped), 1 at padded positions."""
    pos = attention_mask.long().cumsum(-1) - 1
    pos = pos.masked_fill(attention_mask == 0, 1)
    return pos[:, -new:]


# the sizes a decode loop runs at, beyond the example's: a prefill (no past) and a one-token step
_CHECKS = ({"batch": 3, "sequence": 5, "past_sequence": 0}, {"batch": 2, "sequence": 1, "past_sequence": 6})


def export_decoder(model: nn.Module, path: str | os.PathLike, *, opset: int | None = None, batch: int = 2,
                   past: int = 3, new: int = 2, **onnx_options):
    """Write ``model`` (a HuggingFace causal LM) as one ONNX step with its key/value cache (see the module doc).
    ``batch``, ``past``, ``new``: the example the step is traced on (sizes of at least 2); the file takes any.
    Returns the ``ModelProto`` written (weights outside it, as ``bridge.to_onnx``)."""
    from .api import mode, to_onnx
    from .frontends.signature import InputBinding
    from .trace import trace

    layers = _layers(model)
    positions = _takes_positions(model)
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, vocab, (batch, past), generator=g)
    step = DecoderStep(model, positions)
    with mode(model, False), torch.no_grad():  # a cache of full layers: see _full_cache
        cache = _cache_of(model(prompt, use_cache=True, **{step.cache_arg: _full_cache()}))
    if len(getattr(cache, "layers", ())) != layers:
        raise BridgeError(f"export_decoder: {type(model).__name__}'s cache holds {len(getattr(cache, 'layers', ()))} "
                          f"layers of keys and values, its config says {layers}")
    ids = torch.randint(0, vocab, (batch, new), generator=g)
    mask = torch.ones(batch, past + new, dtype=torch.long)
    pos = position_ids(mask, new) if positions else None
    args = (ids, mask, pos, cache)
    # each cache tensor by identity: the graph takes them in the order the cache's registration flattens it
    names = {id(t): f"past_key_values.{i}.{kv}" for i, layer in enumerate(cache.layers)
             for kv, t in (("key", layer.keys), ("value", layer.values))}
    names.update({id(ids): "input_ids", id(mask): "attention_mask", id(pos): "position_ids"})
    binding = InputBinding(step, args, {})
    if any(id(t) not in names for t in binding.examples):
        raise BridgeError(f"export_decoder: {type(model).__name__}'s cache holds tensors besides its keys and values")
    dims = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "past_sequence+sequence"},
            "position_ids": {0: "batch", 1: "sequence"}}
    dyn = {n: dims.get(names[id(t)], {0: "batch", 2: "past_sequence"}) for n, t in zip(binding.names, binding.examples)}
    with mode(model, False):
        try:  # recordings at several sizes (a prefill with no past and a one-token step among them), fitted
            graph = trace(step, args, dynamic=dyn, frontend="record", check_sizes=_CHECKS)
        except TraceError as e:  # python that branches on a size: torch.export keeps it symbolic
            reason = str(e)
            dyn[next(n for n, t in zip(binding.names, binding.examples) if t is mask)] = {0: "batch",
                                                                                          1: "total_sequence"}
            graph = trace(step, args, dynamic=dyn, frontend="export")
            graph.meta["fallback_reasons"] = {"record": reason}
    for v, t in zip(graph.inputs, binding.examples):
        graph.rename(v, names[id(t)])
    return to_onnx(graph, path, opset=opset, **onnx_options)


class Step:
    """A decoder step by name: ``step(feeds) -> outputs`` (dicts of tensors by export_decoder's names), with what the
    decode loop needs to know of its inputs: ``past_dims`` (each past input's key/value heads and head dim) and
    whether it takes ``position_ids``."""

    def __init__(self, run: Callable[[dict], dict], inputs: dict[str, tuple]):
        self.run = run
        self.past_dims = {k: (int(s[1]), int(s[3])) for k, s in inputs.items() if k.startswith("past_key_values.")}
        self.takes_positions = "position_ids" in inputs
        if not self.past_dims or "input_ids" not in inputs or "attention_mask" not in inputs:
            raise BridgeError(f"not a decoder step of export_decoder's names: inputs {list(inputs)}")

    def __call__(self, feeds: dict) -> dict:
        return self.run(feeds)


def onnx_step(session) -> Step:
    """A step over an onnxruntime ``InferenceSession`` of an ``export_decoder`` file."""
    inputs = {i.name: tuple(i.shape) for i in session.get_inputs()}
    outputs = [o.name for o in session.get_outputs()]

    def run(feeds: dict) -> dict:
        got = session.run(None, {k: torch.as_tensor(feeds[k]).numpy() for k in inputs})
        return {k: torch.from_numpy(v) for k, v in zip(outputs, got)}
    return Step(run, inputs)


def module_step(graph) -> Step:
    """A step over a graph imported back (``bridge.from_onnx(path)`` of an export_decoder file): its generated
    module, which takes the file's inputs in order and returns its outputs by name."""
    module = graph.to_module()
    names = [v.name for v in graph.inputs]

    def run(feeds: dict) -> dict:
        with torch.no_grad():
            got = module(*(feeds[k] for k in names))
        if not isinstance(got, dict):  # bridge's own files record their outputs' names; other files do not
            raise BridgeError("module_step needs a file that names its outputs (export_decoder writes one)")
        return got
    return Step(run, {v.name: tuple(v.spec.shape) for v in graph.inputs})


def greedy(step: Step, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int, *,
           eos_token_id: int | None = None, pad_token_id: int = 0) -> torch.Tensor:
    """Greedy decoding over a step (``onnx_step(session)``, ``module_step(graph)``), as
    ``model.generate(do_sample=False)`` runs it: the prompts (``input_ids``, left-padded, with their
    ``attention_mask``) in one prefill step with an empty past, then one token a step. Returns the prompts followed
    by the new tokens; a row that produced ``eos_token_id`` is padded with ``pad_token_id`` after it."""
    batch = input_ids.shape[0]
    past = {k: torch.zeros(batch, h, 0, d) for k, (h, d) in step.past_dims.items()}
    tokens, mask, new = input_ids, attention_mask.long(), input_ids
    done = torch.zeros(batch, dtype=torch.bool)
    for _ in range(max_new_tokens):
        feeds = {"input_ids": new, "attention_mask": mask, **past}
        if step.takes_positions:
            feeds["position_ids"] = position_ids(mask, new.shape[1])
        out = step(feeds)
        nxt = out["logits"][:, -1].argmax(-1)
        if eos_token_id is not None:
            nxt = torch.where(done, torch.full_like(nxt, pad_token_id), nxt)
            done |= nxt == eos_token_id
        tokens = torch.cat([tokens, nxt[:, None]], 1)
        mask = torch.cat([mask, torch.ones(batch, 1, dtype=torch.long)], 1)
        new = nxt[:, None]
        past = {k.replace("present.", "past_key_values."): v for k, v in out.items() if k.startswith("present.")}
        if eos_token_id is not None and bool(done.all()):
            break
    return tokens
