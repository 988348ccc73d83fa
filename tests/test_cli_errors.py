"""CLI misuse exits 2 with one paragraph naming the option, path or input, never "internal error" (exit 1): bad
output paths (nothing written, an existing file left as it was), --opset out of range, malformed --input,
--dtype, --dims, out-of-range --depth/--stages/--max-nodes/--atol, .onnx files that are missing or folders,
SPECs that are not Python, factories that return the wrong thing, drawing suffixes bridge does not know, and
verify against a file that takes other inputs. Also: the CLI exports the inference graph (eval mode) unless
--train, checked against eager PyTorch through onnxruntime."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from bridge.backends.onnx import MIN_OPSET
from bridge.cli import main

ROOT = pathlib.Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart.py"

MODELS = textwrap.dedent('''
    import torch
    import torch.nn as nn


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4, 5)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


    class Pair(nn.Module):
        def forward(self, x, y):
            return x + y


    def make():
        return Net()


    def pair():
        return Pair()


    def returns_int():
        return 42


    def returns_none():
        return None


    def returns_class():
        return nn.Linear


    def args_without_tensor():
        return Net(), "hello"


    def triple():
        return Net(), (torch.randn(1, 3, 4, 4),), {}
''')


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_errors")
    (d / "models.py").write_text(MODELS)
    (d / "notes.txt").write_text("not python\n")
    (d / "broken.py").write_text("def make(:\n")
    (d / "binary.py").write_bytes(b"\x00\x01\x02garbage")
    (d / "afolder.onnx").mkdir()
    (d / "out").mkdir()
    return d


@pytest.fixture(scope="module")
def net_onnx(folder):
    """Net exported with a static input [1, 3, 4, 4]."""
    path = folder / "net.onnx"
    assert main(["export", f"{folder}/models.py:make", str(path), "-i", "1,3,4,4"]) == 0
    return path


def fails(capsys, argv, *needles) -> str:
    """``bridge argv`` exits 2 with one paragraph on stderr naming each needle; stdout stays empty."""
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    assert rc == 2, cap
    assert cap.out == ""
    assert cap.err.startswith(f"bridge {argv[0]}: error: "), cap.err
    assert "internal error" not in cap.err and "Traceback" not in cap.err
    assert cap.err.count("\n") == 1, cap.err  # one paragraph, one line
    for n in needles:
        assert str(n) in cap.err, cap.err
    return cap.err


def listing(d: pathlib.Path) -> dict:
    return {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}


# ---- output paths: refused before tracing, nothing written, an existing file left as it was -----------------
OUTPUTS = {
    "export": lambda m, out: ["export", m, out, "-i", "1,3,4,4"],
    "optimize": lambda m, out: ["optimize", m, out, "-i", "1,3,4,4"],
    "draw": lambda m, out: ["draw", m, "-i", "1,3,4,4", "-o", out],
    "report": lambda m, out: ["report", m, "-i", "1,3,4,4", "-o", out],
    "sequential": lambda m, out: ["sequential", m, "-i", "1,3,4,4", "--save", out],
}
SUFFIX = {"export": ".onnx", "optimize": ".onnx", "draw": ".html", "report": ".md", "sequential": ".pt"}


@pytest.mark.fault
@pytest.mark.parametrize("verb", sorted(OUTPUTS))
def test_output_in_a_missing_folder(folder, capsys, verb):
    out = folder / "no_such_dir" / f"m{SUFFIX[verb]}"
    fails(capsys, OUTPUTS[verb](f"{folder}/models.py:make", out), out.parent, "does not exist", "mkdir -p")
    assert not out.parent.exists()  # bridge creates no folder


@pytest.mark.fault
@pytest.mark.parametrize("verb", sorted(OUTPUTS))
def test_output_path_is_a_folder(folder, capsys, verb):
    before = listing(folder / "out")
    fails(capsys, OUTPUTS[verb](f"{folder}/models.py:make", folder / "out"), "is a folder", folder / "out")
    assert listing(folder / "out") == before


@pytest.mark.fault
@pytest.mark.parametrize("verb", ["export", "report"])
def test_output_under_a_file(folder, capsys, verb):
    out = folder / "notes.txt" / f"m{SUFFIX[verb]}"
    fails(capsys, OUTPUTS[verb](f"{folder}/models.py:make", out), "notes.txt is a file, not a folder")
    assert (folder / "notes.txt").read_text() == "not python\n"


@pytest.mark.fault
@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_unwritable_output(folder, capsys):
    """/proc takes no new files, even for root (for whom permission bits do not apply)."""
    err = fails(capsys, ["export", f"{folder}/models.py:make", "/proc/m.onnx", "-i", "1,3,4,4"], "/proc")
    assert "m.onnx" in err
    assert not os.path.exists("/proc/m.onnx")


@pytest.mark.fault
@pytest.mark.parametrize("opset, needle", [("99", "--opset 99"), ("16", "--opset 16"), ("0", "--opset 0")])
def test_opset_out_of_range_is_refused_before_tracing(folder, capsys, opset, needle):
    out = folder / "out" / "kept.onnx"
    out.write_bytes(b"an older model")
    fails(capsys, ["export", f"{folder}/models.py:make", out, "-i", "1,3,4,4", "--opset", opset], needle,
          f"opsets {MIN_OPSET} to {onnx.defs.onnx_opset_version()}")
    assert out.read_bytes() == b"an older model"


@pytest.mark.fault
def test_opset_for_optimize_too(folder, capsys, net_onnx):
    fails(capsys, ["optimize", net_onnx, folder / "out" / "o.onnx", "--opset", "1000"], "--opset 1000")
    assert not (folder / "out" / "o.onnx").exists()


# ---- malformed options --------------------------------------------------------------------------------------
@pytest.mark.fault
@pytest.mark.parametrize("shape, needle", [
    ("2,x,3", "size 2 of 3 ('x') is not an integer"),
    ("2x,3", "('2x') is not an integer"),
    ("1,,3", "size 2 of 3 is empty"),
    ("3,", "size 2 of 2 is empty"),
    ("1,3,-4,4", "('-4') is negative"),
    ("1,3,99999999999,4", "('99999999999') is over 2147483648"),
    ("100000,100000,3", "asks for 30,000,000,000 elements"),
    ("1,3,4,\u00b2", "is not an integer"),
    ("1 3 4 4", "('1 3 4 4') is not an integer"),
    ("1.5,3", "('1.5') is not an integer"),
])
def test_bad_input_shape(folder, capsys, shape, needle):
    fails(capsys, ["inspect", f"{folder}/models.py:make", "--input", shape], f"--input {shape!r}", needle)


@pytest.mark.fault
@pytest.mark.parametrize("dtype, needle", [
    ("floaty", "not a torch dtype"), ("Tensor", "not a torch dtype"), ("qint8", "cannot make random inputs"),
    ("bits8", "cannot make random inputs"),
])
def test_bad_dtype(folder, capsys, dtype, needle):
    fails(capsys, ["inspect", f"{folder}/models.py:make", "-i", "1,3,4,4", "--dtype", dtype], f"--dtype {dtype!r}",
          needle)


@pytest.mark.fault
@pytest.mark.parametrize("dims", ["batch", "=8", "batch=", "batch=-1", "batch=x", "batch=\u00b2", "batch=8=9"])
def test_bad_dims(folder, capsys, dims):
    fails(capsys, ["summary", f"{folder}/models.py:make", "-i", "1,3,4,4", "--dims", dims], f"--dims {dims!r}",
          "NAME=SIZE")


@pytest.mark.fault
@pytest.mark.parametrize("argv, needle", [
    (["draw", "-o", "{out}/g.html", "--depth", "0"], "depth=0"),
    (["draw", "-o", "{out}/g.html", "--max-nodes", "0"], "--max-nodes 0"),
    (["report", "--depth", "0"], "--depth 0"),
    (["summary", "--depth", "-1"], "--depth -1"),
    (["sequential", "--stages", "0"], "--stages 0"),
    (["sequential", "--stages", "-2"], "--stages -2"),
    (["diff", "{models}:make", "--atol", "-1"], "--atol -1"),
    (["diff", "{models}:make", "--rtol", "nan"], "--rtol nan"),
])
def test_out_of_range_numbers(folder, capsys, argv, needle):
    verb, *rest = argv
    rest = [a.format(out=folder / "out", models=folder / "models.py") for a in rest]
    fails(capsys, [verb, f"{folder}/models.py:make", "-i", "1,3,4,4", *rest], needle)
    assert not (folder / "out" / "g.html").exists()


# ---- input files and SPECs ----------------------------------------------------------------------------------
@pytest.mark.fault
@pytest.mark.parametrize("argv, needles", [
    (["inspect", "{d}/missing.onnx"], ["{d}/missing.onnx", "does not exist"]),
    (["summary", "{d}/afolder.onnx"], ["{d}/afolder.onnx", "is a folder"]),
    (["draw", "{d}/afolder.onnx", "-o", "{d}/out/g.html"], ["afolder.onnx", "is a folder"]),
    (["verify", "{d}/models.py:make", "{d}/missing.onnx", "-i", "1,3,4,4"], ["FILE.onnx", "missing.onnx"]),
    (["verify", "{d}/models.py:make", "{d}/afolder.onnx", "-i", "1,3,4,4"], ["FILE.onnx", "is a folder"]),
    (["diff", "{d}/net.onnx", "{d}/missing.onnx"], ["missing.onnx", "does not exist"]),
])
def test_onnx_file_missing_or_a_folder(folder, capsys, net_onnx, argv, needles):
    fails(capsys, [a.format(d=folder) for a in argv], *[n.format(d=folder) for n in needles])


@pytest.mark.fault
@pytest.mark.parametrize("spec, needles", [
    ("{d}/notes.txt:make", ["notes.txt", "is not a Python file"]),
    ("{d}/broken.py:make", ["broken.py", "SyntaxError"]),
    ("{d}/binary.py:make", ["binary.py", "raised"]),
    ("{d}/models.py:returns_int", ["returned int"]),
    ("{d}/models.py:returns_none", ["returned NoneType"]),
    ("{d}/models.py:returns_class", ["returned the class Linear"]),
    ("{d}/models.py:triple", ["returned tuple"]),
])
def test_spec_that_gives_no_model(folder, capsys, spec, needles):
    fails(capsys, ["inspect", spec.format(d=folder), "-i", "1,3,4,4"], *needles)


@pytest.mark.fault
def test_factory_example_args_without_a_tensor(folder, capsys):
    fails(capsys, ["inspect", f"{folder}/models.py:args_without_tensor"], "'hello'", "no tensor", "--input")


@pytest.mark.fault
@pytest.mark.parametrize("name", ["g.xyz", "g", "g.jpeg"])
def test_draw_suffix_unknown(folder, capsys, name):
    out = folder / "out" / name
    fails(capsys, ["draw", f"{folder}/models.py:make", "-i", "1,3,4,4", "-o", out], "unknown suffix", ".html")
    assert not out.exists()


# ---- verify: inputs the file does not take ------------------------------------------------------------------
@pytest.mark.fault
@pytest.mark.parametrize("extra, needles", [
    (["-i", "2,3,4,4"], ["'x'", "float[1, 3, 4, 4]", "float[2, 3, 4, 4]", "dim 0 is fixed at 1"]),
    (["-i", "1,3,4"], ["'x'", "rank 3, not 4"]),
    (["-i", "1,3,4,4", "--dtype", "float64"], ["'x'", "double[1, 3, 4, 4]", "element type"]),
])
def test_verify_shape_mismatch(folder, capsys, net_onnx, extra, needles):
    before = net_onnx.read_bytes()
    fails(capsys, ["verify", f"{folder}/models.py:make", net_onnx, *extra], "net.onnx", *needles)
    assert net_onnx.read_bytes() == before


@pytest.mark.fault
def test_verify_input_count_mismatch(folder, capsys, net_onnx):
    fails(capsys, ["verify", f"{folder}/models.py:pair", net_onnx, "-i", "1,3,4,4", "-i", "1,3,4,4"],
          "net.onnx takes 1 input(s)", "2 tensor input(s) (x, y)")


def test_one_paragraph_in_a_subprocess(folder):
    """The whole process: exit 2, one line on stderr, nothing on stdout (no traceback, no torch logs)."""
    r = subprocess.run([sys.executable, "-m", "bridge.cli", "export", f"{folder}/models.py:make",
                        str(folder / "nope" / "m.onnx"), "-i", "1,3,4,4"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "does not exist" in r.stderr


def test_accepted_shape_spellings():
    from bridge.cli_support import parse_shape

    assert parse_shape("1,3,224,224") == parse_shape("1x3x224x224") == parse_shape("[1, 3, 224, 224]") == \
        parse_shape(" (1,3,224,224) ") == (1, 3, 224, 224)
    assert parse_shape("") == parse_shape("()") == ()
    assert parse_shape("0,4") == (0, 4)


# ---- inference mode by default -------------------------------------------------------------------------
def _eager(train: bool, x: torch.Tensor) -> np.ndarray:
    """SmallResNet as the CLI's factory makes it (seed 0), in the given mode, on ``x``."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("quickstart_for_cli_test", QUICKSTART)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(0)
    model = mod.SmallResNet().train(train)
    with torch.no_grad():
        return model(x).numpy()


