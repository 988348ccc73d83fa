"""ops.shapes' fast path against the definition it stands in for: every fast result equals the op's impl run in
torch's fake mode (sizes, strides of the dims longer than 1, dtype, device, which arguments' storage it shares), on
generated calls (broadcasting, type promotion, python scalars, 0-d and empty tensors, channels-last and transposed
operands), on every call the zoo's ONNX imports make, and (slow) on onnx's node test cases."""
from __future__ import annotations

import contextlib
import itertools
import random

import pytest
import torch

import bridge
from bridge import zoo
from bridge.frontends import common
from bridge.ops import registry, shapes
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode


def _storage(t):
    return t.untyped_storage()._cdata


def _leaves(x):
    return [x] if isinstance(x, torch.Tensor) else [t for t in x if isinstance(t, torch.Tensor)] \
        if type(x) in (tuple, list) else []


def _layout(t, args_storages):
    strides = tuple(s for s, n in zip(t.stride(), t.shape) if n > 1) if t.numel() else ()
    return (tuple(t.shape), strides, t.dtype, tuple(_storage(t) == s for s in args_storages))


def _heavy(mode, t):
    """An argument as fake dispatch takes it (the builder's ``example_of``): light ones made fakes of ``mode``."""
    if type(t) is FakeTensor:
        return t
    if t.device.type == "meta":
        return shapes.fake_of_light(mode, t)
    return mode.from_tensor(t, static_shapes=True)


def compare(op: str, args: dict, mode) -> bool:
    """Is the fast result of ``op`` on ``args`` (fakes of ``mode``, plain meta tensors, real constants) what fake
    dispatch gives? False where the fast path declines; AssertionError where they differ. Sharing storage with an
    argument counts for fakes and meta tensors (a real constant reaches a meta kernel as a meta copy)."""
    opdef = registry.get(op)
    fast = shapes.fast_result(opdef, args, mode)
    if fast is None:
        return False
    heavy = {k: _heavy(mode, v) if isinstance(v, torch.Tensor) else
             type(v)(_heavy(mode, x) if isinstance(x, torch.Tensor) else x for x in v) if type(v) in (list, tuple)
             else v for k, v in args.items()}
    light = [t for t in common.iter_tensors(list(args.values()))]
    shared = [type(t) is FakeTensor or t.device.type == "meta" for t in light]
    with mode, torch.no_grad():
        ref = opdef.impl(**heavy)
    got, want = _leaves(fast), _leaves(ref)
    same_kind = isinstance(ref, torch.Tensor) if isinstance(fast, torch.Tensor) else type(fast) is type(ref)
    assert same_kind and len(got) == len(want), (op, fast, ref)
    for g, w in zip(got, want):
        gl = _layout(g, [_storage(t) for t in light])
        wl = _layout(w, [_storage(t) for t in common.iter_tensors(list(heavy.values()))])
        assert gl[:3] == wl[:3] and [a for a, keep in zip(gl[3], shared) if keep] == \
            [b for b, keep in zip(wl[3], shared) if keep], (op, _describe(args), gl, wl)
    return True


def _describe(args):
    def one(v):
        if isinstance(v, torch.Tensor):
            return f"{v.dtype}{list(v.shape)}/{v.stride()}"
        if type(v) in (list, tuple):
            return type(v)(one(x) for x in v)
        return v
    return {k: one(v) for k, v in args.items()}


def _agrees(op: str, args: dict, mode, refused=(RuntimeError, TypeError, ValueError, IndexError,
                                              NotImplementedError)) -> bool:
    """``compare``, where torch refusing the call (one of ``refused``) means the fast path must have declined."""
    try:
        return compare(op, args, mode)
    except refused as e:
        assert shapes.fast_result(registry.get(op), args, mode) is None, (op, _describe(args), e)
        return False


@pytest.fixture
def mode():
    return FakeTensorMode()


