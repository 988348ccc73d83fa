"""The layers of bridge/ point only down: every import in every module (top-level or inside a function, read
with ``ast``) goes to its own layer or a lower one. docs/concepts.md draws these layers."""
from __future__ import annotations

import ast
import pathlib

import pytest

import bridge

ROOT = pathlib.Path(bridge.__file__).parent

# low to high; a module's layer is that of its top-level name under bridge/
LAYERS = [
    {"errors", "progress", "version", "fileio"},
    {"ir"},
    {"ops"},
    {"frontends", "backends"},
    {"passes"},
    {"analysis", "views"},
    {"trace", "api", "decoders", "cli", "cli_support", "zoo", "demo", "__init__", "__main__"},  # zoo, demo: models
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}

# the two facades that may call up (docs/concepts.md): Graph.run/Graph.to_module run the torch backend, and the
# printer reads an op's default attributes from the registry
FACADES = {("ir/graph.py", "bridge.backends.torch"), ("ir/printer.py", "bridge.ops")}


def _modules():
    return sorted(p for p in ROOT.rglob("*.py") if "__pycache__" not in p.parts)


def _layer(parts: list[str]) -> int:
    """Layer of a module given as its dotted parts under bridge (``["ops", "nn"]``; ``[]`` is the package)."""
    return LAYER[parts[0]] if parts else LAYER["__init__"]


def imports(path: pathlib.Path, source: str | None = None) -> list[tuple[int, list[str]]]:
    """(line, the bridge module imported as parts under bridge) for every import of bridge code in ``path`` (or
    in ``source``, read as if it were that file)."""
    rel = path.relative_to(ROOT).with_suffix("").parts
    package = list(rel[:-1])  # the package a relative import starts from
    out = []
    text = source if source is not None else path.read_text(encoding="utf-8")
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                if node.module:
                    out.append((node.lineno, base + node.module.split(".")))
                else:  # from . import x: x may be a submodule or a name of the package
                    out += [(node.lineno, base + [a.name] if _is_module(base + [a.name]) else base)
                            for a in node.names]
            elif node.module and node.module.split(".")[0] == "bridge":
                out.append((node.lineno, node.module.split(".")[1:]))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")[1:]) for a in node.names if a.name.split(".")[0] == "bridge"]
    return out


def _is_module(parts: list[str]) -> bool:
    return ROOT.joinpath(*parts).with_suffix(".py").exists() or ROOT.joinpath(*parts).is_dir()


def test_every_module_has_a_layer():
    unknown = sorted({str(p.relative_to(ROOT)) for p in _modules()
                      if p.relative_to(ROOT).with_suffix("").parts[0] not in LAYER})
    assert not unknown, f"modules outside every layer (add them to LAYERS and docs/concepts.md): {unknown}"


def test_imports_point_down():
    up = []
    for path in _modules():
        rel = path.relative_to(ROOT)
        parts = list(rel.with_suffix("").parts)
        mine = _layer([] if parts == ["__init__"] else parts)
        for line, target in imports(path):
            if _layer(target) > mine and (rel.as_posix(), ".".join(["bridge"] + target)) not in FACADES:
                up.append(f"bridge/{rel.as_posix()}:{line} imports bridge.{'.'.join(target)} (layer "
                          f"{_layer(target)} above {mine})")
    assert not up, "imports that point up a layer:\n" + "\n".join(up)


def test_the_facades_are_the_only_exceptions_and_still_needed():
    for file, target in FACADES:
        assert any(".".join(["bridge"] + t) == target for _, t in imports(ROOT / file)), \
            f"{file} no longer imports {target}: drop it from FACADES"


@pytest.mark.parametrize("source, target, layer", [
    ("from ..frontends.onnx import Dims\n", ["frontends", "onnx"], 3),
    ("def f():\n    from ..trace import trace\n", ["trace"], 6),
    ("import bridge.api\n", ["api"], 6),
    ("from .. import api\n", ["api"], 6),
])
def test_the_walk_sees_function_level_and_relative_imports(source, target, layer):
    """The checker itself: an upward import hidden in a function or written relatively is found (the source is
    read as if it were bridge/ops/probe.py)."""
    found = imports(ROOT / "ops" / "probe.py", source)
    assert [t for _, t in found] == [target] and _layer(target) == layer > LAYER["ops"]


def test_the_layer_drawing_in_the_docs_is_this_table():
    """docs/concepts.md draws the layers: each row names the packages of its layer in LAYERS."""
    text = (ROOT.parent / "docs" / "concepts.md").read_text(encoding="utf-8")
    rows = {}
    for line in text.split("## How bridge is built", 1)[1].split("```")[1].splitlines():
        parts = line.split()
        if parts and parts[0].isdigit():
            rows[int(parts[0])] = line
    assert sorted(rows) == list(range(len(LAYERS)))
    for i, names in enumerate(LAYERS):
        for name in names - {"__init__", "__main__", "cli_support"}:
            assert name in rows[i], f"layer {i} row of docs/concepts.md does not name {name}"
