"""Cache manifests: reading one, and refusing a cache made by another backbone."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, Optional

from sparse_cbm.errors import CacheMismatchError

MANIFEST = "manifest.json"


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def describe_backbone(identity: Dict[str, Any]) -> str:
    sha = identity.get("checkpoint_sha256")
    return f"{identity.get('model')} ({identity.get('pretrained')}{', sha256 ' + sha[:12] if sha else ''})"


def check_backbone(manifest: Dict[str, Any], expected: Dict[str, Any], where: str | Path) -> None:
    """Refuse a cache whose backbone differs from the one the reader expects, naming both."""
    got = manifest.get("backbone", {})
    keys = ("model", "pretrained", "checkpoint_sha256")
    if any(got.get(k) != expected.get(k) for k in keys):
        raise CacheMismatchError(
            f"{where} was made by backbone {describe_backbone(got)}, but this run uses "
            f"{describe_backbone(expected)}. Re-run `dvc repro` so that every cache comes from the same backbone.")


def read_manifest(folder: str | Path, format_version: int, stage: str,
                  expect_backbone: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The manifest of a cache folder, checked for presence, format and (optionally) backbone."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise CacheMismatchError(f"{folder} has no {MANIFEST}: the cache is missing or incomplete. "
                                 f"Run `dvc repro {stage}`.")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format_version") != format_version:
        raise CacheMismatchError(f"{folder} has cache format {manifest.get('format_version')}, this version reads "
                                 f"{format_version}. Run `dvc repro -f {stage}`.")
    if expect_backbone is not None:
        check_backbone(manifest, expect_backbone, folder)
    return manifest
