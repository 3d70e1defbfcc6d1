"""``sparse-cbm explain IMAGE``: SALF-CBM's Explain Anything and local editing, for people.

The trained SALF-CBM (``--model``; the pipeline's by default, dvc.yaml's ``paths.spatial_model``, made by
``dvc repro``) predicts the image, ranks
the concepts of a region (``--box X0,Y0,X1,Y1``, ``--point X,Y`` or ``--mask PNG``; the whole
image without one) and writes the image with the heatmaps of those concepts. ``--edit
CONCEPT=BETA`` (repeatable) raises that concept's map by BETA standard deviations inside the
region and prints the new prediction. The backbone is the one ``params.yaml`` names.

Coordinates are pixels of IMAGE. The backbone sees the centred square of the image (its
preprocessing resizes the shorter side and crops the centre), so a region outside that square
is cut to it.
"""

from __future__ import annotations

import argparse
import difflib
import json
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from sparse_cbm_app.cli.pipeline import pipeline_path
from sparse_cbm.errors import SparseCbmError


class ExplainError(SparseCbmError):
    """Bad input to ``sparse-cbm explain``."""


def _numbers(text: str, count: int, flag: str) -> List[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != count:
        raise ExplainError(f"{flag} {text!r}: give {count} comma-separated numbers, e.g. "
                           f"{'10,10,40,40' if count == 4 else '32,20'}")
    return values


def parse_edits(pairs: List[str], concepts: List[str]) -> Dict[int, float]:
    """``CONCEPT=BETA`` pairs -> {concept index: beta}; an unknown concept names the closest ones."""
    out: Dict[int, float] = {}
    for pair in pairs:
        name, sep, beta = pair.rpartition("=")
        try:
            value = float(beta)
        except ValueError:
            sep = ""
        if not sep or not name:
            raise ExplainError(f"--edit {pair!r}: write CONCEPT=BETA, e.g. --edit 'round=-3'")
        if name not in concepts:
            close = difflib.get_close_matches(name, concepts, n=5, cutoff=0.5)
            raise ExplainError(f"--edit: {name!r} is not a concept of this SALF-CBM"
                               + (f"; did you mean {', '.join(map(repr, close))}?" if close else
                                  f" (it has {len(concepts)} concepts)"))
        out[concepts.index(name)] = value
    return out


def square_view(region: np.ndarray) -> np.ndarray:
    """The centred square of a region (H, W), as the backbone's preprocessing crops the image."""
    h, w = region.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return region[top:top + side, left:left + side]


def region_from(args: argparse.Namespace, size: Tuple[int, int], radius: float) -> Tuple[np.ndarray, str]:
    from sparse_cbm.spatial.regions import box_region, mask_region, point_region

    given = [flag for flag in ("box", "point", "mask") if getattr(args, flag) is not None]
    if len(given) > 1:
        raise ExplainError(f"give one region, not {' and '.join('--' + g for g in given)}")
    try:
        if args.box is not None:
            return box_region(size, _numbers(args.box, 4, "--box")), f"box {args.box}"
        if args.point is not None:
            return point_region(size, _numbers(args.point, 2, "--point"), radius), f"point {args.point}"
        if args.mask is not None:
            return mask_region(size, args.mask), f"mask {args.mask}"
    except (ValueError, FileNotFoundError) as exc:
        raise ExplainError(str(exc)) from exc
    return np.ones(size, dtype=np.float32), "whole image"


def heatmap_figure(image, maps: np.ndarray, titles: List[str], region: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 1 + len(maps), figsize=(2.2 * (1 + len(maps)), 2.4), squeeze=False)
    axes[0][0].imshow(image)
    axes[0][0].contour(region, levels=[0.5], colors="cyan", linewidths=1)
    axes[0][0].set_title("image and region", fontsize=7)
    for ax, heat, title in zip(axes[0][1:], maps, titles):
        ax.imshow(image)
        ax.imshow(heat, cmap="magma", alpha=0.6)
        ax.set_title(title, fontsize=7)
    for ax in axes[0]:
        ax.set_axis_off()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight", dpi=130, metadata={"Software": None})
    plt.close(fig)


def explain(args: argparse.Namespace) -> int:
    from sparse_cbm.clip.backbone import load_backbone
    from sparse_cbm.datasets.imagefolder import load_rgb
    from sparse_cbm_app.params import load_params
    from sparse_cbm.spatial.checkpoint import load_spatial
    from sparse_cbm.spatial.features import feature_backbone
    from sparse_cbm.spatial.heatmaps import upsample
    from sparse_cbm.spatial.regions import explain_region

    if not Path(args.image).is_file():
        raise ExplainError(f"no image at {args.image}")
    params = load_params(args.params)
    if args.model is None:
        args.model = pipeline_path("spatial_model")
    model, config = load_spatial(args.model)
    concepts, classes = config["concepts"], config["classes"]
    edits = parse_edits(args.edit, concepts)
    bb, f = params.backbone, params.spatial.features
    torch.manual_seed(params.seed)
    features = feature_backbone(f.backbone, f.weights, f.layer,
                                load_backbone(bb.model, bb.pretrained, device=bb.device, precision=bb.precision))
    if features.identity != config["features"]:
        raise ExplainError(f"{args.model} was trained on the feature maps of {config['features']}, params.yaml "
                           f"names {features.identity}: run `dvc repro` (or give the matching --params)")
    image = load_rgb(args.image)
    region, described = region_from(args, (image.height, image.width), params.spatial.radius)
    region = square_view(region)
    if region.sum() == 0:
        raise ExplainError(f"the {described} lies outside the centred square the backbone sees")
    side = min(image.size)
    view = image.crop(((image.width - side) // 2, (image.height - side) // 2,
                       (image.width - side) // 2 + side, (image.height - side) // 2 + side))
    x = features.encode(features.preprocess(image)[None])
    result = explain_region(model, x, region, k=args.top, edits=edits)
    top = [m for m, _ in result.concepts]
    with torch.no_grad():
        heat = upsample(model.standardised(model.concept_maps(x))[:, top], region.shape)[0].numpy()
    out = Path(args.out)
    heatmap_figure(np.asarray(view), heat, [concepts[m] for m in top], region, out)
    report = {"image": str(args.image), "region": described,
              "prediction": {"class": classes[result.prediction],
                             "probability": round(result.probabilities[result.prediction], 4)},
              "concepts": [{"concept": concepts[m], "score": round(s, 4)} for m, s in result.concepts],
              "heatmaps": str(out)}
    if edits:
        report["edit"] = {"concepts": {concepts[m]: b for m, b in edits.items()},
                          "prediction": {"class": classes[result.edited_prediction],
                                         "probability": round(result.edited_probabilities[result.edited_prediction], 4)},
                          "changed": result.edited_prediction != result.prediction}
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


def render(report: Dict) -> str:
    p = report["prediction"]
    lines = [f"{report['image']}: {p['class']} ({p['probability']:.1%})", f"top concepts of the {report['region']}:"]
    lines += [f"  {c['score']:+7.3f}  {c['concept']}" for c in report["concepts"]]
    if "edit" in report:
        e = report["edit"]
        edits = ", ".join(f"{k}{v:+g} sd" for k, v in e["concepts"].items())
        lines.append(f"after the edit ({edits} in the region): {e['prediction']['class']} "
                     f"({e['prediction']['probability']:.1%}){'' if e['changed'] else ', unchanged'}")
    lines.append(f"heatmaps: {report['heatmaps']}")
    return "\n".join(lines)


def add_parser(sub) -> None:
    p = sub.add_parser("explain", help="SALF-CBM: the prediction and the concepts of a region of an image, "
                                       "their heatmaps, and local edits", description=__doc__.split("\n\n")[1])
    p.add_argument("image")
    p.add_argument("--box", metavar="X0,Y0,X1,Y1")
    p.add_argument("--point", metavar="X,Y", help="a disc of spatial.radius pixels around the point")
    p.add_argument("--mask", metavar="PNG", help="an image whose white pixels are the region")
    p.add_argument("--edit", action="append", default=[], metavar="CONCEPT=BETA",
                   help="raise CONCEPT's map by BETA standard deviations in the region (negative lowers it)")
    p.add_argument("--top", type=int, default=3, help="concepts listed (default 3)")
    p.add_argument("--out", default="explain.png", help="the image with the heatmaps (default explain.png)")
    p.add_argument("--model", help="a trained SALF-CBM (default: the pipeline's, paths.spatial_model in dvc.yaml)")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--json", action="store_true", help="print JSON for machines")
    p.set_defaults(run=explain)

