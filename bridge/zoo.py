"""A zoo of self-built architectures (and torchvision's, when it imports), shipped with bridge: the parity,
CUDA, ONNX and analysis tests and every benchmark use it, and a user can try any verb on one without writing a
model (``bridge summary bridge.zoo:ResNetMini --input 1,3,32,32``).

Every entry is small (CPU-fast), deterministic (fixed seeds for weights, running statistics and inputs) and in
eval mode:

    from bridge.zoo import ZOO, get, entries
    e = get("resnet_mini")
    model = e.make_model()                 # eval-mode nn.Module, same weights on every call
    args, kwargs = e.make_inputs(2)        # batch of 2, same values on every call
    g = bridge.trace(model, args, kwargs, dynamic=e.dynamic)

``tags`` select groups: "torchvision" (skipped where torchvision is absent), "slow" (heavy; the default test run
leaves them out), "conv", "rnn", "attention", "structure" (inputs/outputs structure), "float64" (checked in
double precision too), "compile" (the torch.compile smoke test).

Full-size references with published figures: ``resnet18()`` and ``resnet50()`` (torchvision's layout, random
weights), and ``residual_graph(n)``, a bridge Graph of ``n`` nodes built directly (for scaling measurements).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

SEED = 0


@dataclass(frozen=True)
class ZooEntry:
    name: str
    make_model: Callable[[], nn.Module]
    make_inputs: Callable[[int], tuple[tuple, dict]]
    dynamic: Any = None  # dynamic= for bridge.trace: symbolic batch (and sometimes sequence) dims
    tags: frozenset = field(default_factory=frozenset)
    batch: int = 2  # the batch size the parity tests use

    def __repr__(self) -> str:
        return f"ZooEntry({self.name!r})"


ZOO: dict[str, ZooEntry] = {}


def register(name: str, *, dynamic: Any = None, tags=(), batch: int = 2):
    """Decorator over ``make_model``; the decorated class/function's ``inputs`` attribute gives ``make_inputs``."""

    def deco(make_inputs):
        def wrap(factory):
            if name in ZOO:
                raise ValueError(f"zoo entry {name!r} registered twice")

            def make_model(_f=factory):
                torch.manual_seed(SEED)
                m = _f()
                _randomize_norm_stats(m)
                return m.eval()

            ZOO[name] = ZooEntry(name, make_model, make_inputs, dynamic, frozenset(tags), batch)
            return factory

        return wrap

    return deco


def entries(*, include_tags=(), exclude_tags=()) -> list[ZooEntry]:
    out = []
    for e in ZOO.values():
        if include_tags and not (e.tags & set(include_tags)):
            continue
        if e.tags & set(exclude_tags):
            continue
        out.append(e)
    return out


def get(name: str) -> ZooEntry:
    return ZOO[name]


def _randomize_norm_stats(m: nn.Module) -> None:
    """Fresh BatchNorm running stats are 0/1, which hides a wrong mean/var wiring; make them random (seeded)."""
    gen = torch.Generator().manual_seed(SEED + 1)
    for mod in m.modules():
        if isinstance(mod, nn.modules.batchnorm._NormBase) and mod.track_running_stats and \
                mod.running_mean is not None:
            with torch.no_grad():
                mod.running_mean.copy_(torch.randn(mod.running_mean.shape, generator=gen) * 0.1)
                mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=gen) * 0.5 + 0.75)
                if mod.affine:
                    mod.weight.copy_(torch.rand(mod.weight.shape, generator=gen) * 0.5 + 0.75)
                    mod.bias.copy_(torch.randn(mod.bias.shape, generator=gen) * 0.1)


