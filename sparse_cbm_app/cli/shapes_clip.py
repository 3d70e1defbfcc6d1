"""Train a small CLIP inside the ``shapes`` world, so the offline pipeline measures something.

No machine of ours can download pretrained CLIP weights. This script trains an
open_clip architecture with open_clip's own contrastive loss (``open_clip.ClipLoss``)
on procedural shapes images and captions made from their attributes ("a small red
striped circle on a grey background", with seeded variations and left-out attributes,
so that single concept words are learnt too). With an architecture whose text tower is
a packaged language model (the default, ``sparse-cbm-shapes-minilm``) that tower is
locked and only the image tower and the projections learn (LiT with the frozen side
swapped); otherwise everything is trained from scratch. It saves the trained state
(float16; a packaged tower left out), reloads it the way the pipeline does
(``load_backbone``) and prints what it knows: zero-shot accuracy, attribute words,
unseen synonyms, rings.

    sparse-cbm train-shapes-clip          # rebuilds data/pretrained/shapes-clip-minilm.pt

docs/usage.md#backbones gives the arguments that rebuilt the world's CLIP
(``data/pretrained/shapes-clip.pt``) and its ring-taught sibling.

The training images come from shapes seed ``POOL_SEED_OFFSET + seed``, never the
pipeline's own seed; classes and attributes are balanced over every combination of
shape, colour, texture and background.
"""

from __future__ import annotations

import os

# On a shared CPU, OpenMP threads that spin while they wait take the cores other processes
# need, and a step can take ten times as long; waiting passively costs little. Only takes
# effect when torch is imported after this line (as with python -m sparse_cbm_app.cli.shapes_clip).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import inspect
import io
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from sparse_cbm.runtime.atomic import atomic_write_bytes
from sparse_cbm.clip import language_tower
from sparse_cbm.clip.backbone import file_sha256, load_backbone
from sparse_cbm.datasets import load_dataset
from sparse_cbm.datasets.base import ImageSource
from sparse_cbm.datasets.shapes import ShapesSource
from sparse_cbm.datasets.shapes_world import ATTRIBUTE_VALUES, SIZES
from sparse_cbm.datasets.shapes_text import (ALL_VALUES, ATTRIBUTES, UNSEEN_WORDS, attribute_concepts, caption,
                                             concept)

log = logging.getLogger("sparse_cbm_app.cli.shapes_clip")  # also when run as __main__

DEFAULT_OUT = "data/pretrained/shapes-clip-minilm.pt"
DEFAULT_MODEL = "sparse-cbm-shapes-minilm"
POOL_SEED_OFFSET = 1_000_000
PROMPT = "a photo of a {}."


class _Rendered(Dataset):
    """Shapes images through the model's own preprocessing (picklable, for workers)."""

    def __init__(self, source: ImageSource, preprocess: Callable):
        self.source, self.preprocess = source, preprocess

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.preprocess(self.source.load(i))


def preprocess_all(source: ImageSource, preprocess: Callable, num_workers: int = 0, progress: bool = False,
                   desc: str = "render") -> torch.Tensor:
    """Every image of ``source``, preprocessed, in order, as one float16 tensor."""
    loader = DataLoader(_Rendered(source, preprocess), batch_size=256, num_workers=num_workers)
    out = None
    start = 0
    with tqdm(total=len(source), desc=desc, unit="img", file=sys.stderr, disable=not progress) as bar:
        for batch in loader:
            if out is None:
                out = torch.empty((len(source), *batch.shape[1:]), dtype=torch.float16)
            out[start:start + len(batch)] = batch
            start += len(batch)
            bar.update(len(batch))
    return out


def training_pool(n: int, seed: int, image_size: int) -> ShapesSource:
    """The training images: balanced over shape x colour x texture x background, other seed."""
    return ShapesSource("train", n, POOL_SEED_OFFSET + seed, image_size, list(ATTRIBUTE_VALUES))


