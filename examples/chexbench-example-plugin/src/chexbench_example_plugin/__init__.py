"""An example chexbench plugin (see docs/PLUGINS.md in the chexbench repository)."""

__version__ = "0.1.0"
