"""`QuantizerMixin`: what every quantized layer adds to its Keras parent."""

import contextlib
import numbers

import keras
from keras import ops

from kerasbnn import constraints, quantizers


def same_padding_amounts(size, kernel_size, stride, dilation):
    """TensorFlow's SAME padding `(before, after)` for one spatial dimension.

    out = ceil(size / stride), total = max((out - 1) * stride + (kernel_size - 1) * dilation
    + 1 - size, 0), before = total // 2, after = total - before: the amounts LCE requires
    before it folds an explicit pad into a binary convolution (LCE.md §2).

    Args:
        size: the input size along the dimension, a Python int or a scalar tensor when the
            size is only known at run time.
        kernel_size: kernel extent along the dimension.
        stride: stride along the dimension.
        dilation: dilation rate along the dimension.

    Returns:
        `(before, after)` as Python ints, or scalar tensors for a dynamic `size`.
    """
    if isinstance(size, numbers.Integral):
        out = -(-size // stride)
        total = max((out - 1) * stride + (kernel_size - 1) * dilation + 1 - size, 0)
        return total // 2, total - total // 2
    out = (size + stride - 1) // stride
    total = ops.maximum((out - 1) * stride + (kernel_size - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def check_pad_values(pad_values, padding):
    """Validates larq's `pad_values` and returns it as a float.

    Raises:
        ValueError: if `pad_values` is not a real number, or is nonzero with
            `padding="causal"` (larq rejects that combination too).
    """
    if isinstance(pad_values, bool) or not isinstance(pad_values, numbers.Real):
        raise ValueError(
            f"pad_values must be a number (0.0 for Keras' zero padding, 1.0 for LCE's fast "
            f"binary padding), received {pad_values!r}."
        )
    if padding == "causal" and pad_values != 0.0:
        raise ValueError(
            f"pad_values={pad_values!r} is only used with padding='same'; causal padding "
            "always pads with zeros. Pass pad_values=0.0."
        )
    return float(pad_values)


def _as_tensor(x):
    # tf.custom_gradient rejects Keras variables as inputs ("grad_fn must accept keyword
    # argument 'variables'"), and ops.convert_to_tensor returns a Keras variable unchanged:
    # read it into a tensor (an Identity op, which LCE strips) first.
    if isinstance(x, keras.Variable):
        return ops.copy(x)
    return ops.convert_to_tensor(x)


def resolve_constraint(identifier):
    """A Keras constraint from an identifier; also knows `"weight_clip"`."""
    return constraints.get(identifier)


class QuantizerMixin:
    """Quantizes a layer's input and its latent weights in `call`, LCE-friendly.

    The variables always hold the latent full-precision weights; `call` quantizes them,
    and the input, right before the linear op. Quantizers that learn parameters (LSQ)
    get them created here as layer weights named `<role>_quantizer_<name>`.

    The methods are named `apply_quantizer` and so on, never `quantize`,
    `quantized_call` or `quantized_build`, which Keras' own int8 `quantize()` uses.
    """

    def _init_quantizers(self, **roles):
        self._extra_variables = []
        self._constant_weights = {}
        self._quantizer_roles = tuple(roles)
        for role, identifier in roles.items():
            setattr(self, f"{role}_quantizer", quantizers.get(identifier))
        self._quantizer_parameters = {role: {} for role in roles}

    def _build_quantizer_parameters(self, role, shape):
        quantizer = getattr(self, f"{role}_quantizer")
        if quantizer is None:
            return
        for name, (param_shape, initializer) in quantizer.parameter_specs(shape).items():
            self._quantizer_parameters[role][name] = self._add_extra_weight(
                name=f"{role}_quantizer_{name}", shape=param_shape, initializer=initializer
            )

    def _add_extra_weight(self, **kwargs):
        """`add_weight` for a variable the Keras parent does not know about.

        Keras' `Conv2D` and `Dense` save only their own variables (kernel, bias) in
        `save_own_variables`; these extra ones are appended after them.
        """
        variable = self.add_weight(**kwargs)
        self._extra_variables.append(variable)
        return variable

    def save_own_variables(self, store):
        super().save_own_variables(store)
        if not self.built:
            return
        offset = len(store.keys())
        for i, variable in enumerate(self._extra_variables):
            store[str(offset + i)] = variable

    def load_own_variables(self, store):
        super().load_own_variables(store)
        if not self.built:
            return
        offset = len(store.keys()) - len(self._extra_variables)
        for i, variable in enumerate(self._extra_variables):
            variable.assign(store[str(offset + i)])

    def apply_quantizer(self, role, x):
        """Applies the `role` quantizer (identity if None) with its learned parameters.

        Args:
            role: `"input"`, `"kernel"` or `"depthwise"`, as given to `_init_quantizers`.
            x: the tensor (or variable) to quantize.

        Returns:
            The quantized tensor, or `x` itself when the role has no quantizer.
        """
        if role in self._constant_weights:
            return self._constant_weights[role]
        quantizer = getattr(self, f"{role}_quantizer")
        if quantizer is None:
            return x
        params = {k: _as_tensor(v) for k, v in self._quantizer_parameters[role].items()}
        return quantizer(_as_tensor(x), **params)

    @property
    def weight_roles(self):
        """The quantizer roles that quantize a weight (`kernel`, `depthwise`), not the input."""
        return tuple(role for role in self._quantizer_roles if role != "input")

    def _quantizer_config(self):
        return {
            f"{role}_quantizer": quantizers.serialize(getattr(self, f"{role}_quantizer"))
            for role in self._quantizer_roles
        }

    @property
    def is_binary(self):
        """True when the input and the weights are both 1-bit.

        LCE then runs a `QuantConv2D` or `QuantDense` as `LceBconv2d`; it has no binary
        depthwise kernel, so a binary `QuantDepthwiseConv2D` stays a float op.
        """
        return all(
            quantizers.precision_of(getattr(self, f"{role}_quantizer")) == 1
            for role in self._quantizer_roles
        )

    def _bias_shape(self, channels):
        """Shape that broadcasts a per-channel vector over a 4-D output."""
        if self.data_format == "channels_last":
            return (1, 1, 1, channels)
        return (1, channels, 1, 1)

    def _pad_same(self, inputs):
        """Explicit "same" padding with `pad_values` (larq semantics).

        Returns:
            `(inputs, padding)`: the padded input and "valid" when `padding == "same"` and
            `pad_values != 0`, else `inputs` unchanged and the layer's own padding. The pad
            is a `PadV2` that LCE folds into `LceBconv2d` when `pad_values == 1`.
        """
        if self.padding != "same" or self.pad_values == 0.0:
            return inputs, self.padding
        spatial = (1, 2) if self.data_format == "channels_last" else (2, 3)
        shape = ops.shape(inputs)
        pads = [
            same_padding_amounts(shape[axis], k, s, d)
            for axis, k, s, d in zip(spatial, self.kernel_size, self.strides, self.dilation_rate)
        ]
        if self.data_format == "channels_last":
            pads = [(0, 0), *pads, (0, 0)]
        else:
            pads = [(0, 0), (0, 0), *pads]
        return ops.pad(inputs, pads, constant_values=self.pad_values), "valid"



def iter_layers(model):
    """Every layer of `model`, descending into nested models, in definition order."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from iter_layers(layer)


@contextlib.contextmanager
def constant_quantized_weights(model):
    """Within the block, every quantized layer of `model` uses weights quantized once.

    Each weight role with a quantizer (`kernel`, `depthwise`) is quantized once, eagerly,
    and the layers read that constant instead of re-quantizing their variable. A graph traced
    inside the block (`model.export`) then holds the quantized kernel itself: LCE needs no
    constant folding to see binary weights, which TensorFlow skips for kernels of 64 MiB and
    more (AlexNet's 4096 x 4096 `fc7` stayed a float conv). The variables are not changed,
    and the layers quantize them again after the block, also when it raises.

    Args:
        model: a `keras.Model`; nested models are searched.

    Yields:
        The names of the layers whose weights were made constant.
    """
    layers = [
        layer for layer in iter_layers(model) if isinstance(layer, QuantizerMixin) and layer.built
    ]
    try:
        for layer in layers:
            for role in layer.weight_roles:
                if getattr(layer, f"{role}_quantizer") is not None:
                    value = ops.convert_to_numpy(layer.apply_quantizer(role, layer.kernel))
                    layer._constant_weights[role] = ops.convert_to_tensor(value)
        yield [layer.name for layer in layers if layer._constant_weights]
    finally:
        for layer in layers:
            layer._constant_weights.clear()
