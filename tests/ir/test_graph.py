"""The IR core: building by hand, use-lists under mutation, invariants, the text form, structures."""
import collections
import dataclasses

import pytest
import torch

import bridge
from bridge.ir import Graph, TensorSpec
from bridge.ir import structure


def _small_graph():
    g = Graph()
    x = g.add_input("x", TensorSpec((2, "batch"), torch.float32))
    w = g.add_constant("fc.weight", torch.ones(3, 2), kind="param")
    r = g.add_node("relu", {"input": x}, name="r").output
    a = g.add_node("add", {"input": r, "other": x, "alpha": 1}, name="a").output
    g.set_outputs([a])
    return g, x, w, r, a


def test_build_print_and_check():
    g, x, w, r, a = _small_graph()
    g.check()
    assert str(g) == (
        "graph(%x: f32[2, batch]) {\n"
        "  %r : ? = relu(%x)\n"
        "  %a : ? = add(%r, %x)\n"
        "  return %a\n"
        "}"
    )
    assert x.users == [r.producer, a.producer]
    assert r.users == [a.producer]


def test_replace_all_uses_and_erase_keep_use_lists_right():
    g, x, w, r, a = _small_graph()
    relu = r.producer
    with pytest.raises(bridge.GraphError, match="still used"):
        g.erase_node(relu)
    assert g.replace_all_uses(r, x) == 1
    assert r.users == []
    assert a.producer.args["input"] is x
    assert set(x.users) == {relu, a.producer}
    g.erase_node(relu)
    assert x.users == [a.producer]
    g.check()
    assert [n.op for n in g.nodes] == ["add"]
    # outputs are uses too
    g.replace_all_uses(a, x)
    assert g.outputs == [x]
    g.erase_node(a.producer)
    assert g.remove_unused_constants() == 1
    g.check()


def test_check_finds_stale_use_lists_and_bad_order():
    g, x, w, r, a = _small_graph()
    r._uses.clear()  # corrupt on purpose
    with pytest.raises(bridge.GraphError, match="use-list of %r is stale"):
        g.check()
    g, x, w, r, a = _small_graph()
    g.nodes.reverse()
    with pytest.raises(bridge.GraphError, match="before it is defined"):
        g.check()


def test_insert_before_and_set_args():
    g, x, w, r, a = _small_graph()
    neg = g.add_node("neg", {"input": x}, name="n", before=r.producer).output
    g.set_args(r.producer, {"input": neg})
    g.check()
    assert [n.op for n in g.nodes] == ["neg", "relu", "add"]
    assert set(x.users) == {neg.producer, a.producer}


@dataclasses.dataclass
class Out:
    logits: object
    extra: object = None


class ModelOutputLike(collections.OrderedDict):
    pass


def test_structure_round_trip():
    P = collections.namedtuple("P", "a b")
    obj = {"a": (1, [2, 3]), "b": Out(4, P(5, "s")), "c": None}
    leaves, spec = structure.flatten(obj, lambda o: isinstance(o, int))
    assert leaves == [1, 2, 3, 4, 5]
    assert structure.unflatten(spec, leaves) == obj
    doubled = structure.unflatten(spec, [v * 2 for v in leaves])
    assert doubled["b"].extra == P(10, "s")


def test_graph_runs_by_hand():
    g, x, w, r, a = _small_graph()
    t = torch.tensor([[-1.0, 2.0], [3.0, -4.0]])
    g.inputs[0].spec = TensorSpec((2, 2), torch.float32)
    torch.testing.assert_close(g.run(t), torch.relu(t) + t, rtol=0, atol=0)


def test_text_form_leaves_out_default_arguments():
    """A conv's ``stride=(1, 1)`` is its default ``stride=1`` for each spatial dim: left out, like ``groups=1``;
    what differs from the default prints (and so does a tuple that is not the default in every dim)."""
    x = torch.randn(1, 3, 8, 8)
    text = str(bridge.trace(torch.nn.Conv2d(3, 4, 3, padding=1), (x,)))
    assert "conv(%input, %weight, %bias, padding=(1, 1))" in text
    text = str(bridge.trace(torch.nn.Conv2d(3, 4, 3, stride=(1, 2), dilation=2, bias=False), (x,)))
    assert "conv(%input, %weight, stride=(1, 2), dilation=(2, 2))" in text
    text = str(bridge.trace(torch.nn.MaxPool2d(2, padding=0, dilation=1), (x,)))
    assert "max_pool2d(%input, kernel_size=2, stride=2)" in text
