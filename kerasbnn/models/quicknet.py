"""QuickNet: Larq Zoo's binary network designed for fast LCE inference."""

import keras

from kerasbnn.models import blocks
from kerasbnn.models.registry import register_model

#: (blocks per section, filters per section) of QuickNet (Larq Zoo `QuickNetFactory.spec[15]`).
SPEC = ((2, 3, 4, 4), (64, 128, 256, 512))


def quicknet_block(x, filters, stride, name, precision, bn_momentum):
    """Larq Zoo's `residual_fast_block`: x + BN(ReLU(BinConv3x3(x))).

    Downsampling blocks keep the width in the binary conv (strided), and concatenate the
    max-pooled, batch-normalised shortcut with the sum, doubling the width. ReLU before
    BN lets LCE fuse it into the binary conv (LCE.md section 3).
    """
    in_channels = x.shape[-1]
    downsample = in_channels != filters
    residual = x
    if downsample:
        residual = keras.layers.MaxPooling2D(stride, strides=stride, name=f"{name}_pool")(x)
        residual = blocks.batch_norm(residual, f"{name}_pool_bn", bn_momentum)
    h = precision.conv(x, in_channels, 3, strides=stride, activation="relu",
                       kernel_initializer="glorot_normal", name=f"{name}_conv")
    h = blocks.batch_norm(h, f"{name}_bn", bn_momentum)
    out = keras.layers.Add(name=f"{name}_add")([h, residual])
    if downsample:
        out = keras.layers.Concatenate(name=f"{name}_concat")([residual, out])
    return out


@register_model("quicknet")
def quicknet(input_shape=(224, 224, 3), num_classes=1000, *, bits=1, quantizer="dorefa",
             binary="plain", quantize_first_last=False, bn_momentum=0.9, width_multiplier=1.0,
             include_top=True, name=None):
    """QuickNet (Bannink et al., Larq Compute Engine, arXiv:2011.09398; Larq Zoo `QuickNet`).

    Stem: float 3x3 stride-2 conv (8 channels), 3x3 stride-2 depthwise conv (x8, ReLU), BN;
    four sections of 2/3/4/4 `quicknet_block`s with 64/128/256/512 channels; ReLU, global
    pooling, float classifier. Larq Zoo clips at 1.25 (`SteSign(clip_value=1.25)`); the
    `"plain"` scheme here clips at 1.0. Taps: the end of each section, `stage1_out` ..
    `stage4_out`.

    Args:
        input_shape: `(height, width, channels)`, at least 32x32.
        Other arguments: as in `kerasbnn.models.resnet20`.

    Returns:
        A functional `keras.Model` (logits output).

    Raises:
        ValueError: for an unknown option, unsupported bits or an input smaller than 32x32.
    """
    key = "quicknet"
    shape, num_classes, width, precision, first = blocks.check_builder_args(
        key, input_shape, 32, num_classes, width_multiplier, bits, quantizer, binary,
        quantize_first_last)
    counts, filters = SPEC
    filters = [blocks.scaled(f, width) for f in filters]

    inputs = keras.Input(shape)
    stem_filters = max(1, filters[0] // 8)
    x = first.conv(inputs, stem_filters, 3, strides=2, name="stem_conv")
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=filters[0] // stem_filters, strides=2,
                                     padding="same", use_bias=False, activation="relu",
                                     depthwise_initializer="he_normal", name="stem_dwconv")(x)
    x = blocks.batch_norm(x, "stem_bn", bn_momentum)
    x = blocks.tap(x, blocks.STEM_OUT)
    for s, (count, width_s) in enumerate(zip(counts, filters), start=1):
        for b in range(1, count + 1):
            stride = 2 if s > 1 and b == 1 else 1
            x = quicknet_block(x, width_s, stride, f"stage{s}_block{b}", precision, bn_momentum)
        x = blocks.tap(x, blocks.STAGE_OUT.format(s))
    if include_top:
        x = blocks.relu(x, "head_relu")
        x = blocks.head(x, num_classes, precision, quantize_first_last)
    return keras.Model(inputs, x, name=blocks.model_name(name, key, precision))
