"""The HTML page in a real headless browser (Debian chromium + chromedriver, driven by selenium): it loads with
no console errors, unfolding a module shows its ops, folding hides them, search finds an op, the side panel
shows the FLOPs bridge.analysis counted, pan and zoom move the view, a 5,000-op page works, a 2,000-op graph opens
readable at its inputs (with "fit" one click or key away), and a screenshot is written."""
from __future__ import annotations

import pytest
import torch

import bridge
from bridge.analysis import node_costs

from tests.conftest import CHROMEDRIVER, CHROMIUM, console_errors
from tests.views.test_draw import Net, big_graph

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

pytestmark = pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                                reason="no headless browser: apt-get install chromium chromium-driver")


@pytest.fixture(scope="module")
def graph():
    torch.manual_seed(0)
    return bridge.trace(Net().eval(), (torch.randn(1, 3, 8, 8),))


@pytest.fixture
def page(browser, graph, tmp_path):
    path = bridge.draw(graph, tmp_path / "net.html")
    browser.get(f"file://{path}")
    assert browser.execute_script("return document.body.getAttribute('data-ready')") == "1"
    return browser


errors = console_errors


def ids(browser, view: str) -> set[str]:
    # one script call: a WebDriver round trip per element would take a minute on the 5,000-op page
    return set(browser.execute_script(
        f"return Array.from(document.querySelectorAll('#{view}-svg .node'), e => e.getAttribute('data-id'))"))


def test_loads_without_console_errors_and_screenshot(page, graph, tmp_path):
    assert errors(page) == []
    assert ids(page, "layer") == {"in:x", "m:stem", "m:body", "mean", "m:head", "out:0"}
    assert ids(page, "graph") == {n.name for n in graph.nodes} | {"in:x", "out:0"}
    assert len(page.find_elements(By.CSS_SELECTOR, "#graph-svg .cluster")) == 9
    assert len(page.find_elements(By.CSS_SELECTOR, "#graph-svg .edge.skip")) == 2  # the two identities
    assert len(page.find_elements(By.CSS_SELECTOR, "#layer-svg .edge.skip")) == 0  # inside body, folded
    shot = tmp_path / "net.png"
    assert page.save_screenshot(str(shot))
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert int.from_bytes(data[16:20], "big") == 1600  # width from the IHDR chunk


def test_unfolding_a_module_shows_its_nodes(page):
    page.find_element(By.CSS_SELECTOR, '#layer-svg .node[data-id="m:body"]').click()
    assert ids(page, "layer") == {"in:x", "m:stem", "m:body.0", "m:body.1", "mean", "m:head", "out:0"}
    page.find_element(By.CSS_SELECTOR, '#layer-svg .node[data-id="m:body.0"]').click()
    shown = ids(page, "layer")
    # a leaf module (Conv2d, BatchNorm2d) stays one box, as collapse() draws it; the block's own ops show
    assert shown == {"in:x", "m:stem", "m:body.0.conv", "m:body.0.bn", "add", "relu", "m:body.1", "mean", "m:head",
                     "out:0"}
    assert page.find_element(By.CSS_SELECTOR, "#panel h3").text == "body.0"
    assert page.find_element(By.CSS_SELECTOR, '#panel [data-field="type"]').text == "Block"
    assert page.find_element(By.CSS_SELECTOR, '#panel [data-field="ops"]').text == "4"
    # the cluster's title folds it back
    page.find_element(By.CSS_SELECTOR, '#layer-svg .cluster[data-path="body"] text').click()
    assert ids(page, "layer") == {"in:x", "m:stem", "m:body", "mean", "m:head", "out:0"}
    assert errors(page) == []


