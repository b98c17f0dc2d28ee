"""Volume and storage health from real signals: files, loop devices, mounts, kernel counters.

Controller health looks at a volume's storage (the backend's checks) and, because this driver's
controller runs on the volume's node, at label drift (below). Node health adds what only the node
sees: the staging and publish mounts, the loop device behind an image, the filesystem's error
counter, and a mount that went read-only after an error. Storage health looks at the state
directory itself.

Label drift: a volume staged with context=L must still show context=L in mountinfo and L on its
root. A mount that lost the option (remounted behind the driver's back: unmounted and mounted
again by hand, or by a tool that does not know the label) is INACCESSIBLE, because pods with label
L are denied its files; a root that reads another label while mountinfo still shows L is DEGRADED.
kubelet never re-checks a label after NodePublishVolume, so this is the only place it shows.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from . import paths, selinux
from .backends import Backend
from .config import DriverConfig
from .models import AccessType, HealthIssue, HealthStatus, Staging, StagingState, Volume
from .mountinfo import MountEntry
from .mounttable import MountTable, MountView, ProcMountTable
from .selinux import label_from_super_options, same_label
from .state import Catalog
from .statedir import RESERVE_BYTES, Reserve

#: What an operator does about a drifted label.
RELABEL_ACTION = (
    "delete the pods that use the volume on this node, so kubelet unstages it and stages it "
    "again with the right label, and find out what remounted it"
)

#: Below this share of free space in the state directory, storage health is DEGRADED.
LOW_SPACE_RATIO = 0.05


class HealthChecker:
    def __init__(
        self,
        config: DriverConfig,
        catalog: Catalog,
        backends: Mapping[str, Backend],
        sysfs: str = "/sys",
        reserve: Reserve | None = None,
        table: MountTable | None = None,
        read_label: Callable[[str], str | None] = selinux.read_label,
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.backends = backends
        self.sysfs = Path(sysfs)
        self.reserve = reserve
        self.table: MountTable = table or ProcMountTable()
        self.read_label = read_label

    def controller(self, vol: Volume) -> list[HealthIssue]:
        issues = self.backends[vol.kind].health(vol)
        labelled = [
            st
            for st in self.catalog.stagings(vol.id)
            if st.state is StagingState.READY and st.label and vol.access_type is AccessType.MOUNT
        ]
        if labelled:
            view = self._view()
            for st in labelled:
                entry = view.staging_mount(st)
                if entry is not None and st.label:
                    issues += self.label_drift(st.label, st.staging_path, entry)
        return dedupe(issues)

    def node(
        self, vol: Volume, publish_path: str = "", staging_path: str = ""
    ) -> list[HealthIssue]:
        issues = self.backends[vol.kind].health(vol)
        view = self._view()
        stagings = {st.staging_path: st for st in self.catalog.stagings(vol.id)}
        for st in stagings.values():
            if staging_path and st.staging_path != staging_path:
                continue
            if st.state is not StagingState.READY:
                continue
            issues += self.staging(vol, st, view)
        if publish_path:
            for pub in self.catalog.publications(vol.id):
                if pub.target_path != publish_path:
                    continue
                staged = stagings.get(pub.staging_path)
                entry = view.volume_at(staged, pub.target_path, pub.device) if staged else None
                if entry is None:
                    issues.append(
                        HealthIssue(
                            status=HealthStatus.INACCESSIBLE,
                            reason="PublishMountMissing",
                            message=f"the volume is no longer mounted at {pub.target_path}; restart the pod",
                        )
                    )
                else:
                    if entry.read_only and not pub.read_only:
                        issues.append(read_only_issue(pub.target_path))
                    if pub.label:
                        issues += self.label_drift(pub.label, pub.target_path, entry)
        return dedupe(issues)

    def label_drift(self, label: str, path: str, entry: MountEntry) -> list[HealthIssue]:
        """A mount at path that no longer carries the label it was made with (see the module)."""
        shown = label_from_super_options(entry.super_options)
        if not same_label(shown, label):
            now = f"context={shown}" if shown else "no context= option"
            return [
                HealthIssue(
                    status=HealthStatus.INACCESSIBLE,
                    reason="SELinuxLabelLost" if shown is None else "SELinuxLabelChanged",
                    message=f"the volume was mounted at {path} with SELinux context {label}, but that "
                    f"mount now shows {now}: it was remounted outside the driver, its files no "
                    f"longer carry that label, and pods with label {label} may be denied them; "
                    f"{RELABEL_ACTION}",
                )
            ]
        try:
            root = self.read_label(entry.mount_point)
        except OSError as exc:
            root = f"an unreadable label ({exc.strerror or exc})"
        if not same_label(root, label):
            return [
                HealthIssue(
                    status=HealthStatus.DEGRADED,
                    reason="SELinuxRootLabelChanged",
                    message=f"the volume at {path} shows context={label} in the mount table, but its "
                    f"root reads {root or 'no label'}: something is mounted over it or the "
                    f"kernel no longer applies the label; {RELABEL_ACTION}",
                )
            ]
        return []

    def _view(self) -> MountView:
        """One read of the mount table, paths resolved as the node resolves them."""
        ephemeral = str(self.config.state_dir / "ephemeral")
        return MountView.read(
            self.table,
            lambda path: paths.trusted_prefix(path, self.config.kubelet_dir, ephemeral),
        )

    def staging(self, vol: Volume, st: Staging, view: MountView) -> list[HealthIssue]:
        issues: list[HealthIssue] = []
        # What the kind's own storage shows on the node (the image kind: its loop device).
        issues += self.backends[vol.kind].staged_health(vol, st)
        if vol.access_type is AccessType.BLOCK:
            return issues
        entry = view.staging_mount(st)
        if entry is None:
            issues.append(
                HealthIssue(
                    status=HealthStatus.INACCESSIBLE,
                    reason="StagingMountMissing",
                    message=f"the volume is no longer mounted at its staging path {st.staging_path}; restart "
                    "the pods using it so kubelet stages it again",
                )
            )
            return issues
        if entry.read_only and "ro" not in st.flags:
            issues.append(read_only_issue(st.staging_path))
        if st.label:
            issues += self.label_drift(st.label, st.staging_path, entry)
        errors = self.fs_errors(entry)
        if errors:
            issues.append(
                HealthIssue(
                    status=HealthStatus.DEGRADED,
                    reason="FilesystemErrors",
                    message=f"the kernel counted {errors} error(s) on the volume's {entry.fs_type} filesystem "
                    f"({entry.source}); back up the data and run fsck after unstaging it",
                )
            )
        return issues

    def fs_errors(self, entry: MountEntry) -> int:
        """The kernel's error counter for an ext4 filesystem (0 when there is none to read)."""
        if entry.fs_type != "ext4":
            return 0
        name = os.path.basename(entry.source)
        try:
            return int((self.sysfs / "fs" / "ext4" / name / "errors_count").read_text().strip())
        except (OSError, ValueError):
            return 0

    def storage(self) -> list[HealthIssue]:
        issues: list[HealthIssue] = []
        state_dir = self.config.state_dir
        if not os.access(state_dir, os.W_OK | os.X_OK):
            issues.append(
                HealthIssue(
                    status=HealthStatus.STORAGE_UNREACHABLE,
                    reason="StateDirUnwritable",
                    message=f"the state directory {state_dir} is not writable: check the driver's hostPath "
                    "mount",
                )
            )
            return issues
        st = os.statvfs(state_dir)
        if self.reserve is not None and not self.reserve.ensure():
            issues.append(
                HealthIssue(
                    status=HealthStatus.STORAGE_DEGRADED,
                    reason="StateDirFull",
                    message=f"the state directory {state_dir} ran out of space "
                    f"({st.f_bavail * st.f_frsize // (1024 * 1024)} MiB free): the driver "
                    f"released its {RESERVE_BYTES // (1024 * 1024)} MiB reserve so unstaging "
                    "and deleting keep working, and refuses new volumes and snapshots until "
                    "space is freed; pods writing to image volumes may get I/O errors",
                )
            )
        elif st.f_blocks and st.f_bavail / st.f_blocks < LOW_SPACE_RATIO:
            free = st.f_bavail * st.f_frsize
            issues.append(
                HealthIssue(
                    status=HealthStatus.STORAGE_DEGRADED,
                    reason="StateDirLowOnSpace",
                    message=f"only {free // (1024 * 1024)} MiB ({st.f_bavail / st.f_blocks:.1%}) is free in "
                    f"{state_dir}; sparse volume images may fail to write: free space or delete volumes",
                )
            )
        if not os.path.exists("/dev/loop-control"):
            issues.append(
                HealthIssue(
                    status=HealthStatus.STORAGE_UNREACHABLE,
                    reason="LoopControlMissing",
                    message="/dev/loop-control is not visible to the driver: image volumes cannot be staged; "
                    "mount the host's /dev into the driver's container",
                )
            )
        return issues


def read_only_issue(path: str) -> HealthIssue:
    return HealthIssue(
        status=HealthStatus.DEGRADED,
        reason="MountReadOnly",
        message=f"the mount at {path} became read-only (the filesystem hit an error and was remounted "
        "read-only); back up the data, then unstage and check the filesystem",
    )


def dedupe(issues: list[HealthIssue]) -> list[HealthIssue]:
    seen: set[tuple[str, str]] = set()
    out = []
    for issue in issues:
        key = (issue.status.value, issue.reason)
        if key not in seen:
            seen.add(key)
            out.append(issue)
    return out
