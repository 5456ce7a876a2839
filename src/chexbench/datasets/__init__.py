"""The built-in datasets, declared without importing them (no pandas here): each is imported on
its first lookup in ``DATASETS`` (:mod:`chexbench.spec.registry`). A new dataset is a class in a
module of this package plus one declaration below; its description is written here only. The phantoms
are one class per layout (:mod:`.phantom`)."""

from chexbench.spec.registry import DATASETS

DATASETS.declare(
    "chexpert",
    "chexbench.datasets.chexpert:CheXpert",
    "CheXpert v1.0 / -small (Irvin et al. 2019): 14 observations, 5 competition labels",
)
DATASETS.declare(
    "indiana",
    "chexbench.datasets.indiana:Indiana",
    "Indiana University / OpenI NLMCXR (Demner-Fushman et al. 2016): MeSH-derived labels",
)
DATASETS.declare(
    "nih",
    "chexbench.datasets.nih:NIHChestXray14",
    "NIH ChestX-ray14 (Wang et al. 2017): 14 findings, official train_val/test lists",
)
DATASETS.declare(
    "phantom-chexpert",
    "chexbench.datasets.phantom:PhantomChexpert",
    "phantom radiographs in the CheXpert-v1.0-small layout (generated on first use)",
)
DATASETS.declare(
    "phantom-indiana",
    "chexbench.datasets.phantom:PhantomIndiana",
    "phantom radiographs in the Indiana/OpenI layout (generated on first use)",
)
DATASETS.declare(
    "phantom-nih",
    "chexbench.datasets.phantom:PhantomNih",
    "phantom radiographs in the NIH ChestX-ray14 layout (generated on first use)",
)
