"""Moved to ``bridge.ops.layers`` (nodes back to torch layers is the inverse of the registry's module spellings,
not a backend); this alias keeps old imports and pickled ``OpCall`` modules loading."""
from ..ops.layers import INPUT, OpCall, equal_constants, op_call, rebuild_layer  # noqa: F401
