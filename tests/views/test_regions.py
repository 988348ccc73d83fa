"""Drawings of control flow: a node's regions (a cond's branches, a while_loop's cond_fn and body_fn) are clusters in
graph_data, DOT/SVG (graphviz parses and renders them), Mermaid and the HTML page (headless chromium); operands run
into the region inputs and region outputs into the node; folding a region (or the module around it) sums its costs
without counting them twice; the CLI prints and draws them."""
from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
import xml.etree.ElementTree as ET

import pytest
import torch
import torch.nn as nn
from torch._higher_order_ops import while_loop

import bridge
from bridge.cli import main
from bridge.ir.graph import Graph, Node, iter_values
from bridge.ir.spec import TensorSpec
from bridge.views.draw import _costs
from bridge.views.graphdata import collapse, graph_data
from bridge.views.mermaid import to_mermaid

from tests.conftest import CHROMEDRIVER, CHROMIUM, console_errors
from tests.region_models import CondLoop

needs_dot = pytest.mark.skipif(shutil.which("dot") is None,
                               reason="graphviz 'dot' is not installed (apt-get install graphviz)")
needs_browser = pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                                   reason="no headless browser: apt-get install chromium chromium-driver")


M = CondLoop  # a branch on a tensor's value, then a loop with a data-dependent trip count


class Outer(nn.Module):
    """The control flow inside a module, after a module of its own."""

    def __init__(self):
        super().__init__()
        self.pre = nn.Linear(4, 4)
        self.inner = M()

    def forward(self, x, n):
        return self.inner(self.pre(x), n)


class Nested(nn.Module):
    """A cond inside a loop's body: a region inside a region."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)

    def forward(self, x, n):
        def cf(i, h):
            return i < n

        def bf(i, h):
            return i + 1, torch.cond(h.sum() > 0, lambda t: self.a(t).tanh(), lambda t: t - 1, (h,))

        return while_loop(cf, bf, (torch.zeros((), dtype=torch.int64), x))[1]


ARGS = (torch.randn(2, 4), torch.tensor(3))


def traced(cls) -> Graph:
    torch.manual_seed(0)
    return bridge.trace(cls().eval(), ARGS)


@pytest.fixture(scope="module")
def g():
    return traced(M)


@pytest.fixture(scope="module")
def outer():
    return traced(Outer)


@pytest.fixture(scope="module")
def nested():
    return traced(Nested)


def regions(g: Graph) -> dict[str, tuple[Node, str, Graph]]:
    """Every region of ``g`` by the key graph_data gives it: ``node:arg``, nested under its region's key."""
    out = {}

    def walk(graph: Graph, prefix: str) -> None:
        for n in graph.nodes:
            for arg, r in n.regions:
                key = f"{prefix}{n.name}:{arg}"
                out[key] = (n, arg, r)
                walk(r, key + "/")

    walk(g, "")
    return out


def operands_of(n: Node) -> list:
    """What feeds a cond's or a while_loop's region inputs: ``operands``, or ``carried_inputs + additional_inputs``."""
    return list(n.args["operands"]) if n.op == "cond" else [*n.args["carried_inputs"], *n.args["additional_inputs"]]


def drawn_inputs(g: Graph) -> dict[int, list[str]]:
    """``{id(region): the names of the region inputs a drawing shows}``: those fed by an operand that has a box
    (not a weight, nor a region input fed by one) and that the region reads."""
    boxed = {id(v) for v in g.inputs}
    out = {}

    def walk(graph: Graph) -> None:
        for n in graph.nodes:
            for _, r in n.regions:
                shown = [v for v, o in zip(r.inputs, operands_of(n), strict=True)
                         if id(o) in boxed and (v.users or v.meta.get("is_output"))]
                boxed.update(id(v) for v in shown)
                out[id(r)] = [v.name for v in shown]
                walk(r)
            boxed.update(id(v) for v in n.outputs)

    walk(g)
    return out


def ancestors(modules: dict, path: str) -> list[str]:
    out = []
    while modules[path]["parent"]:
        path = modules[path]["parent"]
        out.append(path)
    return out


