"""Every torchvision classification and segmentation model (``torchvision.models.list_models``), with random
weights, as ``torchvision.models.get_model(name)`` builds it. Inputs are small images (64x64; 224 where the model
fixes its size: ViT, MaxViT) to keep the run short; the architectures are full size. Models over 100M parameters
or slow to export are marked slow."""
from __future__ import annotations

import importlib.util

import torch

from . import Model

# over about 60M parameters, or over about 8 s through every path on 2 cores: run in the slow job
_SLOW = {
    "efficientnet_v2_m", "efficientnet_v2_s", "densenet161", "densenet169", "densenet201", "efficientnet_b3",
    "efficientnet_b4", "efficientnet_b5", "resnet152", "resnet101", "convnext_small", "regnet_x_8gf",
    "regnet_y_8gf", "swin_s", "swin_v2_s", "inception_v3",
    "alexnet", "convnext_base", "convnext_large", "efficientnet_v2_l", "efficientnet_b7", "efficientnet_b6",
    "maxvit_t", "regnet_x_16gf", "regnet_x_32gf", "regnet_y_128gf", "regnet_y_16gf", "regnet_y_32gf",
    "resnext101_64x4d", "resnext101_32x8d", "swin_b", "swin_v2_b", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn",
    "vgg16", "vgg16_bn", "vgg19", "vgg19_bn", "vit_b_16", "vit_b_32", "vit_h_14", "vit_l_16", "vit_l_32",
    "wide_resnet101_2", "deeplabv3_resnet101", "fcn_resnet101",
}


def _size(name: str) -> int:
    return 224 if name.startswith(("vit_", "maxvit")) else 80 if name == "inception_v3" else 64


def _family(name: str) -> str:
    for prefix, family in (("deeplabv3", "DeepLabV3"), ("fcn", "FCN"), ("lraspp", "LR-ASPP"),
                           ("convnext", "ConvNeXt"), ("densenet", "DenseNet"), ("efficientnet_v2", "EfficientNetV2"),
                           ("efficientnet", "EfficientNet"), ("googlenet", "GoogLeNet"), ("inception", "Inception"),
                           ("maxvit", "MaxViT"), ("mnasnet", "MNASNet"), ("mobilenet_v2", "MobileNetV2"),
                           ("mobilenet_v3", "MobileNetV3"), ("regnet", "RegNet"), ("resnext", "ResNeXt"),
                           ("wide_resnet", "Wide ResNet"), ("resnet", "ResNet"), ("shufflenet", "ShuffleNetV2"),
                           ("squeezenet", "SqueezeNet"), ("swin_v2", "Swin V2"), ("swin", "Swin"), ("vgg", "VGG"),
                           ("vit", "ViT"), ("alexnet", "AlexNet")):
        if name.startswith(prefix):
            return family
    return name


def _entry(name: str, segmentation: bool) -> Model:
    def build():
        import torchvision.models as M

        torch.manual_seed(0)
        kwargs = {"aux_loss": False, "weights_backbone": None} if segmentation else {}  # no downloads
        if name in ("googlenet", "inception_v3"):
            kwargs = {"aux_logits": False, "init_weights": True}
        return M.get_model(name, weights=None, **kwargs).eval()

    size = _size(name)
    return Model("torchvision", name, _family(name), build,
                 lambda g: ((torch.randn(2, 3, size, size, generator=g),), {}), slow=name in _SLOW)


def _models() -> list[Model]:
    if importlib.util.find_spec("torchvision") is None:
        return []
    import torchvision.models as M

    seg = M.list_models(module=M.segmentation)
    return [_entry(n, False) for n in M.list_models(module=M)] + [_entry(n, True) for n in seg]


MODELS = _models()