def _gen(batch: int, salt: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(1000 + 31 * batch + salt)


def _images(shape_wo_batch, salt=0):
    def make(batch):
        return (torch.randn((batch, *shape_wo_batch), generator=_gen(batch, salt)),), {}

    return make


def _tokens(vocab: int, seq: int, salt=0):
    def make(batch):
        return (torch.randint(0, vocab, (batch, seq), generator=_gen(batch, salt)),), {}

    return make


BATCH = {"x": {0: "batch"}}

# =============================================================================================== MLPs, containers
@register("mlp", dynamic=BATCH, tags=("float64", "compile"))(_images((16,)))
class MLP(nn.Module):
    def __init__(self, d_in=16, hidden=(32, 32), d_out=5):
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden[0])
        self.act = nn.ReLU()
        self.drop = nn.Dropout(0.1)
        self.fc2 = nn.Linear(hidden[0], hidden[1])
        self.out = nn.Linear(hidden[1], d_out)

    def forward(self, x):
        x = self.drop(self.act(self.fc1(x)))
        x = F.silu(self.fc2(x))
        return self.out(x)


@register("sequential", dynamic={"input": {0: "batch"}})(_images((12,)))
def _sequential():
    return nn.Sequential(nn.Linear(12, 24), nn.Tanh(), nn.Linear(24, 24), nn.LeakyReLU(0.1), nn.LayerNorm(24),
                         nn.Linear(24, 3), nn.Softmax(dim=-1))


