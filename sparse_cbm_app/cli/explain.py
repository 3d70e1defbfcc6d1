"""``sparse-cbm explain IMAGE``: SALF-CBM's Explain Anything and local editing, for people.

The trained model (``--model``: this project after ``dvc repro`` by default, or a folder written by
``sparse-cbm export``; loaded with the Python API, ``SparseCBM.from_pretrained``) predicts the image
with the CBM and with SALF-CBM, ranks SALF-CBM's concepts of a region (``--box X0,Y0,X1,Y1``, ``--point X,Y`` or ``--mask PNG``; the whole
image without one) and writes the image with the heatmaps of those concepts. ``--edit
CONCEPT=BETA`` (repeatable) raises that concept's map by BETA standard deviations inside the
region and prints the new prediction.

Coordinates are pixels of IMAGE. The backbone sees the centred square of the image (its
preprocessing resizes the shorter side and crops the centre), so a region outside that square
is cut to it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from sparse_cbm.trained.images import ModelInputError as ExplainError


def _numbers(text: str, count: int, flag: str) -> List[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != count:
        raise ExplainError(f"{flag} {text!r}: give {count} comma-separated numbers, e.g. "
                           f"{'10,10,40,40' if count == 4 else '32,20'}")
    return values


def parse_edits(pairs: List[str]) -> Dict[str, float]:
    """``CONCEPT=BETA`` pairs -> {concept: beta} (the model checks the concept and that beta is finite)."""
    out: Dict[str, float] = {}
    for pair in pairs:
        name, sep, beta = pair.rpartition("=")
        try:
            value = float(beta)
        except ValueError:
            sep = ""
        if not sep or not name:
            raise ExplainError(f"--edit {pair!r}: write CONCEPT=BETA, e.g. --edit 'round=-3'")
        out[name] = value
    return out


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
    except (ValueError, OSError) as exc:  # a mask that is not an image: PIL's UnidentifiedImageError
        raise ExplainError(f"--mask {args.mask}: {exc}" if args.mask else str(exc)) from None
    return np.ones(size, dtype=np.float32), "whole image"


def heatmap_figure(image, maps: np.ndarray, titles: List[str], region: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 1 + len(maps), figsize=(2.2 * (1 + len(maps)), 2.4), squeeze=False)
    axes[0][0].imshow(image)
    axes[0][0].contour(region, levels=[0.5], colors="cyan", linewidths=1)
    axes[0][0].set_title("image and region", fontsize=7)
    h, w = np.asarray(image).shape[:2]
    for ax, heat, title in zip(axes[0][1:], maps, titles):
        ax.imshow(image)
        ax.imshow(heat, cmap="magma", alpha=0.6, extent=(-0.5, w - 0.5, h - 0.5, -0.5))  # maps are at most 256 px
        ax.set_title(title, fontsize=7)
    for ax in axes[0]:
        ax.set_axis_off()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight", dpi=130, metadata={"Software": None})
    plt.close(fig)


def explain(args: argparse.Namespace) -> int:
    from sparse_cbm.trained import SparseCBM
    from sparse_cbm.trained.images import as_pil, square_view

    if args.top < 1:
        raise ExplainError(f"--top {args.top}: give 1 or more concepts")
    out = Path(args.out)
    if not out.parent.is_dir():
        raise ExplainError(f"--out {out}: the folder {out.parent} does not exist (create it, or give another path)")
    edits = parse_edits(args.edit)
    image = as_pil(args.image)
    model = SparseCBM.from_pretrained(args.model)
    radius = model.point_radius * min(image.size)  # spatial.radius, scaled from the backbone's input to the image
    region, described = region_from(args, (image.height, image.width), radius)
    result = model.explain_region(image, region, top=args.top, edits=edits)
    cbm = model.explain(image, top=args.top)
    heatmap_figure(np.asarray(model.square(image)), np.stack(list(result.heatmaps.values())),
                   list(result.heatmaps), square_view(region), out)
    report = {"image": str(args.image), "region": described,
              "prediction": {"class": result.prediction, "probability": round(result.probability, 4)},
              "concepts": [{"concept": c.concept, "score": round(c.value, 4)} for c in result.concepts],
              "cbm": {"class": cbm.prediction, "probability": round(cbm.probability, 4), "ranking": cbm.ranking,
                      "concepts": [{"concept": c.concept, "contribution": c.value} for c in cbm.concepts]},
              "heatmaps": str(out)}
    if edits:
        report["edit"] = {"concepts": edits,
                          "prediction": {"class": result.edited_prediction,
                                         "probability": round(result.edited_probabilities[result.edited_prediction], 4)},
                          "changed": result.edited_prediction != result.prediction}
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


def render(report: Dict) -> str:
    p = report["prediction"]
    lines = [f"{report['image']}: {p['class']} ({p['probability']:.1%})", f"top concepts of the {report['region']}:"]
    lines += [f"  {c['score']:+7.3f}  {c['concept']}" for c in report["concepts"]]
    cbm = report["cbm"]
    lines.append(f"the CBM: {cbm['class']} ({cbm['probability']:.1%}); its concepts by {cbm['ranking']}:")
    lines += [f"  {c['contribution']:+7.3f}  {c['concept']}" for c in cbm["concepts"]]
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
    p.add_argument("--point", metavar="X,Y", help="a disc around the point (spatial.radius, scaled from the backbone's input to the image)")
    p.add_argument("--mask", metavar="PNG", help="an image whose white pixels are the region")
    p.add_argument("--edit", action="append", default=[], metavar="CONCEPT=BETA",
                   help="raise CONCEPT's map by BETA standard deviations in the region (negative lowers it)")
    p.add_argument("--top", type=int, default=3, help="concepts listed (default 3)")
    p.add_argument("--out", default="explain.png", help="the image with the heatmaps (default explain.png, in the "
                                                        "current folder; its folder must exist)")
    p.add_argument("--model", default=".", help="a project that ran `dvc repro` (default: this one) or a folder "
                                                "written by `sparse-cbm export`")
    p.add_argument("--json", action="store_true", help="print JSON for machines")
    p.set_defaults(run=explain)

