"""kerasbnn: binary and low-bit neural networks for Keras 3."""

from kerasbnn import constraints, data, layers, quantizers, utils
from kerasbnn import models
from kerasbnn import distill
from kerasbnn.utils import summary
from kerasbnn import export
from kerasbnn.export import lce_convert
from kerasbnn import larq_import
from kerasbnn.larq_import import from_larq
from kerasbnn.binarization import binarize
from kerasbnn.version import __version__

__all__ = ["__version__", "binarize", "constraints", "data", "distill", "export", "from_larq", "larq_import", "lce_convert", "layers", "models", "quantizers", "summary", "utils"]
