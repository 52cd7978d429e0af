"""cnnbench: a reproducible pipeline that compares CNN variants from three lab reports."""

__version__ = "0.1.0"
