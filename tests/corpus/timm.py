"""timm image models, one representative per architecture family (the smallest variant of each), with random
weights, as ``timm.create_model(name, pretrained=False)`` builds it, in eval mode. Convolutional models run on
small images (64x64, or the smallest size their strides and pooling allow) since they take any size; models
whose size is fixed by position embeddings, windows or attention biases get a smaller ``img_size`` where they
accept one, and their default size otherwise. The architectures themselves are full size."""
from __future__ import annotations

import importlib.util

import torch

from . import Model


# over about 2.5 s through corpus.check on 2 shared cores (a transformer at 224, a deep or wide CNN, a model over
# 60M parameters): run in the slow job, so that the default run of this file stays under two minutes
_SLOW = {
    "beit_base_patch16_224", "botnet26t_256", "caformer_s18", "cait_xxs24_224", "coat_lite_tiny", "coat_tiny",
    "convit_tiny", "convmixer_768_32", "crossvit_tiny_240", "csatv2", "cspresnet50", "davit_tiny", "densenet121",
    "dla34", "efficientformer_l1", "efficientvit_b0", "efficientvit_m0", "focalnet_tiny_srf", "gcresnet33ts",
    "gcvit_xxtiny", "halonet26t", "hiera_tiny_224", "hieradet_small", "hrnet_w18_small", "inception_v3",
    "inception_v4", "lambda_resnet26t", "lowformer_b0", "maxvit_rmlp_pico_rw_256", "mixer_s32_224",
    "mobilenetv4_hybrid_medium", "mobileone_s0", "mobilevit_xxs", "mobilevitv2_050", "mvitv2_tiny", "nest_tiny",
    "nextvit_small", "nf_regnet_b0", "rdnet_tiny", "repvit_m1", "res2net50_48w_2s", "samvit_base_patch16",
    "selecsls42b", "sequencer2d_s", "swin_tiny_patch4_window7_224", "swinv2_cr_tiny_ns_224",
    "swinv2_tiny_window8_256", "tf_efficientnetv2_b0", "tiny_vit_5m_224", "tnt_s_patch16_224", "tresnet_m",
    "twins_svt_small", "vit_relpos_small_patch16_224", "vit_small_patch14_dinov2", "vit_small_patch16_rope_224",
    "vit_small_r26_s32_224", "vitamin_small_224", "volo_d1_224", "xception41",
}


def _entry(name: str, family: str, size: int = 64, img_size: bool = False, atol: float = 1e-5,
           why_tol: str = "") -> Model:
    """``name`` (built with ``img_size=size`` where ``img_size``), fed a batch of two ``size`` x ``size``
    images."""
    def build():
        import timm

        torch.manual_seed(0)
        return timm.create_model(name, pretrained=False, **({"img_size": size} if img_size else {})).eval()

    return Model("timm", name, family, build, lambda g: ((torch.randn(2, 3, size, size, generator=g),), {}),
                 slow=name in _SLOW, atol=atol, why_tol=why_tol)


