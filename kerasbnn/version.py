"""The one place the kerasbnn version string lives."""

__version__ = "0.1.0"
