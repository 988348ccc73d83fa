"""Hostile ONNX files (issue 11): each ends in bridge's own typed error naming the tensor, node, input or key;
external data is read only from inside the model's folder; declared sizes never allocate memory.

The files are built with onnx.helper here. Where onnx's checker has something to say about a file, a comment
says what; bridge does not rely on it (its error is its own, and from_onnx does not run the checker). Values a
test compares with come from numpy or the bytes it wrote, never from bridge.
"""
from __future__ import annotations

import builtins
import json
import os
import resource
import time

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

import bridge
from bridge.backends.ort import load_onnx
from bridge.frontends import onnx as onnx_frontend
from bridge.frontends.common import NeedsRealValues
from bridge.frontends.onnx import FOLD_LIMIT, from_onnx

F = TensorProto.FLOAT
SECRET = np.arange(4, dtype=np.float32) + 1000.0  # the outside file's content: must never reach a weight


# ---- building files --------------------------------------------------------------------------------------
def _vi(name, shape=(4,), elem=F):
    return helper.make_tensor_value_info(name, elem, list(shape) if shape is not None else None)


def _init(name="w", values=(1.0, 2.0, 3.0, 4.0), dims=None):
    arr = np.asarray(values, dtype=np.float32)
    return helper.make_tensor(name, F, list(dims if dims is not None else arr.shape), arr.tobytes(), raw=True)


def _model(nodes, inputs, outputs, inits=(), opset=17, meta=None, **graph_kw) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "hostile", inputs, outputs, list(inits), **graph_kw)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    for k, v in (meta or {}).items():
        helper.set_model_props(m, {**{p.key: p.value for p in m.metadata_props}, k: v})
    return m


def _add(w=None, **kw) -> onnx.ModelProto:
    """y = x + w: one Add node, one initializer."""
    return _model([helper.make_node("Add", ["x", "w"], ["y"], name="add")], [_vi("x")], [_vi("y")],
                  [w if w is not None else _init()], **kw)


def _external(name="w", location="w.bin", offset=None, length=None, dims=(4,)) -> TensorProto:
    t = TensorProto(name=name, data_type=F, dims=list(dims), data_location=TensorProto.EXTERNAL)
    for key, value in (("location", location), ("offset", offset), ("length", length)):
        if value is not None:
            e = t.external_data.add()
            e.key, e.value = key, str(value)
    return t


@pytest.fixture
def folders(tmp_path):
    """(model folder, outside folder): a secret file outside, a good weight file inside."""
    model_dir, outside = tmp_path / "model", tmp_path / "outside"
    model_dir.mkdir()
    outside.mkdir()
    (outside / "secret.bin").write_bytes(SECRET.tobytes())
    (model_dir / "w.bin").write_bytes(np.ones(4, np.float32).tobytes())
    return model_dir, outside


@pytest.fixture
def opened(monkeypatch):
    """Every path opened (os.open, open) while the test runs, as real paths."""
    paths = []
    real_os_open, real_open = os.open, builtins.open

    def os_open(path, *a, **k):
        paths.append(os.path.realpath(path))
        return real_os_open(path, *a, **k)

    def py_open(file, *a, **k):
        if isinstance(file, (str, bytes, os.PathLike)):
            paths.append(os.path.realpath(file))
        return real_open(file, *a, **k)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(builtins, "open", py_open)
    return paths


def _refused(model, match, outside, opened, **kw):
    """from_onnx(model) raises OnnxError matching ``match``; nothing under ``outside`` was opened and no byte of
    the secret is in the message."""
    with pytest.raises(bridge.OnnxError, match=match) as e:
        from_onnx(model, **kw)
    assert not [p for p in opened if p.startswith(os.path.realpath(outside))]
    assert SECRET.tobytes() not in str(e.value).encode("latin-1", "replace")
    return e.value


