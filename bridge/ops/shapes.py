"""Fast shape propagation: the result tensors of common ops, without FakeTensorMode's dispatch.

Shapes come from running an op's impl on fake tensors (see ``registry``). FakeTensorMode costs 50-300 us a call
(its cache key, the output's reconstruction, and python meta kernels: an elementwise add costs 75 us on meta
tensors, a batch_norm 430 us; with symbolic sizes nothing is cached: 300-500 us), most of an ONNX import's time.
For common ops ``fast_result`` gives the same result directly where it can say so exactly, as plain meta tensors
(a fake tensor costs 7 us to make: the builder makes one only when fake dispatch needs it), in one of two ways
(``OpDef.shape``):

- ``"meta"`` (``"meta_plain"``: contiguous operands only): on static sizes, the impl runs on meta storage (a fake's
  own, or a meta tensor of a constant's layout) outside the fake mode's dispatch (torch's meta kernels of views,
  pooling, matrix products and padding are C++: 1-25 us): torch's own sizes, strides and aliasing. Anything
  unusual (a real tensor made inside the impl, a value read) raises on meta tensors, and fake dispatch decides
  instead. Symbolic sizes stay with fake dispatch: without the python dispatcher a C++ kernel reads a symbol as
  the number it stands for now.
- a rule ``rule(args) -> (shape, dtype) | None`` for ops whose meta kernel is python (elementwise arithmetic,
  activations, norms, convolution, linear, matmul, reductions, concatenation): the result is a new contiguous
  tensor of that shape and dtype. Rules take only the plain case (contiguous operands of one device, not
  ambiguous with channels-last, the dtypes they name), and sizes that are ints or the ShapeEnv's symbols, compared
  without a guard; they return None for anything else.

Results have no autograd history and no device (the ONNX import, the one user, computes on CPU), so the fast path
serves only calls with no argument that requires grad (or with grad mode off, as an ONNX import runs).
``tests/ops/test_shape_rules.py`` checks every fast result against fake dispatch (sizes, strides of dims longer
than 1, dtype, storage shared with an argument) on generated calls, on every call the zoo's imports make, and
(slow) on onnx's node test cases.
"""
from __future__ import annotations

import math

import torch

from ..ir.graph import ATOMS, Value

try:  # torch's own pieces; where a torch lacks them the fast path is off and fake dispatch serves every call
    from torch._subclasses.fake_tensor import FakeTensor, in_kernel_invocation_manager
    from torch.utils._mode_utils import no_dispatch
except ImportError:  # pragma: no cover - torch 2.5+ has them
    FakeTensor = None

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_NUMBERS = (int, float, bool)
_SYMBOLIC = (torch.SymInt, torch.SymFloat, torch.SymBool)
_NO_TENSOR = ATOMS | {Value}  # what holds no tensor


# ---- the fast path ------------------------------------------------------------------------------------------
def fast_result(opdef, args: dict, mode):
    """``opdef``'s result on ``args`` as plain meta tensors, or None where the fast path does not know it exactly
    (then fake dispatch computes it). ``args`` hold python values and tensors: fakes of ``mode``, plain meta tensors
    (earlier fast results) and real tensors (constants: their sizes, dtype and layout count, not their values)."""
    how = opdef.shape
    if how is None or FakeTensor is None:
        return None
    if callable(how):
        if not _operands_ok(args, mode, meta=False):
            return None
        got = how(args)
        if got is not None:
            return meta_empty(*got)
        if opdef.name not in _META_AFTER_RULE:
            return None
        how = "meta"  # a layout the rule does not take: torch's kernel on static sizes says
        opdef = _META_AFTER_RULE[opdef.name] or opdef
    if not _operands_ok(args, mode, meta=True):
        return None
    if how == "meta_plain":  # contiguous operands; the first one's layout picks the result's memory format, so not
        first = next(iter(args.values()))  # one ambiguous with channels-last either
        if not all(t.is_contiguous() for t in tensors_in(args)) or \
                (isinstance(first, torch.Tensor) and not _plain(first)):
            return None
    return _on_meta(opdef, args, mode)


def fake_of_light(mode, t: torch.Tensor):
    """A fake tensor of ``mode`` (on CPU, where the ONNX import computes) for a plain meta tensor the fast path
    made: its sizes, strides and storage."""
    return FakeTensor(mode, t, torch.device("cpu"))


