"""CIFS without credentials: a clear refusal instead of a password prompt, and shares that need none.

The backend runs against FakeMounter (this host has no CIFS client); the helper's own behaviour
(no stdin, no terminal, no inherited credentials) is checked by running LinuxMounter.mount_helper
against a stand-in `mount` program that reports what it was given. Real CIFS mounts run in the VM
suite (tests/e2e).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from pathlib import Path

import pytest

from csi_hostpath_selinux.backends import BackendEnv, CIFSBackend, StageRequest
from csi_hostpath_selinux.backends.cifs import needs_password
from csi_hostpath_selinux.errors import InvalidArgument
from csi_hostpath_selinux.fake_mounts import FakeMounter
from csi_hostpath_selinux.models import AccessType, Volume
from csi_hostpath_selinux.mounts import LinuxMounter
from csi_hostpath_selinux.selinux import InvalidMountFlags, parse_mount_flags
from tests.support.fake_calls import HelperCall
from tests.support.fake_calls import helper_calls as fake_helper_calls

SHARE = "//files.example/share"


def cifs_volume(**params: str) -> Volume:
    return Volume(
        id="vol-" + "0" * 32,
        name="pvc-cifs",
        kind="cifs",
        capacity_bytes=1 << 30,
        access_type=AccessType.MOUNT,
        fs_type="cifs",
        parameters={"kind": "cifs", "source": SHARE, **params},
    )


class ShareMounter(FakeMounter):
    """FakeMounter whose unmount takes away what was made on the "share", as a real one does."""

    def unmount(self, target: str) -> None:
        super().unmount(target)
        path = Path(target)
        if path.is_dir():
            for child in path.iterdir():
                shutil.rmtree(child)


@pytest.fixture
def backend(tmp_path: Path) -> CIFSBackend:
    return CIFSBackend(BackendEnv(tmp_path / "state", ShareMounter()))


def helper_calls(backend: CIFSBackend) -> list[HelperCall]:
    mounter = backend.env.mounter
    assert isinstance(mounter, FakeMounter)
    return fake_helper_calls(mounter)


def stage_request(backend: CIFSBackend, flags: list[str], secrets: dict[str, str]) -> StageRequest:
    staging = str(backend.env.state_dir / "staging")
    return StageRequest(cifs_volume(), staging, staging, parse_mount_flags(flags), secrets, False)


@pytest.mark.parametrize(
    ("options", "needed"),
    [
        ([], True),
        (["vers=3.1.1"], True),
        (["guest"], False),
        (["vers=3.0,guest"], False),
        (["GUEST"], False),
        (["sec=krb5"], False),
        (["sec=krb5i"], False),
        (["sec=none"], False),
        (["sec=ntlmssp"], True),
        (["sec=krb5", "sec=ntlmssp"], True),
        (["guestx"], True),
    ],
)
def test_which_options_need_a_password(options: list[str], needed: bool) -> None:
    assert needs_password(options) is needed


@pytest.mark.parametrize("rpc", ["CreateVolume", "DeleteVolume"])
def test_controller_without_secrets_names_the_provisioner_secret_parameters(
    backend: CIFSBackend, rpc: str
) -> None:
    vol = cifs_volume(mountOptions="vers=3.1.1")
    with pytest.raises(InvalidArgument) as info:
        if rpc == "CreateVolume":
            backend.create(vol, {}, None)
        else:
            backend.delete(vol, {})
    message = info.value.message
    assert f"{rpc} carried no secrets" in message
    assert "csi.storage.k8s.io/provisioner-secret-name" in message
    assert "csi.storage.k8s.io/provisioner-secret-namespace" in message
    assert "guest" in message and SHARE in message
    assert helper_calls(backend) == [], "refused before any helper runs"


def test_node_stage_without_secrets_names_the_node_stage_secret_parameters(
    backend: CIFSBackend,
) -> None:
    with pytest.raises(InvalidArgument) as info:
        backend.stage(stage_request(backend, ["vers=3.1.1"], {}))
    assert "NodeStageVolume carried no secrets" in info.value.message
    assert "csi.storage.k8s.io/node-stage-secret-name" in info.value.message
    assert helper_calls(backend) == []


@pytest.mark.parametrize("option", ["guest", "sec=krb5", "sec=none"])
def test_shares_that_need_no_password_work_without_secrets(
    backend: CIFSBackend, option: str
) -> None:
    vol = cifs_volume(mountOptions=f"vers=3.0,{option}")
    backend.create(vol, {}, None)
    backend.stage(stage_request(backend, [option], {}))
    backend.delete(vol, {})
    calls = helper_calls(backend)
    assert len(calls) == 3
    for _, _, fs_type, options, env in calls:
        assert fs_type == "cifs"
        assert option in ",".join(options)
        assert env == {}, "no credentials invented"


def test_retained_volume_is_deleted_without_secrets(backend: CIFSBackend) -> None:
    backend.delete(cifs_volume(onDelete="retain"), {})
    assert helper_calls(backend) == []


def test_secrets_still_go_to_the_environment(backend: CIFSBackend) -> None:
    backend.create(cifs_volume(), {"username": "u", "password": "p4ss"}, None)
    ((_, _, _, options, env),) = helper_calls(backend)
    assert env["USER"] == "u" and env["PASSWD"] == "p4ss"
    assert "p4ss" not in str(options)


def test_controller_share_mounts_never_allow_suid_dev_or_exec(backend: CIFSBackend) -> None:
    backend.create(cifs_volume(mountOptions="suid,dev,exec"), {"username": "u"}, None)
    ((_, _, _, options, _),) = helper_calls(backend)
    assert list(options)[-3:] == ["nosuid", "nodev", "noexec"], "last, so they win"


@pytest.mark.parametrize("bad", ["remount", "bind", "helper=/bin/sh", "X-mount.mkdir", 'ro,"x"'])
def test_mount_options_parameter_gets_the_mount_flag_policy(backend: CIFSBackend, bad: str) -> None:
    with pytest.raises(InvalidMountFlags, match="parameter mountOptions"):
        backend.check_parameters({"source": SHARE, "mountOptions": f"vers=3.0,{bad}"})


FAKE_MOUNT = """#!{python}
import json, os, sys
report = {{"pid": os.getpid(), "sid": os.getsid(0)}}
report["stdin"] = sys.stdin.read()
try:
    os.close(os.open("/dev/tty", os.O_RDWR))
    report["tty"] = True
except OSError:
    report["tty"] = False
report["env"] = sorted(k for k in ("USER", "PASSWD", "PASSWD_FD", "PASSWD_FILE") if k in os.environ)
report["argv"] = sys.argv[1:]
with open(os.environ["REPORT"], "w") as f:
    json.dump(report, f)
"""


def test_mount_helper_has_no_stdin_no_terminal_and_no_inherited_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mount.cifs prompts on /dev/tty, else on stdin: neither may be there to answer."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "mount"
    fake.write_text(FAKE_MOUNT.format(python=sys.executable))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    report = tmp_path / "report.json"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("USER", "root")
    monkeypatch.setenv("PASSWD", "from-the-drivers-environment")
    LinuxMounter(helper_timeout=30).mount_helper(
        SHARE, str(tmp_path / "t"), "cifs", ["guest"], env={"REPORT": str(report)}
    )
    got = json.loads(report.read_text())
    assert got["stdin"] == "", "stdin is /dev/null"
    assert got["sid"] == got["pid"], "a session of its own"
    assert got["tty"] is False, "no controlling terminal to prompt on"
    assert got["env"] == [], "credentials come from the request only"
    assert got["argv"] == ["-t", "cifs", "-o", "guest", SHARE, str(tmp_path / "t")]
