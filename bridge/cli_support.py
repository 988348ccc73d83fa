"""What every ``bridge`` CLI verb shares: load a model from a SPEC, build example inputs, trace it.

A SPEC names a factory: ``path/to/file.py:factory`` or ``package.module:factory``, optionally with literal
arguments (``resnet18(num_classes=10)``). The factory is called with them and returns an ``nn.Module`` or a
``(model, example_args)`` tuple; an ``nn.Module`` class works as a factory too. A HuggingFace model class
(``transformers:BertModel``) is built from a config (``--config``), ``timm:NAME`` by ``timm.create_model``;
both come with example inputs. Inputs given with ``--input`` win over the factory's example args. The model is
put in eval mode, as ``torch.onnx.export`` does, unless ``--train`` keeps it in training mode.

Every failure here is a ``CliError`` with a one-paragraph message; ``bridge.cli`` prints it and exits 2.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import difflib
import importlib
import importlib.util
import json
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
SPEC_HELP = ("the model: path/to/file.py:factory or package.module:factory, with literal arguments if any "
             "('torchvision.models:resnet18(num_classes=10)'); the factory returns an nn.Module or a (model, "
             "example_args) tuple. Also transformers:CLASS (a HuggingFace model class, built from --config) and "
             "timm:MODEL_NAME; both have default example inputs")


def add_model_arguments(p: argparse.ArgumentParser, onnx: bool = True) -> None:
    """The SPEC and input options every verb that takes a PyTorch model accepts; ``onnx``: the verb takes an
    ``.onnx`` file as SPEC too (``load_graph``)."""
    p.add_argument("spec", metavar="SPEC",
                   help=SPEC_HELP + (", or an .onnx file (imported: no --input needed)" if onnx else ""))
    p.add_argument("--config", action="append", default=[], metavar="CONFIG",
                   help="a HuggingFace SPEC's config: key=value (repeatable; values read as JSON, else strings), "
                        "a JSON object, or a config.json file. Default: the class's default config")
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
    config = parse_config(getattr(ns, "config", None) or [])
    model, example = load_model(ns.spec, train=getattr(ns, "train", False), config=config)
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
    if getattr(ns, "config", None):
        raise CliError(f"{ns.spec} is an ONNX file: --config applies to HuggingFace model classes. Drop --config.")
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
LITERALS = "numbers, strings, True/False/None, and tuples, lists and dicts of them"
HF_SEQ = 8  # tokens in a HuggingFace text model's default example input
_NAME = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"


@dataclass
class Spec:
    """A parsed SPEC: ``target`` (a module name, a ``.py`` path, or ``timm``), the factory's dotted ``attr``
    name, and the literal arguments written after it (``resnet18(num_classes=10)``)."""

    text: str
    target: str
    attr: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


def parse_spec(spec: str) -> Spec:
    """``target:name`` or ``target:name(args)``. The arguments are Python literals read with ``ast`` (nothing in
    them runs): numbers, strings, True/False/None, and tuples, lists and dicts of them."""
    m = re.fullmatch(rf"(.*?):({_NAME})\s*(\(.*\))\s*", spec, re.S)
    if m:
        target, attr, call = m.groups()
        args, kwargs = _literal_call(call, spec)
    else:
        target, _, attr = spec.rpartition(":")
        args, kwargs = (), {}
    if not target or not attr:
        raise CliError(f"model spec {spec!r} has no factory: write path/to/file.py:factory or "
                       "package.module:factory (or timm:MODEL_NAME).")
    if not re.fullmatch(_NAME, attr):
        raise CliError(f"model spec {spec!r}: {attr!r} is not a factory name. Write path/to/file.py:factory or "
                       "package.module:factory, with arguments in parentheses if it takes any, e.g. "
                       "'torchvision.models:resnet18(num_classes=10)' (quoted on a shell).")
    return Spec(spec, target, attr, args, kwargs)


def _literal_call(call: str, spec: str) -> tuple[tuple, dict]:
    """``"(4, width=8)"`` -> ``((4,), {"width": 8})``; anything but literals is a ``CliError``."""
    allowed = (f"Factory arguments are Python literals ({LITERALS}), e.g. 'torchvision.models:resnet18(num_classes=10)'"
               " (quote the SPEC on a shell).")
    try:
        tree = ast.parse("f" + call, mode="eval").body
    except SyntaxError as e:
        raise CliError(f"model spec {spec!r}: the arguments {call} are not valid Python ({e.msg}). {allowed}") from None
    if not isinstance(tree, ast.Call) or not isinstance(tree.func, ast.Name):
        raise CliError(f"model spec {spec!r}: {call} is not one argument list. {allowed}")

    def literal(node, what):
        try:
            return ast.literal_eval(node)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise CliError(f"model spec {spec!r}: {what} is not a literal. {allowed}") from None

    args = tuple(literal(a, f"argument {i + 1} ({ast.unparse(a)})") for i, a in enumerate(tree.args))
    kwargs: dict = {}
    for kw in tree.keywords:
        if kw.arg is None:
            raise CliError(f"model spec {spec!r}: **{ast.unparse(kw.value)} is not allowed; write each keyword "
                           f"argument as name=value. {allowed}")
        if kw.arg in kwargs:
            raise CliError(f"model spec {spec!r}: keyword argument {kw.arg} is given twice.")
        kwargs[kw.arg] = literal(kw.value, f"{kw.arg}={ast.unparse(kw.value)}")
    return args, kwargs


def parse_config(items: list[str]) -> dict:
    """``--config`` values, merged in order (a later key wins): a JSON object (``'{"hidden_size": 32}'``), a
    path to a JSON file (an HF ``config.json``), or ``key=value`` with the value read as JSON (``32``,
    ``true``, ``[1, 2]``), else as a Python literal (``True``), else as a string (``gelu``)."""
    out: dict = {}
    for item in items:
        text = item.strip()
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as e:
                raise CliError(f"--config {item!r} is not a JSON object ({e.msg} at character {e.pos}). Write "
                               "'{\"hidden_size\": 32}', key=value (repeatable) or a path to a .json file.") from None
            out.update(value)
        elif "=" in text and not os.path.isfile(text):
            key, _, raw = text.partition("=")
            key = key.strip()
            if not key.isidentifier():
                raise CliError(f"--config {item!r}: {key!r} is not a config key. Write key=value, e.g. "
                               "--config hidden_size=32.")
            out[key] = _config_value(raw.strip())
        elif text.endswith(".json") or os.path.isfile(text):
            check_input_file(text, "--config file")
            try:
                with open(text, encoding="utf-8") as f:
                    value = json.load(f)
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise CliError(f"--config {text}: cannot read it as JSON ({e}).") from None
            if not isinstance(value, dict):
                raise CliError(f"--config {text} holds a JSON {type(value).__name__}, not an object of config keys.")
            out.update(value)
        else:
            raise CliError(f"--config {item!r}: write key=value (--config hidden_size=32), a JSON object "
                           "('{\"hidden_size\": 32}') or a path to a .json file.")
    return out


def _config_value(raw: str):
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(raw)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return raw


def load_model(spec: str, *, train: bool = False, config: dict | None = None) -> tuple[torch.nn.Module, Any]:
    """Build the model ``spec`` names; return ``(model, example_args or None)``. A factory is called with the
    spec's arguments; a HuggingFace model class is built from a config (``config``, the ``--config`` keys) and
    ``timm:NAME`` by ``timm.create_model``, both with default example inputs. The model is put in eval mode
    (what one deploys, as ``torch.onnx.export`` assumes) unless ``train``: then it stays as the factory left it
    (a new module is in training mode), with a warning naming the modules that compute differently there."""
    s = parse_spec(spec)
    if s.target == "timm":
        result, example = _timm_model(s, config)
    else:
        factory = load_factory(s)
        hf = _hf_kind(factory)
        if hf:
            result, example = _hf_model(factory, hf, s, config or {})
        else:
            if config:
                raise CliError(f"--config applies to HuggingFace model classes (transformers:BertModel), and "
                               f"{spec} is not one. Pass arguments in the SPEC instead: "
                               f"'{s.target}:{s.attr}(width=8)'.")
            result, example = _call_factory(factory, s)
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


def _call_factory(factory, s: Spec):
    torch.manual_seed(SEED)  # random init is the same on every call: `export` then `verify` see one model
    try:
        with contextlib.redirect_stdout(sys.stderr):
            result = factory(*s.args, **s.kwargs)
    except Exception as e:  # noqa: BLE001 - the user's code: report it as one paragraph
        how = "with the arguments given" if s.args or s.kwargs else "with no arguments"
        raise CliError(f"the factory {s.text} raised {type(e).__name__}: {e}{_where(e)}. "
                       f"Fix the factory so that it runs {how}.") from e
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], torch.nn.Module):
        return result
    return result, None


def mode_dependent(model: torch.nn.Module) -> list[tuple[str, str]]:
    """(path, type name) of the modules in training mode whose forward depends on it (``bridge.api.training_layers``:
    batch norms, dropouts, instance norms that track running statistics, RNNs with dropout)."""
    from .api import training_layers

    return [(path or "(the model)", type(m).__name__) for path, m in training_layers(model) if m.training]


def load_factory(spec: str | Spec):
    """The callable named by ``file.py:name`` or ``package.module:name`` (``name`` may be dotted; arguments after
    it are not called here). A module is imported from the working directory too, as ``python -m`` does."""
    s = spec if isinstance(spec, Spec) else parse_spec(spec)
    if s.target.endswith(".py") or os.sep in s.target or "/" in s.target:
        module = _import_file(s.target, s.text)
    else:
        module = _import_module(s.target, s.text)
    obj, parts = module, s.attr.split(".")
    for i, part in enumerate(parts):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            where = s.target + (":" + ".".join(parts[:i]) if i else "")
            raise CliError(_missing(obj, part, where, s.text)) from None
    if not callable(obj):
        raise CliError(f"{s.text} is a {type(obj).__name__}, not a callable factory.")
    return obj


def _import_module(target: str, spec: str):
    cwd = os.getcwd()
    added = not any(os.path.abspath(p or os.curdir) == cwd for p in sys.path)  # `bridge` has no cwd on sys.path
    if added:
        sys.path.append(cwd)
    try:
        return importlib.import_module(target)
    except ImportError as e:
        raise CliError(f"cannot import module {target!r} from spec {spec!r}: {e}. Check the spelling, that "
                       f"the package is installed or that {target.split('.')[0]} is in the working directory "
                       f"({cwd}), or give a file path (path/to/file.py:factory).") from e
    except Exception as e:  # noqa: BLE001 - importing ran the user's code
        raise CliError(f"importing {target!r} raised {type(e).__name__}: {e}{_where(e)}.") from e
    finally:
        if added:
            sys.path.remove(cwd)


def _missing(obj, name: str, where: str, spec: str) -> str:
    """The message for a name ``obj`` lacks: close matches (difflib) and, when there are few, its factories."""
    names = [n for n in dir(obj) if not n.startswith("_")]
    close = difflib.get_close_matches(name, names, n=4, cutoff=0.6)
    close += [n for n in names if n.lower() == name.lower() and n not in close]
    msg = f"{where} has no {name!r} (spec {spec!r})." + (f" Did you mean {', '.join(close)}?" if close else "")
    if len(names) > 300:  # a lazy package (transformers): looking at every name would import it all
        return msg if close else msg + f" It has {len(names)} public names; none is close to {name!r}."
    factories = [n for n in names if _is_factory(getattr(obj, n, None))]
    if close and len(factories) > 12:
        return msg
    shown = ", ".join(factories[:12]) + (f" and {len(factories) - 12} more" if len(factories) > 12 else "")
    return msg + f" Factories there: {shown or 'none'}."


def _is_factory(obj) -> bool:
    """An ``nn.Module`` class or a function: what a SPEC names (not modules, constants or other classes)."""
    import inspect

    return (isinstance(obj, type) and issubclass(obj, torch.nn.Module)) or inspect.isfunction(obj)


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


# ---- HuggingFace and timm models, built with random weights (nothing is downloaded) ----------------------
def _hf_kind(obj) -> str | None:
    """``"model"`` for a ``transformers`` PreTrainedModel class, ``"auto"`` for an AutoModel* class, else None."""
    if "transformers" not in sys.modules or not isinstance(obj, type):
        return None  # an HF class can only be reached once transformers is imported
    from transformers import PreTrainedModel

    try:
        from transformers.models.auto.auto_factory import _BaseAutoModelClass
    except ImportError:  # a transformers without it: no AutoModel classes here
        _BaseAutoModelClass = ()
    return "model" if issubclass(obj, PreTrainedModel) else "auto" if issubclass(obj, _BaseAutoModelClass) else None


def _hf_model(cls, kind: str, s: Spec, config: dict) -> tuple[torch.nn.Module, Any]:
    """``cls(cls.config_class(**config))``, or ``cls.from_config(AutoConfig.for_model(model_type, **config))`` for
    an AutoModel class; keys in the SPEC's parentheses are config keys too. ``use_cache`` is off unless given (the
    forward then returns tensors only). The example is the model's main input (see ``_hf_example``)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if s.args:
        raise CliError(f"{s.text}: a HuggingFace model class takes a config, not positional arguments. Give config "
                       f"keys as {s.target}:{s.attr}(hidden_size=32) or --config hidden_size=32.")
    config = {**config, **s.kwargs}
    model_type = config.pop("model_type", None)
    if kind == "auto":
        if model_type is None:
            raise CliError(f"{s.text}: {cls.__name__} picks the architecture from the config's model_type: give "
                           "--config model_type=gpt2 (and sizes, e.g. --config n_layer=2), or name the class "
                           "(transformers:GPT2Model).")
        if model_type not in CONFIG_MAPPING:
            close = difflib.get_close_matches(str(model_type), list(CONFIG_MAPPING.keys()), n=4)
            raise CliError(f"--config model_type={model_type}: transformers has no such model type"
                           + (f"; did you mean {', '.join(close)}?" if close else ".")
                           + " See transformers.CONFIG_MAPPING for the names.")
        config_cls = CONFIG_MAPPING[model_type]
    else:
        config_cls = cls.config_class
        if model_type is not None and model_type != config_cls.model_type:
            raise CliError(f"--config model_type={model_type}: {cls.__name__} is a {config_cls.model_type!r} model. "
                           f"Drop model_type, or use transformers:AutoModel with model_type={model_type}.")
    known = _config_keys(config_cls)
    unknown = [k for k in config if k not in known and not k.startswith("_")]
    if unknown:
        k = unknown[0]
        close = difflib.get_close_matches(k, sorted(known), n=3)
        raise CliError(f"{config_cls.__name__} has no config key {k!r}" + (f"; did you mean {', '.join(close)}?"
                       if close else ".") + " HuggingFace would keep an unknown key as an unused attribute; bridge "
                       "refuses it so that a typo does not go unnoticed.")
    if "use_cache" in known:
        config.setdefault("use_cache", False)
    from transformers.utils import logging as hf_logging

    torch.manual_seed(SEED)
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # e.g. "bos_token_id is not within the vocabulary" of a tiny test config
    try:
        with contextlib.redirect_stdout(sys.stderr):
            cfg = config_cls(**config)
            model = cls(cfg) if kind == "model" else cls.from_config(cfg)
    except Exception as e:  # noqa: BLE001 - transformers' own checks of the config
        raise CliError(f"building {s.text} from {config_cls.__name__}({_call_text(config)}) raised "
                       f"{_sentence(e)} Fix the config keys.") from e
    finally:
        hf_logging.set_verbosity(level)
    return model, _hf_example(model)


