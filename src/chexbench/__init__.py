"""chexbench: which pretraining strategy gives the best chest X-ray classifier, with statistics."""

__version__ = "0.1.0"
