"""Directory volumes: a plain directory under the state directory, bind-mounted.

A bind mount shares the host filesystem's superblock, and the kernel ignores context= on a bind
mount (measured, see DESIGN.md), so these volumes cannot carry a per-volume SELinux label. The
node layer refuses a labelled request for them (can_label is False) rather than hand a pod an
unlabelled volume while kubelet believes it is labelled.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from ..models import HealthIssue, HealthStatus, Volume
from ._files import run_tool
from .base import Backend, StageRequest


class DirectoryBackend(Backend):
    kind: ClassVar[str] = "directory"
    can_label: ClassVar[bool] = False
    no_label_reason: ClassVar[str] = (
        "volumes of kind 'directory' are bind mounts of a directory on the node's own "
        "filesystem, and a bind mount cannot carry its own SELinux context"
    )

    def dir_path(self, volume_id: str) -> Path:
        return self.env.volumes_dir / volume_id

    def create(self, volume: Volume, secrets: Mapping[str, str], source: Path | None) -> None:
        self.env.volumes_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.dir_path(volume.id)
        os.mkdir(path, 0o777)
        try:
            if source is not None and source.is_dir():
                # A clone: copy the tree, keeping symlinks as links (never following them).
                shutil.copytree(source, path, symlinks=True, dirs_exist_ok=True)
            elif source is not None:
                # A snapshot of a directory volume is a tar archive of its contents.
                run_tool(
                    ["tar", "-x", "-C", str(path), "-f", str(source)], "restoring the snapshot"
                )
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        os.chmod(path, 0o777)  # pods run as any uid; the mode must not depend on the umask

    def delete(self, volume: Volume, secrets: Mapping[str, str]) -> None:
        path = self.dir_path(volume.id)
        try:
            # An empty directory (the common case) goes with one system call. rmdir never
            # follows a symlink: a link in the volume's place fails with ENOTDIR, below.
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            pass  # not empty, or not a directory: as below
        if path.is_symlink():
            path.unlink()
        elif path.exists():
            # rmtree refuses to follow symlinks inside the tree (it removes the links themselves).
            shutil.rmtree(path)

    snapshot_suffix: ClassVar[str] = ".tar"

    def snapshot(self, volume: Volume, dest: Path, mount_point: str | None) -> int:
        """Archive the directory's contents (a directory has no image to copy)."""
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            run_tool(
                [
                    "tar",
                    "-c",
                    "--sparse",
                    "-C",
                    str(self.dir_path(volume.id)),
                    "-f",
                    str(dest),
                    ".",
                ],
                "archiving the directory",
            )
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        return dest.stat().st_size

    def expand(self, volume: Volume, new_bytes: int) -> bool:
        return False  # a directory has no size of its own to grow

    def node_expand(self, volume: Volume, device: str, mount_path: str | None) -> None:
        return  # nothing on the node holds the size: the new capacity is the catalog's

    def stage(self, request: StageRequest) -> str:
        source = self.dir_path(request.volume.id)
        self.env.mounter.bind(
            str(source),
            request.mount_target,
            read_only=request.read_only,
            extra_flags=tuple(request.flags.other),
        )
        return ""

    def unstage(self, volume: Volume, staging_path: str, device: str) -> None:
        self.env.mounter.unmount(staging_path)

    def health(self, volume: Volume) -> list[HealthIssue]:
        path = self.dir_path(volume.id)
        if path.is_symlink() or not path.is_dir():
            return [
                HealthIssue(
                    status=HealthStatus.DATA_LOSS,
                    reason="DirectoryMissing",
                    message=f"the directory {path} of the volume is gone; restore it from a snapshot",
                )
            ]
        return []
