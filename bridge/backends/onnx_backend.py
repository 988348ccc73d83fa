"""bridge as a standard ONNX backend (``onnx.backend.base.Backend``): ``prepare`` imports a model with
``bridge.from_onnx`` and generates its torch module (``Graph.to_module``); the returned ``BackendRep`` runs it
on numpy inputs. onnx's own backend test suite runs over it (tests/test_onnx_conformance.py), as it runs over
onnxruntime's backend.

    from bridge.backends import onnx_backend
    rep = onnx_backend.prepare(onnx.load("model.onnx"))      # or onnx_backend.run_model(model, [x])
    (y,) = rep.run([x])

Inputs are the graph's inputs (initializers excluded) in order, as a list or tuple of arrays, one array, or a dict
by name. Outputs are numpy arrays in the graph's output order (bfloat16 as ml_dtypes' bfloat16). Devices: "CPU",
and "CUDA" where torch sees a GPU (the module and its inputs move there; outputs come back to the host).
"""
from __future__ import annotations

from collections import namedtuple
from typing import Any

import numpy as np
import onnx
import torch
from onnx.backend.base import Backend, BackendRep

from ..ir import structure
from ..ops.onnx_helpers import BITS


def _device(device: str) -> torch.device:
    kind = str(device).split(":")[0].upper()
    if kind == "CPU":
        return torch.device("cpu")
    if kind == "CUDA":
        return torch.device("cuda", int(str(device).split(":")[1]) if ":" in str(device) else 0)
    raise ValueError(f"unknown device {device!r}: 'CPU' or 'CUDA'")


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")  # ml_dtypes names its types as torch does: bfloat16, float8_e4m3fn


_BY_NAME = {_name(dt): dt for dt in BITS}


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    if t.dtype in BITS:  # bfloat16, float8: their bits, read as ml_dtypes' type
        import ml_dtypes

        return t.view(BITS[t.dtype]).numpy().view(getattr(ml_dtypes, _name(t.dtype)))
    return t.numpy()


def _to_tensor(a: Any, device: torch.device) -> torch.Tensor:
    a = np.asarray(a)
    dt = _BY_NAME.get(a.dtype.name)
    if dt is not None:  # ml_dtypes' bfloat16, float8: their bits, as torch's type
        bits = {torch.int16: np.int16, torch.uint8: np.uint8}[BITS[dt]]
        t = torch.from_numpy(a.view(bits).copy()).view(dt)
    else:
        t = torch.from_numpy(np.array(a, copy=True))  # writable, contiguous, owned: torch keeps no numpy view
    return t.to(device)


class BridgeRep(BackendRep):
    """A prepared model: the bridge Graph (``graph``) and its generated module (``module``), on ``device``."""

    def __init__(self, model: onnx.ModelProto, device: str = "CPU"):
        from ..frontends.onnx import from_onnx

        self.device = _device(device)
        self.graph = from_onnx(model)
        self.module = self.graph.to_module().to(self.device).eval()
        self.input_names = [v.name for v in self.graph.inputs]
        self.output_names = [o.name for o in model.graph.output]

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        if isinstance(inputs, dict):
            missing = [n for n in self.input_names if n not in inputs]
            if missing:
                raise ValueError(f"missing inputs {missing}; the model takes {self.input_names}")
            inputs = [inputs[n] for n in self.input_names]
        elif isinstance(inputs, np.ndarray) or not isinstance(inputs, (list, tuple)):
            inputs = [inputs]
        args = [_to_tensor(a, self.device) for a in inputs]
        with torch.no_grad():
            out = self.module(*args)
        leaves = structure.flatten(out, lambda o: isinstance(o, torch.Tensor))[0]
        names = self.output_names if len(self.output_names) == len(leaves) else [f"o{i}" for i in range(len(leaves))]
        # rename: an output named like a keyword ("and") or not an identifier becomes _0, _1, ...
        return namedtuple("Outputs", names, rename=True)(*(_to_numpy(t) for t in leaves))


class BridgeBackend(Backend):
    """The backend: ``prepare`` gives a ``BridgeRep``; ``run_model`` and ``run_node`` prepare and run once."""

    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> bool:
        return cls.supports_device(device)

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> BridgeRep:
        return BridgeRep(model, device)

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Any, device: str = "CPU", outputs_info=None, **kwargs: Any):
        """Run one node on ``inputs`` (arrays in the node's input order): a one-node model is built around it,
        with the outputs' element types and shapes from ``outputs_info`` where given (else inferred)."""
        from onnx import helper

        arrays = [np.asarray(a) for a in (inputs if isinstance(inputs, (list, tuple)) else [inputs])]
        graph_inputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
                        for name, a in zip(node.input, arrays) if name]
        outputs = []
        for i, name in enumerate(node.output):
            if outputs_info and i < len(outputs_info):
                dtype, shape = outputs_info[i]
                outputs.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)),
                                                             shape))
            else:
                outputs.append(helper.make_empty_tensor_value_info(name))
        opset = kwargs.get("opset_version") or onnx.defs.onnx_opset_version()
        graph = helper.make_graph([node], f"{node.op_type}_node", graph_inputs, outputs)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        if not outputs_info:
            model = onnx.shape_inference.infer_shapes(model)
        return cls.run_model(model, [a for name, a in zip(node.input, arrays) if name], device)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        try:
            d = _device(device)
        except ValueError:
            return False
        return d.type == "cpu" or torch.cuda.is_available()


prepare = BridgeBackend.prepare
run_model = BridgeBackend.run_model
run_node = BridgeBackend.run_node
supports_device = BridgeBackend.supports_device
is_compatible = BridgeBackend.is_compatible