class NestedSequential(nn.Module):
    """Sequentials inside Sequentials inside custom modules, a ModuleList and a ModuleDict."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Sequential(nn.Linear(10, 20), nn.ReLU()), nn.Linear(20, 20))
        self.blocks = nn.ModuleList([nn.Sequential(nn.LayerNorm(20), nn.Linear(20, 20), nn.GELU())
                                     for _ in range(2)])
        self.heads = nn.ModuleDict({"a": nn.Sequential(nn.Linear(20, 4)), "b": nn.Linear(20, 2)})

    def forward(self, x):
        x = self.stem(x)
        for blk in self.blocks:
            x = x + blk(x)
        return torch.cat([self.heads["a"](x), self.heads["b"](x)], dim=-1)


register("nested_sequential", dynamic=BATCH)(_images((10,)))(NestedSequential)


# =============================================================================================== CNNs
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, width, stride=1):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNetMini(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(8, 8), BasicBlock(8, 8))
        self.layer2 = nn.Sequential(BasicBlock(8, 16, stride=2))
        self.layer3 = nn.Sequential(Bottleneck(16, 8, stride=2), Bottleneck(32, 8))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


register("resnet_mini", dynamic=BATCH, tags=("conv", "float64"))(_images((3, 32, 32)))(ResNetMini)


class DenseLayer(nn.Module):
    def __init__(self, cin, growth):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, 2 * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(2 * growth)
        self.conv2 = nn.Conv2d(2 * growth, growth, 3, padding=1, bias=False)

    def forward(self, features):
        x = torch.cat(features, 1) if isinstance(features, (list, tuple)) else features
        x = self.conv1(F.relu(self.norm1(x)))
        return self.conv2(F.relu(self.norm2(x)))


class DenseBlock(nn.ModuleDict):
    def __init__(self, n, cin, growth):
        super().__init__()
        for i in range(n):
            self.add_module(f"denselayer{i + 1}", DenseLayer(cin + i * growth, growth))

    def forward(self, x):
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class DenseNetMini(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
            DenseBlock(3, 16, 8),
            nn.Sequential(nn.BatchNorm2d(40), nn.ReLU(inplace=True), nn.Conv2d(40, 20, 1, bias=False),
                          nn.AvgPool2d(2, 2)),
            DenseBlock(2, 20, 8), nn.BatchNorm2d(36))
        self.classifier = nn.Linear(36, 10)

    def forward(self, x):
        x = F.relu(self.features(x))
        x = F.adaptive_avg_pool2d(x, (1, 1)).flatten(1)
        return self.classifier(x)


register("densenet_mini", dynamic=BATCH, tags=("conv",))(_images((3, 16, 16)))(DenseNetMini)


class SqueezeExcite(nn.Module):
    def __init__(self, c, r=4):
        super().__init__()
        self.fc1 = nn.Conv2d(c, max(1, c // r), 1)
        self.fc2 = nn.Conv2d(max(1, c // r), c, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(s))))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand, act=nn.ReLU6, se=False):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), act(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
                   act(inplace=True)]
        if se:
            layers.append(SqueezeExcite(hidden))
        layers += [nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2Mini(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(inplace=True)),
            InvertedResidual(8, 8, 1, 1),
            InvertedResidual(8, 12, 2, 4),
            InvertedResidual(12, 12, 1, 4),
            InvertedResidual(12, 16, 2, 4, act=nn.Hardswish, se=True),
            InvertedResidual(16, 16, 1, 3, act=nn.Hardswish, se=True),
            nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32), nn.Hardswish(inplace=True))
        # grouped (not depthwise) conv too
        self.mix = nn.Conv2d(32, 32, 3, padding=1, groups=4)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(32, 10))

    def forward(self, x):
        x = self.mix(self.features(x))
        x = nn.functional.adaptive_avg_pool2d(x, (1, 1))
        return self.classifier(torch.flatten(x, 1))


register("mobilenetv2_mini", dynamic=BATCH, tags=("conv",))(_images((3, 32, 32)))(MobileNetV2Mini)


class Fire(nn.Module):
    def __init__(self, cin, squeeze, e1, e3):
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, e1, 1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, e3, 3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat([self.expand1x1_activation(self.expand1x1(x)),
                          self.expand3x3_activation(self.expand3x3(x))], 1)


class SqueezeNetMini(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(16, 4, 8, 8), Fire(16, 4, 8, 8), nn.MaxPool2d(3, 2, ceil_mode=True), Fire(16, 8, 16, 16))
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(32, num_classes, 1), nn.ReLU(inplace=True),
                                        nn.AdaptiveAvgPool2d((1, 1)))

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)


register("squeezenet_mini", dynamic=BATCH, tags=("conv",))(_images((3, 33, 33)))(SqueezeNetMini)


class UNetMini(nn.Module):
    """Encoder/decoder: ConvTranspose2d on one level, F.interpolate on the other, skip concatenations."""

    def __init__(self, cin=3, base=8, cout=2):
        super().__init__()

        def block(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True),
                                 nn.Conv2d(o, o, 3, padding=1), nn.ReLU(inplace=True))

        self.enc1 = block(cin, base)
        self.enc2 = block(base, 2 * base)
        self.bottleneck = block(2 * base, 4 * base)
        self.up2 = nn.ConvTranspose2d(4 * base, 2 * base, 2, stride=2)
        self.dec2 = block(4 * base, 2 * base)
        self.reduce1 = nn.Conv2d(2 * base, base, 1)
        self.dec1 = block(2 * base, base)
        self.head = nn.Conv2d(base, cout, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        b = self.bottleneck(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(b), e2], dim=1))
        up = F.interpolate(self.reduce1(d2), scale_factor=2, mode="bilinear", align_corners=False)
        d1 = self.dec1(torch.cat([up, e1], dim=1))
        return torch.sigmoid(self.head(d1))


register("unet_mini", dynamic=BATCH, tags=("conv",))(_images((3, 16, 16)))(UNetMini)


class VGGMini(nn.Module):
    def __init__(self):
        super().__init__()
        cfg = [8, "M", 16, 16, "M", 32, "M"]
        layers, c = [], 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
                c = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(nn.Linear(32 * 4, 64), nn.ReLU(True), nn.Dropout(),
                                        nn.Linear(64, 64), nn.ReLU(True), nn.Dropout(), nn.Linear(64, 10))

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(x.view(x.size(0), -1))


register("vgg_mini", dynamic=BATCH, tags=("conv",))(_images((3, 32, 32)))(VGGMini)


class Conv1dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(4, 16, 5, padding=2), nn.BatchNorm1d(16), nn.ReLU(),
            nn.Conv1d(16, 16, 3, dilation=2, padding=2, groups=4), nn.ELU(), nn.MaxPool1d(2),
            nn.Conv1d(16, 32, 3, stride=2, padding=1, padding_mode="reflect"), nn.SiLU(),
            nn.ConvTranspose1d(32, 16, 4, stride=2, padding=1), nn.AdaptiveAvgPool1d(4))
        self.fc = nn.Linear(64, 3)

    def forward(self, x):
        return self.fc(self.net(x).flatten(1))


register("conv1d_net", dynamic=BATCH, tags=("conv", "float64"))(_images((4, 40)))(Conv1dNet)


class Conv3dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv3d(2, 8, 3, padding=1)
        self.bn = nn.BatchNorm3d(8)
        self.conv2 = nn.Conv3d(8, 8, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.pool = nn.AvgPool3d(2)
        self.gpool = nn.AdaptiveMaxPool3d(1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = F.relu(self.bn(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        return self.fc(self.gpool(x).flatten(1))


register("conv3d_net", dynamic=BATCH, tags=("conv",))(_images((2, 6, 12, 12)))(Conv3dNet)


# =============================================================================================== sharing
class SharedModule(nn.Module):
    """The same module (and so the same weights) applied twice, plus a functional reuse of its weight."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(8, 16)
        self.shared = nn.Sequential(nn.Linear(16, 16), nn.ReLU())
        self.out = nn.Linear(16, 4)

    def forward(self, x):
        h = self.inp(x)
        h = self.shared(h)
        h = self.shared(h) + h
        h = h + F.linear(h, self.shared[0].weight)
        return self.out(h)


