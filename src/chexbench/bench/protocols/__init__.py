"""The built-in protocols, declared without importing them (no torch here): each is imported on
its first lookup in ``PROTOCOLS`` (:mod:`chexbench.spec.registry`); its description is written
here only."""

from chexbench.spec.registry import PROTOCOLS

PROTOCOLS.declare(
    "finetune",
    "chexbench.bench.protocols.finetune:Finetune",
    "end-to-end fine-tuning, AdamW + warmup-cosine, selection on validation macro AUROC",
)
PROTOCOLS.declare(
    "linear",
    "chexbench.bench.protocols.linear:Linear",
    "linear probe on frozen features, (lr, L2) selected on validation macro AUROC",
)
