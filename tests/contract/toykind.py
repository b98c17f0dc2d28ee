"""The `toy` kind: the example of docs/vendor-guide.md, written from outside the package.

It uses only the documented interface (csi_hostpath_selinux.backends: BindMountBackend, register;
models), as a vendor's own kind would. A toy volume is a directory `<volumes>/<id>.toy`,
bind-mounted at the staging path; a snapshot is a copy of that tree at `<snapshots>/<id>.toy`.
BindMountBackend brings what every bind-mounted directory kind does alike (stage, unstage,
delete, expansion, health): the toy writes only how a volume is made and snapshotted. It is
registered by the contract suite with `register(ToyBackend)`, never by editing the package.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from csi_hostpath_selinux.backends import BindMountBackend
from csi_hostpath_selinux.models import Volume


class ToyBackend(BindMountBackend):
    # What the kind is and can do (base.py documents each declaration; BindMountBackend sets
    # can_label False: a bind mount shares the host's superblock).
    kind: ClassVar[str] = "toy"
    no_label_reason: ClassVar[str] = (
        "volumes of kind 'toy' are bind mounts of a directory, which cannot carry a label"
    )
    # Where it lives: volume_path and snapshot_path build the paths from these, and the orphan
    # scan (stored_volume_ids, stored_snapshot_ids) looks for them.
    volume_suffix: ClassVar[str] = ".toy"
    snapshot_suffix: ClassVar[str] = ".toy"

    def create(self, volume: Volume, secrets: Mapping[str, str], source: Path | None) -> None:
        path = self.volume_path(volume.id)
        self.env.volumes_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if source is None:
            os.mkdir(path, 0o777)
        else:  # a restore (from snapshot_path) or a clone (from clone_source): both are trees
            shutil.copytree(source, path, symlinks=True)
        os.chmod(path, 0o777)  # noqa: S103 (pods run as any uid)

    def snapshot(self, volume: Volume, dest: Path, mount_point: str | None) -> int:
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.copytree(self.volume_path(volume.id), dest, symlinks=True)
        return sum(f.stat().st_size for f in dest.rglob("*") if f.is_file() and not f.is_symlink())