def scene_pool(n: int, seed: int, image_size: int) -> ShapesSource:
    """Training scenes: a class object balanced over every combination, with 1-3 small others."""
    from sparse_cbm.datasets.shapes_scenes import CombinationSceneWorld

    return ShapesSource("train", n, POOL_SEED_OFFSET + seed + 1, image_size,
                        CombinationSceneWorld(list(ATTRIBUTE_VALUES)))


class _Scenes(Dataset):
    """Scenes through the model's preprocessing, with their label maps."""

    def __init__(self, source: ShapesSource, preprocess: Callable):
        self.source, self.preprocess = source, preprocess

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int):
        image, labels = self.source.scene(i)
        return self.preprocess(image), torch.from_numpy(labels)


def render_scenes(source: ShapesSource, preprocess: Callable, num_workers: int = 0,
                  progress: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """Every scene preprocessed (float16) and its label map (uint8), in order."""
    images, maps = [], []
    loader = DataLoader(_Scenes(source, preprocess), batch_size=256, num_workers=num_workers)
    with tqdm(total=len(source), desc="render scenes", unit="img", file=sys.stderr, disable=not progress) as bar:
        for batch, labels in loader:
            images.append(batch.half())
            maps.append(labels)
            bar.update(len(batch))
    return torch.cat(images), torch.cat(maps)


@dataclass
class Rings:
    """How training draws rings (the spatial branch's visual prompt, so CLIP learns what one means)."""

    share: float = 0.0  # chance that a training image is shown ringed
    on_object: float = 0.75  # chance that the ring's centre is a pixel of an object (else anywhere)
    pairs: float = 0.5  # chance that a ringed image is shown twice, ringed around two different things
    radius: float = 9.0
    line_width: float = 2.0
    colour: Tuple[int, int, int] = (255, 255, 0)


def _pixel_of(labels: np.ndarray, label: int, rng: np.random.Generator) -> Tuple[int, int]:
    ys, xs = np.nonzero(labels == label)
    j = int(rng.integers(len(ys)))
    return int(ys[j]), int(xs[j])


def _ring_centres(labels: np.ndarray, rings: "Rings", rng: np.random.Generator) -> List[Tuple[int, int]]:
    """Where an image's rings go: the first on a random pixel of a random object (chance
    ``rings.on_object``) or anywhere; with chance ``rings.pairs`` a second one on a pixel of another
    label (another object or the background), so that one batch holds the same image ringed twice."""
    height, width = labels.shape
    present = [int(v) for v in np.unique(labels)]
    objects = [v for v in present if v]
    if objects and rng.random() < rings.on_object:
        first = _pixel_of(labels, int(rng.choice(objects)), rng)
    else:
        first = (int(rng.integers(height)), int(rng.integers(width)))
    centres = [first]
    others = [v for v in present if v != int(labels[first])]
    if others and rng.random() < rings.pairs:
        centres.append(_pixel_of(labels, int(rng.choice(others)), rng))
    return centres


def _ringed(images: torch.Tensor, maps: torch.Tensor, objects: List[List[Dict]], backgrounds: List[str],
            rings: "Rings", colour: torch.Tensor, rng: np.random.Generator, drop: float
            ) -> Tuple[torch.Tensor, List[str], List[int]]:
    """Ringed views of images (``_ring_centres``), each captioned by what its ring circles: the object whose
    pixel is at the centre (by the label map), or the background. Returns the views, their captions and
    the image each view is of."""
    from sparse_cbm.datasets.shapes_text import ringed_caption
    from sparse_cbm.spatial.prompts import ring_masks

    height, width = images.shape[-2:]
    views, captions, sources = [], [], []
    for k in range(len(images)):
        labels = maps[k].numpy()
        for cy, cx in _ring_centres(labels, rings, rng):
            mask = ring_masks(height, width, np.array([[cy, cx]]), rings.radius, rings.line_width)[0]
            views.append(images[k].float() * (1 - mask) + colour * mask)
            label = int(labels[cy, cx])
            captions.append(ringed_caption(objects[k][label - 1] if label else None, backgrounds[k], rng, drop))
            sources.append(k)
    return torch.stack(views), captions, sources


class TextFeatures:
    """Text features for the contrastive loss. With a locked packaged tower (LiT with the frozen side
    swapped), the tower's pooled output of each caption is computed once, in eval mode, and cached;
    only the projection on top of it learns. Otherwise the whole text tower runs every step."""

    def __init__(self, model: torch.nn.Module, tokenizer: Callable):
        self.model, self.tokenizer = model, tokenizer
        self.locked = language_tower.packaged_tower_module(model) is not None
        self.cache: Dict[str, torch.Tensor] = {}

    def _pooled(self, captions: List[str]) -> None:
        text = self.model.text
        was_training = text.transformer.training
        text.transformer.eval()
        with torch.no_grad():
            for lo in range(0, len(captions), 256):
                chunk = captions[lo:lo + 256]
                tokens = self.tokenizer(chunk)
                mask = (tokens != text.config.pad_token_id).long()
                width = int(mask.sum(1).max())  # masked mean pooling: the padding past it changes nothing
                tokens, mask = tokens[:, :width], mask[:, :width]
                pooled = text.pooler(text.transformer(input_ids=tokens, attention_mask=mask), mask)
                self.cache.update(zip(chunk, pooled.float()))
        text.transformer.train(was_training)

    def __call__(self, captions: List[str]) -> torch.Tensor:
        if not self.locked:
            return self.model.encode_text(self.tokenizer(captions), normalize=True)
        new = sorted({c for c in captions if c not in self.cache})
        if new:
            self._pooled(new)
        pooled = torch.stack([self.cache[c] for c in captions])
        return F.normalize(self.model.text.proj(pooled), dim=-1)


def _optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW as open_clip trains: no weight decay on gains, biases and the logit scale."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "logit_scale" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6)


def _lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    return 0.5 * lr * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def train(model_name: str = DEFAULT_MODEL, *, seed: int = 0, steps: int = 2000, batch_size: int = 256,
          lr: float = 3e-3, weight_decay: float = 0.1, warmup: int = 100, pool_size: int = 40_000,
          drop: float = 0.3, num_workers: int = 2, scenes: float = 0.5, rings: float = 0.5,
          text_proj_scale: float = 0.01, progress: bool = True) -> torch.nn.Module:
    """Train ``model_name`` from scratch on shapes image-caption pairs; returns it in eval mode.

    ``scenes``: the share of the pool that are scenes (a class object and 1-3 small others,
    captioned by the class object); ``rings``: the chance that an image gets a ring around a
    random place, captioned by what the ring circles. Seeded: the same arguments give the same
    weights on the same machine; with ``scenes = rings = 0`` the pool and captions are the ones
    of the first shapes CLIP. ``text_proj_scale``: a locked packaged tower's projection starts at
    this multiple of its default initialisation; small, the directions of the tower's space that
    no caption spans stay near zero instead of random.
    """
    torch.manual_seed(seed)
    np.random.seed(seed)
    model, _, preprocess = open_clip.create_model_and_transforms(model_name)  # eval preprocess, as the pipeline
    tokenizer = open_clip.get_tokenizer(model_name)
    if language_tower.packaged_tower_module(model) is not None:
        model.lock_text_tower(unlocked_layers=0, freeze_layer_norm=True)  # LiT: the language side is kept
        with torch.no_grad():
            for p in model.text.proj.parameters():
                p.mul_(text_proj_scale)
    text_features = TextFeatures(model, tokenizer)
    image_size = int(model.visual.image_size[0]) if isinstance(model.visual.image_size, tuple) \
        else int(model.visual.image_size)
    n_scenes = int(round(pool_size * scenes))
    pool = training_pool(pool_size - n_scenes, seed, image_size)
    images, maps = render_scenes(pool, preprocess, num_workers, progress)
    attributes = list(pool.attributes)
    if n_scenes:
        extra = scene_pool(n_scenes, seed, image_size)
        scene_images, scene_maps = render_scenes(extra, preprocess, num_workers, progress)
        images, maps = torch.cat([images, scene_images]), torch.cat([maps, scene_maps])
        attributes += extra.attributes
    objects = [[*a.get("others", []), a] for a in attributes]
    from sparse_cbm.spatial.prompts import normalised_colour, preprocess_normalisation

    ring = Rings(share=rings)
    colour = normalised_colour(ring.colour, *preprocess_normalisation(preprocess))
    loss_fn = open_clip.ClipLoss()
    opt = _optimizer(model, lr, weight_decay)
    order = torch.Generator().manual_seed(seed)
    perm, at = torch.randperm(len(images), generator=order), 0
    model.train()
    with tqdm(range(steps), desc="train", unit="step", file=sys.stderr, disable=not progress) as bar:
        for step in bar:
            if at + batch_size > len(perm):
                perm, at = torch.randperm(len(images), generator=order), 0
            idx = perm[at:at + batch_size]
            at += batch_size
            rng = np.random.default_rng([seed, step])
            captions = [caption(attributes[i], rng, drop) for i in idx.tolist()]
            batch = images[idx].float()
            if ring.share:
                ring_rng = np.random.default_rng([seed, step, 1])
                chosen = np.flatnonzero(ring_rng.random(len(idx)) < ring.share)
                if len(chosen):
                    picked = idx[torch.from_numpy(chosen)].tolist()
                    views, ringed, sources = _ringed(batch[torch.from_numpy(chosen)], maps[torch.tensor(picked)],
                                                     [objects[i] for i in picked],
                                                     [str(attributes[i]["background"]) for i in picked], ring,
                                                     colour, ring_rng, drop)
                    keep = np.setdiff1d(np.arange(len(idx)), chosen)  # the unringed images, then every view
                    batch = torch.cat([batch[torch.from_numpy(keep)], views])
                    captions = [captions[k] for k in keep] + ringed
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, steps, lr, warmup)
            image_features = model.encode_image(batch, normalize=True)
            loss = loss_fn(image_features, text_features(captions), model.logit_scale.exp())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            if step % 10 == 0 or step == steps - 1:
                bar.set_postfix(loss=f"{loss.item():.3f}", scale=f"{model.logit_scale.exp().item():.1f}")
    return model.eval()


