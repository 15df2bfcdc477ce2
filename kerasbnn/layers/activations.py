"""Small learnable activations used by binary network designs (ReActNet, the thesis blocks).

They are written so that Larq Compute Engine can fold them: a per-channel bias right
before a binarizer becomes `sign(x - t)`, which LCE turns into a SUB folded into the bias
of the binary convolution that produced `x` (LCE.md section 3).
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kerasbnn")
class LearnableBias(keras.layers.Layer):
    r"""Adds a per-channel bias: y = x + b, b in R^C.

    Placed before a binarizer it is ReActNet's RSign threshold: sign(x + b) = sign(x - alpha)
    with alpha = -b (ReActNet, eq. 4: x^b = +1 if x > alpha_c else -1). With
    `trainable=False` and a constant initializer it is a fixed threshold, e.g.
    `Constant(-0.5)` turns sign into DoReFa's {0, 1} binarizer round(clip(x, 0, 1)) mapped
    to {-1, +1}.

    Args:
        bias_initializer: initializer of b (ReActNet: zeros).
        **kwargs: base `keras.layers.Layer` arguments (`name`, `trainable`, `dtype`).

    Input shape:
        N-D tensor `(batch, ..., channels)`.

    Output shape:
        Same as the input.

    References:
        Liu et al., ReActNet, arXiv:2003.03488.
    """

    def __init__(self, bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        self.bias = self.add_weight(
            name="bias", shape=(input_shape[-1],), initializer=self.bias_initializer
        )

    def call(self, inputs):
        return ops.add(inputs, self.bias)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["bias_initializer"] = keras.initializers.serialize(self.bias_initializer)
        return config


@keras.saving.register_keras_serializable(package="kerasbnn")
class RPReLU(keras.layers.Layer):
    r"""ReActNet's RPReLU, per channel c:

    f(x) = x - gamma_c + zeta_c            if x > gamma_c
    f(x) = beta_c (x - gamma_c) + zeta_c   otherwise           (ReActNet, eq. 5)

    The official code writes it as bias -> PReLU -> bias; gamma and zeta start at 0 and the
    slope beta at 0.25.

    `call` computes eq. 5 as s = x - gamma_c, f = relu(s) - beta_c relu(-s) + zeta_c rather
    than with a `where` on s > 0, for the TFLite file: `kerasbnn.export.lce_convert` lowers
    a `where` to GREATER, MUL and SELECT and this form to NEG, RELU, MUL and SUB, with which
    a probe timed the demo's ReActNet-block ResNet-20 about 1.4-1.5x faster in LCE's x86
    interpreter (docs/benchmarks/recipe-latency.md). Both give the same numbers bit for bit
    (ReLU and negation are exact, so for s > 0 the result is s, for s < 0 it is beta_c s);
    the gradients differ only where s == 0 exactly (with respect to x: 0 here, beta_c with
    the `where`).

    Args:
        slope_initializer: initializer of beta.
        **kwargs: base `keras.layers.Layer` arguments.

    Input shape:
        N-D tensor `(batch, ..., channels)`.

    Output shape:
        Same as the input.

    References:
        Liu et al., ReActNet, arXiv:2003.03488.
    """

    def __init__(self, slope_initializer=0.25, **kwargs):
        super().__init__(**kwargs)
        if isinstance(slope_initializer, (int, float)):
            slope_initializer = keras.initializers.Constant(float(slope_initializer))
        self.slope_initializer = keras.initializers.get(slope_initializer)

    def build(self, input_shape):
        channels = (input_shape[-1],)
        self.gamma = self.add_weight(name="gamma", shape=channels, initializer="zeros")
        self.beta = self.add_weight(name="beta", shape=channels, initializer=self.slope_initializer)
        self.zeta = self.add_weight(name="zeta", shape=channels, initializer="zeros")

    def call(self, inputs):
        shifted = ops.subtract(inputs, self.gamma)
        negative_part = ops.multiply(self.beta, ops.relu(ops.negative(shifted)))
        return ops.add(ops.subtract(ops.relu(shifted), negative_part), self.zeta)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["slope_initializer"] = keras.initializers.serialize(self.slope_initializer)
        return config


@keras.saving.register_keras_serializable(package="kerasbnn")
class ScaledAbs(keras.layers.Layer):
    r"""The thesis' absolute-value shortcut: y = alpha |x|, one learnable alpha in [0, 1].

    alpha is stored unconstrained and clipped to [0, 1] in the forward pass, so the
    gradient vanishes only while it sits outside the interval.

    Args:
        alpha_initializer: initial alpha (the thesis does not state it: 1.0 by default,
            so the shortcut starts as |x|).
        **kwargs: base `keras.layers.Layer` arguments.

    Input shape:
        Any.

    Output shape:
        Same as the input.
    """

    def __init__(self, alpha_initializer=1.0, **kwargs):
        super().__init__(**kwargs)
        if isinstance(alpha_initializer, (int, float)):
            if not 0.0 <= alpha_initializer <= 1.0:
                raise ValueError(
                    f"alpha_initializer must lie in [0, 1], received {alpha_initializer!r}."
                )
            alpha_initializer = keras.initializers.Constant(float(alpha_initializer))
        self.alpha_initializer = keras.initializers.get(alpha_initializer)

    def build(self, input_shape):
        self.alpha = self.add_weight(name="alpha", shape=(), initializer=self.alpha_initializer)

    def call(self, inputs):
        return ops.clip(self.alpha, 0.0, 1.0) * ops.abs(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["alpha_initializer"] = keras.initializers.serialize(self.alpha_initializer)
        return config
