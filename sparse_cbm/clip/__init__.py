"""The CLIP backbone (open_clip) and the small architectures this package registers."""

# auto: mixed precision on CUDA, fp32 elsewhere; amp: CUDA only; fp64: float64 weights and activations, so that
# the float16 caches do not depend on the CPU's kernel set (docs/reproducibility.md)
PRECISIONS = ("auto", "fp32", "amp", "fp64")
