"""The ``bridge`` command line. ``bridge inspect SPEC --input 1,3,224,224`` prints the traced graph.

Every error bridge raises on purpose (a bad spec, a factory that fails, an untraceable model, inputs that
do not fit) is printed as one paragraph on stderr with exit status 2, never as a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys

from . import __version__
from . import cli_support as cs
from .errors import BridgeError

EXIT_ERROR = 2


def _inspect(ns: argparse.Namespace) -> int:
    loaded = cs.load(ns)
    g = cs.trace(loaded, ns.frontend)
    if ns.json:
        print(json.dumps(cs.graph_json(g), indent=2))
    else:
        print(g)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bridge",
        description="See any PyTorch model as an explicit computational graph. SPEC is path/to/file.py:factory "
                    "or package.module:factory; the factory returns an nn.Module or (model, example_args).")
    p.add_argument("--version", action="version", version=f"bridge {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    ins = sub.add_parser("inspect", help="trace a model and print its graph",
                         description="Trace the model on the given inputs and print the graph, one line per node: "
                                     "output name, type, op, inputs and module scope.")
    cs.add_model_arguments(ins)
    ins.add_argument("--json", action="store_true", help="print the graph as JSON instead of text")
    ins.set_defaults(func=_inspect)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        return ns.func(ns)
    except BridgeError as e:
        print(f"bridge {ns.command}: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"bridge {ns.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
