"""A driver whose view of /sys/fs/selinux is hidden must never make an unlabelled mount.

util-linux drops context= silently when libselinux thinks SELinux is off: the driver must see
that and refuse (mount helpers: nfs, cifs) or apply the label itself and verify it (ext4).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from e2e_lib import (
    CIFS_SECRETS,
    CIFS_SOURCE,
    L1,
    NFS_SHARE,
    Driver,
    Kubelet,
    context_flag,
    enforcing,
    has_context,
    label_of,
    mounts_at,
    refusal,
)

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module", params=["tmpfs", "readonly"])
def hidden(request: pytest.FixtureRequest) -> Iterator[Kubelet]:
    variant = request.param
    wrapper = [
        "unshare",
        "-m",
        "--propagation",
        "private",
        "--",
        "python3",
        str(HERE / "hide_selinuxfs.py"),
        variant,
        "--",
    ]
    state_dir = f"/var/lib/csi-hostpath-selinux-hidden-{variant}"
    driver = Driver(
        socket=f"/run/csi-hidden-{variant}/csi.sock",
        state_dir=state_dir,
        log_path=f"/results/driver-hidden-{variant}.log",
        wrapper=wrapper,
    )
    pid = driver.pid
    view = mounts_at("/sys/fs/selinux", pid)[-1]  # the top mount is what the driver sees
    print(f"driver pid {pid} sees /sys/fs/selinux as {view.fstype} ({view.mount_options})")
    if variant == "tmpfs":
        assert view.fstype == "tmpfs", "selinuxfs is not hidden from the driver"
    else:
        assert view.fstype == "selinuxfs" and view.mount_options.startswith("ro"), (
            "selinuxfs is not read-only for the driver"
        )
    assert enforcing(), "hiding selinuxfs from the driver changed the host's mode"
    kubelet = Kubelet(driver)
    yield kubelet
    errors = list(kubelet.cleanup())
    driver.stop()
    assert not errors, "teardown under a hidden selinuxfs failed:\n" + "\n".join(errors)


NETWORK = {
    "nfs": ({"kind": "nfs", "server": "127.0.0.1", "share": NFS_SHARE}, ["nfsvers=4.2"], {}),
    "cifs": ({"kind": "cifs", "source": CIFS_SOURCE}, [], CIFS_SECRETS),
}


@pytest.mark.parametrize("kind", ["nfs", "cifs"])
def test_mount_helper_volumes_are_refused(hidden: Kubelet, kind: str) -> None:
    parameters, flags, secrets = NETWORK[kind]
    volume = hidden.create(hidden.mount_capability("", flags), parameters, secrets=secrets)
    error = refusal(lambda: hidden.stage(volume, [*flags, context_flag(L1)]))
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "/sys/fs/selinux" in error.details
    pid = hidden.driver.pid
    assert not mounts_at(volume.staging_path, pid), "an unlabelled mount was left behind"
    assert not mounts_at(volume.staging_path)


def test_ext4_volume_is_refused_or_labelled(hidden: Kubelet) -> None:
    volume = hidden.create(hidden.mount_capability("ext4"), {"kind": "image"})
    pid = hidden.driver.pid
    try:
        hidden.stage(volume, [context_flag(L1)])
    except grpc.RpcError as exc:
        print(f"driver answered {exc.code().name}: {exc.details()}")
        assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "/sys/fs/selinux" in (exc.details() or "")
        assert not mounts_at(volume.staging_path, pid), "an unlabelled mount was left behind"
        return
    # Accepted: the driver's own mount must carry the label, read in its mount namespace.
    (staged,) = mounts_at(volume.staging_path, pid)
    assert has_context(staged, L1), f"unlabelled mount: {staged.line}"
    assert label_of(volume.staging_path, pid) == L1
    target = hidden.target_for(volume)
    hidden.publish(volume, target, [context_flag(L1)])
    (published,) = mounts_at(target, pid)
    assert has_context(published, L1), f"unlabelled mount: {published.line}"
    assert label_of(target, pid) == L1
