"""Cold start: ``import bridge`` and each verb load only what they use (issue 13). onnx alone costs ~0.4 s to import
(ml_dtypes), rich ~20 ms, the op files and the analysis modules a few ms each; a fresh process that traces or
summarizes a model must not pay for the ONNX writer, onnxruntime or the views."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

_CODE = r'''
import json, sys
import torch
base = set(sys.modules)
stages = {}
import bridge
stages["import"] = sorted(set(sys.modules) - base)
model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Flatten(),
                            torch.nn.Linear(4 * 6 * 6, 5)).eval()
x = torch.randn(2, 3, 8, 8)
text = str(bridge.trace(model, x))
stages["trace"] = sorted(set(sys.modules) - base)
text = str(bridge.summary(model, x))
stages["summary"] = sorted(set(sys.modules) - base)
print(json.dumps(stages))
'''

# never loaded by these verbs: the ONNX side, the table library (str(summary) lays its table out itself), passes
# and pictures
_NEVER = ["onnx", "onnxruntime", "ml_dtypes", "rich", "bridge.backends.onnx", "bridge.backends.ort",
          "bridge.frontends.onnx", "bridge.frontends.export", "bridge.passes", "bridge.views"]


@pytest.fixture(scope="module")
def loaded() -> dict[str, list[str]]:
    """The modules a fresh process loads at each stage, beyond those torch itself loaded."""
    r = subprocess.run([sys.executable, "-c", _CODE], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[-1])


def _hits(mods: list[str], names: list[str]) -> list[str]:
    return [m for m in mods if any(m == n or m.startswith(n + ".") for n in names)]


def test_import_bridge_loads_no_op_files_and_no_verbs(loaded):
    mods = loaded["import"]
    assert not _hits(mods, _NEVER)
    # the op registry fills on first use: its files stay unread until a model is traced
    assert not _hits(mods, ["bridge.ops.nn", "bridge.ops.elementwise", "bridge.ops.shape", "bridge.api",
                            "bridge.analysis", "bridge.backends"])


def test_trace_loads_no_onnx_and_no_analysis(loaded):
    mods = loaded["trace"]
    assert not _hits(mods, _NEVER + ["bridge.analysis", "bridge.api"])
    assert "bridge.ops.nn" in mods  # the registry is complete once a model is traced


def test_summary_loads_no_onnx_no_rich_and_only_its_analysis(loaded):
    mods = loaded["summary"]
    assert not _hits(mods, _NEVER)
    assert "bridge.analysis.summary" in mods
    # bridge.analysis loads its submodules on first use: diff, report and topology are other verbs'
    assert not _hits(mods, ["bridge.analysis.diff", "bridge.analysis.report", "bridge.analysis.topology"])


_OPSET = r'''
import json, sys
from bridge.backends.onnx import max_opset
print(json.dumps({"opset": max_opset(), "onnxruntime": "onnxruntime" in sys.modules}))
'''


def _max_opset_in_fresh_process(cache_home) -> dict:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache_home)}
    r = subprocess.run([sys.executable, "-c", _OPSET], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[-1])


def test_max_opset_probes_onnxruntime_once_per_installation(tmp_path):
    """The first process asks onnxruntime (and keeps the answer under $XDG_CACHE_HOME/bridge); the next ones read
    it without importing onnxruntime; an unreadable cache is asked again, never trusted."""
    first = _max_opset_in_fresh_process(tmp_path)
    assert first["onnxruntime"] and first["opset"] >= 17
    cache = tmp_path / "bridge" / "max_opset.json"
    assert list(json.loads(cache.read_text()).values()) == [first["opset"]]
    assert _max_opset_in_fresh_process(tmp_path) == {"opset": first["opset"], "onnxruntime": False}
    cache.write_text("{not json")
    assert _max_opset_in_fresh_process(tmp_path) == first
    key = next(iter(json.loads(cache.read_text())))
    cache.write_text(json.dumps({key: 999}))  # an opset onnx does not define: probed again
    assert _max_opset_in_fresh_process(tmp_path) == first


def test_the_first_trace_of_a_process_maps_torch_factories():
    """A process's first trace loads the op registry; fx's tracer patches torch's factories (``torch.arange`` takes
    traced sizes) while it runs. Loaded then, the registry keyed ``arange`` by the patch, and once the patch was gone
    every recorded ``torch.arange`` was an opaque call that no file could hold."""
    code = r'''
import torch, bridge


class M(torch.nn.Module):
    def forward(self, x):
        if x.shape[0] > 1:  # fx cannot trace it, so it patches, fails, and the recording follows
            x = x * 2
        return x + torch.arange(x.shape[-1])


g = bridge.trace(M(), (torch.randn(2, 3),))
print(g.meta["frontend"], sorted({n.op for n in g.nodes}))
'''
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["record", "['add',", "'arange',", "'mul']"], r.stdout
