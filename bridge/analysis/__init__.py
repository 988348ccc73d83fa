"""Analysis of a bridge Graph: per-node costs, the summary table, topology, diff and the two-view report.

``node_costs`` / ``NodeCost`` (bridge/analysis/costs.py) is the one cost model: pictures, passes and the
summary all read it.
"""
from .costs import NodeCost, node_costs

__all__ = ["NodeCost", "node_costs"]
