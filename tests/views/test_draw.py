"""bridge.draw: every format. DOT parses (graphviz round trip) with the graph's node and edge counts, SVG
renders, PNG is a PNG, Mermaid matches a golden file, HTML is self-contained; folding at a depth sums the
costs of bridge.analysis; a 5,000-node graph draws; the CLI verb; typed errors. (The HTML page in a real
browser: tests/views/test_html.py.)"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
import time
import xml.etree.ElementTree as ET

import pytest
import torch
import torch.nn as nn

import bridge
from bridge.analysis import node_costs
from bridge.cli import main
from bridge.ir.graph import Graph, Scope
from bridge.ir.spec import TensorSpec
from bridge.progress import track
from bridge.views.graphdata import auto_depth, collapse, count_boxes, graph_data
from bridge.views.html import script_json
from bridge.views.mermaid import to_mermaid

GOLDEN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "golden")
needs_dot = pytest.mark.skipif(shutil.which("dot") is None,
                               reason="graphviz 'dot' is not installed (apt-get install graphviz)")


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)) + x)  # a skip connection


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.body = nn.Sequential(Block(4), Block(4))
        self.head = nn.Linear(4, 5)

    def forward(self, x):
        return self.head(self.body(self.stem(x)).mean((2, 3)))


@pytest.fixture(scope="module")
def g():
    torch.manual_seed(0)
    return bridge.trace(Net().eval(), (torch.randn(1, 3, 8, 8),))


def dot_json(path) -> dict:
    """Graphviz parses the DOT file and gives it back as JSON (objects: clusters and nodes; edges)."""
    r = subprocess.run(["dot", "-Tjson0", path], capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def counts(folded):
    return len(folded.boxes), len(folded.edges), len(folded.clusters)


# ---- structure ----------------------------------------------------------------------------------------
def test_graph_data_has_every_op_edge_and_module(g):
    data = graph_data(g, node_costs(g))
    ops = [n for n in data["nodes"] if n["kind"] == "op"]
    assert len(ops) == len(g.nodes)
    assert sorted(data["modules"]) == ["body", "body.0", "body.0.bn", "body.0.conv", "body.1", "body.1.bn",
                                       "body.1.conv", "head", "stem"]
    assert data["modules"]["body.0.conv"] == {"type": "Conv2d", "parent": "body.0", "depth": 3, "leaf": True}
    assert data["modules"]["body.0"]["leaf"] is False
    # one edge per (producer, consumer, tensor); weights are not boxes
    expected = sum(len({id(v) for v in n.inputs if v.producer is not None or v.kind == "input"}) for n in g.nodes)
    assert len(data["edges"]) == expected + 1  # + the edge to the output
    add = next(n for n in ops if n["op"] == "add")
    assert sorted(e[0] for e in data["edges"] if e[1] == add["id"]) == sorted(["body.0.bn", "stem"])  # the skip


def test_fold_sums_the_costs_of_its_ops(g):
    costs = node_costs(g)
    data = graph_data(g, costs)
    layer = collapse(data, 1)
    assert {b.id for b in layer.boxes.values()} == {"in:x", "m:stem", "m:body", "mean", "m:head", "out:0"}
    body = layer.boxes["m:body"]
    mine = [n for n in g.nodes if n.scope.stack and n.scope.stack[0][0] == "body"]
    assert body.ops == len(mine) == 8
    assert body.flops == sum(costs[n].flops for n in mine) > 0
    assert body.params == sum(p.const.numel() for p in g.params if p.names[0].startswith("body.")) == 2 * (
        4 * 4 * 9 + 4 + 4 + 4)
    assert body.shape == "f32[1, 4, 8, 8]"
    assert "body (Sequential)" in body.lines()[0] and "8 ops" in body.lines()[2]
    assert [(a, b) for a, b, _ in layer.edges] == [("in:x", "m:stem"), ("m:stem", "m:body"), ("m:body", "mean"),
                                                   ("mean", "m:head"), ("m:head", "out:0")]
    two = collapse(data, 2)
    assert {"m:body.0", "m:body.1", "m:stem", "m:head"} <= set(two.boxes) and set(two.clusters) == {"body"}
    full = collapse(data, None)
    assert counts(full)[0] == len(g.nodes) + 2 and len(full.clusters) == 9
    assert count_boxes(data, 1) == 6 and count_boxes(data, None) == len(g.nodes) + 2


# ---- DOT / SVG / PNG -----------------------------------------------------------------------------------
@needs_dot
@pytest.mark.parametrize("depth", [None, 1, 2])
def test_dot_parses_with_the_graphs_counts(g, tmp_path, depth):
    path = bridge.draw(g, tmp_path / "g.dot", depth=depth)
    folded = collapse(graph_data(g), depth)
    parsed = dot_json(path)
    objects = parsed.get("objects", [])
    nodes = [o for o in objects if not o["name"].startswith("cluster_")]
    clusters = [o for o in objects if o["name"].startswith("cluster_")]
    assert len(nodes) == len(folded.boxes) and len(parsed.get("edges", [])) == len(folded.edges)
    assert sorted(c["name"][len("cluster_"):] for c in clusters) == sorted(folded.clusters)
    labels = {o["name"]: o["label"] for o in nodes}
    if depth is None:
        assert labels["stem"].split("\\n")[:2] == ["stem (conv)", "f32[1, 4, 8, 8]"]
        assert labels["stem"].split("\\n")[2] == "112 params, 14.1k FLOPs"  # 4*3*9+4; 2*108*64 + 4*64 = 14080
        assert node_costs(g)[g.node("stem")].flops == 2 * 108 * 64 + 4 * 64


@needs_dot
def test_skip_connections_are_marked(g, tmp_path):
    from bridge.views.graphdata import skip_edges

    skips = bridge.topology(g).skip_connections
    assert [(s.source.name, s.target.name, s.length) for s in skips] == [("stem", "add", 1), ("relu", "add_1", 1)]
    full = collapse(graph_data(g, None, skips), None)
    assert full.skips == {("stem", "add"), ("relu", "add_1")}
    assert collapse(graph_data(g, None, skips), 1).skips == set()  # both inside body: no skip between layers
    edges = dot_json(bridge.draw(g, tmp_path / "g.dot"))["edges"]
    red = sorted((e["tail"], e["head"]) for e in edges if e.get("color") == "#d62728")
    assert len(red) == 2 and all(e.get("style") == "dashed" for e in edges if e.get("color") == "#d62728")

    # a skip over three ops (a projection: conv, bn) marks each edge of its short path
    import importlib.util

    torch.manual_seed(0)
    examples = os.path.join(os.path.dirname(os.path.dirname(GOLDEN)), "examples")
    spec = importlib.util.spec_from_file_location("residual_example", os.path.join(examples, "residual.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    r = bridge.trace(mod.ResNet().eval(), (torch.randn(1, 3, 16, 16),))
    topo = bridge.topology(r)
    proj = next(s for s in topo.skip_connections if s.length == 3)
    marked = skip_edges([proj])
    on_path = {(v.producer.name, c.name) for v in r.values() for c in v.users if (id(v), id(c)) in marked}
    assert on_path == {("relu_1", "layer2.down.0"), ("layer2.down.0", "layer2.down.1"), ("layer2.down.1", "add_1")}
    layers = collapse(graph_data(r, None, topo.skip_connections), 2)
    assert ("m:layer2.down", "add_1") in layers.skips and ("m:layer2.bn2", "add_1") not in layers.skips


@needs_dot
def test_svg_renders_one_group_per_box(g, tmp_path):
    path = bridge.draw(g, tmp_path / "g.svg")
    root = ET.parse(path).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    groups = [e for e in root.iter(ns + "g")]
    nodes = [e for e in groups if e.get("class") == "node"]
    clusters = [e for e in groups if e.get("class") == "cluster"]
    edges = [e for e in groups if e.get("class") == "edge"]
    assert len(nodes) == len(g.nodes) + 2 and len(clusters) == 9 and len(edges) == len(collapse(graph_data(g), None).edges)
    text = " ".join(t.text or "" for t in root.iter(ns + "text"))
    assert "body.0.conv (Conv2d)" in text and "f32[1, 4, 8, 8]" in text


@needs_dot
def test_png_is_a_png(g, tmp_path):
    path = bridge.draw(g, tmp_path / "g.png", depth=1)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_svg_without_graphviz_says_how_to_install(g, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(bridge.ViewError, match="apt-get install graphviz"):
        bridge.draw(g, tmp_path / "g.svg")
    bridge.draw(g, tmp_path / "g.dot")  # text formats need nothing
    assert not (tmp_path / "g.svg").exists()


def test_bad_suffix_and_depth_are_typed_errors(g, tmp_path):
    with pytest.raises(bridge.ViewError, match=r"unknown suffix '\.jpg'.*\.html"):
        bridge.draw(g, tmp_path / "g.jpg")
    with pytest.raises(bridge.ViewError, match="depth=0"):
        bridge.draw(g, tmp_path / "g.dot", depth=0)


# ---- Mermaid ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("depth", [None, 1])
def test_mermaid_golden(g, tmp_path, depth):
    path = bridge.draw(g, tmp_path / "g.mmd", depth=depth)
    got = open(path).read()
    golden = os.path.join(GOLDEN, f"draw_net_depth{depth or 'all'}.mmd")
    if os.environ.get("BRIDGE_UPDATE_GOLDEN"):
        with open(golden, "w") as f:
            f.write(got)
    assert got == open(golden).read()
    assert got.startswith("flowchart TD\n")
    folded = collapse(graph_data(g), depth)
    assert got.count(" --> ") + got.count(" -. skip .-> ") == len(folded.edges)
    assert got.count(" -. skip .-> ") == (2 if depth is None else 0)  # the two blocks' identities, inside body
    assert got.count("subgraph ") == got.count("\n  end\n") + got.count("\n    end\n") + got.count(
        "\n      end\n") == len(folded.clusters)


def test_mermaid_keeps_ops_and_modules_of_one_name_apart():
    g = Graph()
    spec = TensorSpec((2,), torch.float32)
    x = g.add_input("x", spec)
    a = g.add_node("relu", {"input": x}, name="act", outputs=[("act", spec)], scope=Scope([("act", "ReLU")])).output
    b = g.add_node("neg", {"input": a}, outputs=[("b", spec)], scope=Scope([("b", 'Odd"<x>')])).output
    g.set_outputs([b])
    text = to_mermaid(collapse(graph_data(g), None))
    assert 'subgraph s_act["act (ReLU)"]' in text and 'n_act["act (relu)' in text
    assert 'subgraph s_b["b (Odd#quot;#lt;x#gt;)"]' in text and "<x>" not in text


# ---- HTML ---------------------------------------------------------------------------------------------
def test_html_is_self_contained(g, tmp_path):
    path = bridge.draw(g, tmp_path / "g.html")
    page = open(path).read()
    assert "<script src" not in page and "<link rel=\"stylesheet\"" not in page and "@import" not in page
    for url in ("http://", "https://"):
        assert page.replace('xmlns="http://www.w3.org/2000/svg"', "").replace(
            '"http://www.w3.org/2000/svg"', "").count(url) == 0
    start = page.index('<script id="bridge-data" type="application/json">') + len(
        '<script id="bridge-data" type="application/json">')
    data = json.loads(page[start:page.index("</script>", start)])
    assert sum(n["kind"] == "op" for n in data["nodes"]) == len(g.nodes)
    conv = next(n for n in data["nodes"] if n["id"] == "body.0.conv")
    assert conv["flops"] == node_costs(g)[g.node("body.0.conv")].flops and conv["params"] == 4 * 4 * 9 + 4


def test_html_json_cannot_end_its_script():
    text = script_json({"name": "</script><script>alert(1)</script>"})
    assert "</" not in text and json.loads(text) == {"name": "</script><script>alert(1)</script>"}


def test_draw_traces_a_model(tmp_path):
    torch.manual_seed(0)
    path = bridge.draw(nn.Sequential(nn.Linear(3, 4), nn.ReLU()), tmp_path / "m.mmd", args=(torch.randn(2, 3),))
    assert 'n_0["0 (linear)<br/>f32[2, 4]<br/>16 params, 56 FLOPs"]' in open(path).read()
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU()).eval()
    bridge.to_onnx(model, tmp_path / "m.onnx", args=(torch.randn(2, 3),))
    text = open(bridge.draw(str(tmp_path / "m.onnx"), tmp_path / "o.mmd")).read()  # an ONNX file is imported
    assert "(linear)<br/>f32[2, 4]<br/>16 params, 56 FLOPs" in text and "(relu)" in text
    with pytest.raises(bridge.BridgeError, match="expected an nn.Module"):
        bridge.draw(42, tmp_path / "x.mmd")


# ---- big graphs ---------------------------------------------------------------------------------------
def big_graph(blocks: int = 1250) -> Graph:
    """4 ops per block, 250 blocks per stage: 5,000 ops in 5 stages of 250 modules."""
    g = Graph()
    spec = TensorSpec((4, 16), torch.float32)
    h = g.add_input("x", spec)
    for i in range(blocks):
        stack = [(f"stage{i // 250}", "Sequential"), (f"stage{i // 250}.{i % 250}", "Block")]
        a = g.add_node("relu", {"input": h}, outputs=[("a", spec)], scope=Scope(stack)).output
        b = g.add_node("sigmoid", {"input": a}, outputs=[("b", spec)], scope=Scope(stack)).output
        c = g.add_node("mul", {"input": a, "other": b}, outputs=[("c", spec)], scope=Scope(stack)).output
        h = g.add_node("add", {"input": c, "other": h, "alpha": 1}, outputs=[("h", spec)], scope=Scope(stack[:1])).output
    g.set_outputs([h])
    return g


@pytest.fixture(scope="module")
def big():
    return big_graph()


@needs_dot
def test_5000_nodes_start_folded_and_render(big, tmp_path):
    assert len(big.nodes) == 5000
    data = graph_data(big)
    assert auto_depth(data) == 1 and auto_depth(data, 3000) == 2 and auto_depth(data, 10**6) is None
    t = time.perf_counter()
    path = bridge.draw(big, tmp_path / "big.svg")
    assert time.perf_counter() - t < 30
    nodes = [e for e in ET.parse(path).getroot().iter("{http://www.w3.org/2000/svg}g") if e.get("class") == "node"]
    assert len(nodes) == 5 + 2  # five stages, input, output
    text = open(path).read()
    assert "1000 ops" in text  # each stage folds 250 blocks x 4 ops


@needs_dot
@pytest.mark.slow
def test_5000_nodes_unfolded_render(big, tmp_path):
    # every op and all 1,255 clusters: graphviz takes about 11 s on the 2-core reference machine
    path = bridge.draw(big, tmp_path / "big.svg", max_nodes=10**6, timeout=300)
    nodes = [e for e in ET.parse(path).getroot().iter("{http://www.w3.org/2000/svg}g") if e.get("class") == "node"]
    assert len(nodes) == 5002


def test_5000_nodes_dot_text_is_quick(big, tmp_path):
    t = time.perf_counter()
    bridge.draw(big, tmp_path / "big.dot", max_nodes=10**6)
    bridge.draw(big, tmp_path / "big.html")
    assert time.perf_counter() - t < 10
    assert open(tmp_path / "big.dot").read().count(" -> ") == len(collapse(graph_data(big), None).edges)


# ---- CLI and progress ---------------------------------------------------------------------------------
MODEL = textwrap.dedent('''
    import torch.nn as nn


    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 6)

        def forward(self, x):
            return self.fc(x).relu() + x


    def make():
        return nn.Sequential(nn.Linear(4, 6), Block(), Block(), nn.Linear(6, 2))
''')


@pytest.fixture
def model_file(tmp_path):
    p = tmp_path / "model.py"
    p.write_text(MODEL)
    return str(p)


def test_cli_draw(model_file, tmp_path, capsys):
    out = tmp_path / "g.mmd"
    assert main(["draw", f"{model_file}:make", "--input", "3,4", "-o", str(out), "--depth", "1"]) == 0
    text = out.read_text()
    assert text.count("[[\"") == 4 and "1 (Block)<br/>f32[3, 6]<br/>3 ops, 42 params, 270 FLOPs" in text  # 2*3*36+18, relu 18, add 18
    assert f"wrote {out}" in capsys.readouterr().out
    html = tmp_path / "g.html"
    assert main(["draw", f"{model_file}:make", "--input", "3,4", "-o", str(html)]) == 0
    assert "bridge-data" in html.read_text()


def test_cli_draws_an_onnx_file(tmp_path, capsys):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)).eval()
    bridge.to_onnx(model, tmp_path / "m.onnx", args=(torch.randn(3, 4),))
    out = tmp_path / "m.mmd"
    assert main(["draw", str(tmp_path / "m.onnx"), "-o", str(out)]) == 0
    g = bridge.from_onnx(str(tmp_path / "m.onnx"))
    assert out.read_text().count(" --> ") == len(collapse(graph_data(g), None).edges) >= 3  # a chain: no skips


def test_cli_draw_bad_suffix_exits_2(model_file, tmp_path, capsys):
    assert main(["draw", f"{model_file}:make", "--input", "3,4", "-o", str(tmp_path / "g.gif")]) == 2
    assert "unknown suffix '.gif'" in capsys.readouterr().err


def test_progress_only_when_asked(monkeypatch, capsys):
    items = [1, 2, 3]
    monkeypatch.delenv("BRIDGE_PROGRESS", raising=False)
    assert track(items, "x") is items  # stderr is not a terminal under pytest: the list itself, no wrapper
    monkeypatch.setenv("BRIDGE_PROGRESS", "1")
    assert track(items, "x", min_total=10) is items
    assert list(track(items, "x")) == items
    monkeypatch.setenv("BRIDGE_PROGRESS", "0")
    assert track(items, "x", enabled=None) is items
    assert capsys.readouterr().out == ""


# ---- zoo ----------------------------------------------------------------------------------------------
ZOO_SAMPLE = ["resnet_mini", "densenet_mini", "shared_module", "dict_output", "lstm_tagger", "transformer_encoder",
              "causal_attention"]  # skips, concatenations, a module called twice, dict outputs, RNNs, attention, export


@pytest.mark.parametrize("name", ZOO_SAMPLE)
def test_zoo_models_draw_at_every_depth(name, tmp_path):
    from bridge import zoo

    e = zoo.get(name)
    args, kwargs = e.make_inputs(2)
    g = bridge.trace(e.make_model(), args, kwargs)
    costs = node_costs(g)
    data = graph_data(g, costs)
    deepest = max((m["depth"] for m in data["modules"].values()), default=1)
    for depth in [None, *range(1, deepest + 1)]:
        folded = collapse(data, depth)
        members = [m for b in folded.boxes.values() for m in b.members]
        assert sorted(members) == sorted(n["id"] for n in data["nodes"])  # every op in exactly one box
        assert sum(b.flops or 0 for b in folded.boxes.values()) == sum(c.flops for c in costs.values())
        assert sum(b.params or 0 for b in folded.boxes.values()) == sum(c.params for c in costs.values())
        if shutil.which("dot") and depth in (None, 1):
            parsed = dot_json(bridge.draw(g, tmp_path / f"{name}.dot", depth=depth))
            nodes = [o for o in parsed.get("objects", []) if not o["name"].startswith("cluster_")]
            assert len(nodes) == len(folded.boxes) and len(parsed.get("edges", [])) == len(folded.edges)
    assert "bridge-data" in open(bridge.draw(g, tmp_path / f"{name}.html")).read()
    text = open(bridge.draw(g, tmp_path / f"{name}.mmd")).read()
    assert text.count(" --> ") + text.count(" -. skip .-> ") == len(collapse(data, None).edges)


@needs_dot
def test_draw_benchmark_runs_one_model(tmp_path, monkeypatch):
    import importlib.util

    from bridge import zoo

    benchmarks = os.path.join(os.path.dirname(os.path.dirname(GOLDEN)), "benchmarks")
    monkeypatch.syspath_prepend(benchmarks)  # its _timing helper
    spec = importlib.util.spec_from_file_location("bench_draw", os.path.join(benchmarks, "draw.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    row = bench.bench_model(zoo.get("mlp"), str(tmp_path), 1, bench.fx_drawer())
    assert row["ops"] == 6 and row["bridge_svg_s"] > 0 and row["bridge_html_s"] > 0
    assert (row["ratio"] is None) == (row["fx_svg_s"] is None)  # None without pydot


@pytest.mark.parametrize("suffix", [".dot", ".mmd", ".html"])
def test_a_model_that_is_one_layer_draws(tmp_path, suffix):
    """nn.Linear alone: its one node's scope is the root module, which is the drawing's top, not a cluster in it
    (this recursed without end)."""
    g = bridge.trace(nn.Linear(64, 64), (torch.randn(1, 64),))
    for depth in (None, 1):
        out = bridge.draw(g, tmp_path / f"g{depth}{suffix}", depth=depth)
        text = open(out).read()
        assert "linear" in text.lower() and ("4.16k params" in text or '"params":4160' in text)
