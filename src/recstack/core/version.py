"""The package version, in the lowest layer so every layer may report it."""

__version__ = "0.1.0"