def test_side_panel_shows_shape_params_and_flops(page, graph):
    cost = node_costs(graph)[graph.node("body.1.conv")]
    page.find_element(By.CSS_SELECTOR, '#graph-svg .node[data-id="body.1.conv"]').click()
    field = lambda f: page.find_element(By.CSS_SELECTOR, f'#panel [data-field="{f}"]').text  # noqa: E731
    assert field("flops").startswith(f"{cost.flops:,} (") and cost.flops == 2 * 4 * 36 * 64 + 4 * 64
    assert field("params").startswith(f"{cost.params:,} (") and cost.params == 4 * 4 * 9 + 4
    assert field("shape") == "f32[1, 4, 8, 8]"
    assert field("module") == "body.1.conv (Conv2d)"
    # the layer view marks the folded module the op is in
    assert "selected" in page.find_element(By.CSS_SELECTOR, '#layer-svg .node[data-id="m:body"]').get_attribute("class")
    # a folded module's panel sums its ops
    page.find_element(By.CSS_SELECTOR, '#layer-svg .node[data-id="m:stem"]').click()
    stem = node_costs(graph)[graph.node("stem")]
    assert field("flops").startswith(f"{stem.flops:,} (")


def test_search_finds_and_reveals_a_node(page):
    page.find_element(By.CSS_SELECTOR, "#graph-close").click()
    assert "body.0.bn" not in ids(page, "graph")
    box = page.find_element(By.ID, "search")
    box.send_keys("batch_norm")
    assert page.find_element(By.ID, "search-count").text == "2 found"
    results = [li.get_attribute("data-id") for li in page.find_elements(By.CSS_SELECTOR, "#search-results li")]
    assert results == ["body.0.bn", "body.1.bn"]
    assert len(page.find_elements(By.CSS_SELECTOR, "#graph-svg .node.match")) == 1  # both inside folded body
    box.send_keys(Keys.ENTER)
    assert "body.0.bn" in ids(page, "graph")  # unfolded to show it
    sel = page.find_element(By.CSS_SELECTOR, '#graph-svg .node[data-id="body.0.bn"]')
    assert "selected" in sel.get_attribute("class")
    assert page.find_element(By.CSS_SELECTOR, "#panel h3").text == "%body.0.bn"
    assert errors(page) == []


def test_pan_and_zoom(page):
    vp = page.find_element(By.CSS_SELECTOR, "#graph-svg .viewport")
    before = vp.get_attribute("transform")
    page.execute_script("""
        var svg = document.getElementById('graph-svg'), r = svg.getBoundingClientRect();
        svg.dispatchEvent(new WheelEvent('wheel', {deltaY: -300, clientX: r.left + 50, clientY: r.top + 50,
                                                   bubbles: true, cancelable: true}));""")
    zoomed = vp.get_attribute("transform")
    k0, k1 = (float(t.split("scale(")[1].rstrip(")")) for t in (before, zoomed))
    assert k1 == pytest.approx(k0 * 1.5683, rel=1e-3)  # exp(300 * 0.0015)
    page.execute_script("""
        var svg = document.getElementById('graph-svg');
        svg.dispatchEvent(new MouseEvent('mousedown', {clientX: 300, clientY: 300, bubbles: true}));
        window.dispatchEvent(new MouseEvent('mousemove', {clientX: 340, clientY: 320}));
        window.dispatchEvent(new MouseEvent('mouseup', {}));""")
    moved = vp.get_attribute("transform")
    (x0, y0), (x1, y1) = (map(float, t.split("translate(")[1].split(")")[0].split(",")) for t in (zoomed, moved))
    assert (x1 - x0, y1 - y0) == pytest.approx((40, 20))


def test_5000_op_page(browser, tmp_path):
    g = big_graph()
    path = bridge.draw(g, tmp_path / "big.html")
    browser.get(f"file://{path}")
    assert browser.execute_script("return document.body.getAttribute('data-ready')") == "1"
    assert len(ids(browser, "graph")) == 7  # folded past 500 boxes: five stages, input, output
    took = browser.execute_script("var t = performance.now(); document.getElementById('graph-open').click(); "
                                  "return performance.now() - t")
    assert len(ids(browser, "graph")) == 5002
    assert took < 20_000  # ms to lay out and draw every op and its 1,255 clusters (about 1 s here)
    browser.save_screenshot(str(tmp_path / "big.png"))
    assert errors(browser) == []


