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
    assert {"quickstart.py", "untraceable.py"} <= names


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
