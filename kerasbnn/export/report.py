"""What `lce_convert` returns and raises: the `ConversionReport` and the export errors.

Every error raised after the model was accepted carries the report built so far, so a caller
that catches one still sees the op counts and the comparison that made it fail.
"""

import dataclasses

__all__ = [
    "ExportError",
    "ConverterError",
    "BinarizationError",
    "VerificationError",
    "ConversionReport",
]


class ExportError(RuntimeError):
    """Base class of the errors `lce_convert` raises after the model was accepted.

    Attributes:
        report: the `ConversionReport` so far (None when conversion itself failed).
    """

    def __init__(self, message, report=None):
        super().__init__(message)
        self.report = report


class ConverterError(ExportError):
    """The LCE converter failed or crashed (its process died); the message quotes its stderr."""


class BinarizationError(ExportError):
    """A layer the model declares binary did not become an `LceBconv2d` op."""


class VerificationError(ExportError):
    """LCE computes something else than Keras: a binarized input that differs beyond float
    rounding (the message names the layer), or outputs that differ with the same bits."""


@dataclasses.dataclass
class ConversionReport:
    """What `lce_convert` produced and checked.

    Attributes:
        path: the `.tflite` file written (None if nothing was written).
        file_size: size of the flatbuffer in bytes.
        target: converter target, "arm" or "xcore".
        int8: "off", "qat" (the model carried FakeQuant ranges) or "dummy-range"
            (latency-only: every range is `int8_range`, outputs are meaningless).
        binary_layers: names of the model's layers whose `is_binary` is true.
        bconv_ops: number of `LceBconv2d` ops in the file.
        bitpacked_bconv_ops: how many of them write bitpacked (INT32) outputs.
        unconverted_layers: binary layers that did not become `LceBconv2d`, `{name: reason}`.
        float_convs_fed_by_binarizer: output tensor names of float conv/FC ops whose input
            comes from `LceDequantize` (a binarized tensor computed in float: slower than float).
        op_counts: `{op name: count}` for the whole file.
        max_abs_diff: max |Keras - LCE| over the sample batch (None when not verified).
        mismatch_fraction: fraction of output values outside `atol + rtol * max|y|`.
        top1_agreement: fraction of examples on which Keras and LCE pick the same class
            (None for a single output value).
        num_samples: examples compared (the interpreter runs them one by one, batch 1).
        atol: absolute tolerance the comparison used.
        rtol: tolerance relative to the largest output value of each example.
        forced_max_abs_diff: max |Keras - LCE| with LCE's binarized inputs forced into
            every binary layer of Keras (see `kerasbnn.export.verify`).
        flipped_bits: `{layer: bits}` where LCE binarized a value differently from Keras,
            each at a value that is zero up to float rounding when the verification passed.
        first_flip: `(layer, bits)`: the first binary layer whose binarized input differs.
        max_flip_margin: the largest |x| / max|x| at a flipped bit.
        notes: anything the reader should know (dummy int8 ranges, partial binarization).
        flatbuffer: the converted bytes (not printed).
    """

    path: str = None
    file_size: int = 0
    target: str = "arm"
    int8: str = "off"
    binary_layers: list = dataclasses.field(default_factory=list)
    bconv_ops: int = 0
    bitpacked_bconv_ops: int = 0
    unconverted_layers: dict = dataclasses.field(default_factory=dict)
    float_convs_fed_by_binarizer: list = dataclasses.field(default_factory=list)
    op_counts: dict = dataclasses.field(default_factory=dict)
    max_abs_diff: float = None
    mismatch_fraction: float = None
    top1_agreement: float = None
    num_samples: int = 0
    atol: float = None
    rtol: float = None
    forced_max_abs_diff: float = None
    flipped_bits: dict = dataclasses.field(default_factory=dict)
    first_flip: tuple = None
    max_flip_margin: float = None
    notes: list = dataclasses.field(default_factory=list)
    flatbuffer: bytes = dataclasses.field(default=b"", repr=False)

    @property
    def binarization_ok(self):
        """True if every binary layer became an `LceBconv2d` and no float conv reads a binarizer."""
        return (
            self.bconv_ops == len(self.binary_layers)
            and not self.unconverted_layers
            and not self.float_convs_fed_by_binarizer
        )

    def _flip_line(self):
        if not self.binary_layers:
            return "  binarized inputs     none (no binary layer)"
        if self.first_flip is None:
            return "  binarized inputs     identical in every binary layer"
        layer, bits = self.first_flip
        return (
            f"  binarized inputs     {sum(self.flipped_bits.values())} bit(s) rounded the other "
            f"way in {len(self.flipped_bits)} layer(s), first {layer} ({bits}); largest "
            f"|x| there {self.max_flip_margin:.1g} of the layer's range; with LCE's bits "
            f"Keras matches to {self.forced_max_abs_diff:.3g}"
        )

    def to_dict(self):
        """The report as JSON-ready data (without the flatbuffer bytes)."""
        data = dataclasses.asdict(self)
        del data["flatbuffer"]
        data["binarization_ok"] = self.binarization_ok
        return data

    def __str__(self):
        size = (
            f"{self.file_size / 1e6:.2f} MB"
            if self.file_size >= 1e5
            else f"{self.file_size / 1e3:.1f} kB"
        )
        lines = [
            f"LCE conversion report: {self.path or '(not written)'}",
            f"  file size            {size} ({self.file_size} bytes), "
            f"target {self.target}, int8 {self.int8}",
            f"  binary layers        {len(self.binary_layers)} in the model",
            f"  LceBconv2d ops       {self.bconv_ops} in the file "
            f"({self.bitpacked_bconv_ops} with bitpacked output)",
            f"  LceQuantize          {self.op_counts.get('LceQuantize', 0)}, "
            f"LceDequantize {self.op_counts.get('LceDequantize', 0)}, "
            f"float convs fed by a binarizer {len(self.float_convs_fed_by_binarizer)}",
            "  ops                  " + ", ".join(f"{k} {v}" for k, v in self.op_counts.items()),
        ]
        if self.max_abs_diff is None:
            lines.append("  max |Keras - LCE|    not verified")
        else:
            lines.append(
                f"  max |Keras - LCE|    {self.max_abs_diff:.3g} over {self.num_samples} samples "
                f"(tolerance {self.atol:g} + {self.rtol:g} * max|y|, "
                f"{100 * self.mismatch_fraction:.2f}% of outputs above it)"
            )
            if self.top1_agreement is not None:
                lines.append(f"  top-1 agreement      {100 * self.top1_agreement:.1f}%")
            lines.append(self._flip_line())
        for name, reason in self.unconverted_layers.items():
            lines.append(f"  NOT BINARY: {name}: {reason}")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)
