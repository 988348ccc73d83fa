"""``str(bridge.summary(...))`` lays the table out itself (rich takes ~0.2 ms a row): the text must be exactly what
rich renders for ``Summary.table()``, the oracle here, on every zoo model by module and by node, at several
depths, with symbolic dims, and wherever rich would lay it out differently (wide characters, markup in the
title, a narrow width) rich itself renders it."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import bridge
from bridge import zoo
from bridge.analysis.summary import plain_text, simple_table

# small zoo models of every kind (convolutions, recurrences, attention, several inputs and outputs)
MODELS = [e.name for e in zoo.entries() if not e.name.startswith("tv_")]


def _rich(s, width: int = 1000) -> str:
    """What ``render`` gave when rich laid out every table."""
    return plain_text(s.table(), width) + "\n" + "\n".join(s.footer()) + "\n"


@pytest.fixture(scope="module")
def graphs():
    out = {}
    for name in MODELS:
        e = zoo.get(name)
        args, kwargs = e.make_inputs(e.batch)
        out[name] = bridge.trace(e.make_model(), args, kwargs, dynamic=e.dynamic)
    return out


@pytest.mark.parametrize("name", MODELS)
def test_text_is_what_rich_renders(graphs, name):
    g = graphs[name]
    for by in ("module", "node"):
        for depth in (0, 1, 3, None):
            s = bridge.summary(g, by=by, depth=depth)
            assert simple_table(*s._cells(), 1000) is not None, "the fast layout should take this table"
            assert str(s) == _rich(s), (by, depth)


def test_symbolic_dims_and_json_unchanged():
    e = zoo.get("mlp")
    model = e.make_model()
    x = torch.randn(3, *e.make_inputs(2)[0][0].shape[1:])
    g = bridge.trace(model, (x,), dynamic={"x": {0: "batch"}})
    s = bridge.summary(g)
    assert "[batch, " in str(s)
    assert str(s) == _rich(s)


class _Wide(nn.Module):
    """A submodule named with a character two terminal cells wide."""

    def __init__(self):
        super().__init__()
        self.层 = nn.Linear(4, 4)

    def forward(self, x):
        return self.层(x).relu()


def test_wide_characters_narrow_width_and_markup_fall_back_to_rich():
    s = bridge.summary(_Wide().eval(), torch.randn(2, 4))
    assert simple_table(*s._cells(), 1000) is None
    assert str(s) == _rich(s) and "└─层 (Linear)" in str(s)

    s = bridge.summary(zoo.get("resnet_mini").make_model(), zoo.get("resnet_mini").make_inputs(2)[0])
    assert simple_table(*s._cells(), 60) is None  # wider than 60 columns: rich shrinks the columns
    assert s.render(width=60) == _rich(s, 60)

    g = bridge.trace(nn.Sequential(nn.Linear(4, 4)).eval(), torch.randn(2, 4))
    g.meta["model_type"] = "net[v2]"  # rich would read "[v2]" in the title as markup
    s = bridge.summary(g)
    assert simple_table(*s._cells(), 1000) is None
    assert str(s) == _rich(s)


def test_rendering_a_table_of_many_rows_is_fast():
    """~600 rows: rich takes ~0.1 s; the direct layout a few milliseconds. The bound leaves room for a busy
    machine; the point is that str() does not go through rich's layout."""
    import time

    layers = [m for _ in range(150) for m in (nn.Linear(8, 8), nn.ReLU())]
    s = bridge.summary(nn.Sequential(*layers).eval(), torch.randn(2, 8), by="node")
    assert len(s.rows) > 300
    t = time.perf_counter()
    text = str(s)
    assert time.perf_counter() - t < 0.05
    assert text == _rich(s)