# ---- graph_data --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [M, Outer, Nested])
def test_graph_data_has_every_region_its_nodes_and_edges(cls):
    g = traced(cls)
    costs = _costs(g)
    data = graph_data(g, costs)
    by_id = {n["id"]: n for n in data["nodes"]}
    assert len(by_id) == len(data["nodes"])  # ids unique, though a name repeats across regions (linear)
    assert sum(n["kind"] == "op" for n in data["nodes"]) == sum(1 for _ in g.walk())
    assert all(a in by_id and b in by_id for a, b, *_ in data["edges"])
    want, shown = regions(g), drawn_inputs(g)
    assert {k for k, m in data["modules"].items() if m.get("region")} == set(want)
    for key, (node, arg, r) in want.items():
        m = data["modules"][key]
        nid = by_id[m["node"]]
        assert (m["region"], m["type"], m["label"], nid["name"]) == (arg, node.op, f"{arg} of %{node.name}", node.name)
        assert key in nid["regions"] and m["leaf"] is False
        inside = [n for n in data["nodes"] if n["scope"] and n["scope"][-1] == key]
        assert [n["name"] for n in inside if n["kind"] == "op"] == [n.name for n in r.nodes]
        assert [n["name"] for n in inside if n["kind"] == "input"] == shown[id(r)]
        for n in inside:
            assert n["outer"][-1] == nid["id"] and n["scope"][:-1] == nid["scope"]
            if n["kind"] == "op":  # the region's costs, as node_costs counts the region on its own
                assert n["flops"] == bridge.analysis.node_costs(r)[r.node(n["name"])].flops
        # each region output runs into the node; each drawn input has one edge in, from its operand's producer
        outs = {v.name for v in iter_values(r.outputs)}
        assert {e[2] for e in data["edges"] if e[1] == nid["id"] and by_id[e[0]]["scope"][-1:] == [key]} == outs
        for n in inside:
            if n["kind"] == "input":
                (e,) = [e for e in data["edges"] if e[1] == n["id"]]
                assert e[2] == operands_of(node)[[v.name for v in r.inputs].index(n["name"])].name


def test_the_predicate_runs_into_the_cond_and_the_operands_into_its_branches(g):
    data = graph_data(g)
    into = lambda nid: sorted((e[0], e[2]) for e in data["edges"] if e[1] == nid)  # noqa: E731
    assert into("cond") == [("cond:false_fn/mul", "mul"), ("cond:true_fn/relu", "relu"), ("gt", "gt")]
    assert into("cond:true_fn/in:x") == into("cond:false_fn/in:x") == [("in:x", "x")]
    assert into("while_loop_0") == [("while_loop_0:body_fn/add", "add"), ("while_loop_0:body_fn/tanh", "tanh"),
                                    ("while_loop_0:cond_fn/lt", "lt")]
    # the loop's carried values feed both regions; cond_fn never reads the carried h, so it has no box for it
    assert into("while_loop_0:body_fn/in:arg1_1") == [("cond", "cond")]
    assert into("while_loop_0:cond_fn/in:arg0_1") == into("while_loop_0:body_fn/in:arg0_1") == [("zeros", "zeros")]
    assert "while_loop_0:cond_fn/in:arg1_1" not in {n["id"] for n in data["nodes"]}
    assert into("while_loop_0:cond_fn/in:arg2_1") == [("in:n", "n")]
    # the weights the regions read come in as operands, and are no boxes, as at the top
    assert not any(n["name"].startswith(("p_", "arg3", "arg4")) for n in data["nodes"])


def test_a_node_whose_operands_do_not_fit_its_regions_draws_its_arguments_into_itself():
    g = Graph()
    spec = TensorSpec((2,), torch.float32)
    x = g.add_input("x", spec)
    p = g.add_node("gt", {"input": g.add_node("sum", {"input": x}).output, "other": 0}).output

    def branch(op):
        r = Graph()
        r.set_outputs([r.add_node(op, {"input": r.add_input("t", spec)}, outputs=[(op, spec)]).output])
        return r

    # two operands for one region input each: which feeds what is unknown
    c = g.add_node("cond", {"pred": p, "true_fn": branch("relu"), "false_fn": branch("neg"), "operands": [x, x]},
                   outputs=[("c", spec)])
    g.set_outputs([c.output])
    data = graph_data(g)
    assert sorted(e[0] for e in data["edges"] if e[1] == "c") == ["c:false_fn/neg", "c:true_fn/relu", "gt", "in:x"]
    assert not any(n["kind"] == "input" and n["scope"] for n in data["nodes"])


