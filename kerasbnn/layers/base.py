"""`QuantizerMixin`: what every quantized layer adds to its Keras parent."""

from keras import ops

from kerasbnn import constraints, quantizers


def same_padding_amounts(size, kernel_size, stride, dilation):
    """TensorFlow's SAME padding (before, after) for one spatial dimension."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel_size - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class QuantizerMixin:
    """Quantizes a layer's input and its latent weights in `call`, LCE-friendly.

    The variables always hold the latent full-precision weights; `call` quantizes them,
    and the input, right before the linear op. Quantizers that learn parameters (LSQ)
    get them created here as layer weights named `<role>_quantizer_<name>`.
    """

    def _init_quantizers(self, **roles):
        self._quantizer_roles = tuple(roles)
        for role, identifier in roles.items():
            setattr(self, f"{role}_quantizer", quantizers.get(identifier))
        self._quantizer_parameters = {role: {} for role in roles}

    def _build_quantizer_parameters(self, role, shape):
        quantizer = getattr(self, f"{role}_quantizer")
        if quantizer is None:
            return
        for name, (param_shape, initializer) in quantizer.parameter_specs(shape).items():
            self._quantizer_parameters[role][name] = self.add_weight(
                name=f"{role}_quantizer_{name}", shape=param_shape, initializer=initializer
            )

    def apply_quantizer(self, role, x):
        """Applies the `role` quantizer (identity if None) with its learned parameters."""
        quantizer = getattr(self, f"{role}_quantizer")
        if quantizer is None:
            return x
        # tf.custom_gradient rejects Keras variables as inputs: pass tensors.
        x = ops.convert_to_tensor(x)
        params = {k: ops.convert_to_tensor(v) for k, v in self._quantizer_parameters[role].items()}
        return quantizer(x, **params)

    def _quantizer_config(self):
        return {
            f"{role}_quantizer": quantizers.serialize(getattr(self, f"{role}_quantizer"))
            for role in self._quantizer_roles
        }

    @property
    def is_binary(self):
        """True when both the input and the weights are 1-bit: LCE runs this as LceBconv2d."""
        return all(
            quantizers.precision_of(getattr(self, f"{role}_quantizer")) == 1
            for role in self._quantizer_roles
        )


def resolve_constraint(identifier):
    return constraints.get(identifier)
