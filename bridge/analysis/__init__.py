"""Analysis of a bridge Graph: per-node costs, the summary table, topology, diff and the two-view report.

``node_costs`` / ``NodeCost`` (bridge/analysis/costs.py) is the one cost model: pictures, passes and the
summary all read it. ``bridge.summary``, ``bridge.topology``, ``bridge.diff`` and ``bridge.report`` are the
functions of the submodules of those names; ``module_rows(g, depth)`` is the layer view other code builds on.
"""
from .costs import NodeCost, node_costs
from .diff import Diff, NodeChange
from .memory import Liveness, liveness
from .report import Layer, Report
from .summary import Row, Summary, module_rows, node_rows
from .topology import Skip, Topology

# the functions bridge.summary / topology / diff / report live in the submodules of the same names
__all__ = ["NodeCost", "node_costs", "Liveness", "liveness", "Summary", "Row", "module_rows", "node_rows",
           "Topology", "Skip", "Diff", "NodeChange", "Report", "Layer"]
