"""What PyTorch's OpInfo consistency test (tests/ops/test_opinfo.py) does not expect to pass, and why.

``EXCLUDED`` maps an OpInfo of ``torch.testing._internal.common_methods_invocations.op_db`` (``name`` or
``name.variant``; ``:int64`` / ``:bool`` appended for its samples of that dtype, float32 otherwise) to the paths
that fail on some of its samples (``trace``, ``run``, ``onnx``, ``import``), each with the reason: a limit of ONNX,
onnxruntime or torch itself, or, for a bridge gap, what fixing it needs. A path after a failing one is not reached
and needs no entry. The slow test fails when an excluded path passes on every sample of its dtype (the list only
shrinks), and every test fails when a path not excluded fails. ``UNDEFINED_VALUES``: OpInfos whose output values
torch leaves undefined; they compare shapes and dtypes only. docs/ops.md publishes both
(``python -m bridge.ops.catalog``).
"""
from __future__ import annotations

_NO_INT_CONV = ("ONNX {op} is defined for floating-point tensors only (ConvInteger/QLinear* are 8-bit "
                "quantized ops, not torch's integer arithmetic)")
_TIES = ("the order of equal elements is unspecified (torch's sort is not stable by default): the indices of ties "
         "differ between kernels while the values agree")
_STORAGE = ("the sample's input is a view into a larger tensor and as_strided reads its storage outside the view: "
            "an ONNX tensor has only its own elements")
_EMPTY_RESHAPE = ("an empty input (a 0 dim) reshaped with 0 (copy) and -1: onnxruntime cannot infer -1 there; "
                  "fixing needs the lowering to write the static sizes")
_SCATTER_0D = ("0-d operands: onnxruntime's ScatterElements needs rank >= 1; fixing needs the lowering to scatter "
               "the (1,)-reshaped operands and reshape back")
_SCATTER_BOOL = "scatter_reduce of bools: ONNX ScatterElements reductions have no bool type"
_TENSOR_SPLIT = ("tensor_split with a tensor of indices: torch reads the indices as python ints (the output shapes "
                 "depend on them), which fails on the fake tensors tracing uses; fixing needs a split with "
                 "data-dependent sizes")
_SCATTER_REDUCE_ARG = ("scatter(..., reduce='add'/'multiply') (deprecated in torch) maps to no canonical op: an "
                       "opaque node; fixing needs the spelling mapped to scatter_reduce (sum / prod)")
_TENSOR_UNFOLD_0D = ("Tensor.unfold of a 0-d tensor (a (1,)-shaped window of the value): fixing needs the lowering "
                     "to unsqueeze the 0-d input")
_CIRCULAR = ("onnxruntime's Pad refuses mode 'wrap' on these inputs (an empty batch: 'Unexpected mode of 3'); "
             "fixing needs circular padding lowered as Slice + Concat")
_REPLICATE_NEG = ("replicate padding with negative pads (a crop): onnxruntime's Pad refuses mode 'edge' where a dim "
                  "is cropped; fixing needs the crop as a Slice before an edge Pad of the positive pads")

