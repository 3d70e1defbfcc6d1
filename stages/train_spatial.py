"""Stage train_spatial: SALF-CBM's concept maps and its sparse final layer.

Reads the feature-map cache (``data/spatial/features/{train,val}``), the prompted-copy cache
(``data/spatial/prompted/train``, and ``val`` for Label-free CBM's stop) and the concepts' embeddings by the same CLIP
(``data/spatial/prompt_concepts``), the concept list, the classes (``data/image_cache``), the labels
(``data/image_cache``), params ``seed``, ``train.device`` and ``spatial.*`` (the grid, pooling,
epochs, learning rate and the sparse layer's path); writes ``data/spatial/model/``,
``plots/spatial/{steps,sparse_path}.csv`` and ``metrics/spatial_train.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from sparse_cbm.bottleneck import final_layer
from sparse_cbm.errors import CacheMismatchError
from sparse_cbm.runtime.atomic import atomic_directory, atomic_write_json, atomic_write_text
from sparse_cbm.runtime.runner import run_stage, stage_paths
from sparse_cbm.spatial.caches import class_prompts, read_class_prompts, read_features, read_prompt_concepts, read_prompted
from sparse_cbm.spatial.checkpoint import CLASS_MODEL, save_spatial
from sparse_cbm.spatial.train import HeldOut, train_spatial
from sparse_cbm.storage.inputs import read_cached_inputs
from sparse_cbm.storage.text_cache import concept_list_sha256
from stages.common import stage_device, stage_params

log = logging.getLogger("stages.train_spatial")


def held_out(s, prompted_cache) -> Optional[HeldOut]:
    """Label-free CBM's stop on val's ringed copies, when ``spatial.val_images`` made them."""
    if not s.val_images:
        return None
    val = read_prompted(prompted_cache, "val")
    return HeldOut(val.outputs, val.rows, early_stop=s.early_stop, cutoff=s.cutoff)


def train_class_concepts(params, images, features, prompted, prompt_concepts, shape, labels):
    """The paper's Table 2 model (``spatial.class_concepts``): a SALF-CBM trained as the main one, with one
    concept a class, for ``spatial.epochs`` epochs (Label-free CBM's stop and cutoff are the main model's:
    a class must keep its map); (model, config), or None when the param is null."""
    s = params.spatial
    prompts = class_prompts(s.class_concepts, images.classes)
    if not prompts:
        return None
    embeddings = read_class_prompts(prompt_concepts, prompts, prompted.manifest["backbone"])
    log.info("the class-concept SALF-CBM (Table 2's heatmaps): %d prompts such as %r", len(prompts), prompts[0])
    result = train_spatial(features["train"].outputs, shape, prompted.outputs, prompted.rows, embeddings,
                           labels["train"], (features["val"].outputs, labels["val"]), len(prompts), grid=s.grid,
                           pooling=s.pooling, epochs=s.epochs, batch_size=s.train_batch_size, lr=s.lr, sparse=s.sparse,
                           seed=params.seed, device=stage_device(params.train.device, "SALF-CBM training"))
    config = {"grid": s.grid, "pooling": s.pooling, "feature_shape": list(shape), "concepts": prompts,
              "classes": images.classes, "concept_list_sha256": concept_list_sha256(prompts),
              "p_mean": result.p_mean.round(6).tolist(), "p_std": result.p_std.round(6).tolist(),
              "seed": params.seed, "cos3": round(result.similarity, 6)}
    return result.model, config


def main(argv: Optional[Sequence[str]] = None) -> None:
    paths = stage_paths("train_spatial", argv, "images", "concepts", "features", "prompted", "prompt_concepts",
                        "model", "plots", "metrics")
    FEATURES, PROMPTED, PROMPT_CONCEPTS = paths.features, paths.prompted, paths.prompt_concepts
    MODEL, PLOTS, METRICS = paths.model, Path(paths.plots), Path(paths.metrics)
    params = stage_params()
    s = params.spatial
    images = read_cached_inputs(paths.images, ("train", "val"), concepts=paths.concepts)
    labels = {split: images.splits[split].labels for split in ("train", "val")}
    features = {split: read_features(FEATURES, split) for split in ("train", "val")}
    prompted = read_prompted(PROMPTED, "train")
    for split, f in features.items():
        if f.manifest["images"] != len(labels[split]):
            raise CacheMismatchError(f"{FEATURES}/{split} holds {f.manifest['images']} images, the image cache "
                                     f"{len(labels[split])}: rerun `dvc repro` so that both come from one dataset.")
    if prompted.manifest["shape"] != [s.grid, s.grid]:
        raise CacheMismatchError(f"{PROMPTED} was made on a {prompted.manifest['shape']} grid, spatial.grid is {s.grid}: "
                                 f"run `dvc repro embed_prompted`.")
    concepts = images.concepts
    concept_embeddings = read_prompt_concepts(PROMPT_CONCEPTS, concept_list_sha256(concepts),
                                              prompted.manifest["backbone"])
    classes = images.classes
    shape = tuple(features["train"].manifest["shape"])
    log.info("SALF-CBM: %d concepts on %s feature maps, %d prompted train images", len(concepts), shape,
             prompted.manifest["images"])
    result = train_spatial(features["train"].outputs, shape, prompted.outputs, prompted.rows, concept_embeddings,
                           labels["train"], (features["val"].outputs, labels["val"]), len(classes), grid=s.grid,
                           pooling=s.pooling, epochs=s.epochs, batch_size=s.train_batch_size, lr=s.lr, sparse=s.sparse,
                           seed=params.seed, device=stage_device(params.train.device, "SALF-CBM training"),
                           held_out=held_out(s, PROMPTED))
    class_model = train_class_concepts(params, images, features, prompted, PROMPT_CONCEPTS, shape, labels)
    kept = result.kept.tolist()
    config = {"grid": s.grid, "pooling": s.pooling, "feature_shape": list(shape),
              "features": features["train"].manifest["backbone"], "concepts": [concepts[i] for i in kept],
              "classes": classes, "concept_list_sha256": concept_list_sha256(concepts),
              **({"kept": kept} if len(kept) < len(concepts) else {}),
              **({"val_cos3_every_concept": dict(zip(concepts, result.val_similarity.tolist()))}
                 if result.val_similarity is not None else {}),
              "p_mean": result.p_mean.round(6).tolist(),
              "p_std": result.p_std.round(6).tolist(), "seed": params.seed}
    with atomic_directory(MODEL) as tmp:
        save_spatial(tmp, result.model, config)
        if class_model is not None:
            (tmp / CLASS_MODEL).mkdir()
            save_spatial(tmp / CLASS_MODEL, *class_model)
    PLOTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(PLOTS / "steps.csv", pd.DataFrame(result.steps).to_csv(index=False, float_format="%.6g"))
    # the path's points without their wall-clock seconds (logged above): the same params give the same bytes
    path = pd.DataFrame(result.sparse_path).drop(columns=["seconds"], errors="ignore")
    atomic_write_text(PLOTS / "sparse_path.csv", path.to_csv(index=False, float_format="%.6g"))
    nec = final_layer.nec(result.model.fc.weight)
    class_metrics = ({"class_concepts": {"cos3": round(class_model[1]["cos3"], 4),
                                         "nec": round(final_layer.nec(class_model[0].fc.weight), 2)}}
                     if class_model is not None else {})
    atomic_write_json(METRICS, {"cos3": round(result.similarity, 4), "nec": round(nec, 2), "epochs": s.epochs,
                                **class_metrics,
                                **({"kept_epoch": result.kept_epoch, "concepts_kept": len(kept),
                                    "val_cos3": round(float(result.val_similarity[kept].mean()), 4)}
                                   if result.val_similarity is not None else {})})
    log.info("cos3 %.3f, NEC %.2f; %.1f s", result.similarity, nec, result.seconds)


if __name__ == "__main__":
    run_stage("train_spatial", main)