_DTYPES = (torch.bool, torch.int32, torch.int64, torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _tensor(mode, shape, dtype=torch.float32, layout="contiguous"):
    with mode:
        if layout == "transposed" and len(shape) >= 2:
            return torch.empty(*shape[:-2], shape[-1], shape[-2], dtype=dtype).transpose(-1, -2)
        if layout == "channels_last" and len(shape) == 4:
            return torch.empty(shape, dtype=dtype).to(memory_format=torch.channels_last)
        return torch.empty(shape, dtype=dtype)


_SHAPES = [(), (1,), (5,), (0,), (3, 1), (1, 4), (3, 4), (2, 3, 4), (2, 1, 4), (1, 3, 1), (2, 3, 1, 1), (2, 1, 4, 4),
           (2, 3, 4, 4), (1, 1, 1, 1), (2, 0, 3)]


def _operand(mode, rng, shape):
    kind = rng.random()
    if kind < 0.15:
        return rng.choice([2, -1, 0.5, True, 3.0])
    dtype = rng.choice(_DTYPES)
    layout = rng.choice(["contiguous"] * 4 + ["transposed", "channels_last"])
    return _tensor(mode, shape, dtype, layout)


def _broadcastable(rng):
    a = rng.choice(_SHAPES)
    b = list(a[rng.randrange(len(a) + 1):]) if a else []
    b = [1 if rng.random() < 0.3 else d for d in b]
    return a, tuple(b)


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "pow", "remainder", "fmod", "maximum", "minimum", "eq",
                                "lt", "ge", "logical_and", "logical_or"])
def test_binary_broadcasting_and_promotion(mode, op):
    rng = random.Random(op)
    hits = 0
    for _ in range(300):
        sa, sb = _broadcastable(rng)
        if rng.random() < 0.5:
            sa, sb = sb, sa
        x, y = _operand(mode, rng, sa), _operand(mode, rng, sb)
        if not isinstance(x, torch.Tensor) and not isinstance(y, torch.Tensor):
            continue
        args = {"input": x, "other": y}
        if op in ("add", "sub"):
            args["alpha"] = rng.choice([1, 1, 2, 0.5])
        if op == "div":
            args["rounding_mode"] = rng.choice([None, None, "floor", "trunc"])
        hits += _agrees(op, args, mode)
    assert hits >= 60, hits


def test_where(mode):
    rng = random.Random(0)
    hits = 0
    for _ in range(300):
        sa, sb = _broadcastable(rng)
        c = _tensor(mode, rng.choice([sa, sb, ()]), torch.bool, rng.choice(["contiguous", "transposed"]))
        args = {"condition": c, "input": _operand(mode, rng, sa), "other": _operand(mode, rng, sb)}
        hits += _agrees("where", args, mode)
    assert hits >= 60, hits


@pytest.mark.parametrize("op", shapes._UNARY_SAME + ("gelu", "leaky_relu", "elu", "softplus", "hardtanh", "clamp"))
def test_unary_layouts(mode, op):
    hits = 0
    for shape, dtype, layout in itertools.product(_SHAPES, _DTYPES, ["contiguous", "transposed", "channels_last"]):
        args = {"input": _tensor(mode, shape, dtype, layout)}
        if op == "clamp":
            args.update(min=-1.0, max=None)
        hits += _agrees(op, registry.get(op).bind((), args), mode)
    assert hits >= 20, hits


