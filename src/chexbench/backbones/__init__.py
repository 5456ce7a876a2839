"""The built-in backbones, declared without importing them (no torch, no timm here): each is
imported on its first lookup in ``BACKBONES`` (:mod:`chexbench.spec.registry`). A new backbone
is a class in a module of this package plus one declaration below; its description is written here only."""

from chexbench.spec.registry import BACKBONES

BACKBONES.declare(
    "densenet121",
    "chexbench.backbones.densenet:DenseNet121",
    "DenseNet-121 (Huang et al. 2017), timm densenet121, 1 input channel, 1024-d features (torchxrayvision's "
    "layout)",
)
BACKBONES.declare(
    "resnet50",
    "chexbench.backbones.resnet:ResNet50",
    "ResNet-50 (He et al. 2016), timm resnet50, 1 input channel, 2048-d features",
)
BACKBONES.declare(
    "resnet_tiny",
    "chexbench.backbones.resnet:ResNetTiny",
    "ResNet-10 (BasicBlock ×[1,1,1,1], widths 32–256): the ResNet family at CPU size, for tests and smoke "
    "runs",
)
BACKBONES.declare(
    "vit_b14_dinov2",
    "chexbench.backbones.dinov2:VitB14Dinov2",
    "DINOv2 ViT-B/14 (Oquab et al. 2024; RAD-DINO), timm vit_base_patch14_dinov2, 1 input channel, any size "
    "multiple of 14",
)
BACKBONES.declare(
    "vit_b14_reg4_dinov2",
    "chexbench.backbones.dinov2:VitB14Reg4Dinov2",
    "DINOv2 ViT-B/14 with 4 register tokens (Darcet et al. 2024; e.g. CXformer), timm "
    "vit_base_patch14_reg4_dinov2",
)
BACKBONES.declare(
    "vit_b16",
    "chexbench.backbones.vit:VitB16",
    "ViT-B/16 (Dosovitskiy et al. 2021), timm vit_base_patch16_224, 1 input channel, any size multiple of 16",
)
BACKBONES.declare(
    "vit_b16_clip",
    "chexbench.backbones.clip:VitB16Clip",
    "CLIP image tower ViT-B/16 (Radford et al. 2021), timm vit_base_patch16_clip_224, 1 input channel, act "
    "gelu|quick_gelu",
)
BACKBONES.declare(
    "vit_b16_convstem",
    "chexbench.backbones.convstem:VitB16ConvStem",
    "ViT-B with a convolutional stem (Xiao et al. 2021): 4× [3×3 s2 conv, BN, ReLU] (64–512) + 1×1 → 768, "
    "depth 11; stem_convs = 3 gives the stride-8 variant",
)
BACKBONES.declare(
    "vit_b32_clip",
    "chexbench.backbones.clip:VitB32Clip",
    "CLIP image tower ViT-B/32 (Radford et al. 2021; CheXzero), timm vit_base_patch32_clip_224, 1 input "
    "channel",
)
BACKBONES.declare(
    "vit_convstem_tiny",
    "chexbench.backbones.convstem:VitConvStemTiny",
    "ConvStem ViT at CPU size (3× conv stem stride 8, 24–96 channels, width 96, depth 3): for tests and "
    "smoke runs",
)
BACKBONES.declare(
    "vit_tiny",
    "chexbench.backbones.vit:VitTiny",
    "ViT at CPU size (patch 8, width 96, depth 4, 3 heads): the ViT family for tests and smoke runs",
)
