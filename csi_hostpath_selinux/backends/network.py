"""What the NFS and CIFS kinds share: a volume is a subdirectory of an existing share.

CreateVolume mounts the share at a private work directory under the state directory, makes the
volume's subdirectory and unmounts; DeleteVolume removes it again (or keeps it with
onDelete: retain). The node mounts the subdirectory with the filesystem's mount helper, with the
SELinux extra option (nosharecache, nosharesock) appended when the mount carries a label, so each
labelled mount gets a superblock of its own.
"""

from __future__ import annotations

import abc
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

from ..errors import Internal, InvalidArgument, Unavailable
from ..models import HealthIssue, HealthStatus, Volume
from ..mount_options import MountError
from ..selinux import check_option_list, with_label_extras
from .base import Backend, StageRequest

ON_DELETE = ("delete", "retain")
#: Private mount points of NodeStageVolume's helper mounts, in the work directory.
STAGE_PREFIX = "stage-"
HEALTH_TIMEOUT_SECONDS = 2.0
#: Host names, IPv4 and bracketed IPv6 addresses; nothing that could read as an option.
HOST_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)$")


def check_share_path(path: str, field: str) -> str:
    if not path.startswith("/") or os.path.normpath(path) != path or "//" in path:
        raise InvalidArgument(
            f"parameter {field} must be an absolute, normalized path, got {path!r}"
        )
    if any(c in path for c in ",\x00\n"):
        raise InvalidArgument(f"parameter {field} must not contain commas, NULs or newlines")
    return path


#: Last on the controller's own share mounts, so they always win: the driver runs nothing from
#: a share and opens no device on it.
WORK_MOUNT_OPTIONS = ("nosuid", "nodev", "noexec")


def check_mount_options(text: str) -> list[str]:
    """The controller-side mountOptions parameter: comma-separated (the SELinux package's one
    splitter), checked option by option with the policy of mount flags, and no SELinux options."""
    return check_option_list(text, "parameter mountOptions")


class NetworkBackend(Backend, abc.ABC):
    uses_mount_helper: ClassVar[bool] = True
    stored_in_state_dir: ClassVar[bool] = False
    mount_type: ClassVar[str]

    def known_parameters(self) -> set[str]:
        return {"onDelete", "mountOptions"}

    def check_parameters(self, parameters: Mapping[str, str]) -> dict[str, str]:
        params = super().check_parameters(parameters)
        on_delete = params.get("onDelete", "delete")
        if on_delete not in ON_DELETE:
            raise InvalidArgument(
                f"parameter onDelete must be one of {ON_DELETE}, got {on_delete!r}"
            )
        check_mount_options(params.get("mountOptions", ""))
        return params

    @abc.abstractmethod
    def share_source(self, volume: Volume) -> str:
        """The mount source of the share's root."""

    def volume_source(self, volume: Volume) -> str:
        return f"{self.share_source(volume)}/{volume.id}"

    def helper_env(self, secrets: Mapping[str, str]) -> dict[str, str] | None:
        return None

    def extra_options(self, request: StageRequest) -> list[str]:
        return []

    @contextmanager
    def share_mounted(self, volume: Volume, secrets: Mapping[str, str]) -> Iterator[Path]:
        """Mount the share's root at a private work directory for the block's duration."""
        work = self.env.work_dir / volume.id
        work.mkdir(parents=True, exist_ok=True, mode=0o700)
        options = check_mount_options(volume.parameters.get("mountOptions", ""))
        options += WORK_MOUNT_OPTIONS
        try:
            self.env.mounter.mount_helper(
                self.share_source(volume),
                str(work),
                self.mount_type,
                options,
                env=self.helper_env(secrets),
            )
        except MountError as exc:
            work.rmdir()
            raise Unavailable(
                f"cannot reach the {self.mount_type} share {self.share_source(volume)}: "
                f"{exc.message}"
            ) from exc
        try:
            yield work
        finally:
            self.env.mounter.unmount(str(work))
            work.rmdir()

    def create(self, volume: Volume, secrets: Mapping[str, str], source: Path | None) -> None:
        with self.share_mounted(volume, secrets) as root:
            target = root / volume.id
            if source is not None:
                raise InvalidArgument(f"volumes of kind {self.kind!r} cannot be restored or cloned")
            try:
                os.mkdir(target, 0o777)
            except FileExistsError:
                if target.is_symlink() or not target.is_dir():
                    raise Internal(
                        f"{target.name} exists on the share and is not a directory"
                    ) from None
            os.chmod(target, 0o777)

    def delete(self, volume: Volume, secrets: Mapping[str, str]) -> None:
        if volume.parameters.get("onDelete", "delete") == "retain":
            return
        with self.share_mounted(volume, secrets) as root:
            target = root / volume.id
            if target.is_symlink():
                target.unlink()
            elif target.exists():
                shutil.rmtree(target)

    def stage(self, request: StageRequest) -> str:
        flags = request.flags
        options = with_label_extras(flags.all_options(), self.label_extra_options, flags.labelled)
        options += self.extra_options(request)
        if request.read_only and "ro" not in options:
            options.append("ro")
        # mount(8) resolves its target path again, following symlinks, so it never gets the
        # staging path: it mounts at a private directory the driver owns, and that mount is
        # attached (a detached clone, open_tree + move_mount) onto the directory the node layer
        # opened without following symlinks (mount_target). The private mount then goes.
        private = self.env.work_dir / f"{STAGE_PREFIX}{uuid.uuid4().hex}"
        self.env.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        private.mkdir(mode=0o700)
        try:
            self.env.mounter.mount_helper(
                self.volume_source(request.volume),
                str(private),
                self.mount_type,
                options,
                env=self.helper_env(request.secrets),
            )
            try:
                self.env.mounter.bind(str(private), request.mount_target, request.read_only)
            finally:
                self.env.mounter.unmount(str(private))
        finally:
            private.rmdir()
        return ""

    def unstage(self, volume: Volume, staging_path: str, device: str) -> None:
        self.env.mounter.unmount(staging_path)

    def expand(self, volume: Volume, new_bytes: int) -> bool:
        return False  # a share's subdirectory has no size of its own (the server sets quotas)

    def node_expand(self, volume: Volume, device: str, mount_path: str | None) -> None:
        return

    #: The server's TCP port, probed by health checks.
    port: ClassVar[int]

    @abc.abstractmethod
    def server_host(self, volume: Volume) -> str:
        """The server's host name or address."""

    def health(self, volume: Volume) -> list[HealthIssue]:
        host = self.server_host(volume).strip("[]")
        try:
            with socket.create_connection((host, self.port), timeout=HEALTH_TIMEOUT_SECONDS):
                return []
        except OSError as exc:
            return [
                HealthIssue(
                    status=HealthStatus.INACCESSIBLE,
                    reason="ServerUnreachable",
                    message=f"the {self.mount_type} server {host} does not answer on port {self.port} "
                    f"({exc.strerror or exc}); check the server and the network to it",
                )
            ]
