"""Analysis of a bridge Graph: per-node costs, the summary table, topology, diff and the two-view report.

``node_costs`` / ``NodeCost`` (bridge/analysis/costs.py) is the one cost model: pictures, passes and the
summary all read it. ``bridge.summary``, ``bridge.topology``, ``bridge.diff`` and ``bridge.report`` are the
functions of the submodules of those names; ``module_rows(g, depth)`` is the layer view other code builds on.
"""
# the names below load their submodule on first use: bridge.summary needs costs, memory and summary, not diff,
# report and topology
_LAZY = {"NodeCost": "costs", "node_costs": "costs", "Diff": "diff", "NodeChange": "diff", "Liveness": "memory",
         "liveness": "memory", "Layer": "report", "Report": "report", "Row": "summary", "Summary": "summary",
         "module_rows": "summary", "node_rows": "summary", "Skip": "topology", "Topology": "topology"}

# the functions bridge.summary / topology / diff / report live in the submodules of the same names
__all__ = ["NodeCost", "node_costs", "Liveness", "liveness", "Summary", "Row", "module_rows", "node_rows",
           "Topology", "Skip", "Diff", "NodeChange", "Report", "Layer"]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