# ---- external data -------------------------------------------------------------------------------------------
@pytest.mark.fault
@pytest.mark.parametrize("kind", ["bytes", "proto"])
def test_external_data_of_bytes_or_proto_refused_without_base_dir(kind, folders, monkeypatch, opened):
    # before: resolved against the working directory, so a model handed over as bytes read any file it named
    _, outside = folders
    monkeypatch.chdir(outside)
    m = _add(_external(location="secret.bin"))
    model = m.SerializeToString() if kind == "bytes" else m
    _refused(model, r"initializer 'w' keeps its data in an external file \('secret.bin'; 1 tensor\(s\) in all\)"
                    r".*base_dir=", outside, opened)


def test_external_data_of_bytes_and_proto_read_from_base_dir(folders):
    model_dir, _ = folders
    m = _add(_external(location="w.bin"))
    for model in (m.SerializeToString(), m):
        g = from_onnx(model, base_dir=model_dir)
        torch.testing.assert_close(g.run(torch.zeros(4)), torch.ones(4))
    assert m.graph.initializer[0].data_location == TensorProto.EXTERNAL  # the proto given is not changed


def _symlinks(model_dir, outside):
    os.symlink(outside / "secret.bin", model_dir / "link.bin")
    os.symlink(outside, model_dir / "linkdir")


# (location, what the message says); onnx.load refuses these too since 1.16 (absolute paths, '..', any symbolic
# link), but with onnx's ValidationError, and not at all for bytes: bridge checks them itself
OUTSIDE = {
    "absolute": (lambda d, o: str(o / "secret.bin"), "absolute external-data location"),
    "dotdot": (lambda d, o: "../outside/secret.bin", r"outside .* \(through '\.\.' or a symbolic link\)"),
    "symlink-file": (lambda d, o: "link.bin", r"outside .* \(through '\.\.' or a symbolic link\)"),
    "symlink-dir": (lambda d, o: "linkdir/secret.bin", r"outside .* \(through '\.\.' or a symbolic link\)"),
    "dev-zero": (lambda d, o: "/dev/zero", "absolute external-data location"),
    "the-folder": (lambda d, o: ".", "outside"),
}


@pytest.mark.fault
@pytest.mark.parametrize("how", ["path", "bytes", "proto"])
@pytest.mark.parametrize("case", list(OUTSIDE))
def test_external_data_outside_the_folder_refused(case, how, folders, opened):
    model_dir, outside = folders
    _symlinks(model_dir, outside)
    location, match = OUTSIDE[case]
    m = _add(_external(location=location(model_dir, outside)))
    path = model_dir / "m.onnx"
    onnx.save(m, path)
    model = {"path": path, "bytes": m.SerializeToString(), "proto": m}[how]
    err = _refused(model, match, outside, opened, **({} if how == "path" else {"base_dir": model_dir}))
    assert "initializer 'w'" in str(err)


@pytest.mark.fault
@pytest.mark.parametrize("case", ["dotdot", "symlink-file", "absolute"])
def test_load_onnx_and_sessions_refuse_outside_data(case, folders, opened):
    # the onnxruntime side (bridge.verify, compare_outputs) loads through load_onnx too
    model_dir, outside = folders
    _symlinks(model_dir, outside)
    path = model_dir / "m.onnx"
    onnx.save(_add(_external(location=OUTSIDE[case][0](model_dir, outside))), path)
    with pytest.raises(bridge.OnnxError, match="initializer 'w'"):
        load_onnx(path)
    assert not [p for p in opened if p.startswith(os.path.realpath(outside))]


def test_symlink_inside_the_folder_is_read(folders):
    model_dir, _ = folders
    os.symlink(model_dir / "w.bin", model_dir / "alias.bin")
    path = model_dir / "m.onnx"
    onnx.save(_add(_external(location="alias.bin")), path)
    torch.testing.assert_close(from_onnx(path).run(torch.zeros(4)), torch.ones(4))


