"""What every ``bridge`` CLI verb shares: load a model from a SPEC, build example inputs, trace it.

A SPEC names a factory: ``path/to/file.py:factory`` or ``package.module:factory``. The factory is called
with no arguments and returns an ``nn.Module`` or a ``(model, example_args)`` tuple; an ``nn.Module``
class works as a factory too. Inputs given with ``--input`` win over the factory's example args. The model is
put in eval mode, as ``torch.onnx.export`` does, unless ``--train`` keeps it in training mode.

Every failure here is a ``CliError`` with a one-paragraph message; ``bridge.cli`` prints it and exits 2.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import re
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import BridgeError
from .ir import structure

SEED = 0
INT_HIGH = 2  # integer inputs are drawn from [0, INT_HIGH): valid ids, masks and labels for any vocabulary
MAX_SIZE = 2**31  # the most elements an --input may ask for (8 GiB of float32), and so the largest dim


class CliError(BridgeError):
    """A problem with what was given on the command line (spec, shapes, dtypes, factory)."""


@dataclass
class Loaded:
    """A model loaded from a SPEC, with the inputs and trace options the command line asked for."""

    spec: str
    model: torch.nn.Module
    args: tuple
    kwargs: dict = field(default_factory=dict)
    dynamic: dict | None = None


# ---- arguments --------------------------------------------------------------------------------------
def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The SPEC and input options every verb that takes a PyTorch model accepts."""
    p.add_argument("spec", metavar="SPEC",
                   help="the model: path/to/file.py:factory or package.module:factory; the factory returns an "
                        "nn.Module or a (model, example_args) tuple. `inspect` also takes an .onnx file")
    p.add_argument("--input", "-i", action="append", default=[], metavar="SHAPE",
                   help="shape of one positional input, e.g. 1,3,224,224 (repeat for several inputs; "
                        "'' for a 0-d tensor). Overrides the factory's example args")
    p.add_argument("--dtype", action="append", default=[], metavar="DTYPE",
                   help="dtype of the inputs: one for all, or one per --input (default float32)")
    p.add_argument("--dynamic", action="append", default=[], metavar="NAME:DIM[:SYMBOL]",
                   help="make a dim symbolic, e.g. x:0:batch (repeatable); a bare SYMBOL (--dynamic batch) "
                        "makes dim 0 of every input symbolic")
    p.add_argument("--frontend", choices=("auto", "fx", "export"), default="auto",
                   help="auto: torch.fx, then torch.export when fx cannot trace (default)")
    p.add_argument("--train", action="store_true",
                   help="keep the model in training mode (batch statistics, active dropout); default: eval mode, "
                        "as torch.onnx.export")


def load(ns: argparse.Namespace) -> Loaded:
    """Model, inputs and dynamic dims from parsed arguments (see ``add_model_arguments``). The options are read
    before the factory runs, so a typo in them fails at once."""
    args = build_inputs(ns.input, ns.dtype) if ns.input else None
    dynamic = parse_dynamic(ns.dynamic)
    model, example = load_model(ns.spec, train=getattr(ns, "train", False))
    if args is None and example is None:
        raise CliError(f"no inputs for {ns.spec}: give one --input SHAPE per positional input "
                       "(e.g. --input 1,3,224,224), or make the factory return (model, example_args).")
    if args is None:
        if ns.dtype:
            raise CliError("--dtype applies to --input shapes; the factory's example args already have dtypes. "
                           "Give --input too, or drop --dtype.")
        args = example if isinstance(example, tuple) else (example,)
        if not structure.flatten(args, _is_tensor)[0]:
            raise CliError(f"the factory {ns.spec} returned example args {_short(example)}, with no tensor in them: "
                           "return (model, (tensor, ...)), e.g. (model, (torch.randn(1, 3, 224, 224),)), or give "
                           "--input SHAPE.")
    if dynamic and "*" in dynamic:
        from .frontends.signature import InputBinding

        every = dynamic.pop("*")
        binding = InputBinding(model, args, {})
        for name, t in zip(binding.names, binding.examples):
            if t.dim() > 0:
                dynamic.setdefault(name, {}).update(every)
    return Loaded(ns.spec, model, args, {}, dynamic or None)


