"""What a benchmark is, before anything runs: grid files and their parsing (:mod:`.parse`), the
resolution of a grid into cells (:mod:`.grid`, :mod:`.cell`), the ``[settings]`` keys
(:mod:`.settings`), component option models (:mod:`.options`), the registries (:mod:`.registry`)
and the configuration reference printed by ``chexbench list`` (:mod:`.reference`).

This package imports only :mod:`chexbench.core` (and pydantic); every layer above reads it.
"""
