"""What kubelet calls on the driver's node service over gRPC, as the integration tests drive it:
its directory layout (a staging path per volume, a target path per pod) and the calls made on it.
"""

from __future__ import annotations

from csi_hostpath_selinux._proto import csi_pb2 as pb
from tests.support.driver import Clients, DriverProcess
from tests.support.requests import MIB, create


def kubelet_paths(driver: DriverProcess, name: str) -> tuple[str, str]:
    """A volume's staging path and a pod's target path under the driver's kubelet directory
    (the pod's directory made, the paths themselves left as the tests need them)."""
    kubelet = driver.root.parent / "kubelet"
    staging = kubelet / "plugins" / f"{name}-globalmount"
    pod = kubelet / "pods" / f"uid-{name}"
    pod.mkdir(parents=True, exist_ok=True)
    return str(staging), str(pod / "mount")


def stage(csi: Clients, vol_id: str, staging: str, cap: pb.VolumeCapability) -> None:
    csi.node.NodeStageVolume(
        pb.NodeStageVolumeRequest(
            volume_id=vol_id, staging_target_path=staging, volume_capability=cap
        )
    )


def publish(
    csi: Clients, vol_id: str, staging: str, target: str, cap: pb.VolumeCapability, ro: bool = False
) -> None:
    csi.node.NodePublishVolume(
        pb.NodePublishVolumeRequest(
            volume_id=vol_id,
            staging_target_path=staging,
            target_path=target,
            volume_capability=cap,
            readonly=ro,
        )
    )


def published(
    csi: Clients,
    driver: DriverProcess,
    name: str,
    cap: pb.VolumeCapability,
    size: int = 64 * MIB,
) -> tuple[pb.Volume, str, str]:
    """A new volume pvc-<name>, staged and published for one pod as kubelet does:
    (the volume, its staging path, the pod's target path). teardown() undoes it."""
    vol = csi.controller.CreateVolume(create(f"pvc-{name}", cap, size)).volume
    staging, target = kubelet_paths(driver, name)
    stage(csi, vol.volume_id, staging, cap)
    publish(csi, vol.volume_id, staging, target, cap)
    return vol, staging, target


def unpublish(csi: Clients, vol_id: str, target: str) -> None:
    csi.node.NodeUnpublishVolume(
        pb.NodeUnpublishVolumeRequest(volume_id=vol_id, target_path=target)
    )


def teardown(csi: Clients, vol_id: str, staging: str, *targets: str) -> None:
    """Unpublish every target, unstage and delete the volume, as kubelet and the provisioner
    do when the pods and the claim are gone."""
    for target in targets:
        unpublish(csi, vol_id, target)
    csi.node.NodeUnstageVolume(
        pb.NodeUnstageVolumeRequest(volume_id=vol_id, staging_target_path=staging)
    )
    csi.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=vol_id))
