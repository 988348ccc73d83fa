"""The docs: every python block in docs/*.md runs as written, every sample output is current, and the site builds
with --strict."""
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


def test_sample_outputs_are_current():
    """Every command and snippet output the docs and the README show is what it prints now (tests/doc_samples.py
    runs them; ``python -m tests.doc_samples --write`` rewrites the blocks that differ)."""
    r = subprocess.run([sys.executable, "-m", "tests.doc_samples"], capture_output=True, text=True, cwd=ROOT,
                       timeout=900)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}\nregenerate: python -m tests.doc_samples --write"


def test_sample_check_names_the_stale_block_and_write_fixes_it(tmp_path, capsys):
    """The generator on a page of its own: a stale console block and a stale Output block are named by line and
    rewritten by --write (and then the check passes); a command that exits with a status the page does not give
    is an error that --write does not paper over."""
    import bridge
    from tests import doc_samples

    page = tmp_path / "page.md"
    page.write_text("# A page\n\n```console\n$ bridge --version\nbridge 0.0.0\n"
                    "$ bridge inspect nothere.py:make --input 1  # exit status 2\n```\n\n"
                    "```python\nprint(6 * 7)\n```\n\nprose\n\n```text title=\"Output\"\n41\n```\n")

    def run(*args):  # in this process: the samples run in forks of it (quick: nothing here computes on tensors)
        status = doc_samples.main([str(page), *args])
        return subprocess.CompletedProcess(args, status, capsys.readouterr().out)

    r = run()
    assert r.returncode == 1
    assert "page.md:3: this console block is not what it prints now" in r.stdout
    assert f"+bridge {bridge.__version__}" in r.stdout and "page.md:15: this output block" in r.stdout
    assert run("--write").returncode == 0
    text = page.read_text()
    assert f"$ bridge --version\nbridge {bridge.__version__}\n$ bridge inspect nothere.py:make" in text
    assert "# exit status 2\nbridge inspect: error: " in text and "```text title=\"Output\"\n42\n```" in text
    assert run().returncode == 0 and run("--write").stdout == ""  # idempotent

    page.write_text(text.replace("  # exit status 2", ""))
    r = run("--write")
    assert r.returncode == 1 and "exited with status 2, the page says 0" in r.stdout
    assert page.read_text() == text.replace("  # exit status 2", "")  # the error is not written into the page


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
