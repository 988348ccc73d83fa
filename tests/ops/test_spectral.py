"""FFTs and complex values (bridge/ops/spectral.py) on every path, against eager PyTorch on fresh inputs.

Each transform of ``torch.fft`` (1-D, 2-D, n-D; norm "backward", "forward", "ortho"; ``n``/``s`` padding and
trimming; dim choices; odd and even lengths) is traced with the fx frontend, with torch.export and through the
ExportedProgram torch.export decomposes to ATen's ``_fft_c2c``/``_fft_r2c``/``_fft_c2r``; run with ``g.run`` and the
generated module; exported at opset 17 (DFT's axis an attribute) and the newest opset (an input), run in
onnxruntime, and imported back. In the file a complex tensor is a float tensor with a trailing dim of 2 (real,
imaginary), so the ONNX outputs are compared with ``torch.view_as_real`` of eager's. Then: FLOPs against the
5 N log2 N formula (FlopCounterMode counts no FFT), two model-style modules (an FNet token mixer and a
GFNet/FNO global filter), complex values in the file, the refusal of complex ops with no lowering, and onnx's own
backend node tests for DFT imported.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from onnx import numpy_helper
from torch.utils.flop_counter import FlopCounterMode

import bridge
from bridge.analysis.costs import node_costs
from bridge.backends.onnx import MIN_OPSET, max_opset
from bridge.backends.ort import session
from bridge.errors import UnsupportedOpError
from tests.helpers import Fn, assert_same_outputs, tensor_leaves

OPSETS = sorted({MIN_OPSET, max_opset()})


def real(*s):
    return lambda: (torch.randn(*s),)


def cplx(*s):
    return lambda: (torch.randn(*s, dtype=torch.complex64),)


def _inputs(make, seed: int) -> tuple:
    torch.manual_seed(seed)
    return make()


def _pairs(t: torch.Tensor) -> torch.Tensor:
    """A tensor as the ONNX file holds it: complex as float [..., 2] (real, imaginary)."""
    return torch.view_as_real(t.resolve_conj()) if t.is_complex() else t


def _close(got, ref, n: int) -> None:
    """float32 FFT tolerance: the rounding error of a fast transform grows with log2 N (pocketfft, onnxruntime for
    powers of two), and onnxruntime sums lengths that are not powers of two directly (error ~ N eps, still within
    this at the N <= 32 used here): 1e-5 x output scale x max(1, log2 N)."""
    f = max(1.0, math.log2(n))
    assert_same_outputs(got, ref, atol=1e-5 * f, rtol=1e-5 * f)


def _onnx_paths(g, model, fresh: tuple, n: int) -> None:
    """``g`` exported at each opset: onnxruntime and the re-imported graph against eager on ``fresh``."""
    ref = [_pairs(t) for t in tensor_leaves(model(*fresh))]
    feeds = [_pairs(t) for t in fresh]
    for opset in OPSETS:
        proto = bridge.to_onnx(g, opset=opset)
        assert any(nd.op_type == "DFT" for nd in proto.graph.node)
        sess = session(proto)
        got = sess.run(None, {i.name: x.numpy() for i, x in zip(sess.get_inputs(), feeds)})
        _close([torch.from_numpy(a) for a in got], ref, n)
        _close(tensor_leaves(bridge.from_onnx(proto).run(*feeds)), ref, n)


def _every_path(model, make, n: int, aten: bool = True) -> None:
    x, fresh = _inputs(make, 0), _inputs(make, 1)
    ref = model(*fresh)
    traced = [bridge.trace(model, x, frontend=fe) for fe in ("fx", "export")]
    if aten:  # ATen's _fft_c2c / _fft_r2c / _fft_c2r, _conj, view_as_real, select, ...
        traced.append(bridge.trace(torch.export.export(model, x).run_decompositions(), x))
    for g in traced:
        assert not g.opaque_nodes(), g
        assert any(nd.op.startswith("fft_") for nd in g.nodes), g
        _close(g.run(*fresh), ref, n)
        _close(g.to_module()(*fresh), ref, n)
    _onnx_paths(traced[0], model, fresh, n)


# ---- every transform --------------------------------------------------------------------------------------------
# id, transform, inputs, N (the points of one transform: the tolerance's log2 N)
TRANSFORMS = [
    ("fft-real-even", lambda x: torch.fft.fft(x), real(3, 8), 8),
    ("fft-n-pad-odd-ortho", lambda x: torch.fft.fft(x, n=11, norm="ortho"), cplx(3, 8), 11),
    ("ifft-n-trim-dim0-forward", lambda x: torch.fft.ifft(x, n=3, dim=0, norm="forward"), cplx(5, 4), 5),
    ("ifft-odd", lambda x: torch.fft.ifft(x), cplx(2, 7), 7),
    ("fft2-forward", lambda x: torch.fft.fft2(x, norm="forward"), cplx(2, 4, 6), 24),
    ("ifft2-s-ortho", lambda x: torch.fft.ifft2(x, s=(5, 4), norm="ortho"), real(4, 6), 20),
    ("fftn-dims", lambda x: torch.fft.fftn(x, dim=(0, 2)), real(3, 2, 5), 15),
    ("ifftn-all", lambda x: torch.fft.ifftn(x), cplx(2, 3, 4), 24),
    ("rfft-even", lambda x: torch.fft.rfft(x), real(3, 8), 8),
    ("rfft-odd-ortho", lambda x: torch.fft.rfft(x, norm="ortho"), real(3, 7), 7),
    ("rfft-n-pad-dim0-forward", lambda x: torch.fft.rfft(x, n=9, dim=0, norm="forward"), real(6, 3), 9),
    ("rfft-n-trim", lambda x: torch.fft.rfft(x, n=5), real(2, 8), 5),
    ("rfft2", lambda x: torch.fft.rfft2(x), real(2, 4, 6), 24),
    ("rfftn-s-ortho", lambda x: torch.fft.rfftn(x, s=(3, 5), dim=(0, 2), norm="ortho"), real(4, 2, 6), 15),
    ("irfft-even", lambda x: torch.fft.irfft(x), cplx(3, 5), 8),
    ("irfft-n-odd-ortho", lambda x: torch.fft.irfft(x, n=9, norm="ortho"), cplx(3, 5), 9),
    ("irfft-n-trim-dim0-forward", lambda x: torch.fft.irfft(x, n=4, dim=0, norm="forward"), cplx(6, 2), 4),
    ("irfft-n-pad", lambda x: torch.fft.irfft(x, n=16), cplx(2, 4), 16),
    ("irfft2", lambda x: torch.fft.irfft2(x), cplx(2, 4, 5), 32),
    ("irfftn-s-ortho", lambda x: torch.fft.irfftn(x, s=(3, 7), dim=(0, 2), norm="ortho"), cplx(4, 2, 3), 21),
    ("hfft-n-odd", lambda x: torch.fft.hfft(x, n=7), cplx(3, 5), 7),
    ("hfft-ortho", lambda x: torch.fft.hfft(x, norm="ortho"), cplx(3, 5), 8),
    ("hfft2-s", lambda x: torch.fft.hfft2(x, s=(3, 6)), cplx(3, 4), 18),
    ("ihfft", lambda x: torch.fft.ihfft(x), real(3, 8), 8),
    ("ihfft2-forward", lambda x: torch.fft.ihfft2(x, norm="forward"), real(2, 3, 6), 18),
]


# the default run keeps one of each kind (c2c, r2c, c2r; 1-D, 2-D, n-D; each norm; n= padding and trimming; odd
# lengths); the rest run with -m slow (about 1 s each: three traces, two opsets, onnxruntime, import)
_DEFAULT = {"fft-real-even", "ifft-n-trim-dim0-forward", "fft2-forward", "fftn-dims", "rfft-n-pad-dim0-forward",
            "rfftn-s-ortho", "irfft-n-odd-ortho", "irfftn-s-ortho", "hfft-n-odd", "ihfft2-forward"}


@pytest.mark.parametrize("fn, make, n", [pytest.param(*t[1:], id=t[0], marks=() if t[0] in _DEFAULT else
                                                      pytest.mark.slow) for t in TRANSFORMS])
def test_transform_on_every_path(fn, make, n):
    _every_path(Fn(fn), make, n)


def test_symbolic_dims():
    """A symbolic batch dim (not transformed), and symbolic transformed dims under norm="ortho" and "forward" (the
    scale read at run time), through onnxruntime at other sizes."""
    model = Fn(lambda x: (torch.fft.irfft(torch.fft.rfft(x, norm="ortho") * 2, n=8), torch.fft.fft(x, norm="ortho")))
    g = bridge.trace(model, (torch.randn(3, 8),), dynamic={"xs_0": {0: "batch"}})
    fresh = torch.randn(5, 8)
    _close(g.run(fresh), model(fresh), 8)
    _onnx_paths(g, model, (fresh,), 8)
    model = Fn(lambda x: (torch.fft.fft(x, norm="ortho"), torch.fft.irfft(x, norm="forward")))
    g = bridge.trace(model, (torch.randn(2, 6),), dynamic={"xs_0": {1: "n"}})
    fresh = torch.randn(2, 10)
    _close(g.run(fresh), model(fresh), 18)
    _onnx_paths(g, model, (fresh,), 18)


def test_dft_forms_by_opset():
    """Opset 17 gives DFT its axis as an attribute, 20 and later as a third input; n= is the dft_length input."""
    g = bridge.trace(Fn(lambda x: torch.fft.fft(x, n=12, dim=0)), (torch.randn(8, 3),))
    old = next(nd for nd in bridge.to_onnx(g, opset=17).graph.node if nd.op_type == "DFT")
    assert [a.name for a in old.attribute if a.name == "axis"] == ["axis"] and len(old.input) == 2
    if max_opset() >= 20:
        proto = bridge.to_onnx(g, opset=max_opset())
        new = next(nd for nd in proto.graph.node if nd.op_type == "DFT")
        inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
        assert len(new.input) == 3 and "axis" not in [a.name for a in new.attribute]
        assert int(inits[new.input[1]]) == 12 and int(inits[new.input[2]]) == 0


# ---- FLOPs -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fn, x, expected", [
    pytest.param(torch.fft.fft, torch.randn(4, 8), 5 * 4 * 8 * 3, id="fft"),
    pytest.param(lambda x: torch.fft.fft(x, n=11), torch.randn(2, 8), int(5 * 2 * 11 * math.log2(11)), id="fft-n"),
    pytest.param(torch.fft.rfft, torch.randn(4, 8), int(2.5 * 4 * 8 * 3), id="rfft"),
    pytest.param(lambda x: torch.fft.rfft(x, n=16), torch.randn(3, 8), int(2.5 * 3 * 16 * 4), id="rfft-n"),
    pytest.param(torch.fft.fft2, torch.randn(2, 4, 8), 5 * 2 * 32 * 5, id="fft2"),
    pytest.param(lambda x: torch.fft.irfft(x, n=8), torch.randn(4, 5, dtype=torch.complex64), int(2.5 * 4 * 8 * 3),
                 id="irfft"),
    pytest.param(torch.fft.irfft2, torch.randn(4, 5, dtype=torch.complex64), int(2.5 * 32 * 5), id="irfft2"),
])
def test_flops(fn, x, expected):
    """5 N log2 N per complex transform of N points (2.5 for a real signal or result), n-D as 1-D of N = N1...Nk.
    torch.utils.flop_counter.FlopCounterMode counts no FFT at all (0), as it counts no elementwise op: bridge
    counts what it leaves out (docs/analysis.md)."""
    with FlopCounterMode(display=False) as counter:
        fn(x)
    assert counter.get_total_flops() == 0
    for fe in ("fx", "export"):
        g = bridge.trace(Fn(fn), (x,), frontend=fe)
        assert sum(c.flops for nd, c in node_costs(g).items() if nd.op.startswith("fft_")) == expected


# ---- model-style modules -----------------------------------------------------------------------------------------
class FNetMixer(nn.Module):
    """FNet's token mixing: the real part of a 2-D DFT over the sequence and hidden dims, then add & norm and a
    feed-forward layer."""

    def __init__(self, d: int = 8, over_fftn: bool = False):
        super().__init__()
        self.over_fftn = over_fftn
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x):  # (batch, tokens, d)
        mixed = torch.fft.fftn(x, dim=(-1, -2)).real if self.over_fftn else torch.fft.fft2(x).real
        x = self.norm1(x + mixed)
        return self.norm2(x + self.ff(x))


class GlobalFilter(nn.Module):
    """GFNet's global filter layer (as FNO's spectral multiply): rfft2 over the spatial dims, a product with a
    learned complex weight stored as a real parameter of pairs (``view_as_complex``), irfft2 back."""

    def __init__(self, h: int = 6, w: int = 6, c: int = 4):
        super().__init__()
        self.complex_weight = nn.Parameter(torch.randn(h, w // 2 + 1, c, 2) * 0.5)
        self.proj = nn.Linear(c, c)

    def forward(self, x):  # (batch, h, w, c)
        _, h, w, _ = x.shape
        spec = torch.fft.rfft2(x, dim=(1, 2), norm="ortho")
        spec = spec * torch.view_as_complex(self.complex_weight)
        return self.proj(torch.fft.irfft2(spec, s=(h, w), dim=(1, 2), norm="ortho"))


class TruncatedSpectralFilter(nn.Module):
    """FNO's spectral convolution, per channel: the lowest modes of rfft2 (a slice of the complex spectrum) times a
    complex ``nn.Parameter``, and irfft2 zero-padding the rest back to the input's size."""

    def __init__(self, c: int = 3, modes: int = 3):
        super().__init__()
        self.modes = modes
        self.weight = nn.Parameter(torch.randn(c, modes, modes, dtype=torch.complex64) * 0.5)

    def forward(self, x):  # (batch, c, h, w)
        spec = torch.fft.rfft2(x)[:, :, :self.modes, :self.modes] * self.weight
        return torch.fft.irfft2(spec, s=x.shape[-2:])


