"""ResNets: ResNet-20 (CIFAR), ResNet-18, Bi-Real ResNet-18 and ReActNet's ResNet-18.

Every builder shares one signature: `input_shape`, `num_classes`, then keyword-only
`bits`, `quantizer`, `binary`, `quantize_first_last`, `bn_momentum`, `width_multiplier`,
`include_top`, `name` (see `kerasbnn.models.precision` for how `bits` is resolved). The
stem conv, the classifier and the 1x1 downsampling shortcuts stay float unless
`quantize_first_last=True` (stem and classifier only; shortcuts are float in Bi-Real and
ReActNet too). Outputs are logits.
"""

import keras

from kerasbnn.layers.activations import RPReLU, ScaledAbs
from kerasbnn.models import blocks
from kerasbnn.models.registry import register_model

#: Residual block variants of the thesis (METHODS.md section 5).
BLOCKS = ("basic", "naive", "single_relu", "double_relu", "abs")
STEMS = ("imagenet", "cifar")
#: ResNet-20's blocks: the thesis variants, Bi-Real's and ReActNet's one-conv blocks.
RESNET20_BLOCKS = BLOCKS + ("bireal", "reactnet")


def shortcut(x, filters, stride, name, bn_momentum, *, avgpool):
    """Identity, or a float projection: [AvgPool 2x2 ->] 1x1 conv -> BN.

    `avgpool=True` is Bi-Real's downsampling (average pool then a stride-1 1x1 conv);
    otherwise the 1x1 conv is strided (He et al., option B).
    """
    if stride == 1 and x.shape[-1] == filters:
        return x
    conv_stride = stride
    if avgpool and stride > 1:
        x = keras.layers.AveragePooling2D(stride, strides=stride, padding="same",
                                          name=f"{name}_down_pool")(x)
        conv_stride = 1
    x = keras.layers.Conv2D(filters, 1, strides=conv_stride, use_bias=False,
                            kernel_initializer="he_normal", name=f"{name}_down_conv")(x)
    return blocks.batch_norm(x, f"{name}_down_bn", bn_momentum)


def thesis_block(x, filters, stride, name, precision, *, variant, nonnegative, bn_momentum):
    r"""Two-conv residual block in one of the thesis' variants (thesis section 3.1.1).

    With h1 = BN1(Conv1(x)) and h2 = BN2(Conv2(.)):

    - `"basic"`: the float ResNet block, out = ReLU(BN2(Conv2(ReLU(h1))) + s(x)).
    - `"naive"`: sign instead of ReLU, out = BN2(Conv2(h1)) + s(x).
    - `"single_relu"`: out = ReLU(BN2(Conv2(h1)) + s(x)).
    - `"double_relu"`: out = ReLU((h1 + h2) / sqrt(2) + s(x)), h2 = BN2(Conv2(h1)).
    - `"abs"`: out = BN2(Conv2(h1)) + alpha |s(x)|, alpha in [0, 1] learned per block.

    s is the identity or a float 1x1 projection. At 1 bit the convs binarize their inputs
    (the sign is the nonlinearity); the same wiring at every precision keeps taps aligned.

    Returns:
        `(output, output_is_nonnegative)`.
    """
    residual = shortcut(x, filters, stride, name, bn_momentum, avgpool=False)
    h1 = precision.conv(x, filters, 3, strides=stride, name=f"{name}_conv1",
                        nonnegative=nonnegative)
    h1 = blocks.batch_norm(h1, f"{name}_bn1", bn_momentum)
    if variant == "basic":
        h2 = precision.conv(blocks.relu(h1, f"{name}_relu1"), filters, 3, name=f"{name}_conv2",
                            nonnegative=True)
    else:
        h2 = precision.conv(h1, filters, 3, name=f"{name}_conv2")
    h2 = blocks.batch_norm(h2, f"{name}_bn2", bn_momentum)
    if variant == "double_relu":
        inner = keras.layers.Add(name=f"{name}_inner_add")([h1, h2])
        inner = keras.layers.Rescaling(blocks.INV_SQRT2, name=f"{name}_inner_scale")(inner)
        out = keras.layers.Add(name=f"{name}_add")([inner, residual])
    elif variant == "abs":
        residual = ScaledAbs(name=f"{name}_abs")(residual)
        out = keras.layers.Add(name=f"{name}_add")([h2, residual])
    else:
        out = keras.layers.Add(name=f"{name}_add")([h2, residual])
    if variant in ("basic", "single_relu", "double_relu"):
        return blocks.relu(out, f"{name}_relu"), True
    return out, False


