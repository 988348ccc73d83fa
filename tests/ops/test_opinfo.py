"""Op consistency against PyTorch's own OpInfo database (``torch.testing._internal.common_methods_invocations.op_db``),
the way torch.onnx tests its exporter.

For every OpInfo whose function or Tensor method bridge claims (maps to a canonical op), the database's own CPU
sample inputs go through every path and are compared with eager PyTorch on the same sample (the oracle):

- ``trace``: ``bridge.trace`` gives a graph of canonical ops (no ``opaque`` node: the claim holds);
- ``run``: ``g.run`` on the sample;
- ``onnx``: ``bridge.to_onnx`` (``onnx.checker`` full check) run in onnxruntime;
- ``import``: ``bridge.from_onnx`` of that file back to a module, run in torch.

Tensors anywhere in the sample (input, args, kwargs, lists of tensors) are graph inputs; everything else is a
constant of the traced call. Outputs must match in structure, shape, dtype and value within ``atol * max(1,
max|ref|) + rtol * |ref|``: the project's ``atol = rtol = 1e-5`` (tests/helpers.py), loosened to the OpInfo's own
``toleranceOverride`` for the dtype on CPU where the database gives one (as torch's test_ops applies them). An
OpInfo whose values are undefined (``empty_like``: uninitialized memory) compares shapes and dtypes only.

What cannot pass is listed, with its reason and the paths it concerns, in ``bridge/ops/opinfo_exclusions.py``
(published in docs/ops.md). A path not listed must pass. The default run checks the first float32 sample of each
OpInfo (about 300 cases); ``-m slow`` checks every float32, int64 and bool sample the OpInfo has (about 12,800),
and there an excluded path that passes on every sample of its dtype fails too (the list only shrinks).
``benchmarks/opinfo.py`` prints the same checks as a table.
"""
from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
import torch

import bridge
from bridge.backends.ort import session
from bridge.ops import opinfo_exclusions
from bridge.ops.catalog import OPINFO_PATHS as PATHS, claimed_opinfos
from tests.helpers import ATOL, RTOL, Fn, assert_same_outputs
from tests.ops.test_registry_onnx import _fetchable

DTYPES = (torch.float32, torch.int64, torch.bool)


@functools.cache
def op_db():
    """torch's OpInfo database (needs ``expecttest``; imported once, it takes a few seconds)."""
    from torch.testing._internal.common_methods_invocations import op_db as db

    return db


def opinfo_name(oi) -> str:
    """``name`` or ``name.variant``: the key of the exclusion list and the test id."""
    return oi.name + (f".{oi.variant_test_name}" if oi.variant_test_name else "")


def claimed() -> list:
    """The OpInfos whose function or Tensor method maps to a canonical op (as docs/ops.md counts them)."""
    return claimed_opinfos(op_db())


def samples(oi, dtype: torch.dtype, limit: int | None = None) -> list:
    """The OpInfo's CPU samples for ``dtype`` (none where it does not support the dtype), at most ``limit``."""
    if dtype not in oi.supported_dtypes("cpu"):
        return []
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for s in oi.sample_inputs("cpu", dtype, requires_grad=False):
            if limit is not None and len(out) >= limit:
                break
            out.append(s)
    return out


def tolerance(oi, dtype: torch.dtype) -> tuple[float, float]:
    """(atol, rtol): the project's 1e-5 convention, loosened to the loosest ``toleranceOverride`` (or
    ``precisionOverride``: an atol) the OpInfo gives for ``dtype`` on CPU, in any of its tests: the database's own
    statement of how closely two correct kernels of the op agree."""
    from torch.testing._internal.common_device_type import precisionOverride, tol, toleranceOverride
    from torch.testing._internal.opinfo.core import DecorateInfo

    atol, rtol = ATOL, RTOL
    for info in getattr(oi, "decorators", ()) or ():
        if isinstance(info, DecorateInfo):
            devices = info.device_type if isinstance(info.device_type, (list, tuple)) else (info.device_type,)
            if not ({None, "cpu"} & set(devices)) or (info.dtypes is not None and dtype not in info.dtypes):
                continue
            decorators = info.decorators
        else:
            decorators = [info]
        for dec in decorators:
            t = dec.d.get(dtype) if isinstance(dec, (toleranceOverride, precisionOverride)) else None
            if isinstance(t, tol):
                atol, rtol = max(atol, t.atol), max(rtol, t.rtol)
            elif t is not None:  # precisionOverride: an absolute tolerance
                atol = max(atol, t)
    return atol, rtol