def save_checkpoint(model: torch.nn.Module, path: str | Path, half: bool = True) -> Path:
    """Write the state_dict (float16 unless ``half=False``) atomically: ``load_backbone`` loads it as
    ``pretrained=path``. A packaged text tower is left out: it comes from its package."""
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().clone().contiguous()
             for k, v in language_tower.trained_state(model).items()}
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


@torch.inference_mode()
def encode_texts(model: torch.nn.Module, tokenizer: Callable, texts: Sequence[str]) -> torch.Tensor:
    return model.encode_text(tokenizer(list(texts)), normalize=True).float()


@torch.inference_mode()
def zero_shot(model: torch.nn.Module, tokenizer: Callable, images: torch.Tensor, labels: np.ndarray,
              class_names: Sequence[str], template: str = PROMPT) -> float:
    """Top-1 accuracy of prompting each class with ``template`` (images already preprocessed)."""
    text = encode_texts(model, tokenizer, [template.format(c) for c in class_names])
    feats = model.encode_image(images.float(), normalize=True).float()
    pred = (feats @ text.T).argmax(1).numpy()
    return float((pred == np.asarray(labels)).mean())


def unseen_word(attribute: str, value: str) -> str:
    """The first unseen synonym of a value ("crimson" for red): a word no caption held."""
    return UNSEEN_WORDS[concept(attribute, value)][0]