def bireal_block(x, filters, stride, name, precision, *, bn_momentum, react=False):
    r"""One binary conv with a real-valued shortcut around it.

    Bi-Real Net: x_{l+1} = BN(Conv(sign(x_l))) + s(x_l), s = identity or AvgPool -> 1x1
    conv -> BN. ReActNet (`react=True`): x_{l+1} = RPReLU(BN(Conv(RSign(x_l))) + s(x_l)),
    RSign = learnable per-channel shift then sign. The float version feeds the conv with
    hard_tanh(x) = clip(x, -1, 1), the activation Bi-Real pre-trains its real net with; the
    ReActNet float version relies on RPReLU. A k-bit version keeps the float one's function:
    the same hard_tanh (Bi-Real) before a quantizer on a signed grid (the conv input takes
    both signs: `Precision.conv(signed=True)`), so that a k-bit teacher copied from the float
    network starts close to it (MAD's recipe, `kerasbnn.transfer.from_float`).
    """
    residual = shortcut(x, filters, stride, name, bn_momentum, avgpool=True)
    conv_input = x
    if precision.a_bits > 1 and not react:
        conv_input = keras.layers.Activation("hard_tanh", name=f"{name}_hardtanh")(x)
    h = precision.conv(conv_input, filters, 3, strides=stride, name=f"{name}_conv",
                       learnable_threshold=react, signed=True)
    h = blocks.batch_norm(h, f"{name}_bn", bn_momentum)
    out = keras.layers.Add(name=f"{name}_add")([h, residual])
    if react:
        out = RPReLU(name=f"{name}_rprelu")(out)
    return out


def _resnet(key, input_shape, num_classes, *, stage_filters, stage_blocks, stem, stem_filters,
            block, bits, quantizer, binary, quantize_first_last, bn_momentum, width_multiplier,
            include_top, name):
    """Shared ResNet construction; `block` is a thesis variant, `"bireal"` or `"reactnet"`."""
    stride = (4 if stem == "imagenet" else 1) * 2 ** (len(stage_filters) - 1)
    shape, num_classes, width, precision, _ = blocks.check_builder_args(
        key, input_shape, stride, num_classes, width_multiplier, bits, quantizer, binary,
        quantize_first_last)
    plain_stem = block in ("bireal", "reactnet")

    inputs = keras.Input(shape)
    if stem == "imagenet":
        x = blocks.imagenet_stem(inputs, blocks.scaled(stem_filters, width), precision,
                                 bn_momentum=bn_momentum, quantize_first_last=quantize_first_last,
                                 activation=not plain_stem)
    else:
        x = blocks.cifar_stem(inputs, blocks.scaled(stem_filters, width), precision,
                              bn_momentum=bn_momentum, quantize_first_last=quantize_first_last,
                              activation=not plain_stem)
    x = blocks.tap(x, blocks.STEM_OUT)
    nonnegative = not plain_stem
    for s, (filters, count) in enumerate(zip(stage_filters, stage_blocks), start=1):
        filters = blocks.scaled(filters, width)
        for b in range(1, count + 1):
            stride = 2 if (s > 1 and b == 1) else 1
            block_name = f"stage{s}_block{b}"
            if plain_stem:
                x = bireal_block(x, filters, stride, block_name, precision,
                                 bn_momentum=bn_momentum, react=block == "reactnet")
            else:
                x, nonnegative = thesis_block(x, filters, stride, block_name, precision,
                                              variant=block, nonnegative=nonnegative,
                                              bn_momentum=bn_momentum)
        x = blocks.tap(x, blocks.STAGE_OUT.format(s))
    if include_top:
        x = blocks.head(x, num_classes, precision, quantize_first_last)
    return keras.Model(inputs, x, name=blocks.model_name(name, key, precision))


