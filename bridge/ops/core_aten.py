"""PyTorch's Core ATen opset (the operators torch.export decomposes to, tagged ``torch.Tag.core``) against the
registry: which overloads of the installed torch are canonical ops' aten spellings, which never appear in a graph
bridge traces (with the reason), and which are not mapped yet. docs/ops.md shows it; a test keeps it true.
"""
from __future__ import annotations

from . import registry

# never in a graph bridge traces, so no canonical op is needed
EXCLUDED = {
    **{op: "a gradient: appears only in backward graphs, and bridge traces forward graphs" for op in (
        "aten._adaptive_avg_pool2d_backward.default", "aten.avg_pool2d_backward.default",
        "aten.convolution_backward.default", "aten.embedding_dense_backward.default",
        "aten.max_pool2d_with_indices_backward.default", "aten.native_group_norm_backward.default",
        "aten.native_layer_norm_backward.default")},
    "aten.atan2.out": "an out= variant: torch.export emits the functional overload (atan2.default)",
    "aten.sym_stride.int": "a memory layout query: bridge values have shapes, not strides (every value is "
                           "contiguous in ONNX)",
    "aten.sym_storage_offset.default": "a memory layout query: bridge values have no storage offset",
    "aten.sym_is_contiguous.default": "a memory layout query: every bridge value is contiguous in ONNX",
    "aten.resize_.default": "an in-place storage resize: torch.export functionalizes it away, and a forward that "
                            "resizes a tensor in place changes memory no graph value describes",
}

# not mapped yet (issue 12's work list); a test fails when one of these gets mapped, so the list only shrinks
NOT_YET: dict[str, str] = {}


def core_overloads() -> list[str]:
    """``"aten.name.overload"`` of every Core ATen overload of the installed torch (from the dispatcher's full
    list: ``dir(torch.ops.aten)`` holds only the operators resolved so far)."""
    import torch

    out = set()
    for full in torch._C._dispatch_get_all_op_names():
        if not full.startswith("aten::"):
            continue
        name, _, overload = full[len("aten::"):].partition(".")
        try:
            op = getattr(getattr(torch.ops.aten, name), overload or "default")
        except (AttributeError, RuntimeError):
            continue
        if torch.Tag.core in op.tags:
            out.add(f"aten.{name}.{overload or 'default'}")
    return sorted(out)


def coverage() -> dict[str, list[str]]:
    """The installed torch's core overloads by status: "mapped" (a canonical op's aten spelling), "excluded",
    "not_yet" and "unknown" (none of these: a torch release added it)."""
    registry.get("relu")  # loads every op family
    out: dict[str, list[str]] = {"mapped": [], "excluded": [], "not_yet": [], "unknown": []}
    for op in core_overloads():
        key = ("mapped" if op in registry._BY_ATEN else "excluded" if op in EXCLUDED else
               "not_yet" if op in NOT_YET else "unknown")
        out[key].append(op)
    return out
