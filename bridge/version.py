"""bridge's version, in the lowest layer: the ONNX backend records it in the files it writes."""
__version__ = "0.1.0"
