"""Where tensors run: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""

from __future__ import annotations

import re

import torch

from sparse_cbm.errors import SparseCbmError

DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:\d+)?)$"


class DeviceError(SparseCbmError):
    """A device that is misspelt or not available on this machine."""


def resolve_device(spec: str) -> torch.device:
    if not re.match(DEVICE_PATTERN, spec):
        raise DeviceError(f"device {spec!r} is not one of auto, cpu, mps, cuda or cuda:N.")
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"device {spec!r} is asked for but no CUDA device is available; use 'auto' or 'cpu'.")
    if spec == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("device 'mps' is asked for but MPS is not available; use 'auto' or 'cpu'.")
    return torch.device(spec)


def model_dtype(module: torch.nn.Module) -> torch.dtype:
    """The floating dtype of a module's weights (float32 when it has none): what its inputs are cast to, so that a
    backbone loaded with ``backbone.precision: fp64`` computes in float64 end to end."""
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
