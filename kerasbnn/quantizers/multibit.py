"""Multi-bit quantizers (ternary, DoReFa, HWGQ, LSQ) and the float no-op.

All are written with `keras.ops`; the straight-through estimators reuse
`with_pseudo_gradient` from `kerasbnn.quantizers.sign`, so they run on any Keras backend
that implements `keras.ops.custom_gradient`.

`k_bit=32` is never a quantizer here: a float tensor is spelled `None` (no quantizer).
"""

import math
import numbers

import keras
from keras import ops

from kerasbnn.quantizers.base import ALIASES, Quantizer, register
from kerasbnn.quantizers.sign import (
    _check_clip_value,
    binary_sign,
    _scalar,
    straight_through,
    with_clipped_gradient,
    with_pseudo_gradient,
)

MODES = ("activations", "weights")
"""The modes of every k-bit family: a layer's (non-negative) inputs and its kernel. LSQ also
has `"signed_activations"`, for conv inputs that take both signs (the one-conv `bireal` and
`reactnet` blocks feed their convs the residual stream, not a ReLU output)."""

HWGQ_WEIGHT_STEPS = {
    1: 1.596,
    2: 0.996,
    3: 0.586,
    4: 0.336,
    5: 0.1881,
    6: 0.1041,
    7: 0.0569,
    8: 0.0308,
}
"""Delta_w(b): MSE-optimal step of a symmetric mid-rise 2^b-level quantizer of N(0, 1).

b = 1..4 are EdMIPS's table (zhaoweicai/EdMIPS models/quant_module.py, `gaussian_steps`);
b = 5..8 are derived by the same minimisation (see tests/quantizers/multibit_test.py).
"""

HWGQ_ACTIVATION_STEPS = {
    1: 0.799,
    2: 0.538,
    3: 0.3217,
    4: 0.185,
    5: 0.1030,
    6: 0.0566,
    7: 0.0307,
    8: 0.0165,
}
"""Delta_a(b): MSE-optimal step of the half-wave quantizer {0, D, ..., (2^b - 1) D} of N(0, 1).

b = 1..4 are EdMIPS's `hwgq_steps`; b = 5..8 are derived by the same minimisation. The
0.104/0.058/0.033/0.019 tables found in third-party copies are slightly off.
"""


def _check_k_bit(name, k_bit, low, high, mode=None):
    where = f" in mode {mode!r}" if mode else ""
    is_integer = isinstance(k_bit, numbers.Integral) and not isinstance(k_bit, bool)
    if not is_integer or not low <= k_bit <= high:
        raise ValueError(
            f"{name} k_bit must be an integer in [{low}, {high}]{where}, received {k_bit!r}. "
            "For a float (32-bit) tensor pass None instead of a quantizer."
        )
    return int(k_bit)


def _check_mode(name, mode, signed=False):
    if mode == "signed_activations" and not signed:
        raise ValueError(
            f"{name} quantizes activations to a non-negative range, so it cannot quantize a "
            "signed conv input (mode 'signed_activations'; e.g. the inputs of the one-conv "
            "`bireal` and `reactnet` blocks, whose convs read the residual stream): use the "
            "'lsq' family (teachers.quantizer: lsq), or a block whose convs read a ReLU "
            "output (model.block: basic)."
        )
    if mode not in MODES and mode != "signed_activations":
        extra = ", 'signed_activations' (inputs of both signs)" if signed else ""
        raise ValueError(
            f"Invalid {name} mode {mode!r}. Valid modes: 'activations' (non-negative inputs "
            f"of a layer){extra} and 'weights' (its kernel)."
        )
    return mode


def _in_closed_range(low, high):
    """Mask of the pseudo-gradient 1_{low <= x <= high}, the gradient of clip(x, low, high)."""
    return lambda x: ops.logical_and(
        ops.greater_equal(x, _scalar(low, x)), ops.less_equal(x, _scalar(high, x))
    )


