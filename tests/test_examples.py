"""Every script in examples/ runs to completion (each checks its own numbers and exits non-zero if off)."""
from __future__ import annotations

import functools
import glob
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "examples", "*.py")))


def test_examples_exist():
    names = {os.path.basename(p) for p in EXAMPLES}
    assert {"quickstart.py", "untraceable.py", "linear_regression.py", "keras_sequential.py", "residual.py",
            "dynamic_control_flow.py"} <= names


@functools.lru_cache(maxsize=None)
def run(path: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, path], capture_output=True, text=True, cwd=ROOT, timeout=600)


@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_example_runs(path):
    r = run(path)
    assert r.returncode == 0, f"{path} exited {r.returncode}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"
    assert r.stdout.strip(), f"{path} printed nothing"


def test_quickstart_reports_parity():
    r = run(os.path.join(ROOT, "examples", "quickstart.py"))
    assert "batch 5: output (5, 10)" in r.stdout
    assert "parity OK" in r.stdout


def test_untraceable_names_the_line():
    path = os.path.join(ROOT, "examples", "untraceable.py")
    line = next(i for i, s in enumerate(open(path), 1) if "if x.sum() > 0:" in s)
    r = run(path)
    assert f".source = {path}:{line}" in r.stdout
    assert "leaf_modules=[Gate]" in r.stdout
    assert "both branches match eager PyTorch" in r.stdout


def example(name: str) -> subprocess.CompletedProcess:
    r = run(os.path.join(ROOT, "examples", name))
    assert r.returncode == 0, r.stderr
    return r


def test_linear_regression_matches_least_squares():
    out = example("linear_regression.py").stdout
    assert "%xW : f32[n, 1] = matmul(%x, %W)" in out and "%y : f32[n, 1] = add(%xW, %b)" in out
    fitted = out.split("fitted  W = ")[1].split("\n")[0]
    lstsq = out.split("lstsq   W = ")[1].split("\n")[0]
    assert fitted.split("   (")[0] == lstsq  # same to 4 decimals
    assert lstsq == "[1.9993, -3.0006, 0.4998], b = 1.2495"  # true: [2, -3, 0.5], 1.25, noise 0.01
    gap = float(out.split("max |gradient descent - least squares| = ")[1].split()[0])
    assert gap < 1e-4
    assert 'n_xW["xW (matmul)<br/>f32[n, 1]<br/>3 params, 6 FLOPs"]' in out and "graph parity OK" in out


def test_keras_sequential_both_views_and_onnxruntime():
    out = example("keras_sequential.py").stdout
    assert "params: 3754" in out
    assert 'n_m_0[["0 (Linear)<br/>f32[batch, 64]<br/>1 op, 1.34k params, 21k FLOPs"]]' in out  # 2*8*20*64 + 8*64
    assert out.count("(Linear)<br/>") == 3 and "5 (Softmax)" in out
    assert "%5 : f32[batch, 10] = softmax(%4, dim=-1)" in out
    assert "sequential.onnx: Gemm, Relu, Gemm, Relu, Gemm, Softmax" in out
    err = float(out.split("onnxruntime vs eager on batch 5: output (5, 10), max abs diff ")[1].split()[0])
    assert err < 1e-5 and "softmax rows sum to 1: True" in out and "parity OK" in out


def test_residual_reports_its_skips():
    out = example("residual.py").stdout
    assert "max abs diff vs eager 0.00e+00" in out and "chain: False" in out
    assert "skip connections (2):" in out
    assert "stem.2 -> layer1 (1 step(s) over 6)" in out  # identity skip over conv-bn-relu-conv-bn
    assert "layer1 -> layer2 (3 step(s) over 6)" in out  # projection (conv, bn) over the residual branch
    assert "as nn.Sequential: False (layer1: add merges two paths" in out
    assert 'n_m_layer2[["layer2 (Block)<br/>f32[2, 32, 16, 16]<br/>9 ops, 14.5k params' in out


def test_dynamic_control_flow_names_the_line_and_both_fixes_run():
    import re

    path = os.path.join(ROOT, "examples", "dynamic_control_flow.py")
    line = next(i for i, s in enumerate(open(path), 1) if s.strip().startswith("if h.mean() > 0:"))
    out = example("dynamic_control_flow.py").stdout
    assert f".source = {path}:{line}" in out and "torch.cond" in out and "torch.where" in out
    assert "Static: 7 ops at the top level, regions none" in out and "FLOPs, ONNX Where" in out
    assert "Dynamic: 4 ops at the top level, regions ['true_fn', 'false_fn']" in out and "FLOPs, ONNX If" in out
    assert "Looped: 3 ops at the top level, regions ['cond_fn', 'body_fn']" in out and "FLOPs, ONNX Loop" in out
    diffs = [float(x) for x in re.findall(r"\(g.run, onnxruntime, from_onnx\) (\S+)", out)]
    assert len(diffs) == 7 and max(diffs) < 1e-5  # 2 + 2 branches, 3 trip counts
    assert "(0 halvings)" in out and "(11 halvings)" in out
    assert "differs from the loop on ['x * 200 (11 halvings)']" in out
    clusters = {name: int(k) for name, k in re.findall(r"(\w+)\.dot \((\d+) region clusters\)", out)}
    assert clusters == {"Static": 0, "Dynamic": 2, "Looped": 2}, clusters

def test_pipeline_training_matches_eager():
    out = example("pipeline_training.py").stdout
    assert out.count("step ") == 4 and "parity OK" in out
    assert "2 stages balanced by flops" in out


def test_decoder_generation_gives_generates_tokens():
    out = example("decoder_generation.py").stdout
    assert "past_key_values.0.key" in out and "present.0.key" in out
    assert "same tokens as model.generate, from onnxruntime and from the imported module" in out