# ---- folding ----------------------------------------------------------------------------------------------------
def test_a_folded_region_sums_its_ops_and_a_folded_module_counts_them_once(g, outer):
    costs = _costs(g)
    layer = collapse(graph_data(g, costs), 1)
    assert set(layer.boxes) == {"in:x", "in:n", "sum_1", "gt", "m:cond:true_fn", "m:cond:false_fn", "cond", "zeros",
                                "m:while_loop_0:cond_fn", "m:while_loop_0:body_fn", "while_loop_0", "out:0", "out:1"}
    for key, (node, arg, r) in regions(g).items():
        box = layer.boxes["m:" + key]
        assert box.region and box.ops == len(r.nodes)
        assert box.flops == sum(c.flops for c in bridge.analysis.node_costs(r).values()) > 0
        assert box.lines()[0] == f"{arg} of %{node.name} ({node.op})"
    assert ("m:cond:true_fn", "cond") in {(a, b) for a, b, _ in layer.edges}
    assert ("in:x", "m:cond:true_fn") in {(a, b) for a, b, _ in layer.edges}
    # the module around the control flow: its ops, the regions' among them, and its FLOPs as node_costs counts them
    oc = _costs(outer)
    inner = collapse(graph_data(outer, oc), 1).boxes["m:inner"]
    mine = [n for n in outer.nodes if n.scope.path == "inner"]
    assert inner.ops == sum(1 for _ in outer.walk()) - 1  # all but pre's linear
    assert inner.flops == sum(oc[n].flops for n in mine) == sum(bridge.analysis.node_costs(outer)[n].flops
                                                                  for n in mine)
    assert inner.per_iteration  # it holds the loop, whose cost is one iteration's
    two = collapse(graph_data(outer, oc), 2)
    assert {"m:cond:true_fn", "m:while_loop_0:body_fn"} <= set(two.boxes) and set(two.clusters) == {"inner"}
    assert "while_loop_0" in two.boxes and two.boxes["while_loop_0"].lines()[2].endswith("FLOPs per iteration")


