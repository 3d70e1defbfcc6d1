"""The one typed schema for ``params.yaml``.

Every knob of every stage lives here with its default; ``params.yaml`` holds the
same keys (a test keeps the two equal). Loading casts what YAML or DVC leave as
text (``dvc exp run -S train.lr=0.000001`` writes ``1e-06``, which PyYAML reads as
a string) and fails on an unknown key or a wrong type, naming the key and what
is allowed. The library itself never reads params: stages load them here and
pass plain values on.

Command line::

    python -m sparse_cbm.params check [params.yaml]
    python -m sparse_cbm.params apply params.offline.yaml [--to params.yaml]

``apply`` merges an override file (same nesting, only the keys it changes) into
params.yaml, keeping its comments, after validating the result.
"""

from __future__ import annotations

import argparse
import difflib
import io
import sys
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sparse_cbm.atomic import atomic_write_text
from sparse_cbm.concepts.llm import PAPER_PROMPTS
from sparse_cbm.datasets import DATASETS
from sparse_cbm.errors import ParamsError

SHAPES_CLASS_ATTRIBUTES = ("shape", "colour", "texture", "background")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class ShapesParams(_Strict):
    """The procedural ``shapes`` dataset, made from the top-level seed."""

    n_train: int = Field(480, gt=0)
    n_test: int = Field(240, gt=0)
    image_size: int = Field(64, ge=16, le=1024)
    class_attributes: List[Literal[SHAPES_CLASS_ATTRIBUTES]] = ["shape", "colour"]  # type: ignore[valid-type]

    @field_validator("class_attributes")
    @classmethod
    def _non_empty_unique(cls, v: list) -> list:
        if not v or len(set(v)) != len(v):
            raise ValueError(f"must be a non-empty list of distinct names from {list(SHAPES_CLASS_ATTRIBUTES)}")
        return v


class DatasetParams(_Strict):
    name: Literal[DATASETS] = "cifar10"  # type: ignore[valid-type]
    root: str = "data/datasets"
    download: bool = True
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    class_names_file: Optional[str] = None
    skip_corrupt: bool = False
    shapes: ShapesParams = ShapesParams()


class BackboneParams(_Strict):
    model: str = "ViT-B-32"
    pretrained: str = "openai"
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")
    batch_size: int = Field(128, gt=0)
    num_workers: int = Field(2, ge=0)
    precision: Literal["auto", "fp32", "amp"] = "auto"


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


class ConceptsParams(_Strict):
    source: Literal["conceptnet", "llm", "file"] = "conceptnet"
    file: Optional[str] = None
    conceptnet: ConceptNetParams = ConceptNetParams()
    llm: LlmParams = LlmParams()
    http: HttpParams = HttpParams()


class PresenceParams(_Strict):
    cutoff: Optional[float] = None
    top_k: int = Field(5, gt=0)


class FilterParams(_Strict):
    text_model: str = "sentence-transformers/all-mpnet-base-v2"
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


class GumbelParams(_Strict):
    tau_start: float = Field(1.0, gt=0)
    tau_end: float = Field(0.5, gt=0)
    schedule: Literal["constant", "linear", "exponential", "cosine"] = "exponential"
    hard: bool = False
    objective: Literal["paper", "released"] = "paper"


class OptimizerParams(_Strict):
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)


class EarlyStoppingParams(_Strict):
    patience: Optional[int] = Field(None, gt=0)


class TrainParams(_Strict):
    epochs: int = Field(20, gt=0)
    batch_size: int = Field(256, gt=1)
    ce_to_cbl: Literal["auto", True, False] = "auto"
    log_alpha: float = 2.659
    l1_lambda: float = Field(1e-3, ge=0)
    gumbel: GumbelParams = GumbelParams()
    cbl: OptimizerParams = OptimizerParams()
    fc: OptimizerParams = OptimizerParams(lr=1e-2)
    clip_grad_norm: Optional[float] = Field(None, gt=0)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    early_stopping: EarlyStoppingParams = EarlyStoppingParams()
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")


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


class EvaluateParams(_Strict):
    batch_size: int = Field(4096, gt=0)
    explain: ExplainParams = ExplainParams()
    faithfulness_k: int = Field(3, gt=0)
    linear_probe: LinearProbeParams = LinearProbeParams()
    map_images: int = Field(600, ge=0)


class Params(_Strict):
    seed: int = 0
    loss: Literal["l1", "contrastive", "gumbel"] = "l1"
    dataset: DatasetParams = DatasetParams()
    backbone: BackboneParams = BackboneParams()
    concepts: ConceptsParams = ConceptsParams()
    filter: FilterParams = FilterParams()
    embed_text: EmbedTextParams = EmbedTextParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sparse_cbm.params", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate a params file")
    check.add_argument("path", nargs="?", default="params.yaml")
    apply = sub.add_parser("apply", help="merge an override file into params.yaml")
    apply.add_argument("overrides")
    apply.add_argument("--to", default="params.yaml")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            load_params(args.path)
            print(f"{args.path}: ok")
        else:
            apply_overrides(args.overrides, args.to)
            print(f"applied {args.overrides} to {args.to}")
    except ParamsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
