"""The record frontend (bridge/frontends/record.py): one real forward, its torch calls recorded. Checked against eager
PyTorch on fresh inputs (and onnxruntime through bridge.verify); what it must refuse falls back or fails clearly."""
import os

import pytest
import torch
import torch.nn as nn

import bridge
from bridge.errors import TraceError
from bridge.frontends import record
from bridge.frontends.signature import InputBinding
from tests import corpus
from tests.helpers import assert_same_outputs

def _eager(model, args, kwargs=None):
    with torch.no_grad():
        return model(*args, **(kwargs or {}))


# ---- real models --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["bert", "gpt2"] + [pytest.param(n, marks=pytest.mark.slow)
                                                      for n in ("llama", "t5", "vit", "whisper")])
def test_hf_models_take_record_and_match_eager_and_onnxruntime(name, tmp_path):
    m, model, args, kwargs = corpus.hf_model(name)
    g = bridge.trace(model, args, kwargs)
    assert g.meta["frontend"] == "record", g.meta.get("fallback_reasons")
    assert "fx" in g.meta["fallback_reasons"]
    row = corpus.check(m, str(tmp_path))  # trace, run, module, ONNX, onnxruntime, import on a fresh input
    assert row["ok"], {p: row[p] for p in corpus.PATHS}


def _vision_parity(model, x, fresh, tmp_path):
    g = bridge.trace(model, (x,), frontend="record")
    assert g.meta["frontend"] == "record"
    assert_same_outputs(g.run(fresh), _eager(model, (fresh,)))
    path = os.path.join(str(tmp_path), "m.onnx")
    bridge.to_onnx(g, path)
    rep = bridge.verify(model, path, (fresh,), localize=False)
    assert rep.ok, str(rep)
    return g


def test_torchvision_resnet_by_record(tmp_path):
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = tv.models.resnet18(weights=None, num_classes=10).eval()
    g = _vision_parity(model, torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64), tmp_path)
    # registered layers stay whole, named and scoped as fx keeps them
    conv = next(n for n in g.nodes if n.op == "conv")
    assert conv.scope.path == "conv1" and conv.scope.type == "Conv2d"


def test_timm_model_by_record(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = corpus.informative(timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32,
                                                 patch_size=8, num_classes=5).eval())
    _vision_parity(model, torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32), tmp_path)


def test_fx_traceable_models_keep_the_fx_graph():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    g = bridge.trace(model, torch.randn(3, 4))
    assert g.meta["frontend"] == "fx" and "fallback_reasons" not in g.meta


