"""Precision resolution: one `bits` / `quantizer` / `binary` triple for every zoo builder.

`bits` is 32 (float), k (k-bit weights and activations) or `(w_bits, a_bits)`. How a side is
quantized:

- 32 bits: float (no quantizer).
- 1 < k < 32: `quantizer(k_bit=k, mode="activations")` on every body conv input and
  `quantizer(k_bit=k, mode="weights")` on its kernel; `mode="signed_activations"` on an input
  the builder declares signed (`conv(..., signed=True)`: the one-conv `bireal` and `reactnet`
  blocks, whose convs read the residual stream), so that a k-bit copy of the float network
  keeps its function. Only LSQ has that mode (`SIGNED_FAMILIES`): DoReFa's and HWGQ's
  activation quantizers are defined on [0, 1] and on a ReLU's half-wave, so on a signed input
  they keep their own definition and zero its negative half (their k-bit copies of a one-conv
  block do not keep the float function; measured for LSQ before the signed grid: a 4-bit
  `bireal` ResNet-20 copy scored 17.3% against its float network's 85.7%).
- 1-bit activations: the `binary` scheme's binarizer.
- 1-bit weights: the `binary` scheme's kernel binarizer when the activations are 1-bit too,
  otherwise `quantizer(k_bit=1, mode="weights")` (e.g. CMT-KD's W1A2 with HWGQ).

The `binary` schemes, all written so that a 1/1-bit conv converts to `LceBconv2d`:

- `"plain"`: ste_sign inputs and weights, latent weights clipped to [-1, 1] (BNN).
- `"xnor"`: ste_sign inputs and weights; `QuantConv2D(scaling="xnor")` multiplies the output
  by XNOR-Net's K alpha (input scaling K, per-output-channel alpha = mean|W|) (Rastegari et
  al., arXiv:1603.05279).
- `"xnorpp"`: ste_sign inputs and weights with XNOR-Net++'s learned factorised output scale
  Gamma = alpha (x) beta (x) gamma (`QuantConv2D(scaling="xnorpp_factorized")`, thesis
  eqs 2.9-2.10).
- `"bireal"`: approx_sign inputs and magnitude-aware weights (Bi-Real Net).
- `"dorefa"`: MAD eqs 4-5. DoReFa's activations a^b = round(clip(a, 0, 1)) in {0, 1} are not a
  binary-conv operand, so they are emitted in the equivalent {-1, +1} form s = 2 a^b - 1 =
  sign(a - 1/2): a fixed per-channel shift of -1/2 (`LearnableBias`, not trainable) then
  `SteSign(clip_value=0.5)`, whose pseudo-gradient 1_{|a - 1/2| <= 1/2} is DoReFa's clip gradient.
  conv(a^b, W) = (conv(s, W) + conv(1, W)) / 2 differs from conv(s, W) by a per-channel affine
  map that the following BatchNormalization absorbs (only the padded border differs: padding s
  with +1 means padding a^b with 1). Weights alpha sign(w) use the per-output-channel mean|w|
  (`magnitude_aware_sign`) instead of MAD's per-layer mean; BN absorbs the per-channel factor too.
  LCE turns the shift into a SUB folded into the producing bconv's bias.

A binarized conv whose input is known to be non-negative (it follows a ReLU) gets a fixed shift
of -`RELU_THRESHOLD` before the sign, so that sign maps the ReLU's zeros to -1 (thesis section
3.1.1); sign(0) = +1 would otherwise make every such input +1.
"""

import dataclasses

import keras

from kerasbnn import quantizers
from kerasbnn.layers import QuantConv2D
from kerasbnn.layers.activations import LearnableBias

QUANTIZERS = ("dorefa", "hwgq", "lsq")
"""The k-bit quantizer families a zoo builder's `quantizer=` takes (`teachers.quantizer`)."""
#: The families that quantize a signed conv input on a signed grid (`Precision.conv(signed=True)`).
SIGNED_FAMILIES = ("lsq",)
BINARY_SCHEMES = ("dorefa", "xnor", "xnorpp", "bireal", "plain")
"""The 1-bit schemes a zoo builder's `binary=` takes (`student.binary`); see this module's docstring."""
#: Shift applied before the sign of a non-negative (post-ReLU) tensor: sign(x - t) is -1 at x = 0.
RELU_THRESHOLD = 1e-4

