"""Where a run computes: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""

from __future__ import annotations

import re

import torch

DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


class DeviceUnavailable(RuntimeError):
    """The config asks for a device this machine does not have."""


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailable(f"device: {spec!r} asked for, but this machine has no CUDA device")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceUnavailable(
                f"device: {spec!r} asked for, but this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    return device


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast of the forward on ``device`` to ``dtype``; off when ``dtype`` is None."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
