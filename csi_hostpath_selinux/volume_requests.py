"""What a CreateVolume request may ask for: names, capabilities, topology, and whether an
existing volume of the same name answers it (CSI idempotence). Pure checks, no gRPC, no disk.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .config import DriverConfig
from .errors import Aborted, AlreadyExists, InvalidArgument, NotFound
from .models import AccessType, Capability, ContentSource, Volume, is_volume_id
from .state import Catalog

KIND_PARAMETER = "kind"
#: The longest name Kubernetes sends (a PV, VolumeSnapshotContent or group name: a DNS
#: subdomain); longer names are refused before they are stored or logged.
MAX_NAME = 253


@dataclass(frozen=True)
class CapacityRange:
    required_bytes: int = 0
    limit_bytes: int = 0


def check_compatible(
    vol: Volume,
    kind: str,
    stored: Mapping[str, str],
    access_type: AccessType,
    fs_type: str,
    capacity: CapacityRange,
    source: ContentSource | None,
) -> None:
    def differs(what: str, have: object, want: object) -> AlreadyExists:
        return AlreadyExists(
            f"a volume named {vol.name!r} already exists with {what} {have!r}; "
            f"this request asks for {want!r}"
        )

    if vol.kind != kind:
        raise differs("kind", vol.kind, kind)
    have_params = {k: v for k, v in vol.parameters.items() if k != KIND_PARAMETER}
    if have_params != dict(stored):
        raise differs("parameters", have_params, dict(stored))
    if vol.access_type is not access_type:
        raise differs("access type", vol.access_type.value, access_type.value)
    if vol.fs_type != fs_type:
        raise differs("fsType", vol.fs_type, fs_type)
    if vol.capacity_bytes < capacity.required_bytes or (
        capacity.limit_bytes and vol.capacity_bytes > capacity.limit_bytes
    ):
        raise differs(
            "capacity",
            vol.capacity_bytes,
            f"{capacity.required_bytes}..{capacity.limit_bytes or 'unlimited'}",
        )
    if vol.content_source != source:
        raise differs("content source", _describe(vol.content_source), _describe(source))


def _describe(source: ContentSource | None) -> str:
    return f"{source.type.value} {source.id}" if source else "none"


def check_name(name: str) -> None:
    """Refuse an empty name, or one longer than any Kubernetes sends (without echoing it)."""
    if not name:
        raise InvalidArgument("name is required")
    if len(name) > MAX_NAME:
        raise InvalidArgument(
            f"name is {len(name)} characters long; names are at most {MAX_NAME} characters "
            "(Kubernetes object names)"
        )


def find_volume(catalog: Catalog, volume_id: str, node_id: str) -> Volume:
    """The catalog's volume; INVALID_ARGUMENT without an id, NOT_FOUND for an unknown one.

    Only ids of the driver's own format are looked up, so a hostile id never reaches a path.
    """
    if not volume_id:
        raise InvalidArgument("volume_id is required")
    vol = catalog.volume(volume_id) if is_volume_id(volume_id) else None
    if vol is None:
        raise NotFound(f"volume {volume_id!r} does not exist on node {node_id}")
    return vol


def parse_token(token: str) -> int:
    if not token:
        return 0
    if not (token.isascii() and token.isdigit()) or len(token) > 18:
        raise Aborted(f"starting_token {token!r} is not a token this driver handed out")
    return int(token)


def single_access_type(capabilities: Sequence[Capability]) -> AccessType:
    kinds = {cap.access_type for cap in capabilities}
    if len(kinds) > 1:
        raise InvalidArgument("a volume cannot be requested with both block and mount access")
    return kinds.pop()


def requested_fs_type(capabilities: Sequence[Capability], parameter: str) -> str:
    names = {cap.fs_type for cap in capabilities if cap.fs_type}
    if len(names) > 1:
        raise InvalidArgument(f"the capabilities ask for several fsTypes: {sorted(names)}")
    return names.pop() if names else parameter


def segment_is_this_node(segment: Mapping[str, str], config: DriverConfig) -> bool:
    """Whether a topology segment names this node: by the current key or a legacy one (volumes
    provisioned before the key moved out of `*.k8s.io` carry it), and no known key names another."""
    named = [segment[k] for k in config.known_topology_keys if k in segment]
    return bool(named) and all(value == config.node_id for value in named)
