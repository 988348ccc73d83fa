"""Decoder export with the key/value cache at real-model scale, as a user's script runs it: each job in a fresh
process, side by side (the measure of ``export_scale.py``: seconds with imports, peak memory above the model's).

- ``bridge``: ``bridge.export_decoder(model, path)``: one step, cache in and out, dynamic batch/sequence/past;
- ``dynamo`` / ``legacy``: ``torch.onnx.export(step, (ids, mask, position_ids, cache), dynamo=True / False)`` of
  the same step (bridge's ``DecoderStep`` wrapper: the model with its ``DynamicCache``), with the same dynamic dims
  (``dynamic_shapes`` / ``dynamic_axes``); transformers' pytree registration of the cache done first;
- ``floor``: one forward of the step plus the weight bytes written to a file.

Each file written is checked in onnxruntime on a fresh step (another batch, past and new length) against eager.

    python benchmarks/decoder_export.py [--models gpt2_medium,llama_2g] [--jobs bridge,dynamo,legacy,floor]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

from _timing import write_json  # noqa: E402
from export_scale import _mib, _reset_peak, child_row, warm_memory, warm_up, write_weights  # noqa: E402

JOBS = ("bridge", "dynamo", "legacy", "floor")


def _gpt2_medium():
    import transformers

    return transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=1024, n_layer=24, n_head=16))


def _llama_2g():
    import transformers

    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        hidden_size=2048, intermediate_size=5632, num_hidden_layers=12, num_attention_heads=32, num_key_value_heads=4,
        vocab_size=32000))


MODELS = {"gpt2_medium": ("GPT-2 medium (1.35 GiB)", _gpt2_medium), "llama_2g": ("Llama-style (2.5 GiB)", _llama_2g)}


def _example(model, batch=2, past=3, new=2, seed=0):
    import torch

    from bridge import decoders

    g = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    with torch.no_grad():
        out = model(torch.randint(0, vocab, (batch, past), generator=g), use_cache=True)
    cache = decoders._cache_of(out)
    ids = torch.randint(0, vocab, (batch, new), generator=g)
    mask = torch.ones(batch, past + new, dtype=torch.long)
    return ids, mask, decoders.position_ids(mask, new), cache


def child(model_name: str, job: str, path: str) -> dict:
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    torch.manual_seed(0)
    model = MODELS[model_name][1]().eval()
    ids, mask, pos, cache = _example(model)
    weights = sum(t.untyped_storage().nbytes() for t in {t.untyped_storage().data_ptr(): t for t in
                                                          list(model.parameters()) + list(model.buffers())}.values())
    import gc

    gc.collect()
    _reset_peak()
    base = _mib("VmRSS")
    t0 = time.perf_counter()
    if job == "bridge":
        import bridge

        bridge.export_decoder(model, path)
    elif job in ("dynamo", "legacy"):
        import contextlib
        import io
        import logging
        import warnings

        from transformers.integrations.executorch import register_dynamic_cache_export_support

        from bridge.decoders import DecoderStep

        register_dynamic_cache_export_support()
        warnings.filterwarnings("ignore")
        logging.disable(logging.WARNING)
        step = DecoderStep(model, True)
        layers = model.config.num_hidden_layers
        with contextlib.redirect_stdout(io.StringIO()):
            if job == "dynamo":
                from torch.export import Dim

                b, s, p, t = Dim("batch"), Dim("sequence"), Dim("past_sequence"), Dim("total_sequence")
                kv = {0: b, 2: p}
                torch.onnx.export(step, (ids, mask, pos, cache), path, dynamo=True, dynamic_shapes=(
                    {0: b, 1: s}, {0: b, 1: t}, {0: b, 1: s}, [[kv] * layers, [kv] * layers]))
            else:
                names = [f"past_key_values.{i}.{k}" for k in ("key", "value") for i in range(layers)]
                torch.onnx.export(step, (ids, mask, pos, cache), path, dynamo=False, opset_version=18,
                                  input_names=["input_ids", "attention_mask", "position_ids", *names],
                                  dynamic_axes={"input_ids": [0, 1], "attention_mask": [0, 1], "position_ids": [0, 1],
                                                **{n: [0, 2] for n in names}})
    elif job == "floor":
        with torch.no_grad():
            model(ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True)
        write_weights(model, path)
    seconds = time.perf_counter() - t0
    row = {"model": model_name, "job": job, "s": seconds, "extra_mib": _mib("VmHWM") - base,
           "weights_mib": weights / 2**20}
    if job != "floor":
        row["err"] = _check(model, path)
    return row


def _check(model, path) -> float:
    """max |ort - eager| / max |eager| of the logits on a fresh step (batch 3, past 5, new 1)."""
    import onnxruntime as ort
    import torch

    ids, mask, pos, cache = _example(model, batch=3, past=5, new=1, seed=1)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": pos}
    for i, layer in enumerate(cache.layers):
        feeds[f"past_key_values.{i}.key"], feeds[f"past_key_values.{i}.value"] = layer.keys, layer.values
    names = [i.name for i in sess.get_inputs()]
    if set(names) != set(feeds):  # an exporter that named its inputs otherwise: in order
        order = [ids, mask, pos] + [t for k in ("keys", "values") for layer in cache.layers
                                    for t in [getattr(layer, k)]]
        feeds = dict(zip(names, order))
    got = sess.run(None, {k: v.contiguous().numpy() for k, v in feeds.items() if k in names})[0]
    with torch.no_grad():
        ref = model(ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True).logits
    return float((torch.as_tensor(got) - ref).abs().max() / ref.abs().max())


def run_job(model_name: str, job: str, folder: str, timeout: float) -> dict:
    path = os.path.join(folder, f"{model_name}.{job}.onnx")
    row = child_row(os.path.abspath(__file__), model_name, job, [path], folder, timeout)
    os.sync()  # untimed: the next job starts with no dirty pages of this one's file to write back (kept files too)
    if "error" not in row and job in ("bridge", "dynamo"):
        row["path"] = path  # kept for the latency of its steps
    else:
        _remove(path)
    return row


def _remove(path: str) -> None:
    """A file and its weights file (a big model's files take disk space: they go once timed)."""
    folder = os.path.dirname(path)
    for f in os.listdir(folder):
        if f.startswith(os.path.basename(path)):
            os.unlink(os.path.join(folder, f))


STEPS = {"decode": (1, 64, 1), "prefill": (1, 0, 64)}  # (batch, past, new)


def latency(paths: dict[str, str], rounds: int = 6) -> dict:
    """Median ms of a decode step (batch 1, past 64, one token) and a prefill (64 tokens, no past) of each file in
    onnxruntime (CPU, one thread), the sessions taking turns. Inputs go by position (input ids, attention mask,
    position ids, then the past tensors): torch.onnx names them otherwise.

    The sessions are loaded twice, in one order and then in the other, ``rounds`` runs each time: on this VM the
    session loaded first ran a 2.5 GiB decode step 3-7% slower than the one loaded after it, whichever file it
    held (the same file measured against itself shows it), so one order favours one exporter."""
    import statistics

    samples: dict = {}
    for order in (list(paths), list(paths)[::-1]):
        for step, got in _latency_samples({k: paths[k] for k in order}, rounds).items():
            for k, v in got.items():
                samples.setdefault(step, {}).setdefault(k, []).extend(v)
    return {step: {k: 1e3 * statistics.median(samples[step][k]) for k in paths} for step in samples}


def _latency_samples(paths: dict[str, str], rounds: int) -> dict:
    """Seconds of each step of ``STEPS`` (``rounds`` runs) of each file, the sessions loaded in ``paths``' order."""
    import numpy as np
    import onnxruntime as ort

    rng = np.random.default_rng(0)

    def load(path):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = 1, 1, 3
        return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    def feeds(sess, batch, past, new):
        ins = sess.get_inputs()
        out = {ins[0].name: rng.integers(0, 100, (batch, new)), ins[1].name: np.ones((batch, past + new), np.int64),
               ins[2].name: np.tile(np.arange(past, past + new), (batch, 1))}
        for i in ins[3:]:
            out[i.name] = rng.standard_normal((batch, i.shape[1], past, i.shape[3])).astype(np.float32)
        return out

    sessions = {k: load(p) for k, p in paths.items()}
    out = {}
    for step, sizes in STEPS.items():
        fed = {k: feeds(s, *sizes) for k, s in sessions.items()}
        for k, s in sessions.items():
            s.run(None, fed[k])  # warm-up
        samples: dict = {k: [] for k in sessions}
        for r in range(rounds):
            for k in (list(sessions) if r % 2 == 0 else list(sessions)[::-1]):
                t = time.perf_counter()
                sessions[k].run(None, fed[k])
                samples[k].append(time.perf_counter() - t)
        out[step] = samples
    return out


def markdown(rows: list[dict], lat: dict | None = None) -> str:
    by = {(r["model"], r["job"]): r for r in rows}
    out = ["| model | bridge (s) | dynamo (s) | legacy (s) | floor (s) | x vs dynamo | bridge / floor | "
           "bridge (+MiB) | dynamo (+MiB) | bridge +MiB / weights | max err bridge | max err dynamo | "
           "ORT decode bridge / dynamo (ms) | ORT prefill bridge / dynamo (ms) |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in dict.fromkeys(r["model"] for r in rows):
        r = {j: by.get((m, j), {}) for j in JOBS}

        def f(j, k, spec):
            return format(r[j][k], spec) if k in r[j] else ("fails" if "error" in r[j] else "-")

        def ratio(a, b):
            return f"{a / b:.1f}" if a and b else "-"
        b, d, fl = r["bridge"].get("s"), r["dynamo"].get("s"), r["floor"].get("s")
        w = r["bridge"].get("weights_mib")
        mem = f"{r['bridge']['extra_mib'] / w:.2f}" if w and "extra_mib" in r["bridge"] else "-"
        out.append(f"| {MODELS[m][0]} | {f('bridge', 's', '.2f')} | {f('dynamo', 's', '.2f')} | "
                   f"{f('legacy', 's', '.2f')} | {f('floor', 's', '.2f')} | {ratio(d, b)} | "
                   f"{ratio(b, fl) if b and fl else '-'} | {f('bridge', 'extra_mib', ',.0f')} | "
                   f"{f('dynamo', 'extra_mib', ',.0f')} | {mem} | {f('bridge', 'err', '.1e')} | "
                   f"{f('dynamo', 'err', '.1e')} | {_ms(lat, m, 'decode')} | {_ms(lat, m, 'prefill')} |")
    return "\n".join(out)


def _ms(lat: dict | None, model: str, step: str) -> str:
    got = ((lat or {}).get(model) or {}).get(step) or {}
    return " / ".join(f"{got[k]:.1f}" if k in got else "-" for k in ("bridge", "dynamo"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--jobs", default=",".join(JOBS))
    ap.add_argument("--json")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--no-latency", action="store_true")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each job, order reversed every round (the "
                    "fastest counts: this VM's writes vary by seconds between runs)")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(*a.child)), flush=True)
        return 0
    rows, lat = [], {}
    with tempfile.TemporaryDirectory() as folder:
        warm_up(folder)
        warm_memory()
        jobs = a.jobs.split(",")
        for m in a.models.split(","):
            runs: dict[str, list[dict]] = {j: [] for j in jobs}
            for r in range(a.repeat):  # the order reversed every round; each job's fastest run is its row
                for job in (jobs if r % 2 == 0 else jobs[::-1]):
                    row = run_job(m, job, folder, a.timeout)
                    print(json.dumps({k: v for k, v in row.items() if k != "path"}), flush=True)
                    runs[job].append(row)
            for j in jobs:
                ok = [x for x in runs[j] if "s" in x]
                row = {k: v for k, v in (min(ok, key=lambda x: x["s"]) if ok else runs[j][-1]).items() if k != "path"}
                row["runs_s"] = [x.get("s") for x in runs[j]]
                if "path" in runs[j][-1]:  # the file on disk is the last run's
                    row["path"] = runs[j][-1]["path"]
                rows.append(row)
            files = {r["job"]: r.pop("path") for r in rows if r["model"] == m and "path" in r}
            if files and not a.no_latency:
                lat[m] = latency(files)
                print(json.dumps({"model": m, "ort_ms": lat[m]}), flush=True)
            for path in files.values():
                _remove(path)
    print(markdown(rows, lat))
    write_json(a.json, rows=rows, ort_ms=lat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
