"""bridge: any PyTorch network as an explicit computational graph, and back.

    g = bridge.trace(model, (x,))   # nn.Module / nn.Sequential / fx.GraphModule / ExportedProgram
    print(g)                         # one line per node: op, inputs, output type, module scope
    y = g.run(x)                     # same outputs, same structure as model(x)
    m = g.to_module()                # an ordinary nn.Module (state_dict keys as in the model)
"""
from .errors import (BridgeError, GraphError, InputError, OnnxError, TraceError, TransformError, UnsupportedOpError,
                     ViewError)
from .ir import Graph, Node, Scope, ScalarSpec, TensorSpec, Value
from .trace import trace

__version__ = "0.1.0"

__all__ = ["trace", "to_onnx", "from_onnx", "verify", "draw", "Graph", "Node", "Value", "Scope", "TensorSpec",
           "ScalarSpec", "BridgeError", "TraceError", "InputError", "GraphError", "UnsupportedOpError", "OnnxError", "ViewError",
           "TransformError", "to_sequential", "rewrite", "replace_op", "replace_module", "summary", "topology", "diff",
           "report", "__version__"]

# onnx and onnxruntime load only when an ONNX function is first used
_LAZY = {"to_onnx": ("bridge.backends.onnx", "to_onnx"), "from_onnx": ("bridge.frontends.onnx", "from_onnx"),
         "verify": ("bridge.backends.ort", "verify"),
         "draw": ("bridge.views.draw", "draw"),
         # transformations: the passes and the sequential view load on first use
         "to_sequential": ("bridge.views.sequential", "to_sequential"),
         "rewrite": ("bridge.passes.rewrite", "rewrite"), "replace_op": ("bridge.passes.replace", "replace_op"),
         "replace_module": ("bridge.passes.replace", "replace_module"),
         # analysis: summary table, topology, diff, two-view report
         "summary": ("bridge.analysis.summary", "summary"), "topology": ("bridge.analysis.topology", "topology"),
         "diff": ("bridge.analysis.diff", "diff"), "report": ("bridge.analysis.report", "report")}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        value = getattr(importlib.import_module(mod), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bridge' has no attribute {name!r}")
