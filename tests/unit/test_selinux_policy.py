"""csi_hostpath_selinux.selinux.policy: label conflicts in words, and a kind's extra options."""

from __future__ import annotations

import pytest

from csi_hostpath_selinux.selinux.errors import InvalidMountFlags
from csi_hostpath_selinux.selinux.options import parse_mount_flags
from csi_hostpath_selinux.selinux.policy import conflict_message, with_label_extras

L1 = "system_u:object_r:container_file_t:s0:c15,c25"
L2 = "system_u:object_r:container_file_t:s0:c1,c2"
SVIRT = "system_u:object_r:svirt_lxc_file_t:s0:c1,c2"
CUSTOM = "staff_u:object_r:acme.volume_file_t:s0-s0:c0.c9"


@pytest.mark.parametrize(
    ("storage_class", "pod", "differ"),
    [
        (L1, L2, "level (s0:c15,c25 versus s0:c1,c2)"),
        (L2, SVIRT, "type (container_file_t versus svirt_lxc_file_t)"),
        (SVIRT, CUSTOM, "user (system_u versus staff_u) and type"),
    ],
)
def test_storage_class_context_and_another_pod_label_are_refused(
    storage_class: str, pod: str, differ: str
) -> None:
    with pytest.raises(InvalidMountFlags) as info:
        parse_mount_flags(["noatime", f"context={storage_class}", f'context="{pod}"'])
    message = info.value.message
    assert f'context="{storage_class}", given first' in message
    assert f'context="{pod}", given last' in message
    assert differ in message
    assert "StorageClass" in message and "pod.spec.securityContext.seLinuxOptions" in message
    assert "seLinuxChangePolicy: Recursive" in message, "way out 1"
    assert "remove context= from the StorageClass's mountOptions" in message, "way out 2"
    assert "the driver sees only their order" in message, "it claims no more than it can know"


def test_mount_options_with_two_different_contexts_say_so() -> None:
    with pytest.raises(InvalidMountFlags) as info:
        parse_mount_flags([f'context="{L1}"', f'context="{L2}"', f'context="{L2}"'])
    assert "3 times with different labels" in info.value.message
    assert "may set one label at most" in info.value.message


def test_conflict_message_names_the_field_that_differs() -> None:
    by_type = conflict_message("v", "/s", L2, SVIRT)
    assert "They differ in seLinuxOptions.type (container_file_t versus svirt_lxc_file_t)." in (
        by_type
    )
    assert "level" not in by_type.split("They differ")[1].split(".")[1], "the levels are equal"
    by_level = conflict_message("v", "/s", SVIRT, SVIRT.replace("c1,c2", "c3,c4"))
    assert "They differ in seLinuxOptions.level (s0:c1,c2 versus s0:c3,c4)." in by_level
    custom = conflict_message("v", "/s", CUSTOM, CUSTOM.replace("acme.volume_file_t", "x_t"))
    assert "seLinuxOptions.type (acme.volume_file_t versus x_t)" in custom
    assert "differ in" not in conflict_message("v", "/s", "u:r:t:s0:c0,c1,c2", "u:r:t:s0:c0.c2")


def test_conflict_message_names_volume_place_and_both_labels() -> None:
    message = conflict_message("vol-1", "/var/lib/kubelet/plugins/x/globalmount", L1, L2)
    assert message.startswith(
        f"volume vol-1 is mounted on this node at /var/lib/kubelet/plugins/x/globalmount "
        f"with SELinux context {L1}; this pod needs context {L2}."
    )
    assert "pod.spec.securityContext.seLinuxOptions" in message
    assert "seLinuxChangePolicy: Recursive" in message


def test_conflict_message_without_labels() -> None:
    have_none = conflict_message("v", "/s", None, L2)
    assert "at /s without an SELinux context; this pod needs context " + L2 in have_none
    want_none = conflict_message("v", "/s", L1, None)
    assert f"with SELinux context {L1}; this pod needs it without an SELinux context" in want_none
    assert "None" not in have_none + want_none


NFS = ("nosharecache",)
CIFS = ("nosharesock",)


@pytest.mark.parametrize(
    ("options", "extras", "labelled", "expected"),
    [
        (["vers=3"], NFS, True, ["vers=3", "nosharecache"]),
        ([], NFS, True, ["nosharecache"]),
        (["vers=3.1.1"], CIFS, True, ["vers=3.1.1", "nosharesock"]),
        (["vers=3"], NFS, False, ["vers=3"]),
        ([], CIFS, False, []),
        (["noatime"], (), True, ["noatime"]),
        ([], (), True, []),
        (["nosharecache"], NFS, True, ["nosharecache"]),
        (["hard,nosharecache,timeo=600"], NFS, True, ["hard,nosharecache,timeo=600"]),
        (["nosharesock,vers=3.0"], CIFS, True, ["nosharesock,vers=3.0"]),
        # Only a whole option counts, not a substring or a quoted value.
        (["xnosharecache"], NFS, True, ["xnosharecache", "nosharecache"]),
        (['opt="a,nosharecache"'], NFS, True, ['opt="a,nosharecache"', "nosharecache"]),
        # Another kind's extra does not count.
        (["nosharesock"], NFS, True, ["nosharesock", "nosharecache"]),
        # A broken entry does not stop the extra.
        (['opt="a'], NFS, True, ['opt="a', "nosharecache"]),
        # Several extras, each added once.
        (["a"], ("x", "y", "x"), True, ["a", "x", "y"]),
        (["y"], ("x", "y"), True, ["y", "x"]),
    ],
)
def test_with_label_extras(
    options: list[str], extras: tuple[str, ...], labelled: bool, expected: list[str]
) -> None:
    before = list(options)
    assert with_label_extras(options, extras, labelled) == expected
    assert options == before  # the input is not modified
