"""SPECs as people name models: factory arguments, HuggingFace classes with a config, timm names, modules in the
working directory, and the errors for each (exit 2, one paragraph, a did-you-mean where one helps)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from bridge import cli_support as cs
from bridge.cli import main
from tests.test_cli import check_error as cli_check_error

onnxruntime = pytest.importorskip("onnxruntime")
transformers = pytest.importorskip("transformers")
timm = pytest.importorskip("timm")

MODELS_SRC = textwrap.dedent('''
    import torch.nn as nn


    class Net(nn.Module):
        def __init__(self, n=4, width=8, act="relu"):
            super().__init__()
            self.fc = nn.Linear(n, width)
            self.act = nn.ReLU() if act == "relu" else nn.Tanh()

        def forward(self, x):
            return self.act(self.fc(x))


    def make_net(sizes, *, scale=1.0):
        return Net(sizes[0], sizes[1])
''')

BERT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37,
        "vocab_size": 100}
GPT2 = {"n_embd": 32, "n_layer": 2, "n_head": 2, "vocab_size": 100}


def config_args(config: dict) -> list[str]:
    return [a for k, v in config.items() for a in ("--config", f"{k}={json.dumps(v)}")]


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    (tmp_path / "specmodels.py").write_text(MODELS_SRC)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    sys.modules.pop("specmodels", None)


def run_main(capsys, argv):
    rc = main(argv)
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    return cap.out


def check_error(capsys, argv, *needles):
    """tests/test_cli.py's check (exit 2, one message on stderr, no traceback), and the message is one line."""
    err = cli_check_error(capsys, argv, *needles)
    assert err.count("\n") == 1, err  # one paragraph
    return err


def ort_outputs(path, feeds: dict) -> dict:
    sess = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {k: v.numpy() for k, v in feeds.items()})))


def ort_input(path):
    sess = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (i,) = sess.get_inputs()
    return i.name, i.shape


# ---- parsing --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, target, attr, args, kwargs", [
    ("m.py:Net", "m.py", "Net", (), {}),
    ("torchvision.models:resnet18(num_classes=10)", "torchvision.models", "resnet18", (), {"num_classes": 10}),
    ("dir/m.py:Net(4, width=8)", "dir/m.py", "Net", (4,), {"width": 8}),
    ("pkg.mod:a.b( (1, 2), [3.5, -1], {'k': None}, s='x:y(z)', t=True )", "pkg.mod", "a.b",
     ((1, 2), [3.5, -1], {"k": None}), {"s": "x:y(z)", "t": True}),
    ('m:f("it\'s")', "m", "f", ("it's",), {}),
])
def test_parse_spec(spec, target, attr, args, kwargs):
    s = cs.parse_spec(spec)
    assert (s.target, s.attr, s.args, s.kwargs) == (target, attr, args, kwargs)


def test_parse_config(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"hidden_size": 64, "hidden_act": "gelu"}))
    got = cs.parse_config([str(path), '{"num_hidden_layers": 2, "hidden_size": 48}', "hidden_size=32",
                           "is_decoder=true", "tie_word_embeddings=False", "hidden_act=relu", "label2id={\"a\": 0}"])
    assert got == {"hidden_size": 32, "hidden_act": "relu", "num_hidden_layers": 2, "is_decoder": True,
                   "tie_word_embeddings": False, "label2id": {"a": 0}}


# ---- factory arguments and the working directory ----------------------------------------------------------------
def test_factory_arguments(models_dir, capsys):
    out = run_main(capsys, ["inspect", "specmodels:Net(4, width=3, act='tanh')", "-i", "2,4"])
    assert "f32[2, 3] = linear(" in out and "tanh" in out
    out = run_main(capsys, ["inspect", "specmodels.py:make_net((5, 6), scale=2.0)", "-i", "1,5"])
    assert "f32[1, 6] = linear(" in out
    model, _ = cs.load_model("specmodels:Net(4, width=3)")
    torch.manual_seed(0)
    from specmodels import Net

    assert torch.equal(model.fc.weight, Net(4, width=3).fc.weight)  # same seed, same arguments: same weights


