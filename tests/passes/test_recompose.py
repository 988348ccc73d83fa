"""``recompose``: ops ONNX writes out as several nodes, read back by ``bridge.from_onnx`` as the one torch op a model
called. Each rule on a model that calls the op: exported by bridge (static and with a dynamic batch), imported, the
op found again and the written-out nodes gone, and the numbers of the eager model on fresh inputs (other values,
another batch). Beside each, forms that look alike but compute something else stay as they are."""
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import bridge
from bridge.ir.graph import Graph
from bridge.ir.spec import TensorSpec
from bridge.passes import run_passes
from tests.helpers import assert_same_outputs


class Stack(nn.Module):
    def forward(self, x):
        a, b, c = x.split([2, 3, 2], dim=-1)
        return torch.stack([a, c, a * 2], dim=1), torch.stack([x, -x], dim=-1)


class Unbind(nn.Module):
    def forward(self, x):
        p = x.unbind(1)
        return p[0] + p[-1], torch.stack(x.unbind(-1)[1:3], dim=0)


class Roll(nn.Module):
    def forward(self, x):
        return torch.roll(x, 2, dims=-1), torch.roll(x, shifts=(1, -1), dims=(1, 2))


class MaskedSelect(nn.Module):
    def forward(self, x):
        return x.masked_select(x > 0.3), x[x < -0.2].sum()


class SliceWrites(nn.Module):
    def forward(self, x):
        h = x * 1.0
        h[:, 0] = 0.5
        h[:, 1:5:2] += 1.0
        h[1, 2:4, -1] = torch.arange(2.0)
        return h


class Baddbmm(nn.Module):
    def forward(self, a, x, y):
        return torch.baddbmm(a, x, y, beta=0.5, alpha=2.0), torch.addmm(a[0], x[0], y[0], beta=-1.0, alpha=0.25)


class Nearest(nn.Module):
    def forward(self, x):
        return F.interpolate(x, scale_factor=2, mode="nearest"), F.interpolate(x, size=(5, 7), mode="nearest")


class PixelUnshuffle(nn.Module):
    def forward(self, x):
        return F.pixel_unshuffle(x, 2) * 1.0


class Bmm(nn.Module):
    def forward(self, x, y):
        return torch.bmm(x, y) + 1


class GroupNorms(nn.Module):
    def __init__(self):
        super().__init__()
        self.gn = nn.GroupNorm(2, 8)
        with torch.no_grad():
            self.gn.weight.uniform_(0.5, 1.5)
            self.gn.bias.uniform_(-0.5, 0.5)

    def forward(self, x):
        return self.gn(x) + F.group_norm(x, 4), F.layer_norm(x, (6,)), F.instance_norm(x)


CASES = [  # model, input shapes, the op read back, the ops of its written-out form that must be gone
    (Stack(), [(2, 3, 7)], "stack", {"unsqueeze"}),
    (Unbind(), [(2, 4, 5)], "unbind", {"split", "squeeze"}),
    (Roll(), [(2, 3, 6)], "roll", {"cat", "slice"}),
    (MaskedSelect(), [(2, 3, 4)], "masked_select", {"nonzero", "index_select"}),
    (SliceWrites(), [(2, 6, 5)], "setitem", {"reshape"}),
    (Baddbmm(), [(2, 3, 5), (2, 3, 4), (2, 4, 5)], "baddbmm", {"mul", "matmul"}),
    (Nearest(), [(2, 3, 4, 5)], "interpolate", {"index_select"}),
    (PixelUnshuffle(), [(2, 3, 4, 6)], "pixel_unshuffle", {"permute", "reshape"}),
    (Bmm(), [(2, 3, 4), (2, 4, 5)], "bmm", {"matmul"}),
    (GroupNorms(), [(2, 8, 5, 6)], "group_norm", {"reshape", "mul"}),
]