def _sentence(e: BaseException) -> str:
    """``TypeName: message.``: an exception from a library as a sentence of a bridge error."""
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" + ("" if text.endswith((".", "!", "?")) else ".")


def _call_text(kwargs: dict, limit: int = 200) -> str:
    """``{"a": 1, "b": "x"}`` -> ``a=1, b='x'``, cut to ``limit`` characters."""
    text = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _config_keys(config_cls) -> set[str]:
    """What a config class knows: its defaults, its and PretrainedConfig's constructor arguments, its aliases."""
    import inspect

    from transformers import PretrainedConfig

    keys = set(config_cls().to_dict()) | set(getattr(config_cls, "attribute_map", {})) | {"num_labels", "torch_dtype"}
    for c in (config_cls, PretrainedConfig):
        keys |= {n for n, p in inspect.signature(c.__init__).parameters.items()
                 if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    return keys


def _hf_example(model) -> tuple | None:
    """The default input of an HF model: its ``main_input_name`` when that is the first argument of ``forward``:
    ``input_ids`` (1, 8) int64 drawn from the vocabulary, or ``pixel_values`` (1, C, H, W) float from the config's
    ``num_channels`` and ``image_size``. None for any other (give --input)."""
    import inspect

    name = getattr(model, "main_input_name", None)
    params = [n for n in inspect.signature(model.forward).parameters]
    if not params or params[0] != name:
        return None
    gen = torch.Generator().manual_seed(SEED)
    cfg = model.config
    if name == "input_ids":
        vocab = getattr(cfg.get_text_config(), "vocab_size", None)
        return (torch.randint(0, vocab, (1, HF_SEQ), generator=gen),) if isinstance(vocab, int) else None
    if name == "pixel_values":
        size = getattr(cfg, "image_size", None)
        hw = (size, size) if isinstance(size, int) else tuple(size) if isinstance(size, (list, tuple)) else None
        return (torch.randn(1, getattr(cfg, "num_channels", 3), *hw, generator=gen),) if hw else None
    return None


def _timm_model(s: Spec, config: dict | None) -> tuple[torch.nn.Module, Any]:
    """``timm:NAME(kwargs)`` -> ``timm.create_model(NAME, pretrained=False, **kwargs)``, with the example input
    ``(1, *pretrained_cfg["input_size"])``."""
    try:
        import timm
    except ImportError as e:
        raise CliError(f"{s.text} names a timm model, and timm is not installed: pip install timm.") from e
    if config:
        raise CliError(f"--config applies to HuggingFace model classes; a timm model takes keyword arguments in "
                       f"the SPEC: 'timm:{s.attr}(num_classes=10)'.")
    if s.args:
        raise CliError(f"{s.text}: timm.create_model takes keyword arguments only: 'timm:{s.attr}(num_classes=10)'.")
    if s.kwargs.get("pretrained"):
        raise CliError(f"{s.text}: bridge downloads no weights; timm models are built with random weights. "
                       "Drop pretrained=True.")
    if not timm.is_model(s.attr):
        close = difflib.get_close_matches(s.attr, timm.list_models(), n=5, cutoff=0.6)
        raise CliError(f"timm has no model {s.attr!r}" + (f"; did you mean {', '.join(close)}?" if close else ".")
                       + " timm.list_models('*pattern*') lists the names.")
    kwargs = {k: v for k, v in s.kwargs.items() if k != "pretrained"}
    torch.manual_seed(SEED)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            model = timm.create_model(s.attr, pretrained=False, **kwargs)
    except Exception as e:  # noqa: BLE001 - timm's own checks of the arguments
        raise CliError(f"timm.create_model({', '.join([repr(s.attr), _call_text(kwargs)]).rstrip(', ')}) raised "
                       f"{_sentence(e)} Fix the arguments in the SPEC.") from e
    size = (getattr(model, "pretrained_cfg", None) or {}).get("input_size")
    example = (torch.randn((1, *size), generator=torch.Generator().manual_seed(SEED)),) if size else None
    return model, example


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

    def node(n) -> dict:
        out = {"op": n.op, "inputs": [v.name for v in n.inputs], "outputs": [val(v) for v in n.outputs],
               "scope": n.scope.path, "module_type": n.scope.type, "source": n.source}
        if n.regions:  # control flow: each region's inputs, nodes and outputs, nested the same way
            out["regions"] = {key: {"inputs": [val(v) for v in r.inputs], "nodes": [node(m) for m in r.nodes],
                                    "outputs": [val(o) if isinstance(o, Value) else {"const": repr(o)}
                                                for o in r.outputs]} for key, r in n.regions}
        return out

    return {
        "model": g.meta.get("model_type"),
        "frontend": g.meta.get("frontend"),
        "inputs": [val(v) for v in g.inputs],
        "params": [{"name": c.name, "names": list(c.names), **spec(c)} for c in g.params],
        "nodes": [node(n) for n in g.nodes],
        "outputs": [val(o) if isinstance(o, Value) else {"const": repr(o)} for o in g.outputs],
        "num_params": sum(c.const.numel() for c in g.params),
    }
