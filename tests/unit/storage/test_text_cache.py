"""The text-embedding cache: layout, manifest, and readers refusing mismatches."""

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from sparse_cbm.errors import CacheMismatchError
from sparse_cbm.storage.text_cache import concept_list_sha256, read_text_cache, write_text_cache

CLASSES = ["red circle", "blue square"]
CONCEPTS = ["red", "circle", "stripes"]
PAIRS = pd.DataFrame({"class_index": [0, 0, 1, -1], "class_name": ["red circle", "red circle", "blue square", None],
                      "concept": ["red", "circle", "blue", "stripes"]})


@pytest.fixture()
def cache(tmp_path, tiny_backbone):
    write_text_cache(tmp_path / "text", tiny_backbone, CLASSES, CONCEPTS, PAIRS,
                     ["a photo of a {class}.", "a drawing of a {class}."], "{class}, which has {concept}",
                     batch_size=2)
    return tmp_path / "text"


def test_layout_and_embeddings(cache, tiny_backbone):
    text = read_text_cache(cache, expect_backbone=tiny_backbone.identity,
                           expect_concepts_sha256=concept_list_sha256(CONCEPTS))
    assert text.concepts == CONCEPTS and text.concept_embeddings.dtype == np.float16
    assert text.class_prompt_embeddings.shape == (2, 2, 64)
    expected = tiny_backbone.encode_texts(["a drawing of a blue square."])[0]
    got = torch.as_tensor(text.class_prompt_embeddings[1, 1].astype(np.float32))
    assert F.cosine_similarity(got, expected, dim=0) > 0.999
    assert text.descriptions["text"].tolist() == ["red circle, which has red", "red circle, which has circle",
                                                  "blue square, which has blue"]  # shared concepts: none
    assert text.description_embeddings.shape == (3, 64)
    assert text.manifest["concept_list_sha256"] == concept_list_sha256(CONCEPTS)
    assert (cache / "concepts.txt").read_text() == "red\ncircle\nstripes\n"


def test_reader_refuses_another_concept_list(cache):
    with pytest.raises(CacheMismatchError, match="another concept list"):
        read_text_cache(cache, expect_concepts_sha256=concept_list_sha256(["red", "circle"]))


def test_reader_refuses_another_backbone(cache, tiny_backbone):
    other = {**tiny_backbone.identity, "model": "ViT-B-32", "pretrained": "openai"}
    with pytest.raises(CacheMismatchError, match="made by backbone sparse-cbm-tiny .none., but this run uses ViT-B-32 .openai."):
        read_text_cache(cache, expect_backbone=other)


def test_an_edited_concept_list_is_refused(cache):
    (cache / "concepts.txt").write_text("red\ncircle\n")
    with pytest.raises(CacheMismatchError, match=r"concepts.txt \(\d+ bytes\) has sha256 \w+, its manifest recorded \w+: it changed after `embed_text`"):
        read_text_cache(cache)


def test_a_missing_manifest_means_incomplete(cache):
    (cache / "manifest.json").unlink()
    with pytest.raises(CacheMismatchError, match="dvc repro embed_text"):
        read_text_cache(cache)
