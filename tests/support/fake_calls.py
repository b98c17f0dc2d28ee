"""Typed views of the calls FakeMounter records, for tests that assert on them."""

from __future__ import annotations

from typing import NamedTuple

from csi_hostpath_selinux.fake_mounts import FakeMounter


class HelperCall(NamedTuple):
    """One FakeMounter.mount_helper call, as the fake records it."""

    source: str
    target: str
    fs_type: str
    options: tuple[str, ...]
    env: dict[str, str]


def helper_calls(fake: FakeMounter) -> list[HelperCall]:
    """Every mount_helper call, in order, checked to have the types mount_helper takes."""
    calls = []
    for method, args in fake.calls:
        if method != "mount_helper":
            continue
        source, target, fs_type, options, env = args
        assert isinstance(source, str) and isinstance(target, str) and isinstance(fs_type, str)
        assert isinstance(options, tuple) and all(isinstance(o, str) for o in options)
        assert isinstance(env, dict)
        calls.append(HelperCall(source, target, fs_type, options, env))
    return calls