def _is_tensor(o) -> bool:
    return isinstance(o, torch.Tensor)


def _short(obj: Any, limit: int = 60) -> str:
    """``repr(obj)``, cut to ``limit`` characters."""
    text = repr(obj)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def check_output(path: str, option: str) -> None:
    """Refuse, before any work, an output path that cannot be written: a folder, a path whose folder does not
    exist (bridge creates none) or is a file, a folder or file this user may not write. What the operating system
    refuses only when writing (a read-only filesystem, a full disk) is ``WriteError`` then."""
    where = f"{option} {path}"
    if os.path.isdir(path):
        raise CliError(f"{where} is a folder: give a file path (inside it, for example "
                       f"{os.path.join(path, 'model' + (os.path.splitext(path)[1] or '.out'))}).")
    folder = os.path.dirname(os.path.abspath(path))
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise CliError(f"{where}: {existing} is a file, not a folder. Fix the path.")
    if existing != folder:
        raise CliError(f"{where}: the folder {folder} does not exist. Create it first (mkdir -p), or fix the path.")
    if not os.access(folder, os.W_OK | os.X_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise CliError(f"{where}: this user may not write {path if os.path.exists(path) else 'in ' + folder}. "
                       "Change the permissions, or write somewhere else.")


def check_input_file(path: str, what: str) -> None:
    """An input file (an ONNX model) named on the command line exists and is a file."""
    if os.path.isdir(path):
        raise CliError(f"{what} {path} is a folder, not a file: name the .onnx file inside it.")
    if not os.path.exists(path):
        raise CliError(f"{what} {path} does not exist (working directory {os.getcwd()}).")


def is_onnx_spec(spec: str) -> bool:
    """A SPEC ending in ``.onnx`` names an ONNX file (its graph has its own input shapes)."""
    return spec.lower().endswith(".onnx")


def load_graph(ns: argparse.Namespace, verbose: bool = False):
    """The Graph a SPEC names: an ``.onnx`` file imported (``bridge.from_onnx``; no --input needed, a
    ``dim_param`` stays symbolic), else the factory's model traced on its inputs."""
    if not is_onnx_spec(ns.spec):
        return trace(load(ns), getattr(ns, "frontend", "auto"), verbose)
    if getattr(ns, "input", None) or getattr(ns, "dtype", None) or getattr(ns, "dynamic", None):
        raise CliError(f"{ns.spec} is an ONNX file: its inputs have their shapes, dtypes and symbolic dims in the "
                       "file. Drop --input/--dtype/--dynamic.")
    check_input_file(ns.spec, "ONNX file")
    import bridge

    with quiet(verbose):
        return bridge.from_onnx(ns.spec)


def trace(loaded: Loaded, frontend: str = "auto", verbose: bool = False):
    """``bridge.trace`` on what ``load`` returned, with torch's own chatter silenced (see ``quiet``)."""
    import bridge

    with quiet(verbose):
        g = bridge.trace(loaded.model, loaded.args, loaded.kwargs or None, dynamic=loaded.dynamic or None,
                         frontend=frontend)
    for name, dims in (loaded.dynamic or {}).items():
        v = next((v for v in g.inputs if v.name == name), None)
        shape = getattr(v.spec, "shape", None) if v is not None else None
        for d, sym in dims.items():
            if shape is not None and d < len(shape) and isinstance(shape[d], int):
                print(f"bridge: warning: --dynamic {name}:{d}:{sym} was not kept: dim {d} of {name} is static "
                      f"({shape[d]}) in the graph. torch fixes example sizes 0 and 1; use a size of 2 or more.",
                      file=sys.stderr)
    return g


@contextlib.contextmanager
def quiet(verbose: bool = False):
    """Keep stdout for the command's result. torch prints partial graphs and warnings while a frontend
    fails; bridge's own error says what matters, so that goes nowhere unless ``verbose`` (then: stderr)."""
    import io
    import logging

    if verbose:
        with contextlib.redirect_stdout(sys.stderr):
            yield
        return
    log = logging.getLogger("torch")
    level = log.level
    log.setLevel(logging.ERROR)
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield
    finally:
        log.setLevel(level)


# ---- model ----------------------------------------------------------------------------------------
def load_model(spec: str, *, train: bool = False) -> tuple[torch.nn.Module, Any]:
    """Call the factory named by ``spec``; return ``(model, example_args or None)``. The model is put in eval mode
    (what one deploys, as ``torch.onnx.export`` assumes) unless ``train``: then it stays as the factory left it
    (a new module is in training mode), with a warning naming the modules that compute differently there."""
    factory = load_factory(spec)
    torch.manual_seed(SEED)  # random init is the same on every call: `export` then `verify` see one model
    try:
        with contextlib.redirect_stdout(sys.stderr):
            result = factory()
    except Exception as e:  # noqa: BLE001 - the user's code: report it as one paragraph
        raise CliError(f"the factory {spec} raised {type(e).__name__}: {e}{_where(e)}. "
                       "Fix the factory so that it runs with no arguments.") from e
    example = None
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], torch.nn.Module):
        result, example = result
    if isinstance(result, type) and issubclass(result, torch.nn.Module):
        raise CliError(f"the factory {spec} returned the class {result.__name__}, not a model: return an instance "
                       f"({result.__name__}(...)), or name the class itself as the factory.")
    if not isinstance(result, torch.nn.Module):
        raise CliError(f"the factory {spec} returned {type(result).__name__}; it must return an nn.Module or "
                       "a (model, example_args) tuple.")
    if not train:
        result.eval()
    else:
        moded = mode_dependent(result)
        if moded:
            shown = ", ".join(f"{name} ({kind})" for name, kind in moded[:3]) + (", ..." if len(moded) > 3 else "")
            print(f"bridge: warning: --train: {len(moded)} module(s) compute differently in training mode (batch "
                  f"statistics, random dropout): {shown}. Drop --train for the inference graph.", file=sys.stderr)
    return result, example


