"""Explanations: heatmaps of a model's decision (top-K patch scores, Grad-CAM), the pointing game, and the
gallery of ``chexbench explain``."""
