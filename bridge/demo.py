"""``bridge demo``: the main job end to end on a model that ships with bridge (``bridge.zoo``).

Trace the model into a graph, print its summary and topology, export it to ONNX with a symbolic batch, check the
file in onnxruntime against eager PyTorch at a batch size the export never saw, draw the HTML view, and say
where every file is. Each step is one public call (``bridge.trace``, ``bridge.summary``, ``bridge.topology``,
``bridge.to_onnx``, ``bridge.verify``, ``bridge.draw``), so the printout doubles as a map of the API.
"""
from __future__ import annotations

import os
from typing import Callable

DEFAULT_MODEL = "resnet_mini"
CHECK_BATCH = 5  # verify on a batch size the export never saw: a size baked in at trace time fails there


def run_demo(out_dir: str = "bridge-demo", model: str = DEFAULT_MODEL, say: Callable[[str], None] = print) -> dict:
    """Run the demo on zoo model ``model``, writing into ``out_dir`` (created if missing). Returns the paths
    written (``onnx``, ``html``, ``graph``, ``summary``) and the verification report (``verify``); raises
    ``BridgeError`` if a step fails, ``VerifyReport.ok`` is False when the file and eager PyTorch disagree."""
    import bridge
    from . import zoo
    from .errors import BridgeError
    from .fileio import atomic_write

    if model not in zoo.ZOO:
        import difflib

        close = difflib.get_close_matches(model, list(zoo.ZOO), n=3)
        raise BridgeError(f"no zoo model {model!r}" + (f"; did you mean {', '.join(close)}?" if close else "")
                          + f" The zoo has: {', '.join(zoo.ZOO)}.")
    entry = zoo.get(model)
    os.makedirs(out_dir, exist_ok=True)
    paths = {k: os.path.join(out_dir, f"{model}{suffix}") for k, suffix in
             (("onnx", ".onnx"), ("html", ".html"), ("graph", ".graph.txt"), ("summary", ".summary.txt"))}

    net = entry.make_model()  # seeded: the same weights on every run
    args, kwargs = entry.make_inputs(entry.batch)
    say(f"bridge demo: {model} ({type(net).__name__} from bridge.zoo, random weights, eval mode)")

    g = bridge.trace(net, args, kwargs, dynamic=entry.dynamic)
    ins = ", ".join(f"%{v.name}: {v.spec}" for v in g.inputs)
    say(f"1. bridge.trace: {len(g.nodes)} nodes, inputs {ins}")
    with atomic_write(paths["graph"]) as f:
        f.write(str(g) + "\n")

    topo = bridge.topology(g)
    say(f"2. bridge.topology: {str(topo).splitlines()[0]}")

    s = bridge.summary(g, depth=1)
    with atomic_write(paths["summary"]) as f:
        f.write(str(s) + "\n")
    t = s.totals
    say(f"3. bridge.summary: {t['params']:,} parameters, {t['flops']:,} FLOPs; by top-level module:")
    for line in str(s).splitlines():
        if line.strip() and not line.startswith(("Total", "Trainable", "Frozen", "FLOPs", "MACs", "Input", "Activ",
                                                  "Parameter", "Estimated", "Symbolic")):
            say("   " + line.rstrip())

    proto = bridge.to_onnx(g, paths["onnx"])
    dims = "; ".join(f"{i.name}[" + ", ".join(d.dim_param or str(d.dim_value) for d in i.type.tensor_type.shape.dim)
                     + "]" for i in proto.graph.input)
    say(f"4. bridge.to_onnx: {len(proto.graph.node)} ONNX nodes, opset {proto.opset_import[0].version}, "
        f"inputs {dims}")

    check_args, check_kwargs = entry.make_inputs(CHECK_BATCH)
    rep = bridge.verify(net, paths["onnx"], check_args, check_kwargs)
    worst = max((o.max_abs for o in rep.outputs), default=0.0)
    say(f"5. bridge.verify: onnxruntime vs eager PyTorch at batch {CHECK_BATCH}: "
        f"{'OK' if rep.ok else 'MISMATCH'}, max abs error {worst:.2e}")

    bridge.draw(g, paths["html"])
    say("6. bridge.draw: the layer view beside the graph view, one self-contained page")

    folder = os.path.abspath(out_dir)
    say(f"files in {folder}:")
    for key, what in (("onnx", "the ONNX model (open in Netron, run in onnxruntime)"),
                      ("html", "the interactive view: open it in a browser"),
                      ("graph", "the graph as text (print(bridge.trace(...)))"),
                      ("summary", "the per-layer table (bridge.summary)")):
        say(f"  {os.path.basename(paths[key]):<28} {what}")
    say(f"next: bridge inspect {paths['onnx']}, or your own model: bridge summary my_model.py:Net --input "
        "1,3,224,224 (docs/cli.md)")
    return {**paths, "verify": rep}
