"""The model zoo: binary students and multi-bit teachers with aligned feature taps.

Every builder is `builder(input_shape, num_classes, *, bits=32, quantizer="dorefa",
binary=..., ...)` and returns a functional `keras.Model` whose distillation points are
layers named `stage1_out`, ..., listed by `taps(model)`; `parts(model)` cuts it there.
Importing this package registers every builder, so `get("resnet20")` works after
`import kerasbnn`.
"""

from kerasbnn.models.parts import parts, taps
from kerasbnn.models.precision import BINARY_SCHEMES, QUANTIZERS, Precision, resolve_precision
from kerasbnn.models.registry import get, names, register_model
from kerasbnn.models.adder_resnet import adder_resnet20
from kerasbnn.models.alexnet import alexnet
from kerasbnn.models.quicknet import quicknet
from kerasbnn.models.reactnet import reactnet_a
from kerasbnn.models.resnet import bireal_resnet18, reactnet_resnet18, resnet18, resnet20
from kerasbnn.models.vgg import vgg_small

__all__ = [
    "BINARY_SCHEMES",
    "QUANTIZERS",
    "Precision",
    "adder_resnet20",
    "alexnet",
    "bireal_resnet18",
    "get",
    "names",
    "parts",
    "quicknet",
    "reactnet_a",
    "reactnet_resnet18",
    "register_model",
    "resnet18",
    "resnet20",
    "resolve_precision",
    "taps",
    "vgg_small",
]