def test_export_writes_the_inference_graph_unless_train(tmp_path, capsys):
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(7))  # not the export's example
    eval_out, train_out = _eager(False, x), _eager(True, x)
    assert np.abs(eval_out - train_out).max() > 1e-2  # batchnorm makes the two modes differ
    path = tmp_path / "m.onnx"
    assert main(["export", f"{QUICKSTART}:SmallResNet", str(path), "-i", "4,3,8,8"]) == 0
    assert "warning" not in capsys.readouterr().err
    got = ort.InferenceSession(str(path)).run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(got, eval_out, atol=1e-5, rtol=1e-4)

    path_t = tmp_path / "t.onnx"
    assert main(["export", f"{QUICKSTART}:SmallResNet", str(path_t), "-i", "4,3,8,8", "--train"]) == 0
    err = capsys.readouterr().err
    warning = next(line for line in err.splitlines() if line.startswith("bridge: warning: --train"))
    assert "2 module(s)" in warning and "block.bn1 (BatchNorm2d)" in warning
    got_t = ort.InferenceSession(str(path_t)).run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(got_t, train_out, atol=1e-5, rtol=1e-4)


def test_verify_compares_in_the_same_mode(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    assert main(["export", f"{QUICKSTART}:SmallResNet", str(path), "-i", "2,3,8,8"]) == 0
    capsys.readouterr()
    assert main(["verify", f"{QUICKSTART}:SmallResNet", str(path), "-i", "2,3,8,8"]) == 0
    assert capsys.readouterr().out.startswith("OK")
    path_t = tmp_path / "t.onnx"
    assert main(["export", f"{QUICKSTART}:SmallResNet", str(path_t), "-i", "2,3,8,8", "--train"]) == 0
    capsys.readouterr()
    assert main(["verify", f"{QUICKSTART}:SmallResNet", str(path_t), "-i", "2,3,8,8", "--train"]) == 0
    cap = capsys.readouterr()
    assert cap.out.startswith("OK")
    assert [line for line in cap.err.splitlines() if line] == [
        line for line in cap.err.splitlines() if line.startswith("bridge: warning: --train")]  # said once