def test_norms_linear_reductions_cat_pooling(mode):
    cases = []
    for shape, layout in itertools.product([(2, 3, 4, 4), (2, 3, 1, 1), (2, 3), (2, 3, 5)],
                                           ["contiguous", "channels_last", "transposed"]):
        x = _tensor(mode, shape, torch.float32, layout)
        c = shape[1]
        stats = [_tensor(mode, (c,)) for _ in range(4)]
        for training in (False, True):
            cases.append(("batch_norm", dict(input=x, running_mean=stats[0], running_var=stats[1], weight=stats[2],
                                             bias=stats[3], training=training)))
        cases.append(("layer_norm", dict(input=x, normalized_shape=shape[-1:], weight=_tensor(mode, shape[-1:]))))
        cases.append(("layer_norm", dict(input=x, normalized_shape=list(shape[-2:]))))
        cases.append(("linear", dict(input=x, weight=_tensor(mode, (7, shape[-1])), bias=_tensor(mode, (7,)))))
        cases.append(("linear", dict(input=x, weight=_tensor(mode, (7, shape[-1])))))
        cases.append(("instance_norm", dict(input=x, weight=stats[2], bias=stats[3])))
        for other in ((shape[-1], 5), (shape[0], shape[-1], 5), (1, shape[-1], 5), (5, shape[-1])):
            cases.append(("matmul", dict(input=x, other=_tensor(mode, other, layout=layout))))
        for op, dim, keepdim in itertools.product(["mean", "sum", "amax", "amin"], [None, -1, 1, (0, -1), []],
                                                  [False, True]):
            cases.append((op, dict(input=x, dim=dim, keepdim=keepdim)))
        cases.append(("cat", dict(tensors=[x, x], dim=1)))
        cases.append(("cat", dict(tensors=[x, _tensor(mode, shape)], dim=-1)))
        if len(shape) == 4:
            for size in (1, (2, 3), (None, 2)):
                cases.append(("adaptive_avg_pool2d", dict(input=x, output_size=size)))
    cases.append(("amax", dict(input=_tensor(mode, (2, 0)), dim=1, keepdim=False)))  # torch raises: declined
    hits = 0
    for op, args in cases:
        hits += _agrees(op, registry.get(op).bind((), args), mode)
    assert hits >= 100, hits


@pytest.mark.parametrize("n", [1, 2, 3])
def test_pooling_sizes(mode, n):
    """Max and average pooling of every kernel, stride, padding, dilation and ceil_mode on sizes around them: the
    rule's output size is torch's, the calls torch refuses are declined."""
    rng = random.Random(n)
    hits = 0
    for _ in range(150):
        size = [rng.randrange(1, 12) for _ in range(n)]
        layout = rng.choice(["contiguous"] * 4 + ["channels_last"]) if n == 2 else "contiguous"
        x = _tensor(mode, (2, 3, *size), layout=layout)
        k = [rng.randrange(1, 5) for _ in range(n)]
        args = dict(input=x, kernel_size=k, stride=rng.choice([None, [rng.randrange(1, 4) for _ in range(n)]]),
                    padding=[rng.randrange(0, 3) for _ in range(n)], ceil_mode=rng.random() < 0.5)
        for op in (f"max_pool{n}d", f"avg_pool{n}d"):
            a = dict(args, dilation=rng.choice([1, 2])) if op.startswith("max") else dict(args)
            hits += _agrees(op, registry.get(op).bind((), a), mode)
    assert hits >= 60, hits


