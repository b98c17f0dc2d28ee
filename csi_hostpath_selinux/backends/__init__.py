"""Kinds of volume: one module each, registered here by the StorageClass parameter `kind`."""

from __future__ import annotations

from .base import Backend, BackendEnv, StageRequest
from .cifs import CIFSBackend
from .directory import DirectoryBackend
from .image import ImageBackend
from .nfs import NFSBackend

#: StorageClass `kind` parameter -> backend class. A vendor adds a kind by adding a module and a line.
BACKENDS: dict[str, type[Backend]] = {
    ImageBackend.kind: ImageBackend,
    DirectoryBackend.kind: DirectoryBackend,
    NFSBackend.kind: NFSBackend,
    CIFSBackend.kind: CIFSBackend,
}

DEFAULT_KIND = ImageBackend.kind

__all__ = [
    "BACKENDS",
    "DEFAULT_KIND",
    "Backend",
    "BackendEnv",
    "CIFSBackend",
    "DirectoryBackend",
    "ImageBackend",
    "NFSBackend",
    "StageRequest",
]