@torch.inference_mode()
def attribute_accuracy(model: torch.nn.Module, tokenizer: Callable, image_features: torch.Tensor,
                       attributes: List[Dict[str, object]], word: Callable[[str, str], str] = concept
                       ) -> Dict[str, float]:
    """Per attribute, how often the image (its normalised features) is closest to its own value's
    word among that attribute's words ("striped" vs "solid" vs "dotted"): are concepts recognisable?
    ``word``: the concept word (default), or ``unseen_word``, a synonym its CLIP never saw."""
    out = {}
    for a in ATTRIBUTES:
        values = list(ALL_VALUES[a])
        text = encode_texts(model, tokenizer, [word(a, v) for v in values])
        pred = (image_features @ text.T).argmax(1).numpy()
        truth = np.array([values.index(str(x[a])) for x in attributes])
        out[a] = float((pred == truth).mean())
    return out


@torch.inference_mode()
def unseen_words(model: torch.nn.Module, tokenizer: Callable) -> Tuple[float, List[Tuple[str, str, str]]]:
    """Do words no caption held land nearest their attribute value? For each word of ``UNSEEN_WORDS``,
    the attribute concept whose text embedding is closest to it. Returns the share that are its own,
    and (word, its value, the nearest concept) for each."""
    concepts = attribute_concepts()
    vocabulary = encode_texts(model, tokenizer, concepts)
    rows = []
    for value, words in UNSEEN_WORDS.items():
        nearest = (encode_texts(model, tokenizer, list(words)) @ vocabulary.T).argmax(1).tolist()
        rows += [(word, value, concepts[j]) for word, j in zip(words, nearest)]
    return float(np.mean([own == near for _, own, near in rows])), rows


