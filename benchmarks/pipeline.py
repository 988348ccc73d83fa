"""Pipeline stages, as a user's script makes them: ``bridge.to_pipeline`` against ``torch.distributed.pipelining``'s
``pipeline()``, each in a fresh process on full-size models with random weights, k stages.

- ``bridge``: ``bridge.to_pipeline(model, (microbatch,), stages=k)`` (balanced by FLOPs) and the k stage modules;
- ``torch``: ``pipeline(model, mb_args=(microbatch,), split_spec=...)`` and its k stage modules, split where a user
  would name split points without measuring: before the module that starts each k-th of the model's repeated
  blocks (ResNet-50's 16 bottlenecks, a transformer's layers).

Each job's time (imports included; the model is built and run once before the clock starts) and peak resident
memory above that (``VmHWM``), and the balance of its stages: each stage module runs on its own inputs under
torch's ``FlopCounterMode`` (the oracle: not bridge's cost model), and the imbalance is the largest stage's FLOPs
over the mean (1.0 is perfect; a pipeline runs at the speed of its largest stage). The stages' outputs are checked
against the model's on the microbatch.

    python benchmarks/pipeline.py [--models resnet50,gpt2] [--stages 4] [--json out.json]
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

from _timing import write_json  # noqa: E402
from export_scale import child_row  # noqa: E402


def _resnet50():
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet50()
    blocks = [f"{layer}.{i}" for layer, n in (("layer1", 3), ("layer2", 4), ("layer3", 6), ("layer4", 3))
              for i in range(n)]
    return model, (torch.randn(8, 3, 224, 224),), blocks


def _gpt2():
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(use_cache=False, tie_word_embeddings=False, resid_pdrop=0.0, embd_pdrop=0.0,
                                  attn_pdrop=0.0)
    model = transformers.GPT2LMHeadModel(cfg)
    return model, (torch.randint(0, cfg.vocab_size, (4, 128)),), [f"transformer.h.{i}" for i in range(12)]


def _bert():
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.BertConfig(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = transformers.BertModel(cfg, add_pooling_layer=False)
    return model, (torch.randint(0, cfg.vocab_size, (4, 128)),), [f"encoder.layer.{i}" for i in range(12)]


MODELS = {"resnet50": ("ResNet-50", _resnet50), "gpt2": ("GPT-2 (124M)", _gpt2), "bert": ("BERT-base", _bert)}
JOBS = ("bridge", "torch")


def _mib(field: str) -> float:
    import re

    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+) kB", f.read()).group(1)) / 1024


def _flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        out = fn()
    return counter.get_total_flops(), out


def _leaves(out):
    import torch

    return [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def child(model_name: str, job: str, stages: int) -> dict:
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    model, args, blocks = MODELS[model_name][1]()
    model.train()
    with torch.no_grad():
        ref = _leaves(model(*args))
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _mib("VmRSS")
    t0 = time.perf_counter()
    if job == "bridge":
        import bridge

        pipe = bridge.to_pipeline(model, args, stages=stages)
        mods = [pipe.stage_module(i) for i in range(stages)]
    else:
        from torch.distributed.pipelining import SplitPoint, pipeline

        per = len(blocks) / stages
        split = {blocks[round(i * per)]: SplitPoint.BEGINNING for i in range(1, stages)}
        pipe = pipeline(model, mb_args=args, split_spec=split)
        mods = [pipe.get_stage_module(i) for i in range(stages)]
    seconds = time.perf_counter() - t0
    extra = _mib("VmHWM") - base
    flops, x = [], args
    with torch.no_grad():
        for i, m in enumerate(mods):
            f, x = _flops(lambda: m(*x))
            flops.append(f)
            if not isinstance(x, tuple):
                x = (x,)
    got = _leaves(x)
    err = max(float((g - r).abs().max() / r.abs().max()) for g, r in zip(got, ref)) if len(got) == len(ref) \
        else float("inf")
    return {"model": model_name, "job": job, "s": seconds, "extra_mib": extra, "stage_flops": flops,
            "imbalance": max(flops) / (sum(flops) / len(flops)), "err": err}


def markdown(rows: list[dict], stages: int) -> str:
    by = {(r["model"], r["job"]): r for r in rows}
    out = ["| model | bridge (s) | torch pipeline() (s) | x faster | bridge (+MiB) | torch (+MiB) | "
           "imbalance bridge | imbalance torch | max err |", "|---|---|---|---|---|---|---|---|---|"]
    for m in dict.fromkeys(r["model"] for r in rows):
        b, t = by.get((m, "bridge"), {}), by.get((m, "torch"), {})

        def f(r, k, spec):
            return format(r[k], spec) if k in r else ("fails" if "error" in r else "-")
        x = f"{t['s'] / b['s']:.1f}" if "s" in b and "s" in t else "-"
        err = max([r["err"] for r in (b, t) if "err" in r], default=None)
        out.append(f"| {MODELS[m][0]} | {f(b, 's', '.2f')} | {f(t, 's', '.2f')} | {x} | {f(b, 'extra_mib', '.0f')} "
                   f"| {f(t, 'extra_mib', '.0f')} | {f(b, 'imbalance', '.2f')} | {f(t, 'imbalance', '.2f')} | "
                   f"{'-' if err is None else format(err, '.1e')} |")
    return "\n".join(out) + f"\n\n({stages} stages; imbalance: the largest stage's FLOPs over the mean, " \
                            "counted by torch's FlopCounterMode)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--stages", type=int, default=4)
    ap.add_argument("--json")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child[0], a.child[1], int(a.child[2]))), flush=True)
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as folder:  # bytecode cached there, as an installed package has it
        for m in a.models.split(","):
            for job in JOBS:
                row = child_row(os.path.abspath(__file__), m, job, [str(a.stages)], folder, a.timeout)
                rows.append(row)
                print(json.dumps(row), flush=True)
    print(markdown(rows, a.stages))
    write_json(a.json, stages=a.stages, rows=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