# (external-data entries, regex of the message): each names the initializer
BAD_EXTERNAL = {
    "past-the-end": ({"offset": 8, "length": 16}, r"initializer 'w' asks for bytes 8..24 of 'w.bin', which holds 16"),
    "offset-past-the-end": ({"offset": 64}, r"initializer 'w' asks for bytes 64..64 of 'w.bin'"),
    "negative-offset": ({"offset": -4}, r"initializer 'w' has a negative external-data offset"),
    "negative-length": ({"length": -16}, r"initializer 'w' has a negative external-data length"),
    "offset-not-a-number": ({"offset": "eight"}, r"initializer 'w' has external-data offset 'eight', not an int"),
    "no-location": ({"location": ""}, r"initializer 'w' is marked as external data but names no location"),
    "missing-file": ({"location": "gone.bin"}, r"initializer 'w' keeps its data in 'gone.bin', which cannot be"),
    "a-directory": ({"location": "sub"}, r"initializer 'w' keeps its data in 'sub', which is not a regular file"),
    "a-fifo": ({"location": "pipe"}, r"initializer 'w' keeps its data in 'pipe', which is not a regular file"),
    "length-not-dims": ({"length": 8}, r"initializer 'w' holds 8 bytes, but its dims \[4\] of torch.float32 need 16"),
}


@pytest.mark.fault
@pytest.mark.parametrize("case", list(BAD_EXTERNAL))
def test_bad_external_entries(case, folders, opened):
    model_dir, outside = folders
    (model_dir / "sub").mkdir()
    os.mkfifo(model_dir / "pipe")  # opening it for reading would block forever without O_NONBLOCK
    entries, match = BAD_EXTERNAL[case]
    path = model_dir / "m.onnx"
    onnx.save(_add(_external(**{"location": "w.bin", **entries})), path)
    _refused(path, match, outside, opened)


@pytest.mark.fault
def test_overlapping_external_regions_refused(folders, opened):
    # two weights reading the same 16 bytes: legal offsets each, but N tensors on one region would let a small
    # file fill N times its size of memory
    model_dir, outside = folders
    nodes = [helper.make_node("Add", ["x", "w"], ["a"], name="add"), helper.make_node("Add", ["a", "v"], ["y"])]
    m = _model(nodes, [_vi("x")], [_vi("y")], [_external("w"), _external("v")])
    path = model_dir / "m.onnx"
    onnx.save(m, path)
    _refused(path, r"initializer 'v': the tensors stored in 'w.bin' ask for more bytes in all \(32\) than it "
                   r"holds \(16\)", outside, opened)


# ---- malformed files ----------------------------------------------------------------------------------------
def _raw(dims, nbytes, dtype=F, name="w"):
    """A tensor whose raw data is ``nbytes`` long whatever its dims (onnx.helper would refuse to make it)."""
    return TensorProto(name=name, data_type=dtype, dims=list(dims), raw_data=b"\0" * nbytes)


def _typed_init():
    t = TensorProto(name="w", data_type=F, dims=[4])
    t.float_data.extend([1.0, 2.0])
    return t


def _sparse():
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x")], [_vi("y")])
    values = helper.make_tensor("s", F, [1], [1.0])
    indices = helper.make_tensor("s_idx", TensorProto.INT64, [1], [0])
    m.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [4]))
    return m


def _sparse_constant():
    value = helper.make_sparse_tensor(helper.make_tensor("v", F, [1], [1.0]),
                                      helper.make_tensor("i", TensorProto.INT64, [1], [0]), [4])
    return _model([helper.make_node("Constant", [], ["y"], name="sparse_const", sparse_value=value)], [], [_vi("y")])


def _no_type_input():
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x")], [_vi("y")])
    m.graph.input[0].ClearField("type")
    return m


def _constant_node(tensor):
    return _model([helper.make_node("Constant", [], ["c"], name="const", value=tensor),
                   helper.make_node("Add", ["x", "c"], ["y"], name="add")], [_vi("x")], [_vi("y")])


def _nodes(*nodes, inputs=("x",), outputs=("y",), inits=()):
    return _model(list(nodes), [_vi(n) for n in inputs], [_vi(n) for n in outputs], list(inits))