@register_model("resnet20")
def resnet20(input_shape=(32, 32, 3), num_classes=10, *, bits=32, quantizer="dorefa",
             binary="plain", block="basic", quantize_first_last=False, bn_momentum=0.9,
             width_multiplier=1.0, include_top=True, name=None):
    """ResNet-20 for CIFAR (He et al., arXiv:1512.03385): 3x3 stem with 16 channels, three
    stages of three two-conv blocks with 16/32/64 channels, global pooling, classifier.

    About 0.27 M parameters (float 1x1 projection shortcuts).

    Args:
        input_shape: `(height, width, channels)`, at least 4x4.
        num_classes: classifier width.
        bits: 32, k or `(w_bits, a_bits)` for the body convs.
        quantizer: k-bit quantizer family, `"dorefa"`, `"hwgq"` or `"lsq"`.
        binary: 1-bit scheme, `"dorefa"`, `"xnor"`, `"xnorpp"`, `"bireal"` or `"plain"`.
        block: `"basic"`, `"naive"`, `"single_relu"`, `"double_relu"` or `"abs"`
            (see `thesis_block`), or `"bireal"` / `"reactnet"`: every 3x3 conv has a
            real-valued shortcut of its own (`bireal_block`; 18 one-conv blocks, six per
            stage, so the stem, stage widths and conv count are ResNet-20's), the stem has
            no ReLU, and no binarized conv reads a ReLU output.
        quantize_first_last: quantize the stem conv and the classifier too.
        bn_momentum: momentum of every BatchNormalization.
        width_multiplier: scales every channel count.
        include_top: add global pooling and the classifier; otherwise the output is
            `stage3_out`.
        name: model name (default `resnet20_w<w_bits>a<a_bits>`).

    Returns:
        A functional `keras.Model` with taps `stage1_out`..`stage3_out`.

    Raises:
        ValueError: for an unknown option (listing the valid ones), unsupported bits or an
            input smaller than 4x4.
    """
    blocks.check_option("block", block, RESNET20_BLOCKS)
    one_conv = block in ("bireal", "reactnet")
    return _resnet("resnet20", input_shape, num_classes, stage_filters=(16, 32, 64),
                   stage_blocks=(6, 6, 6) if one_conv else (3, 3, 3), stem="cifar",
                   stem_filters=16, block=block, bits=bits,
                   quantizer=quantizer, binary=binary, quantize_first_last=quantize_first_last,
                   bn_momentum=bn_momentum, width_multiplier=width_multiplier,
                   include_top=include_top, name=name)


@register_model("resnet18")
def resnet18(input_shape=(224, 224, 3), num_classes=1000, *, bits=32, quantizer="dorefa",
             binary="plain", block="basic", stem="imagenet", quantize_first_last=False,
             bn_momentum=0.9, width_multiplier=1.0, include_top=True, name=None):
    """ResNet-18 (He et al., arXiv:1512.03385): four stages of two blocks, 64-512 channels.

    Args:
        input_shape: `(height, width, channels)`; at least 32x32 with the ImageNet stem,
            8x8 with the CIFAR stem.
        stem: `"imagenet"` (7x7 stride-2 conv, BN, ReLU, 3x3 stride-2 max-pool) or `"cifar"`
            (3x3 stride-1 conv, BN, ReLU).
        block: a thesis block variant (see `resnet20`).
        Other arguments: as in `resnet20`.

    Returns:
        A functional `keras.Model` with taps `stage1_out`..`stage4_out`.

    Raises:
        ValueError: for an unknown option, unsupported bits or a too small input.
    """
    blocks.check_option("block", block, BLOCKS)
    blocks.check_option("stem", stem, STEMS)
    return _resnet("resnet18", input_shape, num_classes, stage_filters=(64, 128, 256, 512),
                   stage_blocks=(2, 2, 2, 2), stem=stem, stem_filters=64, block=block, bits=bits,
                   quantizer=quantizer, binary=binary, quantize_first_last=quantize_first_last,
                   bn_momentum=bn_momentum, width_multiplier=width_multiplier,
                   include_top=include_top, name=name)