def quantize_k(x, k_bit):
    r"""DoReFa's quantize_k with a straight-through gradient (MAD eq. 1).

    quantize_k(x) = round((2^k - 1) x) / (2^k - 1) for x in [0, 1]; d quantize_k / dx = 1.

    Args:
        x: tensor with values in [0, 1].
        k_bit: number of bits k.

    Returns:
        The quantized tensor, on the grid {0, 1/(2^k - 1), ..., 1}.
    """
    n = float(2**k_bit - 1)
    return straight_through(lambda x: ops.round(x * n) / n, x)


def ste_tern(x, threshold_value=0.05, ternary_weight_networks=False, clip_value=1.0):
    r"""Ternarization with the straight-through estimator (larq's `ste_tern`).

    q(x) = sign(sign(x + t) + sign(x - t)) in {-1, 0, +1}: +1 for x >= t, -1 for x <= -t,
    0 in between. t = `threshold_value`, or t = 0.7 mean(|x|) (Ternary Weight Networks,
    eq. 8) when `ternary_weight_networks`. dq/dx = 1_{|x| <= clip_value}.

    Args:
        x: tensor to ternarize.
        threshold_value: the fixed threshold t.
        ternary_weight_networks: compute t from the tensor itself (no gradient through t).
        clip_value: gradients are zero where |x| exceeds it; None passes every gradient.

    Returns:
        The ternarized tensor.
    """

    def forward(x):
        if ternary_weight_networks:
            threshold = 0.7 * ops.mean(ops.abs(x))
        else:
            threshold = threshold_value
        return ops.sign(ops.sign(x + threshold) + ops.sign(x - threshold))

    return with_clipped_gradient(forward, x, clip_value)


@register("ste_tern")
class SteTern(Quantizer):
    r"""Ternary quantizer {-1, 0, +1} with the straight-through estimator.

    Forward: q(x) = +1 if x >= t, 0 if |x| < t, -1 if x <= -t, where t is `threshold_value`
    or, with `ternary_weight_networks=True`, t = 0.7/n sum_i |x_i| (Li et al., eq. 8).
    Pseudo-gradient: dq/dx = 1_{|x| <= clip_value}. Values and gradients equal larq 0.14's
    `SteTern`.

    Args:
        threshold_value: the fixed threshold t (>= 0).
        ternary_weight_networks: compute t from the tensor as in Ternary Weight Networks.
        clip_value: gradients are zero where |x| exceeds it; None passes every gradient.

    Raises:
        ValueError: for a negative threshold or a non-positive clip_value.

    References:
        Li, Zhang and Liu, Ternary Weight Networks, arXiv:1605.04711.
    """

    precision = 2

    def __init__(self, threshold_value=0.05, ternary_weight_networks=False, clip_value=1.0):
        if not threshold_value >= 0:
            raise ValueError(f"threshold_value must be >= 0, received {threshold_value!r}.")
        self.threshold_value = float(threshold_value)
        self.ternary_weight_networks = bool(ternary_weight_networks)
        self.clip_value = _check_clip_value(clip_value)

    def call(self, inputs):
        return ste_tern(
            inputs,
            threshold_value=self.threshold_value,
            ternary_weight_networks=self.ternary_weight_networks,
            clip_value=self.clip_value,
        )

    def get_config(self):
        return {
            "threshold_value": self.threshold_value,
            "ternary_weight_networks": self.ternary_weight_networks,
            "clip_value": self.clip_value,
        }