def _relu(i, o, name=None):
    return helper.make_node("Relu", [i], [o], name=name or f"relu_{o}")


def _conv(**attrs):
    w = helper.make_tensor("w", F, [2, 1, 1, 1], [1.0, 2.0])
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", **attrs)
    return _model([node], [_vi("x", (1, 1, 4, 4))], [_vi("y", (1, 2, 4, 4))], [w])


def _conv_float_strides():
    m = _conv()
    m.graph.node[0].attribute.append(helper.make_attribute("strides", 1.0))  # a FLOAT, not INTS
    return m


def _dup_attr():
    m = _conv(strides=[1, 1])
    m.graph.node[0].attribute.append(helper.make_attribute("strides", [1, 1]))
    return m


def _opset_twice():
    m = _nodes(_relu("x", "y"))
    m.opset_import.append(helper.make_opsetid("ai.onnx", 13))
    return m


def _newer_ir():
    m = _nodes(_relu("x", "y"))
    m.ir_version = onnx.IR_VERSION + 5
    return m


NEWEST = onnx.defs.onnx_opset_version()

# (builder, exception type, regex: names the offending tensor/node/input/key). onnx.checker.check_model refuses
# all of these too except where a comment says otherwise, with its own ValidationError
MALFORMED = {
    # tensor data
    "raw-too-short": (lambda: _add(_raw([4], 8)), bridge.OnnxError,
                      r"initializer 'w' holds 8 bytes, but its dims \[4\] of torch.float32 need 16"),
    "raw-too-long": (lambda: _add(_raw([4], 20)), bridge.OnnxError, r"initializer 'w' holds 20 bytes.* need 16"),
    # the checker accepts a huge declared initializer with little data; numpy would fail to reshape it
    "raw-huge-dims": (lambda: _add(_raw([10**6, 10**6], 16)), bridge.OnnxError,
                      r"initializer 'w' holds 16 bytes, but its dims \[1000000, 1000000\]"),
    "typed-data-count": (lambda: _add(_typed_init()), bridge.OnnxError,
                         r"initializer 'w' holds 2 values in float_data, but its dims \[4\].* need 4"),
    "negative-init-dim": (lambda: _add(_raw([-4], 16)), bridge.OnnxError, r"initializer 'w' has negative dims \[-4\]"),
    "negative-input-dim": (lambda: _model([_relu("x", "y")], [_vi("x", (2, -3))], [_vi("y")]), bridge.OnnxError,
                           r"graph input 'x' declares dim 1 as -3"),
    "unknown-elem-type": (lambda: _add(_raw([4], 16, dtype=99)), bridge.OnnxError,
                          r"initializer 'w' has ONNX element type 99"),
    "string-tensor": (lambda: _add(helper.make_tensor("w", TensorProto.STRING, [1], [b"hi"])), bridge.OnnxError,
                      r"initializer 'w' is a string tensor"),
    "int4-tensor": (lambda: _add(_raw([4], 2, dtype=TensorProto.INT4)), bridge.OnnxError,
                    r"initializer 'w' has ONNX element type INT4"),
    "sparse-initializer": (_sparse, bridge.OnnxError, r"sparse initializer 's'"),
    "constant-value-short": (lambda: _constant_node(_raw([4], 4, name="cv")), bridge.OnnxError,
                             r"attribute 'value' of node 'const' holds 4 bytes"),
    "constant-sparse-value": (_sparse_constant, bridge.UnsupportedOpError, r"node 'sparse_const' \(Constant"),
    # graph inputs
    "input-without-type": (_no_type_input, bridge.OnnxError, r"graph input 'x' has no type"),
    "input-unknown-elem-type": (lambda: _model([_relu("x", "y")], [_vi("x", elem=99)], [_vi("y")]),
                                bridge.OnnxError, r"graph input 'x' has ONNX element type 99"),
    "input-string": (lambda: _model([_relu("x", "y")], [_vi("x", elem=TensorProto.STRING)], [_vi("y")]),
                     bridge.OnnxError, r"graph input 'x' has ONNX element type STRING"),
    "input-sequence": (lambda: _model([_relu("x", "y")], [helper.make_tensor_sequence_value_info("x", F, [4])],
                                      [_vi("y")]), bridge.OnnxError, r"graph input 'x' is a sequence_type"),
    "input-without-shape": (lambda: _model([_relu("x", "y")], [_vi("x", None)], [_vi("y")]), bridge.OnnxError,
                            r"graph input 'x' has no shape"),
    # names (SSA, dangling, order)
    "two-producers": (lambda: _nodes(_relu("x", "a", "r1"), _relu("x", "a", "r2"), _relu("a", "y")),
                      bridge.OnnxError, r"node 'r2' \(Relu\) outputs 'a', already defined as the output of node 'r1'"),
    "shadows-input": (lambda: _nodes(_relu("x", "x", "r1"), _relu("x", "y")), bridge.OnnxError,
                      r"node 'r1' \(Relu\) outputs 'x', already defined as graph input 'x'"),
    "shadows-initializer": (lambda: _nodes(_relu("x", "w", "r1"), helper.make_node("Add", ["x", "w"], ["y"]),
                                           inits=[_init()]), bridge.OnnxError,
                            r"node 'r1' \(Relu\) outputs 'w', already defined as initializer 'w'"),
    "two-initializers": (lambda: _nodes(helper.make_node("Add", ["x", "w"], ["y"]), inits=[_init(), _init()]),
                         bridge.OnnxError, r"two initializers are named 'w'"),
    # the checker accepts two graph inputs of one name
    "two-inputs": (lambda: _model([_relu("x", "y")], [_vi("x"), _vi("x")], [_vi("y")]), bridge.OnnxError,
                   r"two graph inputs are named 'x'"),
    "dangling-input": (lambda: _nodes(helper.make_node("Add", ["x", "ghost"], ["y"], name="add")), bridge.OnnxError,
                       r"input 1 \('ghost'\) of node 'add' \(Add\) is produced by no node"),
    "not-topological": (lambda: _nodes(_relu("a", "y", "late"), _relu("x", "a", "early")), bridge.OnnxError,
                        r"input 0 \('a'\) of node 'late' \(Relu\) is produced by a later node"),
    "dangling-output": (lambda: _nodes(_relu("x", "y"), outputs=("y", "nowhere")), bridge.OnnxError,
                        r"graph output 'nowhere' is produced by no node"),
    # attributes and arity against the op's schema
    "float-strides": (_conv_float_strides, bridge.OnnxError,
                      r"node 'conv' \(Conv, opset 17\): attribute 'strides' is FLOAT, but Conv takes INTS"),
    "int-for-string": (lambda: _conv(auto_pad=1), bridge.OnnxError, r"attribute 'auto_pad' is INT, but Conv takes"),
    "unknown-attribute": (lambda: _conv(stride=[1, 1]), bridge.OnnxError,
                          r"node 'conv' \(Conv, opset 17\) has an attribute 'stride', which Conv does not have"),
    "duplicate-attribute": (_dup_attr, bridge.OnnxError, r"node 'conv' .* has two attributes named 'strides'"),
    "missing-required-attribute": (
        lambda: _nodes(helper.make_node("Concat", ["x", "x"], ["y"], name="cat")), bridge.OnnxError,
        r"node 'cat' \(Concat, opset 17\) lacks its required attribute 'axis'"),
    "too-many-inputs": (lambda: _nodes(helper.make_node("Relu", ["x", "x"], ["y"], name="r")), bridge.OnnxError,
                        r"node 'r' \(Relu, opset 17\) has 2 inputs; Relu takes 1 to 1"),
    "too-many-outputs": (lambda: _nodes(helper.make_node("Relu", ["x"], ["y", "z"], name="r")), bridge.OnnxError,
                         r"node 'r' \(Relu, opset 17\) has 2 outputs; Relu gives 1 to 1"),
    "input-of-a-later-opset": (
        lambda: _nodes(helper.make_node("Pad", ["x", "p", "", "ax"], ["y"], name="pad"),
                       inits=[helper.make_tensor("p", TensorProto.INT64, [2], [1, 1]),
                              helper.make_tensor("ax", TensorProto.INT64, [1], [0])]),
        bridge.UnsupportedOpError, r"node 'pad' \(Pad, opset 17\).*: axes given as an input.* comes with opset 18"),
    # Squeeze took its axes as an attribute up to opset 12; at 13 onnxruntime refuses it ("Unrecognized attribute")
    "attribute-of-an-earlier-opset": (
        lambda: _model([helper.make_node("Squeeze", ["x"], ["y"], name="sq", axes=[0])], [_vi("x", (1, 1, 4))],
                       [_vi("y", (1, 4))], opset=13),
        bridge.UnsupportedOpError, (r"node 'sq' \(Squeeze, opset 13\).*: axes given as an attribute, which Squeeze "
                                    r"has at opsets 1 to 12, not at opset 13 \(there it is input 1\)")),
    "unknown-op": (lambda: _nodes(helper.make_node("NoSuchOp", ["x"], ["y"], name="odd")),
                   bridge.UnsupportedOpError, r"NoSuchOp: 1 node\(s\), e.g. 'odd'"),
    # versions
    "opset-newer-than-onnx": (lambda: _model([_relu("x", "y")], [_vi("x")], [_vi("y")], opset=NEWEST + 3),
                              bridge.OnnxError, (rf"opset {NEWEST + 3} is newer than the installed onnx .* knows "
                                                 rf"\({NEWEST}\).*convert_version\(model, {NEWEST}\)")),
    "ir-newer-than-onnx": (_newer_ir, bridge.OnnxError,
                           rf"IR version {onnx.IR_VERSION + 5} is newer than the installed onnx"),
    "opset-imported-twice": (_opset_twice, bridge.OnnxError, r"imports the opset of domain 'ai.onnx' twice"),
}