@register_model("bireal_resnet18")
def bireal_resnet18(input_shape=(224, 224, 3), num_classes=1000, *, bits=1, quantizer="dorefa",
                    binary="bireal", stem="imagenet", quantize_first_last=False, bn_momentum=0.9,
                    width_multiplier=1.0, include_top=True, name=None):
    """Bi-Real Net 18 (Liu et al., arXiv:1808.00278): a real shortcut around every binary conv.

    Stem: 7x7 stride-2 conv, BN, 3x3 max-pool (no ReLU, as in the official code); then four
    stages of four blocks x_{l+1} = BN(BinConv(ApproxSign(x_l))) + s(x_l) with 64-512
    channels, magnitude-aware weights; downsampling shortcut AvgPool 2x2 -> float 1x1 conv -> BN.

    Args:
        bits: 1 by default; other precisions give the same wiring (MAD's teachers).
        binary: `"bireal"` by default.
        Other arguments: as in `resnet18`.

    Returns:
        A functional `keras.Model` with taps `stage1_out`..`stage4_out`.

    Raises:
        ValueError: for an unknown option, unsupported bits or a too small input.
    """
    blocks.check_option("stem", stem, STEMS)
    return _resnet("bireal_resnet18", input_shape, num_classes, stage_filters=(64, 128, 256, 512),
                   stage_blocks=(4, 4, 4, 4), stem=stem, stem_filters=64, block="bireal", bits=bits,
                   quantizer=quantizer, binary=binary, quantize_first_last=quantize_first_last,
                   bn_momentum=bn_momentum, width_multiplier=width_multiplier,
                   include_top=include_top, name=name)


@register_model("reactnet_resnet18")
def reactnet_resnet18(input_shape=(224, 224, 3), num_classes=1000, *, bits=1, quantizer="dorefa",
                      binary="bireal", stem="imagenet", quantize_first_last=False, bn_momentum=0.9,
                      width_multiplier=1.0, include_top=True, name=None):
    """ReActNet's ResNet-18 (Liu et al., arXiv:2003.03488), built on Bi-Real-18.

    Every block is x_{l+1} = RPReLU(BN(BinConv(RSign(x_l))) + s(x_l)): RSign is a learnable
    per-channel shift (`LearnableBias`, init 0) before ApproxSign, RPReLU a shifted PReLU.
    ReActNet's two-step training is `bits=(32, 1)` (real weights, binary activations) then
    `bits=1`; both have the same layers, so weights carry over by name.

    Args:
        Other arguments: as in `bireal_resnet18`.

    Returns:
        A functional `keras.Model` with taps `stage1_out`..`stage4_out`.

    Raises:
        ValueError: for an unknown option, unsupported bits or a too small input.
    """
    blocks.check_option("stem", stem, STEMS)
    return _resnet("reactnet_resnet18", input_shape, num_classes,
                   stage_filters=(64, 128, 256, 512), stage_blocks=(4, 4, 4, 4), stem=stem,
                   stem_filters=64, block="reactnet", bits=bits, quantizer=quantizer, binary=binary,
                   quantize_first_last=quantize_first_last, bn_momentum=bn_momentum,
                   width_multiplier=width_multiplier, include_top=include_top, name=name)
