"""The docs: every python block in docs/*.md runs as written, and the site builds with --strict."""
from __future__ import annotations

import glob
import importlib.util
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
BLOCKS = [(os.path.basename(p), i, code) for p in PAGES
          for i, code in enumerate(re.findall(r"^```python\n(.*?)^```", open(p).read(), re.S | re.M))]


def test_pages_in_nav():
    nav = open(os.path.join(ROOT, "mkdocs.yml")).read()
    for page in ("index.md", "quickstart.md", "concepts.md", "cli.md", "api.md", "benchmarks.md"):
        assert os.path.exists(os.path.join(ROOT, "docs", page)), page
        assert page in nav, page


@pytest.mark.parametrize("page, i, code", BLOCKS, ids=[f"{p}-{i}" for p, i, _ in BLOCKS])
def test_python_block_runs(page, i, code, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks may write files (model.onnx)
    exec(compile(code, f"<{page} block {i}>", "exec"), {"__name__": "__docs__"})


def test_index_output_is_current(capsys):
    """The graph text shown on the home page is what its code prints."""
    text = open(os.path.join(ROOT, "docs", "index.md")).read()
    code = re.search(r"^```python\n(.*?)^```", text, re.S | re.M).group(1)
    shown = re.search(r"^```text\n(.*?)^```", text, re.S | re.M).group(1)
    exec(compile(code, "<index.md>", "exec"), {"__name__": "__docs__"})
    assert capsys.readouterr().out.strip() == shown.strip()


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="docs extra not installed")
def test_mkdocs_build_strict(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                       capture_output=True, text=True, cwd=ROOT, timeout=600,
                       env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert r.returncode == 0, r.stderr
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for anchor in ("bridge.trace.trace", "bridge.Graph.run", "bridge.errors.TraceError", "bridge.errors.InputError"):
        assert f'id="{anchor}"' in api, anchor


def test_op_catalog_is_current():
    """docs/ops.md is what the registry says (regenerate: python -m bridge.ops.catalog > docs/ops.md)."""
    import torch

    from bridge.ops import catalog

    text = open(os.path.join(ROOT, "docs", "ops.md")).read()
    written_for = re.search(r"Core ATen opset \(torch ([\d.]+):", text).group(1)
    if written_for != torch.__version__.split("+")[0]:  # the Core ATen section counts this torch's operators
        pytest.skip(f"docs/ops.md was generated with torch {written_for}, this is {torch.__version__} (the pinned "
                    "install regenerates and checks it)")
    assert text == catalog.markdown()


def test_adding_an_op_shows_the_code_as_it_is():
    """docs/concepts.md walks through adding ``shrink``: the code it shows is bridge/ops/elementwise.py's, verbatim."""
    text = open(os.path.join(ROOT, "docs", "concepts.md")).read()
    shown = re.search(r"^## Adding an op\n.*?^```py\n(.*?)^```", text, re.S | re.M).group(1)
    source = open(os.path.join(ROOT, "bridge", "ops", "elementwise.py")).read()
    assert shown.startswith("# ---- shrink") and shown in source


def test_api_page_counts_the_fault_corpus_as_pytest_does():
    """docs/api.md gives the size of the bad-input corpus ("over N"): ``pytest -m fault`` collects at least that."""
    import re
    import subprocess
    import sys

    text = open(os.path.join(ROOT, "docs", "api.md")).read()
    claimed = int(re.search(r"`pytest -m fault`, over (\d+) cases", text).group(1))
    out = subprocess.run([sys.executable, "-m", "pytest", "-m", "fault", "--collect-only", "-q", "-o", "addopts="],
                         cwd=ROOT, capture_output=True, text=True).stdout
    collected = int(re.search(r"(\d+)/\d+ tests collected", out).group(1))
    assert collected >= claimed >= 80
