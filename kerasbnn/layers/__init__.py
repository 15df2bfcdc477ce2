"""Quantized Keras 3 layers with larq's API."""

from kerasbnn.layers.activations import LearnableBias, RPReLU, ScaledAbs
from kerasbnn.layers.adder import AdderConv2D
from kerasbnn.layers.base import QuantizerMixin
from kerasbnn.layers.conv import SCALINGS, QuantConv2D, QuantDepthwiseConv2D
from kerasbnn.layers.dense import QuantDense

__all__ = ["LearnableBias", "RPReLU", "ScaledAbs", "AdderConv2D", "QuantizerMixin", "QuantConv2D", "QuantDepthwiseConv2D", "QuantDense", "SCALINGS"]