_SCALING = {"xnor": "xnor", "xnorpp": "xnorpp_factorized"}


def _check_bits(value, what):
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 32:
        raise ValueError(
            f"{what} must be an integer in [1, 32] (32 = float), received {value!r}. "
            "Use bits=32, 8, 4, 2, 1 or a (w_bits, a_bits) pair."
        )
    return value


def split_bits(bits):
    """`bits` -> `(w_bits, a_bits)`.

    Raises:
        ValueError: if `bits` is neither an integer in [1, 32] nor a pair of them.
    """
    if isinstance(bits, (tuple, list)):
        if len(bits) != 2:
            raise ValueError(f"bits as a sequence must be (w_bits, a_bits), received {bits!r}.")
        return _check_bits(bits[0], "w_bits"), _check_bits(bits[1], "a_bits")
    bits = _check_bits(bits, "bits")
    return bits, bits


@dataclasses.dataclass(frozen=True)
class Precision:
    """How the quantized (body) layers of a zoo model are built.

    Build one with `resolve_precision`; the builders call `conv(...)` for every body conv.

    Attributes:
        w_bits: bits of the body weights (32 = float).
        a_bits: bits of the body activations, i.e. of every conv input (32 = float).
        quantizer: family of the k-bit quantizers (`"dorefa"`, `"hwgq"`, `"lsq"`).
        binary: scheme of the 1-bit layers (see the module docstring).
    """

    w_bits: int
    a_bits: int
    quantizer: str = "dorefa"
    binary: str = "plain"

    @property
    def tag(self):
        """Short name used in model names: `w1a1`, `w32a32`, ..."""
        return f"w{self.w_bits}a{self.a_bits}"

    @property
    def is_float(self):
        return self.w_bits == 32 and self.a_bits == 32

    @property
    def is_binary(self):
        """1-bit weights and activations: the body convs become `LceBconv2d`."""
        return self.w_bits == 1 and self.a_bits == 1

    @property
    def binary_activations(self):
        return self.a_bits == 1

    def _family(self, k_bit, mode):
        side = {"activations": "activations", "signed_activations": "signed activations",
                "weights": "weights"}[mode]
        try:
            return quantizers.get(
                {"class_name": self.quantizer, "config": {"k_bit": k_bit, "mode": mode}}
            )
        except (ValueError, TypeError) as error:
            raise ValueError(
                f"quantizer={self.quantizer!r} cannot quantize {side} to {k_bit} bits: {error} "
                "Choose bits the quantizer supports or another quantizer "
                f"({', '.join(QUANTIZERS)})."
            ) from error

    def input_quantizer(self, signed=False):
        """A fresh quantizer for a body conv's input (None = float); `signed`: the input takes
        both signs (k-bit: the `signed_activations` mode of the `SIGNED_FAMILIES`)."""
        if self.a_bits == 32:
            return None
        if self.a_bits == 1:
            if self.binary == "bireal":
                return quantizers.ApproxSign()
            if self.binary == "dorefa":
                return quantizers.SteSign(clip_value=0.5)
            return quantizers.SteSign()
        signed = signed and self.quantizer in SIGNED_FAMILIES
        return self._family(self.a_bits, "signed_activations" if signed else "activations")

    def kernel_quantizer(self):
        """A fresh quantizer for a body conv's latent kernel (None = float)."""
        if self.w_bits == 32:
            return None
        if self.w_bits == 1 and self.a_bits == 1:
            if self.binary in ("bireal", "dorefa"):
                return quantizers.MagnitudeAwareSign()
            return quantizers.SteSign()
        return self._family(self.w_bits, "weights")

    def conv_kwargs(self, signed=False):
        """Keyword arguments of `QuantConv2D` for a body conv (`signed`: see `input_quantizer`)."""
        kwargs = {
            "input_quantizer": self.input_quantizer(signed),
            "kernel_quantizer": self.kernel_quantizer(),
            # LCE runs "same" binary convs fast only with +1 padding (LCE.md section 2).
            "pad_values": 1.0 if self.a_bits == 1 else 0.0,
        }
        if self.is_binary and self.binary in ("plain", "xnorpp"):
            kwargs["kernel_constraint"] = "weight_clip"
        if self.is_binary and self.binary in _SCALING:
            kwargs["scaling"] = _SCALING[self.binary]
        return kwargs

    def input_shift(self, nonnegative):
        """Fixed shift added before a binarized conv input, or None.

        Args:
            nonnegative: whether the conv input comes out of a ReLU.
        """
        if self.a_bits != 1:
            return None
        if self.binary == "dorefa":
            return -0.5
        return -RELU_THRESHOLD if nonnegative else None

    def rsign(self, x, name):
        """ReActNet's RSign threshold: a learnable per-channel shift, only before 1-bit inputs.

        Use it once before several convs that read the same binarized tensor (LCE merges
        their identical sign ops); `conv(..., learnable_threshold=True)` does it per conv.
        """
        if self.a_bits != 1:
            return x
        return LearnableBias(name=name)(x)

    def conv(self, x, filters, kernel_size, *, name, strides=1, padding="same", nonnegative=False,
             learnable_threshold=False, signed=False, **kwargs):
        """Applies one body conv, binarizing its input exactly once right before it.

        Args:
            x: input tensor.
            filters, kernel_size, strides, padding: as in `QuantConv2D`.
            name: layer name; a threshold layer, if any, is named `<name>_shift`.
            nonnegative: the input follows a ReLU (see `input_shift`).
            learnable_threshold: add ReActNet's RSign learnable per-channel shift (1-bit
                activations only).
            signed: the input takes both signs (it reads a residual stream, not a ReLU): a
                k-bit input is quantized on a signed grid (`input_quantizer`).
            **kwargs: further `QuantConv2D` arguments.

        Returns:
            The conv output (no bias: a BatchNormalization follows every body conv).
        """
        shift = self.input_shift(nonnegative)
        if self.a_bits == 1 and learnable_threshold:
            initializer = "zeros" if shift is None else keras.initializers.Constant(shift)
            x = LearnableBias(bias_initializer=initializer, name=f"{name}_rsign")(x)
        elif shift is not None:
            x = LearnableBias(
                bias_initializer=keras.initializers.Constant(shift), trainable=False,
                name=f"{name}_shift",
            )(x)
        options = {"use_bias": False, "kernel_initializer": "he_normal",
                   **self.conv_kwargs(signed)}
        options.update(kwargs)
        return QuantConv2D(filters, kernel_size, strides=strides, padding=padding, name=name,
                           **options)(x)


def resolve_precision(bits=32, quantizer="dorefa", binary="plain"):
    """Validates a builder's precision arguments and returns a `Precision`.

    Args:
        bits: 32, k, or `(w_bits, a_bits)`.
        quantizer: family of k-bit quantizers, one of `QUANTIZERS`.
        binary: scheme of 1-bit layers, one of `BINARY_SCHEMES`.

    Returns:
        A `Precision` whose quantizers have all been constructed once, so that a bit-width the
        chosen quantizer does not support fails here, at build time.

    Raises:
        ValueError: for an unknown quantizer or scheme (the message lists the valid ones), bad
            bits, or bits the quantizer does not support.
    """
    if quantizer not in QUANTIZERS:
        raise ValueError(
            f"Unknown quantizer {quantizer!r}. Valid quantizers: {', '.join(QUANTIZERS)}."
        )
    if binary not in BINARY_SCHEMES:
        raise ValueError(
            f"Unknown binary scheme {binary!r}. Valid schemes: {', '.join(BINARY_SCHEMES)}."
        )
    w_bits, a_bits = split_bits(bits)
    precision = Precision(w_bits, a_bits, quantizer, binary)
    precision.conv_kwargs()  # constructs every quantizer once: unsupported bits fail now
    return precision