@pytest.mark.fault
@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_files(case):
    build, exc, match = MALFORMED[case]
    model = build()
    with pytest.raises(exc, match=match) as e:
        from_onnx(model.SerializeToString())
    assert type(e.value) is exc


# ---- bridge.* metadata ---------------------------------------------------------------------------------------
STATE = "bridge.state"
STRUCT = "bridge.output_structure"


def _deep(n):
    j = {"output": "y"}
    for _ in range(n):
        j = {"tuple": [j]}
    return json.dumps(j)


# (key, value, regex after "metadata '<key>' "): corrupt metadata is an OnnxError naming the key (chosen over a
# warning: without it the names and structure a user exported would silently not come back)
BAD_META = {
    "state-not-json": (STATE, "{'w': oops", r"is not valid JSON"),
    "state-a-list": (STATE, "[1, 2]", r"is a JSON list, not an object"),
    "state-bad-kind": (STATE, json.dumps({"w": ["weights", ["fc.weight"]]}), r"gives 'w' the entry"),
    "state-no-names": (STATE, json.dumps({"w": ["param", []]}), r"gives 'w' the entry"),
    "state-name-not-str": (STATE, json.dumps({"w": ["param", [3]]}), r"gives 'w' the entry"),
    "state-empty-part": (STATE, json.dumps({"w": ["param", ["fc..weight"]]}),
                         r"gives 'w' the state_dict name 'fc\.\.weight', which has an empty"),
    "state-name-twice": (STATE, json.dumps({"w": ["param", ["fc.weight"]], "v": ["param", ["fc.weight"]]}),
                         r"gives the state_dict name 'fc.weight' to both"),
    "state-name-in-name": (STATE, json.dumps({"w": ["param", ["fc"]], "v": ["param", ["fc.weight"]]}),
                           r"names both 'fc' and 'fc.weight'"),
    "struct-not-json": (STRUCT, '{"output": ', r"is not valid JSON"),
    "struct-too-deep-for-json": (STRUCT, "[" * 100000 + "]" * 100000, r"is not valid JSON \(RecursionError"),
    "struct-unknown-kind": (STRUCT, json.dumps({"set": ["y"]}), r"holds \{\"set\""),
    "struct-two-kinds": (STRUCT, json.dumps({"output": "y", "const": 1}), r"holds .* which is none of"),
    "struct-a-string": (STRUCT, json.dumps("y"), r"holds \"y\", which is none of"),
    "struct-tuple-not-list": (STRUCT, json.dumps({"tuple": "y"}), r"gives a tuple as a JSON str"),
    "struct-dict-not-object": (STRUCT, json.dumps({"dict": [1]}), r"gives a dict as a JSON list"),
    "struct-unknown-output": (STRUCT, json.dumps({"tuple": [{"output": "y"}, {"output": "zz"}]}),
                              r"names the output 'zz', which the graph does not have"),
    "struct-leaves-out": (STRUCT, json.dumps({"const": 3}), r"leaves out the graph outputs \['y'\]"),
    "struct-too-deep": (STRUCT, _deep(200), r"nests deeper than 64 levels"),
}


