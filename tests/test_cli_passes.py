"""``bridge optimize`` and ``bridge sequential``: in-process runs on a model file, with the numbers checked."""
from __future__ import annotations

import textwrap

import onnx
import onnxruntime as ort
import pytest
import torch

from bridge.cli import main
from tests.helpers import assert_same_outputs

MODEL_SRC = textwrap.dedent('''
    import torch
    import torch.nn as nn


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.drop = nn.Dropout(0.1)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            y = self.drop(torch.relu(self.bn(self.conv(x))))
            return self.fc((y + x.mean(1, keepdim=True)).mean((2, 3)))


    def make():
        torch.manual_seed(0)
        m = Net()
        with torch.no_grad():
            m.bn.running_mean.uniform_(-1, 1)
            m.bn.running_var.uniform_(0.5, 2)
        return m.eval(), (torch.randn(2, 3, 8, 8),)


    def chain():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).eval(), (torch.randn(4, 6),)
''')


@pytest.fixture()
def model_file(tmp_path):
    p = tmp_path / "net.py"
    p.write_text(MODEL_SRC)
    ns: dict = {}
    exec(compile(MODEL_SRC, str(p), "exec"), ns)
    return p, ns


def _same_as_eager(onnx_path, ns) -> None:
    """onnxruntime on the written file gives the factory's model's numbers."""
    model, (x,) = ns["make"]()
    (y,) = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})
    with torch.no_grad():
        assert_same_outputs(torch.from_numpy(y), model(x))


def test_optimize_with_aliases_writes_onnx_with_parity(model_file, tmp_path, capsys):
    path, ns = model_file
    out = tmp_path / "opt.onnx"
    assert main(["optimize", f"{path}:make", str(out), "--passes", "dropout,fold,fuse,dce"]) == 0
    msg = capsys.readouterr().out
    assert msg.startswith("passes remove_dropout,fold,fuse_bn,dce: 8 -> 6 nodes") and str(out) in msg
    proto = onnx.load(str(out))
    ops = [n.op_type for n in proto.graph.node]
    assert "BatchNormalization" not in ops and "Dropout" not in ops
    _same_as_eager(out, ns)


def test_optimize_reads_onnx_files(model_file, tmp_path, capsys):
    path, ns = model_file
    plain = tmp_path / "plain.onnx"
    assert main(["export", f"{path}:make", str(plain), "--no-optimize"]) == 0
    out = tmp_path / "opt.onnx"
    assert main(["optimize", str(plain), str(out), "--passes", "fuse,fold,dce"]) == 0
    assert "BatchNormalization" not in {n.op_type for n in onnx.load(str(out)).graph.node}
    _same_as_eager(out, ns)


def test_optimize_rejects_unknown_pass(model_file, tmp_path, capsys):
    path, _ = model_file
    assert main(["optimize", f"{path}:make", str(tmp_path / "o.onnx"), "--passes", "fold,bogus"]) == 2
    err = capsys.readouterr().err
    assert "unknown pass(es) ['bogus']" in err and "fuse=fuse_bn" in err


def test_sequential_stages_print_and_save(model_file, tmp_path, capsys):
    path, ns = model_file
    save = tmp_path / "seq.pt"
    assert main(["sequential", f"{path}:make", "--stages", "2", "--save", str(save)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("2 stages (Net, 8 nodes, ideal largest stage ")
    assert out[1].startswith("stage 0: ") and out[1].endswith("in (x) -> out (mean_1)")
    assert out[2] == "stage 1: 1 node %fc, flops 36; in (mean_1) -> out (fc)"
    from bridge.views.sequential import StagedSequential

    model, args = ns["make"]()
    seq = torch.load(save, weights_only=False)  # the whole module, stages and all
    assert out[3] == (f"wrote {save}: the StagedSequential (2 stages, {len(seq.state_dict())} tensors); load it "
                      f"with torch.load({str(save)!r}, weights_only=False)")
    assert isinstance(seq, StagedSequential) and len(seq) == 2 and seq.info[1].first == "fc"
    assert torch.equal(seq.state_dict()["0.conv.weight"], model.conv.weight)
    x = torch.randn(2, 3, 8, 8)  # not the traced example
    with torch.no_grad():  # the saved stages compute the model
        assert_same_outputs(seq(x), model(x))
    with pytest.raises(Exception, match="weights_only"):  # torch's default refuses a pickled module
        torch.load(save)


def test_sequential_save_writes_a_chain_whole(model_file, tmp_path, capsys):
    path, ns = model_file
    save = tmp_path / "chain.pt"
    assert main(["sequential", f"{path}:chain", "--save", str(save)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"wrote {save}: the Sequential (3 layers, 4 tensors)")
    model, (x,) = ns["chain"]()
    seq = torch.load(save, weights_only=False)
    assert [type(m) for m in seq] == [type(m) for m in model]
    with torch.no_grad():
        assert_same_outputs(seq(x), model(x))


def test_sequential_chain_prints_layers(model_file, capsys):
    path, _ = model_file
    assert main(["sequential", f"{path}:chain"]) == 0
    assert capsys.readouterr().out.strip() == """\
Sequential(
  (0): Linear(in_features=6, out_features=5, bias=True)
  (1): ReLU()
  (2): Linear(in_features=5, out_features=3, bias=True)
)"""
    assert main(["sequential", f"{path}:chain", "--stages", "9"]) == 2


def test_readme_transform_section_runs(tmp_path, monkeypatch, capsys):
    from tests.test_readme import ROOT, blocks, commands

    (code,) = blocks("Transform", "python")
    exec(compile(code, "<README Transform>", "exec"), {"__name__": "__readme__"})
    assert "(1): GELU(approximate='none')" in capsys.readouterr().out
    monkeypatch.chdir(ROOT)  # the commands name examples/ relative to the repository
    for line in commands("Transform"):
        argv = line.split()
        assert argv[0] == "bridge"
        if argv[1] == "optimize":
            argv[3] = str(tmp_path / argv[3])
        assert main(argv[1:]) == 0, line
