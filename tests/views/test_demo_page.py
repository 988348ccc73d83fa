"""The page ``bridge demo`` writes opens in a real headless chromium: it loads with no console errors and shows
every node of the demo model's graph once its graph view is open."""
from __future__ import annotations

from bridge import cli, zoo
from bridge.demo import DEFAULT_MODEL
from tests.views.test_html import errors, ids, pytestmark  # noqa: F401 - the skip where no browser is

from selenium.webdriver.common.by import By  # noqa: E402 - after test_html's importorskip


def test_demo_page_opens(browser, tmp_path, capsys):
    assert cli.main(["demo", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    browser.get(f"file://{tmp_path / (DEFAULT_MODEL + '.html')}")
    assert browser.execute_script("return document.body.getAttribute('data-ready')") == "1"
    assert errors(browser) == []
    e = zoo.get(DEFAULT_MODEL)
    args, kwargs = e.make_inputs(e.batch)
    import bridge

    g = bridge.trace(e.make_model(), args, kwargs, dynamic=e.dynamic)
    browser.find_element(By.CSS_SELECTOR, "#graph-open").click()
    assert ids(browser, "graph") >= {n.name for n in g.nodes}
    assert "layer1" in browser.find_element(By.ID, "layer-svg").text
