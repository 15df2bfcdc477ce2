"""ReActNet-A: MobileNetV1's layout with binary 3x3 and 1x1 convs, RSign and RPReLU."""

import keras

from kerasbnn.layers.activations import RPReLU
from kerasbnn.models import blocks
from kerasbnn.models.registry import register_model

#: Output channels of the stem and of the 13 blocks (official reactnet.py `stage_out_channel`).
CHANNELS = (32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024)


def reactnet_block(x, out_channels, stride, name, precision, bn_momentum):
    r"""ReActNet-A block (official mobilenet/reactnet.py `BasicBlock`).

    out1 = RPReLU(BN(BinConv3x3(RSign(x))) + s(x)), s = identity or 2x2 average pool;
    out2 = RPReLU(BN(BinConv1x1(RSign(out1))) + out1) when the width is kept, otherwise
    two 1x1 convs of the same binarized input, each plus out1, concatenated (width x2).
    """
    in_channels = x.shape[-1]
    h = precision.conv(x, in_channels, 3, strides=stride, name=f"{name}_conv3x3",
                       learnable_threshold=True)
    h = blocks.batch_norm(h, f"{name}_bn1", bn_momentum)
    residual = x
    if stride > 1:
        residual = keras.layers.AveragePooling2D(stride, name=f"{name}_pool")(x)
    out1 = keras.layers.Add(name=f"{name}_add1")([h, residual])
    out1 = RPReLU(name=f"{name}_rprelu1")(out1)
    binarized = precision.rsign(out1, name=f"{name}_rsign2")
    if in_channels == out_channels:
        h2 = precision.conv(binarized, out_channels, 1, padding="valid", name=f"{name}_pw")
        h2 = blocks.batch_norm(h2, f"{name}_bn2", bn_momentum)
        out2 = keras.layers.Add(name=f"{name}_add2")([h2, out1])
    else:
        halves = []
        for i in (1, 2):
            h2 = precision.conv(binarized, in_channels, 1, padding="valid", name=f"{name}_pw{i}")
            h2 = blocks.batch_norm(h2, f"{name}_bn2_{i}", bn_momentum)
            halves.append(keras.layers.Add(name=f"{name}_add2_{i}")([h2, out1]))
        out2 = keras.layers.Concatenate(name=f"{name}_concat")(halves)
    return RPReLU(name=f"{name}_rprelu2")(out2)


@register_model("reactnet_a")
def reactnet_a(input_shape=(224, 224, 3), num_classes=1000, *, bits=1, quantizer="dorefa",
               binary="bireal", quantize_first_last=False, bn_momentum=0.9, width_multiplier=1.0,
               include_top=True, name=None):
    """ReActNet-A (Liu et al., arXiv:2003.03488).

    Float 3x3 stride-2 stem conv (32 channels) -> BN, then 13 blocks (`reactnet_block`) with
    widths 64-1024, stride 2 wherever the width grows beyond 64, global pooling and a float
    classifier. Binarizers: RSign (learnable shift, ApproxSign) on inputs, magnitude-aware
    weights (`binary="bireal"`). Stages (taps) are the five resolutions:
    `stage1_out` (1/2) ... `stage5_out` (1/32). MAD distils ReActNet-A from ResNet-50
    teachers on logits only, since the architectures differ.

    Args:
        input_shape: `(height, width, channels)`, at least 32x32.
        Other arguments: as in `kerasbnn.models.resnet20`.

    Returns:
        A functional `keras.Model` (logits output).

    Raises:
        ValueError: for an unknown option, unsupported bits or an input smaller than 32x32.
    """
    key = "reactnet_a"
    shape, num_classes, width, precision, first = blocks.check_builder_args(
        key, input_shape, 32, num_classes, width_multiplier, bits, quantizer, binary,
        quantize_first_last)

    inputs = keras.Input(shape)
    x = first.conv(inputs, blocks.scaled(CHANNELS[0], width), 3, strides=2, name="stem_conv")
    x = blocks.batch_norm(x, "stem_bn", bn_momentum)
    x = blocks.tap(x, blocks.STEM_OUT)
    stage = 1
    for i in range(1, len(CHANNELS)):
        stride = 2 if CHANNELS[i - 1] != CHANNELS[i] and CHANNELS[i] != 64 else 1
        if stride == 2:
            x = blocks.tap(x, blocks.STAGE_OUT.format(stage))
            stage += 1
        x = reactnet_block(x, blocks.scaled(CHANNELS[i], width), stride, f"block{i}", precision,
                           bn_momentum)
    x = blocks.tap(x, blocks.STAGE_OUT.format(stage))
    if include_top:
        x = blocks.head(x, num_classes, precision, quantize_first_last)
    return keras.Model(inputs, x, name=blocks.model_name(name, key, precision))