def test_console_script_imports_from_working_directory(models_dir):
    """`bridge` (the console script, whose sys.path has no working directory) imports specmodels.py from there."""
    script = shutil.which("bridge", path=os.path.dirname(sys.executable)) or shutil.which("bridge")
    assert script, "the bridge console script is not installed"
    r = subprocess.run([script, "inspect", "specmodels:Net(width=5)", "-i", "1,4"], capture_output=True, text=True,
                       cwd=models_dir, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "f32[1, 5] = linear(" in r.stdout


# ---- HuggingFace ------------------------------------------------------------------------------------------------
def test_hf_bert_inspect_summary(capsys):
    out = run_main(capsys, ["inspect", "transformers:BertModel", *config_args(BERT)])
    assert out.startswith("graph(%input_ids: i64[1, 8])")
    assert "pooler" in out
    out = run_main(capsys, ["summary", "transformers:BertModel", "--json", "--config", json.dumps(BERT)])
    s = json.loads(out)
    torch.manual_seed(0)
    eager = transformers.BertModel(transformers.BertConfig(**BERT))
    assert s["totals"]["params"] == sum(p.numel() for p in eager.parameters())


@pytest.mark.parametrize("cls, config, build", [
    ("BertModel", BERT, lambda c: transformers.BertModel(transformers.BertConfig(**c, use_cache=False))),
    ("GPT2Model", GPT2, lambda c: transformers.GPT2Model(transformers.GPT2Config(**c, use_cache=False))),
])
def test_hf_export_matches_eager(tmp_path, capsys, cls, config, build):
    out = tmp_path / "m.onnx"
    text = run_main(capsys, ["export", f"transformers:{cls}", str(out), *config_args(config)])
    assert text.startswith(f"wrote {out}") and "input_ids[1, 8]" in text
    torch.manual_seed(0)  # what bridge does before building: the same random weights
    eager = build(config).eval()
    ids = torch.randint(0, config["vocab_size"], (1, 8), generator=torch.Generator().manual_seed(123))
    got = ort_outputs(out, {"input_ids": ids})
    with torch.no_grad():
        want = eager(ids)
    assert set(got) <= set(want.keys()) and "last_hidden_state" in got
    for name, value in got.items():
        np.testing.assert_allclose(value, want[name].numpy(), rtol=1e-4, atol=1e-5)


def test_hf_diff_against_its_export(tmp_path, capsys):
    """--config is the SPEC's, not the .onnx file's: diff builds the model and imports the file."""
    out = tmp_path / "m.onnx"
    run_main(capsys, ["export", "transformers:BertModel", str(out), *config_args(BERT)])
    rc = main(["diff", "transformers:BertModel", str(out), *config_args(BERT)])
    cap = capsys.readouterr()
    assert rc in (0, 3), cap.err  # 3: the ONNX file's node names differ from the traced graph's
    assert "values: every matched node within tolerance" in cap.out


def test_hf_spec_keywords_and_auto_class(capsys):
    """Config keys in the SPEC's parentheses; an AutoModel class with model_type; a vision model's pixel_values."""
    out = run_main(capsys, ["inspect", "transformers:AutoModelForCausalLM(model_type='gpt2', n_layer=1)",
                            *config_args({"n_embd": 16, "n_head": 2, "vocab_size": 50})])
    assert out.startswith("graph(%input_ids: i64[1, 8])") and "f32[1, 8, 50] = linear(" in out
    out = run_main(capsys, ["inspect", "transformers:ViTModel", *config_args(
        {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16,
         "image_size": 32, "patch_size": 8})])
    assert out.startswith("graph(%pixel_values: f32[1, 3, 32, 32])")


# ---- timm -------------------------------------------------------------------------------------------------------
def test_timm_export_matches_eager(tmp_path, capsys):
    out = tmp_path / "t.onnx"
    run_main(capsys, ["export", "timm:test_resnet(num_classes=7)", str(out)])
    name, shape = ort_input(out)
    torch.manual_seed(0)
    eager = timm.create_model("test_resnet", pretrained=False, num_classes=7).eval()
    assert shape == [1, *eager.pretrained_cfg["input_size"]]
    x = torch.randn(shape, generator=torch.Generator().manual_seed(5))
    (got,) = ort_outputs(out, {name: x}).values()
    with torch.no_grad():
        want = eager(x)
    assert got.shape == (1, 7)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-5)


def test_timm_inspect_summary(capsys):
    out = run_main(capsys, ["inspect", "timm:test_vit", "-i", "2,3,160,160"])
    assert out.startswith("graph(%x: f32[2, 3, 160, 160])")
    out = run_main(capsys, ["summary", "timm:test_vit", "--depth", "1"])
    torch.manual_seed(0)
    params = sum(p.numel() for p in timm.create_model("test_vit", pretrained=False).parameters())
    assert f"{params:,}" in out