class SpectralFeatures(nn.Module):
    """Spectrogram-style features: the magnitude and phase of a real signal's half spectrum, and a complex mix."""

    def __init__(self):
        super().__init__()
        self.register_buffer("window", torch.hann_window(8))
        self.register_buffer("shift", torch.randn(5, dtype=torch.complex64))

    def forward(self, x):  # (batch, 8)
        spec = torch.fft.rfft(x * self.window) * self.shift + 1.0
        mixed = spec - torch.view_as_complex(torch.stack([x[:, :5], x[:, 3:]], -1))
        return torch.log1p(spec.abs()), mixed.angle(), (-mixed).conj().imag, torch.view_as_real(mixed)


@pytest.mark.parametrize("model, make, n", [
    pytest.param(FNetMixer(), real(2, 6, 8), 48, id="fnet-fft2"),
    pytest.param(FNetMixer(over_fftn=True), real(2, 6, 8), 48, id="fnet-fftn"),
    pytest.param(GlobalFilter(), real(2, 6, 6, 4), 36, id="gfnet"),
    pytest.param(TruncatedSpectralFilter(), real(2, 3, 6, 8), 48, id="fno"),
    pytest.param(SpectralFeatures(), real(3, 8), 8, id="spectral-features"),
])
def test_model_on_every_path(model, make, n):
    _every_path(model.eval(), make, n)


