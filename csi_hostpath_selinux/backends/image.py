"""Image volumes: a sparse file under the state directory, on a loop device.

With mount access the image holds an ext4 or xfs filesystem, mounted with mount(2) at the
staging path, so a SELinux context= option reaches the kernel whole and the volume gets its own
superblock, hence its own label. With block access the loop device itself is the volume.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from .. import freeze, loopdev
from ..errors import FailedPrecondition, Internal, InvalidArgument, ResourceExhausted
from ..models import AccessType, HealthIssue, HealthStatus, Volume
from .base import Backend, StageRequest

MIB = 1024 * 1024

#: mkfs commands per filesystem: quiet, no discard (the image is sparse already), lazy init so
#: a 10 GiB filesystem is made in well under a second.
MKFS: dict[str, list[str]] = {
    "ext4": [
        "mkfs.ext4",
        "-q",
        "-F",
        "-m",
        "0",
        "-E",
        "lazy_itable_init=1,lazy_journal_init=1,nodiscard",
    ],
    "xfs": ["mkfs.xfs", "-q", "-f", "-K"],
}

#: The smallest filesystem each mkfs accepts (xfsprogs refuses filesystems under 300 MiB).
MINIMUM_BYTES = {"ext4": 8 * MIB, "xfs": 300 * MIB, "": MIB}


class ImageBackend(Backend):
    kind: ClassVar[str] = "image"
    supports_block: ClassVar[bool] = True
    fs_types: ClassVar[tuple[str, ...]] = ("ext4", "xfs")
    default_fs_type: ClassVar[str] = "ext4"
    node_expansion: ClassVar[bool] = True

    def known_parameters(self) -> set[str]:
        return {"allowVolumeModeChange"}

    def check_parameters(self, parameters: Mapping[str, str]) -> dict[str, str]:
        params = super().check_parameters(parameters)
        if params.get("allowVolumeModeChange", "false") not in ("true", "false"):
            raise InvalidArgument('parameter allowVolumeModeChange must be "true" or "false"')
        return params

    def image_path(self, volume_id: str) -> Path:
        return self.env.volumes_dir / f"{volume_id}.img"

    def minimum_bytes(self, fs_type: str) -> int:
        return MINIMUM_BYTES.get(fs_type, MIB)

    def create(self, volume: Volume, secrets: Mapping[str, str], source: Path | None) -> None:
        path = self.image_path(volume.id)
        self.env.volumes_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            if source is not None:
                copy_sparse(source, path)
                with open(path, "r+b") as f:
                    grown = os.fstat(f.fileno()).st_size < volume.capacity_bytes
                    if grown:
                        os.ftruncate(f.fileno(), volume.capacity_bytes)
                    if self.env.preallocate:
                        os.posix_fallocate(f.fileno(), 0, volume.capacity_bytes)
                if grown and volume.access_type is AccessType.MOUNT:
                    self.grow_copied_filesystem(volume, path)
            else:
                fd = os.open(
                    path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
                )
                try:
                    os.ftruncate(fd, volume.capacity_bytes)
                    if self.env.preallocate:
                        os.posix_fallocate(fd, 0, volume.capacity_bytes)
                finally:
                    os.close(fd)
                if volume.access_type is AccessType.MOUNT:
                    run_tool(
                        [*MKFS[volume.fs_type], str(path)],
                        f"formatting the volume as {volume.fs_type}",
                    )
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

    def grow_copied_filesystem(self, volume: Volume, path: Path) -> None:
        """A restore or clone into a larger volume: the image was grown, and its filesystem must
        fill it, or the pod sees the snapshot's size instead of the size its claim asked for.

        Done here, before the volume is ever staged, so neither path needs CAP_SYS_RESOURCE
        (ext4's online resize demands it): ext4 is checked and grown offline on the image file
        (a snapshot of a frozen, mounted filesystem needs its journal replayed first); xfs can
        only grow while mounted, so it is mounted for the moment at a private directory of the
        driver's (start-up reconciliation unmounts what a kill leaves there).
        """
        if volume.fs_type == "xfs":
            work = self.env.work_dir / f"grow-{volume.id}"
            work.mkdir(parents=True, mode=0o700)
            try:
                device = loopdev.attach(str(path), read_only=False).path
                try:
                    # nouuid: the source of the copy may be mounted, with the same UUID.
                    self.env.mounter.mount(device, str(work), "xfs", ["nouuid"])
                    try:
                        run_tool(["xfs_growfs", "-d", str(work)], "growing the restored xfs")
                    finally:
                        self.env.mounter.unmount(str(work))
                finally:
                    loopdev.detach(device)
            finally:
                work.rmdir()
        else:
            # e2fsck exits 1 when it corrected something (a replayed journal): still a success.
            run_tool(
                ["e2fsck", "-f", "-y", str(path)], "checking the restored ext4", ok_codes=(0, 1)
            )
            run_tool(["resize2fs", str(path)], "growing the restored ext4 to the volume's size")

    def delete(self, volume: Volume, secrets: Mapping[str, str]) -> None:
        path = self.image_path(volume.id)
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

    snapshot_suffix: ClassVar[str] = ".img"

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
            if os.fstat(fd).st_size < new_bytes:
                os.ftruncate(fd, new_bytes)
            if self.env.preallocate:
                os.posix_fallocate(fd, 0, new_bytes)
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
        if volume.access_type is AccessType.BLOCK or not devices:
            return
        if volume.fs_type == "xfs":
            if mount_path is None:
                raise FailedPrecondition(
                    f"volume {volume.id} must be mounted to grow its xfs filesystem"
                )
            run_tool(["xfs_growfs", "-d", mount_path], "growing the xfs filesystem")
        else:
            try:
                run_tool(["resize2fs", devices[0]], "growing the ext4 filesystem")
            except Internal as exc:
                if "Permission denied to resize" in exc.message and not has_sys_resource():
                    raise FailedPrecondition(
                        f"growing volume {volume.id}'s ext4 filesystem while it is mounted needs "
                        "CAP_SYS_RESOURCE, which the driver's process lacks: run the driver's "
                        "container privileged"
                    ) from exc
                raise

    def health(self, volume: Volume) -> list[HealthIssue]:
        path = self.image_path(volume.id)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return [
                HealthIssue(
                    HealthStatus.DATA_LOSS,
                    "ImageMissing",
                    f"the image file {path} of the volume is gone; restore it from a snapshot",
                )
            ]
        if size < volume.capacity_bytes:
            return [
                HealthIssue(
                    HealthStatus.DATA_LOSS,
                    "ImageTruncated",
                    f"the image file {path} is {size} bytes, smaller than the volume's "
                    f"{volume.capacity_bytes} bytes: it was truncated; restore it from a snapshot",
                )
            ]
        return []


def copy_sparse(source: Path, dest: Path) -> None:
    """Copy an image keeping holes (and sharing extents where the filesystem can reflink)."""
    cp = shutil.which("cp") or "/bin/cp"
    run_tool(
        [cp, "--sparse=always", "--reflink=auto", "--no-dereference", str(source), str(dest)],
        "copying the volume image",
    )


def run_tool(argv: list[str], what: str, ok_codes: tuple[int, ...] = (0,)) -> None:
    """Run a helper tool from an argv list; raise Internal with its stderr when it exits with
    a code outside ok_codes."""
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, check=False, timeout=600, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError as exc:
        raise FailedPrecondition(
            f"{what} needs {argv[0]!r}, which is not installed in the driver's image"
        ) from exc
    if proc.returncode not in ok_codes:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise Internal(
            f"{what} failed: {argv[0]} exited {proc.returncode}: {' '.join(detail[-3:])}"
        )


CAP_SYS_RESOURCE = 24


def has_sys_resource() -> bool:
    """True when this process holds CAP_SYS_RESOURCE (ext4's online resize demands it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_SYS_RESOURCE & 1)
    except OSError:
        pass
    return False
