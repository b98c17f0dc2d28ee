"""The `toy` kind: the example of docs/vendor-guide.md, written from outside the package.

It uses only the documented interface (csi_hostpath_selinux.backends: Backend, StageRequest,
register; models and errors), as a vendor's own kind would. A toy volume is a directory
`<volumes>/<id>.toy`, bind-mounted at the staging path; a snapshot is a copy of that tree at
`<snapshots>/<id>.toy`. It is registered by the contract suite with `register(ToyBackend)`,
never by editing the package.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from csi_hostpath_selinux.backends import Backend, StageRequest
from csi_hostpath_selinux.models import HealthIssue, HealthStatus, Volume


class ToyBackend(Backend):
    # What the kind is and can do (base.py documents each declaration).
    kind: ClassVar[str] = "toy"
    can_label: ClassVar[bool] = False  # a bind mount shares the host's superblock
    no_label_reason: ClassVar[str] = (
        "volumes of kind 'toy' are bind mounts of a directory, which cannot carry a label"
    )
    # Where it lives: Backend.volume_path and Backend.snapshot_path build the paths from these,
    # and the orphan scan (stored_volume_ids, stored_snapshot_ids) looks for them.
    volume_suffix: ClassVar[str] = ".toy"
    snapshot_suffix: ClassVar[str] = ".toy"

    def create(self, volume: Volume, secrets: Mapping[str, str], source: Path | None) -> None:
        path = self.volume_path(volume.id)
        assert path is not None  # a local kind: its storage is in the state directory
        self.env.volumes_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if source is None:
            os.mkdir(path, 0o777)
        else:  # a restore (from snapshot_path) or a clone (from clone_source): both are trees
            shutil.copytree(source, path, symlinks=True)
        os.chmod(path, 0o777)  # noqa: S103 (pods run as any uid)

    def delete(self, volume: Volume, secrets: Mapping[str, str]) -> None:
        self.remove_storage(volume.id)  # the base removes volume_path, never following links

    def stage(self, request: StageRequest) -> str:
        path = self.volume_path(request.volume.id)
        self.env.mounter.bind(
            str(path),
            request.mount_target,
            read_only=request.read_only,
            extra_flags=tuple(request.flags.other),
        )
        return ""

    def unstage(self, volume: Volume, staging_path: str, device: str) -> None:
        self.env.mounter.unmount(staging_path)

    def snapshot(self, volume: Volume, dest: Path, mount_point: str | None) -> int:
        path = self.volume_path(volume.id)
        assert path is not None
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.copytree(path, dest, symlinks=True)
        return sum(f.stat().st_size for f in dest.rglob("*") if f.is_file() and not f.is_symlink())

    def expand(self, volume: Volume, new_bytes: int) -> bool:
        return False  # a directory has no size of its own: the catalog's capacity is the size

    def node_expand(self, volume: Volume, device: str, mount_path: str | None) -> None:
        return

    def health(self, volume: Volume) -> list[HealthIssue]:
        path = self.volume_path(volume.id)
        if path is None or path.is_symlink() or not path.is_dir():
            return [
                HealthIssue(
                    status=HealthStatus.DATA_LOSS,
                    reason="ToyDirectoryMissing",
                    message=f"{path} is gone",
                )
            ]
        return []
