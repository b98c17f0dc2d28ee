"""`csi-hostpath-selinux state`: the catalog's records as JSON, read without changing anything."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from csi_hostpath_selinux.catalog_schema import SCHEMA_VERSION
from csi_hostpath_selinux.cli import main
from csi_hostpath_selinux.models import (
    AccessMode,
    AccessType,
    Publication,
    Staging,
    StagingState,
    Volume,
)
from csi_hostpath_selinux.state import Catalog, CatalogError

EMPTY = hashlib.sha256(b"").hexdigest()
VOL = "vol-0123456789abcdef0123456789abcdef"
LABEL = "system_u:object_r:container_file_t:s0:c1,c2"
STAGING = "/var/lib/kubelet/plugins/kubernetes.io/csi/d/abc/globalmount"
TARGET = "/var/lib/kubelet/pods/uid/volumes/kubernetes.io~csi/pvc-1/mount"
VOLUME = Volume(
    id=VOL,
    name="pvc-1",
    kind="image",
    capacity_bytes=64 << 20,
    access_type=AccessType.MOUNT,
    fs_type="ext4",
)


def digest(directory: Path) -> dict[str, str]:
    """The catalog's database file and its write-ahead log (the -shm file is SQLite's shared
    memory index, where any reader marks its read lock)."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
        if p.is_file() and not p.name.endswith("-shm")
    }


def test_state_lists_volumes_stagings_and_publications_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog = Catalog(tmp_path / "catalog.sqlite")
    catalog.add_volume(VOLUME)
    flag = f'context="{LABEL}"'
    catalog.put_staging(
        Staging(
            volume_id=VOL,
            staging_path=STAGING,
            label=LABEL,
            flags=(flag,),
            device="/dev/loop3",
            access_type=AccessType.MOUNT,
            state=StagingState.READY,
        )
    )
    catalog.put_publication(
        Publication(
            volume_id=VOL,
            target_path=TARGET,
            staging_path=STAGING,
            read_only=False,
            label=LABEL,
            flags=(flag,),
            access_mode=AccessMode.SINGLE_NODE_SINGLE_WRITER,
        )
    )
    before = digest(tmp_path)  # the driver still has it open: its WAL and shared memory too

    assert main(["--state-dir", str(tmp_path), "state"]) == 0
    report = json.loads(capsys.readouterr().out)

    assert [(v["id"], v["name"], v["fs_type"]) for v in report["volumes"]] == [
        (VOL, "pvc-1", "ext4")
    ]
    assert report["stagings"] == [
        {
            "volume_id": VOL,
            "staging_path": STAGING,
            "label": LABEL,
            "mount_flags": [flag],
            "device": "/dev/loop3",
            "access_type": "mount",
            "state": "ready",
        }
    ]
    [pub] = report["publications"]
    assert (pub["target_path"], pub["label"], pub["access_mode"]) == (
        TARGET,
        LABEL,
        "SINGLE_NODE_SINGLE_WRITER",
    )
    assert digest(tmp_path) == before
    catalog.close()


def test_state_without_a_catalog_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--state-dir", str(tmp_path), "state"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"no catalog at {tmp_path / 'catalog.sqlite'}" in captured.err
    assert list(tmp_path.iterdir()) == [], "state must not create a catalog"


def test_a_read_only_catalog_refuses_writes_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite"
    Catalog(path).close()
    before = digest(tmp_path)
    reader = Catalog(path, read_only=True)
    try:
        with pytest.raises(CatalogError, match="is open read-only"):
            reader.add_volume(VOLUME)
        with pytest.raises(CatalogError, match="is open read-only"):
            reader.sync()
        assert reader.all_volumes() == []
    finally:
        reader.close()
    after = digest(tmp_path)
    # With no driver running, SQLite's reader of a WAL database leaves an empty -wal file.
    assert after.pop("catalog.sqlite-wal", EMPTY) == EMPTY
    assert after == before


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is not a readable catalog"),  # 0 bytes: no tables
        (b"not a database" * 100, "is not a readable catalog: file is not a database"),
    ],
    ids=["empty", "garbage"],
)
def test_state_of_a_file_that_is_no_catalog_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, message: str
) -> None:
    (tmp_path / "catalog.sqlite").write_bytes(content)
    assert main(["--state-dir", str(tmp_path), "state"]) == 1
    assert message in capsys.readouterr().err
    assert (tmp_path / "catalog.sqlite").read_bytes() == content


def test_state_of_another_schema_version_names_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "catalog.sqlite"
    Catalog(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    assert main(["--state-dir", str(tmp_path), "state"]) == 1
    err = capsys.readouterr().err
    assert f"has schema version {SCHEMA_VERSION + 1}" in err
    assert f"this driver reads version {SCHEMA_VERSION}" in err