# ---- python structure: inputs, outputs, constants, loops --------------------------------------------------
class _Structured(nn.Module):
    """kwargs, a None input, a dict output, a plain tensor attribute, a loop over a tensor and shape-dependent
    python: all of it runs once, for real."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.offset = torch.arange(4.0)  # a tensor attribute, neither parameter nor buffer

    def forward(self, x, mask=None, scale=1.0):
        if mask is not None:
            x = x.masked_fill(mask, 0.0)
        rows = [r * (i + 1) for i, r in enumerate(x)]  # iterating over a tensor: its rows
        h = self.lin(torch.stack(rows)) + self.offset
        if h.shape[-1] == 4:  # a size: fine to bake with static shapes
            h = h * scale
        return {"h": h, "pair": (h.sum(-1), torch.ones(h.shape[0]))}


def test_structured_inputs_outputs_and_constants():
    torch.manual_seed(0)
    model = _Structured().eval()
    x, mask, scale = torch.randn(3, 4), torch.rand(3, 4) > 0.5, torch.tensor(2.0)
    g = bridge.trace(model, (x,), {"mask": mask, "scale": scale}, frontend="record")
    assert "offset" in {n for c in g.constants for n in c.names}
    x2, mask2, scale2 = torch.randn(3, 4), torch.rand(3, 4) > 0.5, torch.tensor(-1.5)
    assert_same_outputs(g.run(x2, mask=mask2, scale=scale2), _eager(model, (x2,), {"mask": mask2, "scale": scale2}))
    g_none = bridge.trace(model, (x,), {"mask": None, "scale": scale}, frontend="record")
    assert_same_outputs(g_none.run(x2, scale=scale2), _eager(model, (x2,), {"mask": None, "scale": scale2}))


def test_operators_and_inplace_ops():
    class M(nn.Module):
        def forward(self, a, b):
            c = a & b             # operator.and_: not in place
            d = (2 - a.float()) / (1 + b.float())  # reflected operators
            e = d.clone()
            e[:, 0] = 7.0         # item assignment
            e.mul_(0.5).add_(1)   # chained in-place ops
            d += e                # augmented assignment, in place
            return a.float() + 0, c, d, e.T

    a, b = torch.rand(3, 4) > 0.5, torch.rand(3, 4) > 0.5
    g = bridge.trace(M(), (a, b), frontend="record")
    a2, b2 = torch.rand(3, 4) > 0.5, torch.rand(3, 4) > 0.5
    assert_same_outputs(g.run(a2, b2), M()(a2, b2))


def test_registered_layers_inside_stay_whole_and_may_read_values():
    """nn.MultiheadAttention checks its masks' values inside; kept whole, that is its own business."""
    torch.manual_seed(0)

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x, pad):
            if x.shape[1] > 1:
                out, _ = self.attn(x, x, x, key_padding_mask=pad)
                return out
            return x

    model = M().eval()
    pad = torch.zeros(2, 5, dtype=torch.bool)
    pad[1, 3:] = True
    g = bridge.trace(model, (torch.randn(2, 5, 8), pad), frontend="record")
    assert any(n.scope.path == "attn" for n in g.nodes)
    pad2 = torch.zeros(2, 5, dtype=torch.bool)
    pad2[0, 4:] = True
    x2 = torch.randn(2, 5, 8)
    assert_same_outputs(g.run(x2, pad2), _eager(model, (x2, pad2)))


# ---- what record refuses ------------------------------------------------------------------------------------
class _Branchy(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # a branch on an input's value
            return x * 2
        return x - 1


def _refusal(model, *args) -> str:
    with pytest.raises(record.Refused) as e:
        record.trace_record(model, InputBinding(model, args, {}))
    return str(e.value)


def test_branch_on_input_value_is_refused_and_never_baked():
    x = torch.ones(3)
    msg = _refusal(_Branchy(), x)
    assert "__bool__" in msg and "test_record.py" in msg
    try:
        g = bridge.trace(_Branchy(), (x,))
    except TraceError as e:
        assert "record" in e.causes and "export" in e.causes
    else:  # whatever a fallback traced must follow the other branch too
        other = -torch.ones(3)
        assert_same_outputs(g.run(other), _Branchy()(other))


@pytest.mark.parametrize("read", ["item", "tolist", "int", "index", "equal"])
def test_value_reads_of_inputs_are_refused(read):
    class M(nn.Module):
        def forward(self, x):
            n = x[0, 0]
            k = {"item": lambda: n.item(), "tolist": lambda: x.tolist()[0][0], "int": lambda: int(n),
                 "index": lambda: [1, 2, 3][n], "equal": lambda: torch.equal(x, x)}[read]()
            return x * k

    assert "reads the value" in _refusal(M(), torch.ones(2, 2, dtype=torch.long))


def test_reads_of_weights_only_are_constants():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))

        def forward(self, x):
            if self.w.sum().item() > 0:  # depends on weights alone: a constant of the model
                return x * self.w
            return x

    model = M()
    g = bridge.trace(model, (torch.randn(3),), frontend="record")
    x = torch.randn(3)
    assert_same_outputs(g.run(x), model(x))


def test_data_dependent_size_of_an_input_is_refused():
    class M(nn.Module):
        def forward(self, x):
            return x[x > 0].sum() + x.new_zeros(x[x > 0].shape[0]).sum()

    x = torch.randn(6)
    assert "depends on the values" in _refusal(M(), x)
    g = bridge.trace(M(), (x,))  # torch.fx keeps the size symbolic
    x2 = torch.randn(6)
    assert_same_outputs(g.run(x2), M()(x2))


def test_write_into_a_parameter_and_vmap_are_refused():
    class Writes(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(3))

        def forward(self, x):
            with torch.no_grad():
                self.w.mul_(2)
            return x * self.w

    class Maps(nn.Module):
        def forward(self, x):
            return torch.vmap(lambda r: r * r.sum())(x)

    model = Writes()
    assert "writes into a parameter" in _refusal(model, torch.ones(3))
    assert torch.equal(model.w, torch.ones(3))
    assert "functorch" in _refusal(Maps(), torch.randn(2, 3))


