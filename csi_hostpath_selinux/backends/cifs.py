"""CIFS/SMB volumes: a subdirectory per volume on an existing share (parameter source).

Credentials come from the request's secrets (`username`, `password`, optional `domain`) and reach
mount.cifs through its environment (USER, PASSWD), never through argv, logs or errors. The pod's
fsGroup (VOLUME_MOUNT_GROUP) becomes the mount's gid, so kubelet need not chown every file.

mount.cifs asks for a password on the terminal when it has none. The driver never lets it get
there: a request without secrets is refused (INVALID_ARGUMENT, the spec's code for a missing
required field) naming the StorageClass parameters that make the CO send them, unless the mount
options say the share needs no password (`guest`, `sec=none`, `sec=krb5`, `sec=krb5i`). The helper
also runs without a terminal or stdin (mounts.LinuxMounter.mount_helper).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

from ..errors import InvalidArgument
from ..models import Volume
from ..selinux import split_outside_quotes
from .base import StageRequest
from .network import NetworkBackend, check_mount_options

#: sec= values with which mount.cifs needs no password (Kerberos tickets, or no authentication).
NO_PASSWORD_SEC = ("none", "krb5", "krb5i")
#: What the CO needs to send secrets, by the RPC that needs them.
SECRET_PARAMETERS = {
    "CreateVolume": "csi.storage.k8s.io/provisioner-secret-name and "
    "csi.storage.k8s.io/provisioner-secret-namespace",
    "DeleteVolume": "csi.storage.k8s.io/provisioner-secret-name and "
    "csi.storage.k8s.io/provisioner-secret-namespace",
    "NodeStageVolume": "csi.storage.k8s.io/node-stage-secret-name and "
    "csi.storage.k8s.io/node-stage-secret-namespace",
}


def needs_password(options: Sequence[str]) -> bool:
    """False when the options make mount.cifs authenticate without a password: guest,
    sec=none, sec=krb5 or sec=krb5i (the last of several sec= wins, as in mount.cifs)."""
    guest = False
    sec = ""
    for entry in options:
        for piece in split_outside_quotes(entry):
            key, _, value = piece.partition("=")
            if key.lower() == "guest":
                guest = True
            elif key.lower() == "sec":
                sec = value.lower()
    return not guest and sec not in NO_PASSWORD_SEC


def missing_credentials(rpc: str, source: str, options_field: str) -> InvalidArgument:
    return InvalidArgument(
        f"the CIFS share {source} needs a username and password, and {rpc} carried no secrets: "
        "put the keys username and password (and optionally domain) in a Secret and name it in "
        f"the StorageClass parameters {SECRET_PARAMETERS[rpc]}; for a share that needs no "
        f"password, add guest (or sec=krb5) to {options_field}"
    )


SOURCE_RE = re.compile(r"^//[A-Za-z0-9.:\[\]-]+/[^/\s,\x00]+(/[^/\s,\x00]+)*$")


class CIFSBackend(NetworkBackend):
    kind: ClassVar[str] = "cifs"
    mount_type: ClassVar[str] = "cifs"
    fs_types: ClassVar[tuple[str, ...]] = ("cifs", "smb3")
    default_fs_type: ClassVar[str] = "cifs"
    label_extra_options: ClassVar[tuple[str, ...]] = ("nosharesock",)
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

    def create(self, volume: Volume, secrets: Mapping[str, str], source: Path | None) -> None:
        self.check_credentials(volume, secrets, "CreateVolume")
        super().create(volume, secrets, source)

    def delete(self, volume: Volume, secrets: Mapping[str, str]) -> None:
        if volume.parameters.get("onDelete", "delete") != "retain":
            self.check_credentials(volume, secrets, "DeleteVolume")
        super().delete(volume, secrets)

    def check_credentials(self, volume: Volume, secrets: Mapping[str, str], rpc: str) -> None:
        """The controller's own mounts use the mountOptions parameter."""
        options = check_mount_options(volume.parameters.get("mountOptions", ""))
        if not secrets and needs_password(options):
            raise missing_credentials(
                rpc, self.share_source(volume), "the StorageClass parameter mountOptions"
            )

    def stage(self, request: StageRequest) -> str:
        if not request.secrets and needs_password(request.flags.all_options()):
            raise missing_credentials(
                "NodeStageVolume",
                self.share_source(request.volume),
                "the StorageClass's mountOptions",
            )
        return super().stage(request)

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
            if not (request.mount_group.isascii() and request.mount_group.isdigit()):
                raise InvalidArgument(
                    f"volume_mount_group must be a numeric group id, got {request.mount_group!r}"
                )
            extra += [f"gid={request.mount_group}", "forcegid", "file_mode=0770", "dir_mode=0770"]
        return extra