# ---- errors -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, needles", [
    ("specmodels:Net(print(1))", ["argument 1 (print(1)) is not a literal", "Python literals", "quote"]),
    ("specmodels:Net(width=x)", ["width=x is not a literal"]),
    ("specmodels:Net(**{'a': 1})", ["**{'a': 1} is not allowed"]),
    ("specmodels:Net(width=1, width=2)", ["width is given twice"]),
    ("specmodels:Net(4,,)", ["not valid Python"]),
    ("specmodels:Net(4", ["'Net(4' is not a factory name"]),
    ("specmodels:Nett", ["specmodels has no 'Nett'", "Did you mean Net?", "Factories there: Net, make_net."]),
    ("specmodels:Net(wdth=3)", ["unexpected keyword argument 'wdth'", "with the arguments given"]),
])
def test_error_factory_specs(models_dir, capsys, spec, needles):
    check_error(capsys, ["inspect", spec, "-i", "1,4"], *needles)


def test_error_missing_attribute_lists_few_names(capsys):
    err = check_error(capsys, ["inspect", "torchvision.models:resnet81", "-i", "1,3,32,32"],
                      "Did you mean resnet18")
    assert len(err) < 400, err  # not hundreds of names
    err = check_error(capsys, ["inspect", "torchvision.models:zzzz", "-i", "1,3,32,32"], "Factories there:", "more.")
    assert len(err) < 400, err
    check_error(capsys, ["inspect", "transformers:BertModl"], "Did you mean BertModel")


@pytest.mark.parametrize("argv, needles", [
    (["transformers:BertModel", "--config", "hiden_size=32"],
     ["BertConfig has no config key 'hiden_size'", "did you mean hidden_size"]),
    (["transformers:GPT2Model(hidden_sise=32)"], ["GPT2Config has no config key 'hidden_sise'", "hidden_size"]),
    (["transformers:BertModel(32)"], ["not positional arguments", "--config hidden_size=32"]),
    (["transformers:BertModel", "--config", "hidden_size=30", "--config", "num_attention_heads=4"],
     ["raised ValueError", "not a multiple", "Fix the config keys."]),
    (["transformers:AutoModel", "--config", "n_layer=1"], ["--config model_type=gpt2"]),
    (["transformers:AutoModel", "--config", "model_type=gtp2"], ["no such model type", "did you mean gpt2"]),
    (["transformers:BertModel", "--config", "model_type=gpt2"], ["BertModel is a 'bert' model"]),
    (["transformers:BertModel", "--config", '{"hidden_size": 32'], ["is not a JSON object"]),
    (["transformers:BertModel", "--config", "nothing"], ["write key=value"]),
    (["transformers:BertModel", "--config", "missing.json"], ["--config file missing.json does not exist"]),
    (["timm:resnet81"], ["timm has no model 'resnet81'", "did you mean resnet18"]),
    (["timm:test_vit(3)"], ["keyword arguments only"]),
    (["timm:test_vit(pretrained=True)"], ["downloads no weights"]),
    (["timm:test_vit(bogus=1)"], ["timm.create_model('test_vit', bogus=1) raised TypeError", "bogus"]),
    (["timm:test_vit", "--config", "a=1"], ["--config applies to HuggingFace model classes"]),
    (["torchvision.models:resnet18", "--config", "a=1"], ["is not one", "Pass arguments in the SPEC"]),
])
def test_error_hf_and_timm(tmp_path, monkeypatch, capsys, argv, needles):
    monkeypatch.chdir(tmp_path)
    check_error(capsys, ["inspect", *argv], *needles)


# ---- help -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("verb, onnx", [("inspect", True), ("draw", True), ("optimize", True), ("sequential", True),
                                        ("summary", True), ("topology", True), ("report", True), ("diff", True),
                                        ("export", False), ("verify", False)])
def test_spec_help_is_true_for_each_verb(capsys, verb, onnx):
    with pytest.raises(SystemExit):
        main([verb, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "`inspect` also takes" not in text
    assert ("or an .onnx file" in text) == onnx
    assert "transformers:CLASS" in text and "timm:MODEL_NAME" in text and "--config CONFIG" in text
