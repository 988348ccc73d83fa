"""Export at real-model scale, as a user's script runs it: each job in a fresh process, full-size models with random
weights, time and peak memory side by side with both torch.onnx exporters and the floor.

Jobs (one fresh process each; the model is built and run once before the clock starts):

- ``bridge``: ``bridge.to_onnx(model, path, args=...)``, imports included;
- ``legacy`` / ``dynamo``: ``torch.onnx.export(..., dynamo=False / True)``, imports included;
- ``floor``: one forward pass (what a trace must at least do) plus the weight bytes written to a file, as every
  exporter here writes (into the page cache, not synced: ``BRIDGE_FSYNC=1`` makes bridge sync, and the floor with
  it);
- ``summary`` / ``torchinfo``: ``bridge.summary(model, args)`` against ``torchinfo.summary`` on the same input.

"extra MiB" is the peak resident memory of the job above what the process held once the model was built and run
(Linux ``VmHWM``, reset through ``/proc/self/clear_refs``). Every file written is then checked in onnxruntime on a
fresh input against eager PyTorch (``err``: max |ort - eager| / max |eager| over the outputs), and the three files
are timed in onnxruntime (CPU, one thread) in turns.

    python benchmarks/export_scale.py [--models resnet50,bert_base] [--jobs bridge,floor] [--json out.json]
                                      [--dir DIR] [--no-latency]

Targets (issue 13; medians over the models each exporter can take): bridge >= 3x faster than dynamo=False and
>= 5x faster than dynamo=True, within 2x of the floor on models over 300 MiB; extra peak memory <= half the
weight bytes on every model; bridge.summary no slower than torchinfo; onnxruntime latency of bridge's file <= the
better torch.onnx file.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests.corpus: the corpus's random-weight helper

JOBS = ("bridge", "legacy", "dynamo", "floor", "summary", "torchinfo")
EXPORTERS = ("bridge", "legacy", "dynamo")


# ---- the models: name -> (what it is, builder) ------------------------------------------------------------------
def _torchvision(name, **kw):
    def build():
        import torch
        import torchvision

        from tests.corpus import informative

        torch.manual_seed(0)
        # ViT's head is zero-initialized: random weights there too, or the parity check compares zeros
        model = informative(getattr(torchvision.models, name)(weights=None, **kw)).eval()

        def inputs(seed):
            g = torch.Generator().manual_seed(seed)
            return (torch.randn(1, 3, 224, 224, generator=g),), {}
        return model, inputs
    return build


def _hf(kind, seq=128, **config):
    def build():
        import torch
        import transformers

        torch.manual_seed(0)
        cfg_cls, model_cls = {"bert": ("BertConfig", "BertModel"), "gpt2": ("GPT2Config", "GPT2LMHeadModel"),
                              "llama": ("LlamaConfig", "LlamaForCausalLM")}[kind]
        cfg = getattr(transformers, cfg_cls)(**config)
        model = getattr(transformers, model_cls)(cfg).eval()
        vocab = cfg.vocab_size

        def inputs(seed):
            g = torch.Generator().manual_seed(seed)
            ids = torch.randint(0, vocab, (1, seq), generator=g)
            return (ids,), {"attention_mask": torch.ones(1, seq, dtype=torch.int64)}
        return model, inputs
    return build


MODELS = {
    "resnet50": ("ResNet-50", _torchvision("resnet50")),
    "vit_b_16": ("ViT-B/16", _torchvision("vit_b_16")),
    "convnext_tiny": ("ConvNeXt-T", _torchvision("convnext_tiny")),
    "bert_base": ("BERT-base", _hf("bert")),
    "gpt2_medium": ("GPT-2 medium", _hf("gpt2", n_embd=1024, n_layer=24, n_head=16, use_cache=False)),
    # TinyLlama's widths with 12 layers: 659 M parameters, 2.46 GiB in fp32, so the ONNX weights go to a data file
    "llama_2g": ("Llama-style (2.5 GiB)", _hf("llama", hidden_size=2048, intermediate_size=5632, num_hidden_layers=12,
                                              num_attention_heads=32, num_key_value_heads=4, vocab_size=32000,
                                              use_cache=False)),
}


# ---- one job in this (fresh) process --------------------------------------------------------------------------
def _mib(field: str) -> float:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+) kB", f.read()).group(1)) / 1024


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS


def _flat(out):
    import torch

    return [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def write_weights(model, path: str) -> None:
    """The floor's write: every weight's bytes from its storage into ``path`` (each storage once), unsynced as every
    exporter here writes, unless ``BRIDGE_FSYNC`` asks (as bridge's ``fileio.durable()`` reads it)."""
    import torch

    seen = set()
    with open(path, "wb") as f:
        for t in list(model.parameters()) + list(model.buffers()):
            s = t.untyped_storage()
            if s.data_ptr() not in seen:
                seen.add(s.data_ptr())
                f.write(memoryview(torch.tensor([], dtype=torch.uint8).set_(s).numpy()))
        f.flush()
        if os.environ.get("BRIDGE_FSYNC", "").strip().lower() in ("1", "true", "yes", "on"):
            os.fsync(f.fileno())


def child(model_name: str, job: str, path: str) -> dict:
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    model, inputs = MODELS[model_name][1]()
    args, kwargs = inputs(0)
    with torch.no_grad():
        model(*args, **kwargs)
    weights = {}
    for t in list(model.parameters()) + list(model.buffers()):
        weights[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    gc.collect()
    _reset_peak()
    base = _mib("VmRSS")
    t0 = time.perf_counter()
    if job == "bridge":
        import bridge

        bridge.to_onnx(model, path, args=args, kwargs=kwargs)
    elif job in ("legacy", "dynamo"):
        import contextlib
        import io
        import logging
        import warnings

        warnings.filterwarnings("ignore")
        logging.disable(logging.WARNING)
        with contextlib.redirect_stdout(io.StringIO()):
            torch.onnx.export(model, args, path, kwargs=kwargs or None, dynamo=job == "dynamo",
                              opset_version=18 if job == "legacy" else None)
    elif job == "floor":
        with torch.no_grad():
            model(*args, **kwargs)
        write_weights(model, path)
    elif job == "summary":
        import bridge

        str(bridge.summary(model, args, kwargs))
    elif job == "torchinfo":
        import torchinfo

        str(torchinfo.summary(model, input_data=list(args), verbose=0, **kwargs))
    seconds = time.perf_counter() - t0
    row = {"model": model_name, "job": job, "s": seconds, "extra_mib": _mib("VmHWM") - base,
           "weights_mib": sum(weights.values()) / 2**20}
    if job in EXPORTERS:
        row["err"] = _check(model, inputs, path)
    return row


def _check(model, inputs, path) -> float:
    """max |ort - eager| / max |eager| over the outputs, on an input the export never saw."""
    import onnxruntime as ort
    import torch

    args, kwargs = inputs(1)
    with torch.no_grad():
        ref = _flat(model(*args, **kwargs))
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    leaves = _flat((args, kwargs))
    feeds = {i.name: t.numpy() for i, t in zip(sess.get_inputs(), leaves)}
    got = sess.run(None, feeds)
    if len(got) != len(ref):
        return float("inf")
    return max(float((torch.as_tensor(g) - r).abs().max() / max(r.abs().max(), 1e-30)) for g, r in zip(got, ref))


# ---- onnxruntime latency of the files, in one process ---------------------------------------------------------
def latency(model_name: str, paths: dict[str, str], rounds: int = 8) -> dict:
    """Median ms of one run of each file in onnxruntime (CPU, one thread). The sessions take turns, a run each per
    round, all loaded at once; a model over 1 GiB loads one session at a time (three would not fit), a few runs
    each, the order reversed every round."""
    import onnxruntime as ort

    _, inputs = MODELS[model_name][1]()
    args, kwargs = inputs(1)
    leaves = _flat((args, kwargs))

    def load(path):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = 1, 1, 3
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        feeds = {i.name: t.numpy() for i, t in zip(sess.get_inputs(), leaves)}
        sess.run(None, feeds)  # warm-up
        return sess, feeds

    def timed(sess, feeds):
        t = time.perf_counter()
        sess.run(None, feeds)
        return time.perf_counter() - t

    samples: dict = {k: [] for k in paths}
    size = sum(os.path.getsize(p) + sum(os.path.getsize(os.path.join(os.path.dirname(p), n))
                                        for n in os.listdir(os.path.dirname(p) or ".")
                                        if n.startswith(os.path.basename(p) + ".")) for p in paths.values())
    if size < 2**30 * 1.5:
        sessions = {k: load(p) for k, p in paths.items()}
        for r in range(rounds):
            for name in (list(paths) if r % 2 == 0 else list(paths)[::-1]):
                samples[name].append(timed(*sessions[name]))
    else:
        for r in range(3):
            for name in (list(paths) if r % 2 == 0 else list(paths)[::-1]):
                sess, feeds = load(paths[name])
                samples[name] += [timed(sess, feeds) for _ in range(3)]
                del sess
    return {k: 1e3 * statistics.median(v) for k, v in samples.items()}


# ---- the parent: every job in a fresh process -------------------------------------------------------------------
def child_env(folder: str) -> dict:
    """The environment of the jobs: bytecode cached (in ``folder``) as an installed package has it, even where
    this shell sets PYTHONDONTWRITEBYTECODE; ``warm_up`` fills the cache before anything is timed."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = os.path.join(folder, "pycache")
    return env


def warm_up(folder: str) -> None:
    """One untimed run of every job's code on a small model, so each timed process reads compiled bytecode."""
    code = ("import torch, bridge, torchinfo, torch.onnx\n"
            "m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).eval()\n"
            "x = torch.randn(1, 3, 8, 8)\n"
            f"bridge.to_onnx(m, {os.path.join(folder, 'warm.onnx')!r}, args=(x,))\n"
            "str(bridge.summary(m, x))\n")
    subprocess.run([sys.executable, "-c", code], env=child_env(folder), capture_output=True, timeout=600)


def warm_memory(limit: int = 8 * 2**30) -> None:
    """Touch ``limit`` bytes (at most half the memory available) in a throwaway process, untimed. A VM backs memory
    no process has touched since it booted at a fraction of the speed of memory freed a moment ago (here 1.35 GB
    written into fresh page cache took 1.8-3.2 s, the same bytes again 0.26 s), so without this the first job
    pays for the memory every later job reuses: the first exporter of a run looked slower than it is."""
    avail = next((int(line.split()[1]) * 1024 for line in open("/proc/meminfo") if line.startswith("MemAvailable")),
                 0) if os.path.exists("/proc/meminfo") else 0
    n = min(limit, avail // 2)
    if n > 0:
        subprocess.run([sys.executable, "-c", f"import numpy as np\na = np.empty({n}, np.uint8)\na[::4096] = 1"],
                       timeout=600)


def child_row(script: str, model_name: str, job: str, extra: list[str], folder: str, timeout: float) -> dict:
    """``script --child model job *extra`` in a fresh process: the JSON row it prints last, or a row naming the
    error (its last line of stderr, or the timeout)."""
    cmd = [sys.executable, script, "--child", model_name, job, *extra]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=child_env(folder))
    except subprocess.TimeoutExpired:
        return {"model": model_name, "job": job, "error": f"timed out after {timeout:.0f} s"}
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = (p.stderr.strip().splitlines() or ["(no output)"])[-1]
    return {"model": model_name, "job": job, "error": tail[:200]}


def run_job(model_name: str, job: str, folder: str, timeout: float) -> dict:
    path = os.path.join(folder, f"{model_name}.{job}.onnx")
    row = child_row(os.path.abspath(__file__), model_name, job, [path], folder, timeout)
    if job in EXPORTERS and "error" not in row:
        row["path"] = path
    return row


def _import_time(module: str, folder: str) -> float:
    """Seconds a fresh process takes to import ``module`` after torch (a fixed cost of every ONNX export)."""
    code = f"import time, torch\nt = time.perf_counter()\nimport {module}\nprint(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], env=child_env(folder), capture_output=True, text=True)
    return round(float(out.stdout.strip().splitlines()[-1]), 3) if out.returncode == 0 else None


def _f(v, spec):
    return "-" if v is None else format(v, spec)


def summarize(rows: list[dict], lat: dict) -> list[dict]:
    """One dict per model: each job's seconds and extra MiB (None where it failed), the ratios and latencies."""
    by = {(r["model"], r["job"]): r for r in rows if "error" not in r}
    out = []
    for m in dict.fromkeys(r["model"] for r in rows):
        row = {"model": m, "weights_mib": next((r["weights_mib"] for r in rows
                                                if r["model"] == m and "weights_mib" in r), None)}
        for job in JOBS:
            r = by.get((m, job))
            row[f"{job}_s"] = r["s"] if r else None
            row[f"{job}_mib"] = r["extra_mib"] if r else None
        b = row["bridge_s"]
        for job in ("legacy", "dynamo"):
            row[f"x_{job}"] = row[f"{job}_s"] / b if b and row[f"{job}_s"] else None
        row["x_floor"] = b / row["floor_s"] if b and row["floor_s"] else None
        lm = lat.get(m, {})
        row["ort_bridge_ms"] = lm.get("bridge")
        row["ort_torch_ms"] = min((lm[k] for k in ("legacy", "dynamo") if k in lm), default=None)
        out.append(row)
    return out


def markdown(rows: list[dict], lat: dict) -> str:
    """The table of docs/benchmarks.md ("Export at real-model scale"; benchmarks/plots.py charts it) and the
    medians the targets are about."""
    table = summarize(rows, lat)
    out = ["| model | weights (MiB) | bridge (s) | legacy (s) | dynamo (s) | floor (s) | x vs legacy | x vs dynamo "
           "| bridge / floor | bridge (+MiB) | legacy (+MiB) | dynamo (+MiB) | summary (s) | torchinfo (s) "
           "| ORT bridge (ms) | ORT best torch (ms) |", "|" + "---|" * 16]
    for r in table:
        out.append(f"| {MODELS[r['model']][0]} | {_f(r['weights_mib'], ',.0f')} | {_f(r['bridge_s'], '.2f')} | "
                   f"{_f(r['legacy_s'], '.2f')} | {_f(r['dynamo_s'], '.2f')} | {_f(r['floor_s'], '.2f')} | "
                   f"{_f(r['x_legacy'], '.1f')} | {_f(r['x_dynamo'], '.1f')} | {_f(r['x_floor'], '.2f')} | "
                   f"{_f(r['bridge_mib'], ',.0f')} | {_f(r['legacy_mib'], ',.0f')} | {_f(r['dynamo_mib'], ',.0f')} | "
                   f"{_f(r['summary_s'], '.3f')} | {_f(r['torchinfo_s'], '.3f')} | {_f(r['ort_bridge_ms'], '.1f')} | "
                   f"{_f(r['ort_torch_ms'], '.1f')} |")

    def med(key, rows=table):
        vals = [r[key] for r in rows if r[key] is not None]
        return statistics.median(vals) if vals else None
    big = [r for r in table if (r["weights_mib"] or 0) > 300]
    mem = [r["bridge_mib"] / r["weights_mib"] for r in table if r["bridge_mib"] is not None]
    summ = [r["summary_s"] / r["torchinfo_s"] for r in table if r["summary_s"] and r["torchinfo_s"]]
    ort_ratio = [r["ort_bridge_ms"] / r["ort_torch_ms"] for r in table if r["ort_bridge_ms"] and r["ort_torch_ms"]]
    out += ["", f"- median speedup vs legacy: {_f(med('x_legacy'), '.1f')}x (target >= 3x); vs dynamo: "
            f"{_f(med('x_dynamo'), '.1f')}x (target >= 5x)",
            f"- bridge / floor, median over the models over 300 MiB: {_f(med('x_floor', big), '.2f')} (target <= 2)",
            f"- bridge's extra peak memory / weight bytes: at most {_f(max(mem, default=None), '.2f')} "
            "(target <= 0.5 on every model)",
            f"- bridge.summary / torchinfo.summary time: at most {_f(max(summ, default=None), '.2f')}, median "
            f"{_f(statistics.median(summ) if summ else None, '.2f')} (target <= 1)",
            f"- onnxruntime latency, bridge / the better torch.onnx file: median "
            f"{_f(statistics.median(ort_ratio) if ort_ratio else None, '.2f')}, at most "
            f"{_f(max(ort_ratio, default=None), '.2f')} (target <= 1)"]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--jobs", default=",".join(JOBS))
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--dir", help="keep the files here (default: a temporary folder)")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--no-latency", action="store_true")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(*a.child)), flush=True)
        return 0
    rows, lat = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = a.dir or tmp
        os.makedirs(folder, exist_ok=True)
        warm_up(folder)
        warm_memory()
        print(json.dumps({"import onnx (s)": _import_time("onnx", folder),
                          "import ml_dtypes (s)": _import_time("ml_dtypes", folder)}), flush=True)
        for m in a.models.split(","):
            for job in a.jobs.split(","):
                row = run_job(m, job, folder, a.timeout)
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "path"}), flush=True)
            files = {r["job"]: r["path"] for r in rows if r["model"] == m and "path" in r and "error" not in r}
            if not a.no_latency and files:
                lat[m] = latency(m, files)
                print(json.dumps({"model": m, "ort_ms": lat[m]}), flush=True)
            for r in rows:  # the files of a big model take disk space: go once timed
                if r["model"] == m and "path" in r and not a.dir:
                    for f in [r["path"]] + [os.path.join(folder, n) for n in os.listdir(folder)
                                           if n.startswith(os.path.basename(r["path"]))]:
                        if os.path.exists(f):
                            os.unlink(f)
    print(markdown(rows, lat))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"rows": rows, "ort_ms": lat}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
