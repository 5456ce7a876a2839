"""Foundation: atomic writes, the lock, distributed primitives, the run context, training primitives. Imports
nothing else of chexbench."""
