"""Sparse Concept Bottleneck Models on CLIP: the library behind the DVC pipeline."""

__version__ = "0.1.0"