register("shared_module", dynamic=BATCH)(_images((8,)))(SharedModule)


class TiedWeights(nn.Module):
    """A tiny LM whose output projection is the embedding matrix (same Parameter under two names)."""

    def __init__(self, vocab=30, d=16):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.proj = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.emb.weight
        self.enc = nn.Linear(d, d)
        self.dec = nn.Linear(d, d)
        self.dec.weight = self.enc.weight  # tied Linear weights, separate biases

    def forward(self, x):
        h = self.norm(torch.tanh(self.proj(self.emb(x))))
        h = self.dec(F.relu(self.enc(h)))
        return self.lm_head(h)


register("tied_weights", dynamic=BATCH)(_tokens(30, 7))(TiedWeights)


# =============================================================================================== I/O structure
class MultiInput(nn.Module):
    """Several inputs, a keyword-only tensor, an optional tensor and a python default."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 12)
        self.b = nn.Linear(4, 12)
        self.c = nn.Linear(12, 3)

    def forward(self, x, y, *, bias=None, scale: float = 2.0):
        h = torch.relu(self.a(x)) * scale + self.b(y)
        if bias is not None:
            h = h + bias
        return self.c(h)


def _multi_input(batch):
    g = _gen(batch)
    return (torch.randn(batch, 6, generator=g), torch.randn(batch, 4, generator=g)), \
        {"bias": torch.randn(batch, 12, generator=g)}


register("multi_input", dynamic={"x": {0: "batch"}, "y": {0: "batch"}, "bias": {0: "batch"}},
         tags=("structure",))(_multi_input)(MultiInput)


class TupleOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.cls = nn.Linear(8, 5)
        self.box = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        f = self.body(x)
        pooled = f.mean(dim=(2, 3))
        return self.cls(pooled), (self.box(f), f.amax(dim=1, keepdim=True)), pooled.shape[-1]


register("tuple_output", dynamic=BATCH, tags=("structure",))(_images((3, 8, 8)))(TupleOutput)


class DictOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(10, 16)
        self.heads = nn.ModuleDict({"age": nn.Linear(16, 1), "label": nn.Linear(16, 3)})

    def forward(self, x):
        h = F.gelu(self.enc(x))
        out = {name: head(h) for name, head in self.heads.items()}
        out["probs"] = out["label"].softmax(-1)
        out["aux"] = [h.sum(-1), {"norm": h.norm(dim=-1)}]
        return out


register("dict_output", dynamic=BATCH, tags=("structure",))(_images((10,)))(DictOutput)


@dataclass
class ZooOutput:
    logits: torch.Tensor
    hidden: torch.Tensor
    extra: Any = None


class DataclassOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(7, 14), nn.Softplus())
        self.head = nn.Linear(14, 2)

    def forward(self, x):
        h = self.enc(x)
        return ZooOutput(logits=self.head(h), hidden=h, extra=None)


register("dataclass_output", dynamic=BATCH, tags=("structure",))(_images((7,)))(DataclassOutput)


# =============================================================================================== sequences
class LSTMTagger(nn.Module):
    def __init__(self, vocab=40, emb=16, hidden=24, tags=6):
        super().__init__()
        self.embedding = nn.Embedding(vocab, emb, padding_idx=0)
        self.lstm = nn.LSTM(emb, hidden, num_layers=2, batch_first=True)
        self.hidden2tag = nn.Linear(hidden, tags)

    def forward(self, x):
        out, (h, c) = self.lstm(self.embedding(x))
        return F.log_softmax(self.hidden2tag(out), dim=-1), h[-1] + c[-1]


register("lstm_tagger", dynamic=BATCH, tags=("rnn", "float64"))(_tokens(40, 9))(LSTMTagger)


class BiGRU(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(8, 12, num_layers=1, batch_first=False, bidirectional=True)
        self.fc = nn.Linear(24, 3)

    def forward(self, x):  # x: (seq, batch, feat)
        out, h = self.gru(x)
        summary = torch.cat([h[0], h[1]], dim=-1)
        return self.fc(out[-1]) + self.fc(summary)


def _bigru_inputs(batch):
    return (torch.randn(6, batch, 8, generator=_gen(batch)),), {}


register("bigru", dynamic={"x": {1: "batch"}}, tags=("rnn",))(_bigru_inputs)(BiGRU)


class TransformerEncoderModel(nn.Module):
    def __init__(self, d=32, heads=4, layers=2):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=64, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.inp = nn.Linear(10, d)
        self.out = nn.Linear(d, 4)

    def forward(self, x):
        return self.out(self.encoder(self.inp(x)).mean(dim=1))


def _seq_inputs(seq, feat):
    def make(batch):
        return (torch.randn(batch, seq, feat, generator=_gen(batch)),), {}

    return make


register("transformer_encoder", dynamic=BATCH, tags=("attention",))(_seq_inputs(7, 10))(TransformerEncoderModel)


class CausalBlock(nn.Module):
    """GPT-style block by hand: arange positions, causal SDPA, a masked_fill score path, GELU MLP, LayerNorm."""

    def __init__(self, vocab=50, d=32, heads=4, max_len=16):
        super().__init__()
        self.heads, self.d = heads, d
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(max_len, d)
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(approximate="tanh"), nn.Linear(4 * d, d))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.register_buffer("bias", torch.tril(torch.ones(max_len, max_len)).view(1, 1, max_len, max_len),
                             persistent=False)

    def forward(self, idx):
        B, T = idx.shape[0], idx.shape[1]
        pos = torch.arange(0, T, dtype=torch.long, device=idx.device)
        x = self.tok(idx) + self.pos(pos)[None]
        q, k, v = self.qkv(self.ln1(x)).split(self.d, dim=2)
        hd = self.d // self.heads
        q = q.view(B, T, self.heads, hd).transpose(1, 2)
        k = k.view(B, T, self.heads, hd).transpose(1, 2)
        v = v.view(B, T, self.heads, hd).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        # the same attention spelled out, with an explicit mask
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
        att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
        y2 = F.softmax(att, dim=-1) @ v
        mask = torch.ones(T, T, dtype=torch.bool, device=idx.device).tril()
        y3 = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = (y + y2 + y3) / 3
        y = y.transpose(1, 2).contiguous().view(B, T, self.d)
        x = x + self.proj(y)
        x = x + self.mlp(self.ln2(x))
        return self.head(self.ln_f(x))


register("causal_attention", dynamic={"idx": {0: "batch"}}, tags=("attention", "float64"))(_tokens(50, 10))(
    CausalBlock)


class MHAModel(nn.Module):
    def __init__(self, d=24, heads=3):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d, heads, kdim=16, vdim=16, batch_first=False)
        self.norm = nn.LayerNorm(d)

    def forward(self, x, memory, key_padding_mask=None):
        h, w = self.self_attn(x, x, x, key_padding_mask=key_padding_mask, need_weights=True)
        h = self.norm(x + h)
        c, _ = self.cross_attn(h.transpose(0, 1), memory.transpose(0, 1), memory.transpose(0, 1),
                               need_weights=False)
        return c.transpose(0, 1) + h, w


def _mha_inputs(batch):
    g = _gen(batch)
    x = torch.randn(batch, 5, 24, generator=g)
    mem = torch.randn(batch, 7, 16, generator=g)
    kpm = torch.zeros(batch, 5, dtype=torch.bool)
    kpm[:, -1] = True
    return (x, mem), {"key_padding_mask": kpm}


register("mha", dynamic={"x": {0: "batch"}, "memory": {0: "batch"}, "key_padding_mask": {0: "batch"}},
         tags=("attention",))(_mha_inputs)(MHAModel)


# =============================================================================================== op coverage
class NormMix(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.gn = nn.GroupNorm(2, 8)
        self.inorm = nn.InstanceNorm2d(8, affine=True)
        self.inorm_stats = nn.InstanceNorm2d(8, track_running_stats=True)
        self.ln = nn.LayerNorm([8, 6, 6])
        self.ln_last = nn.LayerNorm(6, elementwise_affine=False)
        self.bn1d = nn.BatchNorm1d(8)

    def forward(self, x):
        x = self.conv(x)
        a = self.gn(x)
        b = self.inorm(x) + self.inorm_stats(x)
        c = self.ln(x) + self.ln_last(x)
        d = F.group_norm(x, 4) + F.layer_norm(x, (6,)) + F.instance_norm(x)
        y = a + b + c + d
        return self.bn1d(y.mean(dim=(2, 3)))


register("norm_mix", dynamic=BATCH, tags=("conv",))(_images((3, 6, 6)))(NormMix)


class Pooling(nn.Module):
    def __init__(self):
        super().__init__()
        self.p1 = nn.ModuleList([nn.MaxPool1d(2), nn.AvgPool1d(3, stride=2, padding=1), nn.AdaptiveMaxPool1d(3),
                                 nn.AdaptiveAvgPool1d(3)])
        self.p2 = nn.ModuleList([nn.MaxPool2d(2, ceil_mode=True), nn.AvgPool2d(3, 1, 1, count_include_pad=False),
                                 nn.AdaptiveMaxPool2d((2, 3)), nn.AdaptiveAvgPool2d(2), nn.LPPool2d(2, 2)])
        self.p3 = nn.ModuleList([nn.MaxPool3d(2), nn.AvgPool3d(2, stride=1), nn.AdaptiveMaxPool3d((1, 2, 2)),
                                 nn.AdaptiveAvgPool3d(1)])

    def forward(self, x1, x2, x3):
        outs = [p(x1).flatten(1) for p in self.p1]
        outs += [p(x2).flatten(1) for p in self.p2]
        outs += [p(x3).flatten(1) for p in self.p3]
        outs.append(F.max_pool2d(x2, 3, stride=2, padding=1, dilation=1).flatten(1))
        return torch.cat(outs, dim=1)


def _pool_inputs(batch):
    g = _gen(batch)
    return (torch.randn(batch, 3, 11, generator=g), torch.randn(batch, 3, 9, 10, generator=g),
            torch.randn(batch, 2, 4, 6, 6, generator=g)), {}


register("pooling", dynamic={"x1": {0: "batch"}, "x2": {0: "batch"}, "x3": {0: "batch"}},
         tags=("conv",))(_pool_inputs)(Pooling)


class PadShuffleUpsample(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3)
        self.shuffle = nn.PixelShuffle(2)
        self.unshuffle = nn.PixelUnshuffle(2)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.up_bilinear = nn.Upsample(size=(10, 10), mode="bilinear", align_corners=True)

    def forward(self, x):
        x = F.pad(x, (1, 1, 1, 1), mode="reflect")
        x = self.shuffle(self.conv(x))  # (B, 3, 2H, 2W)
        a = self.unshuffle(x)
        a = F.pad(a, (0, 1, 2, 0), value=0.5)
        b = self.up(x[:, :, ::2, ::2])
        c = self.up_bilinear(x)
        d = F.interpolate(x, size=(7, 9), mode="bicubic", align_corners=False)
        e = F.pad(x.flatten(2), (2, 3), mode="replicate")  # 3-d input: pads the last dim
        f = F.pad(x, (1, 0, 0, 2), mode="circular")
        return a.sum(dim=(2, 3)), b, c, d, e.mean(dim=-1), f


register("pad_shuffle_upsample", dynamic=BATCH, tags=("conv",))(_images((3, 6, 6)))(PadShuffleUpsample)


class IndexingHeavy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 12)
        self.register_buffer("perm", torch.tensor([3, 0, 2, 1]))

    def forward(self, x):  # x: (B, 4, 8)
        h = self.fc(x)                               # (B, 4, 12)
        a, b, c = h.split([4, 4, 4], dim=-1)
        p, q = h.chunk(2, dim=1)                     # (B, 2, 12) each
        s = torch.stack([a, b, c], dim=1)            # (B, 3, 4, 4)
        s = s.permute(0, 2, 3, 1).reshape(x.shape[0], 4, -1)
        t = h[:, 1:3, ::2] + h[:, -2:, 1::2]
        u = h[:, self.perm][..., :4] * h[:, None, 0, :4]
        v = torch.flip(h, dims=[1]).transpose(1, 2).unsqueeze(1).squeeze(1)
        w = torch.gather(h, 2, torch.argsort(h, dim=2)[..., :3])
        z = h.unbind(1)
        y = torch.where(h > 0, h, h * 0.1).narrow(2, 2, 5)
        r = torch.roll(h, 1, dims=2).index_select(2, self.perm)
        m = h.masked_select(h > 0.5).sum() + h[h < -0.5].sum()
        return (s.sum(-1) + u.sum(-1), t, p * q, v.mean(-1), w, z[0] + z[-1], y.max(dim=-1).values,
                r.flatten(1) + m, torch.tril(h[:, :, :4]).expand(-1, -1, -1), h.topk(3, dim=-1).indices)


class InplaceOps(nn.Module):
    """In-place writes (item assignment, add_, masked_fill_, clamp_): torch.fx cannot trace ``x[i] = v``."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)

    def forward(self, x):
        h = self.fc(x).clone()
        h[:, 0] = 0.0
        h[:, 1:3] += 1.0
        h.add_(x).mul_(0.5)
        h.masked_fill_(h < -1.0, -1.0)
        y = torch.relu_(h.clone()).clamp_(max=0.8)
        return h, y


