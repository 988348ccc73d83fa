"""bridge: any PyTorch network as an explicit computational graph, and back.

    g = bridge.trace(model, (x,))   # nn.Module / nn.Sequential / fx.GraphModule / ExportedProgram
    print(g)                         # one line per node: op, inputs, output type, module scope
    y = g.run(x)                     # same outputs, same structure as model(x)
    m = g.to_module()                # an ordinary nn.Module (state_dict keys as in the model)
"""
from .errors import (BridgeError, GraphError, InputError, OnnxError, TraceError, TransformError, UnsupportedOpError,
                     ViewError, WriteError)
from .ir import Graph, Node, Scope, ScalarSpec, TensorSpec, Value
from .trace import trace
from .version import __version__

__all__ = ["trace", "to_onnx", "from_onnx", "verify", "draw", "Graph", "Node", "Value", "Scope", "TensorSpec",
           "ScalarSpec", "BridgeError", "TraceError", "InputError", "GraphError", "UnsupportedOpError", "OnnxError",
           "ViewError", "WriteError", "TransformError", "to_sequential", "to_pipeline", "rewrite", "replace_op",
           "replace_module", "summary", "topology", "diff", "report", "export_decoder", "__version__"]

# the verbs (bridge/api.py) and what they lead to load on first use: onnx and onnxruntime only when an ONNX
# function is used
_LAZY = {name: ("bridge.api", name) for name in ("to_onnx", "from_onnx", "verify", "draw", "rewrite",
                                                  "replace_module", "summary", "topology", "diff", "report",
                                                  "to_pipeline")}
_LAZY.update(to_sequential=("bridge.views.sequential", "to_sequential"),
             replace_op=("bridge.passes.replace", "replace_op"),
             export_decoder=("bridge.decoders", "export_decoder"))


def __getattr__(name):
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        value = getattr(importlib.import_module(mod), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bridge' has no attribute {name!r}")
