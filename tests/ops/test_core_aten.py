"""PyTorch's Core ATen opset against the registry (bridge/ops/core_aten.py): every core overload of the
installed torch is a canonical op's aten spelling with an ONNX lowering, or is listed with its reason. A torch
release that adds a core operator fails here until bridge maps it or says why not."""
from __future__ import annotations

import pytest

from bridge.ops import core_aten, registry


def test_core_aten_is_enumerated_from_the_installed_torch():
    core = core_aten.core_overloads()
    assert len(core) > 150 and "aten.convolution.default" in core and "aten.add.Tensor" in core


def test_every_core_aten_operator_is_a_canonical_op_or_listed_with_its_reason():
    unknown = core_aten.coverage()["unknown"]
    assert not unknown, ("core ATen operators with neither a canonical op nor a reason in bridge/ops/core_aten.py "
                         "(map them: docs/concepts.md 'Adding an op'): " + ", ".join(unknown))


def test_the_lists_only_shrink():
    """An operator mapped since it was listed leaves the list (one another torch release does not tag core may
    stay: torch 2.5 and newer are supported)."""
    cov = core_aten.coverage()
    listed = set(core_aten.EXCLUDED) | set(core_aten.NOT_YET)
    assert not listed & set(cov["mapped"]), f"mapped now, take off the lists: {sorted(listed & set(cov['mapped']))}"


@pytest.mark.parametrize("op", core_aten.coverage()["mapped"])
def test_core_operator_resolves_to_a_canonical_op_with_a_lowering(op):
    opdef, _ = registry._BY_ATEN[op]
    assert registry.get(opdef.name) is opdef and opdef.onnx is not None, f"{op} -> {opdef.name} has no lowering"