register("indexing_heavy", dynamic=BATCH)(_seq_inputs(4, 8))(IndexingHeavy)
register("inplace_ops", dynamic=BATCH)(_images((6,)))(InplaceOps)


class EinsumBmm(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(8, 6) * 0.3)
        self.bilinear = nn.Parameter(torch.randn(6, 6, 4) * 0.3)

    def forward(self, x, y):  # x: (B, 5, 8), y: (B, 8, 5)
        a = torch.einsum("bij,jk->bik", x, self.w)
        b = torch.bmm(x, y)                                  # (B, 5, 5)
        c = torch.einsum("bik,bjk->bij", a, a)               # (B, 5, 5)
        d = torch.einsum("bi,ijk,bj->bk", a[:, 0], self.bilinear, a[:, 1])
        e = torch.matmul(b, a) @ self.w.t()
        f = torch.baddbmm(b, x, y, beta=0.5, alpha=2.0)
        return b + c, d, e, f, torch.einsum("bii->b", b)


def _einsum_inputs(batch):
    g = _gen(batch)
    return (torch.randn(batch, 5, 8, generator=g), torch.randn(batch, 8, 5, generator=g)), {}


register("einsum_bmm", dynamic={"x": {0: "batch"}, "y": {0: "batch"}}, tags=("float64",))(_einsum_inputs)(
    EinsumBmm)


