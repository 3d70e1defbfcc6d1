"""Sparse Concept Bottleneck Models on CLIP: the library behind the DVC pipeline.

``from sparse_cbm import SparseCBM`` loads a trained pipeline (docs/python-api.md); it is imported on
first use, so the stages, which do not use it, do not pay for it."""

__version__ = "0.1.0"
__all__ = ["SparseCBM"]


def __getattr__(name: str):
    if name == "SparseCBM":
        from sparse_cbm.trained import SparseCBM

        return SparseCBM
    raise AttributeError(f"module 'sparse_cbm' has no attribute {name!r}")
