"""A trained model as one self-describing folder, ``save_pretrained``'s format (``sparse-cbm/1``)::

    sparse_cbm.json      what is where, the classes, the backbone to build and how
    backbone.json        the backbone manifest: identity (checkpoint sha256), preprocessing, logit scale
    concepts.txt         the concept list the CBM was trained on (its sha256 is checked on load)
    cbm/                 weights.safetensors + config.json (the pipeline's data/model, as written)
    spatial/             the SALF-CBM, when trained (data/spatial/model)
    backbone/<file>      the CLIP checkpoint, when it is a local file (an open_clip tag or hf-hub id is named)
    features/<file>      SALF-CBM's torchvision feature weights, when a local file
    gallery/             a few test images with their labels, for the explorer (optional)
    README.md            a model card

Loading needs nothing from the project that wrote it, and checks what it can: the checkpoint's sha256
against the one the CBM was trained on, the concept list's, the feature maps' identity.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from PIL import Image

from sparse_cbm.runtime.atomic import atomic_directory, atomic_write_json, atomic_write_text
from sparse_cbm.trained.images import ModelInputError

log = logging.getLogger(__name__)

MANIFEST, FORMAT = "sparse_cbm.json", "sparse-cbm/1"


class FolderGallery:
    """Images saved beside a model: ``gallery/index.json`` lists ``{"file", "label"}``."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.items: List[Dict[str, str]] = json.loads((self.folder / "index.json").read_text(encoding="utf-8"))
        self.name = "saved gallery"

    def __len__(self) -> int:
        return len(self.items)

    def image(self, i: int) -> Image.Image:
        return Image.open(self.folder / self.items[i]["file"]).convert("RGB")

    def label(self, i: int) -> str:
        return self.items[i]["label"]


def _copy_local(path: Optional[str], dest: Path) -> Optional[str]:
    """Copy a local weights file into ``dest`` (a folder); its name relative to the model folder."""
    if not path or not Path(path).is_file():
        return None
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(path, dest / Path(path).name)
    return f"{dest.name}/{Path(path).name}"


