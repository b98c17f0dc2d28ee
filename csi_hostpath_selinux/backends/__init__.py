"""Kinds of volume: one module each, registered here by the StorageClass parameter `kind`.

A vendor's kind is one subclass of Backend (backends/base.py documents every method), or of
BindMountBackend for a directory bind-mounted at the staging path, made known with
`register(MyBackend)` before the driver is built (server.serve reads BACKENDS when it
starts); docs/vendor-guide.md walks through it, and tests/contract checks the result.
"""

from __future__ import annotations

import os
import re

from ._files import BindMountBackend
from .base import Backend, BackendEnv, StageRequest
from .cifs import CIFSBackend
from .directory import DirectoryBackend
from .fake import FakeBackend
from .image import ImageBackend
from .nfs import NFSBackend

#: StorageClass `kind` parameter -> backend class, of the kinds this driver serves.
BACKENDS: dict[str, type[Backend]] = {}

DEFAULT_KIND = ImageBackend.kind

#: Set to "1" to serve the test kind `fake` (backends/fake.py); never on a production node.
FAKE_KIND_ENV = "CSI_HOSTPATH_SELINUX_FAKE_KIND"

KIND_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


def register(backend: type[Backend]) -> type[Backend]:
    """Serve volumes of backend.kind from now on (usable as a class decorator).

    Refuses (ValueError) a kind name StorageClasses cannot carry, a kind already taken by another
    class, and a local kind whose volume_suffix or snapshot_suffix another local kind already
    uses (their orphan scans would claim each other's files).
    """
    kind = getattr(backend, "kind", "")
    if not isinstance(kind, str) or not KIND_RE.fullmatch(kind):
        raise ValueError(f"{backend.__name__}.kind must match {KIND_RE.pattern}, got {kind!r}")
    taken = BACKENDS.get(kind)
    if taken is not None and taken is not backend:
        raise ValueError(f"kind {kind!r} is already served by {taken.__name__}")
    for other in BACKENDS.values():
        if other is backend or not (other.stored_in_state_dir and backend.stored_in_state_dir):
            continue
        if other.volume_suffix == backend.volume_suffix:
            raise ValueError(
                f"{backend.__name__}.volume_suffix {backend.volume_suffix!r} is already used by "
                f"kind {other.kind!r}"
            )
        if backend.snapshot_suffix and other.snapshot_suffix == backend.snapshot_suffix:
            raise ValueError(
                f"{backend.__name__}.snapshot_suffix {backend.snapshot_suffix!r} is already used "
                f"by kind {other.kind!r}"
            )
    BACKENDS[kind] = backend
    return backend


def unregister(kind: str) -> None:
    """Stop serving a kind (tests that registered one undo it with this)."""
    BACKENDS.pop(kind, None)


for _builtin in (ImageBackend, DirectoryBackend, NFSBackend, CIFSBackend):
    register(_builtin)
if os.environ.get(FAKE_KIND_ENV) == "1":
    register(FakeBackend)

__all__ = [
    "BACKENDS",
    "DEFAULT_KIND",
    "FAKE_KIND_ENV",
    "Backend",
    "BackendEnv",
    "BindMountBackend",
    "CIFSBackend",
    "DirectoryBackend",
    "FakeBackend",
    "ImageBackend",
    "NFSBackend",
    "StageRequest",
    "register",
    "unregister",
]
