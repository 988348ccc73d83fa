"""The ``bridge`` command line. ``bridge inspect SPEC --input 1,3,224,224`` prints the traced graph;
``bridge draw SPEC --input 1,3,224,224 -o g.html`` draws it.

Every error bridge raises on purpose (a bad spec, a factory that fails, an untraceable model, inputs that
do not fit) is printed as one paragraph on stderr with exit status 2, never as a traceback. An unexpected
exception (a bug in bridge) exits 1 with one line; ``--verbose`` shows its traceback and torch's logs.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import warnings

from .version import __version__
from . import cli_support as cs
from .errors import BridgeError

EXIT_ERROR = 2
EXIT_INTERNAL = 1


def _inspect(ns: argparse.Namespace) -> int:
    g = cs.load_graph(ns, ns.verbose)  # a factory's model traced, or an .onnx file imported
    print(dumps(cs.graph_json(g)) if ns.json else g)
    return 0


def _export(ns: argparse.Namespace) -> int:
    import bridge

    loaded = cs.load(ns)
    g = cs.trace(loaded, ns.frontend, ns.verbose)
    optimize = [p for p in ns.passes.split(",") if p] if ns.passes is not None else not ns.no_optimize
    proto = bridge.to_onnx(g, ns.output, opset=ns.opset, optimize=optimize)
    size = os.path.getsize(ns.output)
    print(f"wrote {ns.output}: opset {proto.opset_import[0].version}, {len(proto.graph.node)} nodes, "
          f"{len(proto.graph.initializer)} initializers, {size / 2**20:.2f} MiB; inputs "
          + ", ".join(f"{i.name}{_dims(i)}" for i in proto.graph.input) + "; outputs "
          + ", ".join(o.name for o in proto.graph.output))
    return 0


def _dims(vi) -> str:
    return "[" + ", ".join(d.dim_param or str(d.dim_value) for d in vi.type.tensor_type.shape.dim) + "]"


def _verify(ns: argparse.Namespace) -> int:
    import bridge

    loaded = cs.load(ns)
    # bridge.verify checks the inputs against the file before the model runs: a misfit is an InputError, exit 2
    rep = bridge.verify(loaded.model, ns.onnx, loaded.args, loaded.kwargs, atol=ns.atol, rtol=ns.rtol)
    print(rep)
    return 0 if rep.ok else 3


def _draw(ns: argparse.Namespace) -> int:
    import bridge

    g = cs.load_graph(ns, ns.verbose)  # a factory's model traced, or an .onnx file imported
    bridge.draw(g, ns.output, depth=ns.depth, max_nodes=ns.max_nodes)
    print(f"wrote {ns.output}: {len(g.nodes)} ops" + (f", folded at module depth {ns.depth}" if ns.depth else ""))
    return 0


def _optimize(ns: argparse.Namespace) -> int:
    import bridge
    from .passes import inference_passes, resolve, run_passes

    g = cs.load_graph(ns, ns.verbose)  # a factory's model traced, or an .onnx file imported
    names = resolve([p for p in ns.passes.split(",") if p]) if ns.passes is not None else inference_passes()
    before = len(g.nodes)
    opt = run_passes(g, names)
    proto = bridge.to_onnx(opt, ns.output, opset=ns.opset, optimize=False)
    print(f"passes {','.join(names) or '(none)'}: {before} -> {len(opt.nodes)} nodes, {len(opt.params)} "
          f"parameters; wrote {ns.output}: opset {proto.opset_import[0].version}, {len(proto.graph.node)} ONNX nodes")
    return 0


def _sequential(ns: argparse.Namespace) -> int:
    import torch

    import bridge
    from .views.sequential import StagedSequential

    g = cs.load_graph(ns, ns.verbose)  # a factory's model traced, or an .onnx file imported
    seq = bridge.to_sequential(g, stages=ns.stages, balance=ns.balance)
    if isinstance(seq, StagedSequential):
        print(f"{len(seq)} stages ({g.meta.get('model_type', 'graph')}, {len(g.nodes)} nodes"
              + (f", ideal largest stage {seq.ideal} {seq.balance}" if seq.ideal is not None else "") + ")")
        print(seq.describe())
    else:
        print(seq)
    if ns.save:
        from .fileio import atomic_write

        with atomic_write(ns.save, "wb") as f:  # a failure leaves what was there
            torch.save(seq, f)  # the whole module: stage modules pickle too (bridge.backends.torch)
        parts = "stages" if isinstance(seq, StagedSequential) else "layers"
        print(f"wrote {ns.save}: the {type(seq).__name__} ({len(seq)} {parts}, {len(seq.state_dict())} tensors); "
              f"load it with torch.load({ns.save!r}, weights_only=False)")
    return 0


def _demo(ns: argparse.Namespace) -> int:
    from .demo import run_demo

    if os.path.exists(ns.out) and not os.path.isdir(ns.out):
        raise cs.CliError(f"--out {ns.out} is a file: give a folder (bridge demo writes several files into it).")
    rep = run_demo(ns.out, ns.model)["verify"]
    return 0 if rep.ok else 3


def _analysis_input(ns: argparse.Namespace, spec: str, *, own_inputs: bool = True):
    """(graph, example args or None) of one SPEC or ``.onnx`` file, for the analysis verbs. With
    ``own_inputs=False`` an ``.onnx`` file ignores --input/--dtype/--dynamic (they are the other SPEC's)."""
    if cs.is_onnx_spec(spec):
        extra = {} if own_inputs else {"input": [], "dtype": [], "dynamic": [], "config": []}
        return cs.load_graph(argparse.Namespace(**{**vars(ns), "spec": spec, **extra}), ns.verbose), None
    loaded = cs.load(argparse.Namespace(**{**vars(ns), "spec": spec}))
    return cs.trace(loaded, ns.frontend, ns.verbose), (loaded.args, loaded.kwargs)


def _summary(ns: argparse.Namespace) -> int:
    import bridge

    g, _ = _analysis_input(ns, ns.spec)
    s = bridge.summary(g, depth=ns.depth, by=ns.by, dims=_dims_option(ns.dims))
    print(dumps(s.to_dict()) if ns.json else s.to_csv() if ns.csv else s, end="" if ns.csv else "\n")
    return 0


def _topology(ns: argparse.Namespace) -> int:
    import bridge

    g, _ = _analysis_input(ns, ns.spec)
    t = bridge.topology(g)
    print(json.dumps(t.to_dict(), indent=1) if ns.json else t)
    return 0


def _report(ns: argparse.Namespace) -> int:
    import bridge

    g, _ = _analysis_input(ns, ns.spec)
    r = bridge.report(g, depth=ns.depth, dims=_dims_option(ns.dims))
    fmt = _report_format(ns)
    text = {"text": r.to_text, "markdown": r.to_markdown, "json": r.to_json, "html": r.to_html}[fmt]()
    if ns.output:
        from .fileio import atomic_write

        with atomic_write(ns.output) as f:  # a failure leaves what was there
            f.write(text if text.endswith("\n") else text + "\n")
        print(f"wrote {ns.output}: {fmt}, {len(r.layers)} layers, {len(g.nodes)} nodes")
    else:
        print(text, end="" if text.endswith("\n") else "\n")
    return 0


_REPORT_SUFFIXES = {".txt": "text", ".md": "markdown", ".json": "json", ".html": "html", ".htm": "html"}


def _report_format(ns: argparse.Namespace) -> str:
    """What ``bridge report`` writes: --format (or --json), else by the suffix of -o, else text. An -o whose
    suffix names none of them is refused (before tracing) rather than written as text under a misleading name."""
    if ns.json or ns.format:
        return "json" if ns.json else ns.format
    if ns.output is None:
        return "text"
    fmt = _REPORT_SUFFIXES.get(os.path.splitext(ns.output)[1].lower())
    if fmt is None:
        raise cs.CliError(f"-o {ns.output}: bridge report writes .txt (text), .md (Markdown), .json or .html (one "
                          "page); give -o one of those suffixes, or --format text|markdown|json|html to write that "
                          "format under this name.")
    return fmt


def _diff(ns: argparse.Namespace) -> int:
    import bridge

    both_onnx = cs.is_onnx_spec(ns.spec) and cs.is_onnx_spec(ns.spec_b)
    ga, ex_a = _analysis_input(ns, ns.spec, own_inputs=both_onnx)
    gb, ex_b = _analysis_input(ns, ns.spec_b, own_inputs=both_onnx)
    args, kwargs = None, None
    if not ns.no_values:
        args, kwargs = ex_a or ex_b or (cs.graph_inputs(ga), {})
    d = bridge.diff(ga, gb, args, kwargs, atol=ns.atol, rtol=ns.rtol)
    print(d.to_json() if ns.json else d)
    return 3 if d.changed_anything else 0


# what each verb writes: (attribute, how the command line names it)
_OUTPUTS = {"export": ("output", "OUT.onnx"), "optimize": ("output", "OUT.onnx"), "draw": ("output", "-o"),
            "report": ("output", "-o"), "sequential": ("save", "--save")}


def _check_options(ns: argparse.Namespace) -> None:
    """Refuse bad option values before any model is built or traced, each as a ``CliError`` naming the option:
    out-of-range numbers, an --opset outside what bridge exports, a --dims that is not NAME=SIZE, an output
    path that cannot be written (or a drawing suffix bridge does not know), an input file that is not there."""
    if ns.command in _OUTPUTS:
        attr, option = _OUTPUTS[ns.command]
        if getattr(ns, attr) is not None:
            cs.check_output(getattr(ns, attr), option)
    if ns.command == "report":
        _report_format(ns)
    if getattr(ns, "opset", None) is not None:
        _check_opset(ns.opset)
    depth = getattr(ns, "depth", None)
    if ns.command == "draw":
        from .views.draw import check_target

        check_target(ns.output, depth)
    elif depth is not None and depth < (0 if ns.command == "summary" else 1):
        raise cs.CliError(f"--depth {depth}: give a module depth of {0 if ns.command == 'summary' else 1} or more "
                          f"({'0 = the model alone, ' if ns.command == 'summary' else ''}1 = its top-level modules), "
                          "or leave it out.")
    for opt in ("max_nodes", "stages"):
        value = getattr(ns, opt, None)
        if value is not None and value < 1:
            raise cs.CliError(f"--{opt.replace('_', '-')} {value}: give 1 or more.")
    for opt in ("atol", "rtol"):
        value = getattr(ns, opt, None)
        if value is not None and not (value >= 0 and value != float("inf")):
            raise cs.CliError(f"--{opt} {value}: a tolerance is a finite number, 0 or more.")
    _dims_option(getattr(ns, "dims", None))
    if getattr(ns, "onnx", None) is not None:
        cs.check_input_file(ns.onnx, "FILE.onnx")
    for spec in (getattr(ns, "spec", None), getattr(ns, "spec_b", None)):
        if spec is not None and cs.is_onnx_spec(spec):
            cs.check_input_file(spec, "ONNX file")


def _check_opset(opset: int) -> None:
    from .backends.onnx import check_opset

    try:
        check_opset(opset)  # the one rule bridge.to_onnx applies too
    except BridgeError as e:
        raise cs.CliError(f"--opset {opset}: {e}") from None


def _dims_option(items: list[str]) -> dict[str, int] | None:
    """``["batch=8"]`` -> ``{"batch": 8}``: sizes for symbolic dims (an ONNX file's dim_params)."""
    out = {}
    for item in items or ():
        name, sep, size = item.partition("=")
        if not sep or not name.strip() or not re.fullmatch(r"[0-9]+", size.strip()):
            raise cs.CliError(f"--dims {item!r}: write NAME=SIZE, e.g. --dims batch=8.")
        out[name.strip()] = int(size)
    return out or None


def dumps(obj: dict) -> str:
    """JSON with one line per top-level key, and one line per element of a list of objects."""
    lines = []
    for k, v in obj.items():
        if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            body = ",\n".join("    " + json.dumps(x) for x in v)
            lines.append(f"  {json.dumps(k)}: [\n{body}\n  ]")
        else:
            lines.append(f"  {json.dumps(k)}: {json.dumps(v)}")
    return "{\n" + ",\n".join(lines) + "\n}"


def _verb(sub, common, name: str, func, help: str, description: str) -> argparse.ArgumentParser:
    """A verb over a model: SPEC and the input options, then the verb's own options."""
    v = sub.add_parser(name, parents=[common], help=help, description=description)
    cs.add_model_arguments(v, onnx=name not in ("export", "verify"))  # the others load SPEC with cs.load_graph
    v.set_defaults(func=func)
    return v


def _opset_option(v: argparse.ArgumentParser) -> None:
    v.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the newest onnxruntime runs)")


