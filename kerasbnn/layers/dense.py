"""`QuantDense`: a dense layer with quantized inputs and weights."""

import keras
from keras import ops

from kerasbnn.layers.base import QuantizerMixin, resolve_constraint


@keras.saving.register_keras_serializable(package="kerasbnn")
class QuantDense(QuantizerMixin, keras.layers.Dense):
    r"""Densely-connected layer of quantized inputs and quantized weights.

    Keras' `Dense` signature and defaults plus larq's `input_quantizer` and
    `kernel_quantizer`: y = act(q_i(x) . q_k(W) + b), the dot product along the last axis
    of `x` (inputs of rank > 2 as in `keras.layers.Dense`).

    LCE has no binary fully-connected kernel (a binarized `MatMul` stays a float
    FULLY_CONNECTED). When the layer `is_binary`, it therefore computes the same product as
    a 1x1 convolution, the form LCE turns into `LceBconv2d` (LCE.md §2):
    reshape x to `[N, 1, 1, C]` -> binarize (after the reshape) -> 1x1 "valid" conv with
    the binarized kernel `[1, 1, C, units]` -> reshape back to `[..., units]`.
    Otherwise it is a plain matmul.

    Keras' own `quantize()` (int8, int4, ...) refuses `Dense` subclasses, so
    `model.quantize("int8")` skips this layer with a warning and still quantizes the plain
    `Dense` layers of the model.

    Args:
        units: positive integer, dimensionality of the output space.
        activation: as in `keras.layers.Dense`.
        use_bias: as in `keras.layers.Dense`.
        kernel_initializer: as in `keras.layers.Dense`.
        bias_initializer: as in `keras.layers.Dense`.
        kernel_regularizer: as in `keras.layers.Dense`.
        bias_regularizer: as in `keras.layers.Dense`.
        activity_regularizer: as in `keras.layers.Dense`.
        kernel_constraint: as in `keras.layers.Dense`; also accepts `"weight_clip"`.
        bias_constraint: as in `keras.layers.Dense`.
        lora_rank: as in `keras.layers.Dense` (LoRA adds to the latent kernel, before
            quantization).
        lora_alpha: as in `keras.layers.Dense`.
        quantization_config: as in `keras.layers.Dense` (Keras' own post-training
            quantization, which does not apply to this subclass).
        input_quantizer: quantizer of the input (alias, config dict, instance or None).
        kernel_quantizer: quantizer of the latent kernel.
        **kwargs: base `keras.layers.Layer` arguments.

    Input shape:
        N-D tensor `(batch, ..., input_dim)`.

    Output shape:
        N-D tensor `(batch, ..., units)`.

    Raises:
        ValueError: for a non-positive `units` or an unknown quantizer.

    Example:
    ```python
    layer = QuantDense(10, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                       kernel_constraint="weight_clip")
    ```
    """

    def __init__(
        self,
        units,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        lora_rank=None,
        lora_alpha=None,
        quantization_config=None,
        input_quantizer=None,
        kernel_quantizer=None,
        **kwargs,
    ):
        super().__init__(
            units=units,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            kernel_constraint=resolve_constraint(kernel_constraint),
            bias_constraint=bias_constraint,
            lora_rank=lora_rank,
            lora_alpha=lora_alpha,
            quantization_config=quantization_config,
            **kwargs,
        )
        self._init_quantizers(input=input_quantizer, kernel=kernel_quantizer)

    def build(self, input_shape):
        super().build(input_shape)
        self._build_quantizer_parameters("input", tuple(input_shape))
        self._build_quantizer_parameters("kernel", tuple(self.kernel.shape))

    @property
    def quantized_kernel(self):
        """The kernel as the product sees it: `kernel_quantizer(kernel)`, shape `(C, units)`."""
        return self.apply_quantizer("kernel", self.kernel)

    def _binary_product(self, inputs):
        channels = inputs.shape[-1]
        x = ops.reshape(inputs, (-1, 1, 1, channels))
        # Binarized after the reshape: LCE only matches a binarizer feeding the conv directly.
        x = self.apply_quantizer("input", x)
        kernel = ops.reshape(self.quantized_kernel, (1, 1, channels, self.units))
        y = ops.conv(x, kernel, strides=1, padding="valid", data_format="channels_last")
        if len(inputs.shape) == 2:
            return ops.reshape(y, (-1, self.units))
        batch_shape = tuple(ops.shape(inputs)[:-1])
        if all(isinstance(d, int) for d in batch_shape[1:]):
            return ops.reshape(y, (-1, *batch_shape[1:], self.units))
        return ops.reshape(y, (*batch_shape, self.units))

    def call(self, inputs, training=None):
        if self.is_binary:
            outputs = self._binary_product(inputs)
        else:
            outputs = ops.matmul(self.apply_quantizer("input", inputs), self.quantized_kernel)
        if self.bias is not None:
            outputs = ops.add(outputs, self.bias)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update(self._quantizer_config())
        return config
