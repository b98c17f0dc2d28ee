"""The `fake` kind: a TEST AND TEACHING kind, not storage to run pods on in production.

A fake volume is a directory `<volumes>/<id>.fake` holding one sparse file, `data`, of the
volume's size; a snapshot is a copy of that file, `<snapshots>/<id>.fake`. Everything the
controller does with it (create, restore, clone, snapshot, expand, delete, health, the orphan
scan) is plain file work in the state directory: no loop device, no mkfs, no mount, no root, so
the controller domain is unit-tested over it (tests/unit/test_controller_domain.py). Staging is
honest, not faked: it bind-mounts the volume's directory, which needs the privileges every other
kind's staging needs, and like `directory` it cannot carry a per-volume SELinux label.

Served only when asked for: `backends.register(FakeBackend)` (what tests do), or the environment
variable CSI_HOSTPATH_SELINUX_FAKE_KIND=1 in the driver's environment (to try the kind through
gRPC, e.g. with csi-sanity). Never set it on a production node: the `data` file is not a
filesystem a pod could use, only a stand-in that keeps sizes and bytes observable.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from ..errors import ResourceExhausted
from ..models import HealthIssue, Volume
from ._files import BindMountBackend, file_health, grow_file
from .base import remove_path

#: The one file of a fake volume's directory.
DATA = "data"


class FakeBackend(BindMountBackend):
    kind: ClassVar[str] = "fake"
    no_label_reason: ClassVar[str] = (
        "volumes of kind 'fake' are bind mounts of a directory on the node's own filesystem "
        "(a test kind), and a bind mount cannot carry its own SELinux context"
    )
    volume_suffix: ClassVar[str] = ".fake"
    snapshot_suffix: ClassVar[str] = ".fake"

    def data_path(self, volume_id: str) -> Path:
        return self.volume_path(volume_id) / DATA

    def create(self, volume: Volume, secrets: Mapping[str, str], source: Path | None) -> None:
        self.env.volumes_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.volume_path(volume.id)
        os.mkdir(path, 0o700)
        try:
            data = self.data_path(volume.id)
            if source is not None:
                # A clone's source is a volume directory, a restore's a snapshot file.
                shutil.copyfile(source / DATA if source.is_dir() else source, data)
            self._grow(data, volume.capacity_bytes)
        except BaseException:
            remove_path(path)
            raise

    def _grow(self, data: Path, size: int) -> None:
        fd = os.open(data, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            grow_file(fd, size, self.env.preallocate)
        except OSError as exc:
            raise ResourceExhausted(f"cannot give {data} {size} bytes: {exc.strerror}") from exc
        finally:
            os.close(fd)

    def snapshot(self, volume: Volume, dest: Path, mount_point: str | None) -> int:
        """Copy the data file (a live fake volume is not frozen: can_freeze is False)."""
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            shutil.copyfile(self.data_path(volume.id), dest, follow_symlinks=False)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        return dest.stat().st_size

    def expand(self, volume: Volume, new_bytes: int) -> bool:
        self._grow(self.data_path(volume.id), new_bytes)
        return False  # nothing on the node holds the size

    def health(self, volume: Volume) -> list[HealthIssue]:
        return file_health(self.data_path(volume.id), volume, "FakeData", "data file", "")