def _tolerance_options(v: argparse.ArgumentParser) -> None:
    v.add_argument("--atol", type=float, default=1e-5, help="absolute tolerance x max(1, output scale)")
    v.add_argument("--rtol", type=float, default=1e-4)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bridge",
        description="See any PyTorch model as an explicit computational graph. SPEC is path/to/file.py:factory "
                    "or package.module:factory, with literal arguments if any (quote it: 'm.py:Net(4, width=8)'); "
                    "the factory returns an nn.Module or (model, example_args). transformers:CLASS (with --config) "
                    "and timm:MODEL_NAME build those libraries' models with random weights. See docs/cli.md.")
    p.add_argument("--version", action="version", version=f"bridge {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true",
                        help="show torch's logs while tracing, and the traceback of an unexpected error")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    dem = sub.add_parser("demo", parents=[common], help="the main job end to end on a model that ships with bridge",
                         description="Trace a model of bridge's zoo, print its topology and summary, export it to "
                                     "ONNX with a symbolic batch, check the file in onnxruntime against eager "
                                     "PyTorch at another batch size, draw the HTML view, and say where the files "
                                     "are. Exit status 3 if the check fails.")
    dem.add_argument("--out", "-o", default="bridge-demo", metavar="DIR",
                     help="folder for the files (created if missing; default ./bridge-demo)")
    dem.add_argument("--model", default="resnet_mini", metavar="NAME",
                     help="which model of bridge.zoo (default resnet_mini, a small ResNet; also transformer_encoder, "
                          "lstm_tagger, unet_mini, ...: a wrong name lists them)")
    dem.set_defaults(func=_demo)

    ins = _verb(sub, common, "inspect", _inspect, help="trace a model and print its graph",
                description="Trace the model on the given inputs and print the graph, one line per node: "
                            "output name, type, op, inputs and module scope.")
    ins.add_argument("--json", action="store_true", help="print the graph as JSON instead of text")

    exp = _verb(sub, common, "export", _export, help="export a model to ONNX",
                description="Trace the model and write it as ONNX (checked with onnx.checker and shape "
                            "inference), atomically. Inference optimizations are on unless disabled.")
    exp.add_argument("output", metavar="OUT.onnx", help="where to write the ONNX file")
    _opset_option(exp)
    exp.add_argument("--no-optimize", action="store_true", help="no batchnorm/constant folding, keep dropout")
    exp.add_argument("--passes", default=None, metavar="P1,P2",
                     help="exactly these passes (e.g. fuse_bn,fold,dce); '' for none")

    drw = _verb(sub, common, "draw", _draw, help="draw a model: .dot .svg .png .mmd (Mermaid) .html",
                description="Trace the model and draw it; the suffix of -o picks the format: .dot (Graphviz "
                            "text), .svg/.png (rendered by graphviz's dot), .mmd (Mermaid), .html (one "
                            "self-contained page: layer view and graph view side by side).")
    drw.add_argument("-o", "--output", required=True, metavar="OUT", help="where to write: g.svg, g.html, ...")
    drw.add_argument("--depth", type=int, default=None, metavar="N",
                     help="fold modules N levels down into one box (1: top-level modules); .html: the layer "
                          "view's depth (default 1)")
    drw.add_argument("--max-nodes", type=int, default=500, metavar="N",
                     help="past N boxes start folded at the deepest depth that fits (default 500)")

    ver = _verb(sub, common, "verify", _verify, help="compare eager PyTorch with onnxruntime on an ONNX file",
                description="Run the model eagerly and the ONNX file in onnxruntime on the same inputs; "
                            "print the error of each output and, on mismatch, the first diverging node. "
                            "Exit status 3 on mismatch.")
    ver.add_argument("onnx", metavar="FILE.onnx")
    _tolerance_options(ver)

    opt = _verb(sub, common, "optimize", _optimize, help="run graph passes and write the result as ONNX",
                description="Trace SPEC (or import an .onnx file), run the passes to a fixpoint and write "
                            "ONNX. Passes: dce, cse, fold, fuse_bn (alias fuse), remove_dropout (dropout), "
                            "remove_identity (identity), decompose.")
    opt.add_argument("output", metavar="OUT.onnx", help="where to write the ONNX file")
    opt.add_argument("--passes", default=None, metavar="P1,P2",
                     help="passes in order, e.g. fold,fuse,dce (default: every inference pass)")
    _opset_option(opt)

    seq = _verb(sub, common, "sequential", _sequential, help="the model as an nn.Sequential of layers or stages",
                description="Convert the model's graph with bridge.to_sequential: a chain prints as an "
                            "nn.Sequential of layers; anything else as stages cut where few tensors are "
                            "live, with each stage's nodes, cost and the tensors it passes on.")
    seq.add_argument("--stages", type=int, default=None, metavar="K", help="balance K stages")
    seq.add_argument("--balance", choices=("flops", "params", "memory"), default="flops",
                     help="what --stages balances (default flops)")
    seq.add_argument("--save", default=None, metavar="FILE.pt",
                     help="torch.save the Sequential here (load: torch.load(FILE.pt, weights_only=False))")

    smy = _verb(sub, common, "summary", _summary, help="per-layer table: shapes, params, FLOPs, memory",
                description="Trace the model (or import the .onnx file) and print its summary: one row per "
                            "module call down to --depth (or per node with --by node) with output shape, "
                            "parameters, FLOPs, MACs and activation bytes, then the totals (parameters "
                            "trainable and frozen, parameter memory, peak activation memory).")
    smy.add_argument("--depth", type=int, default=3, metavar="N", help="module levels shown (default 3)")
    smy.add_argument("--by", choices=("module", "node"), default="module", help="rows by module or by node")
    smy_fmt = smy.add_mutually_exclusive_group()  # two formats at once: a usage error, not a silent pick
    smy_fmt.add_argument("--json", action="store_true", help="rows and totals as JSON")
    smy_fmt.add_argument("--csv", action="store_true", help="rows as CSV")
    smy.add_argument("--dims", action="append", default=[], metavar="NAME=SIZE",
                     help="size of a symbolic dim for the counts (default: the traced example's; 1 for an ONNX "
                          "dim_param)")

    top = _verb(sub, common, "topology", _topology, help="chain or DAG, branches, merges, skips, depth, width",
                description="Trace the model (or import the .onnx file) and print its topology: chain or "
                            "DAG, branch and merge points, skip connections, depth (longest path) and width "
                            "(most tensors live at once), and whether it can be a plain nn.Sequential.")
    top.add_argument("--json", action="store_true", help="print as JSON")

    rep = _verb(sub, common, "report", _report, help="layer view and graph view side by side, with costs",
                description="The layer view (layers in order, as a Keras summary) beside the graph view "
                            "(nodes with their inputs), then topology, totals and conversions; as text, "
                            "Markdown, JSON or one HTML page.")
    rep.add_argument("--depth", type=int, default=None, metavar="N",
                     help="layers are modules at most N levels down (default: the innermost modules)")
    rep_fmt = rep.add_mutually_exclusive_group()
    rep_fmt.add_argument("--format", choices=("text", "markdown", "json", "html"), default=None,
                         help="default: by the suffix of -o (.txt, .md, .json, .html; another suffix is refused), "
                              "else text")
    rep_fmt.add_argument("--json", action="store_true", help="same as --format json")
    rep.add_argument("--dims", action="append", default=[], metavar="NAME=SIZE",
                     help="size of a symbolic dim for the counts")
    rep.add_argument("-o", "--output", default=None, metavar="OUT", help="write to this file instead of stdout")

    dif = _verb(sub, common, "diff", _diff, help="structural and numeric diff of two models or ONNX files",
                description="Match the nodes of two models (SPECs or .onnx files) by scope and structure and "
                            "print the nodes added, removed and changed; then run both on the same inputs "
                            "(the first SPEC's, or seeded random ones for ONNX files) and print each "
                            "output's difference and the first node whose values diverge. Exit status 3 "
                            "when they differ.")
    dif.add_argument("spec_b", metavar="SPEC_B", help="the second model: a SPEC or an .onnx file")
    dif.add_argument("--no-values", action="store_true", help="structure only: do not run the models")
    _tolerance_options(dif)
    dif.add_argument("--json", action="store_true", help="print as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            if getattr(ns, "train", False):  # --train was asked for, and load_model's warning line said what it means
                warnings.filterwarnings("ignore", message=".*training mode", category=UserWarning)
            _check_options(ns)
            return ns.func(ns)
    except BridgeError as e:
        print(f"bridge {ns.command}: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:  # `bridge inspect ... | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_INTERNAL
    except KeyboardInterrupt:
        print(f"bridge {ns.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # the system refused a file bridge's writers do not wrap (they raise WriteError)
        if e.filename is None:
            return _internal_error(ns, e)
        print(f"bridge {ns.command}: error: cannot use {e.filename}: {e.strerror or e}. Check the path and its "
              "permissions.", file=sys.stderr)
        return EXIT_ERROR
    except Exception as e:  # noqa: BLE001 - a bug in bridge: one line, the traceback with --verbose
        return _internal_error(ns, e)


def _internal_error(ns: argparse.Namespace, e: Exception) -> int:
    """An unexpected exception, a bug in bridge: one line, or its traceback with --verbose."""
    if ns.verbose:
        raise e
    print(f"bridge {ns.command}: internal error: {type(e).__name__}: {e} (a bug in bridge; rerun with "
          "--verbose for the traceback)", file=sys.stderr)
    return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
