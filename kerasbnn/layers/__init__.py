"""Quantized Keras 3 layers with larq's API."""

from kerasbnn.layers.base import QuantizerMixin
from kerasbnn.layers.conv import QuantConv2D

__all__ = ["QuantizerMixin", "QuantConv2D"]