def _tensors(o) -> list[torch.Tensor]:
    return [t for t in torch.utils._pytree.tree_flatten(o)[0] if isinstance(t, torch.Tensor)]


def _reason(e: BaseException) -> str:
    """The error's type and first two lines (bridge's UnsupportedOpError names the node and its reason there)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()][:2]
    return f"{type(e).__name__}: {' / '.join(lines)[:300]}"


def check(oi, sample) -> dict[str, str]:
    """Outcome of one sample on each path: "ok", or why not (the first line of the error, or the mismatch)."""
    leaves, spec = torch.utils._pytree.tree_flatten((sample.input, sample.args, sample.kwargs))
    where = [i for i, a in enumerate(leaves) if isinstance(a, torch.Tensor)]
    inputs = tuple(leaves[i] for i in where)
    file_inputs = [torch.view_as_real(x.resolve_conj()) if x.is_complex() else x for x in inputs]

    def call(*xs):
        a = list(leaves)
        for i, x in zip(where, xs):
            a[i] = x
        first, args, kwargs = torch.utils._pytree.tree_unflatten(a, spec)
        return oi.op(first, *args, **kwargs)

    model = Fn(call)
    with torch.no_grad():
        ref = model(*inputs)
    atol, rtol = tolerance(oi, inputs[0].dtype if inputs else torch.float32)
    values = oi.name not in opinfo_exclusions.UNDEFINED_VALUES

    def compare(got, file: bool = False) -> str:
        want = _tensors(ref)
        got = _tensors(got)
        if file:  # a complex tensor is float [..., 2] (real, imaginary) in an ONNX file
            # and bfloat16 comes back as float32 (exactly: see _fetchable)
            got = [torch.view_as_complex(a.contiguous()) if b.is_complex() and not a.is_complex()
                   else a.to(b.dtype) if b.dtype == torch.bfloat16 else a for a, b in zip(got, want)]
        if len(got) != len(want):
            return f"mismatch: {len(got)} output tensors, expected {len(want)}"
        for k, (a, b) in enumerate(zip(got, want)):
            if not values:
                if (a.shape, a.dtype) != (b.shape, b.dtype):
                    return f"mismatch: output {k} is {a.dtype}{tuple(a.shape)}, expected {b.dtype}{tuple(b.shape)}"
                continue
            try:
                assert_same_outputs(a, b, atol=atol, rtol=rtol, path=f"output {k}")
            except AssertionError as e:
                return f"mismatch: {' '.join(str(e).split())[:200]}"
        return "ok"

    out = dict.fromkeys(PATHS, "not reached")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            g = bridge.trace(model, inputs)
        except Exception as e:  # noqa: BLE001 - every failure is an outcome
            out["trace"] = _reason(e)
            return out
        opaque = sorted({str(n.args.get("target")) for n in g.opaque_nodes()})
        out["trace"] = f"opaque: {', '.join(opaque)}" if opaque else "ok"
        try:
            out["run"] = compare(g.run(*inputs))
        except Exception as e:  # noqa: BLE001
            out["run"] = _reason(e)
        try:
            proto = bridge.to_onnx(g)
            sess = session(_fetchable(proto))
            got = sess.run(None, {i.name: x.numpy() for i, x in zip(sess.get_inputs(), file_inputs)})
            out["onnx"] = compare([torch.from_numpy(np.asarray(a)) for a in got], file=True)
        except Exception as e:  # noqa: BLE001
            out["onnx"] = _reason(e)
            return out
        try:
            back = bridge.from_onnx(proto).to_module()
            out["import"] = compare(back(*file_inputs), file=True)
        except Exception as e:  # noqa: BLE001
            out["import"] = _reason(e)
    return out


def exclusion_key(name: str, dtype: torch.dtype) -> str:
    """The key of ``opinfo_exclusions.EXCLUDED`` for the OpInfo's samples of ``dtype``: the name for float32,
    ``name:int64`` / ``name:bool`` for the others."""
    return name if dtype == torch.float32 else f"{name}:{str(dtype).removeprefix('torch.')}"


def verdict(outcomes: list[tuple[str, str, dict[str, str]]], stale: bool) -> list[str]:
    """What is wrong with outcomes ``(exclusion key, sample label, {path: outcome})`` given the exclusion list: a
    failure on a path the key does not exclude and, with ``stale``, an excluded path that passed on every sample
    of its key (the entry is stale: drop it)."""
    problems = []
    for key, label, res in outcomes:
        excluded = opinfo_exclusions.EXCLUDED.get(key, {})
        problems += [f"{label} {path}: {r}" for path, r in res.items()
                     if r not in ("ok", "not reached") and path not in excluded]
    for key in dict.fromkeys(k for k, _, _ in outcomes) if stale else ():
        for path, why in opinfo_exclusions.EXCLUDED.get(key, {}).items():
            if all(res[path] == "ok" for k, _, res in outcomes if k == key):
                problems.append(f"{key} {path} is excluded ({why}) but passes on every sample: drop the entry")
    return problems


@functools.cache
def _by_name() -> dict:
    return {opinfo_name(oi): oi for oi in claimed()}


def _ids() -> list[str]:
    try:
        return list(_by_name())
    except ImportError:  # no expecttest: nothing to parametrize over, test_op_db_loads says why
        return []


def test_op_db_loads():
    """torch's OpInfo database imports (it needs ``expecttest``) and bridge claims a good part of it."""
    assert len(_by_name()) > 250


