"""Names a package re-exports from its modules, imported on first use (PEP 562).

A package's `__init__` stays free of TensorFlow (the training config reads `data.info` and
`core.archs` without it) and still offers its main names, e.g. `wmse_tf.data.load`.
Imports nothing of wmse_tf.
"""

import importlib


def reexports(package, table):
    """A module `__getattr__` for `package`: `table` maps a name to "module:attribute" (module
    relative to the package)."""

    def __getattr__(name):
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attr = table[name].partition(":")
        return getattr(importlib.import_module(f"{package}.{module}"), attr)

    return __getattr__
