"""Utilities: `summary` (bit widths, memory and operation counts of a model)."""

from kerasbnn.utils.summary import summary

__all__ = ["summary"]
