"""``SparseCBM``: a trained pipeline that classifies new images and explains them.

It holds the CLIP backbone, the concept bottleneck with its final layer (the pipeline's CBM) and, when
the project trained it, the SALF-CBM branch (concept maps on the backbone's feature maps). Every number
is computed by the same library code the pipeline's stages run: the CBM is ``BottleneckClassifier``,
its explanations ``explain_images`` (ranked by contribution, weight x activation), the regions and
edits ``spatial.regions.explain_region``. Image embeddings are rounded to float16 as the image cache
stores them, so the model sees a test image exactly as ``evaluate`` did.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from sparse_cbm.bottleneck.model import ConceptBottleneck
from sparse_cbm.classifiers.cbm import BottleneckClassifier
from sparse_cbm.evaluation.explain import RANKINGS, explain_images
from sparse_cbm.trained.images import ModelInputError, as_list, as_pil, is_batch, preprocessed, square_image, square_view


@dataclass
class ConceptScore:
    concept: str
    value: float


@dataclass
class Explanation:
    """One image's decision by the CBM: the class, its probability, and the concepts that decided it."""

    prediction: str
    probability: float
    probabilities: Dict[str, float]
    concepts: List[ConceptScore]  # by contribution to the predicted class, largest first
    ranking: str = RANKINGS["by_contribution"]
    by_activation: List[ConceptScore] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass
class RegionExplanation:
    """SALF-CBM on a region: the prediction, the region's top concepts and, with edits, the prediction after."""

    prediction: str
    probabilities: Dict[str, float]
    concepts: List[ConceptScore]  # region mean of each standardised concept map, largest first
    heatmaps: Dict[str, np.ndarray]  # concept -> its standardised map on the square view (at most 256 px a side)
    ranking: str = "region mean of the standardised concept map"
    edits: Dict[str, float] = field(default_factory=dict)
    edited_prediction: Optional[str] = None
    edited_probabilities: Optional[Dict[str, float]] = None

    @property
    def probability(self) -> float:
        return self.probabilities[self.prediction]


PROJECT_LOADERS = "sparse_cbm.project_loaders"  # entry-point group: loader(cls, folder, device) -> model | None


def project_loaders():
    """The loaders of project folders that installed packages register (``sparse_cbm_app``'s reads a DVC
    project: its params.yaml and the outputs dvc.yaml names)."""
    from importlib.metadata import entry_points

    return [ep.load() for ep in sorted(entry_points(group=PROJECT_LOADERS), key=lambda ep: ep.name)]


REGION_SIDE = 256  # a region and its heatmaps are computed on at most this many pixels a side


