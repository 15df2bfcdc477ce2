"""Utilities: `summary` (bit widths, memory and operation counts of a model),
`recalibrate_batch_norm` and `precise_batch_norm` (precise BatchNormalization statistics after
training)."""

from kerasbnn.utils.batch_norm import (PRECISE_BN_BATCH, batch_norm_layers, precise_batch_norm,
                                       recalibrate_batch_norm)
from kerasbnn.utils.summary import summary

__all__ = ["PRECISE_BN_BATCH", "batch_norm_layers", "precise_batch_norm",
           "recalibrate_batch_norm", "summary"]
