"""Progress on a terminal (bridge.progress): a line on stderr for long work (an export, a drawing, the conformance
run), only when stderr is a terminal and the job runs past ``DELAY``; none into pipes, and stdout unchanged.

A terminal is faked by a stderr whose ``isatty()`` is true (rich then draws its live line into it, as on a
terminal), set in the test's body (pytest's capture puts its own stderr back between a fixture and the test);
``DELAY`` is set to 0 where a test needs the line of a job that is quick here."""
from __future__ import annotations

import contextlib
import io
import re
import shutil
import sys
import time

import pytest
import torch
import torch.nn as nn

import bridge
from bridge import progress
from bridge.cli import main


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def plain(text: str) -> str:
    """What the terminal shows, less colours and cursor moves."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


@pytest.fixture
def terminal(monkeypatch):
    """A context that makes stderr a terminal; progress lines appear at once (``DELAY`` 0)."""
    monkeypatch.delenv("BRIDGE_PROGRESS", raising=False)
    for var in ("NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "FORCE_COLOR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setattr(progress, "DELAY", 0)

    @contextlib.contextmanager
    def on_terminal():
        err, old = FakeTerminal(), sys.stderr
        sys.stderr = err
        try:
            yield err
        finally:
            sys.stderr = old
    return on_terminal


def deep_model(n: int = 150) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(*[m for _ in range(n) for m in (nn.Linear(16, 16), nn.ReLU())]).eval()


def test_track_counts_on_a_terminal(terminal):
    with terminal() as err:
        assert list(progress.track(range(7), "counting things")) == list(range(7))
    shown = plain(err.getvalue())
    assert "counting things" in shown and "7/7" in shown
    assert shown.count("\n") == 1 and err.getvalue().endswith("\x1b[2K")  # one line redrawn in place, then erased


def test_nothing_where_stderr_is_not_a_terminal(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("BRIDGE_PROGRESS", raising=False)
    monkeypatch.setattr(progress, "DELAY", 0)
    items = [1, 2, 3]
    assert progress.track(items, "x") is items  # the list itself: no wrapper, no per-item cost
    with progress.job("a job"):
        assert progress._current.get() is None  # nothing set up
        progress.step("a step")
    bridge.to_onnx(deep_model(), tmp_path / "m.onnx", args=(torch.randn(2, 16),))
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("BRIDGE_PROGRESS", "0")  # off, even on a terminal
    monkeypatch.setattr(sys, "stderr", FakeTerminal())
    assert progress.track(items, "x") is items


def test_quick_work_shows_nothing_and_long_work_appears_after_the_delay(terminal, monkeypatch):
    monkeypatch.setattr(progress, "DELAY", 0.3)
    with terminal() as err:
        with progress.job("quick"):
            progress.step("a step")
        assert err.getvalue() == ""  # done before the delay: no line, not even one cleared
        with progress.job("slow"):
            progress.step("waiting")
            time.sleep(0.8)
    assert "slow: waiting" in plain(err.getvalue())


def test_nested_work_is_a_step_of_one_line(terminal):
    with terminal() as err, progress.job("outer"):
        for _ in progress.track(range(3), "items"):
            with progress.job("inner"):  # a detail of the counted step: the count stays
                for _ in progress.track(range(5), "sub-items"):
                    pass
        progress.step("finishing")
    shown = plain(err.getvalue())
    assert "outer: items" in shown and "3/3" in shown and "\u00b7 sub-items" in shown
    assert "outer: finishing" in shown
    assert "5/5" not in shown and "15/" not in shown  # the inner count is not the line's


def test_export_shows_its_steps_and_writes_the_same_file(terminal, tmp_path):
    model, x = deep_model(), torch.randn(2, 16)
    with terminal() as err:
        bridge.to_onnx(model, tmp_path / "tty.onnx", args=(x,))
    shown = plain(err.getvalue())
    for step in ("tracing Sequential", "optimizing", "lowering", "checking", "writing weights"):
        assert f"exporting to ONNX: {step}" in shown, step
    assert re.search(r"lowering .*\b300/300\b", shown)  # a Linear and a ReLU each, after the passes
    assert re.search(r"writing weights .*\b\d+\.\d kB/\d+\.\d kB\b", shown)  # counted in bytes
    bridge.to_onnx(model, tmp_path / "pipe.onnx", args=(x,))  # not a terminal
    assert (tmp_path / "tty.onnx").read_bytes() == (tmp_path / "pipe.onnx").read_bytes()


MODEL = '''
import torch.nn as nn


def make():
    return nn.Sequential(*[m for _ in range(100) for m in (nn.Linear(8, 8), nn.ReLU())])
'''


def test_cli_stdout_is_the_same_on_a_terminal(terminal, tmp_path, capsys, monkeypatch):
    (tmp_path / "model.py").write_text(MODEL)
    monkeypatch.chdir(tmp_path)
    argv = ["export", "model.py:make", "m.onnx", "--input", "2,8"]
    with terminal() as err:
        assert main(argv) == 0
    on_terminal = capsys.readouterr().out
    assert "exporting to ONNX: lowering" in plain(err.getvalue())
    assert main(argv) == 0
    out = capsys.readouterr()
    assert on_terminal == out.out and on_terminal.startswith("wrote m.onnx: opset ")
    assert "\x1b" not in on_terminal and out.err == ""


def test_drawing_shows_its_steps(terminal, tmp_path):
    from tests.views.test_draw import big_graph

    g = big_graph(100)
    with terminal() as err:
        bridge.draw(g, tmp_path / "g.html")
        assert "drawing g.html: analysing 400 ops" in plain(err.getvalue())
        if shutil.which("dot"):
            bridge.draw(g, tmp_path / "g.svg", max_nodes=10**6)
            assert "drawing g.svg: graphviz laying out 402 boxes" in plain(err.getvalue())
        bridge.draw(g, tmp_path / "quiet.html", progress=False)  # asked for none
    assert "quiet.html" not in err.getvalue()


def test_conformance_run_counts_cases(terminal):
    from tests import onnx_conformance

    cases = [c for c in onnx_conformance.node_cases() if c.name.startswith("test_relu")]
    assert cases
    with terminal() as err:
        results = onnx_conformance.run_all(cases)
    assert results == {c.name: None for c in cases}  # Relu passes
    assert re.search(rf"onnx conformance: node cases .*\b{len(cases)}/{len(cases)}\b", plain(err.getvalue()))