@register("dorefa")
class DoReFa(Quantizer):
    r"""DoReFa-Net's k-bit quantizer of activations or weights (MAD eqs. 1-5).

    Activations (eq. 2): a_q = quantize_k(clip(a, 0, 1)), on {0, 1/(2^k-1), ..., 1};
    pseudo-gradient 1_{0 <= a <= 1}.

    Weights, k >= 2 (eq. 3): w_q = 2 quantize_k(tanh(w) / (2 sg(max|tanh(w)|)) + 1/2) - 1,
    on {-1, ..., +1}; the gradient flows through tanh and the division by the (stop-gradient)
    maximum, straight through the rounding.

    With k_bit = 1 the quantizer is the BNN form of the DoReFa paper (MAD eqs. 4-5):
    - weights: w_b = alpha sign(w) with sign(0) = +1 and alpha = sg(mean(|w|)) taken over the
      whole tensor (one scalar per layer, as in DoReFa's code and MAD eq. 4), gradient
      dw_b/dw = 1 (DoReFa's `fw(x / E) * E` with an identity STE). A per-tensor scale keeps the
      kernel binary for LCE (it becomes the bconv's output multiplier). Use
      `magnitude_aware_sign` for a per-output-channel alpha.
    - activations: a_b = round(clip(a, 0, 1)) in {0, 1}, gradient 1_{0 <= a <= 1}. LCE cannot
      run {0, 1} inputs as a binary convolution: such a layer stays float after conversion.

    For k >= 2 both modes equal larq 0.14's `DoReFa` in values and gradients; for k = 1 the
    activation mode equals larq too, while larq's weight mode gives sign(w) (no alpha,
    gradient (1 - tanh^2 w)/max|tanh w|) instead of the paper's BNN form used here.

    Args:
        k_bit: number of bits, 1..8.
        mode: `"activations"` (clip to [0, 1]) or `"weights"` (tanh, max-norm, [-1, 1]).

    Raises:
        ValueError: for k_bit outside 1..8 or an unknown mode.

    References:
        Zhou et al., DoReFa-Net, arXiv:1606.06160.
        Nie, Han and Wang, MAD: Multi-bit Adaptive Distillation, BMVC 2021.
    """

    def __init__(self, k_bit=2, mode="activations"):
        self.mode = _check_mode("DoReFa", mode)
        self.k_bit = _check_k_bit("DoReFa", k_bit, 1, 8)
        self.precision = self.k_bit

    def call(self, inputs):
        if self.mode == "activations":
            n = float(2**self.k_bit - 1)
            return with_pseudo_gradient(
                lambda x: ops.round(ops.clip(x, 0.0, 1.0) * n) / n,
                inputs,
                mask=_in_closed_range(0.0, 1.0),
            )
        if self.k_bit == 1:
            return straight_through(lambda w: ops.mean(ops.abs(w)) * binary_sign(w), inputs)
        limited = ops.tanh(inputs)
        # The max is a constant: otherwise the largest element would see d(x/x)/dx != 0.
        dividend = ops.stop_gradient(ops.max(ops.abs(limited)))
        normed = ops.divide_no_nan(limited, 2.0 * dividend) + 0.5
        return 2.0 * quantize_k(normed, self.k_bit) - 1.0

    def get_config(self):
        return {"k_bit": self.k_bit, "mode": self.mode}


# larq calls DoReFa "dorefa_quantizer" (and its class used to be DoReFaQuantizer).
ALIASES["dorefa_quantizer"] = DoReFa


def _unbiased_std(x):
    n = math.prod(x.shape) if None not in x.shape else ops.size(x)
    centred = x - ops.mean(x)
    return ops.sqrt(ops.sum(centred * centred) / ops.maximum(ops.cast(n, x.dtype) - 1.0, 1.0))