@pytest.mark.fault
@pytest.mark.parametrize("case", list(BAD_META))
def test_corrupt_bridge_metadata(case):
    key, value, match = BAD_META[case]
    nodes = [helper.make_node("Add", ["x", "w"], ["a"]), helper.make_node("Add", ["a", "v"], ["y"])]
    m = _model(nodes, [_vi("x")], [_vi("y")], [_init("w"), _init("v")], meta={key: value})
    with pytest.raises(bridge.OnnxError, match=f"metadata '{key}' {match}") as e:
        from_onnx(m)
    assert "delete" in str(e.value) and type(e.value) is bridge.OnnxError


def test_good_bridge_metadata_still_read():
    nodes = [helper.make_node("Add", ["x", "w"], ["y"])]
    m = _model(nodes, [_vi("x")], [_vi("y")], [_init("w")],
               meta={STATE: json.dumps({"w": ["buffer", ["fc.weight"]]}),
                     STRUCT: json.dumps({"dict": {"out": {"output": "y"}, "n": {"const": 3}}})})
    g = from_onnx(m)
    out = g.run(torch.zeros(4))
    assert out["n"] == 3
    torch.testing.assert_close(out["out"], torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert list(g.to_module().state_dict()) == ["fc.weight"]


# ---- declared sizes never allocate ----------------------------------------------------------------------------
def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_huge_declared_input_imports_without_memory():
    # x: f32[1000000, 1000000] is 4 TB: import builds fake tensors only; the graph is for running on real data
    x = _vi("x", (10**6, 10**6))
    m = _model([_relu("x", "a"), helper.make_node("ReduceSum", ["a"], ["y"], keepdims=0)], [x],
               [_vi("y", ())])
    before, t0 = _peak_mb(), time.perf_counter()
    g = from_onnx(m)
    assert time.perf_counter() - t0 < 10
    assert _peak_mb() - before < 500
    assert g.inputs[0].spec.shape == (10**6, 10**6)
    with pytest.raises(bridge.InputError, match="input 'x'"):  # only real inputs would allocate: checked first
        g.run(torch.ones(3, 2))


def test_huge_static_dims_beside_a_symbolic_one():
    x = _vi("x", ("n", 10**6, 10**6))
    m = _model([_relu("x", "a"), helper.make_node("ReduceSum", ["a"], ["y"], keepdims=0)], [x], [_vi("y", ())])
    before = _peak_mb()
    g = from_onnx(m)
    assert _peak_mb() - before < 500
    assert str(g.inputs[0].spec.shape[0]) == "n" and g.inputs[0].spec.shape[1:] == (10**6, 10**6)


def test_huge_constant_of_shape_stays_a_node():
    # ConstantOfShape of a constant shape [10**6, 10**6] would fold at import time: 4 TB. It stays a node
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [10**6, 10**6])
    m = _model([helper.make_node("ConstantOfShape", ["shape"], ["c"], name="big"),
                helper.make_node("Add", ["x", "c"], ["y"])], [_vi("x", (1,))], [_vi("y", (10**6, 10**6))], [shape])
    before = _peak_mb()
    g = from_onnx(m)
    assert _peak_mb() - before < 500
    assert [n.op for n in g.nodes] == ["full", "add"]
    assert FOLD_LIMIT < 4 * 10**12