def test_dynamic_dims_use_record_only_when_asked():
    """A branch at a size no recording takes (batch 100) is invisible to recordings: bridge's own choice for
    symbolic dims is torch's symbolic tracers; frontend="record" records at several sizes (tests/frontends/
    test_sized.py), and refuses this forward for its size that is no polynomial (numel // 2)."""
    class M(nn.Module):
        def forward(self, x):
            if x.shape[0] > 100:
                return x
            return x.flatten().cumsum(0)[x.numel() // 2:] * 2

    g = bridge.trace(M(), (torch.randn(4, 3),), dynamic={"x": {0: "batch"}})
    assert g.meta["frontend"] != "record"
    with pytest.raises(TraceError, match="no polynomial"):
        bridge.trace(M(), (torch.randn(4, 3),), dynamic={"x": {0: "batch"}}, frontend="record")


# ---- the model is left as it was ----------------------------------------------------------------------------
class _Stateful(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("count", torch.zeros(()))
        self.cache = {}
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        self.count.add_(1)                       # a buffer written in place
        self.cache["last"] = x                   # a cache stored on the module
        self.calls = getattr(self, "calls", 0) + 1
        x.mul_(2)                                # the input written in place
        noise = torch.randn_like(x)              # random numbers
        return self.drop(x) + noise * 0 + self.count


def test_model_inputs_and_rng_are_left_unchanged():
    model = _Stateful().train()
    x = torch.randn(4)
    x_before = x.clone()
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    g = bridge.trace(model, (x,), frontend="record")
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(x, x_before)
    assert model.count.item() == 0 and model.cache == {} and not hasattr(model, "calls")
    assert any(n.op == "dropout" for n in g.nodes) and any(n.op.startswith("randn") for n in g.nodes)
    model.eval()
    g = bridge.trace(model, (x,), frontend="record")
    fresh = torch.randn(4)
    expect = _eager(_Stateful().eval(), (fresh.clone(),))
    assert_same_outputs(g.run(fresh.clone()), expect)


def test_split_at_input_indices_is_refused_not_baked():
    """tensor_split at a tensor of indices the model takes as input: the pieces' sizes are those values, which the
    run would bake (onnxruntime then split at the example's indices for any other). Indices the model holds (a
    buffer) are constants, and trace."""
    class AtInput(nn.Module):
        def forward(self, x, idx):
            return torch.tensor_split(x, idx)

    class AtBuffer(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("idx", torch.tensor([2, 5]))

        def forward(self, x):
            return torch.tensor_split(x, self.idx)

    x = torch.arange(10.0)
    with pytest.raises(bridge.TraceError, match="record: Refused: the output size of tensor_split"):
        bridge.trace(AtInput(), (x, torch.tensor([2, 5])))
    g = bridge.trace(AtBuffer(), (x,))
    assert g.meta["frontend"] == "record"
    fresh = torch.randn(10)
    for got, want in zip(g.run(fresh), AtBuffer()(fresh)):
        assert torch.equal(got, want)


@pytest.mark.parametrize("use", ["view", "arange", "narrow", "topk"])
def test_sizes_read_inside_an_op_from_an_input_are_refused(use):
    """A 0-d tensor from the inputs used as a size (torch reads its value inside the op, no python read to see):
    the recording would bake the example's size, so it refuses; auto's fx keeps the size symbolic and the graph
    follows other values in onnxruntime too."""
    fn = {"view": lambda x, n: x.view(n, -1), "arange": lambda x, n: torch.arange(n) * x.sum(),
          "narrow": lambda x, n: x.narrow(0, 0, n), "topk": lambda x, n: x.topk(n)[0]}[use]

    class M(nn.Module):
        def forward(self, x, n):
            return fn(x, n)

    x = torch.arange(6.0)
    with pytest.raises(TraceError, match="record: Refused: the output size of"):
        bridge.trace(M(), (x, torch.tensor(2)), frontend="record")
    g = bridge.trace(M(), (x, torch.tensor(2)))
    assert g.meta["frontend"] == "fx"
    assert torch.equal(g.run(x, torch.tensor(3)), M()(x, torch.tensor(3)))


# ---- the run on fake tensors ---------------------------------------------------------------------------------
_SEEN: list[bool] = []  # not on the module: bridge.trace puts the module's own lists back


class _Spy(nn.Module):
    """Notes what its input is: the recording's forward runs on fake tensors where they serve."""

    def forward(self, x):
        from torch._subclasses.fake_tensor import FakeTensor

        _SEEN.append(isinstance(x, FakeTensor))
        return x


def test_the_forward_runs_on_fake_tensors_where_they_serve():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), _Spy(), nn.GELU(), nn.Linear(8, 3)).eval()
    _SEEN.clear()
    g = bridge.trace(model, torch.randn(5, 4), frontend="record")
    assert g.meta["record_run"] == "fake" and _SEEN == [True]
    x = torch.randn(5, 4)
    assert_same_outputs(g.run(x), _eager(model, (x,)))


class _ReadsWeights(nn.Module):
    """Reads a value of its weights (a constant: fine for the recording, impossible on fake tensors); with
    ``swallow`` the model itself catches the error a fake tensor raises there and would take the other branch."""

    def __init__(self, swallow: bool):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
        self.swallow = swallow

    def forward(self, x):
        try:
            positive = bool(self.w.sum() > 0)
        except Exception:  # noqa: BLE001 - what a model might do; the recording must not take this branch
            if not self.swallow:
                raise
            positive = False
        return x * self.w if positive else x - 1


@pytest.mark.parametrize("swallow", [False, True])
def test_a_value_read_runs_the_recording_again_for_real(swallow):
    model = _ReadsWeights(swallow)
    g = bridge.trace(model, (torch.randn(3),), frontend="record")
    assert g.meta["record_run"] == "real"
    x = torch.randn(3)
    assert_same_outputs(g.run(x), model(x))
    assert any(n.op == "mul" for n in g.nodes)


class _WritesBufferView(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("state", torch.zeros(2, 4))

    def forward(self, x):
        row = self.state[0]  # a view of a buffer, taken of the real tensor during a fake run
        row.add_(x)          # written through the view
        return self.state.sum(0) + x


def test_a_write_through_a_view_of_a_buffer_is_seen_in_the_fake_run_as_in_the_real_one():
    """The converter must see that the write reaches the buffer (read afterwards): the fake run refuses it as the
    real run does, and ``trace`` falls back to torch.export, which functionalizes it."""
    binding = InputBinding(_WritesBufferView(), (torch.randn(4),), {})
    for fake in (True, False):
        with pytest.raises(Exception, match="writes in place into memory that m_state also sees"):
            record.trace_record(_WritesBufferView(), binding, fake=fake)
    g = bridge.trace(_WritesBufferView(), (torch.randn(4),))
    assert g.meta["frontend"] == "export"
    x = torch.randn(4)
    assert_same_outputs(g.run(x), _WritesBufferView()(x))


def test_hf_model_records_on_fake_tensors():
    m, model, args, kwargs = corpus.hf_model("gpt2")
    g = bridge.trace(model, args, kwargs)
    assert g.meta["frontend"] == "record" and g.meta["record_run"] == "fake"
    args2, kwargs2 = m.inputs(torch.Generator().manual_seed(1))
    assert_same_outputs(g.run(*args2, **kwargs2), _eager(model, args2, kwargs2))


@pytest.mark.parametrize("frontend", ["fx", "record"])
def test_a_registered_module_whose_forward_was_replaced_is_traced_into(frontend):
    """``norm.forward = scaled`` on an nn.LayerNorm: the instance computes more than the layer norm its class stands
    for, so it is traced into, not kept as the op (which would drop the scaling silently)."""
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    norm = model[1]

    def scaled(x, _forward=norm.forward):
        return _forward(x) * 3
    norm.forward = scaled
    x = torch.randn(2, 4)
    g = bridge.trace(model, (x,), frontend=frontend)
    y = torch.randn(2, 4)  # fresh values
    assert_same_outputs(g.run(y), _eager(model, (y,)))
    assert [n.op for n in g.nodes][-2:] == ["layer_norm", "mul"]
