"""Building blocks shared by the zoo: stems, BN, taps, heads and option checks."""

import collections
import math

import keras

from kerasbnn.models.precision import Precision, resolve_precision

#: Names of the stage-end layers every zoo model exposes (`stage1_out`, `stage2_out`, ...).
STAGE_OUT = "stage{}_out"
STEM_OUT = "stem_out"
LOGITS = "logits"


def check_option(name, value, valid):
    """Raises a ValueError naming `name` and the valid values unless `value` is one of them."""
    if value not in valid:
        raise ValueError(f"Unknown {name} {value!r}. Valid values: {', '.join(map(str, valid))}.")
    return value


def check_input_shape(input_shape, min_size, builder):
    """Validates `(height, width, channels)` against the smallest size a network allows.

    Raises:
        ValueError: for a shape that is not 3 positive integers or is spatially too small.
    """
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ValueError(
            f"{builder}: input_shape must be (height, width, channels) of positive integers, "
            f"received {input_shape!r}."
        )
    if min(shape[:2]) < min_size:
        raise ValueError(
            f"{builder}: input {shape[0]}x{shape[1]} is too small for this network, which needs "
            f"at least {min_size}x{min_size} (its total stride or receptive field). "
            "Use a larger input or the 'cifar' stem where the builder has one."
        )
    return shape


def check_num_classes(num_classes, builder):
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            f"{builder}: num_classes must be a positive integer, received {num_classes!r}."
        )
    return num_classes


def check_width(width_multiplier, builder):
    if not (isinstance(width_multiplier, (int, float)) and width_multiplier > 0):
        raise ValueError(
            f"{builder}: width_multiplier must be a positive number, received {width_multiplier!r}."
        )
    return float(width_multiplier)


#: What every zoo builder checks first: the input shape, classes, width and precisions.
BuilderArgs = collections.namedtuple("BuilderArgs", "shape num_classes width precision edge")


def check_builder_args(builder, input_shape, min_size, num_classes, width_multiplier, bits,
                       quantizer, binary, quantize_first_last):
    """The common arguments of a zoo builder, checked before any layer is made.

    Returns:
        `BuilderArgs(shape, num_classes, width, precision, edge)`, `edge` being the first and
        last layers' precision (`edge_precision`).

    Raises:
        ValueError: naming the builder and the bad argument.
    """
    width = check_width(width_multiplier, builder)
    num_classes = check_num_classes(num_classes, builder)
    precision = resolve_precision(bits, quantizer, binary)
    shape = check_input_shape(input_shape, min_size, builder)
    return BuilderArgs(shape, num_classes, width, precision,
                       edge_precision(precision, quantize_first_last))


def scaled(channels, width_multiplier):
    """Channel count scaled by a width multiplier, at least 1."""
    return max(1, int(round(channels * width_multiplier)))


def batch_norm(x, name, momentum):
    """BatchNormalization (momentum 0.9 by default in the zoo: Keras' 0.99 evaluates at
    chance after short runs)."""
    return keras.layers.BatchNormalization(momentum=momentum, epsilon=1e-5, name=name)(x)


def relu(x, name):
    return keras.layers.ReLU(name=name)(x)


def tap(x, name):
    """A named no-op marking a distillation point; LCE removes it (TF Identity)."""
    return keras.layers.Identity(name=name)(x)


def edge_precision(precision, quantize_first_last):
    """Precision of the first and last layers: float unless `quantize_first_last`."""
    if quantize_first_last:
        return precision
    return Precision(32, 32, precision.quantizer, precision.binary)


def head(x, num_classes, precision, quantize_first_last, *, pool=True):
    """Global average pooling (optional) and the classifier, named `logits`.

    The outputs are logits (no softmax); train with `from_logits=True`. A quantized classifier
    (`quantize_first_last=True`) is a 1x1 `QuantConv2D` on a `(1, 1, C)` view of the features,
    which LCE can run as a binary conv (a binary Dense would stay float in LCE).
    """
    if pool:
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if not quantize_first_last or precision.is_float:
        return keras.layers.Dense(num_classes, name=LOGITS)(x)
    x = keras.layers.Reshape((1, 1, x.shape[-1]), name="logits_reshape")(x)
    x = precision.conv(x, num_classes, 1, padding="valid", name="logits_conv", use_bias=True)
    return keras.layers.Reshape((num_classes,), name=LOGITS)(x)


def cifar_stem(x, filters, precision, *, bn_momentum, quantize_first_last, activation=True):
    """3x3 conv, stride 1 -> BN -> ReLU (CIFAR ResNets, VGG-Small)."""
    stem = edge_precision(precision, quantize_first_last)
    x = stem.conv(x, filters, 3, name="stem_conv")
    x = batch_norm(x, "stem_bn", bn_momentum)
    if activation:
        x = relu(x, "stem_relu")
    return x


def imagenet_stem(x, filters, precision, *, bn_momentum, quantize_first_last, activation=True):
    """7x7 conv, stride 2 -> BN [-> ReLU] -> 3x3 max-pool, stride 2 (ResNet-18, Bi-Real)."""
    stem = edge_precision(precision, quantize_first_last)
    x = stem.conv(x, filters, 7, strides=2, name="stem_conv")
    x = batch_norm(x, "stem_bn", bn_momentum)
    if activation:
        x = relu(x, "stem_relu")
    return keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)


def model_name(name, key, precision):
    return name or f"{key}_{precision.tag}"


INV_SQRT2 = 1.0 / math.sqrt(2.0)
