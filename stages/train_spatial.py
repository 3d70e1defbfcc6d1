"""Stage train_spatial: SALF-CBM's concept maps and its sparse final layer.

Reads the feature-map cache (``data/spatial/features/{train,val}``), the prompted-copy cache
(``data/spatial/prompted/train``, and ``val`` for Label-free CBM's stop) and the concepts' embeddings by the same CLIP
(``data/spatial/prompt_concepts``, with the class prompts), the concept list, the classes and the
labels (``data/image_cache``), params ``seed``, ``train.device`` and ``spatial.*`` (the grid, pooling,
epochs, learning rate, the sparse layer's path, ``class_concepts``); writes ``data/spatial/model/``
(and in it ``class_concepts/``, the paper's Table 2 model, one concept a class),
``plots/spatial/{steps,sparse_path}.csv`` and ``metrics/spatial_train.json``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from sparse_cbm.bottleneck import final_layer
from sparse_cbm.errors import CacheMismatchError, TrainingError
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


def read_inputs(paths, s):
    """The image cache, the feature maps of train and val and train's ringed copies, refused when they do not
    belong together."""
    images = read_cached_inputs(paths.images, ("train", "val"), concepts=paths.concepts)
    features = {split: read_features(paths.features, split) for split in ("train", "val")}
    prompted = read_prompted(paths.prompted, "train")
    for split, f in features.items():
        if f.manifest["images"] != len(images.splits[split].labels):
            raise CacheMismatchError(f"{paths.features}/{split} holds {f.manifest['images']} images, the image cache "
                                     f"{len(images.splits[split].labels)}: rerun `dvc repro` so that both come from "
                                     f"one dataset.")
    if prompted.manifest["shape"] != [s.grid, s.grid]:
        raise CacheMismatchError(f"{paths.prompted} was made on a {prompted.manifest['shape']} grid, spatial.grid is "
                                 f"{s.grid}: run `dvc repro embed_prompted`.")
    return images, features, prompted


def train_class_concepts(params, fit, classes, prompted, prompt_concepts):
    """The paper's Table 2 model (``spatial.class_concepts``): a SALF-CBM trained as the main one with one
    concept a class, under Label-free CBM's early stop when the main one has it, never its cutoff (a class
    must keep its map); its result, or None when the param is null."""
    prompts = class_prompts(params.spatial.class_concepts, classes)
    if not prompts:
        return None
    embeddings = read_class_prompts(prompt_concepts, prompts, prompted.manifest["backbone"])
    log.info("the class-concept SALF-CBM (Table 2's heatmaps): %d prompts such as %r", len(prompts), prompts[0])
    try:
        return fit(embeddings, cutoff=False)
    except TrainingError as exc:
        raise TrainingError(f"the class-concept SALF-CBM (spatial.class_concepts): {exc}; or set "
                            f"spatial.class_concepts: null") from exc


def main(argv: Optional[Sequence[str]] = None) -> None:
    paths = stage_paths("train_spatial", argv, "images", "concepts", "features", "prompted", "prompt_concepts",
                        "model", "plots", "metrics")
    PLOTS, METRICS = Path(paths.plots), Path(paths.metrics)
    params = stage_params()
    s = params.spatial
    images, features, prompted = read_inputs(paths, s)
    concepts, classes, shape = images.concepts, images.classes, tuple(features["train"].manifest["shape"])
    log.info("SALF-CBM: %d concepts on %s feature maps, %d prompted train images", len(concepts), shape,
             prompted.manifest["images"])

    device, stop = stage_device(params.train.device, "SALF-CBM training"), held_out(s, paths.prompted)

    def fit(embeddings, cutoff=True):
        return train_spatial(features["train"].outputs, shape, prompted.outputs, prompted.rows, embeddings,
                             images.splits["train"].labels, (features["val"].outputs, images.splits["val"].labels),
                             len(classes), grid=s.grid, pooling=s.pooling, epochs=s.epochs, batch_size=s.train_batch_size,
                             lr=s.lr, sparse=s.sparse, seed=params.seed, device=device,
                             held_out=stop if cutoff or stop is None else dataclasses.replace(stop, cutoff=None))

    result = fit(read_prompt_concepts(paths.prompt_concepts, concept_list_sha256(concepts), prompted.manifest["backbone"]))
    class_result = train_class_concepts(params, fit, classes, prompted, paths.prompt_concepts)
    describe = dict(s=s, shape=shape, features=features["train"].manifest["backbone"], classes=classes, seed=params.seed)
    with atomic_directory(paths.model) as tmp:
        save_spatial(tmp, result.model, model_config(result, concepts, **describe))
        if class_result is not None:
            (tmp / CLASS_MODEL).mkdir()
            save_spatial(tmp / CLASS_MODEL, class_result.model,
                         model_config(class_result, class_prompts(s.class_concepts, classes), **describe))
    PLOTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(PLOTS / "steps.csv", pd.DataFrame(result.steps).to_csv(index=False, float_format="%.6g"))
    # the path's points without their wall-clock seconds (logged above): the same params give the same bytes
    path = pd.DataFrame(result.sparse_path).drop(columns=["seconds"], errors="ignore")
    atomic_write_text(PLOTS / "sparse_path.csv", path.to_csv(index=False, float_format="%.6g"))
    metrics = train_metrics(result, s.epochs, class_result)
    atomic_write_json(METRICS, metrics)
    log.info("cos3 %.3f, NEC %.2f; %.1f s", result.similarity, metrics["nec"], result.seconds)


def model_config(result, concepts, *, s, shape, features, classes, seed) -> dict:
    """What a trained SALF-CBM needs to run on a new image (``sparse_cbm.spatial.checkpoint``)."""
    kept = result.kept.tolist()
    return {"grid": s.grid, "pooling": s.pooling, "feature_shape": list(shape), "features": features,
            "concepts": [concepts[i] for i in kept], "classes": classes,
            "concept_list_sha256": concept_list_sha256(concepts),
            **({"kept": kept} if len(kept) < len(concepts) else {}),
            **({"val_cos3_every_concept": dict(zip(concepts, result.val_similarity.tolist()))}
               if result.val_similarity is not None else {}),
            "p_mean": result.p_mean.round(6).tolist(), "p_std": result.p_std.round(6).tolist(), "seed": seed}


def train_metrics(result, epochs: int, class_result=None) -> dict:
    kept = result.kept.tolist()
    return {"cos3": round(result.similarity, 4), "nec": round(final_layer.nec(result.model.fc.weight), 2),
            "epochs": epochs,
            **({"class_concepts": {"cos3": round(class_result.similarity, 4),
                                   "nec": round(final_layer.nec(class_result.model.fc.weight), 2)}}
               if class_result is not None else {}),
            **({"kept_epoch": result.kept_epoch, "concepts_kept": len(kept),
                "val_cos3": round(float(result.val_similarity[kept].mean()), 4)}
               if result.val_similarity is not None else {})}


if __name__ == "__main__":
    run_stage("train_spatial", main)