_TABLE = [
    # convolutional networks
    dict(name="resnet18", family="ResNet"),
    dict(name="resnetv2_18", family="ResNetV2"),
    dict(name="regnetx_002", family="RegNet"),
    dict(name="regnetz_005", family="RegNetZ"),
    dict(name="efficientnet_b0", family="EfficientNet"),
    dict(name="mobilenetv3_small_050", family="MobileNetV3"),
    dict(name="mobilenetv4_conv_small_035", family="MobileNetV4"),
    dict(name="ghostnet_050", family="GhostNet"),
    dict(name="ghostnetv2_100", family="GhostNetV2"),
    dict(name="rexnet_100", family="ReXNet"),
    dict(name="convnext_atto", family="ConvNeXt"),
    dict(name="convnextv2_atto", family="ConvNeXt V2"),
    dict(name="densenet121", family="DenseNet"),
    dict(name="dla34", family="DLA"),
    dict(name="dpn48b", family="DPN"),
    dict(name="hrnet_w18_small", family="HRNet"),
    dict(name="res2net50_48w_2s", family="Res2Net"),
    dict(name="resnest14d", family="ResNeSt"),
    dict(name="skresnet18", family="SKNet"),
    dict(name="seresnet18", family="SE-ResNet"),
    dict(name="nf_regnet_b0", family="NFNet"),
    dict(name="repvgg_a0", family="RepVGG"),
    dict(name="mobileone_s0", family="MobileOne"),
    dict(name="repvit_m1", family="RepViT"),
    dict(name="ese_vovnet19b_dw", family="VoVNet"),
    dict(name="cspresnet50", family="CSPNet"),
    dict(name="darknet17", family="DarkNet"),
    dict(name="xception41", family="Xception", size=96),
    dict(name="inception_v3", family="Inception", size=96),
    dict(name="hgnetv2_b0", family="HGNetV2"),
    dict(name="lcnet_035", family="LCNet"),
    dict(name="selecsls42b", family="SelecSLS"),
    dict(name="tresnet_m", family="TResNet"),
    dict(name="fasternet_t0", family="FasterNet"),
    dict(name="starnet_s050", family="StarNet"),
    dict(name="repghostnet_050", family="RepGhostNet"),
    dict(name="inception_next_atto", family="InceptionNeXt"),
    dict(name="mambaout_femto", family="MambaOut"),
    dict(name="rdnet_tiny", family="RDNet"),
    dict(name="tf_efficientnetv2_b0", family="EfficientNetV2"),
    dict(name="mixnet_s", family="MixNet"),
    dict(name="mnasnet_small", family="MnasNet"),
    dict(name="fbnetv3_b", family="FBNetV3"),
    dict(name="mobilenetv1_100", family="MobileNetV1"),
    dict(name="gernet_s", family="GENet"),
    dict(name="ecaresnet26t", family="ECA-ResNet"),
    dict(name="gcresnet33ts", family="GC-ResNet"),
    dict(name="cs3darknet_s", family="CS3-DarkNet"),
    dict(name="hgnet_tiny", family="HGNet"),
    dict(name="convmixer_768_32", family="ConvMixer"),
    dict(name="inception_v4", family="Inception-v4", size=96),
    dict(name="mobilenetv4_hybrid_medium", family="MobileNetV4 (hybrid)"),
    # attention in convolutional networks
    dict(name="botnet26t_256", family="BoTNet", size=256, img_size=True),
    dict(name="halonet26t", family="HaloNet", size=256, img_size=True),
    dict(name="lambda_resnet26t", family="LambdaNet", size=256, img_size=True),
    # vision transformers and hybrids
    dict(name="vit_tiny_patch16_224", family="ViT", img_size=True),
    dict(name="deit_tiny_distilled_patch16_224", family="DeiT", img_size=True),
    dict(name="beit_base_patch16_224", family="BEiT", img_size=True),
    dict(name="eva02_tiny_patch14_224", family="EVA-02", size=56, img_size=True),
    dict(name="cait_xxs24_224", family="CaiT", img_size=True),
    dict(name="xcit_nano_12_p16_224", family="XCiT", img_size=True),
    dict(name="pit_ti_224", family="PiT", img_size=True),
    dict(name="convit_tiny", family="ConViT", img_size=True),
    dict(name="tnt_s_patch16_224", family="TNT", img_size=True),
    dict(name="crossvit_tiny_240", family="CrossViT", size=240),
    dict(name="volo_d1_224", family="VOLO", img_size=True),
    dict(name="swin_tiny_patch4_window7_224", family="Swin", size=224),
    dict(name="swinv2_cr_tiny_ns_224", family="Swin V2 (CR)", size=224),
    dict(name="maxvit_rmlp_pico_rw_256", family="MaxViT", size=128, img_size=True),
    dict(name="coatnet_pico_rw_224", family="CoAtNet", size=128, img_size=True),
    dict(name="coat_lite_tiny", family="CoaT Lite", size=224),
    dict(name="levit_128s", family="LeViT", size=224),
    dict(name="efficientformer_l1", family="EfficientFormer", size=224),
    dict(name="efficientformerv2_s0", family="EfficientFormerV2", size=224),
    dict(name="mobilevit_xxs", family="MobileViT", size=64),
    dict(name="mobilevitv2_050", family="MobileViTV2", size=64),
    dict(name="edgenext_xx_small", family="EdgeNeXt", size=64),
    dict(name="poolformer_s12", family="PoolFormer", size=64),
    dict(name="caformer_s18", family="MetaFormer (CAFormer)", size=64),
    dict(name="mixer_s32_224", family="MLP-Mixer", img_size=True),
    dict(name="resmlp_12_224", family="ResMLP", img_size=True),
    dict(name="gmlp_ti16_224", family="gMLP", img_size=True),
    dict(name="sequencer2d_s", family="Sequencer", size=224),
    dict(name="pvt_v2_b0", family="PVTv2", size=64),
    dict(name="twins_svt_small", family="Twins", size=224),
    dict(name="nest_tiny", family="NesT", img_size=True),
    dict(name="fastvit_t8", family="FastViT", size=64),
    dict(name="hiera_tiny_224", family="Hiera", size=224),
    dict(name="tiny_vit_5m_224", family="TinyViT", size=224),
    dict(name="efficientvit_b0", family="EfficientViT (MIT)", size=64),
    dict(name="efficientvit_m0", family="EfficientViT (MSRA)", size=224),
    dict(name="davit_tiny", family="DaViT", size=64),
    dict(name="focalnet_tiny_srf", family="FocalNet", size=64),
    dict(name="gcvit_xxtiny", family="GCViT", size=224),
    dict(name="mvitv2_tiny", family="MViTV2", size=224),
    dict(name="visformer_tiny", family="Visformer", size=224, atol=1e-4,
         why_tol="random weights give large attention logits (outputs up to ~350): float32 eager is itself 9.1e-3 "
                 "from float64 eager (2.6e-5 x scale); onnxruntime differs by 1.3e-2, the import by 6.1e-3"),
    dict(name="swiftformer_xs", family="SwiftFormer", size=224),
    dict(name="shvit_s1", family="SHViT", size=224),
    dict(name="nextvit_small", family="Next-ViT", size=64),
    dict(name="vit_relpos_small_patch16_224", family="ViT (relative position)", img_size=True),
    dict(name="vit_small_patch16_rope_224", family="ViT (RoPE)", img_size=True),
    dict(name="vit_small_r26_s32_224", family="ViT (ResNet hybrid)", img_size=True),
    dict(name="vit_small_patch14_dinov2", family="DINOv2", size=56, img_size=True),
    dict(name="samvit_base_patch16", family="SAM ViT", img_size=True),
    dict(name="swinv2_tiny_window8_256", family="Swin V2", size=256),
    dict(name="hieradet_small", family="Hiera (SAM2)", size=224),
    dict(name="vitamin_small_224", family="ViTamin", img_size=True),
    dict(name="coat_tiny", family="CoaT", size=224),
    dict(name="efficientvim_m1", family="EfficientViM", size=64),
    dict(name="lowformer_b0", family="LowFormer", size=64),
    dict(name="iformer_t", family="iFormer", size=64),
    dict(name="csatv2", family="CSATv2", size=224),
]


def _models() -> list[Model]:
    if importlib.util.find_spec("timm") is None:
        return []
    return [_entry(**row) for row in _TABLE]


MODELS = _models()
