"""Cache manifests: reading one, checking its files against it, and refusing a cache made by another backbone.

Every manifest that lists its files' sha256 has them checked when it is read: a file changed, truncated or
missing since its stage wrote it is a one-line error naming the file and the fix, not silent garbage or a
raw traceback from numpy or pyarrow. A file is hashed once per process (``_VERIFIED``, keyed by its inode, size,
mtime and ctime: a replaced file is hashed again); ``bench/cache_check.py`` measures the cost against reading the file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, Optional

from sparse_cbm.errors import CacheMismatchError

MANIFEST = "manifest.json"
_VERIFIED: Dict[tuple, str] = {}  # (path, device, inode, size, mtime_ns, ctime_ns) -> sha256 checked in this process


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


def verify_files(folder: Path, manifest: Dict[str, Any], stage: str) -> None:
    """Check each file the manifest lists under ``sha256`` against it."""
    fix = f"Run `dvc checkout {folder.parent if folder.name in ('train', 'val', 'test', 'test_corrupted') else folder}` " \
          f"to restore it from DVC's cache, or `dvc repro -f {stage}` to rebuild it."
    for name, recorded in sorted((manifest.get("sha256") or {}).items()):
        path = folder / name
        if not path.is_file():
            raise CacheMismatchError(f"{path} is missing, but its manifest lists it. {fix}")
        st = path.stat()
        key = (str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if _VERIFIED.get(key) == recorded:
            continue
        actual = file_sha256(path)
        if actual != recorded:
            raise CacheMismatchError(f"{path} ({st.st_size:,} bytes) has sha256 {actual[:12]}, its manifest recorded "
                                     f"{recorded[:12]}: it changed after `{stage}` wrote it. {fix}")
        _VERIFIED[key] = recorded


def read_manifest(folder: str | Path, format_version: int, stage: str,
                  expect_backbone: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The manifest of a cache folder, checked for presence, format and (optionally) backbone."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise CacheMismatchError(f"{folder} has no {MANIFEST}: the cache is missing or incomplete. "
                                 f"Run `dvc repro {stage}`.")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CacheMismatchError(f"{path} is damaged ({exc}). Run `dvc checkout {folder}`, or `dvc repro -f {stage}`.") from None
    if manifest.get("format_version") != format_version:
        raise CacheMismatchError(f"{folder} has cache format {manifest.get('format_version')}, this version reads "
                                 f"{format_version}. Run `dvc repro -f {stage}`.")
    if expect_backbone is not None:
        check_backbone(manifest, expect_backbone, folder)
    verify_files(folder, manifest, stage)
    return manifest
