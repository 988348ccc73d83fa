"""README.md's quick start runs as written, and .ci/run uses exactly the README's install and test commands."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")


def blocks(section: str, lang: str) -> list[str]:
    """The fenced ``lang`` blocks of the README section headed ``## section``."""
    text = open(README).read()
    m = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert m, f"README has no '## {section}' section"
    return re.findall(rf"^```{lang}\n(.*?)^```", m.group(1), re.S | re.M)


def commands(section: str) -> list[str]:
    """The shell commands of a section's bash blocks, comments stripped."""
    out = []
    for b in blocks(section, "bash"):
        for line in b.splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out


def test_quick_start_python_runs():
    (code,) = blocks("Quick start", "python")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("graph(%x: f32[2, 3, 16, 16]) {")
    assert "%fc : f32[2, 10] = linear(" in r.stdout
    diff = float(r.stdout.strip().splitlines()[-1].split(":")[-1])
    assert diff < 1e-5


def test_quick_start_cli_line_runs():
    (cmd,) = commands("Quick start")
    argv = shlex.split(cmd)
    assert argv[0] == "bridge"
    r = subprocess.run([sys.executable, "-m", "bridge.cli", *argv[1:]], capture_output=True, text=True, cwd=ROOT,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("graph(%x: f32[1, 3, 32, 32]) {")
    assert "%head : f32[1, 10] = linear(" in r.stdout


def test_onnx_section_runs(tmp_path):
    (code,) = blocks("Export to ONNX", "python")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("OK: eager PyTorch vs onnxruntime")
    assert (tmp_path / "model.onnx").exists()
    for cmd in commands("Export to ONNX"):
        argv = shlex.split(cmd)
        argv = [a.replace("examples/", os.path.join(ROOT, "examples") + "/") for a in argv]
        r = subprocess.run([sys.executable, "-m", "bridge.cli", *argv[1:]], capture_output=True, text=True,
                           cwd=tmp_path, timeout=600)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(("wrote model.onnx: opset", "OK: eager PyTorch vs onnxruntime"))


def test_see_section_runs(tmp_path):
    for cmd in commands("See it"):
        argv = [a.replace("examples/", os.path.join(ROOT, "examples") + "/") for a in shlex.split(cmd)]
        r = subprocess.run([sys.executable, "-m", "bridge.cli", *argv[1:]], capture_output=True, text=True,
                           cwd=tmp_path, timeout=600)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("wrote ")
    assert "bridge-data" in (tmp_path / "smallresnet.html").read_text()
    assert (tmp_path / "layers.mmd").read_text().startswith("flowchart TD")


def test_ci_runs_the_readme_commands():
    """.ci/run is the README's test command (install.sh test runs the default tests), then the README's other
    commands; the demo command runs in tests/test_demo.py."""
    ci = [line.strip() for line in open(os.path.join(ROOT, ".ci", "run"))]
    cmds = commands("Install and run")
    test_cmd = next(c for c in cmds if c.startswith("./install.sh test"))
    assert test_cmd in ci, f"README command {test_cmd!r} is not run by .ci/run"
    script = open(os.path.join(ROOT, "install.sh")).read()
    assert "python -m pytest" in cmds and 'python -m pytest ${pytest_args' in script  # the default run
    for cmd in cmds:
        if not cmd.startswith("./install.sh") and cmd != "python -m pytest":
            assert cmd in ci, f"README command {cmd!r} is not run by .ci/run"
    assert os.access(os.path.join(ROOT, ".ci", "run"), os.X_OK)


def test_transform_and_analyze_sections_print_what_they_say():
    """The Transform and Analyze blocks run, and the values their comments state are what they print (checked by
    hand arithmetic here, not by bridge: params = 3*8*9+8 + 2048*10+10; MACs per sample = conv 8*27*256 + linear
    2048*10, batch 2)."""
    (code,) = blocks("Transform", "python")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Sequential(") and "GELU" in r.stdout and "ReLU" not in r.stdout
    (code,) = blocks("Analyze", "python")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    params, macs = 3 * 8 * 9 + 8 + 2048 * 10 + 10, 2 * (8 * 27 * 256 + 2048 * 10)
    assert f"{params} {macs}" in lines and "# 20714 151552" in code and (params, macs) == (20714, 151552)
    assert "chain" in lines and "# chain" in code