def test_exclusions_name_claimed_opinfos():
    """Every exclusion names an OpInfo bridge claims, a dtype the test checks and a path it has: a misspelt or
    vanished entry would exclude nothing and never turn stale."""
    dtypes = {exclusion_key("", d) for d in DTYPES}
    for key, paths in opinfo_exclusions.EXCLUDED.items():
        name, _, dt = key.partition(":")
        assert name in _by_name(), f"{key}: no claimed OpInfo of that name"
        assert exclusion_key("", getattr(torch, dt or "float32")) in dtypes, f"{key}: not a checked dtype"
        assert set(paths) <= set(PATHS) and all(paths.values()), f"{key}: paths {paths}"
    assert set(opinfo_exclusions.UNDEFINED_VALUES) <= {oi.name for oi in _by_name().values()}


@pytest.mark.parametrize("name", _ids())
def test_opinfo_first_sample(name):
    """The first float32 sample of the OpInfo through trace, run, ONNX and import: a path not excluded passes.
    (Staleness of an exclusion needs every sample: the slow test checks it.)"""
    first = samples(_by_name()[name], torch.float32, limit=1)
    if not first:
        pytest.skip(f"{name} has no float32 CPU sample")
    problems = verdict([(name, "float32 sample 0", check(_by_name()[name], first[0]))], stale=False)
    assert not problems, f"{name}:\n" + "\n".join(problems)


@pytest.mark.slow
@pytest.mark.parametrize("name", _ids())
def test_opinfo_all_samples(name):
    """Every float32, int64 and bool sample of the OpInfo through every path: a path not excluded passes on each,
    and each excluded path fails on at least one sample of its dtype."""
    oi = _by_name()[name]
    outcomes = [(exclusion_key(name, dtype), f"{str(dtype).removeprefix('torch.')} sample {k}", check(oi, s))
                for dtype in DTYPES for k, s in enumerate(samples(oi, dtype))]
    if not outcomes:
        pytest.skip(f"{name} has no CPU sample of {', '.join(map(str, DTYPES))}")
    problems = verdict(outcomes, stale=True)
    assert not problems, f"{name}:\n" + "\n".join(problems)
