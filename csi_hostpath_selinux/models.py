"""Plain data the driver keeps: volumes, snapshots, group snapshots, stagings, publications,
capabilities and health issues (frozen, slotted, built by field name)."""

from __future__ import annotations

import enum
import re
import uuid
from dataclasses import dataclass, field

VOLUME_ID_RE = re.compile(r"^vol-[0-9a-f]{32}$")
SNAPSHOT_ID_RE = re.compile(r"^snap-[0-9a-f]{32}$")


def new_volume_id() -> str:
    return f"vol-{uuid.uuid4().hex}"


def new_snapshot_id() -> str:
    return f"snap-{uuid.uuid4().hex}"


def is_volume_id(text: str) -> bool:
    """True when text has the driver's volume id format (the only ids that ever touch disk)."""
    return VOLUME_ID_RE.fullmatch(text) is not None


def is_snapshot_id(text: str) -> bool:
    return SNAPSHOT_ID_RE.fullmatch(text) is not None


class AccessType(enum.StrEnum):
    MOUNT = "mount"
    BLOCK = "block"


class SourceType(enum.StrEnum):
    """What a new volume's content comes from (a CSI VolumeContentSource)."""

    SNAPSHOT = "snapshot"
    VOLUME = "volume"


@dataclass(frozen=True, slots=True, kw_only=True)
class ContentSource:
    """Where a new volume's data comes from: a snapshot or another volume, by id."""

    type: SourceType
    id: str


class StagingState(enum.StrEnum):
    """A staging is recorded as PENDING before the mount and READY after it (crash recovery)."""

    PENDING = "pending"
    READY = "ready"


class AccessMode(enum.IntEnum):
    """VolumeCapability.AccessMode.Mode values of the CSI spec."""

    UNKNOWN = 0
    SINGLE_NODE_WRITER = 1
    SINGLE_NODE_READER_ONLY = 2
    MULTI_NODE_READER_ONLY = 3
    MULTI_NODE_SINGLE_WRITER = 4
    MULTI_NODE_MULTI_WRITER = 5
    SINGLE_NODE_SINGLE_WRITER = 6
    SINGLE_NODE_MULTI_WRITER = 7

    @property
    def single_node(self) -> bool:
        return self in _SINGLE_NODE

    @property
    def read_only(self) -> bool:
        return self in (AccessMode.SINGLE_NODE_READER_ONLY, AccessMode.MULTI_NODE_READER_ONLY)


_SINGLE_NODE = {
    AccessMode.SINGLE_NODE_WRITER,
    AccessMode.SINGLE_NODE_READER_ONLY,
    AccessMode.SINGLE_NODE_SINGLE_WRITER,
    AccessMode.SINGLE_NODE_MULTI_WRITER,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Volume:
    id: str
    name: str
    kind: str
    capacity_bytes: int
    access_type: AccessType
    fs_type: str
    parameters: dict[str, str] = field(default_factory=dict)
    content_source: ContentSource | None = None
    ephemeral: bool = False
    created_at: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    id: str
    name: str
    source_volume_id: str
    size_bytes: int
    created_at: float
    ready: bool = True
    #: The source volume's access type ("block" or "mount"); "" for snapshots taken before the
    #: driver recorded it (then the source volume, if it still exists, tells).
    source_access_type: str = ""
    #: The kind of the source volume (the backend whose snapshot_path holds the data); "" only
    #: for a snapshot whose catalog row predates the column and whose kind nothing could tell.
    kind: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Staging:
    volume_id: str
    staging_path: str
    label: str | None  # the SELinux context the volume is mounted with, None when unlabelled
    flags: tuple[str, ...]  # every mount flag of the stage request, as given
    device: str  # the loop device for image volumes, "" otherwise
    access_type: AccessType
    state: StagingState = StagingState.READY


@dataclass(frozen=True, slots=True, kw_only=True)
class Publication:
    volume_id: str
    target_path: str
    staging_path: str
    read_only: bool
    label: str | None
    flags: tuple[str, ...]
    access_mode: AccessMode
    #: A device made for this publication only (a read-only loop device for a read-only block
    #: publish), released at unpublish; "" when the target shares the staged device.
    device: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Capability:
    """One VolumeCapability, in the driver's terms."""

    access_type: AccessType
    access_mode: AccessMode
    fs_type: str = ""
    mount_flags: tuple[str, ...] = ()
    volume_mount_group: str = ""


class HealthStatus(enum.StrEnum):
    """VolumeHealthErrorType / StorageHealthErrorType values of the CSI spec."""

    DEGRADED = "DEGRADED"
    INACCESSIBLE = "INACCESSIBLE"
    DATA_LOSS = "DATA_LOSS"
    STORAGE_DEGRADED = "STORAGE_DEGRADED"
    STORAGE_UNREACHABLE = "STORAGE_UNREACHABLE"


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthIssue:
    """One adverse condition: a status, a CamelCase reason, and what an operator should do."""

    status: HealthStatus
    reason: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupMember:
    volume_id: str
    snapshot_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupSnapshot:
    """A volume group snapshot: snapshots of several volumes taken at one point in time."""

    id: str
    name: str
    created_at: float
    members: tuple[GroupMember, ...]

    @property
    def snapshot_ids(self) -> list[str]:
        return [m.snapshot_id for m in self.members]

    @property
    def volume_ids(self) -> list[str]:
        return [m.volume_id for m in self.members]