# ---- the start view: a big graph opens readable, at its inputs; "fit" (or f) shows all of it ----------------
_VIEW = """
    var v = window.bridgeApp.views[arguments[0]], r = v.svg.getBoundingClientRect();
    var label = v.svg.querySelector('.node text');
    var inside = function (e) {
        var b = e.getBoundingClientRect();
        return b.left >= r.left - 0.5 && b.right <= r.right + 0.5 && b.top >= r.top - 0.5 && b.bottom <= r.bottom + 0.5;
    };
    var nodes = Array.from(v.svg.querySelectorAll('.node'));
    return {label_px: parseFloat(getComputedStyle(label).fontSize) * label.getScreenCTM().a,
            shown: nodes.filter(inside).map(e => e.getAttribute('data-id')), boxes: nodes.length,
            transform: v.viewport.getAttribute('transform'),
            zoom: document.getElementById(arguments[0] + '-zoom').textContent};"""


def view(browser, name: str) -> dict:
    """What the view shows on screen: a box label's font size in px, the boxes wholly inside the pane."""
    return browser.execute_script(_VIEW, name)


def test_big_graph_opens_readable_at_its_inputs_and_fit_shows_all(browser, tmp_path):
    g = big_graph(500)  # 2,000 ops in 500 modules: drawn op by op (max_nodes), 2,000 layers deep
    browser.get(f"file://{bridge.draw(g, tmp_path / 'big.html', max_nodes=5000)}")
    assert browser.execute_script("return document.body.getAttribute('data-ready')") == "1"
    start = view(browser, "graph")
    assert start["boxes"] == 2002
    assert start["label_px"] >= 10 - 1e-6  # readable: labels 10 px or more on screen
    first = ["in:x"] + [n.name for n in g.nodes[:3]]
    assert set(first) <= set(start["shown"]) and len(start["shown"]) < 200  # the inputs, not the whole graph
    assert start["zoom"] == "91%"  # 10 px / the labels' 11 px
    # the layer view (two stages) is small: it fits, as before
    layer = view(browser, "layer")
    assert layer["boxes"] == 4 and len(layer["shown"]) == 4
    browser.find_element(By.CSS_SELECTOR, "#layer-fit").click()
    assert view(browser, "layer")["transform"] == layer["transform"]
    # the overview is one button away: every box in the pane (and unreadably small, which is why it is not the start)
    browser.find_element(By.CSS_SELECTOR, "#graph-fit").click()
    whole = view(browser, "graph")
    assert len(whole["shown"]) == whole["boxes"] == 2002 and whole["label_px"] < 1
    # ... or one key: h goes back to the start view, f fits again
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys("h")
    assert view(browser, "graph")["transform"] == start["transform"]
    body.send_keys("f")
    assert view(browser, "graph")["transform"] == whole["transform"]
    # unfolding everything in a small view starts readable too; folding it back fits
    browser.find_element(By.CSS_SELECTOR, "#layer-open").click()
    opened = view(browser, "layer")
    assert opened["boxes"] == 2002 and opened["label_px"] >= 10 - 1e-6 and "in:x" in opened["shown"]
    browser.find_element(By.CSS_SELECTOR, "#layer-close").click()
    assert len(view(browser, "layer")["shown"]) == view(browser, "layer")["boxes"]
    assert errors(browser) == []


def test_small_graph_fits_at_load(page, graph):
    for name in ("layer", "graph"):
        start = view(page, name)
        assert len(start["shown"]) == start["boxes"] and start["label_px"] >= 6  # all of it, labels 6 px or more
        page.find_element(By.CSS_SELECTOR, f"#{name}-fit").click()
        assert view(page, name)["transform"] == start["transform"]  # the start view is the fit
    assert view(page, "graph")["boxes"] == len(graph.nodes) + 2


@pytest.mark.parametrize("name", ["densenet_mini", "dict_output", "causal_attention"])
def test_zoo_pages(browser, tmp_path, name):
    from bridge import zoo

    e = zoo.get(name)
    args, kwargs = e.make_inputs(2)
    g = bridge.trace(e.make_model(), args, kwargs)
    browser.get(f"file://{bridge.draw(g, tmp_path / 'z.html')}")
    assert browser.execute_script("return document.body.getAttribute('data-ready')") == "1"
    browser.find_element(By.CSS_SELECTOR, "#layer-open").click()
    n_out = sum(1 for _ in bridge.ir.graph.iter_values(g.outputs))
    expected = {n.name for n in g.nodes} | {f"in:{v.name}" for v in g.inputs} | {f"out:{i}" for i in range(n_out)}
    assert ids(browser, "layer") == ids(browser, "graph") == expected
    assert errors(browser) == []