def test_folds_share_one_budget(monkeypatch):
    # many constants each under the limit must not add up to any amount of memory: past the budget they stay nodes
    monkeypatch.setattr(onnx_frontend, "FOLD_LIMIT", 3 * 8192)
    shape = helper.make_tensor("shape", TensorProto.INT64, [1], [2048])  # 8 KiB of float32 each
    nodes = [helper.make_node("ConstantOfShape", ["shape"], [f"c{i}"], name=f"big{i}") for i in range(5)]
    nodes += [helper.make_node("Sum", ["x"] + [f"c{i}" for i in range(5)], ["y"], name="sum")]
    g = from_onnx(_model(nodes, [_vi("x", (2048,))], [_vi("y", (2048,))], [shape]))
    assert [n.op for n in g.nodes].count("full") == 2  # three folded (24 KiB), two computed at run time
    torch.testing.assert_close(g.run(torch.ones(2048)), torch.ones(2048))


@pytest.mark.fault
def test_declared_input_larger_than_any_tensor():
    m = _model([_relu("x", "y")], [_vi("x", (10**12, 10**12))], [_vi("y", (10**12, 10**12))])
    t0 = time.perf_counter()
    with pytest.raises(bridge.OnnxError, match=r"graph input 'x' declares shape \[1000000000000, 1000000000000\]"):
        from_onnx(m)
    assert time.perf_counter() - t0 < 10


