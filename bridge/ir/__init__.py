"""The bridge IR: Graph, Node, Value, TensorSpec (no onnx, no onnxruntime here)."""
from .graph import Deferred, Graph, Node, Scope, Value, iter_values, map_values
from .spec import ScalarSpec, TensorSpec

__all__ = ["Graph", "Node", "Scope", "Value", "Deferred", "TensorSpec", "ScalarSpec", "iter_values", "map_values"]
