"""chexbench: which pretraining strategy gives the best chest X-ray classifier, with statistics."""

__version__ = "0.1.0"

# The built-in components: each package's __init__ declares its entries in the registries of
# chexbench.spec.registry (name, "module:Class", description) without importing them, so these
# imports are cheap (no torch). The package root is the one place that knows every layer: the
# registry, below the components, names none of them.
from chexbench import backbones, datasets, strategies  # noqa: E402,F401
from chexbench.bench import protocols  # noqa: E402,F401
from chexbench.spec import grids  # noqa: E402,F401