@pytest.fixture
def real_values(monkeypatch):
    """Make fake propagation give up at once, as an op without a fake kernel or a data-dependent guard does, so
    the import takes its real-values path (zeros of the declared input shapes)."""
    run = onnx_frontend._Importer.run

    def fake_gives_up(self):
        if self.b.fake:
            raise NeedsRealValues("injected: shapes depend on data")
        return run(self)

    monkeypatch.setattr(onnx_frontend._Importer, "run", fake_gives_up)


@pytest.mark.fault
def test_real_values_with_a_huge_declared_input(real_values):
    # real values propagate from zeros of the declared shapes: 40 GB here, refused before allocating
    m = _model([_relu("x", "y")], [_vi("x", (10**5, 10**5))], [_vi("y", (10**5, 10**5))])
    before = _peak_mb()
    with pytest.raises(bridge.OnnxError, match=r"zeros of the declared input shapes \('x' \[100000, 100000\]\)"):
        from_onnx(m)
    assert _peak_mb() - before < 500


@pytest.mark.fault
def test_real_values_with_a_huge_constant(real_values):
    # with real values a huge constant cannot stay a node (it would run now): refused before allocating it
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [10**6, 10**6])
    m = _model([helper.make_node("ConstantOfShape", ["shape"], ["c"], name="big"),
                helper.make_node("Add", ["x", "c"], ["y"])], [_vi("x", (1,))], [_vi("y", (10**6, 10**6))], [shape])
    with pytest.raises(bridge.OnnxError, match=r"node 'big' computes a full of 4000000000000 bytes from values known "
                                               r"at import time; with the 0 bytes computed before"):
        from_onnx(m)


def test_real_values_path_still_imports(real_values):
    g = from_onnx(_add())
    assert g.meta["fake"] is False
    torch.testing.assert_close(g.run(torch.ones(4)), torch.tensor([2.0, 3.0, 4.0, 5.0]))
