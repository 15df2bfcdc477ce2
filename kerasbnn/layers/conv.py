"""Quantized convolutions: `QuantConv2D` (and its depthwise sibling)."""

import keras
from keras import ops

from kerasbnn.layers.base import QuantizerMixin, resolve_constraint, same_padding_amounts


@keras.saving.register_keras_serializable(package="kerasbnn")
class QuantConv2D(QuantizerMixin, keras.layers.Conv2D):
    r"""2-D convolution of quantized inputs with quantized weights.

    Keras' `Conv2D` signature and defaults, plus larq's quantizer arguments:
    y = q_k(W) * q_i(x) + b. With `ste_sign` on both, LCE converts the layer into
    `LceBconv2d`. Binarization happens once, right before the conv; "same" padding with
    a nonzero `pad_values` is an explicit pad (of the binarized input) followed by a
    "valid" conv, which LCE folds into the binary conv (`pad_values=1.0` is the fast one).

    Args:
        filters, kernel_size, strides, padding, data_format, dilation_rate, groups,
        activation, use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
        bias_regularizer, activity_regularizer, kernel_constraint, bias_constraint:
            as in `keras.layers.Conv2D`; `kernel_constraint` also takes `"weight_clip"`.
        input_quantizer: quantizer of the input (alias, config dict, instance or None).
        kernel_quantizer: quantizer of the latent kernel.
        pad_values: value of "same" padding (larq's semantics; 0.0 is Keras' zero pad).

    Input shape:
        4-D tensor `(batch, rows, cols, channels)` (channels_last).

    Output shape:
        4-D tensor `(batch, new_rows, new_cols, filters)`.

    Example:
    ```python
    layer = QuantConv2D(64, 3, padding="same", pad_values=1.0, input_quantizer="ste_sign",
                        kernel_quantizer="ste_sign", kernel_constraint="weight_clip")
    ```
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=(1, 1),
        padding="valid",
        data_format=None,
        dilation_rate=(1, 1),
        groups=1,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        input_quantizer=None,
        kernel_quantizer=None,
        pad_values=0.0,
        **kwargs,
    ):
        super().__init__(
            filters=filters,
            kernel_size=kernel_size,
            strides=strides,
            padding=padding,
            data_format=data_format,
            dilation_rate=dilation_rate,
            groups=groups,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            kernel_constraint=resolve_constraint(kernel_constraint),
            bias_constraint=bias_constraint,
            **kwargs,
        )
        self._init_quantizers(input=input_quantizer, kernel=kernel_quantizer)
        self.pad_values = float(pad_values)

    def build(self, input_shape):
        super().build(input_shape)
        self._build_quantizer_parameters("input", tuple(input_shape))
        self._build_quantizer_parameters("kernel", tuple(self.kernel.shape))

    @property
    def quantized_kernel(self):
        """The kernel as the convolution sees it: `kernel_quantizer(kernel)`."""
        return self.apply_quantizer("kernel", self.kernel)

    def _explicit_padding(self):
        return self.padding == "same" and self.pad_values != 0.0

    def convolution_op(self, inputs, kernel):
        padding = self.padding
        if self._explicit_padding():
            spatial = range(1, 3) if self.data_format == "channels_last" else range(2, 4)
            pads = [
                same_padding_amounts(inputs.shape[axis], k, s, d)
                for axis, k, s, d in zip(spatial, self.kernel_size, self.strides, self.dilation_rate)
            ]
            pads = [(0, 0), *pads, (0, 0)] if self.data_format == "channels_last" else [(0, 0), (0, 0), *pads]
            inputs = ops.pad(inputs, pads, constant_values=self.pad_values)
            padding = "valid"
        return ops.conv(
            inputs,
            kernel,
            strides=list(self.strides),
            padding=padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )

    def call(self, inputs):
        x = self.apply_quantizer("input", inputs)
        outputs = self.convolution_op(x, self.quantized_kernel)
        if self.use_bias:
            outputs = ops.add(outputs, self.bias)  # channels_last broadcast
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update(self._quantizer_config())
        config["pad_values"] = self.pad_values
        return config