EXCLUDED: dict[str, dict[str, str]] = {
    **{f"argsort{d}": {"onnx": _TIES, "import": _TIES} for d in (":bool",)},
    **{f"sort{d}": {"onnx": _TIES, "import": _TIES} for d in (":bool",)},
    "topk:int64": {"onnx": _TIES, "import": _TIES},  # the import keeps ONNX's order: lower index first
    **{f"as_strided.partial_views{d}": {"onnx": _STORAGE, "import": _STORAGE} for d in ("", ":int64", ":bool")},
    **{f"tensor_split{d}": {"trace": _TENSOR_SPLIT} for d in ("", ":int64", ":bool")},
    **{f"scatter{d}": {"trace": _SCATTER_REDUCE_ARG, "onnx": _SCATTER_REDUCE_ARG} for d in ("", ":int64", ":bool")},
    **{f"scatter_add{d}": {"onnx": _SCATTER_0D} for d in ("", ":int64", ":bool")},
    **{f"scatter_reduce.{r}{d}": {"onnx": _SCATTER_0D} for r in ("amax", "amin", "mean", "prod", "sum")
       for d in ("", ":int64")},
    **{f"scatter_reduce.{r}:bool": {"onnx": _SCATTER_BOOL} for r in ("amax", "amin", "prod", "sum")},
    **{f"roll{d}": {"onnx": _EMPTY_RESHAPE} for d in ("", ":int64", ":bool")},
    **{f"nn.functional.pixel_unshuffle{d}": {"onnx": _EMPTY_RESHAPE} for d in ("", ":int64", ":bool")},
    **{f"unfold{d}": {"onnx": _TENSOR_UNFOLD_0D} for d in ("", ":int64", ":bool")},
    **{f"diff{d}": {"onnx": "diff with both prepend= and append=: the lowering's output shape disagrees with ONNX "
                            "shape inference (8 vs 5 rows); fixing needs the lowering to concatenate prepend, input "
                            "and append before differencing"} for d in ("", ":int64", ":bool")},
    **{f"nn.functional.pad.circular{d}": {"onnx": _CIRCULAR} for d in ("", ":int64")},
    **{f"nn.functional.pad.replicate_negative{d}": {"onnx": _REPLICATE_NEG} for d in ("", ":int64")},
    **{f"nn.functional.conv{n}d:int64": {"onnx": _NO_INT_CONV.format(op="Conv")} for n in (1, 2, 3)},
    **{f"nn.functional.conv_transpose{n}d:int64": {"onnx": _NO_INT_CONV.format(op="ConvTranspose")}
       for n in (1, 2, 3)},
    **{f"nn.functional.avg_pool{n}d:int64": {"onnx": _NO_INT_CONV.format(op="AveragePool")} for n in (1, 2, 3)},
    "nn.functional.local_response_norm:int64": {"onnx": _NO_INT_CONV.format(op="AveragePool (and LRN)")},
    **{f"nn.functional.max_pool{n}d:int64": {"onnx": "ONNX MaxPool has no int64 type (float and 8-bit only)"}
       for n in (2, 3)},
    "nn.functional.unfold:bool": {"onnx": "unfold is lowered as a Conv with one-hot kernels, and ONNX Conv takes "
                                          "floating point only"},
    **{f"nn.functional.adaptive_max_pool{n}d": {
        "onnx": "return_indices where the output size does not divide the input: the windows differ in size and "
                "ONNX MaxPool has one; fixing needs per-window ReduceMax/ArgMax"} for n in (1, 2, 3)},
    **{f"nn.functional.max_pool{n}d": {
        "onnx": "dilated ceil-mode pooling with return_indices whose last window overhangs the input by a kernel "
                "size or more: ONNX MaxPool refuses pads of a kernel size, and an explicit -inf pad would shift the "
                "indices; fixing needs the indices recomputed for the padded input"} for n in (2, 3)},
    "nn.functional.batch_norm": {"onnx": "a 1-d empty input (0,) has no channel dim to normalize over: fixing "
                                         "needs the lowering to handle rank-1 input"},
    "nn.functional.pairwise_distance:int64": {"onnx": "int64 inputs: the lowering adds the float eps to the int64 "
                                                      "difference; fixing needs the difference cast to float first"},
    "nn.functional.one_hot:int64": {
        "trace": "one_hot without num_classes: the class count is the input's maximum + 1, a size that depends on "
                 "the values; fixing needs it traced as a data-dependent size (ONNX OneHot takes depth at run time)",
        "onnx": "a 0-d input: ONNX OneHot needs rank >= 1; fixing needs the lowering to unsqueeze and squeeze",
        "import": "OneHot has no importer yet; fixing needs one mapping it to one_hot (depth, values, axis)"},
    "norm.nuc": {"onnx": "the nuclear norm needs singular values: ONNX has no SVD"},
    "__rpow__:int64": {"onnx": "0 to a negative int64 power: torch's integer pow gives 0, onnxruntime's Pow computes "
                               "inf in double and casts it to INT64_MIN; fixing needs a Where around integer Pow"},
    "linspace.tensor_overload:int64": {"onnx": "int64 linspace: torch rounds each step of its float computation in "
                                               "its own order, the lowering's float steps truncate differently",
                                       "import": "as onnx: the imported graph runs the exported arithmetic"},
}

UNDEFINED_VALUES: dict[str, str] = {
    name: "uninitialized memory: the values are whatever the allocator returns, only shape and dtype are defined"
    for name in ("empty", "empty_like", "new_empty")
}
