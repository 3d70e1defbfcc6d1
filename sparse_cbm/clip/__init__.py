"""The CLIP backbone (open_clip) and the small architectures this package registers."""

PRECISIONS = ("auto", "fp32", "amp")  # auto: mixed precision on CUDA, fp32 elsewhere; amp: CUDA only
