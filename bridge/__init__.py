"""bridge: any PyTorch network as an explicit computational graph, and back.

    g = bridge.trace(model, (x,))   # nn.Module / nn.Sequential / fx.GraphModule / ExportedProgram
    print(g)                         # one line per node: op, inputs, output type, module scope
    y = g.run(x)                     # same outputs, same structure as model(x)
    m = g.to_module()                # an ordinary nn.Module (state_dict keys as in the model)
"""
from .errors import BridgeError, GraphError, InputError, OnnxError, TraceError, UnsupportedOpError
from .ir import Graph, Node, Scope, ScalarSpec, TensorSpec, Value
from .trace import trace

__version__ = "0.1.0"

__all__ = ["trace", "to_onnx", "verify", "Graph", "Node", "Value", "Scope", "TensorSpec", "ScalarSpec",
           "BridgeError", "TraceError", "InputError", "GraphError", "UnsupportedOpError", "OnnxError", "__version__"]

# onnx and onnxruntime load only when an ONNX function is first used
_LAZY = {"to_onnx": ("bridge.backends.onnx", "to_onnx"), "verify": ("bridge.backends.ort", "verify")}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        value = getattr(importlib.import_module(mod), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bridge' has no attribute {name!r}")