def gallery_rows(labels: np.ndarray, count: int) -> List[int]:
    """``count`` rows taking the classes in turn (the first image of each class, then the second...)."""
    by_class = [list(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    rows: List[int] = []
    while len(rows) < count and any(by_class):
        for members in by_class:
            if members and len(rows) < count:
                rows.append(int(members.pop(0)))
    return rows


def _write_gallery(model, dest: Path, count: int) -> Optional[str]:
    from sparse_cbm.errors import SparseCbmError

    if not count or model.gallery is None:
        return None
    try:
        size = len(model.gallery)
    except SparseCbmError as exc:  # the project's dataset is not on this machine: save the model without images
        log.warning("saving without a gallery: %s", exc)
        return None
    if not size:
        return None
    dest.mkdir(parents=True)
    labels = np.array([model.classes.index(model.gallery.label(i)) for i in range(len(model.gallery))])
    items = []
    for k, row in enumerate(gallery_rows(labels, count)):
        name = f"{k:04d}.png"
        model.gallery.image(row).save(dest / name, optimize=False)
        items.append({"file": name, "label": model.gallery.label(row)})
    atomic_write_json(dest / "index.json", items)
    return "gallery"


def model_card(model, manifest: Dict[str, Any]) -> str:
    fc = model.cbm.model.fc
    nec = getattr(fc, "nec", None)
    lines = [f"# A Sparse Concept Bottleneck Model ({FORMAT})", "",
             f"- {len(model.classes)} classes: {', '.join(model.classes[:10])}{' ...' if len(model.classes) > 10 else ''}",
             f"- {len(model.concepts)} concepts; objective {model.config.get('loss')} ({model.config.get('train', {}).get('form')} form), "
             f"{model.config.get('train', {}).get('final_layer')} final layer" + (f", NEC {nec:.1f}" if nec is not None else ""),
             f"- backbone: {manifest['backbone']['model']} ({manifest['backbone']['pretrained']})",
             f"- SALF-CBM: {'yes, ' + str(len(model.spatial_concepts)) + ' concepts' if model.spatial is not None else 'no'}",
             "", "```python", "from sparse_cbm import SparseCBM", "",
             "model = SparseCBM.from_pretrained(\"<this folder>\")",
             "print(model.explain(\"image.png\"))", "```", ""]
    return "\n".join(lines)


def save_folder(model, folder: Path, gallery: int = 0) -> Path:
    from sparse_cbm.bottleneck.checkpoint import save_bottleneck
    from sparse_cbm.spatial.checkpoint import save_spatial
    from sparse_cbm.storage.text_cache import concept_list_text

    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or (any(folder.iterdir()) and not (folder / MANIFEST).is_file())):
        raise ModelInputError(f"{folder} exists and is not a saved model: give a new folder (nothing was written)")
    with atomic_directory(folder) as tmp:
        src = model.source["backbone"]
        checkpoint = _copy_local(src["pretrained"], tmp / "backbone")
        backbone = {"model": src["model"], "precision": src["precision"], "device": src["device"],
                    "seed": src.get("seed", 0),
                    "pretrained": src["pretrained"] if checkpoint is None else None, "checkpoint": checkpoint}
        (tmp / "cbm").mkdir()
        save_bottleneck(tmp / "cbm", model.cbm.model, model.config)
        atomic_write_text(tmp / "concepts.txt", concept_list_text(model.concept_list))
        atomic_write_json(tmp / "backbone.json", {
            "identity": model.backbone.identity, "preprocess": model.backbone.preprocess_description,
            "logit_scale": model.backbone.logit_scale, "embed_dim": model.backbone.embed_dim})
        spatial = None
        if model.spatial is not None:
            (tmp / "spatial").mkdir()
            save_spatial(tmp / "spatial", model.spatial, model.spatial_config)
            f = dict(model.source["spatial_features"])
            copied = _copy_local(f.get("weights"), tmp / "features")
            spatial = {"folder": "spatial", "features": {**f, "weights": copied or f.get("weights"),
                                                         "weights_in_folder": copied is not None}}
        manifest = {"format": FORMAT, "classes": model.classes, "backbone": backbone, "cbm": "cbm",
                    "batch_size": model.batch_size, "point_radius": model.point_radius,
                    "concepts": "concepts.txt", "spatial": spatial, "gallery": _write_gallery(model, tmp / "gallery", gallery),
                    "sparse_cbm_version": _version()}
        atomic_write_json(tmp / MANIFEST, manifest)
        atomic_write_text(tmp / "README.md", model_card(model, {"backbone": {
            "model": src["model"], "pretrained": checkpoint or src["pretrained"]}}))
    return folder


def _version() -> str:
    from sparse_cbm import __version__

    return __version__


def load_folder(cls, folder: Path, device: Optional[str] = None):
    """The saved model; a damaged or incomplete folder is a ModelInputError naming what is wrong. (A checkpoint is
    a torch pickle: load only folders you trust, as with any PyTorch checkpoint.)"""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelInputError(f"{folder / MANIFEST} is damaged ({exc}): save the model again") from None
    if manifest.get("format") != FORMAT:
        raise ModelInputError(f"{folder / MANIFEST} is format {manifest.get('format')!r}; this version reads {FORMAT!r}")
    try:
        return _load(cls, folder, manifest, device)
    except (FileNotFoundError, KeyError, ValueError) as exc:
        what = f"{type(exc).__name__}: {exc}" if not isinstance(exc, FileNotFoundError) else f"missing {exc.filename}"
        raise ModelInputError(f"{folder} is an incomplete or damaged saved model ({what}): save the model again") from None


def _inside(folder: Path, relative: str) -> Path:
    """A path the manifest names, refused when it leads out of the model's folder."""
    path = (folder / relative).resolve()
    if folder.resolve() not in path.parents:
        raise ModelInputError(f"{folder / MANIFEST} names {relative!r}, outside the folder")
    return path


def _load(cls, folder: Path, manifest: Dict[str, Any], device: Optional[str]):
    from sparse_cbm.bottleneck.checkpoint import load_bottleneck
    from sparse_cbm.clip.backbone import load_backbone
    from sparse_cbm.spatial.checkpoint import load_spatial
    from sparse_cbm.spatial.features import feature_backbone
    from sparse_cbm.storage.text_cache import concept_list_sha256

    bb = manifest["backbone"]
    pretrained = str(_inside(folder, bb["checkpoint"])) if bb.get("checkpoint") else bb["pretrained"]
    torch.manual_seed(int(bb.get("seed", 0)))  # random weights ('none') are the seeded ones the pipeline drew
    backbone = load_backbone(bb["model"], pretrained, device=device or bb["device"], precision=bb["precision"])
    recorded = json.loads((folder / "backbone.json").read_text(encoding="utf-8"))
    if recorded["preprocess"] != backbone.preprocess_description:
        log.warning("the backbone's preprocessing differs from the one the model was saved with (another "
                    "open_clip version?):\nsaved: %s\nnow:   %s", recorded["preprocess"], backbone.preprocess_description)
    concepts = _inside(folder, manifest["concepts"]).read_text(encoding="utf-8").splitlines()
    bottleneck, config = load_bottleneck(_inside(folder, manifest["cbm"]), expect_concepts_sha256=concept_list_sha256(concepts),
                                         expect_backbone=backbone.identity)
    spatial = spatial_config = features = None
    source = {"backbone": {"model": bb["model"], "pretrained": pretrained, "precision": bb["precision"],
                           "device": bb["device"], "seed": bb.get("seed", 0)}}
    if manifest.get("spatial"):
        f = dict(manifest["spatial"]["features"])
        if f.pop("weights_in_folder", False):
            f["weights"] = str(_inside(folder, f["weights"]))
        spatial, spatial_config = load_spatial(_inside(folder, manifest["spatial"]["folder"]))
        features = feature_backbone(f["backbone"], f.get("weights"), f["layer"], backbone, f.get("dense", False))
        check_features(features, spatial_config, folder)
        source["spatial_features"] = f
    gallery = FolderGallery(_inside(folder, manifest["gallery"])) if manifest.get("gallery") else None
    return cls(backbone, bottleneck, config, concepts, source, spatial, spatial_config, features, gallery,
               batch_size=manifest.get("batch_size", 64), point_radius=manifest.get("point_radius", 9 / 64))


def check_features(features, spatial_config: Dict[str, Any], where: Path) -> None:
    if features.identity != spatial_config["features"]:
        raise ModelInputError(f"the SALF-CBM in {where} was trained on the feature maps of {spatial_config['features']}, "
                              f"but the backbone gives {features.identity}")
