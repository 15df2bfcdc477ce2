"""Export to Larq Compute Engine: convert, audit, verify, inspect, time."""

from kerasbnn.export.inspect import list_ops, op_counts, read_graph
from kerasbnn.export.latency import compare_latency, measure_latency
from kerasbnn.export.lce import (
    BinarizationError,
    ConversionReport,
    ConverterError,
    ExportError,
    VerificationError,
    check_writable,
    convert_saved_model,
    float32_model,
    lce_convert,
)

__all__ = [
    "BinarizationError",
    "ConversionReport",
    "ConverterError",
    "ExportError",
    "VerificationError",
    "check_writable",
    "compare_latency",
    "convert_saved_model",
    "float32_model",
    "lce_convert",
    "list_ops",
    "measure_latency",
    "op_counts",
    "read_graph",
]
