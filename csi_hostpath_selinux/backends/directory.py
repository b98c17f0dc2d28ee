"""Directory volumes: a plain directory under the state directory, bind-mounted.

A bind mount shares the host filesystem's superblock, and the kernel ignores context= on a bind
mount (measured, see DESIGN.md), so these volumes cannot carry a per-volume SELinux label. The
node layer refuses a labelled request for them (can_label is False) rather than hand a pod an
unlabelled volume while kubelet believes it is labelled.

Staging, delete, expansion and health are BindMountBackend's (backends/_files.py): this module
only says how a volume is created, restored and snapshotted.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from ..models import Volume
from ._files import BindMountBackend, run_tool


class DirectoryBackend(BindMountBackend):
    kind: ClassVar[str] = "directory"
    no_label_reason: ClassVar[str] = (
        "volumes of kind 'directory' are bind mounts of a directory on the node's own "
        "filesystem, and a bind mount cannot carry its own SELinux context"
    )

    def create(self, volume: Volume, secrets: Mapping[str, str], source: Path | None) -> None:
        self.env.volumes_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.volume_path(volume.id)
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
                    str(self.volume_path(volume.id)),
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