def test_fnet_symbolic_batch_through_onnx():
    model = FNetMixer().eval()
    g = bridge.trace(model, (torch.randn(2, 6, 8),), dynamic={"x": {0: "batch"}})
    _onnx_paths(g, model, (torch.randn(5, 6, 8),), 48)


# ---- complex values in the file ----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype, elem", [(torch.complex64, onnx.TensorProto.FLOAT),
                                         (torch.complex128, onnx.TensorProto.DOUBLE)])
def test_complex_inputs_outputs_and_constants_are_float_pairs(dtype, elem):
    """A complex graph input, output and constant are float tensors [..., 2] of the same precision in the file, and
    bridge.verify feeds and compares them so."""
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(6, dtype=dtype))

        def forward(self, z):
            return torch.fft.ifft(z, norm="ortho") * self.w

    model, z = M(), torch.randn(4, 6, dtype=dtype)
    proto = bridge.to_onnx(model, args=(z,))
    for vi in (*proto.graph.input, *proto.graph.output):
        assert vi.type.tensor_type.elem_type == elem
        assert [d.dim_value for d in vi.type.tensor_type.shape.dim] == [4, 6, 2]
    (w,) = [t for t in proto.graph.initializer if list(t.dims) == [6, 2]]
    assert w.data_type == elem
    inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    assert all(v.type.tensor_type.elem_type in (elem, onnx.TensorProto.INT64) for v in inferred.graph.value_info)
    fresh = torch.randn(4, 6, dtype=dtype)
    sess = session(proto)
    (got,) = sess.run(None, {"z": _pairs(fresh).numpy()})
    ref = _pairs(model(fresh).detach())
    _close(torch.from_numpy(got), ref, 6)
    _close(bridge.from_onnx(proto).run(_pairs(fresh)), ref, 6)
    assert bridge.verify(model, proto, (fresh,)).ok  # feeds and compares complex values as the file's pairs