def tensors_in(obj, out: list | None = None) -> list:
    """The tensors in ``obj`` (nested lists, tuples, dicts), in order."""
    out = [] if out is None else out
    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif type(obj) in (list, tuple):
        for o in obj:
            tensors_in(o, out)
    elif type(obj) is dict:
        for o in obj.values():
            tensors_in(o, out)
    return out


def holds_tensor(obj) -> bool:
    """Does ``obj`` (a node's arguments: nested lists, tuples, dicts of tensors, graph Values and python values) hold
    a tensor? ``tensors_in`` without the list, for the common answer no."""
    for a in (obj.values() if type(obj) is dict else obj):
        kind = type(a)
        if kind in _NO_TENSOR:
            continue
        if isinstance(a, torch.Tensor) or ((kind is list or kind is tuple or kind is dict) and holds_tensor(a)):
            return True
    return False


def map_tensors(obj, fn):
    """``obj`` (nested lists, tuples, dicts) with ``fn`` applied to each tensor in it."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if type(obj) in (list, tuple):
        return type(obj)(map_tensors(o, fn) for o in obj)
    if type(obj) is dict:
        return {k: map_tensors(v, fn) for k, v in obj.items()}
    return obj


def _operands_ok(args: dict, mode, meta: bool) -> bool:
    """Can the fast path take ``args``? Its tensors: fakes of ``mode`` (no constant value), plain meta tensors or real
    tensors (dense, strided), of one device but meta, none requiring grad while grad mode is on; their sizes ints,
    or for a rule also the mode's symbols with a hint (a data-dependent one would guard). ``meta`` kernels take
    static sizes only, and no symbolic scalar: without the python dispatcher torch's C++ kernels read a symbol as
    the number it stands for now, and the ShapeEnv would replace the symbol by it."""
    device = None
    grad = torch.is_grad_enabled()
    todo = list(args.values())
    while todo:
        t = todo.pop()
        kind = type(t)
        if kind in ATOMS:
            continue
        if kind is list or kind is tuple:
            todo.extend(t)
            continue
        if kind is FakeTensor:
            if t.fake_mode is not mode or t.constant is not None:
                return False
        elif kind is not torch.Tensor and kind is not torch.nn.Parameter:
            if isinstance(t, torch.Tensor) or (meta and isinstance(t, _SYMBOLIC)):
                return False
            continue
        if t.layout is not torch.strided or (grad and t.requires_grad):
            return False
        for n in t.shape:
            if type(n) is not int and (meta or type(n) is not torch.SymInt or not n.node.has_hint()):
                return False
        if kind is FakeTensor or not t.is_meta:
            d = t.device
            if device is None:
                device = d
            elif d != device:
                return False
    return True


def meta_empty(shape, dtype) -> torch.Tensor:
    """A plain meta tensor of ``shape`` (ints or the ShapeEnv's symbols), contiguous, made outside any mode."""
    with no_dispatch():
        return torch.empty(shape, dtype=dtype, device="meta")


def meta_like(t: torch.Tensor) -> torch.Tensor:
    """A real tensor (a constant) as a meta tensor of its layout, for a meta kernel; fakes and meta tensors as they
    are."""
    if type(t) is FakeTensor or t.device.type == "meta":
        return t
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")


def _on_meta(opdef, args: dict, mode):
    args = map_tensors(args, meta_like)
    try:
        with no_dispatch(), in_kernel_invocation_manager(mode), torch.no_grad():
            out = opdef.impl(**args)
    except Exception:  # noqa: BLE001 - a value read, a real tensor made, no meta kernel: fake dispatch decides
        return None
    leaves = [out] if isinstance(out, torch.Tensor) else list(out) if type(out) in (tuple, list) else None
    if not leaves or not all(_is_result(t, mode) for t in leaves if isinstance(t, torch.Tensor)):
        return None  # python values (the op's python way is cheap enough), or a tensor made on a real device
    return out


def _is_result(t, mode) -> bool:
    """A tensor the meta path may return: a plain meta tensor, or an argument's fake returned as it is."""
    return (type(t) is torch.Tensor and t.device.type == "meta") or (type(t) is FakeTensor and t.fake_mode is mode)


# ---- helpers of the rules ---------------------------------------------------------------------------------
def _plain(t) -> bool:
    """Contiguous, and not also channels-last contiguous (a 4-d (N, C, 1, 1) is both: ops that keep the input's
    memory format may choose either there)."""
    if not t.is_contiguous():
        return False
    if t.dim() == 4:
        return not t.is_contiguous(memory_format=torch.channels_last) or t.numel() <= 1
    if t.dim() == 5:
        return not t.is_contiguous(memory_format=torch.channels_last_3d) or t.numel() <= 1
    return True


def _static(t) -> bool:
    return all(type(n) is int for n in t.shape)


def _same_sizes(a, b) -> bool:
    return len(a) == len(b) and all(_eq(x, y) for x, y in zip(a, b))


def _float(t) -> bool:
    return isinstance(t, torch.Tensor) and t.dtype in _FLOATS and _plain(t)


def _eq(a, b) -> bool | None:
    """Are sizes ``a`` and ``b`` equal, known without a guard: ints, or symbolic sizes of one expression? None
    where only a guard would say (the rules then decline)."""
    if type(a) is int and type(b) is int:
        return a == b
    if type(a) is torch.SymInt and type(b) is torch.SymInt and a.node.expr == b.node.expr:
        return True
    return None


def _broadcast(shapes):
    n = max(len(s) for s in shapes)
    out = [1] * n
    for s in shapes:
        for i, d in enumerate(s, n - len(s)):
            if type(d) is int and d == 1:
                continue
            if type(out[i]) is int and out[i] == 1:
                out[i] = d
            elif not _eq(out[i], d):
                return None  # torch raises, or a guard would decide: fake dispatch
    return out


def _operands(*xs):
    """(tensors, ok): the tensor operands; ok when every operand is a contiguous tensor or a python number."""
    ts = [x for x in xs if isinstance(x, torch.Tensor)]
    ok = bool(ts) and all(isinstance(x, torch.Tensor) and x.is_contiguous() or type(x) in _NUMBERS for x in xs)
    return ts, ok


def _same(args):
    """One contiguous floating input, result of its shape and dtype. (An elementwise result may take either layout
    of an input that is contiguous and channels-last at once, (N, C, 1, 1); the two differ only in the strides of
    dims of size 1, which say nothing.)"""
    x = args["input"]
    return (x.shape, x.dtype) if isinstance(x, torch.Tensor) and x.dtype in _FLOATS and x.is_contiguous() else None


_HOW: dict[str, object] = {}  # op name -> "meta" or its rule; registry.get sets OpDef.shape from it (attach)


def _rule(*names):
    def deco(fn):
        for n in names:
            _HOW[n] = fn
        return fn
    return deco


# ---- unary elementwise and activations: float in, the same layout out --------------------------------------
_UNARY_SAME = ("relu", "sigmoid", "tanh", "silu", "mish", "hardswish", "hardsigmoid", "relu6", "selu", "logsigmoid",
               "softsign", "tanhshrink", "exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sqrt", "rsqrt",
               "abs", "neg", "reciprocal", "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "asinh",
               "acosh", "atanh", "erf", "erfinv", "floor", "ceil", "trunc", "sign", "frac", "square")
_rule(*_UNARY_SAME)(_same)


@_rule("gelu", "leaky_relu", "elu", "celu", "softplus", "hardtanh", "threshold")
def _activation(args):
    """Parametrized activations: python-number parameters only."""
    if not all(type(v) in (*_NUMBERS, str, type(None)) for k, v in args.items() if k != "input"):
        return None
    if args.get("inplace"):
        return None
    return _same(args)


@_rule("clamp", "clamp_min", "clamp_max")
def _clamp(args):
    if not all(type(v) in (int, float, type(None)) for k, v in args.items() if k != "input"):
        return None
    return _same(args)


# ---- binary elementwise: broadcast shapes, torch's type promotion ------------------------------------------
def _binary(args, scalars: bool = True, a: str = "input", b: str = "other"):
    x, y = args[a], args[b]
    ts, ok = _operands(x, y)
    if not ok or (not scalars and len(ts) < 2):
        return None
    shape = _broadcast([t.shape for t in ts])
    if shape is None:
        return None
    return shape, torch.result_type(x, y)


@_rule("add", "sub", "mul", "pow")
def _promoting(args):
    got = _binary(args)
    if got is None or got[1] == torch.bool:  # arithmetic on bools: torch takes some and refuses others
        return None
    alpha = args.get("alpha", 1)
    if alpha != 1 and (type(alpha) not in _NUMBERS or got[1] not in _FLOATS):
        return None  # alpha's own promotion rules (a float alpha on ints raises)
    return got


@_rule("remainder", "fmod")
def _tensor_first(args):
    return _promoting(args) if isinstance(args["input"], torch.Tensor) else None


@_rule("maximum", "minimum")
def _tensors_promoting(args):
    return _binary(args, scalars=False)


@_rule("eq", "ne", "lt", "le", "gt", "ge")
def _comparison(args):
    got = _binary(args)
    return None if got is None else (got[0], torch.bool)


@_rule("logical_and", "logical_or", "logical_xor")
def _logical(args):
    got = _binary(args, scalars=False)
    return None if got is None else (got[0], torch.bool)


@_rule("div")
def _div(args):
    got = _binary(args)
    if got is None:
        return None
    shape, dtype = got
    if args["rounding_mode"] is None and not (dtype.is_floating_point or dtype.is_complex):
        dtype = torch.get_default_dtype()  # true division of integers
    return shape, dtype


@_rule("where")
def _where(args):
    c = args["condition"]
    if not (isinstance(c, torch.Tensor) and c.dtype == torch.bool and c.is_contiguous()):
        return None
    got = _binary(args)
    if got is None:
        return None
    shape = _broadcast([got[0], c.shape])
    return None if shape is None else (shape, got[1])


# ---- nn ops whose meta kernels are python --------------------------------------------------------------------
def _all_float(x, *others) -> bool:
    """``x`` floating and plain; each other argument None or a plain tensor of x's dtype."""
    return _float(x) and all(o is None or (isinstance(o, torch.Tensor) and o.dtype == x.dtype and _plain(o))
                             for o in others)


@_rule("batch_norm")
def _batch_norm(args):
    x = args["input"]
    if not _all_float(x, args["running_mean"], args["running_var"], args["weight"], args["bias"]) or x.dim() < 2:
        return None
    c = x.shape[1]
    if any(t is not None and (t.dim() != 1 or not _eq(t.shape[0], c)) for t in (
            args["running_mean"], args["running_var"], args["weight"], args["bias"])):
        return None
    if args["training"] and not (_static(x) and x.numel() // max(c, 1) > 1):
        return None  # torch raises on one value per channel
    return x.shape, x.dtype


@_rule("instance_norm")
def _instance_norm(args):
    x = args["input"]
    stats = (args["running_mean"], args["running_var"], args["weight"], args["bias"])
    if not _all_float(x, *stats) or x.dim() < 3:
        return None
    if any(t is not None and (t.dim() != 1 or not _eq(t.shape[0], x.shape[1])) for t in stats):
        return None
    if args["use_input_stats"] and not (_static(x) and math.prod(x.shape[2:]) > 1):
        return None  # torch raises on one value per channel
    return x.shape, x.dtype


@_rule("matmul")
def _matmul(args):
    """Matrix products of two matrices or batches of them, any strides (the product is a new contiguous tensor),
    but a matrix times a batch (torch computes it transposed: other strides)."""
    a, b = args["input"], args["other"]
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.dtype != b.dtype or \
            a.dtype not in _FLOATS or a.dim() < 2 or b.dim() < 2 or (a.dim() == 2 and b.dim() > 2):
        return None
    if not _eq(a.shape[-1], b.shape[-2]):
        return None
    if b.dim() == 2:
        return (*a.shape[:-1], b.shape[-1]), a.dtype
    batch = _broadcast([a.shape[:-2], b.shape[:-2]])
    return None if batch is None else ((*batch, a.shape[-2], b.shape[-1]), a.dtype)


def _per_dim(v, n: int):
    """An int or a list of ``n`` ints as a list of ``n`` ints; None otherwise."""
    if type(v) is int:
        return [v] * n
    if type(v) in (list, tuple) and len(v) == n:
        for x in v:
            if type(x) is not int:
                return None
        return list(v)
    if type(v) in (list, tuple) and len(v) == 1 and type(v[0]) is int:
        return [v[0]] * n
    return None


@_rule("conv")
def _conv(args):
    """Convolution with zero padding given as numbers (torch's meta kernel is python: 30 us)."""
    x, w, b = args["input"], args["weight"], args["bias"]
    if not isinstance(x, torch.Tensor) or not isinstance(w, torch.Tensor) or args["padding_mode"] != "zeros":
        return None
    dtype = x.dtype
    if dtype not in _FLOATS or w.dtype != dtype or not x.is_contiguous() or not w.is_contiguous() or \
            (b is not None and not (isinstance(b, torch.Tensor) and b.dtype == dtype and b.is_contiguous())):
        return None  # the input's layout picks the result's: a weight's size-1 dims do not
    xs, ws = tuple(x.shape), tuple(w.shape)
    n = len(ws) - 2
    if n not in (1, 2, 3) or len(xs) != n + 2:
        return None  # unbatched inputs: fake dispatch
    for d in xs + ws:
        if type(d) is not int:
            return None  # symbolic sizes: fake dispatch
    stride, pad, dil = _per_dim(args["stride"], n), _per_dim(args["padding"], n), _per_dim(args["dilation"], n)
    groups = args["groups"]
    if stride is None or pad is None or dil is None or type(groups) is not int or groups < 1 or \
            min(stride) < 1 or min(dil) < 1 or min(pad) < 0:
        return None
    if xs[1] != ws[1] * groups or ws[0] % groups or (b is not None and tuple(b.shape) != (ws[0],)):
        return None
    out = [(xs[2 + i] + 2 * pad[i] - dil[i] * (ws[2 + i] - 1) - 1) // stride[i] + 1 for i in range(n)]
    if min(out) < 1:
        return None  # torch raises: the kernel is larger than the padded input
    if max(out) > 1 and not _plain(x):  # an input contiguous and channels-last at once, (N, C, 1, 1): the device
        return None  # picks the result's layout, which only a result of spatial size 1 does not show
    return (xs[0], ws[0], *out), dtype


def _pooling(n: int):
    """Max/average pooling over the last ``n`` dims of a batched input (torch's meta kernels of pooling are python:
    30-70 us): torch's output size, ceil_mode's last window dropped where it would start in the padding."""
    def rule(args):
        x = args["input"]
        if not (isinstance(x, torch.Tensor) and x.dtype in _FLOATS and x.is_contiguous()) or x.dim() != n + 2 or \
                not _static(x) or args.get("return_indices") or args.get("divisor_override") not in (None,):
            return None
        k = _per_dim(args["kernel_size"], n)
        stride = args["stride"]
        stride = k if stride is None or (type(stride) in (list, tuple) and not stride) else _per_dim(stride, n)
        pad, dil = _per_dim(args["padding"], n), _per_dim(args.get("dilation", 1), n)
        if k is None or stride is None or pad is None or dil is None or min(k) < 1 or min(stride) < 1 or \
                min(dil) < 1 or min(pad) < 0 or any(p > kk // 2 for p, kk in zip(pad, k)):
            return None  # torch raises (pad over half the kernel, ...): let it
        out = []
        for size, kk, st, p, d in zip(x.shape[2:], k, stride, pad, dil):
            if size < d * (kk - 1) + 1:
                return None  # a window larger than the input: some kernels take it with padding, others refuse
            span = size + 2 * p - d * (kk - 1) - 1
            o = (-(-span // st) if args["ceil_mode"] else span // st) + 1
            if args["ceil_mode"] and (o - 1) * st >= size + p:
                o -= 1
            if o < 1:
                return None
            out.append(o)
        if not _plain(x) and max(out) > 1:
            return None  # see the conv rule
        return (*x.shape[:2], *out), x.dtype
    return rule


for _n in (1, 2, 3):
    _rule(f"max_pool{_n}d", f"avg_pool{_n}d")(_pooling(_n))


@_rule("layer_norm")
def _layer_norm(args):
    x, ns = args["input"], args["normalized_shape"]
    ns = (ns,) if type(ns) is int else tuple(ns) if type(ns) in (list, tuple) else None
    if ns is None or not all(type(n) is int for n in ns) or not _all_float(x, args["weight"], args["bias"]):
        return None
    if len(ns) > x.dim() or not _same_sizes(x.shape[x.dim() - len(ns):], ns):
        return None
    if any(t is not None and not _same_sizes(t.shape, ns) for t in (args["weight"], args["bias"])):
        return None
    return x.shape, x.dtype


@_rule("linear")
def _linear(args):
    x, w, b = args["input"], args["weight"], args["bias"]
    if not _all_float(x, w, b) or x.dim() < 1 or w.dim() != 2 or not _eq(w.shape[1], x.shape[-1]):
        return None
    if b is not None and not (b.dim() == 0 or (b.dim() == 1 and _eq(b.shape[0], w.shape[0]))):
        return None
    return (*x.shape[:-1], w.shape[0]), x.dtype


def _reduction(empty_ok: bool):
    def rule(args):
        x, dim = args["input"], args["dim"]
        if not _float(x) or args.get("dtype") is not None or x.dim() == 0:
            return None
        r = x.dim()
        if dim is None:  # the impl reduces every dim to a 0-d tensor whatever keepdim says
            return (), x.dtype
        if type(dim) in (list, tuple) and len(dim) == 0:
            dims = set(range(r))
        elif type(dim) is int:
            dims = {dim}
        elif type(dim) in (list, tuple) and all(type(d) is int for d in dim):
            dims = set(dim)
        else:
            return None
        if not all(-r <= d < r for d in dims) or len({d % r for d in dims}) != (1 if type(dim) is int else
                                                                                len(dims)):
            return None
        dims = {d % r for d in dims}
        if not empty_ok and not all(_eq(x.shape[d], 0) is False for d in dims):
            return None  # torch raises on an empty dim (no identity to reduce it to); a symbolic one would guard
        if args["keepdim"]:
            return [1 if i in dims else s for i, s in enumerate(x.shape)], x.dtype
        return [s for i, s in enumerate(x.shape) if i not in dims], x.dtype
    return rule


_rule("mean", "sum")(_reduction(True))
_rule("amax", "amin")(_reduction(False))


@_rule("adaptive_avg_pool2d")
def _adaptive_avg_pool2d(args):
    x, size = args["input"], args["output_size"]
    if not _float(x) or x.dim() not in (3, 4) or not all(_eq(s, 0) is not True for s in x.shape[-2:]):
        return None
    size = (size, size) if type(size) is int else tuple(size) if type(size) in (list, tuple) else None
    if size is None or len(size) != 2:
        return None
    out = [x.shape[-2 + i] if s is None else s for i, s in enumerate(size)]
    if not all(type(s) is int and s >= 0 for s in out):
        return None
    return (*x.shape[:-2], *out), x.dtype


@_rule("cat")
def _cat(args):
    ts, dim = args["tensors"], args["dim"]
    if type(ts) not in (list, tuple) or not ts or type(dim) is not int:
        return None
    first = ts[0]
    if not all(isinstance(t, torch.Tensor) and _plain(t) and t.dtype == first.dtype and t.dim() == first.dim()
               for t in ts) or first.dim() == 0:
        return None
    r = first.dim()
    if not -r <= dim < r:
        return None
    d = dim % r
    for t in ts[1:]:
        if any(a != b for i, (a, b) in enumerate(zip(t.shape, first.shape)) if i != d):
            return None
    shape = list(first.shape)
    shape[d] = sum(t.shape[d] for t in ts)
    return shape, first.dtype


# ---- ops whose meta kernels are C++: the impl itself, on meta storage ---------------------------------------
# views and copies: any layout (the kernel keeps torch's strides and aliasing)
_META = ("reshape", "permute", "transpose", "flatten", "unflatten", "unsqueeze", "squeeze", "select", "slice",
         "split", "expand", "narrow", "movedim", "chunk", "unbind", "t", "to", "contiguous", "clone", "einsum")
# kernels whose output layout fake tensors choose by the device (a channels-last convolution on CPU): plain
# operands only
_META_PLAIN = ("conv_transpose", "pad", "embedding", "index_select", "softmax", "log_softmax", "mm", "bmm", "gather",
               "pixel_shuffle", "pixel_unshuffle")
# rules whose other layouts (a reduction of a transposed tensor keeps its order of dims) torch's kernel gives: the
# op's own, or one of the same result layout whose meta kernel is C++ (mean's is python, 300 us; sum's 12 us)
_META_AFTER_RULE = {"sum": None, "amax": None, "amin": None, "cat": None}
_HOW.update((name, "meta") for name in _META)
_HOW.update((name, "meta_plain") for name in _META_PLAIN)


def attach(ops: dict) -> None:
    """Set ``OpDef.shape`` of the registered ops (``registry`` calls it once every op is registered)."""
    for name, how in _HOW.items():
        if name in ops:
            ops[name].shape = how
    _META_AFTER_RULE["mean"] = ops["sum"]