# =============================================================================================== torchvision
try:  # pragma: no cover - depends on the environment
    import torchvision as _tv
    import torchvision.models as _tvm
except Exception:  # noqa: BLE001 - absent or broken install: the entries are simply not there
    _tv = None

HAS_TORCHVISION = _tv is not None


def _tv_entry(name, factory, size, tags=(), batch=2, dynamic=True):
    register(f"tv_{name}", dynamic=BATCH if dynamic else None, tags=("torchvision", "conv", *tags), batch=batch)(
        _images((3, size, size)))(factory)


if HAS_TORCHVISION:
    _tv_entry("resnet18", lambda: _tvm.resnet18(weights=None, num_classes=10), 64)
    _tv_entry("mobilenet_v3_small", lambda: _tvm.mobilenet_v3_small(weights=None, num_classes=10), 64)
    _tv_entry("densenet121", lambda: _tvm.densenet121(weights=None, num_classes=10), 64, tags=("slow",))
    _tv_entry("squeezenet1_0", lambda: _tvm.squeezenet1_0(weights=None, num_classes=10), 64)
    _tv_entry("efficientnet_b0", lambda: _tvm.efficientnet_b0(weights=None, num_classes=10), 64, tags=("slow",))
    _tv_entry("regnet_y_400mf", lambda: _tvm.regnet_y_400mf(weights=None, num_classes=10), 64)
    _tv_entry("shufflenet_v2_x0_5", lambda: _tvm.shufflenet_v2_x0_5(weights=None, num_classes=10), 64)
    _tv_entry("vit_b_16", lambda: _tvm.vit_b_16(weights=None, image_size=32, num_classes=10), 32,
              tags=("slow", "attention"))


