"""Smoke tests of the benchmark scripts: every ``bench/*.py`` (but the shared ``common.py``) runs in
this process at the tiny size of its ``SMOKE_ARGS`` and prints the lines it promises, so a change of
the code it measures that breaks a script fails here rather than on the day someone runs it.

A new script is picked up by the glob; it needs ``main(argv)``, ``SMOKE_ARGS`` (``{tmp}`` becomes a
scratch folder) and an entry in ``PROMISED`` below."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = [p.stem for p in sorted((REPO / "bench").glob("*.py")) if p.name not in ("common.py", "__init__.py")]

F = r"\d+\.\d+"  # a number printed with decimals, such as a ratio
N = r"[\d,]+"  # a count or a rate printed without decimals
CLASSIFIERS = ("zero-shot", "CMS factored", "CMS direct", "descriptions")

# script -> regexes, each of which must match a whole line of what the smoke run prints
PROMISED = {
    "cache_check": [
        rf"cache file of {F} GB \({N} x 64 float16 \.npy\), {N} CPUs; in the page cache \(just written\)",
        rf"sha256 check: {F} s \({F} GB/s\) \| one read pass \(NpyRows, 4,096 rows a batch, to float32\): {F} s "
        rf"\({F} GB/s\) \| check / read pass {F}",
        rf"verify_files: first check {F} s, second in the same process {F} ms \(memoised\)",
    ],
    "cost_model": [
        rf"torch \S+, {N} threads; ImageNet train 1,281,167 images, prompt grid 7",
        rf"ViT-B-32 at 224 px: {F} GFLOP an image \| this CPU {F} img/s \(fp32\) \| cache an image: embedding 1,024 B, "
        rf"prompted copies 50,176 B, feature maps \(7x7x768\) 75,264 B",
        rf"  embeddings \(embed_images, 1 forward an image\): {N} PFLOP \| disk 1\.3 GB \| this CPU .+ \| "
        rf"A100 x 1 / 8 / 64: .+ \| H100 x 1 / 8 / 64: .+",
        rf"  SALF prompted copies \(embed_prompted, 49 forwards an image\): {N} PFLOP \| disk 64\.3 GB \| .+",
        rf"published: ViT-B-32 on A100: 2,500 img/s \(clip-retrieval's distributed_clip_inference\.md, .+\)",
    ],
    "dag": [
        rf"commit [0-9a-f]{{10}}, params\.yaml, {N} CPUs; each stage forced, alone, in DAG order:",
        rf"  concepts +{F} s \| peak RSS +{N} MiB",
        rf"whole: {F} s = 0 min {N} s for 1 stages \| largest peak RSS {N} MiB \| target 8 min: met",
    ],
    "device": [
        rf"commit [0-9a-f]{{10}}, params\.yaml with backbone\.device and train\.device cpu \(CPU\), torch \S+; each "
        rf"stage forced, alone, in DAG order:",
        rf"  concepts +{F} s \| peak RSS +{N} MiB",
        rf"whole: {F} s = 0 min {N} s for 1 stages \| largest peak RSS {N} MiB \| target 8 min: met",
        r"no stage run declares metrics: nothing compared with the committed run",
    ],
    "embed_images": [
        rf"machine: {N} CPUs, torch \S+, {N} threads; batch 8, DataLoader workers 0",
        rf" +sparse-cbm-tiny \(auto\): bare forward +{F} img/s \| stage end-to-end +{F} img/s \(16 JPEGs 32x32\) \| "
        rf"ratio {F} \(target >= 0\.8\) \| peak RSS {N} MiB",
        rf"peak RSS of the stage \(sparse-cbm-tiny\): {N} MiB for 16 images, {N} MiB for 16 images "
        rf"\(ratio {F}; flat = bounded by the batch\)",
    ],
    "evaluate": [
        rf"64 x 16 float16 image embeddings \(NpyRows\), \|D\|=24 concepts, \|C\|=6 classes, batch 32, {N} threads; "
        rf"matmul peak {F} GFLOP/s \(float32 64\^3, same process\); best of 1",
        *[rf"{re.escape(name)} *: +{N} images/s \| +{F} MFLOP/image \| +{F} GFLOP/s, ratio {F} \(target >= 0\.6\) \| "
          rf"setup {F} s \| top-1 {F}, top-5 {F}" for name in CLASSIFIERS],
        rf"CMS factored and direct predict the same class for {F}% of images",
        rf"peak RSS: {N} MiB for 64 rows, {N} MiB for 128 rows \(ratio {F}; flat = bounded by the batch\); "
        rf"above the process after importing torch: -?{N} and -?{N} MiB",
    ],
    "explorer": [
        rf"SparseCBM\(.*\); {N} CPUs, torch \S+, {N} threads; region queries \(box \+ edit\) on {N} cached {N} px "
        rf"images, 8 a setting:",
        rf"   1 concurrent clients: median {F} ms \| p95 {F} ms \| {F} requests/s \| errors 0",
        rf"   4 concurrent clients: median {F} ms \| p95 {F} ms \| {F} requests/s \| errors 0",
        rf"p95 at 4 clients: {F} ms \(target < 300 ms for a cached image\): (met|missed)",
        rf"uploaded image \(512 px PNG, {N} KiB\): upload {F} ms \+ first explanation {F} ms \(its feature maps, "
        rf"then cached\)",
    ],
    "filter": [
        rf"60 concepts x 12 classes, MiniLM-L6 on CPU, {N} threads",
        rf"encoding: {F} s \| filter_concepts on the embeddings \(steps 1-4, matmuls included\): {F} s \| "
        rf"kept {N}, removed \{{.*'concept_similarity': {N}.*\}}",
        rf"on the same similarity matrices \(made in {F} s\): vectorised {F} s \| pairwise Python loops {F} s \| "
        rf"speed-up {N}x \(target >= 50x\) \| same decisions: True",
        rf"peak RSS: {N} MiB",
    ],
    "precision": [
        rf"batches of 1 images, {N} threads, kernels \w+; best of 1",
        rf"  image embedding   : fp32 +{F} images/s \| fp64 +{F} images/s \| ratio fp64 / fp32 {F} \(sparse-cbm-shapes-minilm\)",
        rf"  prompted embedding: fp32 +{F} copies/s \| fp64 +{F} copies/s \| ratio fp64 / fp32 {F} \(sparse-cbm-shapes-minilm\)",
    ],
    "prompted": [
        rf"sparse-cbm-shapes-minilm \(\S+shapes-clip-minilm\.pt\), 1 images x {N} copies, input \(3, {N}, {N}\):",
        rf"  bare forward +{F} copies/s",
        rf"  prompted +{F} copies/s",
        rf"  ratio prompted / bare forward: {F} \(target >= 0\.8\)",
        rf"  prompted-copy cache: {F} MB per 1,000 images \({N} x {N} fp16\)",
    ],
    "sharded": [
        rf"machine: {N} usable cores, torch \S+; embed_prompted on the default prompting CLIP, grid 2 \(4 copies an "
        rf"image\), threads 1 a worker",
        rf" 1 worker : 4 images, embedding {F} img/s \| stage wall {F} s \({F} img/s with start-up\) \| peak RSS a "
        rf"worker {N} MiB",
        rf" 2 workers: 4 images, embedding {F} img/s \| stage wall {F} s \({F} img/s with start-up\) \| peak RSS a "
        rf"worker {N}, {N} MiB",
        rf"ratio 2 workers / 1 \(embedding throughput\): {F} \(target >= 1\.6\): (met|missed) \| with start-up: "
        rf"{F} \| caches byte-identical: True",
    ],
    "sparse_layer": [
        rf"\|D\|=16 \|C\|=4 d=16 batch 8, {N} threads, 48 rows in a float16 \.npy \(NpyRows\), SAGA table on disk; "
        rf"matmul peak {F} GFLOP/s \(float32 64\^3, same run\)",
        rf"streaming pass \(activations per batch, mean/std/max lambda\): +{F} s per pass \| +{N} rows/s \| "
        rf"+{F} GFLOP/s, ratio {F}",
        rf"SAGA epoch at one lambda \(glm-saga train_saga\): {F} s a step \(mean of 2 after a warm-up\) -> +{F} min "
        rf"per pass of 48 rows \({F} h for ImageNet's 1,281,167\) \| +{F} GFLOP/s, ratio {F}",
        rf"SAGA epoch at one lambda \(ours, sparse_cbm.bottleneck.saga\): {F} s a step -> +{F} min per pass \({F} h "
        rf"for ImageNet\) \| +{F} GFLOP/s, ratio {F} \(target >= 0\.5\) \| {F}x glm-saga's step; weights after the "
        rf"same steps differ by \S+ at most",
        rf"peak RSS with our SAGA steps: {N} MiB for 48 rows, {N} MiB for 96 rows \(ratio {F}; flat = bounded by the "
        rf"batch\)",
        rf"  where it goes: glm-saga forms each of a step's two gradients as a 8 x 4 x 16 broadcast then a mean "
        rf"\({F} GB\): {F} s; the same gradient as a matrix product: {F} s \({N}x\)",
        rf"peak RSS after the streaming pass: {N} MiB for 48 rows, {N} MiB for 96 rows \(ratio {F}; flat = bounded "
        rf"by the batch\)",
        rf"peak RSS of the whole run \(streaming pass \+ SAGA steps\): {N} MiB for 48 rows, {N} MiB for 96 rows "
        rf"\(ratio {F}; the 8 x 4 x 16 broadcast dominates\)",
    ],
    "threads": [
        rf"machine: os\.cpu_count\(\) {N}, usable cores {N} \(cgroup quota .*\); workload: sparse path, 300 rows x "
        rf"12 concepts x 3 classes, 2 points x 1 epochs",
        rf"stage +alone +{F} s +two at once +{F} s and +{F} s +ratio +{F} \(fair sharing: 2\.00\)",
    ],
    "train": [
        rf"\|D\|=16 \|C\|=4 d=16 batch 8, gumbel, {N} threads, 32 rows in a float16 \.npy",
        rf"train: +{F} samples/s \| +{F} GFLOP/s vs matmul peak +{F} GFLOP/s: ratio {F} \(target >= 0\.5\)",
        rf"peak RSS: {N} MiB for 32 rows, {N} MiB for 64 rows \(ratio {F}; flat = bounded by the batch\)",
        rf"released code's step \(sparse-cbm-tiny forward every step\): +{F} s = image forward {F} s for 8 images "
        rf"\+ text forward {F} s for 16 concepts \(measured on 2, scaled\) \+ the bottleneck {F} s \| ours, on "
        rf"cached embeddings: {F} s a step, {N}x less",
    ],
}


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny products run faster on one thread than on two that wait for each other, on a shared
    machine most of all; this process's thread count is restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def missing_lines(promised: list, printed: str) -> list:
    """The promised regexes that match no whole line of ``printed``."""
    return [p for p in promised if not re.search(rf"^{p}$", printed, re.MULTILINE)]


def test_missing_lines_reports_a_line_that_is_not_printed():
    promised = [rf"ratio {F}", rf"speed-up {N}x"]
    assert missing_lines(promised, "ratio 0.25\nspeed-up 12x\n") == []
    assert missing_lines(promised, "ratio nan\nspeed-up 12x (target >= 50x)\n") == promised


def test_every_script_has_a_table_entry():
    assert sorted(PROMISED) == SCRIPTS


# Scripts whose smoke run launches stage processes (tens of seconds of start-up): the pipeline tier runs them.
SLOW = {"sharded"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.pipeline) if n in SLOW else n for n in SCRIPTS])
def test_script_runs_at_smoke_size(name, tmp_path, capsys):
    module = importlib.import_module(f"bench.{name}")
    assert callable(getattr(module, "main", None)), f"bench/{name}.py has no main(argv)"
    assert isinstance(getattr(module, "SMOKE_ARGS", None), list), f"bench/{name}.py has no SMOKE_ARGS list"
    assert name in PROMISED, f"tests/unit/test_bench.py's PROMISED has no lines for bench/{name}.py"
    module.main([arg.replace("{tmp}", str(tmp_path)) for arg in module.SMOKE_ARGS])
    printed = capsys.readouterr().out
    missing = missing_lines(PROMISED[name], printed)
    assert not missing, f"bench/{name}.py printed no line matching {missing}; it printed:\n{printed}"
