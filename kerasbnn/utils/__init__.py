"""Utilities: `summary` (bit widths, memory and operation counts of a model) and
`recalibrate_batch_norm` (precise BatchNormalization statistics after training)."""

from kerasbnn.utils.batch_norm import batch_norm_layers, recalibrate_batch_norm
from kerasbnn.utils.summary import summary

__all__ = ["batch_norm_layers", "recalibrate_batch_norm", "summary"]