def _inputs(shapes, batch=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(((batch,) + s[1:]) if batch else s, generator=g) for s in shapes)


@pytest.mark.parametrize("model,shapes,op,gone", CASES, ids=[c[2] for c in CASES])
def test_from_onnx_reads_the_op_back(tmp_path, model, shapes, op, gone):
    path = tmp_path / "m.onnx"
    bridge.to_onnx(model, path, args=_inputs(shapes), opset=17)
    g = bridge.from_onnx(path)
    ops = [n.op for n in g.nodes]
    assert op in ops and not gone & set(ops), ops
    module = g.to_module()
    for seed in (1, 2):  # values the export never saw
        args = _inputs(shapes, seed=seed)
        assert_same_outputs(module(*args), model(*args))
        assert_same_outputs(g.run(*args), model(*args))
    again = tmp_path / "again.onnx"  # and the graph exports again, as onnxruntime runs it
    bridge.to_onnx(g, again)
    sess = ort.InferenceSession(str(again), providers=["CPUExecutionProvider"])
    args = _inputs(shapes, seed=3)
    got = sess.run(None, {i.name: a.numpy() for i, a in zip(sess.get_inputs(), args)})
    ref = model(*args)
    assert_same_outputs([torch.from_numpy(t) for t in got], list(ref) if isinstance(ref, tuple) else [ref])


# setitem, masked_select: their positions are sized by the batch, computed when the module runs; pixel_unshuffle:
# with a symbolic batch the export writes SpaceToDepth and a reorder, which compose_moves (static sizes) leaves
DYNAMIC = [c for c in CASES if c[2] not in ("setitem", "masked_select", "pixel_unshuffle")]


@pytest.mark.parametrize("model,shapes,op,gone", DYNAMIC, ids=[c[2] for c in DYNAMIC])
def test_the_op_read_back_runs_at_another_batch(tmp_path, model, shapes, op, gone):
    """A file with a dynamic batch: the rules read sizes that stay symbolic, and the module runs at batch 5."""
    path = tmp_path / "m.onnx"
    args = _inputs(shapes)
    bridge.to_onnx(model, path, args=args, opset=17, dynamic=tuple({0: "batch"} for _ in args))
    g = bridge.from_onnx(path)
    assert op in [n.op for n in g.nodes]
    args = _inputs(shapes, batch=5, seed=4)
    assert_same_outputs(g.to_module()(*args), model(*args))


def test_norms_without_affine_drop_the_ones_and_zeros_the_file_needs():
    """ONNX's norms take a scale and a bias: a norm without affine is written with ones and zeros, read back
    without them; the model's own weights stay."""
    g = bridge.from_onnx(bridge.to_onnx(GroupNorms(), None, args=_inputs([(2, 8, 5, 6)]), opset=17))
    norms = [n for n in g.nodes if n.op in ("group_norm", "layer_norm", "instance_norm")]
    assert sorted((n.op, n.args["weight"] is None) for n in norms) == [
        ("group_norm", False), ("group_norm", True), ("instance_norm", True), ("layer_norm", True)]
    assert all(n.args["weight"].kind == "param" for n in norms if n.args["weight"] is not None)


