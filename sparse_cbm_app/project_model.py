"""``SparseCBM.from_pretrained(project)``: the trained model of a project that ran ``dvc repro``, built from
its params.yaml (the backbone, SALF-CBM's feature maps) and its outputs at the paths dvc.yaml names (the
concept list, ``data/model``, ``data/spatial/model``). Its gallery is the dataset's test split."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from sparse_cbm.errors import CacheMismatchError
from sparse_cbm_app.cli.pipeline import pipeline_paths
from sparse_cbm_app.params import load_params


def _in_project(root: Path, value: Optional[str]) -> Optional[str]:
    """A relative path of params.yaml, read from the project's root (where the stages run)."""
    if value and not Path(value).is_absolute() and (root / value).exists():
        return str(root / value)
    return value


class DatasetGallery:
    """The project's test split, built when first asked for (the shapes world renders on demand)."""

    def __init__(self, root: Path, params):
        self.root, self.params, self._split, self._classes = root, params, None, None
        self.name = "test split"
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            return self._build()

    def _build(self):
        if self._split is None:
            from sparse_cbm.datasets import load_dataset

            d = self.params.dataset  # the test split as stages/common.dataset_from builds it (no corruptions)
            dataset = load_dataset(
                d.name, _in_project(self.root, d.root), seed=self.params.seed, val_fraction=d.val_fraction,
                download=False, class_names_file=_in_project(self.root, d.class_names_file),
                shapes_n_train=d.shapes.n_train, shapes_n_test=d.shapes.n_test, shapes_image_size=d.shapes.image_size,
                shapes_class_attributes=d.shapes.class_attributes, shapes_preset=d.shapes.preset,
                skip_empty_classes=d.skip_empty_classes)
            self._split, self._classes = dataset.splits["test"], dataset.classes
        return self._split

    def __len__(self) -> int:
        return len(self._load())

    def image(self, i: int):
        return self._load().load(int(i))

    def label(self, i: int) -> str:
        split = self._load()
        return self._classes[int(split.labels[int(i)])]

    @property
    def labels(self) -> np.ndarray:
        return self._load().labels


def load_project(cls, root: str | Path, device: Optional[str] = None, params_file: str = "params.yaml"):
    """The project's trained model, or None when ``root`` is not a project (no dvc.yaml): the entry point
    ``sparse_cbm.project_loaders`` through which ``SparseCBM.from_pretrained`` finds it."""
    from sparse_cbm.bottleneck.checkpoint import load_bottleneck
    from sparse_cbm.clip.backbone import load_backbone
    from sparse_cbm.spatial.checkpoint import load_spatial
    from sparse_cbm.spatial.features import feature_backbone
    from sparse_cbm.storage.text_cache import concept_list_sha256
    from sparse_cbm.trained.folder import check_features

    root = Path(root)
    if not (root / "dvc.yaml").is_file():
        return None
    params = load_params(root / params_file)
    paths = pipeline_paths(root)
    concepts_file = root / paths["filtered"] / "concepts.txt"
    if not concepts_file.is_file() or not (root / paths["model"] / "config.json").is_file():
        raise CacheMismatchError(f"{root} has no trained model yet ({paths['model']}): run `dvc repro` there first")
    bb = params.backbone
    pretrained = _in_project(root, bb.pretrained)
    torch.manual_seed(params.seed)  # as the stages build it: random weights ('none') are the seeded ones
    backbone = load_backbone(bb.model, pretrained, device=device or bb.device, precision=bb.precision)
    concepts = concepts_file.read_text(encoding="utf-8").splitlines()
    bottleneck, config = load_bottleneck(root / paths["model"], expect_concepts_sha256=concept_list_sha256(concepts),
                                         expect_backbone=backbone.identity)
    source = {"backbone": {"model": bb.model, "pretrained": pretrained, "precision": bb.precision,
                           "device": device or bb.device, "seed": params.seed}}
    spatial = spatial_config = features = None
    if (root / paths["spatial_model"] / "config.json").is_file():
        f = params.spatial.features
        weights = _in_project(root, f.weights)
        spatial, spatial_config = load_spatial(root / paths["spatial_model"], expect_concepts_sha256=None)
        features = feature_backbone(f.backbone, weights, f.layer, backbone, f.dense, params.spatial.grid)
        check_features(features, spatial_config, root / paths["spatial_model"])
        source["spatial_features"] = {"backbone": f.backbone, "weights": weights, "layer": f.layer,
                                      "dense": bool(features.identity.get("dense", False))}
    side = int(backbone.blank_input.shape[-1])  # spatial.radius is in pixels of the backbone's input
    return cls(backbone, bottleneck, config, concepts, source, spatial, spatial_config, features,
               DatasetGallery(root, params), batch_size=bb.batch_size, point_radius=params.spatial.radius / side)
