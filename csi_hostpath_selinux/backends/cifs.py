"""CIFS/SMB volumes: a subdirectory per volume on an existing share (parameter source).

Credentials come from the request's secrets (`username`, `password`, optional `domain`) and reach
mount.cifs through its environment (USER, PASSWD), never through argv, logs or errors. The pod's
fsGroup (VOLUME_MOUNT_GROUP) becomes the mount's gid, so kubelet need not chown every file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import ClassVar

from ..errors import InvalidArgument
from ..models import Volume
from .base import StageRequest
from .network import NetworkBackend

SOURCE_RE = re.compile(r"^//[A-Za-z0-9.:\[\]-]+/[^/\s,\x00]+(/[^/\s,\x00]+)*$")


class CIFSBackend(NetworkBackend):
    kind: ClassVar[str] = "cifs"
    mount_type: ClassVar[str] = "cifs"
    fs_types: ClassVar[tuple[str, ...]] = ("cifs", "smb3")
    default_fs_type: ClassVar[str] = "cifs"
    mount_group_option: ClassVar[bool] = True

    def known_parameters(self) -> set[str]:
        return super().known_parameters() | {"source"}

    def check_parameters(self, parameters: Mapping[str, str]) -> dict[str, str]:
        params = super().check_parameters(parameters)
        source = params.get("source", "")
        if not SOURCE_RE.fullmatch(source):
            raise InvalidArgument(f"parameter source must look like //server/share, got {source!r}")
        return params

    port: ClassVar[int] = 445

    def server_host(self, volume: Volume) -> str:
        return volume.parameters["source"][2:].split("/", 1)[0]

    def share_source(self, volume: Volume) -> str:
        return volume.parameters["source"].rstrip("/")

    def helper_env(self, secrets: Mapping[str, str]) -> dict[str, str] | None:
        if not secrets:
            return None
        username = secrets.get("username", "")
        password = secrets.get("password", "")
        if not username:
            raise InvalidArgument("the CIFS secret needs a 'username' key")
        env = {"USER": username, "PASSWD": password, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        return env

    def extra_options(self, request: StageRequest) -> list[str]:
        extra = []
        domain = request.secrets.get("domain", "")
        if domain:
            if not re.fullmatch(r"[A-Za-z0-9.-]{1,255}", domain):
                raise InvalidArgument("the CIFS secret's 'domain' is not a domain name")
            extra.append(f"domain={domain}")
        if request.mount_group:
            if not request.mount_group.isdigit():
                raise InvalidArgument(
                    f"volume_mount_group must be a numeric group id, got {request.mount_group!r}"
                )
            extra += [f"gid={request.mount_group}", "forcegid", "file_mode=0770", "dir_mode=0770"]
        return extra