def test_weights_at_their_initial_ones_and_zeros_stay_weights(tmp_path):
    """nn.GroupNorm/LayerNorm/InstanceNorm start with weights of ones and biases of zeros: the rules that drop a
    norm's unit affine or read constants must not take them for the file's constants, or loading trained weights
    into the imported module would change nothing."""
    class Norms(nn.Module):
        def __init__(self):
            super().__init__()
            self.gn, self.ln, self.inorm = nn.GroupNorm(2, 8), nn.LayerNorm(6), nn.InstanceNorm2d(8, affine=True)

        def forward(self, x):
            return self.gn(x) + self.ln(x) + self.inorm(x)

    model = Norms()
    bridge.to_onnx(model, tmp_path / "m.onnx", args=_inputs([(2, 8, 5, 6)]), opset=17)
    module = bridge.from_onnx(tmp_path / "m.onnx").to_module()
    state = {k: torch.rand_like(v) + 0.5 for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    module.load_state_dict(state)
    x = _inputs([(2, 8, 5, 6)], seed=5)
    assert_same_outputs(module(*x), model(*x))


# ---- what only looks like a written-out op stays as it is ---------------------------------------------------------
def _graph(shape, build):
    g = Graph()
    x = g.add_input("x", TensorSpec(shape, torch.float32))
    outs = build(g, x)
    g.set_outputs(outs)
    return g.check()


def _node(g, op, args, shape, dtype=torch.float32, n=1):
    node = g.add_node(op, args, outputs=[(op, TensorSpec(shape, dtype))] * n if n > 1 else [(op, TensorSpec(shape,
                                                                                                           dtype))])
    return node.outputs if n > 1 else node.output


def _same_after(g, *inputs):
    ref = g.run(*inputs)
    g2 = run_passes(g, ["recompose"])
    assert_same_outputs(g2.run(*inputs), ref)
    return [n.op for n in g2.nodes]


def test_cat_of_unsqueezes_along_another_dim_is_no_stack():
    def build(g, x):
        u = _node(g, "unsqueeze", {"input": x, "dim": 0}, (1, 2, 3))
        return [_node(g, "cat", {"tensors": [u, u], "dim": 1}, (1, 4, 3))]
    assert "stack" not in _same_after(_graph((2, 3), build), torch.randn(2, 3))


@pytest.mark.parametrize("bounds", [((4, 6), (0, 3)), ((3, 6), (1, 3)), ((0, 6), (0, 0))])
def test_cat_of_slices_that_are_no_rotation_is_no_roll(bounds):
    (a0, a1), (b0, b1) = bounds

    def build(g, x):
        a = _node(g, "slice", {"input": x, "dim": 1, "start": a0, "end": a1, "step": 1}, (2, a1 - a0))
        b = _node(g, "slice", {"input": x, "dim": 1, "start": b0, "end": b1, "step": 1}, (2, b1 - b0))
        return [_node(g, "cat", {"tensors": [a, b], "dim": 1}, (2, a1 - a0 + b1 - b0))]
    assert "roll" not in _same_after(_graph((2, 6), build), torch.randn(2, 6))


def test_a_split_piece_read_unsqueezed_keeps_the_split():
    def build(g, x):
        pieces = _node(g, "split", {"input": x, "split_size_or_sections": 1, "dim": 1}, (2, 1), n=3)
        s = _node(g, "squeeze", {"input": pieces[0], "dim": [1]}, (2,))
        return [s, pieces[1]]
    assert "unbind" not in _same_after(_graph((2, 3), build), torch.randn(2, 3))


@pytest.mark.parametrize("positions", [[0, 5, 2], [1, 2, 7, 8, 3], [0, 0, 1], [6, 7, 1, 2]])
def test_scattered_positions_that_are_no_box_stay_a_scatter(positions):
    """[0, 5, 2]: out of row-major order; [1, 2, 7, 8, 3]: not a box; [0, 0, 1]: a repeat; [6, 7, 1, 2]: a box read
    in another order than the slices would."""
    def build(g, x):
        flat = _node(g, "reshape", {"input": x, "shape": [-1]}, (20,))
        pos = g.add_constant("pos", torch.tensor(positions))
        vals = g.add_constant("vals", torch.arange(float(len(positions))) + 10)
        s = _node(g, "setitem", {"input": flat, "index": (pos,), "value": vals}, (20,))
        return [_node(g, "reshape", {"input": s, "shape": [4, 5]}, (4, 5))]
    ops = _same_after(_graph((4, 5), build), torch.randn(4, 5))
    assert ops.count("reshape") == 2


def test_a_box_of_positions_becomes_slices():
    def build(g, x):
        flat = _node(g, "reshape", {"input": x, "shape": [-1]}, (20,))
        pos = g.add_constant("pos", torch.tensor([[6, 8], [11, 13]]))  # rows 1-2, columns 1 and 3
        vals = g.add_constant("vals", torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        s = _node(g, "setitem", {"input": flat, "index": (pos,), "value": vals}, (20,))
        return [_node(g, "reshape", {"input": s, "shape": [4, 5]}, (4, 5))]
    g = _graph((4, 5), build)
    assert _same_after(g, torch.randn(4, 5)) == ["setitem"]
    node = run_passes(g, ["recompose"]).nodes[0]
    assert node.args["index"] == (slice(1, 3, 1), slice(1, 4, 2))


def test_an_add_of_a_product_without_scale_factors_stays():
    """``a + x @ y`` is left alone (addmm would round differently from the model's own add)."""
    def build(g, x):
        m = _node(g, "matmul", {"input": x, "other": x}, (3, 3))
        return [_node(g, "add", {"input": x, "other": m, "alpha": 1}, (3, 3))]
    assert _same_after(_graph((3, 3), build), torch.randn(3, 3)) == ["matmul", "add"]


def test_a_broadcast_batch_stays_a_matmul():
    g = Graph()
    x = g.add_input("x", TensorSpec((1, 3, 4), torch.float32))
    y = g.add_input("y", TensorSpec((2, 4, 5), torch.float32))
    g.set_outputs([_node(g, "matmul", {"input": x, "other": y}, (2, 3, 5))])
    assert _same_after(g.check(), torch.randn(1, 3, 4), torch.randn(2, 4, 5)) == ["matmul"]


@pytest.mark.parametrize("index", [[0, 1, 1, 2, 3], [0, 0, 1, 1, 2, 2, 3, 3, 3]])  # torch: [0, 0, 1, 2, 3], ...
def test_gathers_at_other_than_torchs_nearest_positions_stay(index):
    def build(g, x):
        a = g.add_constant("ia", torch.tensor(index))
        b = g.add_constant("ib", torch.tensor([0, 0, 1, 1, 2, 2]))
        h = _node(g, "index_select", {"input": x, "dim": 2, "index": a}, (1, 2, len(index), 3))
        return [_node(g, "index_select", {"input": h, "dim": 3, "index": b}, (1, 2, len(index), 6))]
    assert "interpolate" not in _same_after(_graph((1, 2, 4, 3), build), torch.randn(1, 2, 4, 3))


def test_values_of_weights_and_buffers_are_not_built_on():
    """Positions in a buffer and scale factors that are parameters may change when a user loads a state: the
    rules that read constants take those of the computation only."""
    def build(g, x):
        a = g.add_constant("ia", torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), kind="buffer")
        b = g.add_constant("ib", torch.tensor([0, 0, 1, 1, 2, 2]), kind="buffer")
        h = _node(g, "index_select", {"input": x, "dim": 2, "index": a}, (1, 2, 8, 3))
        return [_node(g, "index_select", {"input": h, "dim": 3, "index": b}, (1, 2, 8, 6))]
    assert "interpolate" not in _same_after(_graph((1, 2, 4, 3), build), torch.randn(1, 2, 4, 3))

    def build2(g, x):
        alpha = g.add_constant("alpha", torch.tensor(2.0), kind="param")
        m = _node(g, "matmul", {"input": x, "other": x}, (2, 3, 3))
        s1 = _node(g, "mul", {"input": m, "other": alpha}, (2, 3, 3))
        s2 = _node(g, "mul", {"input": x, "other": 0.5}, (2, 3, 3))
        return [_node(g, "add", {"input": s2, "other": s1, "alpha": 1}, (2, 3, 3))]
    assert "baddbmm" not in _same_after(_graph((2, 3, 3), build2), torch.randn(2, 3, 3))
