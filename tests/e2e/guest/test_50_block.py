"""Block access volumes: no context, the loop device bind-mounted onto the target file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from e2e_lib import Kubelet, attached_loop_devices, mounts_at, run


def test_block_volume_is_a_bind_mounted_loop_device(kubelet: Kubelet) -> None:
    volume = kubelet.create(kubelet.block_capability(), {"kind": "image"})
    kubelet.stage(volume)  # kubelet never sends context= for block access
    target = kubelet.target_for(volume)
    kubelet.publish(volume, target)

    mode = os.stat(target).st_mode
    print(f"{target} is a {'block device' if stat.S_ISBLK(mode) else oct(mode)}")
    assert stat.S_ISBLK(mode), "the target is not a block device"
    rdev = os.stat(target).st_rdev
    device = f"/dev/loop{os.minor(rdev)}" if os.major(rdev) == 7 else ""
    print(f"{target} has rdev {os.major(rdev)}:{os.minor(rdev)} -> {device or 'not a loop device'}")
    assert device, "the target is not a loop device"
    backing = Path(f"/sys/block/{device[5:]}/loop/backing_file").read_text().strip()
    print(f"{device} is backed by {backing}")
    assert volume.volume_id in backing, "the loop device is not backed by this volume's image"
    print("loop devices:", attached_loop_devices())

    (entry,) = mounts_at(target)
    assert entry.root.endswith(device[5:]), f"not a bind mount of {device}: {entry.line}"
    assert "context=" not in entry.line, f"a block volume got a context: {entry.line}"

    # The device works through the target: write a block and read it back.
    payload = os.urandom(4096)
    with open(target, "r+b", buffering=0) as handle:
        handle.write(payload)
    with open(target, "rb", buffering=0) as handle:
        assert handle.read(4096) == payload
    run(["blockdev", "--getsize64", target])

    kubelet.unpublish(volume, target)
    assert not mounts_at(target)
    kubelet.unstage(volume)
    kubelet.delete(volume)
    assert not [line for line in attached_loop_devices() if volume.volume_id in line]