@register("hwgq")
class HWGQ(Quantizer):
    r"""Half-wave Gaussian quantizer (CMT-KD eq. 3, in EdMIPS's form).

    Activations (half-wave, for post-BN ~N(0, 1) inputs; D = Delta_a(b)):
    a_q = D round(clip(a, 0, (2^b - 1) D) / D), on {0, D, ..., (2^b - 1) D};
    pseudo-gradient 1_{0 <= a <= (2^b - 1) D} (the gradient of the clip).

    Weights (symmetric, 2^b levels, mid-rise; s = Delta_w(b) sg(std(W)), std over the whole
    tensor with Bessel's correction as torch's `std()`):
    w_q = clip((round(w / s + 1/2) - 1/2) s, -(2^(b-1) - 1/2) s, (2^(b-1) - 1/2) s);
    pseudo-gradient 1 (straight through, no clipping). With b = 1, w_q = +-0.798 std(W) sign(w)
    (a per-tensor scale, binary for LCE); sign(0) = -1 there because round(0.5) = 0.

    The steps are `HWGQ_ACTIVATION_STEPS` / `HWGQ_WEIGHT_STEPS` (EdMIPS for b <= 4, derived for
    b = 5..8 by the same MSE minimisation on N(0, 1)).

    Args:
        k_bit: number of bits b, 1..8.
        mode: `"activations"` or `"weights"`.

    Raises:
        ValueError: for k_bit outside 1..8 or an unknown mode.

    References:
        Cai et al., Deep Learning with Low Precision by Half-wave Gaussian Quantization,
        arXiv:1702.00953. Cai and Vasconcelos, Rethinking Differentiable Search for
        Mixed-Precision Neural Networks (EdMIPS), arXiv:2004.05795.
    """

    def __init__(self, k_bit=2, mode="activations"):
        self.mode = _check_mode("HWGQ", mode)
        self.k_bit = _check_k_bit("HWGQ", k_bit, 1, 8)
        self.precision = self.k_bit

    @property
    def step(self):
        """Delta(b) of this mode (for weights, in units of std(W))."""
        table = HWGQ_ACTIVATION_STEPS if self.mode == "activations" else HWGQ_WEIGHT_STEPS
        return table[self.k_bit]

    def call(self, inputs):
        step = self.step
        if self.mode == "activations":
            top = (2**self.k_bit - 1) * step
            return with_pseudo_gradient(
                lambda a: ops.round(ops.clip(a, 0.0, top) / step) * step,
                inputs,
                mask=_in_closed_range(0.0, top),
            )
        half_levels = 2 ** (self.k_bit - 1) - 0.5

        def forward(w):
            # A constant tensor has std 0; the floor keeps it finite (its output is ~0).
            s = ops.maximum(step * _unbiased_std(w), 1e-12)
            return ops.clip((ops.round(w / s + 0.5) - 0.5) * s, -half_levels * s, half_levels * s)

        return straight_through(forward, inputs)

    def get_config(self):
        return {"k_bit": self.k_bit, "mode": self.mode}


def _lsq_bounds(k_bit, mode):
    """(Q_N, Q_P) of LSQ: activations [0, 2^b - 1] (unsigned); weights and signed activations
    [-2^(b-1), 2^(b-1) - 1]."""
    if mode == "activations":
        return 0, 2**k_bit - 1
    return 2 ** (k_bit - 1), 2 ** (k_bit - 1) - 1


