"""gatelab: the LSTM you can see through, and a fast one you can train with.

`gatelab.reference` is NumPy only; everything that needs PyTorch is imported lazily,
so `import gatelab.reference` never imports torch.
"""

import importlib

__version__ = "0.1.0"

_LAZY = {"reference", "nn", "engines", "convert", "gates", "data", "lm", "viz", "experiments", "bench"}


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f"gatelab.{name}")
    raise AttributeError(f"module 'gatelab' has no attribute {name!r}")
