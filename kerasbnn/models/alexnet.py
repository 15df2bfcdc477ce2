"""AlexNet with BatchNormalization after every conv and FC layer, as in CMT-KD."""

import keras

from kerasbnn.models import blocks
from kerasbnn.models.registry import register_model

STEMS = ("imagenet", "cifar")


def _imagenet_min_size():
    # conv1 11x11/4 (pad 2), then three 3x3/2 valid max-pools must leave at least 1 pixel.
    size = 1
    while True:
        s = (size + 4 - 11) // 4 + 1
        for _ in range(3):
            s = (s - 3) // 2 + 1 if s >= 3 else 0
        if s >= 1:
            return size
        size += 1


def _unit(x, filters, kernel_size, name, precision, bn_momentum, relu, **kwargs):
    x = precision.conv(x, filters, kernel_size, name=f"{name}_conv", **kwargs)
    x = blocks.batch_norm(x, f"{name}_bn", bn_momentum)
    if relu:
        x = blocks.relu(x, f"{name}_relu")
    return x


def _pool(x, name, imagenet):
    """A 3x3 stride-2 max-pool: "valid" after the ImageNet stem, "same" after the CIFAR one."""
    padding = "valid" if imagenet else "same"
    return keras.layers.MaxPooling2D(3, strides=2, padding=padding, name=name)(x)


def _features(x, imagenet, width, precision, first, bn_momentum, relu):
    """conv1 to conv5 in three blocks, [conv1], [pool, conv2], [pool, conv3, conv4, conv5],
    each tapped `stage{s}_out` after its last conv; conv1 uses the `first` precision."""
    if imagenet:
        x = keras.layers.ZeroPadding2D(2, name="conv1_pad")(x)
        x = _unit(x, blocks.scaled(96, width), 11, "conv1", first, bn_momentum, relu, strides=4,
                  padding="valid")
    else:
        x = _unit(x, blocks.scaled(96, width), 5, "conv1", first, bn_momentum, relu)
    x = blocks.tap(x, blocks.STAGE_OUT.format(1))
    x = _pool(x, "pool1", imagenet)
    x = _unit(x, blocks.scaled(256, width), 5, "conv2", precision, bn_momentum, relu)
    x = blocks.tap(x, blocks.STAGE_OUT.format(2))
    x = _pool(x, "pool2", imagenet)
    x = _unit(x, blocks.scaled(384, width), 3, "conv3", precision, bn_momentum, relu)
    x = _unit(x, blocks.scaled(384, width), 3, "conv4", precision, bn_momentum, relu)
    x = _unit(x, blocks.scaled(256, width), 3, "conv5", precision, bn_momentum, relu)
    return blocks.tap(x, blocks.STAGE_OUT.format(3))


def _top(x, fc_units, num_classes, precision, quantize_first_last, bn_momentum, relu, imagenet):
    """pool5, the two hidden FCs (1x1 convs on a `(1, 1, C)` view, so LCE can run them as
    binary convs) and the classifier."""
    x = _pool(x, "pool5", imagenet)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Reshape((1, 1, x.shape[-1]), name="fc_reshape")(x)
    x = _unit(x, fc_units, 1, "fc6", precision, bn_momentum, relu, padding="valid")
    x = _unit(x, fc_units, 1, "fc7", precision, bn_momentum, relu, padding="valid")
    x = keras.layers.Flatten(name="fc_flatten")(x)
    return blocks.head(x, num_classes, precision, quantize_first_last, pool=False)


@register_model("alexnet")
def alexnet(input_shape=(224, 224, 3), num_classes=1000, *, bits=32, quantizer="dorefa",
            binary="plain", stem="imagenet", fc_units=4096, quantize_first_last=False,
            bn_momentum=0.9, width_multiplier=1.0, include_top=True, name=None):
    """AlexNet (Krizhevsky et al. 2012) with BN after every conv and FC (CMT-KD, arXiv:2210.16103).

    Convs 96-256-384-384-256 in three blocks: [conv1], [pool, conv2], [pool, conv3, conv4,
    conv5]; head: pool, FC `fc_units`, FC `fc_units`, classifier. Every conv/FC is followed
    by BN (and ReLU unless the activations are 1-bit). conv1 and the classifier stay float
    unless `quantize_first_last=True`; the hidden FCs are quantized and written as 1x1 convs
    on a `(1, 1, C)` view so LCE can run them as binary convs.

    Taps: the last conv of each block (CMT-KD's fusion points, read as conv1, conv2, conv5):
    `stage1_out`, `stage2_out`, `stage3_out`. Because conv1 is itself the first block, the
    `stem` part is the identity.

    Args:
        stem: `"imagenet"` (11x11 stride-4 conv1, 5x5 conv2, 3x3 stride-2 max-pools) or
            `"cifar"` (5x5 stride-1 conv1, 5x5 conv2, 3x3 stride-2 "same" max-pools:
            32x32 -> 4x4 before the FCs).
        fc_units: width of the two hidden FC layers.
        Other arguments: as in `kerasbnn.models.resnet20`.

    Returns:
        A functional `keras.Model` (logits output).

    Raises:
        ValueError: for an unknown option, unsupported bits or a too small input.
    """
    key = "alexnet"
    blocks.check_option("stem", stem, STEMS)
    if isinstance(fc_units, bool) or not isinstance(fc_units, int) or fc_units < 1:
        raise ValueError(f"alexnet: fc_units must be a positive integer, received {fc_units!r}.")
    imagenet = stem == "imagenet"
    shape, num_classes, width, precision, first = blocks.check_builder_args(
        key, input_shape, _imagenet_min_size() if imagenet else 8, num_classes, width_multiplier,
        bits, quantizer, binary, quantize_first_last)
    relu = precision.a_bits != 1  # 1-bit activations: the next conv's sign is the nonlinearity
    inputs = keras.Input(shape)
    x = blocks.tap(inputs, blocks.STEM_OUT)
    x = _features(x, imagenet, width, precision, first, bn_momentum, relu)
    if include_top:
        x = _top(x, fc_units, num_classes, precision, quantize_first_last, bn_momentum, relu,
                 imagenet)
    return keras.Model(inputs, x, name=blocks.model_name(name, key, precision))
