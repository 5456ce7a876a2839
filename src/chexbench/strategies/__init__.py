"""The built-in strategies, declared without importing them (no torch here): each is imported on
its first lookup in ``STRATEGIES`` (:mod:`chexbench.spec.registry`). A new strategy is a module
of this package plus one declaration below; its description is written here only."""

from chexbench.spec.registry import STRATEGIES

STRATEGIES.declare(
    "byol",
    "chexbench.strategies.byol:BYOL",
    "BYOL (Grill et al. 2020): online network + predictor regress an EMA target's projection, no negatives",
)
STRATEGIES.declare(
    "checkpoint",
    "chexbench.strategies.checkpoint:Checkpoint",
    "a published or your own pretrained checkpoint (MoCo, Lightning, torchvision, timm, torchxrayvision, "
    "transformers DINOv2, open_clip/OpenAI CLIP, MAE; hf-hub: references), strict key audit",
)
STRATEGIES.declare(
    "dino",
    "chexbench.strategies.dino:DINO",
    "DINO (Caron et al. 2021): self-distillation, EMA teacher centred and sharpened, multi-crop",
)
STRATEGIES.declare(
    "imagenet",
    "chexbench.strategies.imagenet:ImageNet",
    "supervised ImageNet-1k weights (timm) from a local file, strict key audit",
)
STRATEGIES.declare(
    "mae",
    "chexbench.strategies.mae:MAE",
    "MAE (He et al. 2022): 75 % of patches masked, encoder on the visible ones, small decoder, normalized "
    "pixels",
)
STRATEGIES.declare(
    "moco_convstem",
    "chexbench.strategies.moco_convstem:MoCoConvStem",
    "the study's name for mocov2 on a ConvStem ViT (Xiao et al. 2021): same objective, same ViT recipe (MoCo "
    "v3)",
)
STRATEGIES.declare(
    "mocov2",
    "chexbench.strategies.mocov2:MoCoV2",
    "MoCo-v2 (He et al. 2020; Chen et al. 2020): momentum encoder, key queue, MLP head, shuffle-BN",
)
STRATEGIES.declare(
    "mocov2_topk",
    "chexbench.strategies.mocov2_topk:MoCoV2TopK",
    "MoCo-v2 with a top-K patch-scoring head: query and key embeddings pool the K best-scored ViT patch "
    "tokens",
)
STRATEGIES.declare(
    "mocov3",
    "chexbench.strategies.mocov3:MoCoV3",
    "MoCo v3 (Chen, Xie & He 2021): predictor, symmetric in-batch contrastive loss (2τ), no queue, cosine "
    "momentum",
)
STRATEGIES.declare(
    "scratch",
    "chexbench.strategies.scratch:Scratch",
    "random initialization (timm defaults); the baseline every strategy is compared with",
)
STRATEGIES.declare(
    "simclr",
    "chexbench.strategies.simclr:SimCLR",
    "SimCLR (Chen et al. 2020): two views, NT-Xent over the batch, MLP head; pretrained on unlabeled CXRs",
)
STRATEGIES.declare(
    "simclr_topk",
    "chexbench.strategies.simclr_topk:SimCLRTopK",
    "SimCLR with a top-K patch-scoring head: the view embedding pools the K best-scored ViT patch tokens",
)