# ---- full-size references ------------------------------------------------------------------------------------
class ResNet(nn.Module):
    """torchvision's ResNet layout (v1.5: stride in the 3x3 conv), 1000 classes, with this file's blocks."""

    def __init__(self, block, layers, classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inp = 64
        for i, (n, width) in enumerate(zip(layers, (64, 128, 256, 512))):
            blocks = []
            for j in range(n):
                blocks.append(block(inp, width, 2 if j == 0 and i > 0 else 1))
                inp = width * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * block.expansion, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18() -> ResNet:
    """ResNet-18 (11,689,512 parameters), random weights."""
    return ResNet(BasicBlock, (2, 2, 2, 2))


def resnet50() -> ResNet:
    """ResNet-50 (25,557,032 parameters), random weights."""
    return ResNet(Bottleneck, (3, 4, 6, 3))


def residual_graph(n_nodes: int, width: int = 64):
    """A bridge Graph of ``n_nodes`` nodes built directly (no tracing): blocks of linear -> relu -> add(skip), one
    shared weight, module scopes. For measuring how analysis and passes scale with graph size."""
    from .ir import Graph, Scope, TensorSpec

    g = Graph()
    g.meta["model_type"] = "Residual"
    spec = TensorSpec((8, width), torch.float32)
    x = g.add_input("x", spec)
    w = g.add_constant("w", torch.randn(width, width), kind="param")
    h = x
    for i in range(n_nodes // 3):
        blk = (f"blocks.{i}", "Block")
        y = g.add_node("linear", {"input": h, "weight": w, "bias": None}, outputs=[(f"fc{i}", spec)],
                       scope=Scope([blk, (f"blocks.{i}.fc", "Linear")])).output
        z = g.add_node("relu", {"input": y}, outputs=[(f"act{i}", spec)],
                       scope=Scope([blk, (f"blocks.{i}.act", "ReLU")])).output
        h = g.add_node("add", {"input": z, "other": h, "alpha": 1}, outputs=[(f"add{i}", spec)],
                       scope=Scope([blk])).output
    g.set_outputs([h])
    return g
