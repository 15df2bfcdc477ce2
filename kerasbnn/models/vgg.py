"""VGG-Small for CIFAR (the LQ-Nets / MAD baseline): six 3x3 convs and one classifier."""

import keras

from kerasbnn.models import blocks
from kerasbnn.models.registry import register_model


def conv_unit(x, filters, name, precision, bn_momentum, *, pool):
    """conv -> BN [-> ReLU] [-> 2x2 max-pool].

    1-bit activations get no ReLU (the next conv's sign is the nonlinearity) and pool after
    BN, so that LCE fuses bconv -> BN -> max-pool -> sign into a bitpacked bconv and a binary
    max-pool (LCE.md section 3).
    """
    x = precision.conv(x, filters, 3, name=f"{name}_conv")
    x = blocks.batch_norm(x, f"{name}_bn", bn_momentum)
    if precision.a_bits != 1:
        x = blocks.relu(x, f"{name}_relu")
    if pool:
        x = keras.layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    return x


@register_model("vgg_small")
def vgg_small(input_shape=(32, 32, 3), num_classes=10, *, bits=32, quantizer="dorefa",
              binary="plain", quantize_first_last=False, bn_momentum=0.9, width_multiplier=1.0,
              include_top=True, name=None):
    """VGG-Small (Zhang et al., LQ-Nets, arXiv:1807.10029): 128-128-P-256-256-P-512-512-P-FC.

    About 4.6 M parameters at 32x32. The first conv (`stem_conv`) and the classifier stay
    float unless `quantize_first_last=True`. Taps: every max-pool output, `stage1_out`,
    `stage2_out`, `stage3_out` (MAD's distillation points).

    Args:
        input_shape: `(height, width, channels)`, at least 8x8.
        num_classes: classifier width.
        Other arguments: `bits`, `quantizer`, `binary`, `quantize_first_last`, `bn_momentum`,
            `width_multiplier`, `include_top` and `name`, as in `kerasbnn.models.resnet20`.

    Returns:
        A functional `keras.Model` (logits output).

    Raises:
        ValueError: for an unknown option, unsupported bits or an input smaller than 8x8.
    """
    key = "vgg_small"
    shape, num_classes, width, precision, stem = blocks.check_builder_args(
        key, input_shape, 8, num_classes, width_multiplier, bits, quantizer, binary,
        quantize_first_last)

    inputs = keras.Input(shape)
    x = stem.conv(inputs, blocks.scaled(128, width), 3, name="stem_conv")
    x = blocks.batch_norm(x, "stem_bn", bn_momentum)
    if precision.a_bits != 1:
        x = blocks.relu(x, "stem_relu")
    x = blocks.tap(x, blocks.STEM_OUT)
    x = conv_unit(x, blocks.scaled(128, width), "conv1", precision, bn_momentum, pool=True)
    x = blocks.tap(x, blocks.STAGE_OUT.format(1))
    for stage, filters in ((2, 256), (3, 512)):
        filters = blocks.scaled(filters, width)
        x = conv_unit(x, filters, f"conv{2 * stage - 2}", precision, bn_momentum, pool=False)
        x = conv_unit(x, filters, f"conv{2 * stage - 1}", precision, bn_momentum, pool=True)
        x = blocks.tap(x, blocks.STAGE_OUT.format(stage))
    if include_top:
        x = keras.layers.Flatten(name="flatten")(x)
        x = blocks.head(x, num_classes, precision, quantize_first_last, pool=False)
    return keras.Model(inputs, x, name=blocks.model_name(name, key, precision))
