"""NFS volumes: a subdirectory per volume on an existing export (parameters server, share)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from ..errors import InvalidArgument
from ..models import Volume
from .network import HOST_RE, NetworkBackend, check_share_path


class NFSBackend(NetworkBackend):
    kind: ClassVar[str] = "nfs"
    mount_type: ClassVar[str] = "nfs"
    fs_types: ClassVar[tuple[str, ...]] = ("nfs", "nfs4")
    default_fs_type: ClassVar[str] = "nfs"
    label_extra_options: ClassVar[tuple[str, ...]] = ("nosharecache",)

    def known_parameters(self) -> set[str]:
        return super().known_parameters() | {"server", "share"}

    def check_parameters(self, parameters: Mapping[str, str]) -> dict[str, str]:
        params = super().check_parameters(parameters)
        server = params.get("server", "")
        if not HOST_RE.fullmatch(server):
            raise InvalidArgument(
                f"parameter server must be a host name or IP address, got {server!r}"
            )
        check_share_path(params.get("share", ""), "share")
        return params

    port: ClassVar[int] = 2049

    def server_host(self, volume: Volume) -> str:
        return volume.parameters["server"]

    def share_source(self, volume: Volume) -> str:
        share = volume.parameters["share"].rstrip("/")
        return f"{volume.parameters['server']}:{share or '/'}"

    def volume_source(self, volume: Volume) -> str:
        share = volume.parameters["share"].rstrip("/")
        return f"{volume.parameters['server']}:{share}/{volume.id}"
