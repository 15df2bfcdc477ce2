"""1-bit quantizers: forward sign(x) in {-1, +1} with various pseudo-gradients.

Every binarizer's forward pass is `where(x >= 0, 1, -1)`, the pattern Larq Compute
Engine turns into `LceQuantize` (sign(0) = +1, as in larq.math.sign).
"""

from keras import ops

from kerasbnn.quantizers.base import Quantizer, register


def _scalar(value, x):
    """A scalar of `x`'s dtype: broadcast by `where`, never materialised as a full tensor."""
    return ops.convert_to_tensor(value, dtype=x.dtype)


def binary_sign(x):
    """sign(x) with sign(0) = +1, written as the `SelectV2` LCE recognises.

    The two branches are scalars that `where` broadcasts, so the forward pass is one compare
    and one select, not two `ones_like` tensors and their negation (LCE.md: "scalars or
    `ones_like` both fine").
    """
    return ops.where(ops.greater_equal(x, 0), _scalar(1.0, x), _scalar(-1.0, x))


def _upstream(args, upstream):
    return args[0] if upstream is None else upstream


def with_pseudo_gradient(forward, x, gradient=None, *, mask=None):
    """Returns `forward(x)` whose gradient is `upstream * gradient(x)`.

    Give `mask` instead of `gradient` for an indicator pseudo-gradient 1_{mask(x)}: the
    backward pass is then one select, `where(mask(x), upstream, 0)`, instead of a cast of the
    mask and a multiplication (the same values, except that a masked-out gradient is +0.0
    rather than upstream * 0.0).
    """
    if (gradient is None) == (mask is None):
        raise ValueError("with_pseudo_gradient needs exactly one of `gradient` and `mask`.")

    @ops.custom_gradient
    def _op(x):
        def grad(*args, upstream=None):
            upstream = _upstream(args, upstream)
            if mask is not None:
                return ops.where(mask(x), upstream, _scalar(0.0, upstream))
            return upstream * gradient(x)

        return forward(x), grad

    return _op(x)


def clipped_identity(clip_value):
    """Pseudo-gradient 1_{|x| <= clip_value}; identity when clip_value is None."""
    if clip_value is None:
        return ops.ones_like
    return lambda x: ops.cast(ops.less_equal(ops.abs(x), clip_value), x.dtype)


def clip_mask(clip_value):
    """The mask |x| <= clip_value of `clipped_identity`, for `with_pseudo_gradient(mask=...)`."""
    return lambda x: ops.less_equal(ops.abs(x), _scalar(clip_value, x))


def with_clipped_gradient(forward, x, clip_value):
    """`forward(x)` with the straight-through gradient 1_{|x| <= clip_value} (all-pass when
    clip_value is None: an identity gradient costs no op at all)."""
    if clip_value is None:
        return straight_through(forward, x)
    return with_pseudo_gradient(forward, x, mask=clip_mask(clip_value))


def straight_through(forward, x):
    """`forward(x)` with the identity gradient (no multiplication by ones)."""

    @ops.custom_gradient
    def _op(x):
        def grad(*args, upstream=None):
            return _upstream(args, upstream)

        return forward(x), grad

    return _op(x)


def ste_sign(x, clip_value=1.0):
    r"""Straight-through sign: q(x) = sign(x), dq/dx = 1_{|x| <= clip_value} (BNN, eq. 2.4)."""
    return with_clipped_gradient(binary_sign, x, clip_value)


def approx_sign(x):
    r"""Bi-Real ApproxSign: q(x) = sign(x), dq/dx = max(0, 2 - 2|x|) (Bi-Real Net, eq. 2.5)."""
    return with_pseudo_gradient(binary_sign, x, lambda x: ops.maximum(2.0 - 2.0 * ops.abs(x), 0.0))


def swish_sign(x, beta=5.0):
    r"""SwishSign: q(x) = sign(x), dq/dx = beta (2 - beta x tanh(beta x / 2)) / (1 + cosh(beta x))."""

    def gradient(x):
        bx = beta * x
        return beta * (2.0 - bx * ops.tanh(bx * 0.5)) / (1.0 + ops.cosh(bx))

    return with_pseudo_gradient(binary_sign, x, gradient)


