"""A trace holds no activation beyond the moment the conversion needs it: fx's real-value propagation lets each
value go after its last reader, and the record frontend keeps fakes, not values (and trims the C heap its fakes
would pin). Measured as peak resident memory in a fresh process, against a model whose activations, all kept,
would take 256 MiB."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

_CHILD = textwrap.dedent("""
    import gc, json, re, sys
    import torch, torch.nn as nn
    import bridge

    def mib(field):
        return int(re.search(field + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) / 1024

    class Deep(nn.Module):  # 128 layers, each output 2 MiB: 256 MiB of activations if all were kept
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList(nn.Linear(64, 64) for _ in range(128))

        def forward(self, x):
            for layer in self.layers:
                x = torch.tanh(layer(x)) + x
            return x

    torch.manual_seed(0)
    model = Deep().eval()
    x = torch.randn(8192, 64)
    with torch.no_grad():
        model(x)
    bridge.trace(nn.Linear(2, 2), torch.randn(1, 2), frontend=sys.argv[1])  # imports are not the trace's memory
    gc.collect()
    open("/proc/self/clear_refs", "w").write("5")
    base = mib("VmRSS")
    g = bridge.trace(model, x, frontend=sys.argv[1], shapes="real" if sys.argv[1] == "fx" else "auto")
    print(json.dumps({"extra": mib("VmHWM") - base, "frontend": g.meta.get("frontend", "fx")}))
""")


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="peak memory is read from Linux's /proc")
@pytest.mark.parametrize("frontend", ["fx", "record"])
def test_trace_keeps_no_activations(frontend):
    out = subprocess.run([sys.executable, "-c", _CHILD, frontend], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["frontend"] == frontend
    assert r["extra"] < 128, r  # some layers' activations and the graph, not all 256 MiB