EVAL_N_TEST = 240  # the easy world's test split: 12 classes named after their attributes


def evaluate(model_name: str, checkpoint: str | Path, seed: int = 0, n_test: Optional[int] = None,
             num_workers: int = 0) -> Tuple[float, Dict[str, float], Dict[str, float], Tuple[float, list]]:
    """Zero-shot accuracy of a checkpoint on the test split of the ``easy`` shapes world (classes
    named after what they are, "red circle": the one where a class name can be read), loaded
    through ``load_backbone`` like the pipeline; attribute-word accuracies on the same images, with
    the words and with unseen synonyms; and where unseen words land (``unseen_words``)."""
    data = load_dataset("shapes", seed=seed, val_fraction=0.1, shapes_n_train=480,
                        shapes_n_test=n_test or EVAL_N_TEST, shapes_image_size=64,
                        shapes_class_attributes=("shape", "colour"), shapes_preset="easy")
    backbone = load_backbone(model_name, str(checkpoint), device="cpu")
    tokenizer = open_clip.get_tokenizer(model_name)
    test = data.splits["test"]
    images = preprocess_all(test, backbone.preprocess, num_workers)
    accuracy = zero_shot(backbone.model, tokenizer, images, test.labels, data.classes)
    cols = test.extra_columns()
    attrs = [dict(zip(cols, row)) for row in zip(*cols.values())]
    with torch.inference_mode():
        feats = backbone.model.encode_image(images.float(), normalize=True).float()
    return (accuracy, attribute_accuracy(backbone.model, tokenizer, feats, attrs),
            attribute_accuracy(backbone.model, tokenizer, feats, attrs, word=unseen_word),
            unseen_words(backbone.model, tokenizer))


