"""Shared test helpers: comparing a model's outputs with bridge's, structure and numbers."""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

RTOL = 1e-5
ATOL = 1e-5  # scaled by max(1, max|ref|) per tensor


def _walk(got: Any, ref: Any, path: str, visit) -> None:
    """Recurse through ``ref``'s structure, requiring ``got`` to have the same one; ``visit(g, r, path)`` at tensors."""
    if isinstance(ref, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            raise AssertionError(f"{path}: expected a tensor, got {type(got).__name__}")
        visit(got, ref, path)
        return
    if dataclasses.is_dataclass(ref) and not isinstance(ref, type):
        if type(got) is not type(ref):
            raise AssertionError(f"{path}: expected {type(ref).__name__}, got {type(got).__name__}")
        for f in dataclasses.fields(ref):
            _walk(getattr(got, f.name), getattr(ref, f.name), f"{path}.{f.name}", visit)
        return
    if isinstance(ref, (tuple, list)):
        # namedtuples / structseqs / torch.return_types must keep their type; plain tuple vs list must match too
        if type(got) is not type(ref):
            raise AssertionError(f"{path}: expected {type(ref).__name__}, got {type(got).__name__}")
        if len(got) != len(ref):
            raise AssertionError(f"{path}: expected {len(ref)} items, got {len(got)}")
        for i, (g, r) in enumerate(zip(got, ref)):
            _walk(g, r, f"{path}[{i}]", visit)
        return
    if isinstance(ref, dict):
        if not isinstance(got, dict) or type(got) is not type(ref):
            raise AssertionError(f"{path}: expected {type(ref).__name__}, got {type(got).__name__}")
        if list(got.keys()) != list(ref.keys()):
            raise AssertionError(f"{path}: keys {list(got.keys())} != {list(ref.keys())}")
        for k in ref:
            _walk(got[k], ref[k], f"{path}[{k!r}]", visit)
        return
    if isinstance(ref, float) and isinstance(got, float) and math.isnan(ref) and math.isnan(got):
        return
    if type(got) is not type(ref) or got != ref:
        raise AssertionError(f"{path}: expected {ref!r} ({type(ref).__name__}), got {got!r} ({type(got).__name__})")


def _tensor_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    if got.numel() == 0:
        return 0.0
    if not (got.is_floating_point() or got.is_complex()):
        return float((got.to(ref.device) != ref).sum().item())
    g, r = got.detach().double().cpu(), ref.detach().double().cpu()
    both_nan = g.isnan() & r.isnan()
    same_inf = g.isinf() & r.isinf() & (g == r)
    diff = (g - r).abs().masked_fill(both_nan | same_inf, 0.0)
    return float(diff.nan_to_num(nan=math.inf).max().item())


def assert_same_outputs(got: Any, ref: Any, *, rtol: float = RTOL, atol: float = ATOL, path: str = "out",
                        scale_floor: float = 1.0) -> None:
    """``got`` has ``ref``'s exact structure (tuple/list/dict/dataclass/namedtuple, keys, python constants) and every
    tensor matches in shape, dtype, device and value: ``|got - ref| <= atol * max(scale_floor, max|ref|) + rtol *
    |ref|`` (``scale_floor=0``: relative to the output's own scale, however small)."""

    def visit(g: torch.Tensor, r: torch.Tensor, p: str) -> None:
        if g.shape != r.shape:
            raise AssertionError(f"{p}: shape {tuple(g.shape)} != {tuple(r.shape)}")
        if g.dtype != r.dtype:
            raise AssertionError(f"{p}: dtype {g.dtype} != {r.dtype}")
        if g.device != r.device:
            raise AssertionError(f"{p}: device {g.device} != {r.device}")
        if g.numel() == 0:
            return
        if not (r.is_floating_point() or r.is_complex()):
            bad = int((g != r).sum().item())
            if bad:
                raise AssertionError(f"{p}: {bad} of {r.numel()} {r.dtype} elements differ")
            return
        finite = r.detach()[torch.isfinite(r.detach())]
        scale = max(scale_floor, float(finite.abs().max().item()) if finite.numel() else scale_floor)
        torch.testing.assert_close(g.detach(), r.detach(), rtol=rtol, atol=atol * scale, equal_nan=True,
                                   msg=lambda m: f"{p}: {m}")

    _walk(got, ref, path, visit)


def max_error(got: Any, ref: Any) -> float:
    """The largest absolute difference over all tensors of two same-structured outputs (0.0 when all equal)."""
    errs: list[float] = []
    _walk(got, ref, "out", lambda g, r, p: errs.append(_tensor_error(g, r)))
    return max(errs, default=0.0)


def same_data_ptr_groups(module: torch.nn.Module) -> list[set[str]]:
    """Groups of parameter/buffer names (size > 1) that share storage in ``module``."""
    by_ptr: dict[int, set[str]] = {}
    for name, t in list(module.named_parameters(remove_duplicate=False)) + \
            list(module.named_buffers(remove_duplicate=False)):
        if t is None or t.numel() == 0:
            continue
        by_ptr.setdefault(t.data_ptr(), set()).add(name)
    return [names for names in by_ptr.values() if len(names) > 1]


def to_device(obj, device):
    """Tensors in a nested tuple/list/dict structure moved to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, tuple):
        return tuple(to_device(o, device) for o in obj)
    if isinstance(obj, list):
        return [to_device(o, device) for o in obj]
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj


class Fn(torch.nn.Module):
    """A module calling ``fn(*inputs)``: the smallest model around a torch expression."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *xs):
        return self.fn(*xs)


def tensor_leaves(out) -> list[torch.Tensor]:
    """The tensors of a (nested) output, in bridge's flattening order (the order of an ONNX file's outputs)."""
    from bridge.ir import structure

    return structure.flatten(out, lambda o: isinstance(o, torch.Tensor))[0]


def import_matches_onnxruntime(proto, x: torch.Tensor, *, atol: float = 1e-5, rtol: float = 1e-5):
    """``bridge.from_onnx(proto)`` run on ``x`` (its one input, named "x") equals onnxruntime on the same file: same
    outputs in order, same shapes, values within tolerance. Returns the imported graph."""
    import numpy as np
    import onnxruntime as ort

    import bridge

    g = bridge.from_onnx(proto)
    g.check()
    got = g.run(x)
    got = list(got) if isinstance(got, (tuple, list)) else [got]
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    want = [torch.from_numpy(np.asarray(w)) for w in sess.run(None, {"x": x.numpy()})]
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert tuple(a.shape) == tuple(b.shape)
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol)
    return g