def mode_dependent(model: torch.nn.Module) -> list[tuple[str, str]]:
    """(path, type name) of the modules in training mode whose forward depends on it (``bridge.api.training_layers``:
    batch norms, dropouts, instance norms that track running statistics, RNNs with dropout)."""
    from .api import training_layers

    return [(path or "(the model)", type(m).__name__) for path, m in training_layers(model) if m.training]


def load_factory(spec: str):
    """The callable named by ``file.py:name`` or ``package.module:name`` (``name`` may be dotted)."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise CliError(f"model spec {spec!r} has no factory: write path/to/file.py:factory or "
                       "package.module:factory.")
    if target.endswith(".py") or os.sep in target or "/" in target:
        module = _import_file(target, spec)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise CliError(f"cannot import module {target!r} from spec {spec!r}: {e}. Check the spelling, that "
                           "the package is installed, or give a file path (path/to/file.py:factory).") from e
        except Exception as e:  # noqa: BLE001 - importing ran the user's code
            raise CliError(f"importing {target!r} raised {type(e).__name__}: {e}{_where(e)}.") from e
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            names = sorted(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n)))
            raise CliError(f"{target} has no {attr!r} (spec {spec!r}). Callables there: "
                           f"{', '.join(names) or 'none'}.") from None
    if not callable(obj):
        raise CliError(f"{spec} is a {type(obj).__name__}, not a callable factory.")
    return obj


def _import_file(path: str, spec: str):
    if not os.path.isfile(path):
        raise CliError(f"model file {path!r} does not exist (spec {spec!r}; working directory {os.getcwd()}).")
    path = os.path.abspath(path)
    name = "_bridge_model_" + "".join(c if c.isalnum() else "_" for c in os.path.splitext(path)[0])
    if name in sys.modules:
        return sys.modules[name]
    mspec = importlib.util.spec_from_file_location(name, path)
    if mspec is None or mspec.loader is None:
        raise CliError(f"model file {path!r} (spec {spec!r}) is not a Python file: name a .py file, e.g. "
                       "path/to/models.py:factory, or an importable module (package.module:factory).")
    module = importlib.util.module_from_spec(mspec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    sys.path.insert(0, os.path.dirname(path))  # sibling imports of the model file work
    try:
        with contextlib.redirect_stdout(sys.stderr):
            mspec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - importing ran the user's code
        del sys.modules[name]
        raise CliError(f"importing {path} raised {type(e).__name__}: {e}{_where(e)}.") from e
    finally:
        sys.path.remove(os.path.dirname(path))
    return module


def _where(e: BaseException) -> str:
    """`` (at file:line)`` of the innermost frame of the traceback outside bridge, or ''."""
    bridge_dir = os.path.dirname(os.path.abspath(__file__))
    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if not os.path.abspath(f.filename).startswith(bridge_dir) and not f.filename.startswith("<")]
    return f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""


# ---- inputs ---------------------------------------------------------------------------------------
def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,3,224,224"`` or ``"1x3x224x224"`` -> ``(1, 3, 224, 224)``; ``""`` -> ``()``. ``x`` separates only
    when there is no comma (``2,x,3`` is refused, not read as ``2,3``); every part is a size from 0 to
    ``MAX_SIZE``, and so is their product."""
    t = text.strip()
    if t[:1] + t[-1:] in ("[]", "()"):
        t = t[1:-1].strip()
    if not t:
        return ()
    parts = [p.strip() for p in t.split("," if "," in t else "x")]
    dims = []
    for i, part in enumerate(parts):
        what = f"--input {text!r} is not a shape: size {i + 1} of {len(parts)}"
        if not part:
            raise CliError(f"{what} is empty. Write sizes separated by commas (1,3,224,224) or by x (1x3x224x224); "
                           "'' for a 0-d tensor.")
        if not re.fullmatch(r"[+-]?[0-9]+", part):
            raise CliError(f"{what} ({part!r}) is not an integer. Write sizes separated by commas (1,3,224,224) or "
                           "by x (1x3x224x224), not both; '' for a 0-d tensor.")
        d = int(part)
        if d < 0:
            raise CliError(f"{what} ({part!r}) is negative: sizes are 0 or more.")
        if d > MAX_SIZE:
            raise CliError(f"{what} ({part!r}) is over {MAX_SIZE} (2**31): no input that large can be made here. "
                           "Give the size the model takes.")
        dims.append(d)
    numel = 1
    for d in dims:
        numel *= d
    if numel > MAX_SIZE:
        raise CliError(f"--input {text!r} asks for {numel:,} elements, over {MAX_SIZE:,} (2**31, 8 GiB of float32): "
                       "bridge makes a random tensor of that size. Trace with a smaller example (a batch of 1 or 2) "
                       "and --dynamic for the dims that vary.")
    return tuple(dims)


