"""``Report.to_html``: one self-contained page that parses, holds a row per node with each layer's cells beside
its first node, the topology, totals and conversions, escapes every name (a hostile module name stays text),
and opens in headless chromium when one is installed."""
from __future__ import annotations

from html.parser import HTMLParser

import torch
import torch.nn as nn

import bridge
from tests.conftest import console_errors


class Page(HTMLParser):
    """The page's table rows (class, cells' text and rowspans), section titles, list items, and every tag seen."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.rows, self.h2, self.items, self.tags, self.title = [], [], [], [], ""
        self._where: list[str] = []
        self._cell = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        self._where.append(tag)
        if tag == "tr" and "tbody" in self._where:
            self.rows.append({"class": a.get("class"), "cells": []})
        elif tag == "td":
            self._cell = {"text": "", "rowspan": int(a.get("rowspan", 1)), "class": a.get("class", "")}
            self.rows[-1]["cells"].append(self._cell)

    def handle_endtag(self, tag):
        while self._where and self._where.pop() != tag:
            pass
        if tag == "td":
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data
        elif self._where and self._where[-1] == "h2":
            self.h2.append(data)
        elif self._where and self._where[-1] == "li":
            self.items.append(data)
        elif self._where and self._where[-1] == "title":
            self.title += data


def resnet_mini():
    """A real model: residual blocks, a DAG."""
    from bridge import zoo

    e = zoo.get("resnet_mini")
    args, _ = e.make_inputs(2)
    return e.make_model().eval(), args


def test_page_holds_both_views_and_the_numbers():
    model, args = resnet_mini()
    r = bridge.report(model, args)
    page = Page(r.to_html())
    assert page.tags[0] == "html" and "script" not in page.tags and "link" not in page.tags  # self-contained
    assert page.h2 == ["Layer view | graph view", "Topology", "Totals", "Conversions"]
    assert len(page.rows) == len(r.graph.nodes)  # one row per node
    firsts = [row for row in page.rows if row["class"] == "first"]
    assert len(firsts) == len(r.layers)
    for row, layer in zip(firsts, r.layers):  # the layer's cells span the rows of the nodes it became
        num, name, out, params = row["cells"][:4]
        assert name["text"] == f"{layer.name} ({layer.type})" and name["rowspan"] == len(layer.nodes)
        assert params["text"].replace(",", "") in (str(layer.params), "--")
    nodes = [row["cells"][-4]["text"] for row in page.rows]
    assert nodes == [f"%{n.name}" for n in r.graph.nodes]
    assert f"Total params: {sum(p.numel() for p in model.parameters()):,}" in " ".join(page.items)
    assert any(i.startswith("nn.Sequential: no (") for i in page.items)  # a DAG, and why


def test_hostile_names_are_escaped():
    name = "<img src=x onerror=alert(2)>"
    Evil = type("Evil<script>alert(1)</script>", (nn.Module,),
                {"forward": lambda self, x: getattr(self, name)(x).relu()})
    m = Evil()
    m.add_module(name, nn.Linear(3, 3))
    text = bridge.report(m, (torch.randn(2, 3),)).to_html()
    page = Page(text)
    assert "<script>" not in text and "<img" not in text
    assert page.title.startswith("Evil<script>alert(1)</script>")  # shown as text, read back unchanged
    assert page.tags.count("script") == 0 and "img" not in page.tags
    assert page.rows[0]["cells"][1]["text"] == f"{name} (Linear)"
    assert any(name in i for i in page.items)  # the peak's scope in the totals


def test_opens_in_headless_chromium(tmp_path, browser):
    model, args = resnet_mini()
    r = bridge.report(model, args)
    path = tmp_path / "r.html"
    path.write_text(r.to_html(), encoding="utf-8")
    driver = browser
    driver.get(f"file://{path}")
    assert driver.title == f"{r.summary.rows[0].type}: bridge report"
    assert driver.execute_script("return document.querySelectorAll('tbody tr').length") == len(r.graph.nodes)
    # the layer view is beside the graph view: a layer's name and its first node are on one screen line
    top = driver.execute_script("const c = document.querySelector('tbody tr.first').cells;"
                                "return [c[1].getBoundingClientRect().top, c[4].getBoundingClientRect().top,"
                                " c[1].getBoundingClientRect().right <= c[4].getBoundingClientRect().left]")
    assert top[0] == top[1] and top[2] is True
    assert console_errors(driver) == []
    driver.save_screenshot(str(tmp_path / "report.png"))
