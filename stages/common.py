"""What several stages share: building the dataset and the backbone from params."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sparse_cbm_app.params import Params, load_params
from sparse_cbm.runtime.cpus import use_threads

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


def backbone_from(params: Params) -> "Backbone":
    """The CLIP backbone; seeding first fixes the weights when backbone.pretrained is 'none',
    so every stage that builds it gets the same model. (Imported here, not at the top: the
    stages that only need the dataset do not read the backbone's code.)"""
    import torch

    from sparse_cbm.clip.backbone import load_backbone

    bb = params.backbone
    torch.manual_seed(params.seed)
    return load_backbone(bb.model, bb.pretrained, device=bb.device, precision=bb.precision)


def prompting_backbone(params: Params) -> "Backbone":
    """The CLIP of SALF-CBM's visual prompts (``spatial.prompts``), on ``backbone.device`` and
    ``backbone.precision``; the pipeline's backbone when ``spatial.prompts`` is null."""
    from sparse_cbm.clip.backbone import load_backbone

    prompts = params.spatial.prompts
    if prompts.pretrained is None:
        return backbone_from(params)
    bb = params.backbone
    return load_backbone(prompts.model, prompts.pretrained, device=bb.device, precision=bb.precision)
