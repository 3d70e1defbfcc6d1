"""Reading a trained bottleneck and explaining its decisions.

For an image: the concepts with the largest CBL activations, the concepts with the
largest raw CLIP scores (psi), and the concepts that contributed most to the decision,
W_FC[c, m] * a_m for the predicted class c. For a class: the concepts with the largest
FC weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from safetensors.torch import load_file

from sparse_cbm.errors import CacheMismatchError
from sparse_cbm.manifest import describe_backbone
from sparse_cbm.model import ConceptBottleneck


def load_bottleneck(folder: str | Path, expect_concepts_sha256: Optional[str] = None,
                    expect_backbone: Optional[Dict[str, Any]] = None) -> Tuple[ConceptBottleneck, Dict[str, Any]]:
    """The trained model and its config; refuses a model trained on another concept list or backbone."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise CacheMismatchError(f"{folder} holds no trained model: run `dvc repro train`.")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if expect_concepts_sha256 is not None and config["concept_list_sha256"] != expect_concepts_sha256:
        raise CacheMismatchError(
            f"the model in {folder} was trained on another concept list (sha256 {config['concept_list_sha256'][:12]}) "
            f"than the text cache holds (sha256 {expect_concepts_sha256[:12]}). Run `dvc repro train`.")
    if expect_backbone is not None:
        keys = ("model", "pretrained", "checkpoint_sha256")
        if any(config["backbone"].get(k) != expect_backbone.get(k) for k in keys):
            raise CacheMismatchError(
                f"the model in {folder} was trained on embeddings of {describe_backbone(config['backbone'])}, "
                f"but the caches come from {describe_backbone(expect_backbone)}. Run `dvc repro train`.")
    state = load_file(str(folder / "weights.safetensors"))
    model = ConceptBottleneck(state["concepts"].numpy(), len(config["classes"]), config["logit_scale"])
    model.load_state_dict(state)
    model.eval()
    return model, config


@torch.no_grad()
def predict(model: ConceptBottleneck, embeddings, batch_size: int = 1024) -> Tuple[np.ndarray, np.ndarray]:
    """(top-1 (N,), top-5 (N, 5)) class indices of the CBM for every image, a batch at a time."""
    tops = []
    for lo in range(0, len(embeddings), batch_size):
        x = torch.from_numpy(np.asarray(embeddings[lo:lo + batch_size], dtype=np.float32))
        _, logits = model(x)
        tops.append(logits.topk(min(5, logits.shape[1]), dim=1).indices.numpy())
    top5 = np.concatenate(tops) if tops else np.zeros((0, 5), dtype=np.int64)
    return top5[:, 0], top5


def _ranked(values: torch.Tensor, names: Sequence[str], top: int) -> List[Dict[str, Any]]:
    order = values.argsort(descending=True)[:top]
    return [{"concept": names[int(j)], "value": round(float(values[j]), 4)} for j in order]


@torch.no_grad()
def explain_images(model: ConceptBottleneck, image_embeddings: np.ndarray, concepts: Sequence[str],
                   classes: Sequence[str], top: int = 10) -> List[Dict[str, Any]]:
    """Per image: predicted class, top concepts by CBL activation, by raw CLIP score, and by
    contribution W_FC[c, m] * a_m to the predicted class c."""
    x = torch.from_numpy(np.asarray(image_embeddings, dtype=np.float32))
    psi = model.concept_scores(x)
    S = model.cbl(psi)
    logits = model.fc(S)
    out = []
    for i in range(len(x)):
        c = int(logits[i].argmax())
        contributions = model.fc.weight[c] * S[i]
        out.append({"predicted": classes[c], "predicted_index": c,
                    "by_activation": _ranked(S[i], concepts, top), "by_clip_score": _ranked(psi[i], concepts, top),
                    "by_contribution": _ranked(contributions, concepts, top)})
    return out


def class_top_concepts(model: ConceptBottleneck, concepts: Sequence[str], classes: Sequence[str],
                       top: int = 10) -> Dict[str, List[Dict[str, Any]]]:
    """Per class, the concepts with the largest FC weights."""
    weight = model.fc.weight.detach()
    return {name: _ranked(weight[c], concepts, top) for c, name in enumerate(classes)}


@torch.no_grad()
def top_concept_indices(model: ConceptBottleneck, embeddings, k: int, batch_size: int = 1024) -> Dict[str, np.ndarray]:
    """For every image, the indices of its k top concepts by raw CLIP score, by CBL activation
    and by contribution to the predicted class (for faithfulness against known attributes)."""
    found: Dict[str, list] = {"clip_score": [], "activation": [], "contribution": []}
    for lo in range(0, len(embeddings), batch_size):
        x = torch.from_numpy(np.asarray(embeddings[lo:lo + batch_size], dtype=np.float32))
        psi = model.concept_scores(x)
        S = model.cbl(psi)
        logits = model.fc(S)
        contrib = model.fc.weight[logits.argmax(dim=1)] * S
        for key, values in (("clip_score", psi), ("activation", S), ("contribution", contrib)):
            found[key].append(values.topk(k, dim=1).indices.numpy())
    return {key: np.concatenate(v) for key, v in found.items()}