@torch.no_grad()
def ring_accuracy(model_name: str, checkpoint: str | Path, seed: int = 0, n: int = 200,
                  rings: Rings = Rings()) -> Tuple[float, float]:
    """Does the model respond to a ring? On ``n`` test scenes of the ``scenes`` world, each object
    ringed in turn (the spatial branch's ring): the share of ringed copies whose embedding is
    closest to the caption of the ringed object among the scene's objects' captions; and the
    chance level (the mean of 1 / objects)."""
    from sparse_cbm.spatial.prompts import normalised_colour, preprocess_normalisation, ring_masks

    data = load_dataset("shapes", seed=seed, val_fraction=0.1, shapes_n_train=200, shapes_n_test=n,
                        shapes_image_size=64, shapes_class_attributes=("shape", "colour"), shapes_preset="scenes")
    backbone = load_backbone(model_name, str(checkpoint), device="cpu")
    source = data.splits["test"]
    colour = normalised_colour(rings.colour, *preprocess_normalisation(backbone.preprocess))
    right, total, chance = 0, 0, []
    for i in range(len(source.labels)):
        objects = source.objects(i)
        image = backbone.preprocess(source.load(i))[None]
        size = image.shape[-1]
        centres = np.array([[int(o["y"] * size), int(o["x"] * size)] for o in objects])
        masks = ring_masks(size, size, centres, rings.radius, rings.line_width)[:, None]
        copies = F.normalize(backbone.encode_images(image * (1 - masks) + colour * masks), dim=1)
        texts = F.normalize(backbone.encode_texts([f"a {o['colour']} {o['texture']} {o['shape']}" for o in objects]),
                            dim=1)
        right += int(((copies @ texts.T).argmax(1) == torch.arange(len(objects))).sum())
        total += len(objects)
        chance.append(1 / len(objects))
    return right / total, float(np.mean(chance))


def main(argv: Optional[Sequence[str]] = None) -> None:
    from sparse_cbm.runtime.runner import configure_logging

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", default=DEFAULT_OUT, help="checkpoint path (a float16 state_dict)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="open_clip architecture")
    defaults = {k: v.default for k, v in inspect.signature(train).parameters.items() if k != "model_name"}
    helps = {"seed": "seeds torch, numpy, the training images and the captions", "steps": "optimizer steps",
             "batch_size": "image-caption pairs a step", "lr": "peak AdamW learning rate",
             "weight_decay": "AdamW weight decay (not on gains, biases, logit scale)",
             "warmup": "linear warmup steps, then cosine decay", "pool_size": "training images rendered up front",
             "drop": "chance of leaving an attribute out of a caption", "num_workers": "processes rendering the pool",
             "scenes": "share of the pool that are scenes (a class object and 1-3 small others)",
             "rings": "chance that an image gets a ring around a random place, captioned by what it circles",
             "text_proj_scale": "a packaged text tower's projection starts at this multiple of its default init"}
    for name, default in defaults.items():
        if name != "progress":
            parser.add_argument("--" + name.replace("_", "-"), type=type(default), default=default,
                                help=helps[name])
    parser.add_argument("--eval-seed", type=int, default=0, help="shapes seed of the evaluated test split")
    args = parser.parse_args(argv)
    configure_logging()
    started = time.perf_counter()
    model = train(args.model, **{k: getattr(args, k) for k in defaults if k != "progress"})
    trained = time.perf_counter() - started
    path = save_checkpoint(model, args.out)
    log.info("trained in %.1f s (%d threads); wrote %s (%.2f MB, sha256 %s)", trained, torch.get_num_threads(),
             path, path.stat().st_size / 1e6, file_sha256(path))
    accuracy, attributes, synonyms, (landed, rows) = evaluate(args.model, path, seed=args.eval_seed)
    print(f"zero-shot top-1 on the shapes test split (seed {args.eval_seed}): {accuracy:.4f}")
    print("attribute-word accuracy: " + ", ".join(f"{a} {v:.3f}" for a, v in attributes.items()))
    print("the same with unseen synonyms: " + ", ".join(f"{a} {v:.3f}" for a, v in synonyms.items()))
    print(f"unseen words nearest their own attribute value: {landed:.3f} ({len(rows)} words); missed: "
          + (", ".join(f"{w} -> {near} (not {own})" for w, own, near in rows if own != near) or "none"))
    ringed, chance = ring_accuracy(args.model, path, seed=args.eval_seed)
    print(f"a ring picks the caption of the object it circles: {ringed:.4f} (chance {chance:.4f})")
    log.info("done in %.1f s", time.perf_counter() - started)


if __name__ == "__main__":
    main()
