"""Catalog records for tests that need one whose details do not matter: a volume row, an
unlabelled staging or publication. A test about a record's fields spells them out itself."""

from __future__ import annotations

from csi_hostpath_selinux import models
from csi_hostpath_selinux.models import AccessMode, Publication, Staging, StagingState, Volume


def volume(name: str) -> Volume:
    """A new ext4 image volume of 1 GiB, mount access, made from nothing."""
    return Volume(
        id=models.new_volume_id(),
        name=name,
        kind="image",
        capacity_bytes=1 << 30,
        access_type=models.AccessType.MOUNT,
        fs_type="ext4",
        parameters={"kind": "image"},
        content_source=None,
        ephemeral=False,
        created_at=1.5,
    )


def staging(volume_id: str, staging_path: str, state: StagingState = StagingState.READY) -> Staging:
    """A mount staging without label, flags or loop device."""
    return Staging(
        volume_id=volume_id,
        staging_path=staging_path,
        label=None,
        flags=(),
        device="",
        access_type=models.AccessType.MOUNT,
        state=state,
    )


def publication(
    volume_id: str,
    target_path: str,
    staging_path: str,
    access_mode: AccessMode = AccessMode.SINGLE_NODE_WRITER,
    read_only: bool = False,
) -> Publication:
    """A publication without label, flags or device of its own."""
    return Publication(
        volume_id=volume_id,
        target_path=target_path,
        staging_path=staging_path,
        read_only=read_only,
        label=None,
        flags=(),
        access_mode=access_mode,
    )
