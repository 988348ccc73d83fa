"""onnx's backend test suite (its node test cases) run by onnx's own ``BackendTest`` runner over bridge's ONNX
backend (bridge/backends/onnx_backend.py). The cases bridge does not pass yet are excluded, each with its reason
(tests/golden/onnx_conformance_exclusions.json, written by ``python -m tests.onnx_conformance --write``); that
list only shrinks: an excluded case that passes fails ``test_excluded_cases_still_fail`` until it is taken off."""
import re
import warnings

import numpy as np
import onnx
import onnx.backend.test
import pytest

from bridge.backends import onnx_backend
from tests import onnx_conformance

EXCLUDED = onnx_conformance.load_exclusions()
CASES = onnx_conformance.node_cases()
PASSING_AT_LEAST = 1554  # node cases passing when the list was written (2026-12-05); it only goes up

_backend_test = onnx.backend.test.BackendTest(onnx_backend, __name__)
# onnx's node cases only (its other kinds download models), on the CPU, less the excluded ones
_backend_test.include("^(" + "|".join(re.escape(c.name) for c in CASES) + ")_cpu$")
for _name in EXCLUDED:
    _backend_test.exclude(f"^{re.escape(_name)}_cpu$")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    globals().update(_backend_test.test_cases)


def test_excluded_cases_still_fail():
    """The exclusion list only shrinks: a case on it that passes now must come off it."""
    passing = [c.name for c in CASES if c.name in EXCLUDED and onnx_conformance.run_case(c) is None]
    assert not passing, f"these excluded cases pass now; remove them from {onnx_conformance.EXCLUSIONS_FILE}: " \
                        f"{passing}"


def test_every_exclusion_names_a_case_and_a_reason():
    names = {c.name for c in CASES}
    unknown = sorted(set(EXCLUDED) - names)
    assert not unknown, f"excluded cases onnx no longer has: {unknown}"
    assert all(isinstance(v, str) and v.strip() for v in EXCLUDED.values())
    assert len(names) - len(EXCLUDED) >= PASSING_AT_LEAST


def test_backend_api_runs_a_model_and_a_node():
    """prepare/run with a list, one array and a dict; run_model; run_node on a node alone; supports_device."""
    from onnx import helper, TensorProto

    x = np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    want = np.maximum(x, 0)
    rep = onnx_backend.prepare(model)
    for inputs in ([x], x, {"x": x}):
        (y,) = rep.run(inputs)
        np.testing.assert_array_equal(y, want)
    np.testing.assert_array_equal(onnx_backend.run_model(model, [x])[0], want)
    np.testing.assert_array_equal(onnx_backend.run_node(node, [x])[0], want)
    assert onnx_backend.supports_device("CPU") and not onnx_backend.supports_device("TPU")
    with pytest.raises(ValueError, match="missing inputs"):
        rep.run({"z": x})


def test_docs_table_matches_the_exclusion_list():
    with open(onnx_conformance.TABLE_FILE, encoding="utf-8") as f:
        assert f.read() == onnx_conformance.table(CASES, EXCLUDED), "rerun: python -m tests.onnx_conformance --write"
