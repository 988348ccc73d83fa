"""The analysis verbs of the ``bridge`` command line: summary, topology, report, diff (in process, plus one
subprocess run), with --json and --depth, on model files and ONNX files; numbers equal the Python API's."""
from __future__ import annotations

import json
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


    class Block(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.fc = nn.Linear(d, d)
            self.act = nn.ReLU()

        def forward(self, x):
            return self.act(self.fc(x)) + x


    class Net(nn.Module):
        def __init__(self, act=nn.ReLU):
            super().__init__()
            self.inp = nn.Linear(6, 8)
            self.blocks = nn.Sequential(Block(8), Block(8))
            self.head = nn.Sequential(nn.Linear(8, 4), act())

        def forward(self, x):
            return self.head(self.blocks(self.inp(x)))


    def net():
        return Net(), (torch.randn(3, 6),)


    def net_tanh():
        return Net(act=nn.Tanh), (torch.randn(3, 6),)


    def mlp():
        return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
''')


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "models.py"
    path.write_text(MODEL_SRC)
    return str(path)


def _api(model_file, name="net"):
    model, args = cli_support.load_model(f"{model_file}:{name}")
    return model, args


def test_summary_text_and_depth(model_file, capsys):
    assert main(["summary", f"{model_file}:net", "--depth", "1"]) == 0
    out = capsys.readouterr().out
    model, args = _api(model_file)
    assert out == str(bridge.summary(model, args, depth=1)) + "\n"
    assert "└─blocks (Sequential)" in out and "└─fc (Linear)" not in out
    assert f"Total params: {sum(p.numel() for p in model.parameters()):,}" in out
    assert main(["summary", f"{model_file}:net", "--depth", "3"]) == 0
    assert "└─fc (Linear)" in capsys.readouterr().out


def test_summary_json_csv_and_by_node(model_file, capsys):
    assert main(["summary", f"{model_file}:net", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    model, args = _api(model_file)
    s = bridge.summary(model, args)
    assert d["totals"] == s.totals and [r["name"] for r in d["rows"]] == [r.name for r in s.rows]
    assert d["totals"]["params"] == 56 + 2 * 72 + 36
    assert main(["summary", f"{model_file}:net", "--csv"]) == 0
    assert capsys.readouterr().out == s.to_csv()
    assert main(["summary", f"{model_file}:net", "--by", "node", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert len(d["rows"]) == 1 + len(bridge.trace(model, args).nodes)


def test_topology_text_and_json(model_file, capsys):
    assert main(["topology", f"{model_file}:net", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["kind"] == "DAG" and len(d["skip_connections"]) == 2 and len(d["merge_points"]) == 2
    assert d["why_not_sequential"] == "blocks.0: add merges two paths (%blocks.0.act, %inp)"
    assert main(["topology", f"{model_file}:mlp", "--input", "2,6"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("chain: depth 3, width 3") and "nn.Sequential: yes" in out


def test_report_formats_and_output_file(model_file, tmp_path, capsys):
    model, args = _api(model_file)
    r = bridge.report(model, args)
    assert main(["report", f"{model_file}:net"]) == 0
    assert capsys.readouterr().out == r.to_text()
    md = tmp_path / "r.md"
    assert main(["report", f"{model_file}:net", "-o", str(md)]) == 0
    assert "markdown" in capsys.readouterr().out and md.read_text() == r.to_markdown()
    assert main(["report", f"{model_file}:net", "--json", "--depth", "1"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert [layer["name"] for layer in d["layers"]] == ["inp", "blocks", "head"]


def test_conflicting_formats_are_a_usage_error(model_file, capsys):
    """Two formats at once is refused (exit 2, argparse's one-line error), not silently one of them."""
    for argv, both in ((["summary", f"{model_file}:net", "--json", "--csv"], ("--csv", "--json")),
                       (["report", f"{model_file}:net", "--format", "markdown", "--json"], ("--json", "--format"))):
        with pytest.raises(SystemExit) as info:
            main(argv)
        err = capsys.readouterr().err
        assert info.value.code == 2 and err.splitlines()[-1] == (
            f"bridge {argv[0]}: error: argument {both[0]}: not allowed with argument {both[1]}"), err


def test_report_html_and_suffixes(model_file, tmp_path, capsys):
    """-o r.html writes the report's HTML page; a suffix report does not write is refused before the model is
    loaded (naming the suffixes it writes), unless --format says what to write."""
    from html.parser import HTMLParser

    model, args = _api(model_file)
    r = bridge.report(model, args)
    out = tmp_path / "r.html"
    assert main(["report", f"{model_file}:net", "-o", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote {out}: html, {len(r.layers)} layers, {len(r.graph.nodes)} nodes\n"
    assert out.read_text() == r.to_html()
    HTMLParser().feed(out.read_text())
    assert "<td class=\"node\">%blocks.0.fc</td>" in out.read_text()
    pdf = tmp_path / "r.pdf"
    for spec in (f"{model_file}:net", f"{tmp_path}/missing.py:net"):  # refused before the SPEC is read
        assert main(["report", spec, "-o", str(pdf)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"bridge report: error: -o {pdf}: ") and err.count("\n") == 1
        assert all(s in err for s in (".txt", ".md", ".json", ".html", "--format")) and not pdf.exists()
    assert main(["report", f"{model_file}:net", "-o", str(pdf), "--format", "markdown"]) == 0
    assert pdf.read_text() == r.to_markdown() and ": markdown, " in capsys.readouterr().out
    txt = tmp_path / "r.txt"
    assert main(["report", f"{model_file}:net", "-o", str(txt)]) == 0 and txt.read_text() == r.to_text()
    capsys.readouterr()
    assert main(["report", f"{model_file}:net", "--format", "html"]) == 0
    assert capsys.readouterr().out == r.to_html()  # to stdout: the page itself


def test_diff_exit_status_and_exact_change(model_file, capsys):
    assert main(["diff", f"{model_file}:net", f"{model_file}:net"]) == 0
    out = capsys.readouterr().out
    assert "0 added, 0 removed, 0 changed" in out and "every matched node within tolerance" in out
    assert main(["diff", f"{model_file}:net", f"{model_file}:net_tanh", "--json"]) == 3
    d = json.loads(capsys.readouterr().out)
    assert [(c["a"]["scope"], c["changes"]) for c in d["changed"]] == [("head.1", {"op": ["relu", "tanh"]})]
    assert d["first_divergence"]["scope"] == "head.1" and d["numerically_equal"] is False
    assert main(["diff", f"{model_file}:net", f"{model_file}:net_tanh", "--no-values"]) == 3
    assert "output" not in capsys.readouterr().out


def test_onnx_files_summary_and_diff(model_file, tmp_path, capsys):
    """An .onnx file goes through bridge.from_onnx: same parameters and FLOPs as the model it came from;
    the diff of a file against itself is empty."""
    pytest.importorskip("onnx")
    model, args = _api(model_file, "mlp")[0], (torch.randn(3, 6),)
    path = str(tmp_path / "m.onnx")
    bridge.to_onnx(model, path, args=args)
    assert main(["summary", path, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    s = bridge.summary(model, args)
    assert d["totals"]["params"] == s.totals["params"] == 6 * 8 + 8 + 8 * 2 + 2
    assert d["totals"]["macs"] == s.totals["macs"]
    assert main(["diff", path, path]) == 0
    assert "0 added, 0 removed, 0 changed" in capsys.readouterr().out
    # a dim_param has no size in the file: counted as 1 and said so, unless --dims sizes it
    dyn = str(tmp_path / "dyn.onnx")
    bridge.to_onnx(model, dyn, args=args, dynamic={"input": {0: "batch"}})
    assert main(["summary", dyn]) == 0
    assert "Symbolic dims with no size, counted as 1 (give dims={...}): batch" in capsys.readouterr().out
    assert main(["summary", dyn, "--dims", "batch=3", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["totals"]["macs"] == s.totals["macs"] and d["totals"]["dims"] == {"batch": 3}
    assert main(["summary", dyn, "--dims", "batch"]) == 2


def test_errors_are_one_paragraph(model_file, capsys):
    assert main(["summary", f"{model_file}:nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bridge summary: error:") and "Traceback" not in err
    assert main(["diff", f"{model_file}:net", str(model_file) + "x.onnx"]) == 2
    assert "bridge diff: error:" in capsys.readouterr().err


def test_subprocess_summary(model_file):
    r = subprocess.run([sys.executable, "-m", "bridge", "summary", f"{model_file}:mlp", "--input", "2,6"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "Sequential summary" and "\x1b" not in r.stdout


def test_readme_analyze_section_runs(tmp_path, monkeypatch):
    """README's "Analyze" section: the python block and both commands run as written."""
    import os
    import re
    import shlex

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    text = open(os.path.join(root, "README.md")).read()
    section = re.search(r"^## Analyze\n(.*?)(?=^## |\Z)", text, re.S | re.M).group(1)
    (code,) = re.findall(r"^```python\n(.*?)^```", section, re.S | re.M)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "Sequential summary" and "20714 151552" in lines and "chain" in lines
    assert "diff: 4 nodes matched, 0 added, 0 removed, 1 changed" in lines and "~ %1 (1): op: relu -> gelu" in lines
    (cmds,) = re.findall(r"^```bash\n(.*?)^```", section, re.S | re.M)
    monkeypatch.chdir(tmp_path)  # report -o report.md writes here
    for cmd in cmds.strip().splitlines():
        argv = [a.replace("examples/", os.path.join(root, "examples") + "/") for a in shlex.split(cmd)]
        assert main(argv[1:]) == 0
    assert (tmp_path / "report.md").read_text().startswith("# SmallResNet\n")
