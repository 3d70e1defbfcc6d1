"""What several stages share: building the dataset and the backbone from params."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Optional, Sequence

from sparse_cbm_app.params import Params, load_params
from sparse_cbm.runtime.cpus import use_threads
from sparse_cbm.runtime.device import resolve_device
from sparse_cbm.runtime.workers import Workers, current_workers, launch, under_torchrun, worker_device

if TYPE_CHECKING:
    from sparse_cbm.clip.backbone import Backbone
    from sparse_cbm.datasets import DatasetSplits


def stage_params() -> Params:
    """``params.yaml``, validated, with this process's thread pools sized by its ``threads``."""
    params = load_params()
    use_threads(params.threads)
    return params


def dataset_from(params: Params) -> "DatasetSplits":
    """The dataset the params name, with its corrupted test split unless ``dataset.corrupted_test`` is
    null (imported here: stages that do not build it do not read its code)."""
    from sparse_cbm.datasets import load_dataset
    from sparse_cbm.datasets.corruptions import with_corrupted_test

    data = params.dataset
    dataset = load_dataset(
        data.name, data.root, seed=params.seed, val_fraction=data.val_fraction, download=data.download,
        class_names_file=data.class_names_file, shapes_n_train=data.shapes.n_train,
        shapes_n_test=data.shapes.n_test, shapes_image_size=data.shapes.image_size,
        shapes_class_attributes=data.shapes.class_attributes, shapes_preset=data.shapes.preset,
        skip_empty_classes=data.skip_empty_classes)
    corrupted = data.corrupted_test
    return dataset if corrupted is None else with_corrupted_test(dataset, corrupted.kinds, corrupted.severity,
                                                                 params.seed)


def embedding_workers(stage: str, argv: Optional[Sequence[str]], params: Params) -> Optional[Workers]:
    """This process's place among an embedding stage's workers (``runtime.workers``): rank 0 of 1, or its rank
    under torchrun. None when ``processes`` > 1 made this process launch the workers: they have embedded and
    published the cache when this returns (a failed one raises ``WorkerFailedError``)."""
    if params.processes > 1 and not under_torchrun():
        launch(stage, sys.argv[1:] if argv is None else list(argv), params.processes)
        return None
    return current_workers()


def stage_device(spec: str, what: str) -> str:
    """``spec`` (a ``*.device`` param) resolved to the device ``what`` runs on, and logged: every stage
    that computes says where."""
    device = str(resolve_device(spec))
    logging.getLogger("stages").info("%s on %s (param %r)", what, device, spec)
    return device


def backbone_from(params: Params, workers: Optional[Workers] = None) -> "Backbone":
    """The CLIP backbone (on ``workers``' device: ``runtime.workers.worker_device``); seeding first fixes the
    weights when backbone.pretrained is 'none', so every stage that builds it gets the same model. (Imported
    here, not at the top: the stages that only need the dataset do not read the backbone's code.)"""
    import torch

    from sparse_cbm.clip.backbone import load_backbone

    bb = params.backbone
    torch.manual_seed(params.seed)
    device = worker_device(bb.device, workers or Workers())
    return load_backbone(bb.model, bb.pretrained, device=device, precision=bb.precision)


def prompting_backbone(params: Params, workers: Optional[Workers] = None) -> "Backbone":
    """The CLIP of SALF-CBM's visual prompts (``spatial.prompts``), on ``backbone.device`` and
    ``backbone.precision``; the pipeline's backbone when ``spatial.prompts`` is null."""
    from sparse_cbm.clip.backbone import load_backbone

    prompts = params.spatial.prompts
    if prompts.pretrained is None:
        return backbone_from(params, workers)
    bb = params.backbone
    device = worker_device(bb.device, workers or Workers())
    return load_backbone(prompts.model, prompts.pretrained, device=device, precision=bb.precision)
