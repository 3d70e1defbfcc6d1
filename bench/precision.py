"""Benchmark of what ``backbone.precision: fp64`` costs, measured in one run.

The embedded world computes its caches in float64 so that their float16 bytes do not depend on
the CPU's kernel set (docs/reproducibility.md). For the world CLIP (the default ``backbone``)
and SALF-CBM's prompting CLIP (``spatial.prompts``; null: the same), on the same preprocessed
batch, in this process: images/s of the image embedding (embed_images) and copies/s of the prompted
embedding (embed_prompted: grid^2 ringed copies an image), in fp32 and in fp64, and their ratio.

Usage: python bench/precision.py [--images 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import best_of, prompting_clip  # noqa: E402
from sparse_cbm.clip.backbone import load_backbone  # noqa: E402
from sparse_cbm_app.params import Params  # noqa: E402
from sparse_cbm.spatial.prompts import PromptedCopies  # noqa: E402

SMOKE_ARGS = ["--images", "1", "--repeats", "1"]  # a tiny run for the unit tier (tests/unit/test_bench.py)
WHAT = ("image embedding", "prompted embedding")


def clip_of(what: str):
    """The default params' CLIP for ``what``: the backbone, or SALF-CBM's prompting CLIP when one is set."""
    params = Params()
    return prompting_clip(params) if what == "prompted embedding" else params.backbone


def rate(what: str, precision: str, images: int, repeats: int) -> float:
    """Images/s (image embedding) or copies/s (prompted embedding)."""
    s = Params().spatial
    clip = clip_of(what)
    backbone = load_backbone(clip.model, str(REPO / clip.pretrained), device="cpu", precision=precision)
    batch = torch.randn(images, *backbone.blank_input.shape)
    with torch.inference_mode():
        if what == "image embedding":
            return images / best_of(lambda: backbone.encode_images(batch), repeats)
        prompts = PromptedCopies(backbone, s.grid, s.radius, s.line_width, s.colour)
        return images * prompts.per_image / best_of(lambda: prompts(batch), repeats)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"batches of {args.images} images, {torch.get_num_threads()} threads, "
          f"kernels {torch.backends.cpu.get_cpu_capability()}; best of {args.repeats}")
    for what in WHAT:
        fp32, fp64 = (rate(what, p, args.images, args.repeats) for p in ("fp32", "fp64"))
        unit = "images/s" if what == "image embedding" else "copies/s"
        print(f"  {what:<18}: fp32 {fp32:9.1f} {unit} | fp64 {fp64:9.1f} {unit} | ratio fp64 / fp32 {fp64 / fp32:.2f} "
              f"({clip_of(what).model})")


if __name__ == "__main__":
    main()
