"""Graph passes. A pass is a function ``pass_(graph) -> (graph, changed)`` that keeps ``graph.check()``
true and shapes right; ``run_passes`` applies a list until nothing changes.

Passes by name (``PASSES``): dce, cse (merge pure nodes with the same op and arguments), fold (constant
folding), freeze_metadata (a tensor's device/dtype/ndim become the traced values: for export), fuse_bn
(conv/linear + batchnorm), fuse_linear (matmul by a transposed weight plus a bias: one linear), fuse_gelu (GELU
written out with erf or tanh: one gelu, checked on sample values), fuse_adaptive_pool (adaptive pooling written
out per dim as slices and reductions: one adaptive pooling), remove_dropout,
remove_identity, cancel_reorders (chunks of a tensor split and concatenated back in order, and chains of
reshapes/permutes that leave every element in place, become the tensor: what an ONNX round trip of an LSTM's
gate order leaves; ``bridge.from_onnx`` runs it, fuse_linear, fuse_gelu and fuse_adaptive_pool), compose_moves
(a chain of reshapes and permutes: at most reshape, permute, reshape), and decompose
(linear, addmm, gelu, silu, layer_norm into matmul/add/erf/... primitives; never run by default). Aliases:
``fuse``, ``dropout``, ``identity``.

Every pass also runs inside the regions of control-flow nodes (``cond``, ``while_loop``, ...), and dce and fold
work across their boundary: regions.py.

Transformations that take arguments are functions beside them, changing the graph in place:
``replace_op``/``replace_module`` (replace.py) and ``rewrite`` (rewrite.py, torch-function patterns).
"""
from __future__ import annotations

from typing import Callable, Iterable

from ..errors import BridgeError
from ..ir.graph import Graph
from .regions import in_regions

PassFn = Callable[[Graph], "tuple[Graph, bool]"]
PASSES: dict[str, PassFn] = {}


def register_pass(name: str):
    """Register a pass under ``name``; it runs inside every region of a control-flow node too (innermost first,
    then on the graph: ``regions.in_regions``), so a pass is written for one flat graph."""
    def deco(fn: PassFn) -> PassFn:
        if name in PASSES:
            raise BridgeError(f"pass {name!r} registered twice")
        run = in_regions(fn)
        PASSES[name] = run
        run.pass_name = name
        return run
    return deco


# short names the command line (and run_passes) accept: bridge optimize ... --passes fold,fuse,dce
ALIASES = {"fuse": "fuse_bn", "dropout": "remove_dropout", "identity": "remove_identity"}


def resolve(names: Iterable[str]) -> list[str]:
    """Pass names with aliases (``fuse`` -> ``fuse_bn``) resolved; unknown names raise ``BridgeError``."""
    _load()
    names = list(names)
    out = [ALIASES.get(n, n) for n in names]
    unknown = [n for n, r in zip(names, out) if r not in PASSES]
    if unknown:
        raise BridgeError(f"unknown pass(es) {unknown}; known: {sorted(PASSES)}, aliases: "
                          + ", ".join(f"{a}={p}" for a, p in ALIASES.items()))
    return out


def inference_passes() -> list[str]:
    """What ONNX export runs by default: every inference-only simplification."""
    return ["remove_dropout", "remove_identity", "freeze_metadata", "fuse_bn", "fold", "dce"]


def import_passes() -> list[str]:
    """What ``bridge.from_onnx`` runs on an imported graph: the ops ONNX's op set wrote out, read back as the ops
    the model called (``bridge.from_onnx`` says which and why)."""
    return ["remove_identity", "cancel_reorders", "compose_moves", "fuse_linear", "fuse_gelu", "cse",
            "fuse_adaptive_pool", "recompose", "dce"]


class PassManager:
    """Runs passes in order, repeating the whole list until a round changes nothing."""

    def __init__(self, passes: Iterable[str | PassFn], max_rounds: int = 10, check: bool = True):
        passes = list(passes)
        names = iter(resolve([p for p in passes if isinstance(p, str)]))  # aliases; unknown names raise
        self.passes = [PASSES[next(names)] if isinstance(p, str) else p for p in passes]
        self.max_rounds = max_rounds
        self.check = check

    def __call__(self, g: Graph) -> tuple[Graph, bool]:
        any_change = False
        for _ in range(self.max_rounds):
            changed = False
            for p in self.passes:
                g, c = p(g)
                if c and self.check:
                    g.check()
                changed |= c
            any_change |= changed
            if not changed:
                break
        return g, any_change


def run_passes(g: Graph, names: Iterable[str], copy: bool = True) -> Graph:
    """``g`` (a copy unless ``copy=False``) after the named passes (aliases accepted) run to a fixpoint."""
    out = PassManager(names, check=False)(g.copy() if copy else g)[0]
    return out.check()  # once at the end: checking after every pass made export's passes O(passes x nodes)


def all_passes() -> dict[str, PassFn]:
    """Every registered pass by name (the pass modules are imported on first use)."""
    _load()
    return dict(PASSES)


_loaded = False


def _load() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        from . import cse, dce, decompose, fold, fuse_bn, recompose, simplify  # noqa: F401