def test_meta_ops_views_and_kernels(mode):
    x = _tensor(mode, (2, 3, 8, 8))
    t = _tensor(mode, (2, 3, 8, 8), layout="transposed")
    cl = _tensor(mode, (2, 3, 8, 8), layout="channels_last")
    w = _tensor(mode, (4, 3, 3, 3))
    with mode:
        idx = torch.empty(5, dtype=torch.int64)
    cases = [("reshape", dict(input=x, shape=(2, -1))), ("reshape", dict(input=t, shape=(2, -1))),
             ("permute", dict(input=x, dims=(0, 2, 3, 1))), ("transpose", dict(input=t, dim0=1, dim1=2)),
             ("flatten", dict(input=cl, start_dim=1)), ("unsqueeze", dict(input=x, dim=-1)),
             ("squeeze", dict(input=_tensor(mode, (2, 1, 3)), dim=1)), ("select", dict(input=x, dim=1, index=-1)),
             ("slice", dict(input=x, dim=2, start=1, end=None, step=2)),
             ("split", dict(input=x, split_size_or_sections=[1, 2], dim=1)),
             ("expand", dict(input=_tensor(mode, (2, 1, 8, 8)), size=(2, 3, 8, 8))),
             ("conv", dict(input=x, weight=w, bias=None, stride=1, padding=1)), ("conv", dict(input=cl, weight=w)),
             ("max_pool2d", dict(input=cl, kernel_size=2)), ("avg_pool2d", dict(input=x, kernel_size=3, stride=2,
                                                                                 ceil_mode=True)),
             ("pad", dict(input=x, pad=(1, 1, 2, 0))), ("softmax", dict(input=t, dim=-1)),
             ("index_select", dict(input=x, dim=2, index=idx)),
             ("conv", dict(input=x, weight=_tensor(mode, (5, 3, 1, 1)), bias=_tensor(mode, (5,)))),
             ("conv", dict(input=x, weight=_tensor(mode, (6, 1, 3, 3)), groups=3, stride=2, dilation=2)),
             ("conv", dict(input=_tensor(mode, (2, 3, 1, 1)), weight=_tensor(mode, (4, 3, 1, 1)))),
             ("conv", dict(input=_tensor(mode, (2, 3, 1, 1)), weight=_tensor(mode, (4, 3, 3, 3)), padding=1)),
             ("conv", dict(input=_tensor(mode, (2, 3, 1, 1)), weight=_tensor(mode, (4, 3, 1, 1)), padding=1)),
             ("conv", dict(input=_tensor(mode, (2, 3, 9)), weight=_tensor(mode, (4, 3, 3)), padding=[2])),
             ("conv", dict(input=_tensor(mode, (1, 2, 4, 5, 6)), weight=_tensor(mode, (3, 2, 1, 2, 3)),
                           stride=[1, 2, 1], padding=(0, 1, 2))),
             ("einsum", dict(equation="bchw,bchv->bcwv", operands=[x, t])),
             ("to", dict(input=x, dtype=torch.float64)), ("to", dict(input=x, dtype=torch.float32)),
             ("embedding", dict(input=idx, weight=_tensor(mode, (10, 4))))]
    hits = 0
    for op, args in cases:
        hits += compare(op, registry.get(op).bind((), args), mode)
    # declined: a convolution, pooling and softmax of non-contiguous inputs, a convolution of a (2, 3, 1, 1) input
    # (contiguous and channels-last at once: torch picks the result's layout by the device) to a size over 1
    assert hits == len(cases) - 4


def test_declines_what_it_cannot_say(mode):
    x = _tensor(mode, (2, 3))
    needs_grad = _tensor(mode, (2, 3)).requires_grad_(True)
    other_mode = _tensor(FakeTensorMode(), (2, 3))
    add = registry.get("add")
    assert shapes.fast_result(add, {"input": x, "other": needs_grad, "alpha": 1}, mode) is None  # grad mode is on
    with torch.no_grad():
        assert shapes.fast_result(add, {"input": x, "other": needs_grad, "alpha": 1}, mode) is not None
    assert shapes.fast_result(add, {"input": x, "other": other_mode, "alpha": 1}, mode) is None
    assert shapes.fast_result(add, {"input": x, "other": torch.zeros(2, 3, dtype=torch.int64).to_sparse(),
                                    "alpha": 1}, mode) is None  # not strided
    nz = registry.get("nonzero")
    assert nz is None or nz.shape is None  # data-dependent sizes stay with fake dispatch


