"""Every op of the registry through the ONNX backend: trace, export, run in onnxruntime, compare with eager.

The cases are those of ``tests/ops/test_registry.py`` (one per op and torch spelling, from ``samples.py``). Each is
traced once with the fx frontend and exported at the lowest supported opset (17) and at the newest one the
installed onnxruntime runs (``max_opset()``), with ``onnx.checker`` (full) and strict shape inference. The
onnxruntime outputs must equal eager PyTorch's with the same structure and dtypes, within
``atol = 1e-5 * max(1, output scale)``, ``rtol = 1e-5`` (integers and bools exactly; random ops: shapes and
dtypes). A symbolic dim (``dynamic``) is also run one longer than traced.

- an op with no lowering yet (``opdef.onnx is None``), or a graph holding another such op, is a skip;
- ``opaque`` never lowers: its export must raise ``UnsupportedOpError`` naming the call;
- a case whose argument combination ONNX (or onnxruntime) cannot express at an opset is listed in ``UNSUPPORTED``;
  its export must raise ``UnsupportedOpError`` with the reason given there.

``test_onnx_semantics`` adds what one float32 sample per op does not reach: torch's type promotion with python
scalars and 0-d tensors, integer division and remainders of both signs, NaN/inf/-0.0, and creation ops and python
scalars over run-time (symbolic) sizes.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

import bridge
import bridge.ops
from bridge.backends.onnx import MIN_OPSET, max_opset
from bridge.backends.ort import session
from bridge.errors import UnsupportedOpError
from bridge.ir import structure
from bridge.ir.graph import Value
from bridge.ir.spec import ScalarSpec
from tests.helpers import Fn as _Fn
from tests.ops.samples import cases, fx_recorded
from tests.ops.test_registry import _grown, _inputs, _model, assert_same

OPSETS = sorted({MIN_OPSET, max_opset()})

ANY_OPSET = range(MIN_OPSET, 100)
# (op name or case id, opsets, regex the UnsupportedOpError message matches): what cannot be exported, and why.
# An entry for every opset: ("conv-nn.Conv1d", ANY_OPSET, "padding_mode")
UNSUPPORTED: list[tuple[str, range, str]] = [
    *((op, range(MIN_OPSET, 18), "needs opset 18") for op in ("bitwise_and", "bitwise_or", "bitwise_xor")),
    # onnxruntime has no random-number kernels from opset 22 (rand, randn, *_like and dropout while training)
    *((key, range(22, 100), "onnxruntime runs RandomUniformLike/RandomNormalLike only up to opset 21")
      for key in ("rand", "randn", "randperm", "rand_like", "randn_like", "dropout-nn.Dropout", "dropout-nn.Dropout1d",
                  "dropout-nn.Dropout2d", "dropout-nn.Dropout3d", "dropout-nn.FeatureAlphaDropout")),
    # x.view(torch.int32) reinterprets bytes: ONNX BitCast exists from opset 26
    ("view-Tensor.view", range(MIN_OPSET, 26), "BitCast needs opset 26"),
]

_CASES = cases()
_TRACED: dict[str, tuple] = {}  # case id -> (model, graph): traced once for every opset


def _params():
    out = []
    for c in _CASES:
        for opset in OPSETS:
            marks = [pytest.mark.xfail(reason=c.xfail, strict=True)] if c.xfail and not _unsupported(c, opset) else []
            out.append(pytest.param(c, opset, id=f"{c.id}-opset{opset}", marks=marks))
    return out


def _traced(case):
    if case.id not in _TRACED:
        model = _model(case)
        _TRACED[case.id] = (model, bridge.trace(model, _inputs(case), frontend="fx", dynamic=case.dynamic))
    return _TRACED[case.id]


def _unsupported(case, opset) -> str | None:
    return next((why for key, opsets, why in UNSUPPORTED if key in (case.op, case.id) and opset in opsets), None)


def _missing_lowerings(g) -> list[str]:
    return sorted({n.op for n in g.nodes if n.op != "opaque" and bridge.ops.get(n.op).onnx is None})


def _fetchable(proto):
    """onnxruntime cannot hand bfloat16 tensors to numpy: such outputs are cast to float32 (exactly) on the way."""
    proto = copy.deepcopy(proto)
    for out in proto.graph.output:
        if out.type.tensor_type.elem_type == onnx.TensorProto.BFLOAT16:
            src = out.name + "__bf16"
            for n in proto.graph.node:
                n.output[:] = [src if o == out.name else o for o in n.output]
                n.input[:] = [src if i == out.name else i for i in n.input]
            proto.graph.node.append(onnx.helper.make_node("Cast", [src], [out.name], to=onnx.TensorProto.FLOAT))
            out.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    return proto


def _run_onnx(sess, g, inputs):
    """onnxruntime's outputs in the model's output structure (python scalars back as python numbers)."""
    # a complex tensor is float [..., 2] (real, imaginary) in the file
    feeds = {i.name: (torch.view_as_real(x.resolve_conj()) if x.is_complex() else x).detach().numpy()
             for i, x in zip(sess.get_inputs(), inputs)}
    got = iter(sess.run(None, feeds))
    leaves = []
    for v in g.outputs:
        if not isinstance(v, Value):
            leaves.append(v)
            continue
        arr = next(got)
        if isinstance(v.spec, ScalarSpec):
            leaves.append(v.spec.type(np.asarray(arr).item()))
        elif v.spec.dtype.is_complex:
            leaves.append(torch.view_as_complex(torch.from_numpy(np.array(arr))))
        else:
            leaves.append(torch.from_numpy(np.array(arr)).to(v.spec.dtype))  # bfloat16: see _fetchable
    return structure.unflatten(g.output_struct, leaves)


@pytest.mark.parametrize("case, opset", _params())
def test_onnx_op(case, opset):
    if case.skip:
        pytest.skip(case.skip)
    model, g = _traced(case)
    if case.op == "opaque":
        with pytest.raises(UnsupportedOpError, match="opaque"):
            bridge.to_onnx(g, None, opset=opset, optimize=False)
        return
    assert not _missing_lowerings(g), f"ops without an ONNX lowering: {_missing_lowerings(g)}"
    why = _unsupported(case, opset)
    if why:
        with pytest.raises(UnsupportedOpError, match=why):
            bridge.to_onnx(g, None, opset=opset, optimize=False)
        return
    proto = bridge.to_onnx(g, None, opset=opset, optimize=False)
    if not proto.graph.output:  # every output is a trace-time constant (dim()): nothing for onnxruntime to run
        assert_same(structure.unflatten(g.output_struct, g.outputs), model(*_inputs(case)), case.random, "constants")
        return
    sess = session(_fetchable(proto))
    with torch.no_grad():
        for i, make in enumerate([_inputs] + ([_grown] if case.dynamic else [])):
            got = _run_onnx(sess, g, make(case))  # fresh inputs each: in-place spellings write theirs
            where = f"onnxruntime (opset {opset}{', grown inputs' if i else ''})"
            assert_same(got, model(*make(case)), case.random, where)


def test_unsupported_entries_name_cases():
    keys = {c.id for c in _CASES} | {c.op for c in _CASES}
    assert not sorted({k for k, _, _ in UNSUPPORTED} - keys), "UNSUPPORTED names ops or cases that do not exist"


# ---- semantics the op samples do not reach: promotion, integer division, NaN/inf, run-time sizes --------


_floor, _ceil, _round, _int, _max, _len = (fx_recorded(f) for f in (math.floor, math.ceil, round, int, max, len))
_SPECIAL = torch.tensor([0.0, -0.0, 1.0, -1.0, 2.5, -2.5, 0.5, -0.5, 1e-3, -7.25, 7.25, 100.0, -100.0,
                         math.inf, -math.inf, math.nan])
_POS_NEG = torch.tensor([7.0, -7.0, 7.0, -7.0, 6.0, -6.0, 0.5, 5.0, 3.0, -0.0, 1e-8, 0.3])
_DIVISOR = torch.tensor([2.0, 2.0, -2.0, -2.0, 3.0, -3.0, 0.25, 0.0, -0.0, 3.0, 3.0, 0.1])
_IA = torch.tensor([7, -7, 7, -7, 6, -6, 0, 5, -1, 9])
_IB = torch.tensor([2, 2, -2, -2, 3, -3, 5, 1, 3, -4])


_SEMANTICS = {
    # type promotion: integer tensors with float scalars and tensors, 0-d tensors, true division
    "int_mul_float_scalar": (lambda a: a * 0.5, lambda: (_IA,)),
    "int_add_float_tensor": (lambda a, b: a + b, lambda: (_IA, _IB.float() / 3)),
    "int_truediv": (lambda a, b: a / b, lambda: (_IA, _IB)),
    "float_add_0d_double": (lambda a, b: a + b, lambda: (_POS_NEG, torch.tensor(0.25, dtype=torch.float64))),
    "int_lt_float": (lambda a: a < 0.5, lambda: (_IA,)),
    "bool_gt": (lambda a, b: a > b, lambda: (_IA > 0, _IB > 0)),
    "int_pow_int": (lambda a: a ** 2, lambda: (_IA,)),
    "sub_alpha_rsub": (lambda a, b: (torch.sub(a, b, alpha=2), 3 - a, torch.Tensor.__rsub__(a, b), 1.5 / a),
                       lambda: (_POS_NEG, _DIVISOR)),
    # integer-style division, as torch rounds
    "floordiv_float": (lambda a, b: (a // b, torch.floor_divide(a, b)), lambda: (_POS_NEG, _DIVISOR)),
    "floordiv_int": (lambda a, b: (a // b, a % b, torch.fmod(a, b)), lambda: (_IA, _IB)),
    "remainder_fmod_float": (lambda a, b: (a % b, torch.fmod(a, b), torch.remainder(a, -1.5)),
                             lambda: (_POS_NEG, _DIVISOR)),
    "div_rounding_modes": (lambda a, b, c, d: (torch.div(a, b, rounding_mode="floor"),
                                               torch.div(a, b, rounding_mode="trunc"),
                                               torch.div(c, d, rounding_mode="floor"),
                                               torch.div(c, d, rounding_mode="trunc")),
                           lambda: (_POS_NEG, _DIVISOR, _IA, _IB)),
    # special values
    "unary_special": (lambda x: (torch.trunc(x), torch.frac(x), torch.round(x), torch.sign(x), torch.isinf(x),
                                 torch.isfinite(x), torch.isnan(x), F.logsigmoid(x), F.softplus(x), torch.expm1(x),
                                 torch.log1p(x), torch.exp2(x), torch.rsqrt(x), torch.tanh(x) - F.tanhshrink(x),
                                 F.mish(x), torch.square(x), x.to(torch.bool)),
                      lambda: (_SPECIAL,)),
    "unary_small": (lambda x: (torch.expm1(x), torch.log1p(x)), lambda: (torch.tensor([1e-8, -1e-6, 3e-4, 0.09]),)),
    "round_decimals": (lambda x: (torch.round(x, decimals=2), torch.round(x, decimals=-1)),
                       lambda: (torch.tensor([1.005, 2.675, -0.125, 15.0, 25.0, -35.0, 123.456]),)),
    "int_inputs": (lambda a: (torch.isinf(a), torch.isfinite(a), torch.isnan(a), torch.floor(a), torch.trunc(a),
                              torch.exp(a), torch.sigmoid(a), ~a, torch.logical_not(a), a.abs()), lambda: (_IA,)),
    "bitwise_not_kinds": (lambda a, b: (~a, ~b, ~(a > 0)), lambda: (_IA, _IA.to(torch.uint8))),
    "erfinv_edges": (torch.erfinv, lambda: (torch.tensor([-1.0, -0.999999, -0.9, -0.3, 0.0, 1e-4, 0.5, 0.99, 1.0,
                                                          1.5]),)),
    "atan2_quadrants": (torch.atan2, lambda: (
        torch.tensor([1.0, 1.0, -1.0, -1.0, 0.0, -0.0, 0.0, -0.0, math.inf, -math.inf, math.inf, 2.0, 0.0]),
        torch.tensor([1.0, -1.0, 1.0, -1.0, 0.0, 0.0, -0.0, -0.0, math.inf, -math.inf, -math.inf, 0.0, -3.0]))),
    "clamp_forms": (lambda x, lo, hi: (x.clamp(lo, hi), x.clamp(min=lo), x.clamp(max=0.5), x.clamp(1.0, -1.0),
                                       x.clamp_min(lo), x.clamp_max(hi)),
                    lambda: (_SPECIAL, torch.full((16,), -2.0), torch.linspace(-3, 3, 16))),
    "clamp_int_float_bound": (lambda a: a.clamp(-2.5, 3.5), lambda: (_IA,)),
    "threshold_nan": (lambda x: F.threshold(x, 0.5, -3.0), lambda: (_SPECIAL,)),
    "where_scalars": (lambda m, x: (torch.where(m, x, 0.0), torch.where(m, 1, 2), x.masked_fill(m, -math.inf),
                                    torch.where(m, m, ~m), (m).masked_fill(~m, True)),
                      lambda: (torch.tensor([True, False, True]), torch.tensor([1.0, 2.0, 3.0]))),
    "lerp_tensor_weight": (torch.lerp, lambda: (torch.randn(6), torch.randn(6),
                                                torch.tensor([-0.7, 0.0, 0.3, 0.5, 0.8, 1.2]))),
    "lerp_high_weight": (lambda a, b: torch.lerp(a, b, 0.75), lambda: (torch.randn(6), torch.randn(6))),
    "addcmul_default": (torch.addcmul, lambda: (torch.randn(4), torch.randn(4), torch.randn(4))),
    "prelu_shared_weight": (lambda x, w: (F.prelu(x, w), F.prelu(x, w[:1])),
                            lambda: (torch.randn(2, 3, 2, 2), torch.tensor([0.1, 0.2, 0.3]))),
    "casts": (lambda x: (x.long(), x.int(), x.half(), x.double(), x.to(torch.uint8).to(torch.float32)),
              lambda: (torch.tensor([-2.7, -0.5, 0.5, 2.7, 3.0]),)),
    "logical_any_dtype": (lambda a, b: (torch.logical_and(a, b), torch.logical_xor(a, b), (a > 0) & (b > 0)),
                          lambda: (torch.tensor([0.0, 1.5, -2.0, 0.0]), torch.tensor([1, 0, 3, 0]))),
    # creation and python scalars over run-time sizes (dim 0 of the first input is symbolic)
    "creation_dynamic": (lambda x: (torch.arange(x.size(0)), torch.arange(1, x.size(0), 2, dtype=torch.float32),
                                    torch.arange(0.5, x.size(0), 0.75), torch.linspace(-1.0, 1.0, x.size(0)),
                                    torch.linspace(0, 10, x.size(0), dtype=torch.int64),
                                    torch.eye(x.size(0)), torch.eye(x.size(0), 3, dtype=torch.int64),
                                    torch.zeros((x.size(0), 2), dtype=torch.int32),
                                    torch.ones(x.shape, dtype=torch.bool),
                                    torch.full((2, x.size(0)), x.size(0)), x.new_full((x.size(0),), 2.5),
                                    x.new_zeros(x.size()), torch.full_like(x, 3, dtype=torch.int64),
                                    torch.scalar_tensor(x.size(0))),
                         lambda: (torch.randn(5, 3),), ({0: "n"},)),
    "tensor_of_sizes": (lambda x: (fx_recorded(torch.tensor)([[x.size(0), 2], [3, x.size(0)]]),
                                   fx_recorded(torch.tensor)([x.size(0) / 2, 1.0]), x.new_tensor([x.size(0), 1])),
                        lambda: (torch.randn(5, 3),), ({0: "n"},)),
    "python_scalars": (lambda x: (_floor(x.size(0) / 3), _ceil(x.size(0) / 3), _round(x.size(0) / 2),
                                  x.size(0) // 2, (-x.size(0)) // 3, x.size(0) % 3, -x.size(0) % 3,
                                  _int(x.size(0) / 2), _max(x.size(0), 3), _len(x), x.numel(), x.size(-1),
                                  x.size(0) * 2.5, x.size(0) > 4),
                       lambda: (torch.randn(5, 3),), ({0: "n"},)),
    "getattr_transposes": (lambda x: (x.T, x.mT, x.shape[0], x.data), lambda: (torch.randn(4, 2, 3),),
                           ({0: "n"},)),
}


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("name", list(_SEMANTICS))
def test_onnx_semantics(name, opset):
    fn, inputs, *dyn = _SEMANTICS[name]
    model = _Fn(fn)
    g = bridge.trace(model, inputs(), frontend="fx", dynamic=dyn[0] if dyn else None)
    assert not _missing_lowerings(g), f"ops without an ONNX lowering: {_missing_lowerings(g)}"
    sess = session(_fetchable(bridge.to_onnx(g, None, opset=opset, optimize=False)))
    runs = [inputs()]
    if dyn:  # another size of every symbolic dim
        runs.append(tuple(torch.cat([x, x[:2]]) for x in inputs()))
    with torch.no_grad():
        for xs in runs:
            assert_same(_run_onnx(sess, g, xs), model(*xs), False, f"{name} (opset {opset}, {len(xs[0])} rows)")


def test_every_op_but_opaque_lowers():
    assert [n for n, d in bridge.ops.all_ops().items() if d.onnx is None] == ["opaque"]
