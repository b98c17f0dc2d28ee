"""Image volumes: a sparse file under the state directory, on a loop device.

With mount access the image holds an ext4 or xfs filesystem, mounted with mount(2) at the
staging path, so a SELinux context= option reaches the kernel whole and the volume gets its own
superblock, hence its own label. With block access the loop device itself is the volume.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from .. import freeze, loopdev
from ..errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from ..models import AccessType, HealthIssue, HealthStatus, Staging, Volume
from ._files import copy_sparse, file_health, grow_file, has_sys_resource
from ._imagefs import (
    MIB,
    MINIMUM_BYTES,
    grow_copied_filesystem,
    grow_mounted_filesystem,
    make_filesystem,
)
from .base import Backend, StageRequest

__all__ = ["ImageBackend", "has_sys_resource"]


class ImageBackend(Backend):
    kind: ClassVar[str] = "image"
    supports_block: ClassVar[bool] = True
    fs_types: ClassVar[tuple[str, ...]] = ("ext4", "xfs")
    default_fs_type: ClassVar[str] = "ext4"
    node_expansion: ClassVar[bool] = True
    volume_suffix: ClassVar[str] = ".img"
    snapshot_suffix: ClassVar[str] = ".img"
    raw_block_snapshots: ClassVar[bool] = True

    def known_parameters(self) -> set[str]:
        return {"allowVolumeModeChange"}

    def check_parameters(self, parameters: Mapping[str, str]) -> dict[str, str]:
        params = super().check_parameters(parameters)
        if params.get("allowVolumeModeChange", "false") not in ("true", "false"):
            raise InvalidArgument('parameter allowVolumeModeChange must be "true" or "false"')
        return params

    def image_path(self, volume_id: str) -> Path:
        return self.env.volumes_dir / f"{volume_id}{self.volume_suffix}"

    def volume_path(self, volume_id: str) -> Path:
        return self.image_path(volume_id)

    def minimum_bytes(self, fs_type: str) -> int:
        return MINIMUM_BYTES.get(fs_type, MIB)

    def create(self, volume: Volume, secrets: Mapping[str, str], source: Path | None) -> None:
        path = self.image_path(volume.id)
        self.env.volumes_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            if source is not None:
                copy_sparse(source, path)
                with open(path, "r+b") as f:
                    grown = grow_file(f.fileno(), volume.capacity_bytes, self.env.preallocate)
                if grown and volume.access_type is AccessType.MOUNT:
                    grow_copied_filesystem(self.env, volume, path)
            else:
                fd = os.open(
                    path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
                )
                try:
                    grow_file(fd, volume.capacity_bytes, self.env.preallocate)
                finally:
                    os.close(fd)
                if volume.access_type is AccessType.MOUNT:
                    make_filesystem(volume.fs_type, path)
        except OSError as exc:
            path.unlink(missing_ok=True)
            if exc.errno == errno.ENOSPC:
                raise ResourceExhausted(
                    f"no space left in {self.env.volumes_dir} for the volume"
                ) from exc
            raise
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    def delete(self, volume: Volume, secrets: Mapping[str, str]) -> None:
        self.remove_storage(volume.id)

    def remove_storage(self, volume_id: str) -> None:
        path = self.image_path(volume_id)
        for dev in loopdev.find_by_backing_file(str(path)):
            loopdev.detach(dev.path)
        path.unlink(missing_ok=True)

    def attach(self, volume: Volume, read_only: bool) -> str:
        path = self.image_path(volume.id)
        if not path.is_file():
            raise FailedPrecondition(
                f"the image of volume {volume.id} is missing from {self.env.volumes_dir}"
            )
        return loopdev.attach(str(path), read_only=read_only).path

    def stage(self, request: StageRequest) -> str:
        volume = request.volume
        device = self.attach(volume, request.read_only)
        if volume.access_type is AccessType.BLOCK:
            return device
        options = request.flags.all_options()
        if request.read_only and "ro" not in options:
            options = [*options, "ro"]
        if volume.fs_type == "xfs" and "nouuid" not in options:
            # A restored or cloned image carries its source's filesystem UUID, and xfs refuses
            # to mount a second filesystem with a UUID that is already mounted.
            options = [*options, "nouuid"]
        try:
            self.env.mounter.mount(device, request.mount_target, volume.fs_type, options)
        except BaseException:
            loopdev.detach(device)
            raise
        return device

    def publish_device(self, volume: Volume, staged_device: str, read_only: bool) -> str:
        """A read-only block publish gets a read-only loop device of its own: a read-only bind
        mount of a device node does not stop writes to the device."""
        if not read_only:
            return staged_device
        return loopdev.attach(str(self.image_path(volume.id)), read_only=True).path

    def release_publish_device(self, volume: Volume, device: str) -> None:
        image = str(self.image_path(volume.id))
        if any(d.path == device for d in loopdev.find_by_backing_file(image)):
            loopdev.detach(device)

    def unstage(self, volume: Volume, staging_path: str, device: str) -> None:
        if volume.access_type is AccessType.MOUNT:
            self.env.mounter.unmount(staging_path)
        image = str(self.image_path(volume.id))
        for dev in loopdev.find_by_backing_file(image):
            loopdev.detach(dev.path)

    def snapshot(self, volume: Volume, dest: Path, mount_point: str | None) -> int:
        """Copy the image; a mounted filesystem is frozen for the copy and thawed after."""
        source = self.image_path(volume.id)
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            if mount_point is not None and volume.access_type is AccessType.MOUNT:
                with freeze.frozen(mount_point):
                    copy_sparse(source, dest)
            else:
                copy_sparse(source, dest)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        return dest.stat().st_size

    def expand(self, volume: Volume, new_bytes: int) -> bool:
        path = self.image_path(volume.id)
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            grow_file(fd, new_bytes, self.env.preallocate)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise ResourceExhausted(
                    f"no space left in {self.env.volumes_dir} to grow volume {volume.id} to "
                    f"{new_bytes} bytes"
                ) from exc
            raise
        finally:
            os.close(fd)
        return True

    def node_expand(self, volume: Volume, device: str, mount_path: str | None) -> None:
        image = str(self.image_path(volume.id))
        devices = [d.path for d in loopdev.find_by_backing_file(image)] or (
            [device] if device else []
        )
        for dev in devices:
            loopdev.refresh_capacity(dev)
        if volume.access_type is AccessType.MOUNT and devices:
            grow_mounted_filesystem(volume, devices[0], mount_path)

    def can_freeze(self, volume: Volume) -> bool:
        return volume.access_type is AccessType.MOUNT

    def health(self, volume: Volume) -> list[HealthIssue]:
        advice = "; restore it from a snapshot"
        return file_health(self.image_path(volume.id), volume, "Image", "image file", advice)

    def serves(self, volume: Volume, device: str) -> bool:
        image = str(self.image_path(volume.id))
        return any(d.path == device for d in loopdev.find_by_backing_file(image))

    def staged_health(self, volume: Volume, staging: Staging) -> list[HealthIssue]:
        if staging.device and not self.serves(volume, staging.device):
            return [
                HealthIssue(
                    status=HealthStatus.INACCESSIBLE,
                    reason="LoopDeviceDetached",
                    message=f"the loop device {staging.device} no longer serves the volume's image; "
                    "unstage and stage the volume again (restart the pods using it)",
                )
            ]
        return []
