"""The real-model corpus (tests/corpus): every torchvision classification and segmentation model, timm families and
HuggingFace transformers families, each through every path (trace, run, module, ONNX with full_check and standard
ops only, onnxruntime, import back) against eager PyTorch on a fresh input. Big models are marked slow."""
import json
import os
import re

import numpy as np
import pytest
import torch
import torch.fx

from tests import corpus

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = corpus.ALL


def _param(m):
    marks = [pytest.mark.slow] if m.slow else []
    if not corpus.available(m):
        marks.append(pytest.mark.skip(reason=f"{m.source} not installed"))
    return pytest.param(m, marks=marks, id=m.id)


@pytest.mark.parametrize("m", [_param(m) for m in MODELS])
def test_every_path(m, tmp_path):
    row = corpus.check(m, str(tmp_path))
    if os.environ.get("BRIDGE_CORPUS_ROWS"):  # rows for docs/coverage.md (python -m tests.corpus --rows DIR)
        with open(os.path.join(os.environ["BRIDGE_CORPUS_ROWS"], m.id.replace(":", "__") + ".json"), "w") as f:
            json.dump({k: v for k, v in row.items() if not k.endswith("_trace")}, f)
    failed = {p: row[p] for p in corpus.PATHS if row[p] != "ok"}
    details = "\n".join(row.get(f"{p}_trace", "") for p in failed)
    assert not failed, f"{m.id}: {failed}\n{details}"


@pytest.mark.skipif(not os.environ.get("CI"), reason="CI installs every source of the corpus; a local run may not")
def test_ci_has_every_source():
    import importlib.util

    missing = [p for p in ("torchvision", "timm", "transformers") if importlib.util.find_spec(p) is None]
    assert not missing, f"CI must install {missing} (README's install), or the corpus skips them"


def test_corpus_size_meets_the_issue():
    """Issue 12: every torchvision classification and segmentation model, 25+ timm families, 15+ HF families."""
    import importlib.util

    fams = {s: {m.family for m in MODELS if m.source == s} for s in ("torchvision", "timm", "transformers")}
    if importlib.util.find_spec("timm"):
        assert len(fams["timm"]) >= 25, sorted(fams["timm"])
    if importlib.util.find_spec("transformers"):
        assert len(fams["transformers"]) >= 15, sorted(fams["transformers"])
    if importlib.util.find_spec("torchvision"):
        import torchvision.models as M

        names = {m.name for m in MODELS if m.source == "torchvision"}
        assert set(M.list_models(module=M)) | set(M.list_models(module=M.segmentation)) <= names


def test_docs_table_lists_the_corpus():
    """docs/coverage.md is written by ``python -m tests.corpus`` from a run of every entry: it lists exactly the
    corpus, and every row passed every path when it was written (the tests above keep that true)."""
    if not all(corpus.available(m) for m in MODELS):
        pytest.skip("a source of the corpus is not installed here")
    text = open(os.path.join(ROOT, "docs", "coverage.md")).read()
    rows = re.findall(r"^\| `([\w-]+:[\w./-]+)` \|(.*)\|$", text, re.M)
    assert {r[0] for r in rows} == {m.id for m in MODELS}
    for model_id, cells in rows:
        assert "✗" not in cells, f"{model_id} failed a path when docs/coverage.md was written"


@torch.fx.wrap
def _numpy_tanh(x):
    return torch.from_numpy(np.tanh(x.detach().numpy()))  # no graph holds this: an opaque call


class _NumpyTail(torch.nn.Module):
    def forward(self, x):
        return _numpy_tanh(x + 1)


class _Counter(torch.nn.Module):
    """A python value read at trace time: the graph keeps the count it saw, eager moves on."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x * self.calls


def _toy(cls):
    return corpus.Model("torchvision", cls.__name__, "test", lambda: cls().eval(),
                        lambda g: ((torch.randn(2, 3, generator=g),), {}))


def test_check_reports_what_fails():
    """The harness fails a model on the path that breaks (not a crash, not a pass): an opaque call fails trace and
    onnx; a value baked in at trace time fails the numeric paths."""
    row = corpus.check(_toy(_NumpyTail))
    assert row["trace"].startswith("opaque calls") and row["run"] == "ok" and "UnsupportedOpError" in row["onnx"]
    assert not row["ok"]
    row = corpus.check(_toy(_Counter))
    assert row["trace"] == "ok" and not row["ok"]
    assert "Tensor-likes are not close" in row["run"] and row["run_err"] > 0
