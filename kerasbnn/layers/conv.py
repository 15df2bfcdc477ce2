"""Quantized convolutions: `QuantConv2D` and `QuantDepthwiseConv2D`."""

import keras
import numpy as np
from keras import ops

from kerasbnn.layers.base import QuantizerMixin, check_pad_values, resolve_constraint

SCALINGS = (None, "xnor", "xnorpp", "xnorpp_factorized")
"""The `scaling` values of `QuantConv2D`: None (no output scale), `"xnor"` (XNOR-Net's K alpha),
`"xnorpp"` (XNOR-Net++'s learned Gamma per output element), `"xnorpp_factorized"` (its
factorised form alpha (x) beta (x) gamma, thesis eqs. 2.9-2.10)."""


def _check_scaling(scaling, kernel_quantizer):
    if scaling not in SCALINGS:
        raise ValueError(
            f"Unknown scaling {scaling!r}. Valid values: "
            + ", ".join(repr(s) for s in SCALINGS)
            + " (None: no scaling; 'xnor': XNOR-Net K * alpha; 'xnorpp': learnable "
            "Gamma of shape o x h_out x w_out; 'xnorpp_factorized': Gamma = alpha (x) beta "
            "(x) gamma)."
        )
    if scaling == "xnor" and getattr(kernel_quantizer, "alias", None) == "magnitude_aware_sign":
        raise ValueError(
            "scaling='xnor' already multiplies the output by alpha = mean|W| per output "
            "channel, and kernel_quantizer='magnitude_aware_sign' multiplies the kernel by the "
            "same alpha: the output would be scaled twice. Use kernel_quantizer='ste_sign' "
            "with scaling='xnor', or scaling=None with 'magnitude_aware_sign'."
        )
    return scaling


