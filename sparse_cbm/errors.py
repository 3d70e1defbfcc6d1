"""Errors that a stage reports as one clear line instead of a traceback.

Every message names the problem and the fix.
"""


class SparseCbmError(Exception):
    """Base class: the stage runner prints ``<stage>: error: <message>`` and exits 2."""


class ParamsError(SparseCbmError):
    """A misspelt key, a wrong type or a value out of range in params.yaml."""


class DatasetError(SparseCbmError):
    """A dataset that cannot be found, downloaded or read."""


class CorruptImageError(DatasetError):
    """An image file that cannot be decoded."""

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(
            f"cannot read image {path}: {reason}. Remove or replace the file, "
            f"or set dataset.skip_corrupt: true to skip unreadable images (they are counted in the manifest)."
        )


class BackboneError(SparseCbmError):
    """A CLIP backbone that cannot be built or whose weights cannot be loaded."""


class CacheMismatchError(SparseCbmError):
    """A cache made by another backbone, dataset or concept list than the reader expects."""


class ConceptSourceError(SparseCbmError):
    """Concepts that cannot be fetched or read: an API that is down, a bad file, a missing key."""


class ConceptFilterError(SparseCbmError):
    """A concept set that the filter cannot work with, for example one left empty."""


class TrainingError(SparseCbmError):
    """Training that ended in a model that cannot be right, for example a sparse layer that uses no concept."""


class DocsError(SparseCbmError):
    """Generated documentation that cannot be made: a field without a description, a missing block."""
