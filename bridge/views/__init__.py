"""Views of a graph. ``draw.py``: ``bridge.draw`` (Graphviz DOT/SVG/PNG in ``dot.py``, Mermaid in ``mermaid.py``,
the self-contained interactive HTML page in ``html.py``, what they all show in ``graphdata.py``);
``sequential.py``: ``bridge.to_sequential``."""
