"""Benchmark of SALF-CBM's prompted embedding against the bare forward, measured in one run.

For the prompting CLIP of the defaults (``spatial.prompts``: the ring-taught shapes CLIP) (and, with ``--vit``, ViT-B-32 with random weights at 224 px), on
this machine, the same preprocessed batch of ``grid^2`` x B copies:

* bare forward: the backbone's ``encode_images`` on ready copies (copies/s);
* prompted: ``PromptedCopies`` on the B images, which draws the rings and runs the same forward
  (copies/s);
* their ratio (target: prompted >= 0.8 x bare forward);
* the prompted-copy cache size per 1,000 images (fp16, grid^2 x d numbers an image).

Usage: python bench/prompted.py [--images 64] [--repeats 5] [--vit]
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


def measure(model: str, pretrained: str, images: int, repeats: int) -> None:
    s = Params().spatial
    torch.manual_seed(0)
    backbone = load_backbone(model, pretrained, device="cpu", precision="fp32")
    prompts = PromptedCopies(backbone, s.grid, s.radius, s.line_width, s.colour)
    batch = torch.randn(images, *backbone.blank_input.shape)
    copies = prompts.rings.draw(batch)
    with torch.inference_mode():
        bare = best_of(lambda: [backbone.encode_images(copies[lo:lo + prompts.chunk])
                                for lo in range(0, len(copies), prompts.chunk)], repeats)
        prompted = best_of(lambda: prompts(batch), repeats)
    n = len(copies)
    dim = int(prompts(batch[:1]).shape[-1])
    print(f"{model} ({pretrained}), {images} images x {prompts.per_image} copies, input "
          f"{tuple(backbone.blank_input.shape)}:")
    print(f"  bare forward       {n / bare:9.1f} copies/s")
    print(f"  prompted           {n / prompted:9.1f} copies/s")
    print(f"  ratio prompted / bare forward: {bare / prompted:.3f} (target >= 0.8)")
    print(f"  prompted-copy cache: {prompts.per_image * dim * 2 * 1000 / 1e6:.1f} MB per 1,000 images "
          f"({prompts.per_image} x {dim} fp16)")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--vit", action="store_true", help="also ViT-B-32 with random weights (slow on a CPU)")
    args = ap.parse_args(argv)
    params = Params()
    prompts = prompting_clip(params)
    measure(prompts.model, str(REPO / prompts.pretrained), args.images, args.repeats)
    if args.vit:
        measure("ViT-B-32", "none", max(1, args.images // 16), args.repeats)


if __name__ == "__main__":
    main()
