"""The package version; the native core is compiled with this string and checked against it."""

__version__ = "0.1.0"
