"""Multi-bit quantizers (k > 1) and the float no-op."""

from kerasbnn.quantizers.base import Quantizer, register


@register("no_op")
class NoOp(Quantizer):
    """Identity 'quantizer' that only records a precision (for bit accounting).

    Args:
        precision: bits the values are assumed to hold (32 for float).
    """

    def __init__(self, precision=32):
        if not isinstance(precision, int) or not 1 <= precision <= 32:
            raise ValueError(f"precision must be an integer in [1, 32], received {precision!r}.")
        self.precision = precision

    def call(self, inputs):
        return inputs

    def get_config(self):
        return {"precision": self.precision}