def test_symbolic_sizes_stay_symbolic():
    """Rules take sizes that are the ShapeEnv's symbols and keep them, adding no guard; kernels run on meta
    storage take static sizes only (a C++ kernel would read the symbol as its number and specialize it)."""
    from torch.fx.experimental.symbolic_shapes import DimDynamic, ShapeEnv, StatelessSymbolicContext

    env = ShapeEnv(specialize_zero_one=False, duck_shape=False)
    mode = FakeTensorMode(shape_env=env, allow_non_fake_inputs=True)
    ctx = StatelessSymbolicContext(dynamic_sizes=[DimDynamic.DYNAMIC, DimDynamic.DYNAMIC, DimDynamic.STATIC])
    x = mode.from_tensor(torch.empty(2, 5, 16), symbolic_context=ctx)
    b, w = (mode.from_tensor(torch.empty(s), static_shapes=True) for s in ((16,), (8, 16)))
    with torch.no_grad():
        calls = [("add", dict(input=x, other=b)), ("relu", dict(input=x)), ("mul", dict(input=x, other=x)),
                 ("layer_norm", dict(input=x, normalized_shape=[16], weight=b, bias=b)),
                 ("linear", dict(input=x, weight=w, bias=None)), ("mean", dict(input=x, dim=-1, keepdim=True)),
                 ("cat", dict(tensors=[x, x], dim=-1)),
                 ("where", dict(condition=_tensor(mode, (1, 1, 16), torch.bool), input=x, other=0.0))]
        calls = [(op, registry.get(op).bind((), args)) for op, args in calls]
        guards = len(env.guards)
        for op, args in calls:
            assert shapes.fast_result(registry.get(op), args, mode) is not None, op
        assert len(env.guards) == guards and not env.replacements
        for op, args in calls:
            assert compare(op, args, mode), op
        assert shapes.fast_result(registry.get("add"), {"input": x, "other": _tensor(mode, (3, 1, 16)), "alpha": 1},
                                  mode) is None  # a symbol against a number: only a guard would say
        for op, args in [("permute", dict(input=x, dims=(1, 0, 2))),
                         ("reshape", dict(input=w, shape=[x.shape[1], -1]))]:
            assert shapes.fast_result(registry.get(op), registry.get(op).bind((), args), mode) is None, op
    assert not env.replacements
    fast = shapes.fast_result(registry.get("linear"), registry.get("linear").bind((), dict(input=x, weight=w)), mode)
    assert [str(d) for d in fast.shape] == [str(x.shape[0]), str(x.shape[1]), "8"]


@contextlib.contextmanager
def _every_fast_result_checked():
    """Within: each fast result the import builds on is compared with fake dispatch first."""
    fast, seen = common.fast_result, []

    def checked(opdef, args, mode):
        out = fast(opdef, args, mode)
        if out is not None:
            compare(opdef.name, args, mode)
            seen.append(opdef.name)
        return out

    common.fast_result = checked
    try:
        yield seen
    finally:
        common.fast_result = fast


def test_zoo_imports_use_the_fast_path_as_fake_dispatch(tmp_path):
    """Every fast result of importing bridge's export of every zoo model equals fake dispatch, and the module
    imported with the fast path gives the original model's numbers on fresh inputs."""
    with _every_fast_result_checked() as seen:
        for e, dynamic in [(e, d) for e in zoo.entries(exclude_tags=("slow",))
                           for d in [None] + ([e.dynamic] if e.dynamic else [])]:
            args, kwargs = e.make_inputs(2)
            model = e.make_model().eval()
            path = str(tmp_path / f"{e.name}.onnx")
            bridge.to_onnx(model, path, args=tuple(args), kwargs=kwargs, dynamic=dynamic)
            module = bridge.from_onnx(path).to_module()
            fresh, fresh_kw = e.make_inputs(3 if dynamic else 2)
            torch.manual_seed(1)  # other values than the export's example
            fresh = [torch.randn_like(a) if a.is_floating_point() else a for a in fresh]
            with torch.no_grad():
                want, got = model(*fresh, **fresh_kw), module(*fresh, **fresh_kw)
            for w, g in zip(_flat(want), _flat(got)):
                torch.testing.assert_close(g, w, atol=1e-5 * max(1.0, float(w.abs().max()) if w.numel() else 1.0),
                                           rtol=1e-4)
    assert len(seen) > 1000 and {"conv", "add", "reshape", "linear", "matmul", "relu"} <= set(seen)


def _flat(x):
    from tests.helpers import tensor_leaves

    return tensor_leaves(x)


@pytest.mark.slow
def test_onnx_node_cases_use_the_fast_path_as_fake_dispatch():
    from tests.onnx_conformance import node_cases

    with _every_fast_result_checked() as seen:
        for case in node_cases():
            try:
                bridge.from_onnx(case.model)
            except bridge.errors.BridgeError:
                pass  # refused imports are the conformance test's business
    assert len(seen) > 1000
