"""Builds the new model from the plan: same topology, converted layers, float weights copied."""

import keras

from kerasbnn.binarization.graph import is_model
from kerasbnn.layers import LearnableBias, QuantConv2D, QuantDense


def quantized_twin(layer, precision):
    """A `QuantConv2D` / `QuantDense` with `layer`'s configuration and the precision's quantizers.

    The binary scheme's `conv_kwargs` give the quantizers, the weight clip and
    `pad_values=1.0` (LCE's fast binary padding, LCE.md section 2). A dense layer takes the
    quantizers and the clip only: it has no padding, and no output scaling.
    """
    config = layer.get_config()
    options = precision.conv_kwargs()
    if isinstance(layer, keras.layers.Dense):
        options.pop("pad_values", None)
        options.pop("scaling", None)
        config.update(options)
        return QuantDense.from_config(config)
    config.update(options)
    return QuantConv2D.from_config(config)


def _lce_friendly_config(layer):
    """`layer.get_config()`, with a BatchNormalization over the last axis given as axis=-1.

    Keras normalises over a positive `axis` (keras.applications write `axis=3`) with
    statistics reshaped to (1, 1, 1, C). LCE folds such a BatchNorm into a binary convolution
    as a 4-D multiplier when the feature map is 1 x 1 (ResNet50's last stage at 32 x 32
    pixels), which its kernel rejects at AllocateTensors; with axis=-1 they stay 1-D. The
    layer computes the same thing either way.
    """
    config = layer.get_config()
    if isinstance(layer, keras.layers.BatchNormalization):
        rank = len(layer.get_build_config()["input_shape"])
        axis = config["axis"]
        if axis in (rank - 1, [rank - 1]):
            config["axis"] = -1
    if isinstance(layer, keras.layers.ZeroPadding2D):
        config["padding"] = _read_padding(layer)
    return config


def _last_read(size, windows):
    """The last index of a padded axis of `size` that one of the `(kernel, stride)` "valid"
    sliding `windows` reads."""
    return max((size - kernel) // stride * stride + kernel - 1 for kernel, stride in windows)


def _read_padding(layer):
    """`layer`'s ((top, bottom), (left, right)) without the trailing rows and columns that no
    consumer reads.

    A strided "valid" window may never reach the last padded rows: ResNet50's stem pads 3 on
    each side before a 7x7 stride-2 conv, whose windows on 32 + 6 rows end at row 36. LCE's
    converter folds a PAD whose sides match half the kernel into the conv as "same" padding,
    which for stride 2 pads (2, 3), not (3, 3), and shifts every output: the converted model
    then differs from Keras. Trimming the unread rows gives the same outputs in Keras and a
    PAD that LCE keeps. Consumers other than "valid" Conv2D / DepthwiseConv2D / pooling layers
    keep the padding as it is.
    """
    shape = layer.get_build_config()["input_shape"]
    readers = [node.operation for node in layer._outbound_nodes]
    kinds = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.MaxPooling2D,
             keras.layers.AveragePooling2D)
    if (not readers or layer.data_format != "channels_last" or None in shape[1:3]
            or not all(isinstance(r, kinds) and r.padding == "valid" for r in readers)):
        return layer.padding
    windows = [_window(r) for r in readers]
    trimmed = []
    for axis, (before, after) in enumerate(layer.padding):
        size = shape[1 + axis] + before + after
        unread = size - 1 - _last_read(size, [(k[axis], s[axis]) for k, s in windows])
        trimmed.append((before, after - min(after, unread)))
    return tuple(trimmed)


def _window(layer):
    """`(kernel size, strides)` of a conv or pooling layer, each a pair."""
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
        return tuple(layer.kernel_size), tuple(layer.strides)
    return tuple(layer.pool_size), tuple(layer.strides)


class Rebuilder:
    """Clones a model level by level (nested models recursively) following the plans.

    Attributes:
        pairs: `(float layer, new layer, converted)` for every leaf layer cloned, so that
            `copy_weights` can copy the float weights once the new model is built.
    """

    def __init__(self, plans, precision):
        self.plans = plans  # {id(float layer): LayerPlan}
        self.precision = precision
        self.pairs = []
        self._by_clone = {}

    def _clone(self, layer):
        if is_model(layer):
            return self.rebuild(layer)
        plan = self.plans[id(layer)]
        if plan.converted:
            new = quantized_twin(layer, self.precision)
        else:
            new = layer.__class__.from_config(_lce_friendly_config(layer))
        self.pairs.append((layer, new, plan.converted))
        self._by_clone[id(new)] = plan
        return new

    def _shift(self, new, names):
        plan = self._by_clone.get(id(new))
        if plan is None or plan.shift is None:
            return None
        value = plan.shift_value
        suffix = "_shift" if self.precision.binary == "dorefa" else "_rsign"
        name, i = f"{new.name}{suffix}", 1
        while name in names:
            name, i = f"{new.name}{suffix}_{i}", i + 1
        names.add(name)
        return LearnableBias(
            bias_initializer=keras.initializers.Constant(value),
            trainable=self.precision.binary != "dorefa",
            name=name,
        )

    def rebuild(self, model, name=None):
        """The new model for `model` (Sequential stays Sequential, functional stays functional)."""
        names = {layer.name for layer in model.layers}
        if isinstance(model, keras.Sequential):
            layers = []
            for layer in model.layers:
                new = self._clone(layer)
                shift = self._shift(new, names)
                layers.extend([shift, new] if shift is not None else [new])
            spec = model.inputs[0]
            inputs = keras.Input(batch_shape=tuple(spec.shape), dtype=spec.dtype)
            return keras.Sequential([inputs, *layers], name=name or model.name)

        def call(new, *args, **kwargs):
            shift = self._shift(new, names)
            if shift is not None:
                args = (shift(args[0]), *args[1:])
            return new(*args, **kwargs)

        clone = keras.models.clone_model(model, clone_function=self._clone, call_function=call)
        inputs, outputs = clone.inputs, clone.outputs
        return keras.Model(
            inputs[0] if len(inputs) == 1 else inputs,
            outputs[0] if len(outputs) == 1 else outputs,
            name=name or model.name,
        )

    def copy_weights(self):
        """Copies every float layer's weights into its clone: latent weights for converted ones."""
        for old, new, converted in self.pairs:
            if converted:
                new.kernel.assign(old.kernel)
                if old.use_bias:
                    new.bias.assign(old.bias)
            else:
                new.set_weights(old.get_weights())