# ---- DOT / SVG ----------------------------------------------------------------------------------------------------
def dot_json(text: str) -> dict:
    r = subprocess.run(["dot", "-Tjson0"], input=text, capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


@needs_dot
@pytest.mark.parametrize("cls", [M, Outer, Nested])
def test_dot_draws_each_region_as_a_cluster_with_its_nodes(cls, tmp_path):
    g = traced(cls)
    path = bridge.draw(g, tmp_path / "g.dot")
    folded = collapse(graph_data(g, _costs(g)), None)
    parsed = dot_json(open(path).read())
    objects = parsed["objects"]  # the subgraphs, then the nodes, each numbered from 0 by its _gvid
    nodes = {o["_gvid"]: o["name"] for o in objects if "nodes" not in o}
    subgraphs = {o["_gvid"]: o["name"] for o in objects if "nodes" in o}
    clusters = {o["name"][len("cluster_"):]: o for o in objects if o["name"].startswith("cluster_")}
    assert len(nodes) == len(folded.boxes) and len(parsed["edges"]) == len(folded.edges)
    want, shown = regions(g), drawn_inputs(g)
    assert {k for k, c in clusters.items() if c["style"] == "rounded,filled"} == set(want)
    for key, (node, arg, r) in want.items():
        c = clusters[key]
        assert c["label"] == f"{arg} of %{node.name} ({node.op})" and c["style"] == "rounded,filled"
        inside = {nodes[i] for i in c["nodes"]}  # graphviz lists nested clusters' nodes too
        ops = {key + "/" + n.name for n in r.nodes}
        assert all(n.startswith(key + "/") for n in inside)
        nested = {n for n in inside if "/" in n[len(key) + 1:]}
        assert inside - nested == ops | {f"{key}/in:{v}" for v in shown[id(r)]}
        # the node it belongs to is outside it, below it: region outputs run into the node
        assert node_id(key) not in inside
        assert {nodes[e["tail"]] for e in parsed["edges"] if nodes[e["head"]] == node_id(key)} & ops
    if cls is Outer:  # the regions sit inside the module's cluster
        inner = clusters["inner"]
        assert {subgraphs[i] for i in inner["subgraphs"]} == {"cluster_" + k for k in want}


def node_id(key: str) -> str:
    """The drawing id of the node a region key belongs to: ``while_loop_0:body_fn/cond:true_fn`` ->
    ``while_loop_0:body_fn/cond``."""
    return key.rsplit(":", 1)[0]


@needs_dot
def test_svg_renders_the_region_clusters(g, tmp_path):
    path = bridge.draw(g, tmp_path / "g.svg")
    ns = "{http://www.w3.org/2000/svg}"
    root = ET.parse(path).getroot()
    groups = list(root.iter(ns + "g"))
    clusters = [e for e in groups if e.get("class") == "cluster"]
    titles = sorted("".join(t.text or "" for t in c.iter(ns + "text")) for c in clusters)
    assert titles == ["body_fn of %while_loop_0 (while_loop)", "cond_fn of %while_loop_0 (while_loop)",
                      "false_fn of %cond (cond)", "true_fn of %cond (cond)"]
    assert len([e for e in groups if e.get("class") == "node"]) == len(collapse(graph_data(g), None).boxes)
    assert bridge.draw(g, tmp_path / "g1.svg", depth=1)  # the layer view: regions folded into boxes
    text = " ".join(t.text or "" for t in ET.parse(tmp_path / "g1.svg").getroot().iter(ns + "text"))
    assert "true_fn of %cond (cond)" in text and "2 ops, 80 FLOPs" in text


# ---- Mermaid ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("depth", [None, 1])
def test_mermaid_has_a_subgraph_per_region(nested, depth):
    folded = collapse(graph_data(nested, _costs(nested)), depth)
    text = to_mermaid(folded)
    lines = text.splitlines()
    assert lines[0] == "flowchart TD"
    opened = [ln.strip() for ln in lines if ln.strip().startswith("subgraph ")]
    assert len(opened) == sum(1 for ln in lines if ln.strip() == "end") == len(folded.clusters)
    # the nesting is balanced, and the cond's branches open inside the loop's body
    depth_now, where = 0, {}
    for ln in lines[1:]:
        s = ln.strip()
        if s.startswith("subgraph "):
            where[s.split("[")[0].split()[1]] = depth_now
            depth_now += 1
        elif s == "end":
            depth_now -= 1
        assert depth_now >= 0
    assert depth_now == 0
    if depth is None:
        assert where["s_while_loop_0_body_fn"] == 0 and where["s_while_loop_0_body_fn_cond_true_fn"] == 1
        assert 'subgraph s_while_loop_0_body_fn_cond_true_fn["true_fn of %cond (cond)"]' in text
    # every arrow joins two declared boxes; each region is shaded by a style line naming a declared subgraph
    declared = {ln.strip().split("[")[0].split("(")[0] for ln in lines[1:]
                if ln.strip().startswith("n_") and "-->" not in ln}
    arrows = [ln.split(" --> ") for ln in lines if " --> " in ln]
    assert len(arrows) == len(folded.edges) and all(a.strip() in declared and b in declared for a, b in arrows)
    styled = [ln.split()[1] for ln in lines if ln.strip().startswith("style ")]
    assert sorted(styled) == sorted(s.split("[")[0].split()[1] for s in opened)  # every cluster here is a region


# ---- the HTML page ----------------------------------------------------------------------------------------------
_RECTS = """return Array.from(document.querySelectorAll('#' + arguments[0] + '-svg .cluster'), function (g) {
    var r = g.querySelector('rect');
    return {path: g.getAttribute('data-path'), cls: g.getAttribute('class'), title: g.querySelector('text').textContent,
            x0: +r.getAttribute('x'), y0: +r.getAttribute('y'),
            x1: +r.getAttribute('x') + +r.getAttribute('width'), y1: +r.getAttribute('y') + +r.getAttribute('height')};
});"""


def ids(browser, view: str) -> set[str]:
    return set(browser.execute_script(
        f"return Array.from(document.querySelectorAll('#{view}-svg .node'), e => e.getAttribute('data-id'))"))


@needs_browser
@pytest.mark.parametrize("cls", [M, Outer, Nested])
def test_page_shows_regions_as_clusters_that_do_not_overlap(browser, tmp_path, cls):
    g = traced(cls)
    browser.get(f"file://{bridge.draw(g, tmp_path / 'g.html')}")
    assert browser.execute_script("return document.body.getAttribute('data-ready')") == "1"
    assert console_errors(browser) == []
    data = graph_data(g, _costs(g))
    assert ids(browser, "graph") == {n["id"] for n in data["nodes"]}  # every op, those in regions too
    rects = browser.execute_script(_RECTS, "graph")
    want = regions(g)
    shown = {r["path"]: r for r in rects if r["cls"] == "cluster region"}
    assert set(shown) == set(want)
    for key, (node, arg, _r) in want.items():
        assert shown[key]["title"] == f"\u229f {arg} of %{node.name} ({node.op})"
    # clusters side by side (a cond's branches, a loop's two regions) do not overlap; a nested one is inside its own
    mods = data["modules"]
    for a in rects:
        for b in rects:
            if a is b or b["path"] in ancestors(mods, a["path"]):
                continue
            if a["path"] in ancestors(mods, b["path"]):
                assert a["x0"] <= b["x0"] and b["x1"] <= a["x1"] and a["y0"] <= b["y0"] and b["y1"] <= a["y1"], (a, b)
            else:
                assert a["x1"] <= b["x0"] or b["x1"] <= a["x0"] or a["y1"] <= b["y0"] or b["y1"] <= a["y0"], (a, b)


@needs_browser
def test_page_folds_and_unfolds_a_region(browser, tmp_path, g):
    from selenium.webdriver.common.by import By

    browser.get(f"file://{bridge.draw(g, tmp_path / 'g.html')}")
    assert browser.execute_script("return document.body.getAttribute('data-ready')") == "1"
    layer = ids(browser, "layer")
    assert {"m:cond:true_fn", "m:cond:false_fn", "m:while_loop_0:cond_fn", "m:while_loop_0:body_fn"} <= layer
    assert browser.find_element(By.CSS_SELECTOR, "header .stats").text == "13 ops, 0 modules, 4 regions"
    box = browser.find_element(By.CSS_SELECTOR, '#layer-svg .node[data-id="m:while_loop_0:body_fn"]')
    assert "region" in box.get_attribute("class") and "3 ops, 105 FLOPs" in box.text
    box.click()
    assert {"while_loop_0:body_fn/add", "while_loop_0:body_fn/linear", "while_loop_0:body_fn/tanh",
            "while_loop_0:body_fn/in:arg0_1", "while_loop_0:body_fn/in:arg1_1"} <= ids(browser, "layer")
    assert browser.find_element(By.CSS_SELECTOR, "#panel h3").text == "body_fn of %while_loop_0"
    assert browser.find_element(By.CSS_SELECTOR, '#panel [data-field="kind"]').text == "region"
    assert browser.find_element(By.CSS_SELECTOR, '#panel [data-field="node"]').text == "%while_loop_0"
    assert browser.find_element(By.CSS_SELECTOR, '#panel [data-field="ops"]').text == "3"
    # its title folds it again (seen whole first: unfolded, the view is bigger than the pane)
    browser.find_element(By.CSS_SELECTOR, "#layer-fit").click()
    browser.find_element(By.CSS_SELECTOR, '#layer-svg .cluster[data-path="while_loop_0:body_fn"] text').click()
    assert ids(browser, "layer") == layer
    # the loop node says its FLOPs are one iteration's; search finds an op in a branch
    browser.find_element(By.CSS_SELECTOR, '#graph-svg .node[data-id="while_loop_0"]').click()
    assert browser.find_element(By.CSS_SELECTOR, '#panel [data-field="flops"]').text.endswith("per iteration")
    assert browser.find_element(By.CSS_SELECTOR, '#panel [data-field="regions"]').text == "cond_fn, body_fn"
    search = browser.find_element(By.ID, "search")
    search.send_keys("relu")
    assert [e.get_attribute("data-id") for e in browser.find_elements(By.CSS_SELECTOR, "#search-results li")] == [
        "cond:true_fn/relu"]
    assert "true_fn of %cond" in browser.find_element(By.CSS_SELECTOR, "#search-results li small").text
    assert console_errors(browser) == []


# ---- the CLI ------------------------------------------------------------------------------------------------------
@needs_dot
def test_cli_inspect_prints_regions_and_draw_draws_them(tmp_path, capsys):
    src = tmp_path / "cf.py"
    src.write_text(textwrap.dedent('''
        import torch
        from tests.views.test_regions import M


        def make():
            torch.manual_seed(0)
            return M().eval(), (torch.randn(2, 4), torch.tensor(3))
        '''))
    assert main(["inspect", f"{src}:make"]) == 0
    out = capsys.readouterr().out
    assert "    true_fn(%x: f32[2, 4]" in out and "    body_fn(%arg0_1: i64[]" in out
    assert "      %tanh : f32[2, 4] = tanh(%linear)" in out
    assert main(["draw", f"{src}:make", "-o", str(tmp_path / "cf.svg")]) == 0
    assert "true_fn of %cond (cond)" in (tmp_path / "cf.svg").read_text()
