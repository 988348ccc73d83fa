"""The ``bridge`` command line: ``inspect`` on model files and modules, in-process and as a subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import bridge
from bridge import cli_support
from bridge.cli import main

MODEL_SRC = textwrap.dedent('''
    import torch
    import torch.nn as nn


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.fc = nn.Linear(8, 10)

        def forward(self, x):
            y = torch.relu(self.conv(x)) + x.mean(1, keepdim=True)
            return self.fc(y.mean((2, 3)))


    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(7, 4)

        def forward(self, ids, mask):
            return self.emb(ids) * mask.unsqueeze(-1)


    class Branchy(nn.Module):
        def forward(self, x):
            if x.sum() > 0:
                return x * 2
            return x


    def make():
        torch.manual_seed(0)
        return Net()


    def with_args():
        return Net(), (torch.randn(3, 3, 5, 5),)


    def tagger():
        return Tagger()


    def branchy():
        return Branchy()


    def broken():
        raise ValueError("no weights here")


    def not_a_model():
        return 42
''')


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "models.py"
    path.write_text(MODEL_SRC)
    return str(path)


def line_in(path: str, needle: str) -> int:
    with open(path) as f:
        return next(i for i, line in enumerate(f, 1) if needle in line)


def run_cli(*args: str, cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bridge.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


# ---- success ------------------------------------------------------------------------------------------
def test_inspect_subprocess_prints_graph(model_file):
    r = run_cli("inspect", f"{model_file}:make", "--input", "2,3,16,16")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "graph(%x: f32[2, 3, 16, 16]) {"
    assert any(line.strip().startswith("%conv : f32[2, 8, 16, 16] = conv(%x, %conv.weight, %conv.bias")
               for line in lines)
    out = next(line for line in lines if line.strip().startswith("%fc :"))
    assert out.strip().startswith("%fc : f32[2, 10] = linear(") and out.endswith("# fc (Linear)")
    assert lines[-2].strip() == "return %fc" and lines[-1] == "}"


def test_inspect_in_process_matches_api(model_file, capsys):
    assert main(["inspect", f"{model_file}:make", "-i", "2,3,16,16"]) == 0
    out = capsys.readouterr().out
    model, _ = cli_support.load_model(f"{model_file}:make")
    g = bridge.trace(model, (torch.randn(2, 3, 16, 16),))
    assert out.strip() == str(g).strip()


def test_python_dash_m_bridge_and_version():
    r = subprocess.run([sys.executable, "-m", "bridge", "--version"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0
    assert r.stdout.strip() == f"bridge {bridge.__version__}"


def test_factory_example_args_and_dynamic(model_file, capsys):
    assert main(["inspect", f"{model_file}:with_args", "--dynamic", "x:0:batch"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("graph(%x: f32[batch, 3, 5, 5]) {")
    assert "%fc : f32[batch, 10] = linear(" in out


def test_dynamic_dim_with_size_one_example_is_refused(model_file, capsys):
    assert main(["inspect", f"{model_file}:make", "-i", "1,3,4,4", "--dynamic", "x:0:batch"]) == 2
    cap = capsys.readouterr()
    assert cap.out == ""
    assert "dim 0 of 'x' cannot become symbolic ('batch') from an example of size 1" in cap.err
    assert "size >= 2" in cap.err


def test_input_overrides_factory_args(model_file, capsys):
    assert main(["inspect", f"{model_file}:with_args", "--input", "4x3x6x6"]) == 0
    assert capsys.readouterr().out.startswith("graph(%x: f32[4, 3, 6, 6]) {")


def test_dtype_per_input(model_file, capsys):
    rc = main(["inspect", f"{model_file}:tagger", "-i", "2,5", "-i", "2,5", "--dtype", "int64", "--dtype", "float32"])
    assert rc == 0
    out = capsys.readouterr().out
    assert out.startswith("graph(%ids: i64[2, 5], %mask: f32[2, 5]) {")
    assert "%emb : f32[2, 5, 4] = " in out


def test_json(model_file, capsys):
    assert main(["inspect", f"{model_file}:make", "-i", "2,3,16,16", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    model, _ = cli_support.load_model(f"{model_file}:make")
    assert data["model"] == "Net"
    assert data["inputs"] == [{"name": "x", "shape": [2, 3, 16, 16], "dtype": "float32"}]
    assert data["outputs"] == [{"name": "fc", "shape": [2, 10], "dtype": "float32"}]
    assert data["num_params"] == sum(p.numel() for p in model.parameters()) == 314
    assert [n["op"] for n in data["nodes"]][0] == "conv"
    fc = data["nodes"][-1]
    assert (fc["scope"], fc["module_type"], fc["inputs"]) == ("fc", "Linear", ["mean_1", "fc.weight", "fc.bias"])


def test_module_spec(tmp_path, monkeypatch, capsys):
    pkg = tmp_path / "zoo_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(MODEL_SRC)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["inspect", "zoo_pkg.nets:make", "-i", "1,3,4,4"]) == 0
    assert "%fc : f32[1, 10] = linear(" in capsys.readouterr().out
    # a class works as a factory too
    assert main(["inspect", "zoo_pkg.nets:Net", "-i", "1,3,4,4"]) == 0
    assert "%fc : f32[1, 10] = linear(" in capsys.readouterr().out


def test_build_inputs_are_seeded():
    a = cli_support.build_inputs(["2,3"], ["float32"])
    b = cli_support.build_inputs(["2,3"], [])
    torch.testing.assert_close(a, b)
    (ids,) = cli_support.build_inputs(["100"], ["int64"])
    assert ids.dtype == torch.int64 and 0 <= int(ids.min()) and int(ids.max()) < cli_support.INT_HIGH
    assert cli_support.build_inputs([""])[0].shape == ()
    assert cli_support.parse_dynamic(["x:0:batch", "x:2", "y:1"]) == {"x": {0: "batch", 2: "x_2"}, "y": {1: "y_1"}}


# ---- errors: one paragraph on stderr, exit 2, no traceback ----------------------------------------------
def check_error(capsys, argv, *needles):
    rc = main(argv)
    cap = capsys.readouterr()
    assert rc == 2, cap
    assert cap.out == ""
    assert cap.err.startswith(f"bridge {argv[0]}: error: ")
    assert "Traceback" not in cap.err
    for n in needles:
        assert n in cap.err, cap.err
    return cap.err


def test_error_missing_file(tmp_path, capsys):
    check_error(capsys, ["inspect", f"{tmp_path}/nope.py:make", "-i", "1"], "nope.py", "does not exist")


def test_error_spec_without_factory(model_file, capsys):
    check_error(capsys, ["inspect", model_file, "-i", "1"], "has no factory", "file.py:factory")


def test_error_unknown_factory(model_file, capsys):
    err = check_error(capsys, ["inspect", f"{model_file}:mkae", "-i", "1"], "no 'mkae'")
    assert "make" in err and "with_args" in err  # lists what is there


def test_error_unknown_module(capsys):
    check_error(capsys, ["inspect", "no_such_pkg.models:make", "-i", "1"], "cannot import module 'no_such_pkg.models'")


def test_error_factory_raises(model_file, capsys):
    check_error(capsys, ["inspect", f"{model_file}:broken", "-i", "1"], "ValueError: no weights here",
                f"{model_file}:{line_in(model_file, 'no weights here')}")


def test_error_factory_returns_non_module(model_file, capsys):
    check_error(capsys, ["inspect", f"{model_file}:not_a_model", "-i", "1"], "returned int")


def test_error_no_inputs(model_file, capsys):
    check_error(capsys, ["inspect", f"{model_file}:make"], "--input")


@pytest.mark.parametrize("argv, needle", [
    (["-i", "2,three"], "is not a shape"),
    (["-i", "2,3,4,4", "--dtype", "floaty"], "not a torch dtype"),
    (["-i", "2,3,4,4", "-i", "2", "-i", "3", "--dtype", "float32", "--dtype", "int64"], "give one --dtype for all"),
    (["-i", "2,3,4,4", "--dynamic", "x:0:b:c"], "NAME:DIM"),
    (["-i", "2,3,4,4", "--dynamic", "x:first"], "DIM must be an integer"),
    (["-i", "2,3,4,4", "--dynamic", "y:0:batch"], "dynamic= names input 'y'"),
])
def test_error_bad_options(model_file, capsys, argv, needle):
    check_error(capsys, ["inspect", f"{model_file}:make", *argv], needle)


def test_error_untraceable(model_file, capsys):
    line = line_in(model_file, "if x.sum() > 0:")
    check_error(capsys, ["inspect", f"{model_file}:branchy", "-i", "2,3"], f"{model_file}:{line}",
                "if x.sum() > 0:", "How to fix:", "torch.where")


def test_error_wrong_input_shape(model_file, capsys):
    check_error(capsys, ["inspect", f"{model_file}:make", "-i", "2,3"], "could not trace Net",
                "shapes and dtypes")


def test_error_untraceable_subprocess_is_one_paragraph(model_file):
    """No traceback and none of torch's partial-graph dumps: only bridge's message."""
    r = run_cli("inspect", f"{model_file}:branchy", "--input", "2,3")
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.startswith("bridge inspect: error: could not trace Branchy at ")
    assert "Traceback" not in r.stderr and "def forward" not in r.stderr
    assert r.stderr.count("\n") <= 6, r.stderr


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["inspect"])
    assert info.value.code == 2
    assert "SPEC" in capsys.readouterr().err


def test_console_script_entry_point():
    """pyproject declares bridge = bridge.cli:main; where the package is installed, the script runs."""
    from importlib.metadata import entry_points

    eps = [e for e in entry_points(group="console_scripts") if e.name == "bridge"]
    if not eps:
        pytest.skip("bridge is not installed (no console script)")
    assert eps[0].value == "bridge.cli:main"
    exe = os.path.join(os.path.dirname(sys.executable), "bridge")
    if os.path.exists(exe):
        r = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=300)
        assert r.stdout.strip() == f"bridge {bridge.__version__}"


def test_export_then_verify(model_file, tmp_path, capsys):
    out = tmp_path / "net.onnx"
    assert main(["export", f"{model_file}:make", str(out), "--input", "2,3,5,5", "--dynamic", "batch",
                 "--opset", "17"]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out}: opset 17" in text and "inputs x[batch, 3, 5, 5]" in text and "outputs output" in text
    import numpy as np
    import onnx
    import onnxruntime as ort

    dims = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, 5, 5]
    sess = ort.InferenceSession(str(out))
    # the exported file reproduces the factory's model at another batch size
    import importlib.util

    spec = importlib.util.spec_from_file_location("m_export", model_file)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    x = torch.randn(4, 3, 5, 5)
    np.testing.assert_allclose(sess.run(None, {"x": x.numpy()})[0], mod.make()(x).detach().numpy(),
                               atol=1e-5, rtol=1e-5)
    assert main(["verify", f"{model_file}:make", str(out), "--input", "3,3,5,5"]) == 0
    rep = capsys.readouterr().out
    assert rep.startswith("OK: eager PyTorch vs onnxruntime") and "output" in rep


def test_verify_reports_mismatch_and_bad_files(model_file, tmp_path, capsys):
    out = tmp_path / "net.onnx"
    assert main(["export", f"{model_file}:make", str(out), "--input", "2,3,5,5"]) == 0
    capsys.readouterr()
    # a different model (other seed) against that file: exit 3 and the first diverging node
    other = tmp_path / "other.py"
    other.write_text(open(model_file).read().replace("torch.manual_seed(0)", "torch.manual_seed(1)"))
    assert main(["verify", f"{other}:make", str(out), "--input", "2,3,5,5"]) == 3
    assert "MISMATCH" in capsys.readouterr().out
    (tmp_path / "bad.onnx").write_bytes(b"garbage")
    assert main(["verify", f"{model_file}:make", str(tmp_path / "bad.onnx"), "--input", "2,3,5,5"]) == 2
    assert "not a readable ONNX model" in capsys.readouterr().err