@register("lsq")
class LSQ(Quantizer):
    r"""Learned Step Size Quantization (Esser et al.).

    Forward: v_hat = round(clip(v / s, -Q_N, Q_P)) s, with Q_N = 0, Q_P = 2^b - 1 for
    (unsigned) activations and Q_N = 2^(b-1), Q_P = 2^(b-1) - 1 for (signed) weights and
    signed activations (section 2: "for signed data", e.g. a conv that reads the residual
    stream of a one-conv block, which a ReLU does not precede).

    Gradients (eq. 3 and the straight-through estimator):
    dv_hat/dv = 1_{-Q_N < v/s < Q_P};
    dv_hat/ds = g (-v/s + round(v/s)) inside, g (-Q_N) for v/s <= -Q_N, g Q_P for v/s >= Q_P,
    with the gradient scale g = 1 / sqrt(N Q_P) (section 2.2), N = number of weights of the
    tensor (weights) or of features per example (activations: every axis but the first).
    As in the paper's code, g enters as s g + sg(s - s g), so the forward value is s.

    The step s is a learnable scalar declared in `parameter_specs` as `"step"`: a kerasbnn
    layer creates it as the weight `<role>_quantizer_step` and passes it to `__call__`; call it
    directly as `LSQ(4)(x, step=s)`. Its initial value is `initial_step` when given, else the
    paper's rule s_0 = 2 E|v| / sqrt(Q_P) evaluated on the distribution the tensor starts
    from: v ~ N(0, 1) for activations (post-BatchNorm), E|v| = sqrt(2/pi); a Glorot-uniform
    kernel of the given shape for weights (Keras' default initializer), E|w| = limit/2 with
    limit = sqrt(6 / (fan_in + fan_out)). Nothing keeps s positive; the paper does not either.

    Args:
        k_bit: number of bits b: 1..8 for activations, 2..8 for weights and signed activations
            (with b = 1 a signed grid would have Q_P = 0).
        mode: `"activations"` (non-negative inputs), `"signed_activations"` (inputs of both
            signs: v ~ N(0, 1) for the initial step too, N counted per example) or
            `"weights"`.
        initial_step: positive float, or None for the rule above.

    Raises:
        ValueError: for k_bit out of range, an unknown mode, a non-positive initial_step, or
            a call without `step`.

    References:
        Esser et al., Learned Step Size Quantization, arXiv:1902.08153.
    """

    def __init__(self, k_bit=2, mode="activations", initial_step=None):
        self.mode = _check_mode("LSQ", mode, signed=True)
        low = 1 if mode == "activations" else 2
        self.k_bit = _check_k_bit("LSQ", k_bit, low, 8, mode=mode)
        self.precision = self.k_bit
        if initial_step is not None and not initial_step > 0:
            raise ValueError(
                f"initial_step must be a positive float or None, received {initial_step!r}."
            )
        self.initial_step = None if initial_step is None else float(initial_step)
        self.q_n, self.q_p = _lsq_bounds(self.k_bit, self.mode)

    def default_step(self, input_shape):
        """The paper's s_0 = 2 E|v| / sqrt(Q_P) for a tensor of `input_shape` (see class doc)."""
        if self.mode != "weights":
            mean_abs = math.sqrt(2.0 / math.pi)
        else:
            shape = tuple(input_shape)
            receptive_field = math.prod(shape[:-2]) if len(shape) > 2 else 1
            fan_in = shape[-2] * receptive_field if len(shape) > 1 else shape[-1]
            fan_out = shape[-1] * receptive_field
            mean_abs = math.sqrt(6.0 / (fan_in + fan_out)) / 2.0
        return 2.0 * mean_abs / math.sqrt(self.q_p)

    def parameter_specs(self, input_shape):
        value = self.initial_step
        if value is None:
            value = self.default_step(input_shape)
        return {"step": ((), keras.initializers.Constant(value))}

    def _num_elements(self, inputs):
        shape = inputs.shape if self.mode == "weights" else inputs.shape[1:]
        if None not in shape:
            return float(math.prod(shape))
        size = ops.cast(ops.size(inputs), inputs.dtype)
        if self.mode != "weights":
            return size / ops.cast(ops.shape(inputs)[0], inputs.dtype)
        return size

    def call(self, inputs, step=None):
        if step is None:
            raise ValueError(
                "LSQ needs its learned step: call it as `quantizer(x, step=s)`, or use it inside a "
                "kerasbnn layer, which creates the step from `parameter_specs`."
            )
        step = ops.convert_to_tensor(step, dtype=inputs.dtype)
        g = 1.0 / ops.sqrt(self._num_elements(inputs) * self.q_p)
        scaled = step * g + ops.stop_gradient(step - step * g)
        q_n, q_p = float(self.q_n), float(self.q_p)
        strictly_inside = lambda v: ops.logical_and(  # noqa: E731
            ops.greater(v, _scalar(-q_n, v)), ops.less(v, _scalar(q_p, v))
        )
        levels = with_pseudo_gradient(
            lambda v: ops.round(ops.clip(v, -q_n, q_p)), inputs / scaled, mask=strictly_inside
        )
        return levels * scaled

    def get_config(self):
        return {"k_bit": self.k_bit, "mode": self.mode, "initial_step": self.initial_step}


@register("no_op")
class NoOp(Quantizer):
    """Identity 'quantizer' that only records a precision (for bit accounting).

    Forward q(x) = x, gradient 1 (larq's `NoOp`).

    Args:
        precision: bits the values are assumed to hold (32 for float).

    Raises:
        ValueError: for a precision that is not an integer in [1, 32].
    """

    def __init__(self, precision=32):
        is_integer = isinstance(precision, int) and not isinstance(precision, bool)
        if not is_integer or not 1 <= precision <= 32:
            raise ValueError(f"precision must be an integer in [1, 32], received {precision!r}.")
        self.precision = precision

    def call(self, inputs):
        return inputs

    def get_config(self):
        return {"precision": self.precision}
