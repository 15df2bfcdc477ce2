"""`AdderConv2D`: the AdderNet layer, a convolution that adds and subtracts only.

References:
    Chen et al., "AdderNet: Do We Really Need Multiplications in Deep Learning?",
    CVPR 2020, arXiv:1912.13200 (layer, gradients, adaptive learning rate).
    Official code: huawei-noah/AdderNet, adder.py and resnet20.py.
"""

import math

import keras
from keras import ops

from kerasbnn.layers.base import same_padding_amounts


def _upstream(args, upstream):
    return args[0] if upstream is None else upstream


def _replicas():
    import tensorflow as tf  # tf.distribute: the replicas whose gradients the optimizer sums

    return tf.distribute.get_strategy().num_replicas_in_sync


def adaptive_gradient_scale(kernel, eta=0.2):
    r"""Identity whose gradient is rescaled to the AdderNet adaptive learning rate.

    Forward: F. Backward: dL/dF <- eta * sqrt(k) * dL/dF / max(||dL/dF||_2, 1e-12), with k the
    number of elements of F (AdderNet eq. 13, alpha_l = eta sqrt(k) / ||Delta L(F_l)||_2; the
    official code divides by the norm and multiplies by sqrt(k) / 5, i.e. eta = 0.2).

    Under `tf.distribute` the rescaled gradient of each replica is divided by the replicas in
    sync: the optimizer sums the replicas' gradients, and a normalized gradient does not
    shrink with the replica's share of the loss, so without it the filters would step R times
    as far on R replicas. The sum is then the mean of the replicas' normalized gradients
    (equal to the single-device step when the replicas' gradients point the same way).

    Args:
        kernel: the filter tensor F (all of it: the norm is taken over the whole layer).
        eta: the hyper-parameter eta.

    Returns:
        `kernel`, unchanged, with the rescaled gradient.
    """
    scale = float(eta) * math.sqrt(math.prod(kernel.shape))

    @ops.custom_gradient
    def _identity(f):
        def grad(*args, upstream=None):
            g = _upstream(args, upstream)
            norm = ops.maximum(ops.sqrt(ops.sum(ops.square(g))), 1e-12)
            return g * (scale / norm / _replicas())

        return ops.copy(f), grad

    return _identity(kernel)


@ops.custom_gradient
def _adder_tap(x, w):
    r"""One kernel position of the adder: y[..., o] = -sum_c |x[..., c] - w[c, o]|.

    Gradients (AdderNet eqs. 5 and 6): dy/dw = x - w (full precision instead of sign(x - w)),
    dy/dx = HT(w - x), HT the HardTanh clip to [-1, 1].

    Args:
        x: the input pixels this kernel position sees, `(batch, rows, cols, channels)`.
        w: the kernel at this position, `(channels, filters)`.
    """

    def grad(*args, upstream=None):
        g = _upstream(args, upstream)  # (b, h, w, o)
        # sum_p (x_pc - w_co) g_po = x^T g - w * sum_p g: a matmul, no 5-D tensor.
        flat_x = ops.reshape(x, (-1, ops.shape(x)[-1]))
        flat_g = ops.reshape(g, (-1, ops.shape(g)[-1]))
        grad_w = ops.matmul(ops.transpose(flat_x), flat_g) - w * ops.sum(flat_g, axis=0)
        clipped = ops.clip(ops.expand_dims(w, 0) - ops.expand_dims(x, -1), -1.0, 1.0)
        grad_x = ops.sum(clipped * ops.expand_dims(g, -2), axis=-1)
        return grad_x, grad_w

    distance = ops.sum(ops.abs(ops.expand_dims(x, -1) - w), axis=-2)
    return -distance, grad


