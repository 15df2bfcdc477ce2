"""The one place the kerasbnn version string lives."""

__version__ = "0.1.0"
"""The version of kerasbnn (PEP 440), read by the packaging and by `kerasbnn.__version__`."""
