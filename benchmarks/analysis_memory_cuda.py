"""Peak activation memory on CUDA: bridge's liveness estimate (``bridge.analysis.liveness``) against what
``torch.cuda.max_memory_allocated`` records while the generated module runs (after a warm-up, so library
workspaces that persist are not counted), with cuDNN on and off. Needs a GPU.

    python benchmarks/analysis_memory_cuda.py [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))

import bridge  # noqa: E402
from bridge import zoo  # noqa: E402
from bridge.analysis.memory import liveness, measured_peak_bytes  # noqa: E402
from bridge.zoo import BasicBlock, Bottleneck, ResNet  # noqa: E402


def measure(model, args) -> dict:
    g = bridge.trace(model, args, shapes="fake")
    live = liveness(g)
    peak = measured_peak_bytes(g, args)
    est = live.peak_bytes - live.input_bytes  # the inputs are allocated before the call
    return {"nodes": len(g.nodes), "estimate": est, "measured": peak, "ratio": peak / est if est else None}


def mlp(width: int, depth: int) -> nn.Module:
    layers = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers)


class ResMLP(nn.Module):
    def __init__(self, d=2048, n=8):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
                                    for _ in range(n))
        self.norm = nn.LayerNorm(d)

    def forward(self, x):
        for b in self.blocks:
            x = x + b(self.norm(x))
        return x


def cases() -> dict:
    torch.manual_seed(0)
    return {
        "mlp_4096x8_b512": (mlp(4096, 8), (torch.randn(512, 4096),)),
        "resmlp_2048x8_b256": (ResMLP(), (torch.randn(256, 2048),)),
        "resnet_mini_b256": (zoo.get("resnet_mini").make_model(), zoo.get("resnet_mini").make_inputs(256)[0]),
        "densenet_mini_b256": (zoo.get("densenet_mini").make_model(), zoo.get("densenet_mini").make_inputs(256)[0]),
        "resnet18_b32": (ResNet(BasicBlock, (2, 2, 2, 2)), (torch.randn(32, 3, 224, 224),)),
        "resnet50_b32": (ResNet(Bottleneck, (3, 4, 6, 3)), (torch.randn(32, 3, 224, 224),)),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure")
        return 0
    res = {}
    for cudnn in (True, False):
        torch.backends.cudnn.enabled = cudnn
        for name, (m, args) in cases().items():
            r = measure(m.eval(), args)
            res[f"{name}{'' if cudnn else '_nocudnn'}"] = r
            print(f"{name:22s} cudnn={'on ' if cudnn else 'off'} estimate {r['estimate']:>12,} B  measured "
                  f"{r['measured']:>12,} B  ratio {r['ratio']:.4f}", flush=True)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"torch": torch.__version__, "device": torch.cuda.get_device_name(0), "results": res}, fh,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
