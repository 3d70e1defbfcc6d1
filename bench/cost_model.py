"""The cost of embedding ImageNet, from measurements: what a CPU run takes, and what 1, 8 and 64 GPUs would.

For each CLIP image tower (open_clip, random weights: the cost does not depend on them), at 224 px:

* FLOPs per image of one forward (``torch.utils.flop_counter``, a multiply-add counted as 2);
* images/s on this CPU (float32, best of ``--repeats``, ``--batch`` images a batch);
* bytes of cache per image: the embedding (fp16 ``dim``), SALF-CBM's prompted copies (grid^2 of them),
  and its feature maps (the last block's patch tokens, ``h * w * width`` fp16);

then, at ImageNet's shape (1,281,167 train images; every one embedded plainly, and grid^2 = 49 ringed
copies of each for SALF-CBM), the hours on this CPU and on 1, 8 and 64 GPUs from the published
inference throughput of an A100 and an H100 (``PUBLISHED``, with its source), and the disk. The GPU
hours assume the shards scale linearly (the workers meet twice a split and share nothing else;
``bench/sharded.py`` measured 1.88 of 2 on CPU workers) and that decoding keeps up.

Usage: python bench/cost_model.py [--archs ViT-B-32 ViT-L-14] [--batch 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import best_of  # noqa: E402

SMOKE_ARGS = ["--archs", "ViT-B-32", "--batch", "1", "--repeats", "1"]  # a tiny run for the unit tier

IMAGENET_TRAIN = 1_281_167
GRID = 7  # SALF-CBM's prompt grid on ImageNet (the paper's best): 49 ringed copies an image
GPUS = (1, 8, 64)
# Published inference throughput, images/s on one GPU. A100: clip-retrieval's benchmark (rom1504/clip-retrieval,
# its guide distributed_clip_inference.md, "Some benchmarks": one node of 8 A100s on AWS, S3 in and out, fp16; the
# figures are for one GPU, end to end: they include decoding and resizing, which bound ViT-B/32, so they
# overstate the cost of the tower alone). H100: we found no published figure for CLIP inference; the
# estimate is the A100's times 1.67, the ratio of CLIP training throughput on a DGX H100 to a DGX A100 in
# NVIDIA's NeMo CLIP performance table (935 / 559 samples/s; docs.nvidia.com/nemo-framework, multimodal
# models, CLIP, performance).
H100_OVER_A100 = 935 / 559
CLIP_RETRIEVAL = "clip-retrieval's distributed_clip_inference.md, one A100, end to end"
PUBLISHED = {
    "ViT-B-32": {"A100": (2500.0, CLIP_RETRIEVAL),
                 "H100": (2500.0 * H100_OVER_A100, "estimate: the A100's x 1.67 (NeMo CLIP training, H100 / A100)")},
    "ViT-L-14": {"A100": (312.0, CLIP_RETRIEVAL),
                 "H100": (312.0 * H100_OVER_A100, "estimate: the A100's x 1.67 (NeMo CLIP training, H100 / A100)")},
}


def measure(arch: str, batch: int, repeats: int) -> dict:
    import open_clip
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    visual = open_clip.create_model(arch, pretrained=None).visual.eval()
    size = visual.image_size[0] if isinstance(visual.image_size, tuple) else int(visual.image_size)
    x = torch.randn(batch, 3, size, size)
    # Counted in train mode (CLIP's dropouts are 0): in eval mode nn.MultiheadAttention takes a fused fast
    # path whose projections the counter does not see. Attention's score products (SDPA) are not counted
    # either, about 1% (B/32) and 4% (L/14): open_clip's docs/model_profile.csv lists 8.82 and 162.03 GFLOP.
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        visual.train()(x[:1])
    visual.eval()
    with torch.inference_mode():
        seconds = best_of(lambda: visual(x), repeats)
    grid = size // (visual.patch_size[0] if isinstance(visual.patch_size, tuple) else visual.patch_size)
    width = visual.transformer.width
    dim = visual.output_dim
    return {"arch": arch, "size": size, "flops": counter.get_total_flops(), "rate": batch / seconds,
            "bytes": {"embedding": dim * 2, "prompted": GRID * GRID * dim * 2, "features": grid * grid * width * 2},
            "tokens": f"{grid}x{grid}x{width}"}


def duration(forwards: float, rate: float) -> str:
    """How long ``forwards`` take at ``rate`` a second, in the unit that reads best."""
    seconds = forwards / rate
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:,.0f} days"


def report(m: dict) -> None:
    arch = m["arch"]
    print(f"{arch} at {m['size']} px: {m['flops'] / 1e9:.2f} GFLOP an image | this CPU {m['rate']:.2f} img/s "
          f"(fp32) | cache an image: embedding {m['bytes']['embedding']:,} B, prompted copies "
          f"{m['bytes']['prompted']:,} B, feature maps ({m['tokens']}) {m['bytes']['features']:,} B")
    copies = GRID * GRID
    jobs = {"embeddings (embed_images, 1 forward an image)": (IMAGENET_TRAIN, m["bytes"]["embedding"]),
            f"SALF prompted copies (embed_prompted, {copies} forwards an image)":
                (IMAGENET_TRAIN * copies, m["bytes"]["prompted"]),
            "SALF feature maps (embed_features, 1 forward an image)": (IMAGENET_TRAIN, m["bytes"]["features"])}
    for job, (forwards, per_image) in jobs.items():
        row = [f"  {job}: {forwards * m['flops'] / 1e15:,.0f} PFLOP | disk {IMAGENET_TRAIN * per_image / 1e9:,.1f} GB "
               f"| this CPU {duration(forwards, m['rate'])}"]
        for gpu, (rate, _) in PUBLISHED.get(arch, {}).items():
            row.append(f"{gpu} x " + " / ".join(map(str, GPUS)) + ": "
                       + " / ".join(duration(forwards, rate * n) for n in GPUS))
        print(" | ".join(row))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--archs", nargs="+", default=["ViT-B-32", "ViT-L-14"])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; ImageNet train {IMAGENET_TRAIN:,} images, "
          f"prompt grid {GRID}")
    for arch in args.archs:
        report(measure(arch, args.batch, args.repeats))
    for arch, gpus in PUBLISHED.items():
        for gpu, (rate, source) in gpus.items():
            print(f"published: {arch} on {gpu}: {rate:,.0f} img/s ({source})")


if __name__ == "__main__":
    main()
