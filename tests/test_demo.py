"""``bridge demo`` and the README's two set-up commands (``install.sh``): the demo writes a verified ONNX file, the
graph, the summary and the HTML view of a zoo model; the script refuses what it does not know."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch

from bridge import cli, zoo
from bridge.demo import CHECK_BATCH, DEFAULT_MODEL
from tests.test_readme import ROOT, commands

SCRIPT = os.path.join(ROOT, "install.sh")


def _check_file_against_eager(path: str, name: str) -> float:
    """max |onnxruntime - eager| / output scale on inputs the demo never used (batch 3, other values)."""
    e = zoo.get(name)
    args, kwargs = e.make_inputs(3)
    with torch.no_grad():
        ref = e.make_model()(*args, **kwargs)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    feeds = {i.name: t.numpy() for i, t in zip(sess.get_inputs(), args)}
    (got,) = sess.run(None, feeds)
    return float(np.abs(got - ref.numpy()).max() / max(1.0, float(ref.abs().max())))


def test_demo_writes_verified_files_and_says_where(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    files = {p.name for p in out.iterdir()}
    assert files == {f"{DEFAULT_MODEL}{s}" for s in (".onnx", ".html", ".graph.txt", ".summary.txt")}
    assert _check_file_against_eager(str(out / f"{DEFAULT_MODEL}.onnx"), DEFAULT_MODEL) < 1e-5
    # it says what each step did and where the files are
    assert f"5. bridge.verify: onnxruntime vs eager PyTorch at batch {CHECK_BATCH}: OK" in text
    assert f"files in {out}:" in text and f"{DEFAULT_MODEL}.html" in text
    assert "inputs x[batch, 3, 32, 32]" in text  # the batch stays symbolic in the file
    assert (out / f"{DEFAULT_MODEL}.graph.txt").read_text().startswith("graph(%x: f32[batch, 3, 32, 32]) {")
    assert "Total params: 9,426" in (out / f"{DEFAULT_MODEL}.summary.txt").read_text()


@pytest.mark.parametrize("name", ["transformer_encoder", "multi_input"])
def test_demo_other_zoo_models(tmp_path, capsys, name):
    assert cli.main(["demo", "--model", name, "-o", str(tmp_path)]) == 0
    assert "OK" in capsys.readouterr().out
    if name == "transformer_encoder":  # one input: checked here too
        assert _check_file_against_eager(str(tmp_path / f"{name}.onnx"), name) < 1e-5


def test_demo_refuses_an_unknown_model_and_a_file_as_folder(tmp_path, capsys):
    assert cli.main(["demo", "--model", "resnet_min", "-o", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "no zoo model 'resnet_min'; did you mean resnet_mini" in err
    assert not (tmp_path / "d").exists()  # refused before writing anything
    (tmp_path / "f").write_text("x")
    assert cli.main(["demo", "-o", str(tmp_path / "f")]) == 2
    assert "is a file: give a folder" in capsys.readouterr().err


def test_install_script_refuses_what_it_does_not_know():
    for argv, says in ((["demo", "--torch", "nightly"], "give pypi, cpu or keep"),
                       (["build"], "./install.sh demo"), (["test", "--fast"], "unknown option --fast")):
        r = subprocess.run(["bash", SCRIPT, *argv], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, argv
        assert says in r.stdout + r.stderr, argv


def test_readme_has_the_two_commands():
    cmds = [c for c in commands("Install and run") if c.startswith("./install.sh")]
    assert [c.split()[:2] for c in cmds] == [["./install.sh", "demo"], ["./install.sh", "test"]]
    assert os.access(SCRIPT, os.X_OK)


@pytest.mark.skipif(sys.prefix == "/usr", reason="needs a python whose site-packages pip may write")
def test_readme_demo_command_runs(tmp_path):
    """The README's demo command as written, in the environment running these tests (it is "the active
    virtualenv" for the script): torch is already there, so pip only reinstalls bridge, then the demo runs in the
    caller's folder."""
    (cmd,) = [c for c in commands("Install and run") if c.startswith("./install.sh demo")]
    env = {**os.environ, "VIRTUAL_ENV": sys.prefix,
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    r = subprocess.run(["bash", "-c", cmd.replace("./install.sh", SCRIPT, 1)], capture_output=True, text=True,
                       cwd=tmp_path, env=env, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "5. bridge.verify: onnxruntime vs eager PyTorch" in r.stdout and ": OK," in r.stdout
    demo = tmp_path / "bridge-demo"
    assert _check_file_against_eager(str(demo / f"{DEFAULT_MODEL}.onnx"), DEFAULT_MODEL) < 1e-5
    assert (demo / f"{DEFAULT_MODEL}.html").stat().st_size > 10_000
