"""AdderNet's ResNet-20 (CIFAR) and its CNN twin, the PKKD teacher.

Structure of the official huawei-noah/AdderNet resnet20.py: an ordinary 3x3 conv stem + BN +
ReLU; three stages of three basic blocks (16, 32, 64 channels; the first block of stages 2 and 3
has stride 2) in which both 3x3 convolutions are adder layers, each followed by BN; a 1x1 adder +
BN on the downsampling shortcut; global average pooling, a 1x1 (ordinary, bias-free) conv
classifier and BN on the logits.

`layer="conv"` builds the same network with `Conv2D` in place of every `AdderConv2D` and
identical layer names, which is the concomitant CNN that PKKD trains next to the adder network.
"""

import keras

from kerasbnn.layers.adder import AdderConv2D
from kerasbnn.models import blocks
from kerasbnn.models.registry import register_model

LAYER_KINDS = ("adder", "conv")
STAGE_FILTERS = (16, 32, 64)


def _body_conv(kind, filters, kernel_size, strides, name, eta, adaptive_lr):
    if kind == "adder":
        return AdderConv2D(
            filters, kernel_size, strides=strides, padding="same", eta=eta, adaptive_lr=adaptive_lr, name=name
        )
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=name,
    )


def _basic_block(x, kind, filters, strides, prefix, eta, adaptive_lr, bn_momentum):
    """One residual basic block named `{prefix}_*`: two 3x3 body convs, each followed by BN.

    The first conv has stride `strides`; a 1x1 body conv + BN replaces the identity shortcut
    when the block changes the resolution or the channel count. `kind` is `"adder"` or `"conv"`
    (see `_body_conv`).
    """
    shortcut = x
    y = _body_conv(kind, filters, 3, strides, f"{prefix}_conv1", eta, adaptive_lr)(x)
    y = blocks.batch_norm(y, f"{prefix}_bn1", bn_momentum)
    y = keras.layers.ReLU(name=f"{prefix}_relu1")(y)
    y = _body_conv(kind, filters, 3, 1, f"{prefix}_conv2", eta, adaptive_lr)(y)
    y = blocks.batch_norm(y, f"{prefix}_bn2", bn_momentum)
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _body_conv(
            kind, filters, 1, strides, f"{prefix}_shortcut_conv", eta, adaptive_lr
        )(x)
        shortcut = blocks.batch_norm(shortcut, f"{prefix}_shortcut_bn", bn_momentum)
    y = keras.layers.Add(name=f"{prefix}_add")([y, shortcut])
    return blocks.relu(y, f"{prefix}_relu")


def _check_adder_options(bits, layer, blocks_per_stage):
    """Raises a `ValueError` for `bits` other than 32, an unknown `layer` kind or a
    `blocks_per_stage` that is not a positive integer."""
    if bits != 32:
        raise ValueError(
            f"adder_resnet20 is a full-precision adder network, received bits={bits!r}; use "
            "bits=32 (quantized ResNet-20s are kerasbnn.models.resnet20)."
        )
    blocks.check_option("layer", layer, LAYER_KINDS)
    if int(blocks_per_stage) != blocks_per_stage or blocks_per_stage < 1:
        raise ValueError(
            f"blocks_per_stage must be a positive integer, received {blocks_per_stage!r}."
        )


def _stem(inputs, filters, bn_momentum):
    """The ordinary 3x3 conv + BN + ReLU stem (in both `layer` kinds), tapped as `stem_out`."""
    x = keras.layers.Conv2D(
        filters,
        3,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name="stem_conv",
    )(inputs)
    x = blocks.relu(blocks.batch_norm(x, "stem_bn", bn_momentum), "stem_relu")
    return blocks.tap(x, blocks.STEM_OUT)


def _stage(x, stage, kind, filters, blocks_per_stage, eta, adaptive_lr, bn_momentum):
    """Stage `stage` (1-based): `blocks_per_stage` basic blocks, the first with stride 2 from
    stage 2 on, tapped as `stage{stage}_out`."""
    for b in range(1, blocks_per_stage + 1):
        strides = 2 if (b == 1 and stage > 1) else 1
        x = _basic_block(
            x, kind, filters, strides, f"stage{stage}_block{b}", eta, adaptive_lr, bn_momentum
        )
    return blocks.tap(x, blocks.STAGE_OUT.format(stage))


@register_model("adder_resnet20")
def adder_resnet20(
    input_shape=(32, 32, 3),
    num_classes=10,
    *,
    bits=32,
    layer="adder",
    blocks_per_stage=3,
    eta=0.2,
    adaptive_lr=True,
    bn_momentum=0.9,
    width_multiplier=1.0,
    input_tensor=None,
    name=None,
):
    """Adder ResNet-20 (AdderNet, CVPR 2020) or, with `layer="conv"`, its CNN twin.

    Stable layer names: `stem_out`, `stage{s}_block{b}_conv{1,2}` (the adder or conv layers, the
    pre-BN outputs PKKD distils), `stage{s}_block{b}_shortcut_conv`, `stem_out` and `stage{s}_out` (the
    feature taps, identical for both `layer` kinds) and `logits` (BN on the classifier output,
    linear), so `kerasbnn.models.taps` and `parts` work on it.

    Args:
        input_shape: `(rows, cols, channels)`, e.g. `(32, 32, 3)` or `(28, 28, 1)`.
        num_classes: number of classes (width of the logits).
        bits: must be 32: adder networks are full precision (kept for the zoo's common
            signature).
        layer: `"adder"` (AdderConv2D in every residual block and shortcut) or `"conv"`
            (Conv2D, the PKKD teacher).
        blocks_per_stage: basic blocks per stage (3 gives ResNet-20).
        eta: adaptive learning-rate coefficient of the adder layers.
        adaptive_lr: use AdderNet's adaptive learning-rate scaling.
        bn_momentum: momentum of every BatchNormalization.
        width_multiplier: scales every channel count (16, 32, 64 at 1.0). An adder layer's cost
            grows with input x output channels, so 0.5 makes the body about 4x cheaper.
        input_tensor: optional Keras tensor to build the model on.
        name: model name; default `"adder_resnet20"` or `"conv_resnet20"`.

    Returns:
        A functional `keras.Model` from images to logits.

    Raises:
        ValueError: for `bits` other than 32, an unknown `layer`, a non-positive
            `blocks_per_stage`, a non-positive `width_multiplier` or an input smaller than 4x4.
    """
    _check_adder_options(bits, layer, blocks_per_stage)
    width = blocks.check_width(width_multiplier, "adder_resnet20")
    input_shape = blocks.check_input_shape(input_shape, 4, "adder_resnet20")
    num_classes = blocks.check_num_classes(num_classes, "adder_resnet20")
    name = name or f"{layer}_resnet20"
    inputs = keras.Input(input_shape) if input_tensor is None else input_tensor
    x = _stem(inputs, blocks.scaled(STAGE_FILTERS[0], width), bn_momentum)
    for s, filters in enumerate(STAGE_FILTERS, start=1):
        x = _stage(x, s, layer, blocks.scaled(filters, width), blocks_per_stage, eta,
                   adaptive_lr, bn_momentum)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    # AdderNet's classifier is a bias-free 1x1 conv on the pooled map, i.e. a bias-free Dense.
    x = keras.layers.Dense(num_classes, use_bias=False, name="classifier")(x)
    outputs = blocks.batch_norm(x, blocks.LOGITS, bn_momentum)
    return keras.Model(inputs, outputs, name=name)