@pytest.mark.parametrize("index", [
    pytest.param(lambda z: z[:, 1:, :2], id="slices"),
    pytest.param(lambda z: z[..., -2:], id="ellipsis"),
    pytest.param(lambda z: z[:, 1], id="int"),
    pytest.param(lambda z: z[None, -1, ::2], id="none-int-step"),
    pytest.param(lambda z: z.unsqueeze(-1).squeeze(), id="unsqueeze-squeeze"),
])
def test_indexing_a_complex_tensor(index):
    """Basic indexing picks leading axes of the file's [..., 2] pairs (getitem under fx; slice, select, unsqueeze
    under torch.export)."""
    model = Fn(lambda x: torch.view_as_real(index(torch.fft.rfft2(x)) * 2))
    x, fresh = torch.randn(3, 4, 6), torch.randn(3, 4, 6)
    for fe in ("fx", "export"):
        g = bridge.trace(model, (x,), frontend=fe)
        _close(g.run(fresh), model(fresh), 24)
        proto = bridge.to_onnx(g)
        assert bridge.verify(model, proto, (fresh,)).ok
        _close(bridge.from_onnx(proto).run(fresh), model(fresh), 24)


def test_complex_op_without_lowering_is_refused_naming_every_node():
    """exp and division of complex tensors have no complex lowering: export lists both nodes at once (a lowering
    written for real tensors would write a wrong file)."""
    model = Fn(lambda x: torch.fft.fft(x).exp().real + (torch.fft.fft(x) / 3).imag)
    with pytest.raises(UnsupportedOpError) as e:
        bridge.to_onnx(model, args=(torch.randn(2, 8),))
    assert sorted(n.op for n in e.value.nodes) == ["div", "exp"]
    msg = str(e.value)
    assert "2 node(s)" in msg and "complex input and output" in msg
    assert all(f"%{n.name}" in msg for n in e.value.nodes)
    with pytest.raises(UnsupportedOpError, match="indexing a complex tensor with tensors"):
        bridge.to_onnx(Fn(lambda x: torch.fft.fft(x)[:, torch.tensor([0, 2])].real), args=(torch.randn(2, 8),))