@keras.saving.register_keras_serializable(package="kerasbnn")
class QuantConv2D(QuantizerMixin, keras.layers.Conv2D):
    r"""2-D convolution of quantized inputs with quantized weights.

    Keras' `Conv2D` signature and defaults, plus larq's quantizer arguments and an
    optional output scaling:

        y = act(S (.) (q_k(W) * pad(q_i(x))) + b)

    With a 1-bit `input_quantizer` and `kernel_quantizer` (`ste_sign`, `approx_sign`...)
    LCE converts the layer into `LceBconv2d`. The input is binarized exactly once, right
    before the convolution; "same" padding with a nonzero `pad_values` is an explicit pad of
    the binarized input followed by a "valid" convolution, which LCE folds into the binary
    convolution (`pad_values=1.0` is the fast one, LCE.md §2). The scale S multiplies the
    convolution *output*, never the binarized input (a multiplication between the binarizer
    and the convolution stops LCE from matching it, LCE.md §1):

    - `scaling="xnor"` (XNOR-Net, Rastegari et al. 2016; thesis eqs. 2.6-2.8):
      I * W ~= (sign(I) * sign(W)) (.) K alpha, with A = mean_c |I| (channel mean of the
      float input, per group when `groups > 1`), K = A * k where k is the kh x kw box filter
      with every entry 1/(kh kw), applied with the layer's strides, dilation and (zero)
      padding, and alpha_o = mean |W_o| over the latent kernel of output channel o.
      Gradients flow through K and alpha.
    - `scaling="xnorpp"` (XNOR-Net++, Bulat & Tzimiropoulos 2019; thesis eqs. 2.9-2.10):
      I * W ~= Gamma (.) (sign(I) * sign(W)) with a learnable Gamma in R^{o x h_out x w_out},
      stored in the output layout (`(h_out, w_out, o)` for channels_last), initialised to ones.
    - `scaling="xnorpp_factorized"`: Gamma = alpha (x) beta (x) gamma, with learnable
      alpha in R^o, beta in R^{h_out}, gamma in R^{w_out} (weights `xnorpp_alpha`,
      `xnorpp_beta`, `xnorpp_gamma`), initialised to ones.

    The XNOR++ variants need the output height and width when the layer is built.

    Args:
        filters: number of output channels, as in `keras.layers.Conv2D`.
        kernel_size: as in `keras.layers.Conv2D`.
        strides: as in `keras.layers.Conv2D`.
        padding: as in `keras.layers.Conv2D`.
        data_format: as in `keras.layers.Conv2D`.
        dilation_rate: as in `keras.layers.Conv2D`.
        groups: as in `keras.layers.Conv2D`.
        activation: as in `keras.layers.Conv2D`.
        use_bias: as in `keras.layers.Conv2D`.
        kernel_initializer: as in `keras.layers.Conv2D`.
        bias_initializer: as in `keras.layers.Conv2D`.
        kernel_regularizer: as in `keras.layers.Conv2D`.
        bias_regularizer: as in `keras.layers.Conv2D`.
        activity_regularizer: as in `keras.layers.Conv2D`.
        kernel_constraint: as in `keras.layers.Conv2D`; also accepts `"weight_clip"`.
        bias_constraint: as in `keras.layers.Conv2D`.
        input_quantizer: quantizer of the input (alias, config dict, instance or None).
        kernel_quantizer: quantizer of the latent kernel (same forms).
        pad_values: value of "same" padding, larq's semantics: ignored unless
            `padding="same"`; 0.0 is Keras' zero padding.
        scaling: None, `"xnor"`, `"xnorpp"` or `"xnorpp_factorized"` (see above).
        **kwargs: base `keras.layers.Layer` arguments (name, dtype, trainable...).

    Input shape:
        4-D tensor `(batch, rows, cols, channels)` (channels_last) or
        `(batch, channels, rows, cols)` (channels_first).

    Output shape:
        4-D tensor `(batch, new_rows, new_cols, filters)` (channels_last) or
        `(batch, filters, new_rows, new_cols)` (channels_first).

    Raises:
        ValueError: for an unknown `scaling`, `scaling="xnor"` together with
            `kernel_quantizer="magnitude_aware_sign"`, a non-numeric `pad_values`, an unknown
            quantizer, or (at build) an XNOR++ scaling without a known output size.

    Example:
    ```python
    layer = QuantConv2D(64, 3, padding="same", pad_values=1.0, input_quantizer="ste_sign",
                        kernel_quantizer="ste_sign", kernel_constraint="weight_clip",
                        scaling="xnorpp_factorized")
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
        scaling=None,
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
        self.pad_values = check_pad_values(pad_values, self.padding)
        self.scaling = _check_scaling(scaling, self.kernel_quantizer)

    def build(self, input_shape):
        super().build(input_shape)
        self._build_quantizer_parameters("input", tuple(input_shape))
        self._build_quantizer_parameters("kernel", tuple(self.kernel.shape))
        if self.scaling in ("xnorpp", "xnorpp_factorized"):
            self._build_xnorpp(input_shape)

    def _build_xnorpp(self, input_shape):
        output_shape = self.compute_output_shape(input_shape)
        channels_last = self.data_format == "channels_last"
        rows, cols = output_shape[1:3] if channels_last else output_shape[2:4]
        if rows is None or cols is None:
            raise ValueError(
                f"scaling={self.scaling!r} learns one scale per output position, so layer "
                f"{self.name!r} needs a known input height and width; received input shape "
                f"{tuple(input_shape)}. Give the model an input with a fixed spatial size, "
                "e.g. keras.Input((32, 32, 3)), or use scaling='xnor' or None."
            )
        if self.scaling == "xnorpp":
            shape = (rows, cols, self.filters) if channels_last else (self.filters, rows, cols)
            self.xnorpp_scale = self._add_extra_weight(
                name="xnorpp_scale", shape=shape, initializer="ones"
            )
        else:
            self.xnorpp_alpha = self._add_extra_weight(
                name="xnorpp_alpha", shape=(self.filters,), initializer="ones"
            )
            self.xnorpp_beta = self._add_extra_weight(
                name="xnorpp_beta", shape=(rows,), initializer="ones"
            )
            self.xnorpp_gamma = self._add_extra_weight(
                name="xnorpp_gamma", shape=(cols,), initializer="ones"
            )

    @property
    def quantized_kernel(self):
        """The kernel as the convolution sees it: `kernel_quantizer(kernel)`."""
        return self.apply_quantizer("kernel", self.kernel)

    def convolution_op(self, inputs, kernel):
        inputs, padding = self._pad_same(inputs)
        return ops.conv(
            inputs,
            kernel,
            strides=list(self.strides),
            padding=padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )

    def _xnor_input_scale(self, inputs):
        """K = A * k of XNOR-Net: box-filtered channel mean of |inputs|, one per group."""
        channel_axis = -1 if self.data_format == "channels_last" else 1
        channels = inputs.shape[channel_axis]
        per_group = channels // self.groups
        size = self.kernel_size[0] * self.kernel_size[1] * per_group
        box = ops.full((*self.kernel_size, per_group, self.groups), 1.0 / size, dtype=inputs.dtype)
        scale = ops.conv(
            ops.abs(inputs),
            box,
            strides=list(self.strides),
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )
        if self.groups > 1:
            scale = ops.repeat(scale, self.filters // self.groups, axis=channel_axis)
        return scale

    def output_scale(self, inputs):
        """The scale S multiplied onto the convolution output (None without `scaling`).

        Args:
            inputs: the float input of the layer (before `input_quantizer`).

        Returns:
            A tensor that broadcasts against the output, or None.
        """
        if self.scaling is None:
            return None
        if self.scaling == "xnor":
            alpha = ops.mean(ops.abs(self.kernel), axis=(0, 1, 2))
            return self._xnor_input_scale(inputs) * ops.reshape(
                alpha, self._bias_shape(self.filters)
            )
        if self.scaling == "xnorpp":
            return ops.expand_dims(ops.convert_to_tensor(self.xnorpp_scale), 0)
        alpha = ops.convert_to_tensor(self.xnorpp_alpha)
        beta = ops.convert_to_tensor(self.xnorpp_beta)
        gamma = ops.convert_to_tensor(self.xnorpp_gamma)
        if self.data_format == "channels_last":
            scale = beta[:, None, None] * gamma[None, :, None] * alpha[None, None, :]
        else:
            scale = alpha[:, None, None] * beta[None, :, None] * gamma[None, None, :]
        return ops.expand_dims(scale, 0)

    def _apply_output_scale(self, outputs, inputs):
        scale = self.output_scale(inputs)
        if self.scaling == "xnor":
            return ops.multiply(outputs, scale)
        # LCE folds any Mul by a constant that directly follows a binary conv into its
        # per-channel post_activation_multiplier without checking shapes (optimize
        # patterns; LCE 0.16 notes that shapes are not checked); a per-position XNOR++ Gamma then
        # gives a model that fails at AllocateTensors. Multiplying on a flattened view keeps
        # the Mul separate; the reshapes are free in TFLite.
        output_shape = tuple(outputs.shape[1:])
        size = int(np.prod(output_shape))
        flat = ops.multiply(ops.reshape(outputs, (-1, size)), ops.reshape(scale, (1, size)))
        return ops.reshape(flat, (-1, *output_shape))

    def call(self, inputs):
        x = self.apply_quantizer("input", inputs)
        outputs = self.convolution_op(x, self.quantized_kernel)
        if self.scaling is not None:
            outputs = self._apply_output_scale(outputs, inputs)
        if self.use_bias:
            outputs = ops.add(outputs, ops.reshape(self.bias, self._bias_shape(self.filters)))
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update(self._quantizer_config())
        config["pad_values"] = self.pad_values
        config["scaling"] = self.scaling
        return config


@keras.saving.register_keras_serializable(package="kerasbnn")
class QuantDepthwiseConv2D(QuantizerMixin, keras.layers.DepthwiseConv2D):
    r"""Depthwise 2-D convolution of quantized inputs with a quantized depthwise kernel.

    Keras' `DepthwiseConv2D` signature and defaults plus larq's `input_quantizer`,
    `depthwise_quantizer` and `pad_values`: y = act(q_d(W) *_depthwise pad(q_i(x)) + b).

    Larq Compute Engine has no binary depthwise kernel: even with two 1-bit quantizers the
    converted model runs this layer as a float `DEPTHWISE_CONV_2D` (plus LceQuantize /
    LceDequantize), which is slower than leaving it float (LCE.md §2). Binarize depthwise
    convolutions only for accuracy experiments.

    Args:
        kernel_size: as in `keras.layers.DepthwiseConv2D`.
        strides: as in `keras.layers.DepthwiseConv2D`.
        padding: as in `keras.layers.DepthwiseConv2D`.
        depth_multiplier: as in `keras.layers.DepthwiseConv2D`.
        data_format: as in `keras.layers.DepthwiseConv2D`.
        dilation_rate: as in `keras.layers.DepthwiseConv2D`.
        activation: as in `keras.layers.DepthwiseConv2D`.
        use_bias: as in `keras.layers.DepthwiseConv2D`.
        depthwise_initializer: as in `keras.layers.DepthwiseConv2D`.
        bias_initializer: as in `keras.layers.DepthwiseConv2D`.
        depthwise_regularizer: as in `keras.layers.DepthwiseConv2D`.
        bias_regularizer: as in `keras.layers.DepthwiseConv2D`.
        activity_regularizer: as in `keras.layers.DepthwiseConv2D`.
        depthwise_constraint: as in `keras.layers.DepthwiseConv2D`; also accepts
            `"weight_clip"`.
        bias_constraint: as in `keras.layers.DepthwiseConv2D`.
        input_quantizer: quantizer of the input (alias, config dict, instance or None).
        depthwise_quantizer: quantizer of the latent depthwise kernel.
        pad_values: value of "same" padding, larq's semantics: ignored unless
            `padding="same"`.
        **kwargs: base `keras.layers.Layer` arguments.

    Input shape:
        4-D tensor `(batch, rows, cols, channels)` (channels_last) or
        `(batch, channels, rows, cols)` (channels_first).

    Output shape:
        4-D tensor `(batch, new_rows, new_cols, channels * depth_multiplier)` (channels_last).

    Raises:
        ValueError: for a non-numeric `pad_values` or an unknown quantizer.
    """

    def __init__(
        self,
        kernel_size,
        strides=(1, 1),
        padding="valid",
        depth_multiplier=1,
        data_format=None,
        dilation_rate=(1, 1),
        activation=None,
        use_bias=True,
        depthwise_initializer="glorot_uniform",
        bias_initializer="zeros",
        depthwise_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        depthwise_constraint=None,
        bias_constraint=None,
        input_quantizer=None,
        depthwise_quantizer=None,
        pad_values=0.0,
        **kwargs,
    ):
        super().__init__(
            kernel_size=kernel_size,
            strides=strides,
            padding=padding,
            depth_multiplier=depth_multiplier,
            data_format=data_format,
            dilation_rate=dilation_rate,
            activation=activation,
            use_bias=use_bias,
            depthwise_initializer=depthwise_initializer,
            bias_initializer=bias_initializer,
            depthwise_regularizer=depthwise_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            depthwise_constraint=resolve_constraint(depthwise_constraint),
            bias_constraint=bias_constraint,
            **kwargs,
        )
        self._init_quantizers(input=input_quantizer, depthwise=depthwise_quantizer)
        self.pad_values = check_pad_values(pad_values, self.padding)

    def build(self, input_shape):
        super().build(input_shape)
        self._build_quantizer_parameters("input", tuple(input_shape))
        self._build_quantizer_parameters("depthwise", tuple(self.kernel.shape))

    @property
    def quantized_kernel(self):
        """The depthwise kernel as the convolution sees it: `depthwise_quantizer(kernel)`."""
        return self.apply_quantizer("depthwise", self.kernel)

    def call(self, inputs):
        x = self.apply_quantizer("input", inputs)
        x, padding = self._pad_same(x)
        outputs = ops.depthwise_conv(
            x,
            self.quantized_kernel,
            strides=self.strides,
            padding=padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )
        if self.use_bias:
            outputs = ops.add(outputs, ops.reshape(self.bias, self._bias_shape(self.bias.shape[0])))
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update(self._quantizer_config())
        config["pad_values"] = self.pad_values
        return config