class SparseCBM:
    """Load with ``SparseCBM.from_pretrained(folder)``; save with ``save_pretrained(folder)``.

    ``classes``: the class names; ``concepts``: the CBM's concepts (one per bottleneck unit);
    ``spatial_concepts``: SALF-CBM's, or None when the folder has no SALF-CBM."""

    def __init__(self, backbone, bottleneck: ConceptBottleneck, config: Dict[str, Any], concept_list: Sequence[str],
                 source: Dict[str, Any], spatial=None, spatial_config: Optional[Dict[str, Any]] = None,
                 features=None, gallery=None, batch_size: int = 64, point_radius: float = 9 / 64):
        self.backbone, self.config, self.source = backbone, config, source
        self.concept_list = list(concept_list)
        self.classes: List[str] = list(config["classes"])
        self.cbm = BottleneckClassifier(bottleneck, self.concept_list)
        self.concepts: List[str] = self.cbm.concepts
        self.spatial, self.spatial_config, self.features = spatial, spatial_config, features
        self.spatial_concepts: Optional[List[str]] = list(spatial_config["concepts"]) if spatial_config else None
        self.gallery, self.batch_size = gallery, int(batch_size)
        self.point_radius = float(point_radius)  # a clicked point's disc, as a share of the square's side

    # -- loading and saving -------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, folder: str | Path = ".", device: Optional[str] = None) -> "SparseCBM":
        """A project folder that ran ``dvc repro`` (its params.yaml and outputs), or a folder written by
        ``save_pretrained``. ``device`` overrides the backbone's (``cpu``, ``cuda``...)."""
        from sparse_cbm.trained import folder as export

        folder = Path(folder)
        with torch.random.fork_rng(devices=[]):  # the loaders seed torch (random weights); the caller's RNG is left alone
            if (folder / export.MANIFEST).is_file():
                return export.load_folder(cls, folder, device=device)
            for loader in project_loaders():  # a project's layout is its application's: it plugs a loader in
                model = loader(cls, folder, device=device)
                if model is not None:
                    return model
        raise ModelInputError(f"{folder} holds neither a saved model ({export.MANIFEST}) nor a project that ran "
                              f"`dvc repro` (dvc.yaml): give one of them, or a folder written by `sparse-cbm export`")

    def save_pretrained(self, folder: str | Path, gallery: int = 0) -> Path:
        """One self-describing folder (weights, config, concept list, backbone manifest, the backbone's
        checkpoint) that ``from_pretrained`` loads with nothing else; ``gallery`` test images go with it."""
        from sparse_cbm.trained.folder import save_folder

        return save_folder(self, Path(folder), gallery=gallery)

    # -- the CBM --------------------------------------------------------------------------------------------
    def embed(self, images: Any) -> np.ndarray:
        """(B, d) float16 image embeddings, as the pipeline's image cache holds them."""
        if isinstance(images, torch.Tensor):
            items = images if images.ndim == 4 else images[None]
        else:
            items = as_list(images)
        batches = [items[lo:lo + self.batch_size] for lo in range(0, len(items), self.batch_size)]
        out = []
        for batch in tqdm(batches, desc="embedding images", unit="batch", disable=len(batches) < 4):
            x = preprocessed(batch if isinstance(batch, torch.Tensor) else list(batch), self.backbone.preprocess)
            out.append(self.backbone.encode_images(x).numpy().astype(np.float16))
        return np.concatenate(out) if out else np.zeros((0, self.backbone.embed_dim), np.float16)

    def predict_proba(self, images: Any) -> np.ndarray:
        """(B, |C|) class probabilities, columns in the order of ``classes``."""
        from sparse_cbm.classifiers.batched import unit_rows

        with torch.inference_mode():
            return self.cbm.class_scores(unit_rows(self.embed(images))).softmax(1).numpy()

    def predict(self, images: Any) -> List[str]:
        """The predicted class name of each image (the same top-1 as ``evaluate``)."""
        top1, _ = self.cbm.predict(self.embed(images), batch_size=4096, k=5)
        return [self.classes[int(c)] for c in top1]

    def explain(self, images: Any, top: int = 5):
        """An ``Explanation`` per image (one image: one ``Explanation``; a list: a list)."""
        if int(top) < 1:
            raise ModelInputError(f"top must be at least 1, got {top}")
        from sparse_cbm.classifiers.batched import unit_rows

        embeddings = self.embed(images)
        records = explain_images(self.cbm, embeddings, self.classes, top=int(top))
        with torch.inference_mode():
            probs = self.cbm.class_scores(unit_rows(embeddings)).softmax(1)
        out = []
        for record, p in zip(records, probs):
            probabilities = {c: float(v) for c, v in zip(self.classes, p)}
            out.append(Explanation(
                prediction=record["predicted"], probability=probabilities[record["predicted"]],
                probabilities=probabilities,
                concepts=[ConceptScore(r["concept"], r["value"]) for r in record["by_contribution"]],
                by_activation=[ConceptScore(r["concept"], r["value"]) for r in record["by_activation"]]))
        return out if is_batch(images) else out[0]

    # -- SALF-CBM: maps, regions, edits ----------------------------------------------------------------------
    def _require_spatial(self) -> None:
        if self.spatial is None:
            raise ModelInputError("this model has no SALF-CBM branch (the project did not train `train_spatial`)")

    def feature_maps(self, image: Any) -> torch.Tensor:
        """(1, C, h, w) float32 feature maps of one image, float16-rounded as the feature cache holds them."""
        self._require_spatial()
        x = preprocessed(image if isinstance(image, torch.Tensor) else [image], self.features.preprocess)
        if len(x) != 1:
            raise ModelInputError(f"feature_maps takes one image; got a batch of {len(x)}")
        return self.features.encode(x).half().float()

    def concept_index(self, name: str) -> int:
        """SALF-CBM's index of a concept; an unknown one names the closest."""
        self._require_spatial()
        if name not in self.spatial_concepts:
            close = difflib.get_close_matches(name, self.spatial_concepts, n=5, cutoff=0.5)
            raise ModelInputError(f"{name!r} is not a concept of this SALF-CBM" + (
                f"; did you mean {', '.join(map(repr, close))}?" if close else
                f" (it has {len(self.spatial_concepts)} concepts)"))
        return self.spatial_concepts.index(name)

    def explain_region(self, image: Any, region: Optional[np.ndarray] = None, top: int = 3,
                       edits: Optional[Dict[str, float]] = None, features: Optional[torch.Tensor] = None,
                       heatmaps: bool = True) -> RegionExplanation:
        """Explain Anything on ``region`` ((H, W) in [0, 1], pixels of the image; None: the whole image) and,
        with ``edits`` ({concept: beta}), the prediction after raising each concept's map by beta standard
        deviations inside the region. ``features`` reuses maps from ``feature_maps`` (the explorer's cache).
        A tensor image is a preprocessed one; its region is in the tensor's pixels."""
        from sparse_cbm.spatial.heatmaps import upsample
        from sparse_cbm.spatial.regions import explain_region

        self._require_spatial()
        if int(top) < 1:
            raise ModelInputError(f"top must be at least 1, got {top}")
        size = tuple(image.shape[-2:]) if isinstance(image, torch.Tensor) else None
        if size is None:
            pil = as_pil(image)
            image, size = pil, (pil.height, pil.width)
        region = np.ones(size, np.float32) if region is None else np.asarray(region, np.float32)
        if region.shape != size:
            raise ModelInputError(f"the region is {region.shape[1]} x {region.shape[0]}, the image {size[1]} x {size[0]}")
        region = square_view(region)
        if region.sum() == 0:
            raise ModelInputError("the region lies outside the centred square the backbone sees")
        if region.shape[0] > REGION_SIDE:  # scores and heatmaps at most this fine: |D| maps at full size can take GBs
            region = F.adaptive_avg_pool2d(torch.as_tensor(region)[None, None], (REGION_SIDE, REGION_SIDE))[0, 0].numpy()
        indices = {self.concept_index(name): self._beta(name, beta) for name, beta in (edits or {}).items()}
        x = self.feature_maps(image) if features is None else features
        result = explain_region(self.spatial, x, region, k=int(top), edits=indices)
        probs = lambda p: {c: float(v) for c, v in zip(self.classes, p)}  # noqa: E731
        maps: Dict[str, np.ndarray] = {}
        if heatmaps:
            chosen = [m for m, _ in result.concepts]
            with torch.no_grad():
                up = upsample(self.spatial.standardised(self.spatial.concept_maps(x))[:, chosen], region.shape)[0]
            maps = {self.spatial_concepts[m]: heat.numpy() for m, heat in zip(chosen, up)}
        out = RegionExplanation(self.classes[result.prediction], probs(result.probabilities),
                                [ConceptScore(self.spatial_concepts[m], s) for m, s in result.concepts], maps,
                                edits=dict(edits or {}))
        if indices:
            out.edited_prediction = self.classes[result.edited_prediction]
            out.edited_probabilities = probs(result.edited_probabilities)
        return out

    @staticmethod
    def _beta(name: str, beta: float) -> float:
        beta = float(beta)
        if not np.isfinite(beta):
            raise ModelInputError(f"the edit of {name!r} is {beta}: give a finite number of standard deviations")
        return beta

    @staticmethod
    def square(image: Any):
        """The centred square of an image: the part the backbone sees, where regions and maps live."""
        return square_image(as_pil(image))

    def __repr__(self) -> str:
        spatial = f", SALF-CBM on {len(self.spatial_concepts)} concepts" if self.spatial is not None else ""
        return (f"SparseCBM({len(self.classes)} classes, {len(self.concepts)} concepts, "
                f"{self.source['backbone']['model']}{spatial})")