# ---- onnx's backend node tests for DFT -----------------------------------------------------------------------------
def _onnx_dft_cases():
    """onnx's DFT node test cases. ``collect_testcases("DFT")`` runs every operator's case generators (15 s);
    importing the DFT module with the collector's target set to DFT records its cases alone."""
    import importlib
    import sys

    from onnx.backend.test.case import node

    if "onnx.backend.test.case.node.dft" not in sys.modules:
        node._TargetOpType = "DFT"
        try:
            importlib.import_module("onnx.backend.test.case.node.dft")
        finally:  # the collector is global: the other operators' cases must still load in full later
            node._TargetOpType = None
    cases = [c for c in node._NodeTestCases if c.model.graph.node[0].op_type == "DFT"]
    return [pytest.param(c, id=c.name) for c in cases]


@pytest.mark.parametrize("case", _onnx_dft_cases())
def test_onnx_backend_dft_case(case):
    """Each of onnx's DFT node tests imports and matches its expected output. Their opset-20 forms feed the axis
    as a graph input; a torch FFT's dim is a trace-time constant, so it becomes an initializer of that value."""
    for inputs, (expected,) in case.data_sets:
        model = copy.deepcopy(case.model)
        feeds = []
        for vi, value in zip(list(model.graph.input), inputs):
            if vi.name == "axis":
                model.graph.input.remove(vi)
                model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), "axis"))
            else:
                feeds.append(torch.from_numpy(np.asarray(value)))
        got = bridge.from_onnx(model).run(*feeds)
        _close(got, torch.from_numpy(np.asarray(expected)), 10)