def parse_dtype(text: str) -> torch.dtype:
    name = text.strip().removeprefix("torch.")
    dt = getattr(torch, name, None)
    if not isinstance(dt, torch.dtype):
        raise CliError(f"--dtype {text!r} is not a torch dtype: use float32, float16, bfloat16, float64, int64, "
                       "int32, bool, ...")
    try:
        random_tensors([(1,)], [dt])
    except (RuntimeError, TypeError, NotImplementedError) as e:  # quantized and bit types have no random values
        raise CliError(f"--dtype {text!r}: bridge cannot make random inputs of {dt} ({str(e).splitlines()[0]}). Use a "
                       "float, integer, complex or bool dtype.") from None
    return dt


def build_inputs(shapes: list[str], dtypes: list[str] = ()) -> tuple[torch.Tensor, ...]:
    """Seeded random tensors, one per shape. Floats ~ N(0, 1); integers and bools in [0, 2)."""
    if len(dtypes) > 1 and len(dtypes) != len(shapes):
        raise CliError(f"{len(dtypes)} --dtype values for {len(shapes)} --input shapes: give one --dtype for all "
                       "inputs or one per input.")
    dts = [parse_dtype(d) for d in dtypes] or [torch.float32]
    if len(dts) == 1:
        dts = dts * len(shapes)
    return random_tensors([parse_shape(s) for s in shapes], dts)


