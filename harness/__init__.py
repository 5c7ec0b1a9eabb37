"""Reproducible benchmark and audit harness for brain-tumour MRI models."""

__version__ = "0.2.0"