def ste_heaviside(x, clip_value=1.0):
    r"""Straight-through Heaviside: q(x) = 1 if x > 0 else 0, dq/dx = 1_{|x| <= clip_value}."""
    heaviside = lambda x: ops.cast(ops.greater(x, 0), x.dtype)  # noqa: E731
    return with_clipped_gradient(heaviside, x, clip_value)


def _check_clip_value(clip_value):
    if clip_value is not None and not clip_value > 0:
        raise ValueError(f"clip_value must be a positive number or None, received {clip_value!r}.")
    return None if clip_value is None else float(clip_value)


@register("ste_sign")
class SteSign(Quantizer):
    r"""Binarizer with the straight-through estimator.

    Forward: q(x) = +1 if x >= 0 else -1. Pseudo-gradient: dq/dx = 1 if |x| <= clip_value
    else 0 (identity if `clip_value` is None).

    Args:
        clip_value: gradients are zero where |x| exceeds it; None passes every gradient.

    References:
        Hubara et al., Binarized Neural Networks, arXiv:1602.02830.
    """

    precision = 1

    def __init__(self, clip_value=1.0):
        self.clip_value = _check_clip_value(clip_value)

    def call(self, inputs):
        return ste_sign(inputs, clip_value=self.clip_value)

    def get_config(self):
        return {"clip_value": self.clip_value}


@register("approx_sign")
class ApproxSign(Quantizer):
    r"""Bi-Real Net's binarizer: sign forward, piecewise-linear pseudo-gradient.

    Forward: q(x) = sign(x). Pseudo-gradient: dq/dx = 2 - 2|x| for |x| <= 1, else 0.

    References:
        Liu et al., Bi-Real Net, arXiv:1808.00278.
    """

    precision = 1

    def call(self, inputs):
        return approx_sign(inputs)


@register("swish_sign")
class SwishSign(Quantizer):
    r"""Binarizer whose pseudo-gradient is the derivative of 2 sigmoid(beta x)(1 + beta x (1 - sigmoid(beta x))) - 1.

    Args:
        beta: larger values approach the sign function.

    References:
        Darabi et al., BNN+, arXiv:1812.11800.
    """

    precision = 1

    def __init__(self, beta=5.0):
        if not beta > 0:
            raise ValueError(f"beta must be positive, received {beta!r}.")
        self.beta = float(beta)

    def call(self, inputs):
        return swish_sign(inputs, beta=self.beta)

    def get_config(self):
        return {"beta": self.beta}


@register("magnitude_aware_sign")
class MagnitudeAwareSign(Quantizer):
    r"""Bi-Real Net's magnitude-aware weight binarizer.

    Forward: q(w) = mean(|w|) * sign(w), the mean taken per output channel (over every axis
    but the last) and treated as a constant. Pseudo-gradient: mean(|w|) * 1_{|w| <= clip_value}.

    References:
        Liu et al., Bi-Real Net, arXiv:1808.00278.
    """

    precision = 1

    def __init__(self, clip_value=1.0):
        self.clip_value = _check_clip_value(clip_value)

    def call(self, inputs):
        axes = tuple(range(len(inputs.shape) - 1))
        scale = ops.stop_gradient(ops.mean(ops.abs(inputs), axis=axes))
        return scale * ste_sign(inputs, clip_value=self.clip_value)

    def get_config(self):
        return {"clip_value": self.clip_value}


@register("ste_heaviside")
class SteHeaviside(Quantizer):
    r"""Binarizer to {0, 1}: q(x) = 1 if x > 0 else 0, pseudo-gradient 1_{|x| <= clip_value}.

    LCE cannot run {0, 1} tensors as binary convolutions; use it for experiments.
    """

    precision = 1

    def __init__(self, clip_value=1.0):
        self.clip_value = _check_clip_value(clip_value)

    def call(self, inputs):
        return ste_heaviside(inputs, clip_value=self.clip_value)

    def get_config(self):
        return {"clip_value": self.clip_value}
