"""The package version, in a leaf module that imports nothing, so any module can read it without a cycle."""

__version__ = "0.4.0"