def random_tensors(shapes, dtypes) -> tuple[torch.Tensor, ...]:
    """Seeded random tensors: floats ~ N(0, 1); integers and bools in [0, INT_HIGH)."""
    gen = torch.Generator().manual_seed(SEED)
    out = []
    for shape, dt in zip(shapes, dtypes):
        if dt.is_floating_point or dt.is_complex:
            out.append(torch.randn(shape, generator=gen).to(dt))
        else:
            out.append(torch.randint(0, INT_HIGH, shape, generator=gen).to(dt))
    return tuple(out)


def graph_inputs(g) -> tuple[torch.Tensor, ...]:
    """Seeded inputs for a graph's input specs (an ONNX file has no example); a symbolic dim takes its recorded
    example size, or 2."""
    dims = g.meta.get("dim_values") or {}
    return random_tensors([[d if isinstance(d, int) else int(dims.get(d, 2)) for d in v.spec.shape]
                           for v in g.inputs], [v.spec.dtype for v in g.inputs])


def parse_dynamic(items: list[str]) -> dict[str, dict[int, str]] | None:
    """``["x:0:batch", "x:2"]`` -> ``{"x": {0: "batch", 2: "x_2"}}``; a bare ``batch`` is dim 0 of every input
    (key ``"*"``, resolved by ``load`` once the input names are known)."""
    out: dict[str, dict[int, str]] = {}
    for item in items:
        if ":" not in item and item.isidentifier():
            out.setdefault("*", {})[0] = item
            continue
        parts = item.split(":")
        if len(parts) not in (2, 3) or not parts[0]:
            raise CliError(f"--dynamic {item!r}: write NAME:DIM[:SYMBOL], e.g. x:0:batch.")
        try:
            dim = int(parts[1])
        except ValueError:
            raise CliError(f"--dynamic {item!r}: DIM must be an integer dim index, e.g. x:0:batch.") from None
        sym = parts[2] if len(parts) == 3 and parts[2] else f"{parts[0]}_{dim}"
        out.setdefault(parts[0], {})[dim] = sym
    return out or None


# ---- machine-readable graph -----------------------------------------------------------------------
def graph_json(g) -> dict:
    """A JSON-able description of a graph: inputs, nodes (op, inputs, outputs, scope, source), outputs."""
    from .ir.spec import TensorSpec

    def spec(v):
        s = v.spec
        if isinstance(s, TensorSpec):
            return {"shape": [d if isinstance(d, int) else str(d) for d in s.shape],
                    "dtype": str(s.dtype).replace("torch.", "")}
        return {"type": str(s) if s is not None else None}

    def val(v):
        return {"name": v.name, **spec(v)}

    from .ir.graph import Value

    return {
        "model": g.meta.get("model_type"),
        "frontend": g.meta.get("frontend"),
        "inputs": [val(v) for v in g.inputs],
        "params": [{"name": c.name, "names": list(c.names), **spec(c)} for c in g.params],
        "nodes": [{"op": n.op, "inputs": [v.name for v in n.inputs], "outputs": [val(v) for v in n.outputs],
                   "scope": n.scope.path, "module_type": n.scope.type, "source": n.source} for n in g.nodes],
        "outputs": [val(o) if isinstance(o, Value) else {"const": repr(o)} for o in g.outputs],
        "num_params": sum(c.const.numel() for c in g.params),
    }
