"""kerasbnn: binary and low-bit neural networks for Keras 3.

`import kerasbnn` itself loads neither TensorFlow nor Keras, so that the command line answers
`--help` and usage errors at once. The subpackages and functions below load on first use
(PEP 562): the first of `kerasbnn.layers`, `kerasbnn.summary`, `from kerasbnn import models`,
... imports them all, which registers every kerasbnn class with Keras, as `import kerasbnn`
did before, so that `keras.saving.load_model` then reads files holding kerasbnn layers.
When Keras is already imported (`import keras, kerasbnn`, the usual order), `import kerasbnn`
registers them at once, since TensorFlow is loaded anyway; code that imports kerasbnn before
Keras and then only loads saved models calls `kerasbnn.register_all()`.
"""

import importlib
import sys

from kerasbnn.version import __version__

#: The subpackages, imported together on first use.
_SUBPACKAGES = ("constraints", "quantizers", "layers", "models", "distill", "data", "utils",
                "export", "larq_import", "binarization")
#: Functions re-exported at the top level, and the subpackage that defines each.
_FUNCTIONS = {"summary": "utils", "lce_convert": "export", "from_larq": "larq_import",
              "binarize": "binarization"}
_registered = False

__all__ = ["__version__", "binarize", "constraints", "data", "distill", "export", "from_larq",
           "larq_import", "lce_convert", "layers", "models", "quantizers", "register_all",
           "summary", "utils"]


def register_all():
    """Imports every subpackage, which registers each kerasbnn layer, quantizer and
    constraint with Keras (for `keras.saving.load_model`). Loads TensorFlow."""
    global _registered
    if _registered:
        return
    _registered = True  # before the imports: a subpackage that reads kerasbnn.X does not recurse
    for name in _SUBPACKAGES:
        importlib.import_module(f"kerasbnn.{name}")


def _importing():
    """True while a kerasbnn module is being imported (it then imports what it needs itself;
    importing the others from inside it would meet it half-initialized)."""
    return any(getattr(getattr(module, "__spec__", None), "_initializing", False)
               for name, module in list(sys.modules.items()) if name.startswith("kerasbnn."))


def __getattr__(name):
    if name not in _SUBPACKAGES and name not in _FUNCTIONS:
        raise AttributeError(f"module 'kerasbnn' has no attribute {name!r}")
    module = importlib.import_module(f"kerasbnn.{_FUNCTIONS.get(name, name)}")
    if not _importing():
        register_all()
    value = getattr(module, name) if name in _FUNCTIONS else module
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *__all__})


if "keras" in sys.modules:  # TensorFlow is loaded already: nothing to save by waiting
    register_all()