@keras.saving.register_keras_serializable(package="kerasbnn")
class AdderConv2D(keras.layers.Layer):
    r"""2-D adder layer: the negative L1 distance between each input patch and each filter.

    Forward (AdderNet eq. 2):
        Y(m, n, t) = - sum_i sum_j sum_k | X(m + i, n + j, k) - F(i, j, k, t) |
    with the padding, stride and dilation semantics of `keras.layers.Conv2D` (zero padding,
    TensorFlow's "same" split). There is no bias: AdderNet follows every adder layer with BN.

    Backward (AdderNet eqs. 5-6, official adder.py):
        dY/dF = X - F,   dY/dX = HT(F - X),  HT(z) = clip(z, -1, 1),
    and, when `adaptive_lr` is on, the whole filter gradient is rescaled to
    eta * sqrt(k) * g / ||g||_2 (eq. 13, k = number of filter elements), so that the optimizer's
    learning rate gamma gives Delta F = gamma * alpha * g.

    The layer loops over the kernel positions and computes a `(batch, rows, cols, channels,
    filters)` difference per position instead of unfolding all patches at once: peak memory is
    one such tensor, and the filter gradient is a matmul.

    Args:
        filters: number of output channels.
        kernel_size: int or pair of ints.
        strides: int or pair of ints.
        padding: "valid" or "same".
        dilation_rate: int or pair of ints (strides and dilation cannot both exceed 1).
        kernel_initializer: initializer of the filters; None means N(0, 1), as in AdderNet.
        kernel_regularizer: optional regularizer of the filters.
        kernel_constraint: optional constraint of the filters.
        adaptive_lr: apply the adaptive learning-rate scaling of eq. 13 in the backward pass.
        eta: eta of eq. 13 (0.2 in the official code).

    Input shape:
        4-D tensor `(batch, rows, cols, channels)` (channels_last), rows and cols known.

    Output shape:
        4-D tensor `(batch, new_rows, new_cols, filters)`.

    Raises:
        ValueError: for a non-positive `filters`, `kernel_size`, `strides`, `dilation_rate` or
            `eta`, an unknown `padding`, strides and dilation both above 1, or (at build) an
            input that is not 4-D with known rows, cols and channels.

    Example:
    ```python
    x = keras.Input((32, 32, 16))
    y = AdderConv2D(16, 3, padding="same")(x)
    y = keras.layers.BatchNormalization()(y)
    ```
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=(1, 1),
        padding="valid",
        dilation_rate=(1, 1),
        kernel_initializer=None,
        kernel_regularizer=None,
        kernel_constraint=None,
        adaptive_lr=True,
        eta=0.2,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(filters) != filters or filters <= 0:
            raise ValueError(f"filters must be a positive integer, received {filters!r}.")
        self.filters = int(filters)
        self.kernel_size = self._pair(kernel_size, "kernel_size")
        self.strides = self._pair(strides, "strides")
        self.dilation_rate = self._pair(dilation_rate, "dilation_rate")
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(
                f"strides {self.strides} and dilation_rate {self.dilation_rate} cannot both be "
                "larger than 1 (as in keras.layers.Conv2D): set one of them to 1."
            )
        padding = str(padding).lower()
        if padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same', received {padding!r}.")
        self.padding = padding
        if kernel_initializer is None:
            kernel_initializer = keras.initializers.RandomNormal(mean=0.0, stddev=1.0)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        if not eta > 0:
            raise ValueError(f"eta must be positive, received {eta!r}.")
        self.adaptive_lr = bool(adaptive_lr)
        self.eta = float(eta)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    @staticmethod
    def _pair(value, name):
        pair = (value, value) if isinstance(value, int) else tuple(value)
        if len(pair) != 2 or any(int(v) != v or v <= 0 for v in pair):
            raise ValueError(f"{name} must be a positive int or a pair of them, received {value!r}.")
        return tuple(int(v) for v in pair)

    def build(self, input_shape):
        if len(input_shape) != 4 or any(d is None for d in input_shape[1:]):
            raise ValueError(
                "AdderConv2D needs a 4-D channels_last input with known rows, cols and "
                f"channels, received shape {tuple(input_shape)}: give keras.Input a full shape."
            )
        channels = int(input_shape[-1])
        self.kernel = self.add_weight(
            name="kernel",
            shape=(*self.kernel_size, channels, self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: channels})
        for size, k, s, d in zip(input_shape[1:3], self.kernel_size, self.strides, self.dilation_rate):
            if self._out_size(size, k, s, d) <= 0:
                raise ValueError(
                    f"Input shape {tuple(input_shape)} is too small for kernel_size "
                    f"{self.kernel_size} with padding 'valid' and dilation {self.dilation_rate}."
                )

    def _out_size(self, size, k, s, d):
        if self.padding == "same":
            return -(-size // s)
        return (size - (k - 1) * d - 1) // s + 1

    def compute_output_shape(self, input_shape):
        rows, cols = (
            None if size is None else self._out_size(size, k, s, d)
            for size, k, s, d in zip(input_shape[1:3], self.kernel_size, self.strides, self.dilation_rate)
        )
        return (input_shape[0], rows, cols, self.filters)

    def call(self, inputs):
        x = ops.convert_to_tensor(inputs, dtype=self.compute_dtype)
        kernel = ops.cast(ops.convert_to_tensor(self.kernel), self.compute_dtype)
        if self.adaptive_lr:
            kernel = adaptive_gradient_scale(kernel, self.eta)
        rows, cols = x.shape[1], x.shape[2]
        out_rows, out_cols = self.compute_output_shape(x.shape)[1:3]
        if self.padding == "same":
            pads = [
                same_padding_amounts(size, k, s, d)
                for size, k, s, d in zip((rows, cols), self.kernel_size, self.strides, self.dilation_rate)
            ]
            x = ops.pad(x, [(0, 0), *pads, (0, 0)])
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.strides, self.dilation_rate
        outputs = None
        for i in range(kh):
            for j in range(kw):
                view = x[
                    :,
                    i * dh : i * dh + (out_rows - 1) * sh + 1 : sh,
                    j * dw : j * dw + (out_cols - 1) * sw + 1 : sw,
                    :,
                ]
                tap = _adder_tap(view, kernel[i, j])
                outputs = tap if outputs is None else outputs + tap
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
                "dilation_rate": self.dilation_rate,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
                "adaptive_lr": self.adaptive_lr,
                "eta": self.eta,
            }
        )
        return config
